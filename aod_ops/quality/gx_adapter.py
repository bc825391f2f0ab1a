"""Every Great Expectations call of aod_ops, in one place (GX 1.x; written against 1.24).

One ephemeral context per process, created on first use, with analytics and progress bars off.
A partition's GX objects are named after the partition and built idempotently: the pandas data
source, the dataframe asset and its whole-dataframe batch definition are fetched or added; the
suite, validation definition and checkpoint are added or updated, so validating a partition
again (in the same process) replaces its suite rather than adding a second one.

The data reaches GX as a pandas DataFrame read from the partition's Parquet by the caller:
GX's pandas Parquet asset reads one file, and directory assets are Spark-only, while a
partition written by Ray is a folder of files.

The ``_aod_record`` column is checked by ``ExpectColumnValuesToMatchRecordSchema``, a subclass of
GX's ``ExpectColumnValuesToMatchJsonSchema`` (same arguments and rendering) with its own metric:
GX's metric calls ``jsonschema.validate`` per row, which re-checks the schema against its
meta-schema every time (about 10 ms a row: 20k rows took 77 s here). Ours validates with the
``LoadedSchema`` (validator built once, the schema's registry for ``$ref`` to other files,
formats checked, patterns matched in bounded time), as the rest of aod_ops validates, and counts
a null, non-JSON or too deeply nested value as unexpected rather than raising. An example of an
unexpected record is shown with its first validation issue.

A top-level ``pattern`` is checked by ``ExpectColumnValuesToMatchSchemaPattern``: GX's
``ExpectColumnValuesToMatchRegex`` (same arguments and rendering) whose metric matches through
``aod_ops.schema.patterns.search``, on the ``regex`` engine under a time limit, since GX's pandas
metric uses Python's ``re``, which backtracks exponentially on a hostile pattern (``^(a+)+$``).
A value the pattern times out on is unexpected; the outcome names the pattern, and says so of
each example it times out on.

``ExpectTableColumnsToBeInSet`` fails a table with a column outside its ``column_set`` (the
contract's and the schema's typed columns), naming the column.

A cross-field rule that GX's column-pair expectations cannot state (``Displacement >= 15 *
Cylinders``) is checked by ``ExpectColumnValuesToSatisfyRule`` on the ``_aod_record`` column: its
metric parses the rule once (``aod_ops.rules``: walked, never executed) and evaluates it on each
parsed record. A record that is not JSON, or lacks a field the rule names, does not break it:
the record-schema expectation reports the first, and the judge does not count the second.
An outcome of a rule's expectation names the rule in its observed text.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations import (
    ExpectColumnValuesToMatchJsonSchema,
    ExpectColumnValuesToMatchRegex,
)
from great_expectations.expectations.expectation import BatchExpectation, ColumnMapExpectation
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
from great_expectations.expectations.metrics import ColumnMapMetricProvider, column_condition_partial
from great_expectations.render import LegacyRendererType, RenderedStringTemplateContent
from great_expectations.render.renderer.renderer import renderer

from aod_ops.errors import SpecError
from aod_ops.jsonvalues import canonical_json
from aod_ops.metrics import leaves
from aod_ops.quality.suite import (
    COLUMNS_EXPECTATION,
    PATTERN_EXPECTATION,
    RECORD_SCHEMA_EXPECTATION,
    RULE_EXPECTATION,
    RULE_SOURCE,
    ExpectationOutcome,
    ExpectationSpec,
    column_of,
)
from aod_ops.rules import Rule, parse_rule
from aod_ops.schema import LoadedSchema, load_schema
from aod_ops.schema.patterns import UncheckedPattern, search

DATASOURCE = "aod"
RESULT_FORMAT = "SUMMARY"
_SOURCE_KEY = "aod_source"  # expectation meta naming why the expectation exists
_EXAMPLES = 3


# Schemas by canonical text, registered by ``register_schema`` before a run.
_SCHEMAS: dict[str, LoadedSchema] = {}


def register_schema(schema: LoadedSchema) -> None:
    """Let the record-schema expectation validate with ``schema`` itself (refs, formats, patterns)."""
    _SCHEMAS[_schema_key(schema.contents)] = schema


def _schema_key(schema: Any) -> str:
    return canonical_json(schema)


def _schema(json_schema: dict[str, Any]) -> LoadedSchema:
    key = _schema_key(json_schema)
    if key not in _SCHEMAS:
        # A schema nobody registered (a user's suite file): loaded and checked like any other.
        _SCHEMAS[key] = load_schema(json_schema)
    return _SCHEMAS[key]


def _parse(text: Any) -> Any:
    """The JSON value of an ``_aod_record`` cell; ``ValueError`` when it is not JSON text (or nests past
    what the parser takes)."""
    if not isinstance(text, str):
        raise ValueError("not text")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to parse") from None


def _matches(schema: LoadedSchema, text: Any) -> bool:
    try:
        return schema.is_valid(_parse(text))
    except ValueError:  # json.JSONDecodeError is one
        return False


class ColumnValuesMatchRecordSchema(ColumnMapMetricProvider):
    """Per row: the value is JSON text valid against ``json_schema`` (validator built once)."""

    condition_metric_name = "column_values.match_record_schema"
    condition_value_keys = ("json_schema",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, json_schema: dict[str, Any], **kwargs: Any) -> pd.Series:
        return column.map(functools.partial(_matches, _schema(json_schema)))


class ExpectColumnValuesToMatchRecordSchema(ExpectColumnValuesToMatchJsonSchema):
    """Expect the column's values to be JSON text matching a JSON Schema, formats checked.

    GX's ``ExpectColumnValuesToMatchJsonSchema`` with a metric that builds its validator once.
    """

    map_metric = "column_values.match_record_schema"


def _matches_pattern(pattern: str, value: Any) -> bool:
    try:
        return search(pattern, str(value))
    except UncheckedPattern:
        return False  # the outcome's examples say why (_pattern_example)


class ColumnValuesMatchSchemaPattern(ColumnMapMetricProvider):
    """Per value: JSON Schema's ``pattern`` (``regex``) matches somewhere in it, in bounded time."""

    condition_metric_name = "column_values.match_schema_pattern"
    condition_value_keys = ("regex",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, regex: str, **kwargs: Any) -> pd.Series:
        return column.map(functools.partial(_matches_pattern, regex))


class ExpectColumnValuesToMatchSchemaPattern(ExpectColumnValuesToMatchRegex):
    """Expect the column's values to match a JSON Schema ``pattern`` (a search), in bounded time.

    GX's ``ExpectColumnValuesToMatchRegex`` with a metric on the ``regex`` engine under a time
    limit; a value the pattern times out on is unexpected.
    """

    map_metric = "column_values.match_schema_pattern"


class ExpectTableColumnsToBeInSet(BatchExpectation):
    """Expect every column of the table to be one of ``column_set`` (one of them may be missing).

    :param column_set: the columns the table may have.
    """

    column_set: list[str]

    metric_dependencies = ("table.columns",)
    success_keys = ("column_set",)
    args_keys = ("column_set",)

    def _validate(
        self,
        metrics: dict[str, Any],
        runtime_configuration: dict[str, Any] | None = None,
        execution_engine: Any = None,
    ) -> dict[str, Any]:
        allowed = set(self.column_set)
        columns = [str(column) for column in metrics["table.columns"]]
        unexpected = [column for column in columns if column not in allowed]
        return {
            "success": not unexpected,
            "result": {"observed_value": columns, "details": {"unexpected": unexpected}},
        }

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(
        cls, configuration: ExpectationConfiguration | None = None, *args: Any, **kwargs: Any
    ) -> list[RenderedStringTemplateContent]:
        # Data Docs would otherwise show the expectation's raw kwargs.
        params = dict(configuration.kwargs) if configuration is not None else {}
        params["columns"] = ", ".join(map(str, params.get("column_set") or ()))
        return [
            RenderedStringTemplateContent(
                content_block_type="string_template",
                string_template={"template": "Every column must be one of: $columns.", "params": params},
            )
        ]


@functools.lru_cache(maxsize=256)
def _rule(text: str) -> Rule:
    return parse_rule(text)


def _keeps(rule: Rule, text: Any) -> bool:
    try:
        record = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        return True
    return rule.holds(record) is not False


class ColumnValuesSatisfyRule(ColumnMapMetricProvider):
    """Per row: the value, a record as JSON text, does not break the cross-field ``rule``."""

    condition_metric_name = "column_values.satisfy_rule"
    condition_value_keys = ("rule",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, rule: str, **kwargs: Any) -> pd.Series:
        return column.map(functools.partial(_keeps, _rule(rule)))


class ExpectColumnValuesToSatisfyRule(ColumnMapExpectation):
    """Expect each value, a record as JSON text, to keep a cross-field rule such as ``a <= 2 * b``.

    :param column: the column of records (``_aod_record``).
    :param rule: the rule's text, as written under ``rules:`` in the partition spec.
    """

    rule: str

    map_metric = "column_values.satisfy_rule"
    success_keys = ("rule", "mostly")
    args_keys = ("column", "rule")

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(
        cls, configuration: ExpectationConfiguration | None = None, *args: Any, **kwargs: Any
    ) -> list[RenderedStringTemplateContent]:
        # Data Docs would otherwise show the expectation's raw kwargs.
        params = dict(configuration.kwargs) if configuration is not None else {}
        return [
            RenderedStringTemplateContent(
                content_block_type="string_template",
                string_template={"template": "$column values must keep the rule $rule.", "params": params},
            )
        ]


@dataclass(frozen=True)
class CheckpointRun:
    """A checkpoint's verdict, one outcome per expectation, and GX's full result as JSON data."""

    success: bool
    outcomes: tuple[ExpectationOutcome, ...]
    result: dict[str, Any]
    docs_index: Path | None


@functools.cache
def context() -> Any:
    """The process's ephemeral GX context (nothing is written to disk but Data Docs on request)."""
    config = DataContextConfig(
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        store_backend_defaults=InMemoryStoreBackendDefaults(),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def run_checkpoint(
    name: str, frame: pd.DataFrame, specs: Sequence[ExpectationSpec], docs_dir: Path | None = None
) -> CheckpointRun:
    """Validate ``frame`` against ``specs`` with a checkpoint named ``name``.

    With ``docs_dir``, the checkpoint also renders GX Data Docs HTML there.
    """
    ctx = context()
    try:
        source = ctx.data_sources.get(DATASOURCE)
    except KeyError:
        source = ctx.data_sources.add_pandas(DATASOURCE)
    try:
        asset = source.get_asset(name)
    except LookupError:
        asset = source.add_dataframe_asset(name)
    try:
        batch = asset.get_batch_definition(name)
    except KeyError:
        batch = asset.add_batch_definition_whole_dataframe(name)
    suite = ctx.suites.add_or_update(
        gx.ExpectationSuite(name=name, expectations=[_expectation(spec) for spec in specs])
    )
    validation = ctx.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )
    actions: list[Any] = []
    if docs_dir is not None:
        site = _docs_site(ctx, name, docs_dir)
        actions.append(UpdateDataDocsAction(name="data_docs", site_names=[site]))
    checkpoint = ctx.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[validation],
            actions=actions,
            result_format={"result_format": RESULT_FORMAT},
        )
    )
    run = checkpoint.run(batch_parameters={"dataframe": frame})
    validation_result = next(iter(run.run_results.values()))
    return CheckpointRun(
        success=bool(run.success),
        outcomes=tuple(_outcome(result) for result in validation_result.results),
        result=validation_result.to_json_dict(),
        docs_index=docs_dir / "index.html" if docs_dir is not None else None,
    )


def _expectation(spec: ExpectationSpec) -> Any:
    meta = {**spec.meta, _SOURCE_KEY: spec.source}
    try:
        return ExpectationConfiguration(type=spec.type, kwargs=spec.kwargs, meta=meta).to_domain_obj()
    except Exception as exc:  # GX raises several unrelated types for an unknown or malformed one
        raise SpecError(f"expectation {spec.type} ({spec.source}) is not a valid GX one: {exc}") from None


def _docs_site(ctx: Any, name: str, docs_dir: Path) -> str:
    site = f"{name}-docs"
    config = {
        "class_name": "SiteBuilder",
        # GX needs an absolute folder here (an ephemeral context has no root to resolve against).
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(docs_dir.resolve()),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    if site in ctx.get_site_names():
        ctx.update_data_docs_site(site, config)
    else:
        ctx.add_data_docs_site(site, config)
    return site


def _outcome(result: Any) -> ExpectationOutcome:
    config = result.expectation_config
    source = str((config.meta or {}).get(_SOURCE_KEY, "user"))
    column = column_of(config.kwargs)
    show = _short
    if config.type == RULE_EXPECTATION:
        show = functools.partial(_rule_fields, _rule(str(config.kwargs["rule"])))
    elif source.startswith(RULE_SOURCE):
        show = functools.partial(_pair_fields, (config.kwargs["column_A"], config.kwargs["column_B"]))
    elif config.type == PATTERN_EXPECTATION:
        show = functools.partial(_pattern_example, str(config.kwargs["regex"]))
    elif config.type == RECORD_SCHEMA_EXPECTATION:
        show = functools.partial(_record_example, config.kwargs["json_schema"])
    observed = _observed(result.result or {}, result.exception_info or {}, show)
    if source.startswith(RULE_SOURCE):
        # The expectation's own name says "pair values" or "satisfy rule"; a person wants the rule.
        observed = f"rule {source.removeprefix(RULE_SOURCE)}: {observed}"
    elif config.type == PATTERN_EXPECTATION:
        observed = f"pattern {config.kwargs['regex']!r}: {observed}"
    elif config.type == COLUMNS_EXPECTATION and not result.success:
        unexpected = (result.result or {}).get("details", {}).get("unexpected") or []
        column = ", ".join(unexpected) or None
        observed = (
            f"unexpected column{'s' if len(unexpected) > 1 else ''} {', '.join(map(repr, unexpected))}: "
            "neither a top-level property of the schema nor a column of the output contract"
        )
    return ExpectationOutcome(
        expectation=str(config.type),
        column=column,
        success=bool(result.success),
        observed=observed,
        source=source,
    )


def _observed(
    result: dict[str, Any], exception_info: dict[str, Any], show: Callable[[Any], str] | None = None
) -> str:
    # exception_info is either one {raised_exception, exception_message} or one per metric.
    infos = [exception_info] if "raised_exception" in exception_info else list(exception_info.values())
    for info in infos:
        if isinstance(info, dict) and info.get("raised_exception"):
            return f"error: {info.get('exception_message')}"
    if "observed_value" in result:
        return str(result["observed_value"])
    if "unexpected_count" in result:
        text = f"{result['unexpected_count']} of {result.get('element_count')} unexpected"
        examples: list[str] = []
        for value in result.get("partial_unexpected_list") or []:
            # Shown one at a time: showing an example may validate it again, which takes time.
            example = (show or _short)(value)
            if example not in examples:
                examples.append(example)
            if len(examples) == _EXAMPLES:
                break
        return f"{text}, e.g. {', '.join(examples)}" if examples else text
    return ""


def _pattern_example(pattern: str, value: Any) -> str:
    """A value that fails a pattern, with the reason when the pattern could not be checked on it."""
    try:
        search(pattern, str(value))
    except UncheckedPattern as error:
        return f"{_short(value)} ({error.problem})"
    return _short(value)


def _record_example(json_schema: dict[str, Any], text: Any) -> str:
    """A record that fails its schema, with its first issue (where, and why)."""
    try:
        issues = _schema(json_schema).errors(_parse(text))
    except ValueError as error:
        return f"{_short(text)} (not JSON: {error})"
    if not issues:
        return _short(text)
    return f"{_short(text)} ({issues[0].pointer or '/'}: {issues[0].message})"


def _rule_fields(rule: Rule, text: Any) -> str:
    """A record that breaks ``rule`` shown by the fields the rule names (the whole record is long)."""
    flat = leaves(json.loads(text))
    return "{" + ", ".join(f"{pointer.lstrip('/')}: {flat.get(pointer)!r}" for pointer in rule.fields) + "}"


def _pair_fields(columns: tuple[str, str], values: Any) -> str:
    """A row that breaks a rule between two columns, shown as the rule's fields."""
    return "{" + ", ".join(f"{c}: {v!r}" for c, v in zip(columns, _plain(values), strict=True)) + "}"


def _short(value: Any) -> str:
    text = repr(_plain(value))
    return text if len(text) <= 60 else text[:57] + "..."


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars as Python ones (a column pair's example is a tuple of them)."""
    if isinstance(value, tuple | list):
        return type(value)(_plain(item) for item in value)
    return value.item() if hasattr(value, "item") and hasattr(value, "dtype") else value
