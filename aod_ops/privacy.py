"""Privacy figures and gates of a partition's output against its reference sample.

Each gate is a figure, a threshold and a verdict:

- ``exact_match_rate`` (share of records equal to a reference record) at most
  ``max_exact_match_rate``, 0 by default: no record may be a copy.
- ``field_overlap`` (``aod_ops.metrics``; enum/const/boolean leaves left out) at most
  ``max_field_overlap`` (0.3 by default) or, when a held-out sample is given, the held-out rows'
  own field overlap if that is higher: only the excess over real data is a privacy problem.
- ``dcr_p5``, the 5th percentile of the distance to the closest reference record, strictly above
  a threshold. By default the threshold is relative to real data: half the DCR p5 of real rows,
  and never below 0.02 (on a ten-field table, roughly one numeric field off by a fifth of its
  range). Real rows are a held-out sample's rows measured against the reference when one is
  given, else the reference's own rows measured leave-one-out. A synthetic set whose closest 5%
  sits much nearer to the reference than fresh real rows do is memorising. ``dcr_p5_min`` sets
  an absolute threshold instead.
- ``sensitive:<column>`` for each sensitive top-level column (``x-aod-sensitive: true`` in the
  schema, or named by the spec): no record may carry a value of that column found in the
  reference. The report counts offending records and never shows the values.

SDMetrics' NewRowSynthesis score over the flat top-level columns is added to the report for
information (it gates nothing).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aod_ops import storage
from aod_ops.jsonvalues import canonical_json, is_number
from aod_ops.metrics import (
    DEFAULT_MAX_DCR_REFERENCE,
    Pointer,
    ReferenceIndex,
    distances_to_closest_record,
    field_overlap,
    percentile,
    reference_self_distances,
)
from aod_ops.storage import Location

SENSITIVE_ANNOTATION = "x-aod-sensitive"
"""Schema keyword marking a top-level property whose reference values must never reappear."""

# Offending records listed per gate in the report, at most.
_EXAMPLES = 10
# Synthetic rows NewRowSynthesis looks at, at most (it runs one pandas query per row).
_NEW_ROW_SAMPLE = 1000


@dataclass(frozen=True)
class PrivacyThresholds:
    """Thresholds of the privacy gates (see the module docstring for the defaults' reasons)."""

    max_exact_match_rate: float = 0.0
    max_field_overlap: float = 0.3
    dcr_p5_min: float | None = None
    dcr_baseline_ratio: float = 0.5
    dcr_floor: float = 0.02
    max_dcr_reference: int = DEFAULT_MAX_DCR_REFERENCE


@dataclass(frozen=True)
class PrivacyCheck:
    """One gate: its figure, threshold, verdict, and a sentence that says what was found.

    ``examples`` names up to ten offending records (their ids), never their values.
    """

    name: str
    value: float | None
    comparison: str
    threshold: float
    passed: bool
    detail: str
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class PrivacyReport:
    """The privacy figures of one partition, each with its threshold and verdict."""

    records: int
    reference_rows: int
    checks: tuple[PrivacyCheck, ...]
    dcr_median: float | None = None
    dcr_baseline_p5: float | None = None
    new_row_synthesis: float | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        """True when every gate passed."""
        return all(check.passed for check in self.checks)

    @property
    def failed(self) -> tuple[PrivacyCheck, ...]:
        """The gates that did not pass."""
        return tuple(check for check in self.checks if not check.passed)

    def check(self, name: str) -> PrivacyCheck:
        """The gate called ``name`` (e.g. ``"dcr_p5"`` or ``"sensitive:ssn"``)."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no privacy check named {name!r}")

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict, with the overall verdict under ``passed``."""
        return {"passed": self.passed, **asdict(self)}

    def write(self, path: str | Path) -> Location:
        """Write the report as JSON to ``path``, a path or a URI (``privacy_report.json`` beside
        the data)."""
        target = storage.locate(path)
        storage.write_text(target, json.dumps(self.as_dict(), indent=2) + "\n")
        return target


def sensitive_columns(schema: Mapping[str, Any]) -> tuple[str, ...]:
    """Top-level properties of ``schema`` annotated ``x-aod-sensitive: true``."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return ()
    return tuple(
        name
        for name, subschema in properties.items()
        if isinstance(subschema, Mapping) and subschema.get(SENSITIVE_ANNOTATION) is True
    )


def privacy_report(
    records: Sequence[Any],
    reference: Sequence[Any] | ReferenceIndex,
    *,
    skip_leaf: Callable[[Pointer], bool] | None = None,
    sensitive: Sequence[str] = (),
    thresholds: PrivacyThresholds | None = None,
    ids: Sequence[str] | None = None,
    holdout: Sequence[Any] | None = None,
) -> PrivacyReport:
    """Compute the privacy figures of ``records`` (the partition's valid output) and their gates.

    :param records: the output records as JSON values.
    :param reference: the partition's reference sample as JSON values, or already indexed.
    :param skip_leaf: True for pointers whose schema is an enum, const or boolean (field overlap).
    :param sensitive: top-level columns whose reference values must never reappear.
    :param thresholds: gate thresholds; the defaults when None.
    :param ids: a name per record for the report's examples (record ids); positions when None.
    :param holdout: real rows kept out of the reference, for the DCR baseline; when None the
        reference is measured against itself, leave-one-out.
    """
    limits = thresholds or PrivacyThresholds()
    names = [str(name) for name in ids] if ids is not None else [str(i) for i in range(len(records))]
    if len(names) != len(records):
        raise ValueError(f"ids has {len(names)} entries for {len(records)} records")
    index = ReferenceIndex.of(reference, sensitive)
    notes: list[str] = []
    if not index.rows:
        notes.append("the reference sample is empty: nothing can be copied from it")
    distances = distances_to_closest_record(records, index, max_reference=limits.max_dcr_reference)
    baseline = percentile(
        distances_to_closest_record(holdout, index, max_reference=limits.max_dcr_reference)
        if holdout
        else reference_self_distances(index, limits.max_dcr_reference),
        5,
    )
    checks = [
        _exact_match_check(records, names, index, limits),
        _overlap_check(records, index, skip_leaf, limits, holdout),
        _dcr_check(distances, names, baseline, limits),
        *(_sensitive_check(column, records, names, index) for column in sensitive),
    ]
    new_rows, note = _new_row_synthesis(records, index.rows)
    notes.append(note)
    return PrivacyReport(
        records=len(records),
        reference_rows=len(index.rows),
        checks=tuple(checks),
        dcr_median=percentile(distances, 50),
        dcr_baseline_p5=baseline,
        new_row_synthesis=new_rows,
        notes=tuple(notes),
    )


def _exact_match_check(
    records: Sequence[Any], names: list[str], index: ReferenceIndex, limits: PrivacyThresholds
) -> PrivacyCheck:
    copies = [
        name for record, name in zip(records, names, strict=True) if canonical_json(record) in index.canonical
    ]
    rate = len(copies) / len(records) if records else 0.0
    return PrivacyCheck(
        name="exact_match_rate",
        value=rate,
        comparison="<=",
        threshold=limits.max_exact_match_rate,
        passed=rate <= limits.max_exact_match_rate,
        detail=f"{len(copies)} of {len(records)} records are exact copies of a reference record",
        examples=tuple(copies[:_EXAMPLES]),
    )


def _overlap_check(
    records: Sequence[Any],
    index: ReferenceIndex,
    skip_leaf: Callable[[Pointer], bool] | None,
    limits: PrivacyThresholds,
    holdout: Sequence[Any] | None,
) -> PrivacyCheck:
    overlap = field_overlap(records, index, skip_leaf)
    detail = f"on average {overlap:.1%} of a record's non-choice values also appear in the reference"
    threshold = limits.max_field_overlap
    if holdout:
        # Only the excess over what unseen real rows share with the reference is a privacy
        # problem (real cars repeat real years): the gate is never tighter than real data.
        real = field_overlap(holdout, index, skip_leaf)
        threshold = max(threshold, real)
        detail += f" (held-out real rows: {real:.1%})"
    return PrivacyCheck(
        name="field_overlap",
        value=overlap,
        comparison="<=",
        threshold=threshold,
        passed=overlap <= threshold,
        detail=detail,
    )


def _dcr_check(
    distances: Any, names: list[str], baseline: float | None, limits: PrivacyThresholds
) -> PrivacyCheck:
    if limits.dcr_p5_min is not None:
        threshold, source = limits.dcr_p5_min, "set in the thresholds"
    else:
        threshold = max(limits.dcr_floor, limits.dcr_baseline_ratio * (baseline or 0.0))
        source = (
            f"max({limits.dcr_floor}, {limits.dcr_baseline_ratio} x real rows' p5 "
            f"{baseline if baseline is None else round(baseline, 4)})"
        )
    p5 = percentile(distances, 5)
    if p5 is None:
        return PrivacyCheck(
            name="dcr_p5",
            value=None,
            comparison=">",
            threshold=threshold,
            passed=True,
            detail="no records or no reference rows to measure a distance between",
        )
    near = [name for name, distance in zip(names, distances, strict=True) if distance <= threshold]
    return PrivacyCheck(
        name="dcr_p5",
        value=p5,
        comparison=">",
        threshold=threshold,
        passed=p5 > threshold,
        detail=f"{len(near)} of {len(names)} records lie within {threshold:.4f} of a reference record "
        f"(threshold {source})",
        examples=tuple(near[:_EXAMPLES]),
    )


def _sensitive_check(
    column: str, records: Sequence[Any], names: list[str], index: ReferenceIndex
) -> PrivacyCheck:
    leaked = [
        name for record, name in zip(records, names, strict=True) if index.copies_sensitive(record, column)
    ]
    return PrivacyCheck(
        name=f"sensitive:{column}",
        value=float(len(leaked)),
        comparison="==",
        threshold=0.0,
        passed=not leaked,
        detail=f"{len(leaked)} of {len(records)} records carry a {column!r} value found in the reference"
        " (values not shown)",
        examples=tuple(leaked[:_EXAMPLES]),
    )


def _new_row_synthesis(records: Sequence[Any], reference: Sequence[Any]) -> tuple[float | None, str]:
    """sdmetrics' NewRowSynthesis over the flat top-level columns."""
    import pandas as pd
    from sdmetrics.single_table import NewRowSynthesis

    columns = sorted({key for row in [*records, *reference] if isinstance(row, Mapping) for key in row})
    if not records or not reference or not columns:
        return None, "NewRowSynthesis not computed: no records, reference rows or columns"
    real, synthetic = (pd.DataFrame([_flat(row, columns) for row in rows]) for rows in (reference, records))
    # sdmetrics matches rows with a pandas query it writes from the column names and values: any
    # name or text could break it, so columns become c0, c1, ... and each category value a code.
    names = {column: f"c{i}" for i, column in enumerate(columns)}
    real, synthetic = real.rename(columns=names), synthetic.rename(columns=names)
    sdtypes = {}
    for column in names.values():
        values = [v for v in (*real[column], *synthetic[column]) if v is not None]
        numeric = values and all(is_number(v) for v in values)
        sdtypes[column] = {"sdtype": "numerical" if numeric else "categorical"}
        if not numeric:
            codes: dict[str, str] = {}
            for frame in (real, synthetic):
                frame[column] = [
                    None if pd.isna(v) else codes.setdefault(canonical_json(v), f"v{len(codes)}")
                    for v in frame[column]
                ]
                # sdmetrics quotes a categorical value only in an object column; pandas 3 reads str.
                frame[column] = frame[column].astype(object)
    try:
        score = NewRowSynthesis.compute(
            real,
            synthetic,
            {"columns": sdtypes},
            synthetic_sample_size=_NEW_ROW_SAMPLE if len(synthetic) > _NEW_ROW_SAMPLE else None,
        )
    except Exception as exc:  # its pandas query fails on some numbers (e.g. below zero, huge)
        return None, f"NewRowSynthesis not computed: sdmetrics failed ({type(exc).__name__}: {exc})"[:300]
    return float(score), "NewRowSynthesis from sdmetrics over the top-level columns (informational)"


def _flat(row: Any, columns: list[str]) -> dict[str, Any]:
    # Nested values become their canonical JSON text, a categorical value sdmetrics can compare.
    values = row if isinstance(row, Mapping) else {}
    return {
        column: canonical_json(value) if isinstance(value := values.get(column), dict | list) else value
        for column in columns
    }
