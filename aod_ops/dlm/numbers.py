"""Legal JSON numbers on a decimal grid, checked exactly, for slots decoded left to right.

``NumberRange`` holds the numbers of a window written with at most so many fraction digits, in
units of the grid so that every check is exact: whether a prefix can still become one
(``allows``), whether a text is one (``units``), and the shortest completion (``complete``).
``number_prefix_ok`` and ``number_complete_ok`` ask the same of a float window; ``grid_bounds``
puts a number node's bounds on the grid, and ``grid_floor`` any value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from aod_ops.schema.nodes import NumberNode


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


def grid_bounds(node: NumberNode, integer: bool, decimals: int) -> tuple[float | None, float | None]:
    """A number node's bounds, inclusive (exclusive ones moved one step in), on the grid of
    ``10 ** -decimals`` (1 when ``integer``); None where unbounded."""
    step = 1.0 if integer else 10.0**-decimals
    lo = hi = None
    if node.minimum is not None:
        lo = grid_floor(node.minimum, step, decimals, up=True)
        if node.exclusive_minimum and lo <= node.minimum:
            lo = grid_floor(lo + step, step, decimals, up=True)
    if node.maximum is not None:
        hi = grid_floor(node.maximum, step, decimals)
        if node.exclusive_maximum and hi >= node.maximum:
            hi = grid_floor(hi - step, step, decimals)
    return lo, hi


def grid_floor(x: float, step: float, decimals: int, up: bool = False) -> float:
    """``x`` rounded down (or ``up``) onto the grid of ``step`` (1 or ``10 ** -decimals``)."""
    scale = 1 if step >= 1 else 10**decimals
    units = x * scale
    if not math.isfinite(units):  # a bound near float's limit: on no finer grid than itself
        return x
    n = math.ceil(units - 1e-9) if up else math.floor(units + 1e-9)
    return float(n) if scale == 1 else n / scale
