"""The leaf columns of a table beside the yardstick rows: kind, encoding, scores and description.

``aod_ops.fidelity`` builds a ``Column`` per leaf pointer of a table and of the yardstick rows
and scores it here; its ``ColumnScore`` says in words what differs. The choices (see
``docs/architecture.md``, "Metrics contract"):

- Records are flattened to leaf columns by JSON pointer (``metrics.leaves``). A column's kind
  comes from the compiled schema first: an enum/const/boolean leaf is categorical, a number slot
  numerical, a string slot with format date or date-time a datetime; any other string is
  categorical when the yardstick rows hold few distinct values (at most max(10, 20% of the
  rows)) that repeat (at most half as many as values), else free text. A pointer the schema does
  not describe is numerical when every value seen is a number, else judged like a string.
- Column shapes are SDMetrics' KSComplement (numbers, dates as days; missing values dropped) and
  TVComplement (categories; null and absence are categories of their own); a column present on
  one side only scores 0. Pair trends are SDMetrics' CorrelationSimilarity for two continuous
  columns and ContingencySimilarity otherwise, a continuous column binned on the yardstick's
  histogram edges as SDMetrics' QualityReport does; a pair whose correlation is undefined (a
  constant column, fewer than 3 complete rows) falls back to the binned contingency. Free text
  is left out of both (detection scores it, ``aod_ops.detection``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sdmetrics.column_pairs import ContingencySimilarity, CorrelationSimilarity
from sdmetrics.single_column import KSComplement, TVComplement
from sdmetrics.utils import discretize_column

from aod_ops.jsonvalues import canonical_json, is_number, pointer_tokens
from aod_ops.schema.nodes import ArrayNode, ChoiceNode, Node, ObjectNode, UnionNode

NUMERICAL, DATETIME, CATEGORICAL, TEXT = "numerical", "datetime", "categorical", "text"
CONTINUOUS = (NUMERICAL, DATETIME)
DATE_FORMATS = ("date", "date-time")
# A categorical value's key is its canonical JSON; absence gets a key no JSON text can have.
ABSENT = "(absent)"


@dataclass(frozen=True)
class ColumnScore:
    """One leaf column of a table against the yardstick rows.

    ``score`` is 1 - KS (numbers, dates) or 1 - TVD (categories), None for free text, which is
    scored by detection instead: ``auc`` is then the detection AUC of that column alone.
    ``synthetic`` and ``real`` describe the two sides' values in a few words; ``detail`` is one
    sentence naming the mismatch in numbers. Descriptions of real rows are aggregates only:
    held-out values are never shown to an agent, so no free-text value of theirs is quoted.
    """

    pointer: str
    kind: str
    metric: str
    score: float | None
    synthetic: str
    real: str
    detail: str
    auc: float | None = None


@dataclass
class Column:
    """One column's values on both sides, encoded for its kind (floats, or keys, or texts)."""

    pointer: str
    kind: str
    table: Any
    real: Any
    in_table: bool
    in_real: bool


def kind_of(values: list[Any], strings: bool) -> str:
    """The kind of a column the schema does not settle, from its values in some rows."""
    seen = [v for v in values if v is not ABSENT and v is not None]
    if not strings and seen and all(is_number(v) for v in seen):
        return NUMERICAL
    distinct = len({canonical_json(v) for v in seen})
    # Few distinct values that repeat (each seen twice on average) make categories.
    few = distinct <= max(10, 0.2 * len(values)) and distinct <= len(seen) / 2
    return CATEGORICAL if few else TEXT


def nodes_at(root: Node, pointer: str) -> list[Node]:
    """The value nodes that can produce the leaf at instance ``pointer`` (every union branch)."""
    found: list[Node] = []
    stack: list[tuple[Node, list[str]]] = [(root, pointer_tokens(pointer))]
    while stack:
        node, rest = stack.pop()
        if isinstance(node, UnionNode):
            stack.extend((branch, rest) for branch in node.branches)
        elif not rest:
            # A null-only choice is the "or null" of an optional value: it says nothing of the kind.
            if not (isinstance(node, ChoiceNode) and all(option is None for option in node.options)):
                found.append(node)
        elif isinstance(node, ObjectNode):
            stack.extend((p.node, rest[1:]) for p in node.properties if p.name == rest[0])
        elif isinstance(node, ArrayNode) and rest[0].isdigit():
            index = int(rest[0])
            if index < len(node.prefix):
                stack.append((node.prefix[index], rest[1:]))
            elif index == len(node.prefix) and node.contains is not None:
                stack.append((node.contains, rest[1:]))
            elif node.items is not None:
                stack.append((node.items, rest[1:]))
    return found


def encode(kind: str, values: list[Any]) -> Any:
    """A column's values for its kind: floats (NaN when missing), category keys, or texts."""
    if kind == NUMERICAL:
        return np.array([_finite(v) for v in values])
    if kind == DATETIME:
        return np.array([_days(v) for v in values])
    if kind == CATEGORICAL:
        return [ABSENT if v is ABSENT else canonical_json(v) for v in values]
    return [
        "" if v is ABSENT or v is None else v if isinstance(v, str) else canonical_json(v) for v in values
    ]


def _finite(value: Any) -> float:
    """A number as a finite float; NaN for anything else (an infinity or a huge integer too)."""
    if not is_number(value):
        return math.nan
    try:
        number = float(value)
    except OverflowError:
        return math.nan
    return number if math.isfinite(number) else math.nan


def _days(value: Any) -> float:
    """An ISO date or date-time as days since 1970-01-01 (UTC); NaN when it is not one."""
    if not isinstance(value, str):
        return math.nan
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return math.nan
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp() / 86400.0


def shape_score(column: Column) -> float:
    """The column shape: 1 - KS (numbers, dates) or 1 - TVD (categories); 0 for a column on one side."""
    if not (column.in_table and column.in_real):
        return 0.0
    if column.kind in CONTINUOUS:
        table, real = column.table[~np.isnan(column.table)], column.real[~np.isnan(column.real)]
        if not len(table) or not len(real):
            # Only nulls on one side (or both, which is a match).
            return 1.0 if len(table) == len(real) == 0 else 0.0
        return float(KSComplement.compute(real, table))
    return float(TVComplement.compute(column.real, column.table))


def pair_trend(a: Column, b: Column) -> float:
    """The pair trend of two columns: correlation similarity, else contingency similarity."""
    if a.kind in CONTINUOUS and b.kind in CONTINUOUS:
        score = _correlation(a, b)
        if score is not None:
            return score
    real_a, table_a = _discrete(a)
    real_b, table_b = _discrete(b)
    real = pd.DataFrame({"a": real_a, "b": real_b})
    table = pd.DataFrame({"a": table_a, "b": table_b})
    return float(ContingencySimilarity.compute(real, table))


def _discrete(column: Column) -> tuple[Any, Any]:
    if column.kind in CONTINUOUS:
        return discretize_column(pd.Series(column.real), pd.Series(column.table))
    return column.real, column.table


def _correlation(a: Column, b: Column) -> float | None:
    """CorrelationSimilarity over the complete rows, None when a correlation is undefined."""
    frames = []
    for x, y in ((a.real, b.real), (a.table, b.table)):
        keep = ~(np.isnan(x) | np.isnan(y))
        if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
            return None
        frames.append(pd.DataFrame({"a": x[keep], "b": y[keep]}))
    score = CorrelationSimilarity.compute(frames[0], frames[1])
    return None if np.isnan(score) else float(score)


def describe(column: Column, score: float | None, auc: float | None, where: str) -> ColumnScore:
    """The column's ``ColumnScore``: its score or AUC, both sides described (``where``: the real rows)."""
    label = column.pointer.lstrip("/") or "(record)"
    if column.kind == TEXT:
        synthetic, real = _text_summary(column.table, True), _text_summary(column.real, False)
        told = f"told apart from {where} rows with AUC {auc:.2f}; " if auc is not None else ""
        detail = f"{label}: {told}table {synthetic}; {where} rows {real}"
        return ColumnScore(column.pointer, TEXT, "text", None, synthetic, real, detail, auc)
    metric = "KSComplement" if column.kind in CONTINUOUS else "TVComplement"
    if column.kind in CONTINUOUS:
        show = _show_date if column.kind == DATETIME else _show_number
        synthetic, real = _range_summary(column.table, show), _range_summary(column.real, show)
        detail = _continuous_detail(label, column, show, where)
    else:
        synthetic, real = _share_summary(column.table), _share_summary(column.real)
        detail = _categorical_detail(label, column, where)
    if not column.in_real:
        detail = f"{label}: in the table ({synthetic}) but never in the {where} rows"
    elif not column.in_table:
        detail = f"{label}: missing from the table; {where} rows {real}"
    return ColumnScore(column.pointer, column.kind, metric, score, synthetic, real, detail)


def _show_number(value: float) -> str:
    if value == int(value) or abs(value) >= 1000:
        return str(round(value))
    return f"{value:.3g}"


def _show_date(days: float) -> str:
    return (dt.datetime(1970, 1, 1) + dt.timedelta(days=days)).date().isoformat()


def _range_summary(values: np.ndarray, show: Any) -> str:
    present = values[~np.isnan(values)]
    if not len(present):
        return "no values"
    text = f"{show(present.min())} to {show(present.max())}, median {show(float(np.median(present)))}"
    missing = len(values) - len(present)
    return f"{text}, {missing} of {len(values)} missing" if missing else text


def _continuous_detail(label: str, column: Column, show: Any, where: str) -> str:
    table, real = column.table[~np.isnan(column.table)], column.real[~np.isnan(column.real)]
    if not len(table) or not len(real):
        ours, theirs = _range_summary(column.table, show), _range_summary(column.real, show)
        return f"{label}: table {ours}; {where} rows {theirs}"
    low, high = np.percentile(real, [10, 90])
    above, below = int((table > high).sum()), int((table < low).sum())
    text = (
        f"{label}: table median {show(float(np.median(table)))} vs {show(float(np.median(real)))} in the "
        f"{where} rows; {above} of {len(table)} values above {show(high)} and {below} below {show(low)} "
        f"(80% of the {where} rows lie within {show(low)} to {show(high)})"
    )
    missing = len(column.table) - len(table)
    real_missing = (len(column.real) - len(real)) / len(column.real)
    if missing or real_missing:
        text += f"; {missing} of {len(column.table)} missing vs {real_missing:.0%} of the {where} rows"
    return text


def _category(key: str, quote: bool = False) -> str:
    """A category key as shown: a string as itself (quoted on request), any other value as JSON."""
    if key == ABSENT:
        return "(absent)"
    value = json.loads(key)
    if not isinstance(value, str):
        return key
    return repr(value) if quote else value


def _share_summary(keys: list[str], top: int = 3) -> str:
    counts = Counter(keys).most_common()
    shown = ", ".join(f"{_category(k)} {n / len(keys):.0%}" for k, n in counts[:top])
    others, rest = len(counts[top:]), sum(n for _, n in counts[top:])
    return shown + (f", {others} other{'s' if others > 1 else ''} {rest / len(keys):.0%}" if rest else "")


def _categorical_detail(label: str, column: Column, where: str) -> str:
    table, real = Counter(column.table), Counter(column.real)
    n, m = len(column.table), len(column.real)
    gaps = sorted(set(table) | set(real), key=lambda k: -abs(table[k] / n - real[k] / m))[:2]
    parts = [
        f"{_category(k, quote=True)} in {table[k]} of {n} records vs {real[k] / m:.0%} of the {where} rows"
        for k in gaps
    ]
    return f"{label}: " + "; ".join(parts)


def _text_summary(texts: list[str], example: bool) -> str:
    present = [t for t in texts if t]
    if not present:
        return "no values"
    length = np.mean([len(t) for t in present])
    digits = np.mean([any(c.isdigit() for c in t) for t in present])
    words = np.mean([len(t.split()) for t in present])
    text = (
        f"{len(set(present))} distinct of {len(texts)}, mean {length:.0f} chars and {words:.1f} words, "
        f"{digits:.0%} with digits"
    )
    # Only the table's own values may be quoted: the real rows are never shown to an agent.
    return f"{text}, e.g. {present[0]!r}" if example else text
