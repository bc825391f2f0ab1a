"""Value guides: what the reference sample says a partition's values look like, for the sampler.

A ``Guides`` holds a partition's field guides (``field_guides.py``: a number's or a date's
quantiles, a choice's or a low-cardinality string's categories, a free string's shapes in
``text.py``), a Gaussian copula over all of them (the correlation of their normal scores;
categories are mapped through their cumulative frequency intervals, as SDV's GaussianCopula
does), and the partition's cross-field rules of the form ``left OP scale * right + offset``.
``derive_guides`` (``derive.py``) reads them off the reference.

``Guides.draw`` samples one record's targets from its own ``random.Random``: a correlated uniform
per field, turned into a *window* for a number or date (the values between the quantiles at
``u - w/2`` and ``u + w/2``, ``w = 1/bins``, inside the schema's bounds) and a *category* for a
categorical field. The sampler then decodes every guided value left to right so that its text
stays a prefix of a legal value in its window (``numbers.NumberRange``), and adds the log of the
category's prior to the model's option scores. ``RecordGuide.settle`` moves two windows apart
where a rule needs it, once the record's choices are decided, so that any values inside them
keep the rule.

A ``Guides`` is a plain value: ``to_dict``/``from_dict`` round-trip it through JSON, and it travels
in the prompt artifact (``Prompt.guides``) as one of the optimizer's levers.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from itertools import pairwise
from statistics import NormalDist
from typing import Any

import numpy as np

from aod_ops.dlm.field_guides import (
    CATEGORY_FLOOR,
    MAX_DECIMALS,
    CategoryGuide,
    DateGuide,
    FieldGuide,
    NumberGuide,
    Placement,
    SeasonGuide,
    is_scalar,
    season,
    writable,
)
from aod_ops.dlm.numbers import grid_floor
from aod_ops.dlm.text import TextGuide
from aod_ops.errors import DataError
from aod_ops.jsonvalues import canonical_json
from aod_ops.rules import Bound
from aod_ops.schema.patterns import compiles

FORMAT = 1  # the version of the ``to_dict`` form
_DIGEST = re.compile(r"[0-9a-f]{16}")  # a value digest (``text.value_digest``)
# Prior mass of a record's guided category; the others share the rest. The model's own scores
# for a category slot barely depend on the record (the same few letters lead everywhere), so a
# prior of 0.9 let them override the copula's draw: airports' state "AZ" came out 10 times in 50
# records (reference: 2 in 200). With 0.99 the draw holds: the state column's detection AUC
# 0.80 -> 0.71 (held-out rows 0.60), no other partition's quality moved.
PRIOR = 0.99
_NORMAL = NormalDist()
RULE_OPS = ("<", "<=", ">", ">=")


@dataclass(frozen=True)
class Guides:
    """Per-field value guides of one partition, their copula and its cross-field rules.

    ``correlation`` is the copula's correlation matrix over ``fields`` (in order; positive
    definite); ``bounds`` the rules between two guided fields; ``bins`` sets a window's width
    (``1 / bins`` of the probability); ``prior`` the mass of a record's guided category.
    """

    fields: tuple[FieldGuide, ...]
    correlation: tuple[tuple[float, ...], ...]
    bounds: tuple[Bound, ...] = ()
    bins: int = 10
    prior: float = PRIOR

    def __post_init__(self) -> None:
        pointers = [f.pointer for f in self.fields if not isinstance(f, SeasonGuide)]
        seasons = [f.pointer for f in self.fields if isinstance(f, SeasonGuide)]
        if len(set(pointers)) != len(pointers) or len(set(seasons)) != len(seasons):
            raise DataError("guides: a field is guided twice")
        dates = {f.pointer for f in self.fields if isinstance(f, DateGuide)}
        if any(pointer not in dates for pointer in seasons):
            raise DataError("guides: a season guide must belong to a guided date field")
        n = len(self.fields)
        if len(self.correlation) != n or any(len(row) != n for row in self.correlation):
            raise DataError(f"guides: correlation must be {n} x {n}, one row and column per field")
        if self.bins < 1:
            raise DataError(f"guides: bins must be at least 1, got {self.bins}")
        if not 0.0 < self.prior < 1.0:
            raise DataError(f"guides: prior must be between 0 and 1, got {self.prior}")
        for b in self.bounds:
            if b.op not in RULE_OPS or not {b.left, b.right} <= set(pointers) or b.scale == 0:
                raise DataError(f"guides: rule bound {b} must compare two guided fields with < <= > >=")
        categories = {f.pointer: f for f in self.fields if isinstance(f, CategoryGuide)}
        for f in self.fields:
            placement = f.placement if isinstance(f, NumberGuide) else None
            if placement is None:
                continue
            on = categories.get(placement.on)
            if on is None or len(on.categories) != len(placement.centers):
                raise DataError(
                    f"guides: field {f.pointer}: placement must name a guided category field and "
                    "give one center per category"
                )
            if not placement.spread > 0:
                raise DataError(f"guides: field {f.pointer}: placement spread must be positive")

    @cached_property
    def by_pointer(self) -> dict[str, FieldGuide]:
        """The field guides by JSON pointer (a date's season coordinates are part of its draw)."""
        return {f.pointer: f for f in self.fields if not isinstance(f, SeasonGuide)}

    @cached_property
    def _cholesky(self) -> np.ndarray:
        try:
            return np.linalg.cholesky(np.array(self.correlation, dtype=float).reshape(len(self.fields), -1))
        except np.linalg.LinAlgError as exc:
            raise DataError("guides: the correlation matrix is not positive definite") from exc

    @cached_property
    def _seasonal(self) -> frozenset[str]:
        """The date fields whose time of year is guided by season coordinates."""
        return frozenset(f.pointer for f in self.fields if isinstance(f, SeasonGuide))

    def field(self, pointer: str) -> FieldGuide | None:
        """The guide of the field at ``pointer``, if any."""
        return self.by_pointer.get(pointer)

    def draw(self, rng: random.Random) -> RecordGuide:
        """One record's targets, drawn from ``rng`` alone: a window per number or date field (a
        ``(lo, hi)`` of values or of ordinal days) and a category per categorical field. A placed
        number's window is around its drawn category's center instead of the copula's quantile."""
        if not self.fields:
            return RecordGuide(self, {}, {})
        z = np.array([rng.gauss(0.0, 1.0) for _ in self.fields])
        uniforms = [_NORMAL.cdf(float(x)) for x in self._cholesky @ z]
        half = 0.5 / self.bins
        windows: dict[str, tuple[float, float]] = {}
        categories: dict[str, Any] = {}
        seasons: dict[str, tuple[float, float, float]] = {}
        for guide, u in zip(self.fields, uniforms, strict=True):
            if isinstance(guide, SeasonGuide):
                lo, hi = (_quantile(guide.quantiles, p) for p in (max(0.0, u - half), min(1.0, u + half)))
                seasons[guide.pointer] = (guide.phase, lo, hi)
                continue
            if isinstance(guide, CategoryGuide | TextGuide):
                options = guide.categories if isinstance(guide, CategoryGuide) else guide.shapes
                cumulative = np.cumsum(guide.frequencies)
                index = min(int(np.searchsorted(cumulative, u, side="right")), len(options) - 1)
                categories[guide.pointer] = options[index]
                continue
            lo, hi = (_quantile(guide.quantiles, p) for p in (max(0.0, u - half), min(1.0, u + half)))
            mid = _quantile(guide.quantiles, u)
            if isinstance(guide, DateGuide) and guide.pointer in self._seasonal:
                # The season picks the time of year: the window only has to hold one of each.
                first, last = guide.quantiles[0], guide.quantiles[-1]
                start = min(max(first, mid - 183), max(first, last - 366))
                windows[guide.pointer] = (math.ceil(start), math.floor(min(last, start + 366)))
            elif isinstance(guide, DateGuide):
                low, high = math.ceil(lo), math.floor(hi)
                windows[guide.pointer] = (low, high) if low <= high else (round(mid), round(mid))
            else:
                windows[guide.pointer] = _snap(guide, lo, hi, mid)
        for guide in self.fields:
            if isinstance(guide, NumberGuide) and guide.placement and guide.placement.on in categories:
                placement = guide.placement
                on = self.by_pointer[placement.on]
                assert isinstance(on, CategoryGuide)
                k = on.keys.index(canonical_json(categories[placement.on]))
                windows[guide.pointer] = _placed_window(guide, placement.centers[k], placement.spread, rng)
        return RecordGuide(self, windows, categories, seasons)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form that ``from_dict`` reads back."""
        fields: list[dict[str, Any]] = []
        for f in self.fields:
            if isinstance(f, NumberGuide):
                number: dict[str, Any] = {
                    "kind": "number",
                    "pointer": f.pointer,
                    "quantiles": list(f.quantiles),
                    "integer": f.integer,
                    "decimals": f.decimals,
                    "minimum": f.minimum,
                    "maximum": f.maximum,
                }
                if f.placement is not None:
                    p = f.placement
                    number["placement"] = {"on": p.on, "centers": list(p.centers), "spread": p.spread}
                fields.append(number)
            elif isinstance(f, DateGuide):
                fields.append({"kind": "date", "pointer": f.pointer, "quantiles": list(f.quantiles)})
            elif isinstance(f, TextGuide):
                fields.append(
                    {
                        "kind": "text",
                        "pointer": f.pointer,
                        "shapes": list(f.shapes),
                        "frequencies": list(f.frequencies),
                        "chars": f.chars,
                        "longest": f.longest,
                        "words": [list(w) for w in f.words],
                        "taken": list(f.taken),
                    }
                )
            elif isinstance(f, SeasonGuide):
                fields.append(
                    {
                        "kind": "season",
                        "pointer": f.pointer,
                        "phase": f.phase,
                        "quantiles": list(f.quantiles),
                    }
                )
            else:
                fields.append(
                    {
                        "kind": "category",
                        "pointer": f.pointer,
                        "categories": list(f.categories),
                        "frequencies": list(f.frequencies),
                        "choice": f.choice,
                    }
                )
        return {
            "format": FORMAT,
            "bins": self.bins,
            "prior": self.prior,
            "fields": fields,
            "correlation": [list(row) for row in self.correlation],
            "bounds": [
                {"left": b.left, "op": b.op, "right": b.right, "scale": b.scale, "offset": b.offset}
                for b in self.bounds
            ],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Guides:
        """Guides from ``to_dict``'s form; ``DataError`` naming what is wrong when malformed."""
        if not isinstance(data, dict):
            raise DataError("guides must be an object")
        if data.get("format") != FORMAT:
            raise DataError(f"guides: format must be {FORMAT}, got {data.get('format')!r}")
        unknown = set(data) - {"format", "bins", "prior", "fields", "correlation", "bounds"}
        if unknown:
            raise DataError(f"guides: unknown keys {sorted(unknown)}")
        fields = tuple(_field_from(i, f) for i, f in enumerate(_list(data, "fields")))
        rows = _list(data, "correlation")
        correlation = tuple(tuple(_numbers(row, f"correlation[{i}]")) for i, row in enumerate(rows))
        n = len(fields)
        if len(correlation) != n or any(len(row) != n for row in correlation):
            raise DataError(f"guides: correlation must be {n} x {n}, one row and column per field")
        matrix = np.array(correlation, dtype=float).reshape(n, n)
        if not np.allclose(matrix, matrix.T, atol=1e-9) or not np.allclose(np.diag(matrix), 1.0, atol=1e-9):
            raise DataError("guides: correlation must be symmetric with ones on its diagonal")
        bounds = tuple(_bound_from(i, b) for i, b in enumerate(_list(data, "bounds")))
        bins, prior = data.get("bins"), data.get("prior")
        if not isinstance(bins, int) or isinstance(bins, bool):
            raise DataError(f"guides: bins must be an integer, got {bins!r}")
        if not isinstance(prior, int | float) or isinstance(prior, bool):
            raise DataError(f"guides: prior must be a number, got {prior!r}")
        guides = cls(fields, correlation, bounds, bins, float(prior))
        _ = guides._cholesky  # DataError now rather than at the first draw
        return guides


@dataclass(frozen=True)
class RecordGuide:
    """One record's draw from ``Guides``: ``windows`` (number values or ordinal days, inclusive,
    before the rules are applied), the guided ``categories``, and for a date with a season its
    ``seasons`` (its phase and the window of ``season(day, phase)``), by JSON pointer."""

    guides: Guides
    windows: Mapping[str, tuple[float, float]]
    categories: Mapping[str, Any]
    seasons: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)

    def in_season(self, pointer: str, day: int) -> bool:
        """Whether an ordinal day lies in the season drawn for the date at ``pointer``."""
        if pointer not in self.seasons:
            return True
        phase, lo, hi = self.seasons[pointer]
        return lo <= season(day, phase) <= hi

    def log_prior(self, pointer: str, options: Sequence[Any]) -> list[float] | None:
        """The log prior of each option of the choice at ``pointer``, None when it is not guided."""
        guide = self.guides.field(pointer)
        if not isinstance(guide, CategoryGuide) or pointer not in self.categories:
            return None
        prior = guide.prior(self.categories[pointer], self.guides.prior)
        return [
            math.log(prior.get(canonical_json(o), CATEGORY_FLOOR * (1 - self.guides.prior))) for o in options
        ]

    def string_prior(self, pointer: str) -> dict[str, float] | None:
        """Each category of the free string at ``pointer`` with its prior, None when not guided."""
        guide = self.guides.field(pointer)
        if not isinstance(guide, CategoryGuide) or guide.choice or pointer not in self.categories:
            return None
        prior = guide.prior(self.categories[pointer], self.guides.prior)
        return {c: prior[k] for c, k in zip(guide.categories, guide.keys, strict=True)}

    def settle(self, decided: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
        """The windows after the rules: ``decided`` holds the values the record's choices took
        (a guided choice the record has not decided counts at its guided category). Two windows
        a rule compares are split at a point between them, so that any values inside them keep
        the rule; a window compared with a decided value is cut at the value the rule allows."""
        windows = dict(self.windows)
        for bound in self.guides.bounds:
            left = _Side.of(self, bound.left, windows, decided)
            right = _Side.of(self, bound.right, windows, decided)
            if left is None or right is None:
                continue
            _respect(bound, left, right)
            for side in (left, right):
                if not side.fixed:
                    windows[side.pointer] = (side.lo, side.hi)
        return windows


@dataclass
class _Side:
    """One side of a rule: a window on a grid (or a fixed value), with the field's bounds."""

    pointer: str
    lo: float
    hi: float
    step: float
    decimals: int
    span: tuple[float, float]
    fixed: bool

    @classmethod
    def of(
        cls,
        record: RecordGuide,
        pointer: str,
        windows: dict[str, tuple[float, float]],
        decided: Mapping[str, Any],
    ) -> _Side | None:
        guide = record.guides.field(pointer)
        if isinstance(guide, CategoryGuide):
            value = decided.get(pointer, record.categories.get(pointer))
            if not isinstance(value, int | float) or isinstance(value, bool):
                return None
            return cls(pointer, float(value), float(value), 1.0, 0, (float(value), float(value)), True)
        if pointer not in windows:
            return None
        lo, hi = windows[pointer]
        if isinstance(guide, NumberGuide):
            return cls(pointer, lo, hi, guide.step, guide.decimals, guide.span, False)
        return cls(pointer, lo, hi, 1.0, 0, (-math.inf, math.inf), False)  # ordinal days

    def floor(self, x: float, up: bool = False) -> float:
        """``x`` onto the grid, rounding down (or ``up``), kept inside the field's span."""
        return min(max(grid_floor(x, self.step, self.decimals, up), self.span[0]), self.span[1])

    def cut(self, lo: float | None = None, hi: float | None = None) -> None:
        """Keep the window at or above ``lo`` / at or below ``hi``; a window wholly on the wrong
        side moves to the limit, keeping its width inside the field's span."""
        width = self.hi - self.lo
        if lo is not None:
            self.lo, self.hi = (lo, self.hi) if self.hi >= lo else (lo, self.floor(lo + width))
        if hi is not None:
            self.lo, self.hi = (self.lo, hi) if self.lo <= hi else (self.floor(hi - width, up=True), hi)
        self.lo, self.hi = max(self.lo, self.span[0]), min(self.hi, self.span[1])


def _respect(bound: Bound, left: _Side, right: _Side) -> None:
    """Move the windows of ``left OP scale * right + offset`` so that every pair inside keeps it:
    split at a point between them, the left side cut at it and the right side at what the rule
    then needs; a side held by its span makes the other give way."""
    s, o = bound.scale, bound.offset
    below = bound.op in ("<", "<=")  # the left side must stay below the right side's image
    strict = bound.op in ("<", ">")

    def image() -> tuple[float, float]:
        a, b = s * right.lo + o, s * right.hi + o
        return (a, b) if a <= b else (b, a)

    def kept() -> bool:
        lo, hi = image()
        if below:
            return left.hi < lo if strict else left.hi <= lo
        return left.lo > hi if strict else left.lo >= hi

    def fit_left(t: float, past: bool) -> None:  # the left side's values at t or beyond (``past``)
        edge = left.floor(t, up=not below)
        if past and edge == t:
            edge = left.floor(edge + (-left.step if below else left.step), up=not below)
        left.cut(hi=edge) if below else left.cut(lo=edge)

    def fit_right() -> None:  # the right side's values where the rule holds against the left's edge
        edge = left.hi if below else left.lo
        ge = below == (s > 0)  # the right side's values must be at least x (else at most x)
        limit = right.floor((edge - o) / s, up=ge)
        if strict and s * limit + o == edge:
            limit = right.floor(limit + (right.step if ge else -right.step), up=ge)
        right.cut(lo=limit) if ge else right.cut(hi=limit)

    if kept() or (left.fixed and right.fixed):
        return
    if not right.fixed and not left.fixed:
        lo, hi = image()
        a, b = max(left.lo, lo), min(left.hi, hi)
        t = (a + b) / 2 if a <= b else ((left.lo + hi) / 2 if below else (left.hi + lo) / 2)
        fit_left(t, past=False)
    if not right.fixed:
        fit_right()
    if not kept() and not left.fixed:
        lo, hi = image()
        fit_left(lo if below else hi, past=strict)


def _snap(guide: NumberGuide, lo: float, hi: float, mid: float) -> tuple[float, float]:
    """A window onto the field's grid and span; a window narrower than one step becomes the grid
    point nearest ``mid``."""
    span_lo, span_hi = guide.span
    low = max(grid_floor(lo, guide.step, guide.decimals, up=True), span_lo)
    high = min(grid_floor(hi, guide.step, guide.decimals), span_hi)
    if low <= high:
        return low, high
    point = min(max(grid_floor(mid + guide.step / 2, guide.step, guide.decimals), span_lo), span_hi)
    return point, point


def _placed_window(
    guide: NumberGuide, center: float, spread: float, rng: random.Random
) -> tuple[float, float]:
    """A placed number's window: half a spread wide, around its category's center moved by a
    normal draw of half a spread (a category seen once is not copied back to its one row)."""
    mid = center + rng.gauss(0.0, spread / 2)
    return _snap(guide, mid - spread / 4, mid + spread / 4, mid)


def _quantile(quantiles: Sequence[float], u: float) -> float:
    grid = np.linspace(0.0, 1.0, len(quantiles))
    return float(np.interp(u, grid, quantiles))


# -- reading guides back --------------------------------------------------------------------------


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise DataError(f"guides: {key!r} must be a list")
    return value


def _numbers(value: Any, where: str) -> list[float]:
    if not isinstance(value, list) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in value
    ):
        raise DataError(f"guides: {where} must be a list of finite numbers")
    return [float(x) for x in value]


def _field_from(i: int, data: Any) -> FieldGuide:
    where = f"fields[{i}]"
    if not isinstance(data, dict):
        raise DataError(f"guides: {where} must be an object")
    pointer, kind = data.get("pointer"), data.get("kind")
    if not isinstance(pointer, str) or not pointer.startswith("/"):
        raise DataError(f"guides: {where}.pointer must be a JSON pointer, got {pointer!r}")
    where = f"field {pointer}"
    expected = {
        "number": {"kind", "pointer", "quantiles", "integer", "decimals", "minimum", "maximum"},
        "date": {"kind", "pointer", "quantiles"},
        "season": {"kind", "pointer", "phase", "quantiles"},
        "category": {"kind", "pointer", "categories", "frequencies", "choice"},
        "text": {"kind", "pointer", "shapes", "frequencies", "chars", "longest", "words", "taken"},
    }
    if kind not in expected:
        raise DataError(f"guides: {where}: kind must be one of {', '.join(expected)}, got {kind!r}")
    # A number's placement is optional (a category field places few numbers).
    if set(data) - ({"placement"} if kind == "number" else set()) != expected[kind]:
        raise DataError(f"guides: {where}: expected the keys {sorted(expected[kind])}, got {sorted(data)}")
    if kind == "text":
        return _text_from(where, data)
    if kind == "category":
        categories, choice = data["categories"], data["choice"]
        frequencies = _numbers(data["frequencies"], f"{where}.frequencies")
        if not isinstance(categories, list) or not categories or len(categories) != len(frequencies):
            raise DataError(f"guides: {where}: categories must be a non-empty list, one per frequency")
        if not all(is_scalar(c) for c in categories):
            raise DataError(f"guides: {where}: categories must be strings, numbers, booleans or null")
        if any(f < 0 for f in frequencies) or abs(sum(frequencies) - 1.0) > 1e-6:
            raise DataError(f"guides: {where}: frequencies must be non-negative and sum to 1")
        if not isinstance(choice, bool):
            raise DataError(f"guides: {where}.choice must be true or false")
        if not choice and not all(isinstance(c, str) and writable(c) for c in categories):
            raise DataError(f"guides: {where}: a string field's categories must be printable strings")
        return CategoryGuide(pointer, tuple(categories), tuple(frequencies), choice)
    quantiles = _numbers(data["quantiles"], f"{where}.quantiles")
    if len(quantiles) < 2 or any(b < a for a, b in pairwise(quantiles)):
        raise DataError(f"guides: {where}: quantiles must be at least two non-decreasing numbers")
    if kind == "season":
        (phase,) = _numbers([data["phase"]], f"{where}.phase")
        if quantiles[0] < -1 or quantiles[-1] > 1:
            raise DataError(f"guides: {where}: a season's quantiles are cosines, in [-1, 1]")
        return SeasonGuide(pointer, phase, tuple(quantiles))
    if kind == "date":
        if quantiles[0] < 1 or quantiles[-1] > date.max.toordinal():
            raise DataError(f"guides: {where}: quantiles must be ordinal days")
        return DateGuide(pointer, tuple(quantiles))
    integer, decimals = data["integer"], data["decimals"]
    if not isinstance(integer, bool):
        raise DataError(f"guides: {where}.integer must be true or false")
    if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= MAX_DECIMALS:
        raise DataError(f"guides: {where}.decimals must be an integer from 0 to {MAX_DECIMALS}")
    bounds = [data["minimum"], data["maximum"]]
    if not all(b is None or (isinstance(b, int | float) and not isinstance(b, bool)) for b in bounds):
        raise DataError(f"guides: {where}: minimum and maximum must be numbers or null")
    lo, hi = (None if b is None else float(b) for b in bounds)
    if lo is not None and hi is not None and lo > hi:
        raise DataError(f"guides: {where}: minimum {lo} exceeds maximum {hi}")
    placement = _placement_from(where, data["placement"]) if "placement" in data else None
    return NumberGuide(pointer, tuple(quantiles), integer, 0 if integer else decimals, lo, hi, placement)


def _placement_from(where: str, data: Any) -> Placement:
    if not isinstance(data, dict) or set(data) != {"on", "centers", "spread"}:
        raise DataError(f"guides: {where}.placement must be an object with on, centers and spread")
    on = data["on"]
    if not isinstance(on, str) or not on.startswith("/"):
        raise DataError(f"guides: {where}.placement.on must be a JSON pointer, got {on!r}")
    centers = _numbers(data["centers"], f"{where}.placement.centers")
    (spread,) = _numbers([data["spread"]], f"{where}.placement.spread")
    return Placement(on, tuple(centers), spread)


def _text_from(where: str, data: dict[str, Any]) -> TextGuide:
    shapes, chars, longest, words = data["shapes"], data["chars"], data["longest"], data["words"]
    frequencies = _numbers(data["frequencies"], f"{where}.frequencies")
    if not isinstance(shapes, list) or not shapes or len(shapes) != len(frequencies):
        raise DataError(f"guides: {where}: shapes must be a non-empty list, one per frequency")
    if not all(isinstance(p, str) and p and compiles(p) for p in shapes):
        raise DataError(f"guides: {where}: every shape must be a regular expression")
    if any(f < 0 for f in frequencies) or abs(sum(frequencies) - 1.0) > 1e-6:
        raise DataError(f"guides: {where}: frequencies must be non-negative and sum to 1")
    if not isinstance(chars, str) or not chars.isprintable() or not set(chars) - set(' "\\'):
        raise DataError(f"guides: {where}.chars must be printable characters, not only spaces and quotes")
    if not isinstance(longest, int) or isinstance(longest, bool) or longest < 1:
        raise DataError(f"guides: {where}.longest must be a positive integer")
    if not isinstance(words, list) or not all(
        isinstance(w, list)
        and len(w) == 3
        and isinstance(w[0], str)
        and w[0]
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in w[1:])
        and w[1] + w[2] > 0
        for w in words
    ):
        raise DataError(f"guides: {where}.words must be [word, first, later] lists: a word and two counts")
    taken = data["taken"]
    if not isinstance(taken, list) or not all(isinstance(t, str) and _DIGEST.fullmatch(t) for t in taken):
        raise DataError(f"guides: {where}.taken must be a list of value digests (16 hex digits)")
    kept = tuple((w, first, later) for w, first, later in words)
    return TextGuide(data["pointer"], tuple(shapes), tuple(frequencies), chars, longest, kept, tuple(taken))


def _bound_from(i: int, data: Any) -> Bound:
    keys = {"left", "op", "right", "scale", "offset"}
    if not isinstance(data, dict) or set(data) != keys:
        raise DataError(f"guides: bounds[{i}] must be an object with the keys {sorted(keys)}")
    if not isinstance(data["left"], str) or not isinstance(data["right"], str) or data["op"] not in RULE_OPS:
        raise DataError(f"guides: bounds[{i}] must name two fields and one of {', '.join(RULE_OPS)}")
    scale, offset = _numbers([data["scale"], data["offset"]], f"bounds[{i}] scale and offset")
    return Bound(data["left"], data["op"], data["right"], scale, offset)
