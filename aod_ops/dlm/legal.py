"""The legal values of a slot, and the repairs of text that is not one.

A slot with a known set of legal values is decoded left to right (``Legal``), its text kept a
prefix of a legal value: a pattern or format (``PatternLegal``); a number with both bounds, or
with a value guide's window (``NumberLegal``); a listed set, such as a guided date's window or a
string's reference categories (``SetLegal``); a guided free-text string, in the shape drawn
for it (``TextLegal``). Text that is not legal when the slot ends is
repaired (``Legal.nearest``, ``fit_string``, ``fit_number``), and the repair is counted.
"""

from __future__ import annotations

import json
import math
import random
import re
import string
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from aod_ops.dlm.field_guides import CategoryGuide, DateGuide, FieldGuide, NumberGuide, fits_string
from aod_ops.dlm.guides import RecordGuide
from aod_ops.dlm.numbers import NumberRange, grid_bounds
from aod_ops.dlm.sampler import TOP_K
from aod_ops.dlm.text import TextGuide, value_digest
from aod_ops.schema.nodes import NumberNode, StringNode
from aod_ops.schema.patterns import FORMAT_PATTERNS, complete, full_match, partial_match

UNGUIDED_DECIMALS = 3  # fraction digits of a bounded, unguided, non-integral number
MAX_MULTIPLES = 4096  # a multipleOf slot lists its legal values up to this many
DATE_LENGTH = 10  # YYYY-MM-DD
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?")


def fit_string(text: str, node: StringNode, rng: random.Random) -> tuple[str, bool]:
    """The model's text made to fit the slot (cleaned, within its lengths, matching its pattern),
    and whether that took a repair: a cut, padding, or a completion to the pattern."""
    text = "".join(ch for ch in text if ch.isprintable()).strip()
    if node.pattern is not None:
        if full_match(node.pattern, text) and len(text) >= node.min_length:
            return text, False
        while text and not partial_match(node.pattern, text):
            text = text[:-1]
        for prefix in (text, ""):
            done = complete(node.pattern, prefix, rng, node.min_length, node.max_length)
            if done is not None:
                return done, True
        return text, True
    out = text
    if node.max_length is not None and len(out) > node.max_length:
        out = out[: node.max_length].rstrip()
    while len(out) < node.min_length:
        out += rng.choice(string.ascii_lowercase)
    return out, out != text


def _bounds(node: NumberNode) -> tuple[float | None, float | None]:
    lo, hi = node.minimum, node.maximum
    step = 1 if node.integer else 1e-6
    if lo is not None and node.exclusive_minimum:
        lo += step
    if hi is not None and node.exclusive_maximum:
        hi -= step
    if node.integer:
        lo = None if lo is None else float(-(-lo // 1))
        hi = None if hi is None else float(hi // 1)
    return lo, hi


def fit_number(text: str, node: NumberNode, rng: random.Random) -> tuple[str, bool]:
    """The model's digits made into a legal number (within bounds, a multiple, integral), and
    whether that took a repair: a value folded into range, rounded, or invented because the model
    wrote no digits. A legal value is never changed."""
    lo, hi = _bounds(node)
    raw = text.strip()
    found = _NUMBER.search(text)
    if found is not None:
        v = float(found.group())
    elif node.hints:
        v = float(node.hints[0])
    else:
        v = rng.uniform(lo if lo is not None else 0.0, hi if hi is not None else (lo or 0.0) + 100.0)
    # Fold a value outside the bounds back inside rather than clamping it, so out-of-range
    # guesses do not pile up on the boundary; a value inside stays as it is.
    if lo is not None and hi is not None:
        if hi <= lo:
            v = lo
        elif not lo <= v <= hi:
            v = lo + (v - lo) % (hi - lo)
    elif lo is not None and v < lo:
        v = 2 * lo - v
    elif hi is not None and v > hi:
        v = 2 * hi - v
    if node.integer:
        v = float(round(v))
    out = str(int(v)) if node.integer else json.dumps(round(v, 6))
    if node.multiple_of:
        # jsonschema checks a float multipleOf as int(v / m) == v / m in floating point, so the
        # candidate multiples are checked the same way and written without rounding.
        m = node.multiple_of
        base = round(v / m)
        for k in sorted(range(base - 50, base + 51), key=lambda k: abs(k - base)):
            cand = k * m
            if (lo is None or cand >= lo) and (hi is None or cand <= hi) and int(cand / m) == cand / m:
                out = str(int(cand)) if node.integer else json.dumps(cand)
                break
    if _JSON_NUMBER.fullmatch(raw) and float(raw) == float(out) and not (node.integer and "." in raw):
        return raw, False
    return out, True


# -- legal values of a slot decoded left to right ---------------------------------------------


class Legal:
    """The values a slot decoded left to right may take.

    ``limit``: how many of the model's ranked tokens are tried at a position before the slot
    falls back (None: every token its vocabulary class allows); ``numeric``: the values are
    written with digits, ``-`` and ``.`` only (the number vocabulary).
    """

    limit: int | None = None
    numeric: bool = False

    def allows(self, text: str) -> bool:
        """Whether some legal value starts with ``text``."""
        raise NotImplementedError

    def done(self, text: str) -> bool:
        """Whether ``text`` is a legal value."""
        raise NotImplementedError

    def nearest(self, text: str, rng: random.Random) -> str:
        """A legal value close to ``text`` (its repair)."""
        raise NotImplementedError

    def continuations(self, text: str) -> Sequence[str] | None:
        """Every legal value that starts with ``text``, when the values are listed; else None."""
        return None

    def weight(self, text: str, exact: bool = False) -> float:
        """The log prior mass of the legal values starting with ``text`` (``exact``: of ``text``
        itself); 0 when the values have no prior."""
        return 0.0


@dataclass(frozen=True)
class PatternLegal(Legal):
    """A string slot with a pattern (or a format's pattern) and length limits."""

    node: StringNode
    limit = TOP_K

    def allows(self, text: str) -> bool:
        """Within the length limit and a prefix of a match."""
        assert self.node.pattern is not None
        return (self.node.max_length is None or len(text) <= self.node.max_length) and partial_match(
            self.node.pattern, text
        )

    def done(self, text: str) -> bool:
        """A full match, long enough."""
        assert self.node.pattern is not None
        return full_match(self.node.pattern, text) and len(text) >= self.node.min_length

    def nearest(self, text: str, rng: random.Random) -> str:
        """The pattern's completion of the longest legal prefix."""
        return fit_string(text, self.node, rng)[0]


@dataclass(frozen=True)
class NumberLegal(Legal):
    """A number slot: the JSON numbers of a ``NumberRange``."""

    range: NumberRange
    numeric = True

    def allows(self, text: str) -> bool:
        """A prefix of a legal number."""
        return self.range.allows(text)

    def done(self, text: str) -> bool:
        """A legal number."""
        return self.range.units(text) is not None

    def nearest(self, text: str, rng: random.Random) -> str:
        """The shortest legal completion of the text's longest legal prefix."""
        while text and not self.range.allows(text):
            text = text[:-1]
        return self.range.complete(text)


@dataclass(frozen=True)
class SetLegal(Legal):
    """A slot whose legal values are listed (sorted): the dates of a window, the multiples of a
    ``multipleOf`` number, a string's reference categories. ``prior`` weighs each value."""

    values: tuple[str, ...]
    prior: Mapping[str, float] | None = None
    numeric: bool = False

    def continuations(self, text: str) -> Sequence[str]:
        """The listed values that start with ``text``."""
        i = j = bisect_left(self.values, text)
        while j < len(self.values) and self.values[j].startswith(text):
            j += 1
        return self.values[i:j]

    def allows(self, text: str) -> bool:
        """Some value starts with ``text``."""
        i = bisect_left(self.values, text)
        return i < len(self.values) and self.values[i].startswith(text)

    def done(self, text: str) -> bool:
        """``text`` is listed."""
        i = bisect_left(self.values, text)
        return i < len(self.values) and self.values[i] == text

    def weight(self, text: str, exact: bool = False) -> float:
        """The log prior mass of the values starting with ``text`` (``exact``: of ``text``)."""
        if self.prior is None:
            return 0.0
        mass = sum(self.prior.get(v, 0.0) for v in ([text] if exact else self.continuations(text)))
        return math.log(mass) if mass > 0 else -math.inf

    def nearest(self, text: str, rng: random.Random) -> str:
        """A value sharing the longest prefix with ``text`` (drawn from ``rng`` among ties)."""
        for n in range(len(text), -1, -1):
            found = self.continuations(text[:n])
            if found:
                return rng.choice(list(found))
        return rng.choice(list(self.values))


@dataclass(frozen=True)
class TextLegal(Legal):
    """A guided free-text string: shaped as the record's draw of its guide says (``shape``, a
    pattern from ``text_shape``), inside the schema's lengths. The sampler adds the guide's prior
    over tokens (``Vocab.text_bias``) to the model's scores before ranking."""

    node: StringNode
    guide: TextGuide
    shape: str
    limit = TOP_K

    def allows(self, text: str) -> bool:
        """Within the schema's longest and a prefix of the shape."""
        longest = self.node.max_length
        return (longest is None or len(text) <= longest) and partial_match(self.shape, text)

    def done(self, text: str) -> bool:
        """Of the shape, a legal value of the schema, and not a value the reference holds."""
        fresh = value_digest(text) not in self.guide.taken_set
        return full_match(self.shape, text) and fits_string(self.node, text) and fresh

    def nearest(self, text: str, rng: random.Random) -> str:
        """The text made to fit the schema (a text off its shape is not repaired), and one the
        reference does not hold: a reference value gets a letter more (where the schema allows)."""
        out = fit_string(text, self.node, rng)[0]
        room = self.node.max_length is None or len(out) < self.node.max_length
        if value_digest(out) in self.guide.taken_set and room:
            out += rng.choice(string.ascii_lowercase)
        return out


WORD_NOVEL = math.log(0.002)  # the log prior of a token that writes toward no reference word


class WordPrior:
    """The reference words of a text guide (``TextGuide.words``) as a prior over the next token
    of a value: a token that writes on toward a reference word (continuing the value's last
    word, or starting the next one) weighs the log share of the words it still leads to, each
    word weighed by how often the reference has it first in a value, or later, as the word
    being written is; a word the value already holds does not count again. Any other token
    weighs ``WORD_NOVEL``. Added to the model's scores, it makes real words likely without
    making new ones impossible."""

    def __init__(self, words: Sequence[tuple[str, int, int]], by_text: Mapping[str, Sequence[int]]) -> None:
        ordered = sorted(words)
        self.words = [w for w, _, _ in ordered]
        self.counts = ({w: n for w, n, _ in ordered}, {w: n for w, _, n in ordered})
        self.cumulative: tuple[list[int], list[int]] = ([0], [0])
        for _, first, later in ordered:
            self.cumulative[0].append(self.cumulative[0][-1] + first)
            self.cumulative[1].append(self.cumulative[1][-1] + later)
        self.by_text = by_text
        self._scores: dict[tuple[str, int, frozenset[str]], dict[int, float]] = {}

    def _mass(self, prefix: str, later: int, used: frozenset[str]) -> int:
        """The count of the words starting with ``prefix`` (first words, or ``later`` ones),
        leaving out the ``used`` ones."""
        i, j = bisect_left(self.words, prefix), bisect_left(self.words, prefix + "\U0010ffff")
        mass = self.cumulative[later][j] - self.cumulative[later][i]
        return mass - sum(self.counts[later].get(u, 0) for u in used if u.startswith(prefix))

    def scores(self, text: str) -> dict[int, float]:
        """The log prior of each token that writes toward a reference word after ``text``."""
        words = text.split(" ")
        word, used = words[-1], frozenset(words[:-1])
        later = int(len(words) > 1)
        key = (word, later, used)
        if key not in self._scores:
            out: dict[int, float] = {}
            total = self._mass(word, later, used)
            if total:
                self._toward(word, later, used, "", 0.0, total, out)
            ends = self.counts[later].get(word, 0) if word not in used else 0
            if word and ends:  # a complete word may end, and a space start the next
                used |= {word}
                rest = self._mass("", 1, used)
                if rest:
                    self._toward("", 1, used, " ", math.log(ends / total), rest, out)
            self._scores[key] = out
        return self._scores[key]

    def _toward(
        self,
        word: str,
        later: int,
        used: frozenset[str],
        lead: str,
        base: float,
        total: int,
        out: dict[int, float],
    ) -> None:
        """Score into ``out`` every token ``lead + piece`` with ``word + piece`` a prefix of an
        unused reference word: ``base`` plus the log share of ``total`` the words it leads to hold."""
        i, j = bisect_left(self.words, word), bisect_left(self.words, word + "\U0010ffff")
        seen: set[str] = set()
        for w in self.words[i:j]:
            for n in range(len(word) + 1, len(w) + 1):
                prefix = w[:n]
                if prefix in seen:
                    continue
                seen.add(prefix)
                mass = self._mass(prefix, later, used)
                if mass <= 0:
                    continue
                score = base + math.log(mass / total)
                for token in self.by_text.get(lead + prefix[len(word) :], ()):
                    out[token] = max(out.get(token, -math.inf), score)


def usable_guide(node: StringNode | NumberNode, guide: FieldGuide | None) -> FieldGuide | None:
    """``guide`` when it fits the slot's kind (a number, a date string, a categorical string
    with some category the slot allows, a free-text string with no pattern), else None: a
    guide of another schema is ignored."""
    if isinstance(node, NumberNode):
        return guide if isinstance(guide, NumberGuide) else None
    if isinstance(guide, DateGuide):
        fits = node.min_length <= DATE_LENGTH <= (node.max_length or DATE_LENGTH)
        return guide if fits else None
    if isinstance(guide, CategoryGuide) and not guide.choice:
        return guide if any(fits_string(node, c) for c in guide.categories) else None
    if isinstance(guide, TextGuide):
        return guide if node.pattern is None else None
    return None


def _grid(node: NumberNode, guide: NumberGuide | None) -> tuple[NumberRange, bool] | None:
    """The legal numbers of a slot before any window, and whether the guide set them: the guide's
    span (on its grid) inside the schema's bounds, or without a guide the bounds themselves (with
    ``UNGUIDED_DECIMALS``); None for a number with a bound missing."""
    if guide is not None:
        integer = node.integer or guide.integer
        lo, hi = grid_bounds(node, integer, guide.decimals)
        span = guide.span
        low = span[0] if lo is None else max(lo, span[0])
        high = span[1] if hi is None else min(hi, span[1])
        grid = NumberRange.of(low, high, integer, guide.decimals)
        if not grid.empty:
            return grid, True
    lo, hi = grid_bounds(node, node.integer, UNGUIDED_DECIMALS)
    if lo is None or hi is None:
        return None
    grid = NumberRange.of(lo, hi, node.integer, UNGUIDED_DECIMALS)
    return None if grid.empty else (grid, False)


def _multiples(node: NumberNode, lo: float, hi: float) -> list[str]:
    """The multiples of ``node.multiple_of`` in ``[lo, hi]`` as JSON text, as jsonschema checks
    them (``int(v / m) == v / m`` in floating point); empty when there are too many to list."""
    m = node.multiple_of
    assert m is not None
    first, last = math.ceil(lo / m - 1e-9), math.floor(hi / m + 1e-9)
    if last - first >= MAX_MULTIPLES:
        return []
    out = []
    for k in range(first, last + 1):
        for value in (k * m, round(k * m, 12)):
            if (
                lo <= value <= hi
                and int(value / m) == value / m
                and (not node.integer or value == int(value))
            ):
                out.append(str(int(value)) if node.integer or value == int(value) else json.dumps(value))
                break
    return out


def number_legal(
    node: NumberNode, guide: FieldGuide | None, window: tuple[float, float] | None = None
) -> NumberLegal | SetLegal | None:
    """The legal values of a number slot decoded left to right: its guide's span or its bounds,
    cut to the record's ``window`` (a window outside them is ignored); the listed multiples of a
    ``multipleOf``. None when the slot is decoded freely (a bound missing and no guide, or too
    many multiples to list) and ``fit_number`` repairs it."""
    grid = _grid(node, guide if isinstance(guide, NumberGuide) else None)
    if grid is None:
        return None
    values, guided = grid
    if node.multiple_of:
        listed = _multiples(node, values.value(values.low), values.value(values.high))
        if window is not None and guided and listed:
            kept = [t for t in listed if window[0] <= float(t) <= window[1]]
            middle = (window[0] + window[1]) / 2
            listed = kept or [min(listed, key=lambda t: abs(float(t) - middle))]
        return SetLegal(tuple(sorted(listed)), numeric=True) if listed else None
    if window is not None and guided:
        cut = NumberRange.of(window[0], window[1], values.decimals == 0, values.decimals)
        inside = NumberRange(max(cut.low, values.low), min(cut.high, values.high), values.decimals)
        values = values if inside.empty else inside
    return NumberLegal(values)


def slot_legal(
    node: StringNode | NumberNode,
    pointer: str,
    record: RecordGuide | None,
    windows: Mapping[str, tuple[float, float]],
) -> Legal | None:
    """What ``slot`` may hold when decoded left to right for one record (its guide's window or
    category, its bounds, its pattern), or None when the slot is decoded freely."""
    guide = usable_guide(node, record.guides.field(pointer) if record is not None else None)
    window = windows.get(pointer)
    if isinstance(node, NumberNode):
        return number_legal(node, guide, window)
    if isinstance(guide, DateGuide) and window is not None:
        custom = node.pattern not in (None, FORMAT_PATTERNS["date"])
        days = range(max(1, int(window[0])), min(int(window[1]), date.max.toordinal()) + 1)
        # The season drawn for the record narrows the window to its time of year, unless no day of
        # the window is in season (the window and the season were drawn apart by the rules).
        in_season = [d for d in days if record is not None and record.in_season(pointer, d)]
        dates = [date.fromordinal(d).isoformat() for d in in_season or days]
        dates = [d for d in dates if not custom or fits_string(node, d)]
        if dates:
            return SetLegal(tuple(dates), numeric=True)
    if isinstance(guide, CategoryGuide) and record is not None:
        prior = record.string_prior(pointer) or {}
        kept = {c: p for c, p in prior.items() if fits_string(node, c)}
        if kept:
            return SetLegal(tuple(sorted(kept)), kept)
    if isinstance(guide, TextGuide) and record is not None:
        shape = record.categories.get(pointer)
        if isinstance(shape, str):
            return TextLegal(node, guide, shape)
    return PatternLegal(node) if node.pattern is not None else None
