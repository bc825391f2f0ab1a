"""Value guides: what the reference sample says a partition's values look like, for the sampler.

``derive_guides`` reads the reference once and keeps, per leaf field (a JSON pointer: top-level
and nested object properties; array items are not guided):

- a number: its empirical quantiles, whether it is integral, and the decimals the reference
  writes (at most ``MAX_DECIMALS``);
- an enum or boolean choice, or a string with few distinct reference values (a state code): its
  categories and their frequencies;
- a date (``format: date``, or strings that all parse as ISO dates): its quantiles as ordinal
  days;

and a Gaussian copula over all of them (the correlation of their normal scores; categories are
mapped through their cumulative frequency intervals, as SDV's GaussianCopula does), plus the
partition's cross-field rules of the form ``left OP scale * right + offset``.

``Guides.draw`` samples one record's targets from its own ``random.Random``: a correlated uniform
per field, turned into a *window* for a number or date (the values between the quantiles at
``u - w/2`` and ``u + w/2``, ``w = 1/bins``, inside the schema's bounds) and a *category* for a
categorical field. The sampler then decodes every guided value left to right so that its text
stays a prefix of a legal value in its window (``number_prefix_ok``), and adds the log of the
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
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from functools import cached_property
from itertools import pairwise
from statistics import NormalDist
from typing import Any, TypeAlias

import numpy as np

from aod_ops.errors import DataError
from aod_ops.jsonvalues import canonical_json, escape_token, is_number, pointer_tokens
from aod_ops.rules import Bound, Rule
from aod_ops.schema.nodes import ChoiceNode, Node, NumberNode, ObjectNode, StringNode, UnionNode
from aod_ops.schema.patterns import compiles, full_match

FORMAT = 1  # the version of the ``to_dict`` form
PRIOR = 0.9  # prior mass of a record's guided category; the others share the rest
QUANTILES = 101  # quantiles kept per number or date field, at evenly spaced probabilities
MAX_DECIMALS = 6
_FLOOR = 1e-3  # prior weight of a category the reference never shows
_MIN_EIGENVALUE = 1e-3  # the copula's correlation is kept this far from singular
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NORMAL = NormalDist()
_RULE_OPS = ("<", "<=", ">", ">=")


# -- legal numbers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NumberRange:
    """The legal JSON numbers of a window: values in ``[low, high]`` written with at most
    ``decimals`` fraction digits, in JSON syntax (optional minus, no leading zeros, no ``-0``).

    ``low`` and ``high`` are in units of ``10 ** -decimals``, so every check is exact.
    """

    low: int
    high: int
    decimals: int

    @classmethod
    def of(cls, lo: float, hi: float, integer: bool, decimals: int) -> NumberRange:
        """The range of the inclusive window ``[lo, hi]``."""
        d = 0 if integer else max(0, decimals)
        scale = 10**d
        return cls(
            math.ceil(Decimal(repr(float(lo))) * scale), math.floor(Decimal(repr(float(hi))) * scale), d
        )

    @property
    def empty(self) -> bool:
        """No legal number at all."""
        return self.low > self.high

    @property
    def width(self) -> int:
        """The most characters a legal number takes."""
        scale = 10**self.decimals
        frac = self.decimals + 1 if self.decimals else 0
        widths = [(v < 0) + len(str(abs(v) // scale)) + frac for v in (self.low, self.high)]
        if self.low < 0 < self.high or self.high < 0:
            widths.append(2 + frac)  # "-0.5"
        return max(widths)

    def value(self, units: int) -> float:
        """A number of units as a float."""
        return units / 10**self.decimals

    def text(self, units: int) -> str:
        """The shortest JSON text of a number of units."""
        scale = 10**self.decimals
        whole, frac = divmod(abs(units), scale)
        out = ("-" if units < 0 else "") + str(whole)
        if frac:
            out += "." + str(frac).rjust(self.decimals, "0").rstrip("0")
        return out

    def _parse(self, text: str) -> tuple[bool, str, str | None] | None:
        """(negative, integer digits, fraction digits or None) of a syntactically legal prefix."""
        negative = text.startswith("-")
        body = text[1:] if negative else text
        whole, dot, frac = body.partition(".")
        if not _digits(whole) or (len(whole) > 1 and whole[0] == "0"):
            return None
        if not dot:
            return negative, whole, None
        if not self.decimals or not _digits(frac, allow_empty=True) or len(frac) > self.decimals:
            return None
        return negative, whole, frac

    def allows(self, prefix: str) -> bool:
        """Whether some legal number starts with ``prefix``."""
        if self.empty:
            return False
        if prefix in ("", "-"):
            return self.low < 0 if prefix else True
        parsed = self._parse(prefix)
        if parsed is None:
            return False
        negative, whole, frac = parsed
        scale = 10**self.decimals
        number = int(whole)
        if frac is not None:
            step = 10 ** (self.decimals - len(frac))
            start = number * scale + (int(frac) if frac else 0) * step
            spans = [(start, start + step - 1)]
        elif whole == "0":
            spans = [(0, scale - 1)]
        else:
            spans, k = [], 0
            top = max(abs(self.low), abs(self.high))
            while number * 10**k * scale <= top:
                spans.append((number * 10**k * scale, (number + 1) * 10**k * scale - 1))
                k += 1
        for lo, hi in spans:
            a, b = (-hi, -max(lo, 1)) if negative else (lo, hi)
            if a <= b and max(a, self.low) <= min(b, self.high):
                return True
        return False

    def units(self, text: str) -> int | None:
        """The value of a complete legal number in units, or None when ``text`` is not one."""
        parsed = self._parse(text)
        if parsed is None or text.endswith(".") or text == "-":
            return None
        negative, whole, frac = parsed
        magnitude = int(whole) * 10**self.decimals + (int(frac.ljust(self.decimals, "0")) if frac else 0)
        if negative and magnitude == 0:
            return None
        value = -magnitude if negative else magnitude
        return value if self.low <= value <= self.high else None

    def complete(self, prefix: str) -> str:
        """The shortest legal number that starts with ``prefix`` (a prefix it ``allows``), trying
        smaller digits first; with nothing usable, the legal number nearest the window's middle."""
        if not self.allows(prefix):
            return self.text((self.low + self.high) // 2)
        text = prefix
        while self.units(text) is None:
            text = next(text + c for c in "0123456789.-" if self.allows(text + c))
        return text


def _digits(text: str, allow_empty: bool = False) -> bool:
    return (allow_empty or bool(text)) and all("0" <= c <= "9" for c in text)


def number_prefix_ok(prefix: str, lo: float, hi: float, integer: bool, decimals: int) -> bool:
    """Whether some JSON number in ``[lo, hi]`` (integral, or with at most ``decimals`` fraction
    digits) starts with ``prefix``: no leading zeros, an optional minus, no ``-0``."""
    return NumberRange.of(lo, hi, integer, decimals).allows(prefix)


def number_complete_ok(text: str, lo: float, hi: float, integer: bool, decimals: int) -> bool:
    """Whether ``text`` is itself such a number."""
    return NumberRange.of(lo, hi, integer, decimals).units(text) is not None


# -- field guides -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumberGuide:
    """A number field: ``QUANTILES`` quantiles of its reference values (at evenly spaced
    probabilities), whether it is integral, the decimals the reference writes, and the schema's
    bounds (inclusive, on the field's grid of ``10 ** -decimals``; None when unbounded)."""

    pointer: str
    quantiles: tuple[float, ...]
    integer: bool
    decimals: int
    minimum: float | None = None
    maximum: float | None = None

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
        lo, hi = _floor(lo, self.step, self.decimals, up=True), _floor(hi, self.step, self.decimals)
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
        shared by reference frequency (a category the reference lacks weighs ``_FLOOR``)."""
        chosen_key = canonical_json(chosen)
        weights = {k: max(f, _FLOOR) for k, f in zip(self.keys, self.frequencies, strict=True)}
        rest = sum(w for k, w in weights.items() if k != chosen_key)
        if rest <= 0:
            return {chosen_key: 1.0}
        return {k: prior if k == chosen_key else (1 - prior) * w / rest for k, w in weights.items()}


@dataclass(frozen=True)
class TextGuide:
    """A free-text string field (too many distinct values to be a category): the *shapes* of its
    reference values (``text_shape``: "fiat 124 tc" is three words of some 4, 2 to 4 and
    exactly 2 characters of those kinds), shortest first, with their shares, as a categorical
    copula dimension, so that a record draws a shape (and its length) as it draws a category;
    the characters the values are written in (``chars``: every ASCII letter of a case they use,
    every digit if they use one, and the other characters as seen); the longest value; and,
    unless the field is sensitive, the values' words that occur at least ``MIN_WORD_ROWS`` times,
    each with how often it is a value's first word and how often a later one, which the sampler
    turns into a prior over the model's tokens (``legal.WordPrior``). The model still writes
    every character."""

    pointer: str
    shapes: tuple[str, ...]
    frequencies: tuple[float, ...]
    chars: str
    longest: int
    words: tuple[tuple[str, int, int], ...] = ()

    @property
    def slack(self) -> int:
        """How much longer or shorter a run of letters of a shape may be than the reference's:
        ``WORD_SLACK`` where the reference's words guide the words, else 1."""
        return WORD_SLACK if self.words else 1


MIN_WORD_ROWS = 2  # a word only one reference value holds is too telling to put before the model
WORD_SLACK = 6  # a run of letters may be this much longer than the reference's, words guiding
_SPECIAL = frozenset(".^$*+?{}[]\\|()")  # characters a pattern writes escaped
_RUNS = re.compile(r"[a-z]+|[A-Z]+|[0-9]+|.", re.DOTALL)
_RUN_CLASSES = (
    ("[a-z]", string.ascii_lowercase),
    ("[A-Z]", string.ascii_uppercase),
    ("[0-9]", string.digits),
)


def text_shape(value: str, slack: int = 1) -> str:
    """The pattern of the strings shaped like ``value``: each run of ASCII lowercase, uppercase
    or digits a run of its kind, as long for runs under three characters, and from three up one
    digit, or ``slack`` letters, shorter or longer (two at the least); every other character
    itself."""
    out = []
    for run in _RUNS.finditer(value):
        text = run.group()
        kind = next((k for k, alphabet in _RUN_CLASSES if text[0] in alphabet), None)
        if kind is None:
            out.append("\\" + text if text in _SPECIAL else text)
        else:
            n = len(text)
            if n < 3:
                out.append(kind + ("" if n == 1 else f"{{{n}}}"))
            else:
                k = 1 if kind == "[0-9]" else slack
                out.append(f"{kind}{{{max(2, n - k)},{n + k}}}")
    return "".join(out)


def _text_guide(pointer: str, strings: list[str], sensitive: bool) -> TextGuide | None:
    seen = set("".join(strings))
    chars = {c for c in seen if not (c.isascii() and c.isalnum()) and c.isprintable() and c not in '"\\'}
    for _, alphabet in _RUN_CLASSES:
        if seen & set(alphabet):
            chars |= set(alphabet)
    if not chars - {" "}:  # nothing but blanks: nothing to guide by
        return None
    words: dict[str, list[int]] = {}
    if not sensitive:
        for s in strings:
            for i, w in enumerate(s.split()):
                words.setdefault(w, [0, 0])[i > 0] += 1
    slack = WORD_SLACK if words else 1
    by_shape: dict[str, list[int]] = {}
    for s in strings:
        by_shape.setdefault(text_shape(s, slack), []).append(len(s))
    shapes = sorted(by_shape, key=lambda k: (float(np.mean(by_shape[k])), k))
    return TextGuide(
        pointer,
        tuple(shapes),
        tuple(len(by_shape[k]) / len(strings) for k in shapes),
        "".join(sorted(chars)),
        max(len(s) for s in strings),
        tuple(
            (w, first, later) for w, (first, later) in sorted(words.items()) if first + later >= MIN_WORD_ROWS
        ),
    )


FieldGuide: TypeAlias = NumberGuide | DateGuide | SeasonGuide | CategoryGuide | TextGuide
SEASON_PHASES = 24  # phases tried for a season: every half month


# -- guides -------------------------------------------------------------------------------------


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
            if b.op not in _RULE_OPS or not {b.left, b.right} <= set(pointers) or b.scale == 0:
                raise DataError(f"guides: rule bound {b} must compare two guided fields with < <= > >=")

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
        ``(lo, hi)`` of values or of ordinal days) and a category per categorical field."""
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
        return RecordGuide(self, windows, categories, seasons)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form that ``from_dict`` reads back."""
        fields: list[dict[str, Any]] = []
        for f in self.fields:
            if isinstance(f, NumberGuide):
                fields.append(
                    {
                        "kind": "number",
                        "pointer": f.pointer,
                        "quantiles": list(f.quantiles),
                        "integer": f.integer,
                        "decimals": f.decimals,
                        "minimum": f.minimum,
                        "maximum": f.maximum,
                    }
                )
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
        return [math.log(prior.get(canonical_json(o), _FLOOR * (1 - self.guides.prior))) for o in options]

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
        return min(max(_floor(x, self.step, self.decimals, up), self.span[0]), self.span[1])

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


def _floor(x: float, step: float, decimals: int, up: bool = False) -> float:
    """``x`` rounded down (or ``up``) onto the grid of ``step`` (1 or ``10 ** -decimals``)."""
    scale = 1 if step >= 1 else 10**decimals
    units = x * scale
    if not math.isfinite(units):  # a bound near float's limit: on no finer grid than itself
        return x
    n = math.ceil(units - 1e-9) if up else math.floor(units + 1e-9)
    return float(n) if scale == 1 else n / scale


def _snap(guide: NumberGuide, lo: float, hi: float, mid: float) -> tuple[float, float]:
    """A window onto the field's grid and span; a window narrower than one step becomes the grid
    point nearest ``mid``."""
    span_lo, span_hi = guide.span
    low = max(_floor(lo, guide.step, guide.decimals, up=True), span_lo)
    high = min(_floor(hi, guide.step, guide.decimals), span_hi)
    if low <= high:
        return low, high
    point = min(max(_floor(mid + guide.step / 2, guide.step, guide.decimals), span_lo), span_hi)
    return point, point


def _quantile(quantiles: Sequence[float], u: float) -> float:
    grid = np.linspace(0.0, 1.0, len(quantiles))
    return float(np.interp(u, grid, quantiles))


# -- deriving guides ------------------------------------------------------------------------------


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
    correlation = _correlation(fields, columns, np.random.default_rng(seed))
    guided = {f.pointer for f in fields if not isinstance(f, TextGuide)}
    bounds = []
    for rule in rules:
        b = rule.bound
        if b is not None and b.op in _RULE_OPS and {b.left, b.right} <= guided and b.left != b.right:
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
        if not all(_scalar(o) for o in node.options):  # an enum of objects or arrays is left alone
            return None
        keys = [canonical_json(o) for o in node.options]
        tally = dict.fromkeys(keys, 0)
        for v in present:
            if canonical_json(v) in tally:
                tally[canonical_json(v)] += 1
        total = sum(tally.values())
        if not total:
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
            tuple(tally[keys[i]] / total for i in order),
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
        return _text_guide(pointer, strings, sensitive) if node.pattern is None else None
    # A category must fit the slot and be writable inside the skeleton's quotes.
    kept = {s: n for s, n in counts.items() if _writable(s) and fits_string(node, s)}
    if not kept:
        return None
    total = sum(kept.values())
    ordered = sorted(kept, key=lambda s: (-kept[s], s))
    return CategoryGuide(pointer, tuple(ordered), tuple(kept[s] / total for s in ordered), choice=False)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _writable(text: str) -> bool:
    return bool(text) and text == text.strip() and '"' not in text and "\\" not in text and text.isprintable()


def fits_string(node: StringNode, text: str) -> bool:
    """Whether ``text`` is a legal value of the string ``node`` (its lengths and pattern)."""
    if len(text) < node.min_length or (node.max_length is not None and len(text) > node.max_length):
        return False
    return node.pattern is None or full_match(node.pattern, text)


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


def grid_bounds(node: NumberNode, integer: bool, decimals: int) -> tuple[float | None, float | None]:
    """A number node's bounds, inclusive (exclusive ones moved one step in), on the grid of
    ``10 ** -decimals`` (1 when ``integer``); None where unbounded."""
    step = 1.0 if integer else 10.0**-decimals
    lo = hi = None
    if node.minimum is not None:
        lo = _floor(node.minimum, step, decimals, up=True)
        if node.exclusive_minimum and lo <= node.minimum:
            lo = _floor(lo + step, step, decimals, up=True)
    if node.maximum is not None:
        hi = _floor(node.maximum, step, decimals)
        if node.exclusive_maximum and hi >= node.maximum:
            hi = _floor(hi - step, step, decimals)
    return lo, hi


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
        groups: dict[str, list[float]] = {}
        for category, value in zip(column, values, strict=True):
            if category is not _ABSENT and is_number(value):
                groups.setdefault(canonical_json(category), []).append(float(value))
        every = [v for group in groups.values() for v in group]
        if len(groups) < 2 or len(every) < 3 or np.var(every) == 0:
            continue
        between = sum(len(g) * (np.mean(g) - np.mean(every)) ** 2 for g in groups.values())
        share = float(between / (np.var(every) * len(every)))
        if share > best:
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
        "text": {"kind", "pointer", "shapes", "frequencies", "chars", "longest", "words"},
    }
    if kind not in expected:
        raise DataError(f"guides: {where}: kind must be one of {', '.join(expected)}, got {kind!r}")
    if set(data) != expected[kind]:
        raise DataError(f"guides: {where}: expected the keys {sorted(expected[kind])}, got {sorted(data)}")
    if kind == "text":
        return _text_from(where, data)
    if kind == "category":
        categories, choice = data["categories"], data["choice"]
        frequencies = _numbers(data["frequencies"], f"{where}.frequencies")
        if not isinstance(categories, list) or not categories or len(categories) != len(frequencies):
            raise DataError(f"guides: {where}: categories must be a non-empty list, one per frequency")
        if not all(_scalar(c) for c in categories):
            raise DataError(f"guides: {where}: categories must be strings, numbers, booleans or null")
        if any(f < 0 for f in frequencies) or abs(sum(frequencies) - 1.0) > 1e-6:
            raise DataError(f"guides: {where}: frequencies must be non-negative and sum to 1")
        if not isinstance(choice, bool):
            raise DataError(f"guides: {where}.choice must be true or false")
        if not choice and not all(isinstance(c, str) and _writable(c) for c in categories):
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
    return NumberGuide(pointer, tuple(quantiles), integer, 0 if integer else decimals, lo, hi)


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
    kept = tuple((w, first, later) for w, first, later in words)
    return TextGuide(data["pointer"], tuple(shapes), tuple(frequencies), chars, longest, kept)


def _bound_from(i: int, data: Any) -> Bound:
    keys = {"left", "op", "right", "scale", "offset"}
    if not isinstance(data, dict) or set(data) != keys:
        raise DataError(f"guides: bounds[{i}] must be an object with the keys {sorted(keys)}")
    if not isinstance(data["left"], str) or not isinstance(data["right"], str) or data["op"] not in _RULE_OPS:
        raise DataError(f"guides: bounds[{i}] must name two fields and one of {', '.join(_RULE_OPS)}")
    scale, offset = _numbers([data["scale"], data["offset"]], f"bounds[{i}] scale and offset")
    return Bound(data["left"], data["op"], data["right"], scale, offset)
