"""Validate a synthesized partition: the schema's GX suite and the privacy gates, on its Parquet.

The partition is read from its path or URI (a dataset folder of ``*.parquet`` files, sub-folders
such as a quarantine left out, or one Parquet file; see ``aod_ops.storage``) with pyarrow; its
``_aod_record`` column (JSON text) is parsed for the privacy figures, which cover every row whose
record parses and nests no deeper than the schema package's ``MAX_DEPTH`` (a row that breaks the
schema fails the suite, and may still leak). Beside the data go ``validation_result.json`` (GX's
full validation result) and ``privacy_report.json``; the caller gets a small ``ValidationSummary``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aod_ops import storage
from aod_ops.errors import AodError, DataError
from aod_ops.metrics import ReferenceIndex
from aod_ops.output import RECORD, RECORD_ID
from aod_ops.privacy import PrivacyReport, PrivacyThresholds, privacy_report, sensitive_columns
from aod_ops.quality.suite import ExpectationOutcome, extra_expectations, schema_expectations
from aod_ops.rules import Rule
from aod_ops.schema import LoadedSchema, compile_schema, is_choice_leaf, load_schema
from aod_ops.schema.load import too_deep
from aod_ops.storage import Location

RESULT_FILE = "validation_result.json"
PRIVACY_FILE = "privacy_report.json"


@dataclass(frozen=True)
class ValidationSummary:
    """What validating one partition found: verdict, counts, every outcome, privacy verdicts.

    ``outcomes`` holds one entry per GX expectation and per privacy gate (``source`` is
    ``"privacy"`` for the gates), so a table of expectation, observed value and verdict can be
    printed from it. ``success`` is True only when both the suite and the gates passed.
    """

    partition: str
    data_path: str
    success: bool
    rows: int
    unparsed_records: int
    outcomes: tuple[ExpectationOutcome, ...]
    privacy: PrivacyReport
    result_path: str
    privacy_report_path: str
    docs_path: str | None = None
    fidelity_report_path: str | None = None

    @property
    def failed(self) -> tuple[ExpectationOutcome, ...]:
        """The expectations and privacy gates that did not pass."""
        return tuple(outcome for outcome in self.outcomes if not outcome.success)

    def as_dict(self) -> dict[str, Any]:
        """A small JSON-ready dict (for XCom or ``report.json``): counts, failures, verdicts."""
        return {
            "partition": self.partition,
            "data_path": self.data_path,
            "success": self.success,
            "rows": self.rows,
            "unparsed_records": self.unparsed_records,
            "evaluated": len(self.outcomes),
            "failed": [asdict(outcome) for outcome in self.failed],
            "privacy": {check.name: check.passed for check in self.privacy.checks},
            "result_path": self.result_path,
            "privacy_report_path": self.privacy_report_path,
            "docs_path": self.docs_path,
            "fidelity_report_path": self.fidelity_report_path,
        }


class ValidationFailed(AodError):
    """A partition that failed its expectations or privacy gates; ``summary`` says which."""

    def __init__(self, summary: ValidationSummary) -> None:
        failures = "; ".join(
            f"{outcome.expectation}"
            + (f" on {outcome.column}" if outcome.column else "")
            + f": {outcome.observed}"
            for outcome in summary.failed
        )
        super().__init__(f"partition {summary.partition} ({summary.data_path}) failed validation: {failures}")
        self.summary = summary


def read_partition(path: str | Path) -> pa.Table:
    """Read a partition's Parquet (a dataset folder or one file, a path or a URI); ``DataError``
    names a bad file."""
    path = storage.locate(path)
    if not storage.exists(path):
        raise DataError(f"partition data not found: {path}")
    files = [path] if storage.is_file(path) else storage.list_files(path, ".parquet")
    if not files:
        raise DataError(f"no Parquet files in {path}")
    tables = []
    for file in files:
        try:
            with storage.open_file(file) as handle:
                tables.append(pq.read_table(handle))
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"cannot read Parquet file {file}: {exc}") from None
    try:
        table = pa.concat_tables(tables, promote_options="default")
    except pa.ArrowException as exc:
        raise DataError(f"the Parquet files in {path} do not share one schema: {exc}") from None
    missing = [column for column in (RECORD_ID, RECORD) if column not in table.column_names]
    if missing:
        raise DataError(f"{path}: no {' or '.join(missing)} column (the output contract's)")
    return table


def validate_partition(
    data_path: str | Path,
    schema: LoadedSchema | str | Path | dict[str, Any],
    reference: Sequence[Any],
    target_rows: int,
    *,
    partition: str | None = None,
    sensitive: Sequence[str] = (),
    thresholds: PrivacyThresholds | None = None,
    holdout: Sequence[Any] | None = None,
    rules: Sequence[Rule] = (),
    extra_suite: str | Path | None = None,
    docs_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    raise_on_failure: bool = False,
) -> ValidationSummary:
    """Run the partition's GX checkpoint and privacy gates and write their results beside the data.

    :param data_path: the partition's Parquet dataset folder (or one Parquet file), a path or a URI.
    :param schema: the partition's JSON Schema (loaded, a file path, or a dict).
    :param reference: the partition's reference sample as JSON values.
    :param target_rows: the row count the partition must reach.
    :param partition: the partition's name (GX objects are named after it); the folder's name
        when None.
    :param sensitive: sensitive columns besides those the schema marks ``x-aod-sensitive``.
    :param thresholds: privacy thresholds; the defaults when None.
    :param holdout: held-out real rows for the DCR baseline (see ``aod_ops.privacy``).
    :param rules: the partition's cross-field rules, each checked by an expectation.
    :param extra_suite: the user's own expectations: a GX suite JSON file or ``"module:function"``.
    :param docs_dir: a folder (or URI) for GX Data Docs HTML and the fidelity report
        (``fidelity.html``); neither is written when None.
    :param out_dir: where the result files go (a folder or URI); by default the dataset's own folder.
    :param raise_on_failure: raise ``ValidationFailed`` (carrying the summary) when anything fails.
    """
    path = storage.locate(data_path)
    loaded = schema if isinstance(schema, LoadedSchema) else load_schema(schema)
    is_file = storage.is_file(path)
    name = partition or (PurePosixPath(storage.name(path)).stem if is_file else storage.name(path))
    table = read_partition(path)
    # GX takes seconds to import: only validation pays for it, not every user of aod_ops.quality.
    from aod_ops.quality.gx_adapter import register_schema, run_checkpoint

    register_schema(loaded)
    specs = schema_expectations(loaded, target_rows, rules)
    if extra_suite is not None:
        specs.extend(extra_expectations(extra_suite))
    ids, records = _parsed_records(table)
    root = compile_schema(loaded).root
    sensitive = sorted({*sensitive_columns(loaded.contents), *sensitive})
    index = ReferenceIndex.of(reference, sensitive)  # one index for the privacy gates and the fidelity
    privacy = privacy_report(
        records,
        index,
        skip_leaf=functools.partial(is_choice_leaf, root),
        sensitive=sensitive,
        thresholds=thresholds,
        ids=ids,
        holdout=holdout,
    )
    frame = table.to_pandas()
    docs_path = fidelity = None
    if docs_dir is None:
        run = run_checkpoint(name, frame, specs)
    else:
        docs = storage.locate(docs_dir)
        # GX and matplotlib write local files: a remote docs folder gets them once they are written.
        with storage.staged(docs) as local:
            run = run_checkpoint(name, frame, specs, local)
            report = _fidelity_report(name, path, loaded, index, holdout, rules, sensitive, records, local)
        if run.docs_index is not None:
            docs_path = storage.join(docs, *run.docs_index.relative_to(local).parts)
        fidelity = storage.join(docs, *report.relative_to(local).parts)
    out = storage.locate(out_dir) if out_dir is not None else storage.parent(path) if is_file else path
    result_path = storage.join(out, RESULT_FILE)
    try:
        storage.write_text(result_path, json.dumps(run.result, indent=2, default=str) + "\n")
        privacy_path = privacy.write(storage.join(out, PRIVACY_FILE))
    except OSError as exc:
        raise DataError(f"cannot write the validation results into {out}: {exc}") from None
    summary = ValidationSummary(
        partition=name,
        data_path=str(path),
        success=run.success and privacy.passed,
        rows=table.num_rows,
        unparsed_records=table.num_rows - len(records),
        outcomes=run.outcomes + tuple(_privacy_outcomes(privacy)),
        privacy=privacy,
        result_path=str(result_path),
        privacy_report_path=str(privacy_path),
        docs_path=str(docs_path) if docs_path is not None else None,
        fidelity_report_path=str(fidelity) if fidelity is not None else None,
    )
    if raise_on_failure and not summary.success:
        raise ValidationFailed(summary)
    return summary


def _fidelity_report(
    name: str,
    path: Location,
    schema: LoadedSchema,
    reference: ReferenceIndex,
    holdout: Sequence[Any] | None,
    rules: Sequence[Rule],
    sensitive: Sequence[str],
    records: list[Any],
    docs: Path,
) -> Path:
    """Score the partition's records against its real rows; write the fidelity report into ``docs``."""
    # Scoring imports SDMetrics and scikit-learn: only a validation with docs pays for them.
    from aod_ops.fidelity import Yardstick
    from aod_ops.score import score_records

    yardstick = Yardstick(schema, reference, holdout, rules, sensitive)
    return score_records(name, path, yardstick, records).write_report(docs).html


def _parsed_records(table: pa.Table) -> tuple[list[str], list[Any]]:
    """Record ids and parsed records; a record that is not JSON, or nests too deeply for the
    privacy figures' walk over its leaves, is left out (GX reports it)."""
    ids: list[str] = []
    records: list[Any] = []
    for record_id, text in zip(
        table.column(RECORD_ID).to_pylist(), table.column(RECORD).to_pylist(), strict=True
    ):
        try:
            record = json.loads(text)
        except (TypeError, json.JSONDecodeError, RecursionError):
            continue
        if too_deep(record) is not None:
            continue
        records.append(record)
        ids.append(str(record_id))
    return ids, records


def _privacy_outcomes(report: PrivacyReport) -> list[ExpectationOutcome]:
    outcomes = []
    for check in report.checks:
        column = check.name.split(":", 1)[1] if check.name.startswith("sensitive:") else RECORD
        value = "none" if check.value is None else f"{check.value:.4g}"
        observed = f"{value} (must be {check.comparison} {check.threshold:.4g}): {check.detail}"
        if check.examples:
            observed += f"; e.g. {RECORD_ID} {', '.join(check.examples[:3])}"
        outcomes.append(ExpectationOutcome(check.name, column, check.passed, observed, "privacy"))
    return outcomes
