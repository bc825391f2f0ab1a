"""Skeleton infilling: the compiled schema gives the structure, the model fills the values.

For each record a walker goes down the compiled node tree and writes the record's skeleton: the
literal JSON text of its structure, and a run of mask tokens for every string or number slot.
Every choice on the way (an enum value, an optional property, a union branch, one more array
item) is put to the model: the options' tokens are scored at masked positions after the
skeleton so far, and one is drawn from those scores, so a choice is always legal. Then the
slots are infilled by the masked-diffusion sampler, under per-slot vocabulary limits.

A slot with a known set of legal values is decoded left to right, its text kept a prefix of a
legal value (``Legal``): a pattern or format; a number with both bounds, or with a value guide's
window (``guides.py``); a guided date (the ISO dates of its window) or low-cardinality string
(the reference's categories). At each position the highest-ranked token the model offers (after
temperature) that keeps the prefix legal is committed. The text of every slot is then checked,
and where the compiler has to change it (cut, pad, complete, fold into range, or invent a value
the model did not write) the slot is marked ``repaired``: validity earned that way is the
compiler's, and the repair rate reports it.
"""

from __future__ import annotations

import json
import math
import random
import re
import string
from bisect import bisect_left
from collections.abc import Generator as PyGenerator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any

import torch

from aod_ops.dlm.guides import (
    CategoryGuide,
    DateGuide,
    FieldGuide,
    Guides,
    NumberGuide,
    NumberRange,
    RecordGuide,
    grid_bounds,
)
from aod_ops.dlm.models import Denoiser, PromptState
from aod_ops.dlm.sampler import TOP_K, denoise, sample
from aod_ops.dlm.settings import SamplerSettings
from aod_ops.schema.nodes import (
    ArrayNode,
    ChoiceNode,
    Node,
    NumberNode,
    ObjectNode,
    StringNode,
    UnionNode,
)
from aod_ops.schema.patterns import FORMAT_PATTERNS, complete, full_match, partial_match

STRING_TOKENS = 8  # slot length of a string with no length limits
PATTERN_TOKENS = 24  # the longest a pattern slot is decoded by the model before completion
NUMBER_TOKENS = 8  # slot length of a number decoded freely (not both bounds, no guide)
UNGUIDED_DECIMALS = 3  # fraction digits of a bounded, unguided, non-integral number
MAX_MULTIPLES = 4096  # a multipleOf slot lists its legal values up to this many
DATE_LENGTH = 10  # YYYY-MM-DD
ARRAY_EXTRA_ITEMS = 3  # items past minItems when maxItems is unbounded
ANY, STRING_BODY, NUMBER_BODY = 0, 1, 2
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?")


@dataclass(eq=False)
class Slot:
    """A value slot in one record's skeleton: ``length`` mask tokens the sampler fills."""

    node: StringNode | NumberNode
    length: int
    pointer: str
    text: str = field(default="")
    repaired: bool = field(default=False)  # the compiler changed the model's text


@dataclass(eq=False)
class Choice:
    """An enum, const, boolean or null value: a choice among values, decided with the record's
    structural choices (``plan_records``)."""

    options: tuple[Any, ...]
    chosen: int = -1
    pointer: str = ""

    @cached_property
    def texts(self) -> list[str]:
        """The options as JSON text."""
        return [json.dumps(o, ensure_ascii=False) for o in self.options]


Piece = str | Slot | Choice


def slot_length(node: StringNode | NumberNode, guide: FieldGuide | None = None) -> int:
    """How many tokens the sampler gets for a value (the value, then end-of-text padding).

    A slot decoded left to right under a set of legal values gets one token per character of
    the longest legal value, and one end-of-text: any legal prefix can then be completed in the
    tokens left, since a token writes at least one character.
    """
    guide = usable_guide(node, guide)
    if isinstance(node, NumberNode):
        legal = number_legal(node, guide)
        if legal is None:
            return NUMBER_TOKENS
        return (legal.range.width if isinstance(legal, NumberLegal) else max(map(len, legal.values))) + 1
    if isinstance(guide, DateGuide):
        return DATE_LENGTH + 1
    if isinstance(guide, CategoryGuide):
        return max(len(c) for c in guide.categories if _fits(node, c)) + 1
    if node.pattern is not None:  # a token writes at least one character (ASCII patterns)
        return PATTERN_TOKENS if node.max_length is None else min(PATTERN_TOKENS, node.max_length + 1)
    n = STRING_TOKENS
    if node.max_length is not None:
        n = min(n, -(-node.max_length // 3))
    return max(n, -(-node.min_length // 3) + 1, 1)


def preview(node: Node) -> str:
    """The first characters a value of ``node`` would write: how a union branch is scored."""
    if isinstance(node, ChoiceNode):
        return json.dumps(node.options[0], ensure_ascii=False)
    if isinstance(node, StringNode):
        return '"' + (node.hints[0] if node.hints else "")
    if isinstance(node, NumberNode):
        return str(node.hints[0] if node.hints else node.minimum if node.minimum is not None else 1)
    if isinstance(node, ObjectNode):
        first = next((p for p in node.properties if p.required), None)
        return "{" + json.dumps(first.name) + ":" if first else "{"
    if isinstance(node, ArrayNode):
        return "["
    return preview(node.branches[0])


def _key(pointer: str, name: str) -> str:
    return pointer + "/" + name.replace("~", "~0").replace("/", "~1")


@dataclass(frozen=True)
class Ask:
    """A structural choice a walker puts to the model: the options' texts, scored where the
    record goes on; ``key`` names the choice within its record (a JSON pointer and what is
    asked there) and ``provisional`` is the option that lays out the least structure (skip the
    property, end the array), assumed while the choice is still open."""

    key: str
    options: list[str]
    provisional: int = 0


# A walker yields each choice and is sent back the chosen index.
Walker = PyGenerator[Ask, int, Any]


def walk(
    node: Node, plan: list[Piece], pointer: str = "", defer: bool = True, guides: Guides | None = None
) -> Walker:
    """Write one record's skeleton into ``plan``; returns its value with ``Slot`` and ``Choice``
    leaves. Value choices are left in the plan as ``Choice`` pieces unless ``defer`` is False
    (items of a unique array must know their siblings, so they are asked on the way).
    ``guides`` sets the length of guided slots."""
    if isinstance(node, ChoiceNode):
        texts = [json.dumps(o, ensure_ascii=False) for o in node.options]
        if len(texts) > 1 and defer:
            choice = Choice(node.options, pointer=pointer)
            plan.append(choice)
            return choice
        k = (yield Ask(pointer + "#value", texts)) if len(texts) > 1 else 0
        plan.append(texts[k])
        return node.options[k]
    if isinstance(node, StringNode | NumberNode):
        slot = Slot(node, slot_length(node, guides.field(pointer) if guides else None), pointer)
        plan += ['"', slot, '"'] if isinstance(node, StringNode) else [slot]
        return slot
    if isinstance(node, UnionNode):
        if not node.branches:  # nothing satisfies the schema here: write null, validation says why
            plan.append("null")
            return None
        k = (
            (yield Ask(pointer + "#branch", [preview(b) for b in node.branches]))
            if len(node.branches) > 1
            else 0
        )
        return (yield from walk(node.branches[k], plan, pointer, guides=guides))
    if isinstance(node, ObjectNode):
        return (yield from _walk_object(node, plan, pointer, guides))
    return (yield from _walk_array(node, plan, pointer, guides))


def _walk_object(node: ObjectNode, plan: list[Piece], pointer: str, guides: Guides | None) -> Walker:
    plan.append("{")
    value: dict[str, Any] = {}
    props = node.properties
    for i, prop in enumerate(props):
        sep = ", " if value else ""
        if not prop.required:
            later_required = sum(p.required for p in props[i + 1 :])
            later_optional = sum(not p.required for p in props[i + 1 :])
            full = node.max_properties is not None and len(value) + later_required >= node.max_properties
            needed = node.min_properties - len(value) - later_required > later_optional
            if full:
                continue
            key = _key(pointer, prop.name) + "#include"
            if not needed and (yield Ask(key, [sep + json.dumps(prop.name), "}"], 1)) == 1:
                continue
        plan.append(sep + json.dumps(prop.name, ensure_ascii=False) + ": ")
        value[prop.name] = yield from walk(prop.node, plan, _key(pointer, prop.name), guides=guides)
    plan.append("}")
    return value


def _walk_array(node: ArrayNode, plan: list[Piece], pointer: str, guides: Guides | None) -> Walker:
    plan.append("[")
    value: list[Any] = []
    for positional in node.prefix:
        plan.append(", " if value else "")
        value.append((yield from walk(positional, plan, f"{pointer}/{len(value)}", guides=guides)))
    most = (
        node.max_items if node.max_items is not None else max(node.min_items, len(value)) + ARRAY_EXTRA_ITEMS
    )
    contains = node.contains
    while len(value) < most:
        next_item = contains if contains is not None else node.items
        if next_item is None:
            break
        item: Node = next_item
        if node.unique and isinstance(item, ChoiceNode):
            item = ChoiceNode(tuple(o for o in item.options if o not in value))
            if not item.options:
                break
        sep = ", " if value else ""
        more = Ask(f"{pointer}/{len(value)}#more", [sep + preview(item), "]"], 1)
        if len(value) >= node.min_items and contains is None and (yield more) == 1:
            break
        plan.append(sep)
        value.append(
            (yield from walk(item, plan, f"{pointer}/{len(value)}", defer=not node.unique, guides=guides))
        )
        contains = None
    plan.append("]")
    return value


def layout_record(denoiser: Denoiser, record: Any) -> tuple[list[int], list[bool]]:
    """A known record in the layout skeleton mode generates, for training the DLM.

    Structure is literal text; each string or number value is a slot of its tokens followed by
    end-of-text padding (at least one), and the flag is True on exactly those slot tokens.
    """
    ids: list[int] = []
    flags: list[bool] = []

    def text(t: str) -> None:
        tokens = denoiser.encode(t)
        ids.extend(tokens)
        flags.extend([False] * len(tokens))

    def value_slot(t: str, length: int) -> None:
        tokens = denoiser.encode(t)
        tokens += [denoiser.eos_id] * max(1, length - len(tokens))
        ids.extend(tokens)
        flags.extend([True] * len(tokens))

    def lay(v: Any) -> None:
        if isinstance(v, dict):
            text("{")
            for i, (k, item) in enumerate(v.items()):
                text((", " if i else "") + json.dumps(k, ensure_ascii=False) + ": ")
                lay(item)
            text("}")
        elif isinstance(v, list):
            text("[")
            for i, item in enumerate(v):
                text(", " if i else "")
                lay(item)
            text("]")
        elif isinstance(v, str):
            text('"')
            value_slot(json.dumps(v, ensure_ascii=False)[1:-1], STRING_TOKENS)
            text('"')
        elif isinstance(v, bool) or v is None:
            text(json.dumps(v))
        else:
            value_slot(json.dumps(v), NUMBER_TOKENS)

    lay(record)
    return ids, flags


def fill(value: Any) -> Any:
    """The record: ``value`` with every ``Slot`` replaced by its decoded value."""
    if isinstance(value, Slot):
        return json.loads(value.text) if isinstance(value.node, NumberNode) else value.text
    if isinstance(value, Choice):
        return value.options[value.chosen]
    if isinstance(value, dict):
        return {k: fill(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v) for v in value]
    return value


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


def _fits(node: StringNode, text: str) -> bool:
    if len(text) < node.min_length or (node.max_length is not None and len(text) > node.max_length):
        return False
    return node.pattern is None or full_match(node.pattern, text)


def usable_guide(node: StringNode | NumberNode, guide: FieldGuide | None) -> FieldGuide | None:
    """``guide`` when it fits the slot's kind (a number, a date string, a categorical string
    with some category the slot allows), else None: a guide of another schema is ignored."""
    if isinstance(node, NumberNode):
        return guide if isinstance(guide, NumberGuide) else None
    if isinstance(guide, DateGuide):
        fits = node.min_length <= DATE_LENGTH <= (node.max_length or DATE_LENGTH)
        return guide if fits else None
    if isinstance(guide, CategoryGuide) and not guide.choice:
        return guide if any(_fits(node, c) for c in guide.categories) else None
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
    slot: Slot, record: RecordGuide | None, windows: Mapping[str, tuple[float, float]]
) -> Legal | None:
    """What ``slot`` may hold when decoded left to right for one record (its guide's window or
    category, its bounds, its pattern), or None when the slot is decoded freely."""
    node = slot.node
    guide = usable_guide(node, record.guides.field(slot.pointer) if record is not None else None)
    window = windows.get(slot.pointer)
    if isinstance(node, NumberNode):
        return number_legal(node, guide, window)
    if isinstance(guide, DateGuide) and window is not None:
        custom = node.pattern not in (None, FORMAT_PATTERNS["date"])
        days = range(max(1, int(window[0])), min(int(window[1]), date.max.toordinal()) + 1)
        # The season drawn for the record narrows the window to its time of year, unless no day of
        # the window is in season (the window and the season were drawn apart by the rules).
        in_season = [d for d in days if record is not None and record.in_season(slot.pointer, d)]
        dates = [date.fromordinal(d).isoformat() for d in in_season or days]
        dates = [d for d in dates if not custom or _fits(node, d)]
        if dates:
            return SetLegal(tuple(dates), numeric=True)
    if isinstance(guide, CategoryGuide) and record is not None:
        prior = record.string_prior(slot.pointer) or {}
        kept = {c: p for c, p in prior.items() if _fits(node, c)}
        if kept:
            return SetLegal(tuple(sorted(kept)), kept)
    return PatternLegal(node) if node.pattern is not None else None


@dataclass
class Vocab:
    """Per-class vocabulary masks of one denoiser: which tokens may stand in which slot."""

    denoiser: Denoiser

    @cached_property
    def class_masks(self) -> torch.Tensor:
        """``[3, V]`` bool: any token, a string's body, a number's body (each with end-of-text)."""
        texts = self.denoiser.token_texts
        special = set(self.denoiser.tokenizer.all_special_ids)
        body = [
            i not in special and t != "" and '"' not in t and "\\" not in t and t.isprintable()
            for i, t in enumerate(texts)
        ]
        digits = [i not in special and (t.isdigit() or t in ("-", ".")) for i, t in enumerate(texts)]
        masks = torch.tensor([[True] * len(texts), body, digits], device=self.denoiser.device)
        masks[:, self.denoiser.mask_id] = False
        masks[1:, self.denoiser.eos_id] = True
        return masks

    @cached_property
    def by_text(self) -> dict[str, list[int]]:
        """Ordinary tokens by their text, to list the tokens that continue a listed value."""
        skip = {*self.denoiser.tokenizer.all_special_ids, self.denoiser.mask_id}
        out: dict[str, list[int]] = {}
        for i, t in enumerate(self.denoiser.token_texts):
            if t and i not in skip:
                out.setdefault(t, []).append(i)
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of a piece of skeleton text (memoised: skeletons repeat their keys)."""
        cache = self.__dict__.setdefault("_cache", {})
        if text not in cache:
            cache[text] = self.denoiser.encode(text)
        return list(cache[text])


def _choice_length(vocab: Vocab, choice: Choice) -> int:
    return max(len(vocab.encode(t)) for t in choice.texts)


def plan_ids(vocab: Vocab, plan: list[Piece], at: list[tuple[Piece, int]] | None = None) -> list[int]:
    """The plan's token ids after the prompt, masks for open slots and undecided choices;
    ``at`` collects (piece, offset) of each slot and choice."""
    ids: list[int] = []
    for piece in plan:
        if at is not None and not isinstance(piece, str):
            at.append((piece, len(ids)))
        ids += _piece_ids(vocab, piece)
    return ids


def _piece_ids(vocab: Vocab, piece: Piece) -> list[int]:
    if isinstance(piece, str):
        return vocab.encode(piece)
    if isinstance(piece, Slot):
        return [vocab.denoiser.mask_id] * piece.length
    if piece.chosen >= 0:
        return vocab.encode(piece.texts[piece.chosen])
    return [vocab.denoiser.mask_id] * _choice_length(vocab, piece)


def _pad(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows as one ``[B, L]`` tensor on ``device``, padded, and where they are not padding."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long, device=device)
    lengths = torch.tensor([len(r) for r in rows], device=device)
    return ids, torch.arange(width, device=device)[None] < lengths[:, None]


@dataclass(frozen=True)
class _Open:
    """A choice still open in a draft: its key in the record, its options' texts, and the piece
    index its span goes before (a structural choice) or is (``choice``, a value choice)."""

    key: str
    texts: list[str]
    index: int
    choice: Choice | None = None
    provisional: int = 0


@dataclass
class _Draft:
    """One record's walk with the choices decided so far; the open structural ones take their
    provisional option."""

    plan: list[Piece]
    value: Any
    open: list[_Open]

    def layout(
        self, vocab: Vocab, budget: int | None
    ) -> tuple[list[int], list[int], list[tuple[_Open, list[list[int]], int]]]:
        """The draft's token ids; per position the end of what it may attend to (itself and
        what precedes it; an open choice's span all of itself); and each open choice with its
        options' ids and span start, in the draft's order. A structural choice's span is laid
        only while the draft stays within ``budget`` tokens (the others wait for a later round);
        a value choice's span takes the place of its masks and costs nothing."""
        den = vocab.denoiser
        room = None if budget is None else budget - len(plan_ids(vocab, self.plan))
        before: dict[int, list[_Open]] = {}
        values: dict[int, _Open] = {}
        for o in self.open:
            if o.choice is not None:
                values[o.index] = o
                continue
            width = max(len(vocab.encode(t) or [den.eos_id]) for t in o.texts)
            if room is None or width <= room:
                before.setdefault(o.index, []).append(o)
                room = None if room is None else room - width
        ids: list[int] = []
        ends: list[int] = []
        spans = []

        def span(o: _Open) -> None:
            options = [vocab.encode(t) or [den.eos_id] for t in o.texts]
            width = max(len(t) for t in options)
            spans.append((o, options, len(ids)))
            ends.extend([len(ids) + width] * width)
            ids.extend([den.mask_id] * width)

        for index, piece in enumerate([*self.plan, None]):
            for o in before.get(index, ()):
                span(o)
            if index in values:
                span(values[index])
            elif piece is not None:
                tokens = _piece_ids(vocab, piece)
                ends.extend(range(len(ids) + 1, len(ids) + len(tokens) + 1))
                ids.extend(tokens)
        return ids, ends, spans


def _replay(root: Node, guides: Guides | None, decided: dict[str, int]) -> _Draft:
    plan: list[Piece] = []
    walker = walk(root, plan, guides=guides)
    opened: list[_Open] = []
    seen: dict[str, int] = {}

    def key(name: str, options: int) -> str:
        # A key is unique within the walk: the same question asked again at one pointer (a union
        # inside a union) is counted, and a different number of options makes another question
        # (a separator before an option may differ between rounds).
        seen[name] = seen.get(name, 0) + 1
        return f"{name}#{seen[name]}/{options}"

    sent: int | None = None
    try:
        while True:
            ask = walker.send(sent) if sent is not None else next(walker)
            asked = key(ask.key, len(ask.options))
            sent = decided.get(asked, -1)
            if sent < 0:
                opened.append(_Open(asked, ask.options, len(plan), provisional=ask.provisional))
                sent = ask.provisional
    except StopIteration as done:
        value = done.value
    for index, piece in enumerate(plan):
        if isinstance(piece, Choice):
            asked = key(piece.pointer + "#choice", len(piece.options))
            piece.chosen = decided.get(asked, -1)
            if piece.chosen < 0:
                opened.append(_Open(asked, piece.texts, index, piece))
    return _Draft(plan, value, opened)


def plan_records(
    vocab: Vocab,
    prompt: PromptState,
    root: Node,
    temperature: float,
    generators: list[torch.Generator],
    guides: Guides | None = None,
    drawn: Sequence[RecordGuide | None] | None = None,
) -> list[tuple[list[Piece], Any]]:
    """Walk the tree once per generator, deciding every choice (an optional property, one more
    array item, a union branch, an enum, const or boolean value) in rounds of one forward pass
    for the whole batch.

    A round lays out each record's draft: the choices decided so far as what they chose, every
    open choice as a span of masks (a structural one followed by the structure of its
    provisional option, the least: the property skipped, the array ended). The pass scores every
    open choice's options at its span, each span attending only to the draft before it (a record
    is judged as if written left to right), and every open choice is drawn from its scores, a
    value choice's with the log prior of its record's guide (``drawn``) added. Where a draw lays
    out more than the provisional option did, the choices that brings are open in the next
    round: the rounds grow with the structure's depth, not with its number of choices. A
    record whose draws would outgrow the model's context takes that round's provisional options
    instead (it stops growing where it still fits). ``guides`` sets the length of guided slots.
    """
    den = vocab.denoiser
    decided: list[dict[str, int]] = [{} for _ in generators]
    budget = den.context - len(prompt.ids) if den.context is not None else None
    while True:
        drafts = [_replay(root, guides, d) for d in decided]
        asking = [i for i, draft in enumerate(drafts) if draft.open]
        if not asking:
            return [(draft.plan, draft.value) for draft in drafts]
        laid = {i: drafts[i].layout(vocab, budget) for i in asking}
        for i in asking:
            if not laid[i][2]:  # not one more span fits: the least structure from here on
                decided[i] |= {o.key: o.provisional for o in drafts[i].open}
        asking = [i for i in asking if laid[i][2]]
        if not asking:
            continue
        rows, ends, spans = zip(*(laid[i] for i in asking), strict=True)
        ids, attention = _pad(list(rows), den.eos_id, den.device)
        reach, _ = _pad(list(ends), 0, den.device)
        sight = torch.arange(ids.shape[1], device=den.device)[None, None, :] < reach[:, :, None]
        where = torch.zeros_like(ids, dtype=torch.bool)
        for b, found in enumerate(spans):
            for _, options, start in found:
                where[b, start : start + max(len(o) for o in options)] = True
        logprobs = torch.log_softmax(den.logits(ids, sight & attention[:, None, :], where, prompt), -1)
        offset = 0
        for b, i in enumerate(asking):
            record = drawn[i] if drawn is not None else None
            for o, options, _ in spans[b]:
                width = max(len(t) for t in options)
                scores = score_options(logprobs[offset : offset + width], options)
                offset += width
                prior = None
                if o.choice is not None and record is not None:
                    prior = record.log_prior(o.choice.pointer, o.choice.options)
                if prior is not None:
                    scores = scores + torch.tensor(prior, dtype=scores.dtype, device=scores.device)
                rows0 = torch.zeros(1, dtype=torch.long, device=scores.device)
                k, _ = sample(scores[None], rows0, temperature, [generators[i]])
                decided[i][o.key] = int(k)
            if budget is not None and len(plan_ids(vocab, _replay(root, guides, decided[i]).plan)) > budget:
                for o, _, _ in spans[b]:
                    if o.choice is None:
                        decided[i][o.key] = o.provisional


def score_options(logprobs: torch.Tensor, options: list[list[int]]) -> torch.Tensor:
    """Each option's mean log-probability over its tokens, written from the span's start."""
    return torch.stack([logprobs[range(len(o)), o].mean() for o in options]).cpu()


def infill(
    vocab: Vocab,
    prompt: PromptState,
    plans: Sequence[list[Piece]],
    settings: SamplerSettings,
    generators: list[torch.Generator],
    rngs: list[random.Random],
    guides: Sequence[RecordGuide | None] | None = None,
) -> None:
    """Fill every slot of every plan (sets ``Slot.text`` and ``Slot.repaired``) with one
    masked-diffusion run. ``guides`` holds each record's draw (after its choices are decided)."""
    den = vocab.denoiser
    rows: list[list[int]] = []
    spans: list[list[tuple[Slot, int]]] = []
    for plan in plans:
        pieces: list[tuple[Piece, int]] = []
        rows.append(plan_ids(vocab, plan, pieces))
        spans.append([(p, o) for p, o in pieces if isinstance(p, Slot)])
    ids, attention = _pad(rows, den.eos_id, den.device)
    vocab_class = torch.full_like(ids, ANY)
    owned = torch.zeros_like(ids, dtype=torch.bool)
    sequential = torch.zeros_like(ids, dtype=torch.bool)
    ordered: list[tuple[int, Slot, int, Legal]] = []
    for b, at in enumerate(spans):
        record = guides[b] if guides is not None else None
        windows = record.settle(_decided(plans[b])) if record is not None else {}
        for slot, start in at:
            legal = slot_legal(slot, record, windows)
            numeric = isinstance(slot.node, NumberNode) or (legal is not None and legal.numeric)
            vocab_class[b, start : start + slot.length] = NUMBER_BODY if numeric else STRING_BODY
            if legal is not None:
                owned[b, start : start + slot.length] = True
                ordered.append((b, slot, start, legal))
            elif isinstance(slot.node, StringNode):
                sequential[b, start : start + slot.length] = True
    hook = _LegalHook(vocab, ordered, settings.temperature, generators)
    filled = denoise(
        den,
        prompt,
        ids,
        attention,
        settings,
        generators,
        vocab_class,
        vocab.class_masks,
        (owned, hook) if ordered else None,
        sequential if settings.order == "left_to_right" else None,
    )
    legals = {id(slot): legal for _, slot, _, legal in ordered}
    for b, at in enumerate(spans):
        for slot, start in at:
            tokens = filled[b, start : start + slot.length].tolist()
            if den.eos_id in tokens:
                tokens = tokens[: tokens.index(den.eos_id)]
            text = den.decode(tokens)
            legal = legals.get(id(slot))
            if legal is not None:
                slot.text, slot.repaired = (
                    (text, False) if legal.done(text) else (legal.nearest(text, rngs[b]), True)
                )
            elif isinstance(slot.node, NumberNode):
                slot.text, slot.repaired = fit_number(text, slot.node, rngs[b])
            else:
                slot.text, slot.repaired = fit_string(text, slot.node, rngs[b])


def _decided(plan: list[Piece]) -> dict[str, Any]:
    """The values a plan's decided choices took, by JSON pointer."""
    return {p.pointer: p.options[p.chosen] for p in plan if isinstance(p, Choice) and p.chosen >= 0}


@dataclass
class _LegalHook:
    """Commits the slots with a ``Legal`` left to right, keeping each slot's text a prefix of a
    legal value: at each position the highest-ranked token (after temperature) that does."""

    vocab: Vocab
    slots: list[tuple[int, Slot, int, Legal]]
    temperature: float
    generators: list[torch.Generator]

    def __call__(
        self, logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, ids: torch.Tensor
    ) -> None:
        index = {
            (int(r), int(c)): n for n, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True))
        }
        mask, eos = self.vocab.denoiser.mask_id, self.vocab.denoiser.eos_id
        for b, slot, start, legal in self.slots:
            span = ids[b, start : start + slot.length]
            left = (span == mask).nonzero()
            if len(left) == 0:
                continue
            pos = start + int(left[0])
            prefix = span[: int(left[0])].tolist()
            ids[b, pos] = self._first_legal(logits[index[(b, pos)]], b, prefix, legal)
            if int(ids[b, pos]) == eos:
                ids[b, pos : start + slot.length] = eos

    def _first_legal(self, row: torch.Tensor, b: int, prefix: list[int], legal: Legal) -> int:
        """The best-ranked token that keeps the slot legal; end-of-text when none does (the
        slot's text is then repaired)."""
        den = self.vocab.denoiser
        eos = den.eos_id
        hot = self.temperature if self.temperature > 0 else 1.0
        noise = torch.zeros_like(row)
        if self.temperature > 0:
            u = (
                torch.rand(row.shape, generator=self.generators[b], device="cpu")
                .clamp_min(1e-20)
                .to(row.device)
            )
            noise = -torch.log(-torch.log(u))
        done = den.decode(prefix)
        listed = legal.continuations(done)
        if listed is None:
            scores = row / hot + noise
            finite = int(torch.isfinite(scores).sum())
            ranked = scores.topk(finite if legal.limit is None else min(finite, legal.limit)).indices.tolist()
        else:
            # The tokens that continue a listed value, each scored with its share of the prior.
            base = legal.weight(done)
            bias = {eos: legal.weight(done, exact=True) - base} if legal.done(done) else {}
            for value in listed:
                rest = value[len(done) :]
                for n in range(1, len(rest) + 1):
                    for token in self.vocab.by_text.get(rest[:n], ()):
                        if token not in bias:
                            bias[token] = legal.weight(done + rest[:n]) - base
            total = {t: float((row[t] + w) / hot + noise[t]) for t, w in bias.items()}
            ranked = sorted((t for t in total if total[t] > -math.inf), key=lambda t: -total[t])
        for token in ranked:
            if token == eos:
                if legal.done(done):
                    return eos
            elif legal.allows(den.decode([*prefix, token])):
                return token
        return eos
