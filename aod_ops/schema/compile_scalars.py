"""Compile the scalar keywords: fixed values, strings and numbers.

``enum``/``const`` (and the null and boolean types) become a ``ChoiceNode`` of the values every
part allows; ``minLength``/``maxLength``/``pattern``/``format`` a ``StringNode`` whose one
full-match regex is checked for a completion in its length range; ``minimum``/``maximum``, their
exclusive forms (draft 4's booleans included) and ``multipleOf`` a ``NumberNode`` with integer
bounds made inclusive. ``default``/``examples`` values that fit are kept as hints.
"""

from __future__ import annotations

import math
import random
import re
from fractions import Fraction
from functools import lru_cache
from typing import Any

from aod_ops.schema.compile_base import (
    SEED,
    CompilerBase,
    Impossible,
    Part,
    at_most,
    int_or,
    is_number,
    json_key,
)
from aod_ops.schema.nodes import ChoiceNode, NumberNode, StringNode
from aod_ops.schema.patterns import FORMAT_PATTERNS, complete, full_match

_HINT_KEYS = ("default", "examples", "example")


class ScalarCompiler(CompilerBase):
    """The compiler's choices, strings and numbers."""

    # -- choices -------------------------------------------------------------------------------

    def _enum_options(self, positive: list[Part]) -> list[Any]:
        """The values that every part's enum and const allow."""
        options: list[Any] | None = None
        for part in positive:
            values: list[Any] | None = None
            if "const" in part.keywords():
                values = [part.schema["const"]]
            enum = part.get("enum")
            if isinstance(enum, list):
                allowed = {json_key(v) for v in enum}
                values = enum if values is None else [v for v in values if json_key(v) in allowed]
            if values is not None:
                keys = {json_key(v) for v in values}
                options = values if options is None else [v for v in options if json_key(v) in keys]
        return options or []

    def _choice(self, positive: list[Part], negative: list[Part], options: list[Any]) -> ChoiceNode:
        """The options that satisfy every positive part and no negated one."""
        kept: dict[str, Any] = {}
        for option in options:
            key = json_key(option)
            if key in kept:
                continue
            allowed = all(self._valid(p, option) for p in positive)
            if allowed and not any(self._valid(n, option) for n in negative):
                kept[key] = option
        if not kept:
            pointer = positive[0].pointer if positive else (negative[0].pointer if negative else "")
            raise Impossible(pointer, "enum", "no allowed value satisfies every part of the schema")
        return ChoiceNode(tuple(kept.values()))

    # -- strings ----------------------------------------------------------------------------

    def _string(self, parts: list[Part]) -> StringNode:
        min_length = at_most(
            max([int_or(p.get("minLength"), 0) for p in parts], default=0), "minLength", parts
        )
        maxima = [int_or(p.get("maxLength"), -1) for p in parts if int_or(p.get("maxLength"), -1) >= 0]
        max_length = min(maxima) if maxima else None
        pointer = parts[0].pointer if parts else ""
        if max_length is not None and min_length > max_length:
            raise Impossible(pointer, "maxLength", f"minLength {min_length} exceeds maxLength {max_length}")
        patterns = [(p.get("pattern"), p) for p in parts if isinstance(p.get("pattern"), str)]
        formats = [(p.get("format"), p) for p in parts if isinstance(p.get("format"), str)]
        checked = self.loaded.validator_class.FORMAT_CHECKER.checkers
        pieces = [full_match_form(pattern) for pattern, _ in patterns]
        format_pieces = [FORMAT_PATTERNS[f] for f, _ in formats if f in FORMAT_PATTERNS]
        for name, part in formats:
            if name in checked and name not in FORMAT_PATTERNS:
                self.note(
                    part.at("format"), "format", f"no generator for format {name!r}; checked after generation"
                )
        pattern = _combine(pieces + format_pieces)
        if pattern is not None and _completion(pattern, min_length, max_length) is None and format_pieces:
            # A format is a realism hint when unchecked; when checked, validation still applies.
            if any(f in checked for f, _ in formats if f in FORMAT_PATTERNS):
                self.note(
                    formats[0][1].at("format"), "format", "format and pattern combined; format checked after"
                )
            pattern = _combine(pieces)
        if pattern is not None and _completion(pattern, min_length, max_length) is None:
            relaxed = _combine([full_match_form(p, relaxed=True) for p, _ in patterns])
            if relaxed is None or _completion(relaxed, min_length, max_length) is None:
                where = patterns[0][1].at("pattern") if patterns else pointer
                bounds = f"{min_length}..{max_length if max_length is not None else ''}"
                raise Impossible(
                    where, "pattern", f"no string of length {bounds} matching the pattern was found"
                )
            pattern = relaxed
        hints = tuple(
            h
            for h in _hints(parts)
            if isinstance(h, str)
            and min_length <= len(h) <= (max_length if max_length is not None else len(h))
            and (pattern is None or full_match(pattern, h))
        )
        return StringNode(
            min_length=min_length,
            max_length=max_length,
            pattern=pattern,
            format=formats[0][0] if formats else None,
            hints=hints,
        )

    # -- numbers ----------------------------------------------------------------------------

    def _number(self, parts: list[Part], integer: bool) -> NumberNode:
        low: tuple[float, bool] | None = None  # (bound, exclusive)
        high: tuple[float, bool] | None = None
        draft4 = self.loaded.draft == "draft4"
        for part in parts:
            for keyword, exclusive in (("minimum", False), ("exclusiveMinimum", True)):
                value = part.get(keyword)
                if keyword == "minimum" and draft4:
                    exclusive = part.get("exclusiveMinimum") is True
                usable = is_number(value) and not (keyword == "exclusiveMinimum" and draft4)
                if usable and (low is None or value > low[0] or (value == low[0] and exclusive)):
                    low = (value, exclusive)
            for keyword, exclusive in (("maximum", False), ("exclusiveMaximum", True)):
                value = part.get(keyword)
                if keyword == "maximum" and draft4:
                    exclusive = part.get("exclusiveMaximum") is True
                usable = is_number(value) and not (keyword == "exclusiveMaximum" and draft4)
                if usable and (high is None or value < high[0] or (value == high[0] and exclusive)):
                    high = (value, exclusive)
        pointer = parts[0].pointer if parts else ""
        step = self._multiple_of(parts, integer)
        minimum, maximum = (low[0] if low else None), (high[0] if high else None)
        exclusive_min, exclusive_max = bool(low and low[1]), bool(high and high[1])
        if integer:
            # Integer bounds are made inclusive: the slot then never has to reason about them.
            if minimum is not None:
                minimum = math.floor(minimum) + 1 if exclusive_min else math.ceil(minimum)
            if maximum is not None:
                maximum = math.ceil(maximum) - 1 if exclusive_max else math.floor(maximum)
            exclusive_min = exclusive_max = False
        if not _has_value_between(minimum, maximum, exclusive_min, exclusive_max, step):
            lower = f"{'above' if exclusive_min else 'from'} {minimum}"
            upper = f"{'below' if exclusive_max else 'to'} {maximum}"
            multiple = f" is a multiple of {step}" if step else ""
            kind = "integer" if integer else "number"
            raise Impossible(pointer, "maximum", f"no {kind} {lower} {upper}{multiple}")
        hints = tuple(
            float(h)
            for h in _hints(parts)
            if is_number(h)
            and (not integer or float(h).is_integer())
            and _in_bounds(h, minimum, maximum, exclusive_min, exclusive_max, step)
        )
        return NumberNode(
            integer=integer,
            minimum=minimum,
            maximum=maximum,
            exclusive_minimum=exclusive_min,
            exclusive_maximum=exclusive_max,
            multiple_of=step,
            hints=hints,
        )

    def _multiple_of(self, parts: list[Part], integer: bool) -> float | None:
        values = [(Fraction(str(v)), p) for p in parts if is_number(v := p.get("multipleOf")) and v > 0]
        if not values:
            return None
        step = values[0][0]
        for value, part in values[1:]:
            common = _lcm(step, value)
            if common is None:
                self.note(part.at("multipleOf"), "multipleOf", "several multipleOf without a common multiple")
            else:
                step = common
        if integer and step.denominator != 1:
            step = Fraction(step.numerator)  # integers that are multiples of p/q are multiples of p
        return int(step) if step.denominator == 1 else float(step)


# -- helpers -------------------------------------------------------------------------------------


def _hints(parts: list[Part]) -> list[Any]:
    found: list[Any] = []
    for part in parts:
        for key in _HINT_KEYS:
            if key not in part.keywords():
                continue
            value = part.schema[key]
            found += value if key == "examples" and isinstance(value, list) else [value]
    return found[:5]


_FLAGS = re.compile(r"\(\?([imsx]+)\)")


def full_match_form(pattern: str, relaxed: bool = False) -> str:
    """A full-match regex whose matches all contain a match of ``pattern`` (a search).

    An anchored side stays as written; a side with no anchor is left open (``.*``) when the
    other side is anchored, and closed when neither is (``[a-z]+`` then means the whole value,
    the usual intent). ``relaxed`` opens every unanchored side.
    """
    flags = _FLAGS.match(pattern)
    body = pattern[flags.end() :] if flags else pattern
    core = f"(?{flags.group(1)}:{body})" if flags else f"(?:{body})"
    starts = body.startswith("^")
    ends = body.endswith("$") and not _escaped(body, len(body) - 1)
    open_start = not starts and (ends or relaxed)
    open_end = not ends and (starts or relaxed)
    return (".*" if open_start else "") + core + (".*" if open_end else "")


def _escaped(text: str, index: int) -> bool:
    backslashes = len(text[:index]) - len(text[:index].rstrip("\\"))
    return backslashes % 2 == 1


def _combine(pieces: list[str]) -> str | None:
    """One full-match regex for several: all but the last become lookaheads."""
    if not pieces:
        return None
    return "".join(f"(?=(?:{p})\\Z)" for p in pieces[:-1]) + pieces[-1]


@lru_cache(maxsize=8192)
def _completion(pattern: str, min_length: int, max_length: int | None) -> str | None:
    return complete(pattern, "", random.Random(SEED), min_length, max_length)


def _lcm(a: Fraction, b: Fraction) -> Fraction | None:
    """The least common multiple of two positive rationals."""
    numerator = math.lcm(a.numerator * b.denominator, b.numerator * a.denominator)
    result = Fraction(numerator, a.denominator * b.denominator)
    return result if result.denominator < 10**9 else None


def _has_value_between(
    low: float | None, high: float | None, exclusive_low: bool, exclusive_high: bool, step: float | None
) -> bool:
    if low is None or high is None:
        return True
    if step is None:
        return low < high or (low == high and not exclusive_low and not exclusive_high)
    first = math.ceil(low / step) * step
    if exclusive_low and first == low:
        first += step
    return first < high or (first == high and not exclusive_high)


def _in_bounds(
    value: float,
    low: float | None,
    high: float | None,
    exclusive_low: bool,
    exclusive_high: bool,
    step: float | None,
) -> bool:
    if low is not None and (value < low or (exclusive_low and value == low)):
        return False
    if high is not None and (value > high or (exclusive_high and value == high)):
        return False
    return step is None or (value / step).is_integer()
