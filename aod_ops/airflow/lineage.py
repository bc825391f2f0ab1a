"""OpenLineage facets of the partition operators: the one module that calls the OpenLineage API.

The operators' ``get_openlineage_facets_on_start`` and ``get_openlineage_facets_on_complete``,
which the listener of ``apache-airflow-providers-openlineage`` calls around each task (and the
latter on a failure too), import this module when they are called: the operators themselves
work without the provider.

Datasets are named the way OpenLineage's naming spec names them: a local file is ``file`` and
its absolute path; a file on an object store ``s3://<bucket>`` and its key (any fsspec scheme
alike); a reference or holdout query, each table the provider's SQL parser finds in it, as
``postgres://<host>:<port>`` and ``<database>.<schema>.<table>``. The synthesized table is its
folder ``<out>/tables/<partition>``, the location the validate task publishes as an Airflow
asset, so the asset and the OpenLineage dataset name one thing.

The table carries a ``schema`` facet (its Parquet columns, from the partition's JSON Schema). A
synthesis adds the rows written (``outputStatistics``) and its fidelity figures beside the
held-out real rows' (the custom facet ``aod_fidelity``). A validation reads the table: there it
carries ``dataQualityAssertions`` (each GX expectation and privacy gate, with its verdict and
column) and ``dataQualityMetrics`` (the rows checked), the input facets OpenLineage defines for
checks, and the table is also its output: the asset it publishes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pyarrow as pa
from airflow.providers.openlineage.extractors import OperatorLineage
from airflow.providers.openlineage.sqlparser import SQLParser
from openlineage.client.event_v2 import InputDataset, OutputDataset
from openlineage.client.facet_v2 import (
    DatasetFacet,
    InputDatasetFacet,
    OutputDatasetFacet,
    data_quality_assertions_dataset,
    data_quality_metrics_input_dataset,
    output_statistics_output_dataset,
    schema_dataset,
)

from aod_ops.sql import SqlQuery
from aod_ops.storage import Location

if TYPE_CHECKING:
    from aod_ops.privacy import PrivacyCheck
    from aod_ops.quality import ExpectationOutcome, ValidationSummary

FIDELITY_FACET = "aod_fidelity"
"""The key of the custom facet holding a synthesized table's fidelity figures."""


@attrs.define
class FidelityDatasetFacet(DatasetFacet):
    """The synthesized table's fidelity figures, each beside the held-out real rows' (``{"quality":
    {"table": 0.81, "holdout": 0.86}, ...}``, as in the synthesis task's XCom and ``report.json``).

    A custom facet: no schema of it is published, so its ``_schemaURL`` is the generic
    ``DatasetFacet``'s, as for the Airflow provider's own custom facets."""

    figures: dict[str, dict[str, float | None]]


@dataclass(frozen=True)
class TableFacts:
    """The partition's synthesized table as lineage tells of it: where it is, its columns, and what
    the task found (rows written and fidelity for a synthesis, the checks for a validation)."""

    location: Location
    columns: pa.Schema
    rows: int | None = None
    fidelity: Mapping[str, Mapping[str, float | None]] | None = None
    validation: ValidationSummary | None = None


Source = Location | SqlQuery | TableFacts
"""What a task reads: a file, a query's tables, or the synthesized table."""


def operator_lineage(inputs: Sequence[Source], outputs: Sequence[Location | TableFacts]) -> OperatorLineage:
    """The lineage of a task that reads ``inputs`` and writes ``outputs``, for the provider."""
    return OperatorLineage(
        inputs=[dataset for source in inputs for dataset in _inputs(source)],
        outputs=[_output(target) for target in outputs],
    )


def dataset_name(location: Location) -> tuple[str, str]:
    """The OpenLineage namespace and name of a file or folder: ``("file", "/abs/path")`` or
    ``("s3://bucket", "key")``."""
    if isinstance(location, Path):
        return "file", str(location)
    scheme, _, rest = location.partition("://")
    bucket, _, key = rest.partition("/")
    return f"{scheme}://{bucket}", key


@dataclass(frozen=True)
class _Database:
    """How OpenLineage names a database kind: its namespace scheme (also the SQL parser's
    dialect), the port when the URL gives none, the schema of a table named without one."""

    scheme: str
    port: int | None = None
    default_schema: str | None = None


# By SQLAlchemy backend; another backend keeps its own name, and its tables the names the query gives.
_DATABASES = {
    "postgresql": _Database("postgres", 5432, "public"),
    "mysql": _Database("mysql", 3306),
    "mssql": _Database("mssql", 1433, "dbo"),
}


def query_tables(query: SqlQuery) -> list[tuple[str, str]]:
    """The OpenLineage namespace and name of each table ``query`` reads (none when the parser
    finds none). Its connection is resolved as for running it, and only the host, port and
    database name appear."""
    from aod_ops.sql import _url  # the URL the query runs on: ${NAME} expanded, or the Airflow connection's

    url = _url(query)
    backend = url.get_backend_name()
    database = _DATABASES.get(backend, _Database(backend))
    port = url.port or database.port
    authority = f"{url.host}:{port}" if url.host and port else url.host
    namespace = f"{database.scheme}://{authority}" if authority else database.scheme
    meta = SQLParser(dialect=database.scheme, default_schema=database.default_schema).parse(query.sql)
    names = [(t.database or url.database, t.schema, t.name) for t in (meta.in_tables if meta else [])]
    return [(namespace, ".".join(part for part in name if part)) for name in names]


def schema_facet(columns: pa.Schema) -> schema_dataset.SchemaDatasetFacet:
    """The ``schema`` facet of Arrow columns: structs with their fields, lists with their element
    (``_element``, as OpenLineage's Spark integration names it)."""
    return schema_dataset.SchemaDatasetFacet(fields=[_field(field) for field in columns])


def _field(field: pa.Field) -> schema_dataset.SchemaDatasetFacetFields:
    kind = field.type
    if pa.types.is_struct(kind):
        children = [_field(kind.field(i)) for i in range(kind.num_fields)]
        return schema_dataset.SchemaDatasetFacetFields(name=field.name, type="struct", fields=children)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        element = _field(pa.field("_element", kind.value_type))
        return schema_dataset.SchemaDatasetFacetFields(name=field.name, type="list", fields=[element])
    return schema_dataset.SchemaDatasetFacetFields(name=field.name, type=str(kind))


def quality_facets(summary: ValidationSummary) -> dict[str, InputDatasetFacet]:
    """The input facets of a validated table: ``dataQualityAssertions``, one per GX expectation
    and privacy gate (a gate with its threshold and figure), and ``dataQualityMetrics``."""
    gates = {check.name: check for check in summary.privacy.checks}
    assertions = [
        _assertion(outcome, gates.get(outcome.expectation) if outcome.source == "privacy" else None)
        for outcome in summary.outcomes
    ]
    return {
        "dataQualityAssertions": data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(
            assertions=assertions
        ),
        "dataQualityMetrics": data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
            rowCount=summary.rows, columnMetrics={}
        ),
    }


def _assertion(
    outcome: ExpectationOutcome, gate: PrivacyCheck | None
) -> data_quality_assertions_dataset.Assertion:
    # Every check fails the task when it fails: severity "error" for all.
    if gate is None:
        return data_quality_assertions_dataset.Assertion(
            assertion=outcome.expectation,
            success=outcome.success,
            column=outcome.column,
            severity="error",
            actual=outcome.observed,
            params={"source": outcome.source},
        )
    return data_quality_assertions_dataset.Assertion(
        assertion=gate.name,
        success=gate.passed,
        column=outcome.column,
        severity="error",
        description=gate.detail,
        expected=f"{gate.comparison} {gate.threshold:.4g}",
        actual="none" if gate.value is None else f"{gate.value:.4g}",
        params={"source": outcome.source},
    )


def _inputs(source: Source) -> list[InputDataset]:
    if isinstance(source, SqlQuery):
        return [InputDataset(namespace=namespace, name=name) for namespace, name in query_tables(source)]
    if not isinstance(source, TableFacts):
        namespace, name = dataset_name(source)
        return [InputDataset(namespace=namespace, name=name)]
    namespace, name = dataset_name(source.location)
    checks = quality_facets(source.validation) if source.validation is not None else {}
    facets: dict[str, DatasetFacet] = {"schema": schema_facet(source.columns)}
    return [InputDataset(namespace=namespace, name=name, facets=facets, inputFacets=checks)]


def _output(target: Location | TableFacts) -> OutputDataset:
    if not isinstance(target, TableFacts):
        namespace, name = dataset_name(target)
        return OutputDataset(namespace=namespace, name=name)
    namespace, name = dataset_name(target.location)
    facets: dict[str, DatasetFacet] = {"schema": schema_facet(target.columns)}
    if target.fidelity is not None:
        figures = {figure: dict(values) for figure, values in target.fidelity.items()}
        facets[FIDELITY_FACET] = FidelityDatasetFacet(figures=figures)
    statistics: dict[str, OutputDatasetFacet] = {}
    if target.rows is not None:
        statistics["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=target.rows
        )
    return OutputDataset(namespace=namespace, name=name, facets=facets, outputFacets=statistics)
