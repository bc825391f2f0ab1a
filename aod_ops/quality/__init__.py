"""Quality gates of a synthesized partition: a GX suite derived from its schema, and privacy gates.

``validate_partition`` runs both on the partition's Parquet and writes their results beside it.
Importing this package does not import Great Expectations; running a validation does.
"""

from aod_ops.quality.suite import ExpectationOutcome, ExpectationSpec, extra_expectations, schema_expectations
from aod_ops.quality.validate import ValidationFailed, ValidationSummary, read_partition, validate_partition

__all__ = [
    "ExpectationOutcome",
    "ExpectationSpec",
    "ValidationFailed",
    "ValidationSummary",
    "extra_expectations",
    "read_partition",
    "schema_expectations",
    "validate_partition",
]
