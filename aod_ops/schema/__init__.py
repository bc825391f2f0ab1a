"""JSON Schemas in: loaded and checked, compiled into a skeleton of typed slots, mapped to Arrow.

``load_schema`` reads and checks a schema (drafts 4 to 2020-12, ``$ref`` resolved through the
``referencing`` library); ``compile_schema`` turns it into the node tree the DLM sampler walks
(``nodes.py``); ``arrow_schema`` gives the typed Parquet columns of its top-level properties.
"""

from aod_ops.schema.arrow import arrow_schema, to_arrow_row
from aod_ops.schema.compile import compile_schema
from aod_ops.schema.load import LoadedSchema, ValidationIssue, load_schema
from aod_ops.schema.nodes import CompiledSchema, is_choice_leaf

__all__ = [
    "CompiledSchema",
    "LoadedSchema",
    "ValidationIssue",
    "arrow_schema",
    "compile_schema",
    "is_choice_leaf",
    "load_schema",
    "to_arrow_row",
]
