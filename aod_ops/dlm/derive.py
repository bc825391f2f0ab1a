"""Deriving value guides: the reference sample read once into a partition's ``Guides``.

``derive_guides`` walks the compiled schema's guidable leaves (object properties, down through
nested objects; array items are not guided) and gives each the guide its reference values call
for: a ``NumberGuide``, a ``DateGuide`` (with a ``SeasonGuide`` when the dates span a year), a
``CategoryGuide`` for an enum, a boolean or a string with few distinct values, or a
``TextGuide`` for free text. A category is ordered by the number it explains best, the
copula's correlation is taken over every field's normal scores, and the rules whose bound
compares two guided fields are kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from decimal import Decimal
from statistics import NormalDist
from typing import Any

import numpy as np

from aod_ops.dlm.field_guides import (
    MAX_DECIMALS,
    QUANTILES,
    CategoryGuide,
    DateGuide,
    FieldGuide,
    NumberGuide,
    Placement,
    SeasonGuide,
    fits_string,
    is_scalar,
    season,
    writable,
)
from aod_ops.dlm.guides import RULE_OPS, Guides
from aod_ops.dlm.numbers import grid_bounds
from aod_ops.dlm.text import TextGuide, text_guide, text_shape
from aod_ops.jsonvalues import canonical_json, escape_token, is_number, pointer_tokens
from aod_ops.rules import Rule
from aod_ops.schema.nodes import ChoiceNode, Node, NumberNode, ObjectNode, StringNode, UnionNode

_MIN_EIGENVALUE = 1e-3  # the copula's correlation is kept this far from singular
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NORMAL = NormalDist()
SEASON_PHASES = 24  # phases tried for a season: every half month
# Pseudo-count added to the count of every category the reference holds. Shares read off the
# reference reproduce its sampling noise: airports' states drawn at their 200-row shares, swapped
# into real unseen rows, sat closer to the reference than to the held-out rows. DCR protection of
# that swap over ten 200-row tables: 0.87 with a pseudo-count of 0.5 (Jeffreys' prior), 0.90 with
# 2, 0.91 with 4, against 0.96 for the unseen rows themselves; the guides' quality 0.85 with 0.5
# and 2, 0.83 with 4.
CATEGORY_PSEUDO_COUNT = 2.0
# A category field places a number when it explains at least this share of the number's variance
# (airports' state: 0.96 of latitude, 0.97 of longitude; in the other example tables at most
# 0.45). The copula ties the two through one ordering of the categories only, so an airport
# drawn in one state got the latitude of states near it in that order and the longitude of any:
# DCR protection of the guides' own draws 0.86, with placements 0.92 (real unseen airports 0.93).
PLACEMENT_SHARE = 0.8


def derive_guides(
    root: Node,
    reference: Sequence[dict[str, Any]],
    rules: Sequence[Rule] = (),
    bins: int = 10,
    seed: int = 0,
    sensitive: Sequence[str] = (),
) -> Guides:
    """The value guides of the reference sample for the schema compiled into ``root``.

    ``rules`` whose ``Bound`` compares two guided fields are kept for ``RecordGuide.settle``;
    ``seed`` breaks ties in the copula's ranks; ``sensitive`` names fields (top-level names or
    JSON pointers) whose strings are never guided by category, so that their reference values
    are never put in front of the model.
    """
    hidden = {s if s.startswith("/") else "/" + s for s in sensitive}
    fields: list[FieldGuide] = []
    columns: list[list[Any]] = []
    dated: list[tuple[str, list[Any]]] = []
    for pointer, node in _leaves(root):
        values = [_at(row, pointer) for row in reference]
        guide = _guide(pointer, node, values, len(reference), pointer in hidden)
        if guide is not None:
            fields.append(guide)
            columns.append(values)
        if isinstance(guide, DateGuide) and guide.quantiles[-1] - guide.quantiles[0] >= 365:
            dated.append((pointer, values))
    for pointer, values in dated:
        phase = _phase(
            values, [c for f, c in zip(fields, columns, strict=True) if isinstance(f, NumberGuide)]
        )
        days = [d for v in values if isinstance(v, str) and (d := _ordinal(v)) is not None]
        quantiles = np.quantile([season(d, phase) for d in days], np.linspace(0.0, 1.0, QUANTILES))
        fields.append(SeasonGuide(pointer, phase, tuple(float(q) for q in quantiles)))
        columns.append(values)
    numbers = [c for f, c in zip(fields, columns, strict=True) if isinstance(f, NumberGuide)]
    fields = [
        _ordered(f, c, numbers) if isinstance(f, CategoryGuide) else f
        for f, c in zip(fields, columns, strict=True)
    ]
    categories = [(f, c) for f, c in zip(fields, columns, strict=True) if isinstance(f, CategoryGuide)]
    fields = [
        _placed(f, c, categories) if isinstance(f, NumberGuide) and f.pointer not in hidden else f
        for f, c in zip(fields, columns, strict=True)
    ]
    correlation = _correlation(fields, columns, np.random.default_rng(seed))
    guided = {f.pointer for f in fields if not isinstance(f, TextGuide)}
    bounds = []
    for rule in rules:
        b = rule.bound
        if b is not None and b.op in RULE_OPS and {b.left, b.right} <= guided and b.left != b.right:
            bounds.append(b)
    return Guides(tuple(fields), correlation, tuple(bounds), bins)


def _leaves(node: Node, pointer: str = "") -> list[tuple[str, Node]]:
    """Every guidable leaf under ``node``: object properties, down through nested objects; a
    nullable leaf (a union of it and null) counts as the leaf."""
    if isinstance(node, UnionNode):
        values = [b for b in node.branches if not (isinstance(b, ChoiceNode) and b.options == (None,))]
        return _leaves(values[0], pointer) if len(values) == 1 else []
    if isinstance(node, ObjectNode):
        out: list[tuple[str, Node]] = []
        for prop in node.properties:
            out += _leaves(prop.node, f"{pointer}/{escape_token(prop.name)}")
        return out
    if isinstance(node, NumberNode | StringNode) or (isinstance(node, ChoiceNode) and len(node.options) > 1):
        return [(pointer, node)] if pointer else []
    return []


class _Absent:
    """A missing value at a pointer."""


_ABSENT = _Absent()


def _at(row: Any, pointer: str) -> Any:
    for key in pointer_tokens(pointer):
        if not isinstance(row, dict) or key not in row:
            return _ABSENT
        row = row[key]
    return _ABSENT if row is None else row


def _guide(pointer: str, node: Node, values: list[Any], rows: int, sensitive: bool) -> FieldGuide | None:
    present = [v for v in values if v is not _ABSENT]
    if isinstance(node, NumberNode):
        numbers = [float(v) for v in present if isinstance(v, int | float) and not isinstance(v, bool)]
        if not numbers or not all(math.isfinite(v) for v in numbers):
            return None
        integer = node.integer or all(v.is_integer() for v in numbers)
        decimals = 0 if integer else min(MAX_DECIMALS, max(_decimals(v) for v in numbers))
        lo, hi = grid_bounds(node, integer, decimals)
        quantiles = np.quantile(numbers, np.linspace(0.0, 1.0, QUANTILES))
        return NumberGuide(pointer, tuple(float(q) for q in quantiles), integer, decimals, lo, hi)
    if isinstance(node, ChoiceNode):
        if not all(is_scalar(o) for o in node.options):  # an enum of objects or arrays is left alone
            return None
        keys = [canonical_json(o) for o in node.options]
        tally = dict.fromkeys(keys, 0)
        for v in present:
            if canonical_json(v) in tally:
                tally[canonical_json(v)] += 1
        if not sum(tally.values()):
            return None
        # Numeric options (cylinders) in value order, so the copula can say "more weight, more
        # cylinders"; other options most frequent first, as SDV orders categories.
        numeric = all(isinstance(o, int | float) and not isinstance(o, bool) for o in node.options)
        order = sorted(
            range(len(keys)), key=lambda i: (node.options[i], i) if numeric else (-tally[keys[i]], i)
        )
        return CategoryGuide(
            pointer,
            tuple(node.options[i] for i in order),
            _shares([tally[keys[i]] for i in order]),
            choice=True,
        )
    assert isinstance(node, StringNode)
    strings = [v for v in present if isinstance(v, str)]
    if not strings:
        return None
    dates = [_ordinal(s) for s in strings]
    if node.format == "date" or all(d is not None for d in dates):
        days = [float(d) for d in dates if d is not None]
        if not days:
            return None
        return DateGuide(
            pointer, tuple(float(q) for q in np.quantile(days, np.linspace(0.0, 1.0, QUANTILES)))
        )
    counts: dict[str, int] = {}
    for s in strings:
        counts[s] = counts.get(s, 0) + 1
    # A category column: few distinct values that repeat (US state codes of 200 airports: 45);
    # any other string with no pattern of its own is free text.
    if sensitive or len(counts) > max(10, rows // 4) or 2 * len(counts) > len(strings):
        return text_guide(pointer, strings, sensitive) if node.pattern is None else None
    # A category must fit the slot and be writable inside the skeleton's quotes.
    kept = {s: n for s, n in counts.items() if writable(s) and fits_string(node, s)}
    if not kept:
        return None
    ordered = sorted(kept, key=lambda s: (-kept[s], s))
    return CategoryGuide(pointer, tuple(ordered), _shares([kept[s] for s in ordered]), choice=False)


def _shares(counts: list[int]) -> tuple[float, ...]:
    """Each category's share: its count plus ``CATEGORY_PSEUDO_COUNT`` over the total, for the
    categories the reference holds (an enum option it lacks keeps a share of 0)."""
    smoothed = [c + CATEGORY_PSEUDO_COUNT if c else 0.0 for c in counts]
    return tuple(c / sum(smoothed) for c in smoothed)


def _decimals(value: float) -> int:
    if value.is_integer():
        return 0
    exponent = Decimal(repr(value)).normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _ordinal(text: str) -> int | None:
    if not _ISO_DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text).toordinal()
    except ValueError:
        return None


def _correlation(
    fields: list[FieldGuide], columns: list[list[Any]], rng: np.random.Generator
) -> tuple[tuple[float, ...], ...]:
    """The copula's correlation: normal scores per field (missing values score 0), their
    correlation, kept positive definite."""
    n = len(fields)
    if n == 0:
        return ()
    rows = len(columns[0])
    scores = np.zeros((rows, n))
    for j, (guide, column) in enumerate(zip(fields, columns, strict=True)):
        u = _uniforms(guide, column, rng)
        for i, value in enumerate(u):
            if value is not None:
                scores[i, j] = _NORMAL.inv_cdf(min(max(value, 1e-6), 1 - 1e-6))
    centred = scores - scores.mean(0)
    std = np.sqrt((centred**2).mean(0))
    live = std > 1e-12
    matrix = np.eye(n)
    if rows > 1:
        cov = centred.T @ centred / rows
        denominator = np.outer(np.where(live, std, 1.0), np.where(live, std, 1.0))
        matrix = np.where(np.outer(live, live), cov / denominator, 0.0)
        np.fill_diagonal(matrix, 1.0)
    eigenvalues, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    matrix = vectors @ np.diag(np.clip(eigenvalues, _MIN_EIGENVALUE, None)) @ vectors.T
    d = np.sqrt(np.diag(matrix))
    matrix = matrix / np.outer(d, d)
    matrix = (matrix + matrix.T) / 2
    np.fill_diagonal(matrix, 1.0)
    return tuple(tuple(float(x) for x in row) for row in matrix)


def _phase(dates: list[Any], numbers: list[list[Any]]) -> float:
    """The phase whose season the numeric columns follow most: of ``SEASON_PHASES`` phases, the
    one maximising the summed squared rank correlations of ``season(day, phase)`` with them."""
    best, phase = -1.0, 0.0
    for k in range(SEASON_PHASES):
        candidate = 2 * math.pi * k / SEASON_PHASES
        total = 0.0
        for column in numbers:
            pairs = [
                (season(d, candidate), float(v))
                for s, v in zip(dates, column, strict=True)
                if isinstance(s, str) and (d := _ordinal(s)) is not None and is_number(v)
            ]
            if len(pairs) > 2:
                a, b = (np.argsort(np.argsort(np.array(x))) for x in zip(*pairs, strict=True))
                r = np.corrcoef(a, b)[0, 1]
                total += 0.0 if np.isnan(r) else float(r) ** 2
        if total > best:
            best, phase = total, candidate
    return phase


def _ordered(guide: CategoryGuide, column: list[Any], numbers: list[list[Any]]) -> CategoryGuide:
    """``guide`` with its categories in the order of their mean value in the numeric column they
    explain best (the largest share of its variance between categories): the copula ties a
    category to numbers only through that order, so a state drawn with its latitude stays in
    its latitudes. Numeric options (cylinders) keep their value order; with no numeric column
    the order is unchanged."""
    if all(is_number(c) for c in guide.categories) or not numbers:
        return guide
    best, means = 0.0, None
    for values in numbers:
        groups = _groups(column, values)
        share = _explained(groups)
        if share is not None and share > best:
            best, means = share, {k: float(np.mean(g)) for k, g in groups.items()}
    if means is None:
        return guide
    middle = float(np.mean(list(means.values())))
    order = sorted(range(len(guide.categories)), key=lambda i: (means.get(guide.keys[i], middle), i))
    return replace(
        guide,
        categories=tuple(guide.categories[i] for i in order),
        frequencies=tuple(guide.frequencies[i] for i in order),
    )


def _placed(
    guide: NumberGuide, values: list[Any], categories: list[tuple[CategoryGuide, list[Any]]]
) -> NumberGuide:
    """``guide`` placed by the non-numeric category field that explains the most of its variance,
    when that is at least ``PLACEMENT_SHARE``: each category's mean (the overall mean for a
    category the reference lacks) and the pooled spread around them."""
    best, placement = PLACEMENT_SHARE, None
    for category, column in categories:
        if all(is_number(c) for c in category.categories):
            continue
        groups = _groups(column, values)
        share = _explained(groups)
        residuals = sum(len(g) * float(np.var(g)) for g in groups.values())
        dof = sum(len(g) for g in groups.values()) - len(groups)
        if share is None or share < best or dof < 1 or residuals <= 0:
            continue
        overall = float(np.mean([v for g in groups.values() for v in g]))
        centers = tuple(float(np.mean(groups[k])) if k in groups else overall for k in category.keys)
        best, placement = share, Placement(category.pointer, centers, math.sqrt(residuals / dof))
    return guide if placement is None else replace(guide, placement=placement)


def _groups(column: list[Any], values: list[Any]) -> dict[str, list[float]]:
    """The numbers of ``values`` grouped by the category (canonical JSON) beside them in ``column``."""
    groups: dict[str, list[float]] = {}
    for category, value in zip(column, values, strict=True):
        if category is not _ABSENT and is_number(value):
            groups.setdefault(canonical_json(category), []).append(float(value))
    return groups


def _explained(groups: dict[str, list[float]]) -> float | None:
    """The share of the numbers' variance that lies between the groups (None when undefined)."""
    every = [v for group in groups.values() for v in group]
    if len(groups) < 2 or len(every) < 3 or np.var(every) == 0:
        return None
    between = sum(len(g) * (np.mean(g) - np.mean(every)) ** 2 for g in groups.values())
    return float(between / (np.var(every) * len(every)))


def _uniforms(guide: FieldGuide, column: list[Any], rng: np.random.Generator) -> list[float | None]:
    """Each row's value as a uniform: its mid-rank (ties broken at random) for numbers and dates,
    a uniform draw inside its category's (a text's shape's) cumulative frequency interval for
    categories (texts)."""
    out: list[float | None] = [None] * len(column)
    if isinstance(guide, CategoryGuide | TextGuide):
        index = {k: i for i, k in enumerate(guide.shapes if isinstance(guide, TextGuide) else guide.keys)}
        starts = np.concatenate([[0.0], np.cumsum(guide.frequencies)[:-1]])
        for i, v in enumerate(column):
            if v is _ABSENT:
                continue
            if isinstance(guide, TextGuide):
                k = index.get(text_shape(v, guide.slack)) if isinstance(v, str) else None
            else:
                k = index.get(canonical_json(v))
            if k is not None:
                out[i] = float(starts[k] + rng.random() * guide.frequencies[k])
        return out
    present: list[tuple[int, float]] = []
    for i, v in enumerate(column):
        if isinstance(guide, DateGuide | SeasonGuide):
            day = _ordinal(v) if isinstance(v, str) else None
            if day is not None:
                present.append((i, float(day) if isinstance(guide, DateGuide) else season(day, guide.phase)))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            present.append((i, float(v)))
    if not present:
        return out
    values = np.array([v for _, v in present])
    order = np.lexsort((rng.random(len(values)), values))
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for (i, _), r in zip(present, ranks, strict=True):
        out[i] = float((r + 0.5) / len(values))
    return out
