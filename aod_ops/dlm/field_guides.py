"""Field guides: what the reference says one leaf field's values look like.

A ``FieldGuide`` is one of ``NumberGuide`` (quantiles, integral or not, decimals, the schema's
bounds, and the ``Placement`` a category field gives it), ``DateGuide`` (quantiles of ordinal
days) with its ``SeasonGuide`` (the time of year), ``CategoryGuide`` (categories and their
frequencies) or ``TextGuide`` (free text, in ``text.py``).
Here too are the checks a field's values share between deriving, reading and decoding guides:
``fits_string``, ``is_scalar`` and ``writable``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from typing import Any, TypeAlias

from aod_ops.dlm.numbers import grid_floor
from aod_ops.dlm.text import TextGuide
from aod_ops.jsonvalues import canonical_json
from aod_ops.schema.nodes import StringNode
from aod_ops.schema.patterns import full_match

QUANTILES = 101  # quantiles kept per number or date field, at evenly spaced probabilities
MAX_DECIMALS = 6
CATEGORY_FLOOR = 1e-3  # prior weight of a category the reference never shows


@dataclass(frozen=True)
class Placement:
    """Where a category places a number (an airport's state, its coordinates): the number's
    reference mean for each category of the category field at ``on`` (in that guide's order),
    and ``spread``, the number's standard deviation around its category's mean (pooled over the
    categories)."""

    on: str
    centers: tuple[float, ...]
    spread: float


@dataclass(frozen=True)
class NumberGuide:
    """A number field: ``QUANTILES`` quantiles of its reference values (at evenly spaced
    probabilities), whether it is integral, the decimals the reference writes, the schema's
    bounds (inclusive, on the field's grid of ``10 ** -decimals``; None when unbounded), and
    its ``placement`` when a category field places it."""

    pointer: str
    quantiles: tuple[float, ...]
    integer: bool
    decimals: int
    minimum: float | None = None
    maximum: float | None = None
    placement: Placement | None = None

    @property
    def step(self) -> float:
        """The field's grid: 1 for integers, else ``10 ** -decimals``."""
        return 1.0 if self.integer else 10.0**-self.decimals

    @property
    def span(self) -> tuple[float, float]:
        """The widest window a record may get: the reference's range inside the bounds."""
        lo, hi = self.quantiles[0], self.quantiles[-1]
        if self.minimum is not None:  # a reference outside the bounds gets the nearest bound
            lo, hi = max(lo, self.minimum), max(hi, self.minimum)
        if self.maximum is not None:
            lo, hi = min(lo, self.maximum), min(hi, self.maximum)
        lo, hi = grid_floor(lo, self.step, self.decimals, up=True), grid_floor(hi, self.step, self.decimals)
        return lo, max(lo, hi)


@dataclass(frozen=True)
class DateGuide:
    """An ISO date field: ``QUANTILES`` quantiles of its reference dates as ordinal days."""

    pointer: str
    quantiles: tuple[float, ...]


@dataclass(frozen=True)
class SeasonGuide:
    """The time of year of a date field: ``cos(angle - phase)`` of the day's angle on the year's
    circle, with ``QUANTILES`` quantiles over the reference. It is a copula dimension of its own,
    so a date keeps its season's dependence with the other fields (a June day in Seattle is warm)
    whichever year its window falls in. ``phase`` is the time of year the other fields' values
    turn on most (the angle whose cosine correlates most with them: mid-winter for Seattle's
    temperatures). A date field gets a season only when the reference spans at least a year."""

    pointer: str
    phase: float
    quantiles: tuple[float, ...]


def season(day: int, phase: float) -> float:
    """An ordinal day's time of year: the cosine of its angle on the year's circle from ``phase``."""
    angle = 2 * math.pi * (date.fromordinal(day).timetuple().tm_yday - 1) / 365.25
    return math.cos(angle - phase)


@dataclass(frozen=True)
class CategoryGuide:
    """A categorical field, most frequent category first, with each category's share of the
    reference; ``choice`` is True for an enum or boolean, False for a free string."""

    pointer: str
    categories: tuple[Any, ...]
    frequencies: tuple[float, ...]
    choice: bool

    @cached_property
    def keys(self) -> tuple[str, ...]:
        """Each category's canonical JSON text (an integral float reads as an integer)."""
        return tuple(canonical_json(c) for c in self.categories)

    def prior(self, chosen: Any, prior: float) -> dict[str, float]:
        """Each category's prior (by key) when ``chosen`` is guided: ``prior`` for it, the rest
        shared by reference frequency (a category the reference lacks weighs ``CATEGORY_FLOOR``)."""
        chosen_key = canonical_json(chosen)
        weights = {k: max(f, CATEGORY_FLOOR) for k, f in zip(self.keys, self.frequencies, strict=True)}
        rest = sum(w for k, w in weights.items() if k != chosen_key)
        if rest <= 0:
            return {chosen_key: 1.0}
        return {k: prior if k == chosen_key else (1 - prior) * w / rest for k, w in weights.items()}


FieldGuide: TypeAlias = NumberGuide | DateGuide | SeasonGuide | CategoryGuide | TextGuide


def is_scalar(value: Any) -> bool:
    """Whether ``value`` is a JSON scalar (a string, number, boolean or null): a category."""
    return value is None or isinstance(value, str | int | float | bool)


def writable(text: str) -> bool:
    """Whether ``text`` can be a string category: printable, unpadded, and written inside the
    skeleton's quotes as it is (no quote or backslash)."""
    return bool(text) and text == text.strip() and '"' not in text and "\\" not in text and text.isprintable()


def fits_string(node: StringNode, text: str) -> bool:
    """Whether ``text`` is a legal value of the string ``node`` (its lengths and pattern)."""
    if len(text) < node.min_length or (node.max_length is not None and len(text) > node.max_length):
        return False
    return node.pattern is None or full_match(node.pattern, text)
