"""Fidelity and privacy of a synthetic table beside held-out real rows, and the reward built on them.

``docs/architecture.md`` ("Metrics contract") defines the figures; this module computes them for
one table at a time and for real rows of the same table, so that every figure has a ceiling to be
read against.

A ``Yardstick`` prepares a partition's real data once. The held-out rows (the reference's, when
the partition has none) are split in two halves with a fixed seed: the *yardstick rows*, which
every table is compared with, and the *baseline rows*, scored exactly as if they were a synthetic
table: the held-out figure. ``table_reward`` ranks a table by its figures relative to the
baseline's, and ``column_feedback`` names the columns and rules that cost the most.

Choices the design leaves open, fixed here:

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
  is left out of both (detection scores it). Quality is the mean of shapes and pair trends; with
  fewer than two scored columns there is no pair, and pair trends are reported equal to column
  shapes; with no scored column at all both are 1.0 (nothing to compare by shape).
- Fidelity (shapes, pairs, detection) uses at most ``len(baseline_rows)`` valid rows of a table
  (a fixed-seed sample), so every table and the held-out rows are measured on equal footing.
- Detection AUC: logistic regression (liblinear, C=10) over standardized numbers and their
  standardized squares (dates as days; a missing value becomes the median plus a missing flag;
  the square lets a linear model see a difference in spread, such as uniform noise around the
  real median), one-hot categories and TF-IDF character 1-3-grams of each free-text column
  (case kept: capitalisation is a tell), preprocessing fitted on both classes together (it sees
  no label). The larger class is subsampled to the smaller's size; the test runs three times
  (other subsamples, other fold splits) and is averaged, so that a small batch is not judged by
  one draw. Stratified k-fold ROC AUC with k = min(5, rows per class), mean over folds. The
  raw AUC is reported (below 0.5 is noise around 0.5). With no valid row the AUC is 1.0
  (anything tells an empty table apart); with a single row on either side, or no feature to
  learn from, it is 0.5 (nothing can be measured, and validity already counts). Each free-text
  column also gets its own AUC (``ColumnScore.auc``) for the feedback.
- Privacy figures are over all valid records against the whole reference. Sensitive copies:
  numbers within 1e-6 of the reference column's range (exact when the range is 0), strings
  casefolded with whitespace collapsed, other values by canonical JSON; null and empty strings
  are never copies. DCR protection: the share of valid records strictly closer to a reference
  sample (as large as the yardstick, ten fixed-seed draws averaged) than to the yardstick rows,
  ties counting half, each distance as ``metrics.distances_to_closest_record`` defines it, both
  on one scale (each number's range over the reference and the yardstick rows together);
  protection is 1 - max(0, 2 * share - 1). A copied reference row counts as closer only in the
  draws that hold it, so with a reference four times the yardstick a table of copies scores
  about 0.75: exact match, field overlap and DCR p5 are the figures that catch copies.
- Without a holdout the reference itself is split; the baseline rows' privacy figures are then
  measured against the yardstick half (the rows they were not drawn from), since against the
  whole reference they would be copies of themselves.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import math
import random
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import rankdata
from sdmetrics.column_pairs import ContingencySimilarity, CorrelationSimilarity
from sdmetrics.single_column import KSComplement, TVComplement
from sdmetrics.utils import discretize_column
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from aod_ops.jsonvalues import canonical_json, is_number, pointer_tokens
from aod_ops.metrics import (
    ReferenceIndex,
    diversity,
    exact_match_rate,
    field_overlap,
    leaves,
    percentile,
    task_success_rate,
    validity,
)
from aod_ops.metrics import distances_to_closest_record as _dcr
from aod_ops.rules import Rule, violations
from aod_ops.schema import LoadedSchema, compile_schema, is_choice_leaf, load_schema
from aod_ops.schema.nodes import ArrayNode, ChoiceNode, Node, NumberNode, ObjectNode, StringNode, UnionNode
from aod_ops.spec import Partition, load_reference

NUMERICAL, DATETIME, CATEGORICAL, TEXT = "numerical", "datetime", "categorical", "text"
_CONTINUOUS = (NUMERICAL, DATETIME)
_DATE_FORMATS = ("date", "date-time")
# A categorical value's key is its canonical JSON; absence gets a key no JSON text can have.
_ABSENT = "(absent)"
# Reference draws averaged by DCR protection; detection runs (subsamples and fold splits) averaged.
_DCR_DRAWS = 10
_DETECTION_REPEATS = 3
_FOLDS = 5
# Weak regularisation: with a few dozen rows per class and hundreds of n-gram features, the default
# (C=1) lets the numbers' noise drown a clear free-text difference in the whole-table test.
_C = 10.0


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


@dataclass(frozen=True)
class Scorecard:
    """The docs/architecture.md figures of one table (see the module docstring for how each is measured).

    ``broken_rules`` holds one sentence per cross-field rule that some valid record breaks.
    """

    rows: int
    validity: float
    repair_rate: float | None
    tsr: float
    quality: float
    column_shapes: float
    pair_trends: float
    detection_auc: float
    detection_auc_text: float | None
    detection_auc_other: float | None
    rule_violations: float
    exact_match_rate: float
    sensitive_copies: float
    dcr_p5: float | None
    dcr_median: float | None
    dcr_protection: float
    field_overlap: float
    diversity: float
    columns: tuple[ColumnScore, ...]
    broken_rules: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The scorecard as a JSON-ready dict under its design names."""
        out = asdict(self)
        out["columns"] = [asdict(column) for column in self.columns]
        out["broken_rules"] = list(self.broken_rules)
        return out


@dataclass
class _Column:
    """One column's values on both sides, encoded for its kind (floats, or keys, or texts)."""

    pointer: str
    kind: str
    table: Any
    real: Any
    in_table: bool
    in_real: bool


class Yardstick:
    """A partition's real data prepared once: the reference sample, and the held-out rows split in
    two halves with a fixed seed: ``baseline_rows`` (scored as if they were a synthetic table: the
    held-out figure) and ``yardstick_rows`` (what every table, and the baseline rows, are compared
    with). ``source`` is ``"holdout"``, or ``"reference"`` when there is no holdout and the
    reference was split instead. The reference may come indexed (a ``ReferenceIndex``, as the
    judge's): it is then not indexed again."""

    def __init__(
        self,
        schema: LoadedSchema,
        reference: Sequence[Any] | ReferenceIndex,
        holdout: Sequence[Any] | None,
        rules: Sequence[Rule] = (),
        sensitive: Sequence[str] = (),
        seed: int = 0,
    ) -> None:
        """Prepare the yardstick of a schema, its reference sample and held-out rows (None: no holdout)."""
        self.schema = schema
        self.root: Node = compile_schema(schema).root
        self.rules = tuple(rules)
        self.sensitive = tuple(sensitive)
        self.reference_index = ReferenceIndex.of(reference, self.sensitive)
        self.reference = list(self.reference_index.rows)
        self.seed = seed
        self.source = "holdout" if holdout else "reference"
        real = list(holdout) if holdout else list(self.reference)
        order = list(range(len(real)))
        random.Random(seed).shuffle(order)
        half = len(real) // 2
        self.baseline_rows = [real[i] for i in order[:half]]
        self.yardstick_rows = [real[i] for i in order[half:]]
        self._yard_leaves = [leaves(row) for row in self.yardstick_rows]
        self._kinds: dict[str, str] = {}
        self._baselines: dict[int, Scorecard] = {}
        self._choice: dict[str, bool] = {}

    @classmethod
    def for_partition(cls, partition: Partition) -> Yardstick:
        """The yardstick of a spec partition: its schema, reference, holdout, rules and sensitive
        columns. The split is the default one (seed 0), not the partition's generation seed, so the
        loop, ``aod score`` and the synthesis report all compare with the same real rows."""
        holdout = load_reference(partition, holdout=True) if partition.holdout_path is not None else None
        return cls(
            load_schema(partition.schema_path),
            load_reference(partition),
            holdout,
            partition.rules,
            partition.sensitive,
        )

    def score(
        self,
        records: Sequence[Any],
        repair_rate: float | None = None,
        critic_passed: Sequence[bool] | None = None,
    ) -> Scorecard:
        """Score a table: ``records`` as parsed (invalid ones count against validity only),
        ``repair_rate`` as the generator counted it (None for an outside table), and the critic's
        verdict per record when one is configured."""
        return self._score(records, repair_rate, critic_passed, self.reference_index)

    def baseline(self, n: int | None = None) -> Scorecard:
        """The baseline rows scored exactly like a table; with ``n`` below their number, a
        fixed-seed sample of ``n`` of them (small samples score worse by chance, so a batch is
        read against as many real rows). Cached per size."""
        size = len(self.baseline_rows) if n is None else max(0, min(n, len(self.baseline_rows)))
        if size not in self._baselines:
            rows = self.baseline_rows
            if size < len(rows):
                rows = random.Random(self.seed).sample(rows, size)
            if self.source == "holdout":
                card = self._score(rows, None, None, self.reference_index)
            else:
                # The baseline rows are reference rows: measure their privacy against the other half.
                own = ReferenceIndex.of(self.yardstick_rows, self.sensitive)
                card = self._score(rows, None, None, own)
            self._baselines[size] = card
        return self._baselines[size]

    def _score(
        self,
        records: Sequence[Any],
        repair_rate: float | None,
        critic_passed: Sequence[bool] | None,
        reference: ReferenceIndex,
    ) -> Scorecard:
        flags = [not self.schema.errors(record) for record in records]
        valid = [record for record, ok in zip(records, flags, strict=True) if ok]
        cap = max(1, len(self.baseline_rows))
        sample = random.Random(self.seed).sample(valid, cap) if len(valid) > cap else valid
        with _quiet():
            fidelity = self._fidelity(sample)
            protection = self._dcr_protection(valid, reference)
        distances = _dcr(valid, reference)
        return Scorecard(
            rows=len(records),
            validity=validity(flags),
            repair_rate=repair_rate,
            tsr=task_success_rate(records, flags, reference, critic_passed),
            quality=fidelity.quality,
            column_shapes=fidelity.shapes,
            pair_trends=fidelity.pairs,
            detection_auc=fidelity.auc,
            detection_auc_text=fidelity.auc_text,
            detection_auc_other=fidelity.auc_other,
            rule_violations=violations(valid, self.rules),
            exact_match_rate=exact_match_rate(valid, reference),
            sensitive_copies=self._sensitive_copies(valid, reference),
            dcr_p5=percentile(distances, 5),
            dcr_median=percentile(distances, 50),
            dcr_protection=protection,
            field_overlap=field_overlap(valid, reference, self._is_choice),
            diversity=diversity(valid).ratio,
            columns=fidelity.columns,
            broken_rules=tuple(_rule_sentences(valid, self.rules)),
        )

    def _is_choice(self, pointer: str) -> bool:
        if pointer not in self._choice:
            self._choice[pointer] = is_choice_leaf(self.root, pointer)
        return self._choice[pointer]

    # -- fidelity ---------------------------------------------------------------------------

    def _fidelity(self, sample: list[Any]) -> _Fidelity:
        if not sample:
            kinds = self._yardstick_kinds()
            text = 1.0 if TEXT in kinds else None
            other = 1.0 if kinds - {TEXT} else None
            return _Fidelity(0.0, 0.0, 0.0, 1.0, text, other, ())
        columns = self._columns([leaves(row) for row in sample])
        where = "held-out" if self.source == "holdout" else "reference"
        scored = [c for c in columns if c.kind != TEXT]
        texts = [c for c in columns if c.kind == TEXT]
        shape_scores = [_shape(c) for c in scored]
        shapes = float(np.mean(shape_scores)) if scored else 1.0
        both = [c for c in scored if c.in_table and c.in_real]
        pair_scores = [_pair(a, b) for i, a in enumerate(both) for b in both[i + 1 :]]
        # Columns missing on one side have no pairs; their shape score (0) already counts.
        pairs = float(np.mean(pair_scores)) if pair_scores else shapes
        size = (len(sample), len(self.yardstick_rows))
        auc_text = _detection(texts, size, self.seed) if texts else None
        auc_other = _detection(scored, size, self.seed) if scored else None
        # With one kind of column only, the whole-table test is that kind's test.
        if texts and scored:
            auc = _detection(columns, size, self.seed)
        else:
            auc = auc_text if auc_text is not None else auc_other if auc_other is not None else 0.5
        text_aucs: dict[str, float | None] = {texts[0].pointer: auc_text} if len(texts) == 1 else {}
        if len(texts) > 1:
            text_aucs = {c.pointer: _detection([c], size, self.seed) for c in texts}
        scores = dict(zip((c.pointer for c in scored), shape_scores, strict=True))
        described = tuple(
            _describe(c, scores.get(c.pointer), text_aucs.get(c.pointer), where) for c in columns
        )
        return _Fidelity((shapes + pairs) / 2, shapes, pairs, auc, auc_text, auc_other, described)

    def _yardstick_kinds(self) -> set[str]:
        return {self._kind(p, []) for row in self._yard_leaves for p in row}

    def _columns(self, table: list[dict[str, Any]]) -> list[_Column]:
        pointers = dict.fromkeys(
            [*(p for row in self._yard_leaves for p in row), *(p for row in table for p in row)]
        )
        columns = []
        for pointer in pointers:
            real_values = [row.get(pointer, _ABSENT) for row in self._yard_leaves]
            table_values = [row.get(pointer, _ABSENT) for row in table]
            kind = self._kind(pointer, table_values)
            columns.append(
                _Column(
                    pointer=pointer,
                    kind=kind,
                    table=_encode(kind, table_values),
                    real=_encode(kind, real_values),
                    in_table=any(v is not _ABSENT for v in table_values),
                    in_real=any(v is not _ABSENT for v in real_values),
                )
            )
        return columns

    def _kind(self, pointer: str, table_values: list[Any]) -> str:
        """The column's kind: from the schema, else from the yardstick's values (the table's when
        the yardstick has none at this pointer; that guess is not kept for the next table)."""
        if pointer in self._kinds:
            return self._kinds[pointer]
        nodes = _nodes_at(self.root, pointer)
        if self._is_choice(pointer):
            kind = CATEGORICAL
        elif nodes and all(isinstance(n, NumberNode) for n in nodes):
            kind = NUMERICAL
        elif nodes and all(isinstance(n, StringNode) and n.format in _DATE_FORMATS for n in nodes):
            kind = DATETIME
        else:
            values = [row.get(pointer, _ABSENT) for row in self._yard_leaves]
            if all(v is _ABSENT for v in values):
                strings = bool(nodes) and all(isinstance(n, StringNode) for n in nodes)
                return _kind_of(table_values, strings)
            kind = _kind_of(values, bool(nodes) and all(isinstance(n, StringNode) for n in nodes))
        self._kinds[pointer] = kind
        return kind

    # -- privacy ----------------------------------------------------------------------------

    def _sensitive_copies(self, valid: list[Any], reference: ReferenceIndex) -> float:
        """Share of ``valid`` with some sensitive column's value near a reference value."""
        if not valid or not self.sensitive:
            return 0.0
        copied = (
            any(reference.copies_sensitive(record, column, near=True) for column in self.sensitive)
            for record in valid
        )
        return sum(copied) / len(valid)

    def _dcr_protection(self, valid: list[Any], reference: ReferenceIndex) -> float:
        if not valid or not self.yardstick_rows or not reference.rows:
            return 1.0
        rows = list(reference.rows)
        # Both distances on one scale (each pointer's range over the reference and the yardstick
        # rows): with each side normalised by its own range, the side with the wider range
        # looked closer.
        scale = [*rows, *self.yardstick_rows]
        to_yardstick = _dcr(valid, self.yardstick_rows, scale=scale)
        size = min(len(rows), len(self.yardstick_rows))
        shares = []
        for draw in range(_DCR_DRAWS):
            sample = random.Random(self.seed + draw).sample(rows, size)
            to_reference = _dcr(valid, sample, scale=scale)
            closer = (to_reference < to_yardstick).sum() + 0.5 * (to_reference == to_yardstick).sum()
            shares.append(closer / len(valid))
        return float(1.0 - max(0.0, 2.0 * float(np.mean(shares)) - 1.0))


@dataclass(frozen=True)
class _Fidelity:
    quality: float
    shapes: float
    pairs: float
    auc: float
    auc_text: float | None
    auc_other: float | None
    columns: tuple[ColumnScore, ...]


def _kind_of(values: list[Any], strings: bool) -> str:
    """The kind of a column the schema does not settle, from its values in some rows."""
    seen = [v for v in values if v is not _ABSENT and v is not None]
    if not strings and seen and all(is_number(v) for v in seen):
        return NUMERICAL
    distinct = len({canonical_json(v) for v in seen})
    # Few distinct values that repeat (each seen twice on average) make categories.
    few = distinct <= max(10, 0.2 * len(values)) and distinct <= len(seen) / 2
    return CATEGORICAL if few else TEXT


def _nodes_at(root: Node, pointer: str) -> list[Node]:
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


def _encode(kind: str, values: list[Any]) -> Any:
    """A column's values for its kind: floats (NaN when missing), category keys, or texts."""
    if kind == NUMERICAL:
        return np.array([_finite(v) for v in values])
    if kind == DATETIME:
        return np.array([_days(v) for v in values])
    if kind == CATEGORICAL:
        return [_ABSENT if v is _ABSENT else canonical_json(v) for v in values]
    return [
        "" if v is _ABSENT or v is None else v if isinstance(v, str) else canonical_json(v) for v in values
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


def _shape(column: _Column) -> float:
    if not (column.in_table and column.in_real):
        return 0.0
    if column.kind in _CONTINUOUS:
        table, real = column.table[~np.isnan(column.table)], column.real[~np.isnan(column.real)]
        if not len(table) or not len(real):
            # Only nulls on one side (or both, which is a match).
            return 1.0 if len(table) == len(real) == 0 else 0.0
        return float(KSComplement.compute(real, table))
    return float(TVComplement.compute(column.real, column.table))


def _pair(a: _Column, b: _Column) -> float:
    if a.kind in _CONTINUOUS and b.kind in _CONTINUOUS:
        score = _correlation(a, b)
        if score is not None:
            return score
    real_a, table_a = _discrete(a)
    real_b, table_b = _discrete(b)
    real = pd.DataFrame({"a": real_a, "b": real_b})
    table = pd.DataFrame({"a": table_a, "b": table_b})
    return float(ContingencySimilarity.compute(real, table))


def _discrete(column: _Column) -> tuple[Any, Any]:
    if column.kind in _CONTINUOUS:
        return discretize_column(pd.Series(column.real), pd.Series(column.table))
    return column.real, column.table


def _correlation(a: _Column, b: _Column) -> float | None:
    """CorrelationSimilarity over the complete rows, None when a correlation is undefined."""
    frames = []
    for x, y in ((a.real, b.real), (a.table, b.table)):
        keep = ~(np.isnan(x) | np.isnan(y))
        if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
            return None
        frames.append(pd.DataFrame({"a": x[keep], "b": y[keep]}))
    score = CorrelationSimilarity.compute(frames[0], frames[1])
    return None if np.isnan(score) else float(score)


def _detection(columns: list[_Column], size: tuple[int, int], seed: int) -> float:
    """Cross-validated ROC AUC of a logistic regression telling the table from the yardstick rows."""
    n_table, n_real = size
    if n_table == 0:
        return 1.0
    smaller = min(n_table, n_real)
    if smaller < 2:
        return 0.5
    aucs = []
    for repeat in range(_DETECTION_REPEATS):
        rng = np.random.default_rng(seed + repeat)
        table_rows = np.sort(rng.choice(n_table, smaller, replace=False))
        real_rows = np.sort(rng.choice(n_real, smaller, replace=False))
        features = _features(columns, table_rows, real_rows)
        if features is None:
            return 0.5
        labels = np.r_[np.ones(smaller), np.zeros(smaller)]
        folds = StratifiedKFold(n_splits=min(_FOLDS, smaller), shuffle=True, random_state=seed + repeat)
        for train, test in folds.split(np.zeros(len(labels)), labels):
            model = LogisticRegression(solver="liblinear", C=_C, random_state=seed)
            model.fit(features[train], labels[train])
            aucs.append(_auc(labels[test], model.decision_function(features[test])))
    return float(np.mean(aucs))


def _standard(values: np.ndarray) -> np.ndarray:
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half): the share of (positive, negative)
    pairs the scores order correctly."""
    ranks = rankdata(scores)
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _features(columns: list[_Column], table_rows: np.ndarray, real_rows: np.ndarray) -> Any:
    """The feature matrix of the chosen table rows then yardstick rows; None with no feature."""
    blocks: list[Any] = []
    for column in columns:
        if column.kind in _CONTINUOUS:
            values = np.r_[column.table[table_rows], column.real[real_rows]]
            missing = np.isnan(values)
            if missing.all():
                continue
            values = np.where(missing, np.nanmedian(values), values)
            scaled = _standard(values)
            # The square lets a linear model see a difference in spread, not only in location.
            parts = [scaled, _standard(scaled**2), *([missing.astype(float)] if missing.any() else [])]
            blocks.append(sp.csr_matrix(np.column_stack(parts)))
        elif column.kind == CATEGORICAL:
            keys = [column.table[i] for i in table_rows] + [column.real[i] for i in real_rows]
            codes: dict[str, int] = {}
            cols = [codes.setdefault(k, len(codes)) for k in keys]
            ones = np.ones(len(keys))
            blocks.append(sp.csr_matrix((ones, (np.arange(len(keys)), cols)), shape=(len(keys), len(codes))))
        else:
            texts = [column.table[i] for i in table_rows] + [column.real[i] for i in real_rows]
            vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), lowercase=False)
            try:
                blocks.append(vectorizer.fit_transform(texts))
            except ValueError:  # every text empty: no vocabulary, nothing to learn from
                continue
    return sp.hstack(blocks, format="csr") if blocks else None


# -- descriptions -----------------------------------------------------------------------------


def _describe(column: _Column, score: float | None, auc: float | None, where: str) -> ColumnScore:
    label = column.pointer.lstrip("/") or "(record)"
    if column.kind == TEXT:
        synthetic, real = _text_summary(column.table, True), _text_summary(column.real, False)
        told = f"told apart from {where} rows with AUC {auc:.2f}; " if auc is not None else ""
        detail = f"{label}: {told}table {synthetic}; {where} rows {real}"
        return ColumnScore(column.pointer, TEXT, "text", None, synthetic, real, detail, auc)
    metric = "KSComplement" if column.kind in _CONTINUOUS else "TVComplement"
    if column.kind in _CONTINUOUS:
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


def _continuous_detail(label: str, column: _Column, show: Any, where: str) -> str:
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
    if key == _ABSENT:
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


def _categorical_detail(label: str, column: _Column, where: str) -> str:
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


_BROKEN = {
    ast.Lt: "at or above",
    ast.LtE: "above",
    ast.Gt: "at or below",
    ast.GtE: "below",
    ast.Eq: "different from",
    ast.NotEq: "equal to",
}


def _rule_sentences(records: list[Any], rules: Sequence[Rule]) -> Iterator[str]:
    """One sentence per rule broken by some record: what is wrong, how often, and an example."""
    for rule in rules:
        broken = [record for record in records if rule.holds(record) is False]
        if not broken:
            continue
        tree = rule.tree
        if len(tree.ops) == 1:
            what = f"{ast.unparse(tree.left)} {_BROKEN[type(tree.ops[0])]} {ast.unparse(tree.comparators[0])}"
        else:
            what = f"rule {rule.text!r} broken"
        flat = leaves(broken[0])
        example = ", ".join(f"{p.lstrip('/')} {flat.get(p)!r}" for p in rule.fields)
        yield f"{what} in {len(broken)} of {len(records)} records (e.g. {example})"


# -- reward and feedback ----------------------------------------------------------------------


def _distinguishability(auc: float) -> float:
    """1 when a detector does no better than chance, 0 when it tells the rows apart perfectly."""
    return 1.0 - 2.0 * max(0.0, auc - 0.5)


def _detected(card: Scorecard) -> float:
    """The AUC of the best of the three detection tests (whole table, free text, other columns)."""
    aucs = (card.detection_auc, card.detection_auc_text, card.detection_auc_other)
    return max(auc for auc in aucs if auc is not None)


def _ratio(value: float, ceiling: float) -> float:
    """``value / ceiling`` capped at 1; a zero ceiling is met by anything."""
    return 1.0 if ceiling <= 0 else min(1.0, value / ceiling)


def table_reward(card: Scorecard, baseline: Scorecard) -> float:
    """The reward of a table in [0, 1], ranking tables the way the docs/architecture.md figures do.

    Fidelity first, read against the held-out rows' own figures::

        fidelity = 0.5 * min(1, quality / baseline quality) + 0.5 * min(1, d / baseline d)
        d = 1 - 2 * max(0, AUC - 0.5)

    where AUC is the highest of ``detection_auc``, ``detection_auc_text`` and
    ``detection_auc_other``: a table is told apart when any of the three tests tells it apart
    (on a few dozen rows the whole-table regression can miss what the free-text one sees);

    privacy as a gate relative to the held-out rows (copies of any kind multiply the reward down,
    and only the excess over what unseen real rows show is counted)::

        privacy = (1 - exact_match_rate) * (1 - sensitive_copies)
                  * min(1, dcr_protection / max(0.5, 0.9 * baseline dcr_protection))
                  * (1 - max(0, field_overlap - baseline field_overlap))
                  * (1 - max(0, rule_violations - baseline rule_violations))

    and validity as a precondition, repairs counted against the model::

        reward = tsr * (1 - repair_rate) * fidelity * privacy

    A zero baseline ceiling (quality or d) counts as met.
    """
    fidelity = 0.5 * _ratio(card.quality, baseline.quality) + 0.5 * _ratio(
        _distinguishability(_detected(card)), _distinguishability(_detected(baseline))
    )
    privacy = (
        (1.0 - card.exact_match_rate)
        * (1.0 - card.sensitive_copies)
        * min(1.0, card.dcr_protection / max(0.5, 0.9 * baseline.dcr_protection))
        * (1.0 - max(0.0, card.field_overlap - baseline.field_overlap))
        * (1.0 - max(0.0, card.rule_violations - baseline.rule_violations))
    )
    reward = card.tsr * (1.0 - (card.repair_rate or 0.0)) * fidelity * privacy
    return min(1.0, max(0.0, reward))


def _cost(column: ColumnScore) -> float:
    if column.score is not None:
        return 1.0 - column.score
    return 1.0 - _distinguishability(column.auc) if column.auc is not None else 0.0


def column_feedback(card: Scorecard, limit: int = 5) -> list[str]:
    """The ``detail`` of the ``limit`` worst columns, most costly first (1 - score, or for free
    text 2 * (AUC - 0.5)), columns that cost nothing left out; then one sentence per rule broken."""
    ranked = sorted((c for c in card.columns if _cost(c) > 0), key=_cost, reverse=True)
    return [c.detail for c in ranked[:limit]] + list(card.broken_rules)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence what SDMetrics, SciPy, pandas and scikit-learn warn about degenerate small samples
    (constant columns, unconverged fits on separable data): the figures handle those cases."""
    with warnings.catch_warnings():
        for category in (RuntimeWarning, UserWarning, FutureWarning, ConvergenceWarning):
            warnings.simplefilter("ignore", category)
        yield
