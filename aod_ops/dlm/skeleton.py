"""Skeleton infilling: the compiled schema gives the structure, the model fills the values.

For each record a walker goes down the compiled node tree and writes the record's skeleton: the
literal JSON text of its structure, and a run of mask tokens for every string or number slot.
Every choice on the way (an enum value, an optional property, a union branch, one more array
item) is put to the model: the options' tokens are scored at masked positions after the
skeleton so far, and one is drawn from those scores, so a choice is always legal. Then the
slots are infilled by the masked-diffusion sampler, under per-slot vocabulary limits; a slot
with a pattern or a format is decoded left to right so its text stays a prefix of a match.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Generator as PyGenerator
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from aod_ops.dlm.models import Denoiser, PromptState
from aod_ops.dlm.sampler import denoise, sample
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
from aod_ops.schema.patterns import complete, full_match, partial_match

STRING_TOKENS = 8  # slot length of a string with no length limits
PATTERN_TOKENS = 24  # the longest a pattern slot is decoded by the model before completion
NUMBER_TOKENS = 8
ARRAY_EXTRA_ITEMS = 3  # items past minItems when maxItems is unbounded
TAIL_MASKS = 4  # masks after a choice's span: the record goes on after it
ANY, STRING_BODY, NUMBER_BODY = 0, 1, 2
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(eq=False)
class Slot:
    """A value slot in one record's skeleton: ``length`` mask tokens the sampler fills."""

    node: StringNode | NumberNode
    length: int
    pointer: str
    text: str = field(default="")


@dataclass(eq=False)
class Choice:
    """An enum, const, boolean or null value, decided for all records in one joint pass once
    their structure is fixed (``decide_choices``), rather than one forward pass each."""

    options: tuple[Any, ...]
    chosen: int = -1

    @cached_property
    def texts(self) -> list[str]:
        """The options as JSON text."""
        return [json.dumps(o, ensure_ascii=False) for o in self.options]


Piece = str | Slot | Choice


def slot_length(node: StringNode | NumberNode) -> int:
    """How many tokens the sampler gets for a value (the value, then end-of-text padding)."""
    if isinstance(node, NumberNode):
        if node.minimum is None or node.maximum is None:
            return NUMBER_TOKENS
        # Every token of a slot costs compute at every step: bounded numbers get the digits
        # their bounds allow, three decimals when not integral, and one end-of-text.
        digits = len(str(int(max(abs(node.minimum), abs(node.maximum)))))
        return min(NUMBER_TOKENS, digits + (node.minimum < 0) + (0 if node.integer else 3) + 1)
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


# A walker yields the options of each choice (their texts) and is sent back the chosen index.
Walker = PyGenerator[list[str], int, Any]


def walk(node: Node, plan: list[Piece], pointer: str = "", defer: bool = True) -> Walker:
    """Write one record's skeleton into ``plan``; returns its value with ``Slot`` and ``Choice``
    leaves. Value choices are deferred to ``decide_choices`` unless ``defer`` is False (items of
    a unique array must know their siblings)."""
    if isinstance(node, ChoiceNode):
        texts = [json.dumps(o, ensure_ascii=False) for o in node.options]
        if len(texts) > 1 and defer:
            choice = Choice(node.options)
            plan.append(choice)
            return choice
        k = (yield texts) if len(texts) > 1 else 0
        plan.append(texts[k])
        return node.options[k]
    if isinstance(node, StringNode | NumberNode):
        slot = Slot(node, slot_length(node), pointer)
        plan += ['"', slot, '"'] if isinstance(node, StringNode) else [slot]
        return slot
    if isinstance(node, UnionNode):
        if not node.branches:  # nothing satisfies the schema here: write null, validation says why
            plan.append("null")
            return None
        k = (yield [preview(b) for b in node.branches]) if len(node.branches) > 1 else 0
        return (yield from walk(node.branches[k], plan, pointer))
    if isinstance(node, ObjectNode):
        return (yield from _walk_object(node, plan, pointer))
    return (yield from _walk_array(node, plan, pointer))


def _walk_object(node: ObjectNode, plan: list[Piece], pointer: str) -> Walker:
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
            if not needed and (yield [sep + json.dumps(prop.name), "}"]) == 1:
                continue
        plan.append(sep + json.dumps(prop.name, ensure_ascii=False) + ": ")
        value[prop.name] = yield from walk(prop.node, plan, _key(pointer, prop.name))
    plan.append("}")
    return value


def _walk_array(node: ArrayNode, plan: list[Piece], pointer: str) -> Walker:
    plan.append("[")
    value: list[Any] = []
    for positional in node.prefix:
        plan.append(", " if value else "")
        value.append((yield from walk(positional, plan, f"{pointer}/{len(value)}")))
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
        if len(value) >= node.min_items and contains is None and (yield [sep + preview(item), "]"]) == 1:
            break
        plan.append(sep)
        value.append((yield from walk(item, plan, f"{pointer}/{len(value)}", defer=not node.unique)))
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


def fit_string(text: str, node: StringNode, rng: random.Random) -> str:
    """The model's text made to fit the slot: cleaned, within its lengths, matching its pattern."""
    text = "".join(ch for ch in text if ch.isprintable()).strip()
    if node.pattern is not None:
        if full_match(node.pattern, text) and len(text) >= node.min_length:
            return text
        while text and not partial_match(node.pattern, text):
            text = text[:-1]
        for prefix in (text, ""):
            done = complete(node.pattern, prefix, rng, node.min_length, node.max_length)
            if done is not None:
                return done
        return text
    if node.max_length is not None and len(text) > node.max_length:
        text = text[: node.max_length].rstrip()
    while len(text) < node.min_length:
        text += rng.choice(string.ascii_lowercase)
    return text


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


def fit_number(text: str, node: NumberNode, rng: random.Random) -> str:
    """The model's digits made into a legal number: within bounds, a multiple, integral."""
    lo, hi = _bounds(node)
    found = _NUMBER.search(text)
    if found is not None:
        v = float(found.group())
    elif node.hints:
        v = float(node.hints[0])
    else:
        v = rng.uniform(lo if lo is not None else 0.0, hi if hi is not None else (lo or 0.0) + 100.0)
    # Fold a value outside the bounds back inside rather than clamping it, so out-of-range
    # guesses do not pile up on the boundary.
    if lo is not None and hi is not None:
        v = lo if hi <= lo else lo + (v - lo) % (hi - lo)
    elif lo is not None and v < lo:
        v = 2 * lo - v
    elif hi is not None and v > hi:
        v = 2 * hi - v
    if node.integer:
        v = float(round(v))
    if node.multiple_of:
        # jsonschema checks a float multipleOf as int(v / m) == v / m in floating point, so the
        # candidate multiples are checked the same way and written without rounding.
        m = node.multiple_of
        base = round(v / m)
        for k in sorted(range(base - 50, base + 51), key=lambda k: abs(k - base)):
            cand = k * m
            if (lo is None or cand >= lo) and (hi is None or cand <= hi) and int(cand / m) == cand / m:
                return str(int(cand)) if node.integer else json.dumps(cand)
    if node.integer:
        return str(int(v))
    return json.dumps(round(v, 6))


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
        masks = torch.tensor([[True] * len(texts), body, digits])
        masks[:, self.denoiser.mask_id] = False
        masks[1:, self.denoiser.eos_id] = True
        return masks

    def encode(self, text: str) -> list[int]:
        """Token ids of a piece of skeleton text (memoised: skeletons repeat their keys)."""
        cache = self.__dict__.setdefault("_cache", {})
        if text not in cache:
            cache[text] = self.denoiser.encode(text)
        return list(cache[text])


def _choice_length(vocab: Vocab, choice: Choice) -> int:
    return max(len(vocab.encode(t)) for t in choice.texts)


def _plan_ids(vocab: Vocab, plan: list[Piece], at: list[tuple[Piece, int]] | None = None) -> list[int]:
    """The plan's token ids after the prompt, masks for open slots and undecided choices;
    ``at`` collects (piece, offset) of each slot and choice."""
    mask = vocab.denoiser.mask_id
    ids: list[int] = []
    for piece in plan:
        if isinstance(piece, str):
            ids += vocab.encode(piece)
            continue
        if at is not None:
            at.append((piece, len(ids)))
        if isinstance(piece, Slot):
            ids += [mask] * piece.length
        elif piece.chosen >= 0:
            ids += vocab.encode(piece.texts[piece.chosen])
        else:
            ids += [mask] * _choice_length(vocab, piece)
    return ids


def _pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        attention[i, : len(r)] = True
    return ids, attention


def plan_records(
    vocab: Vocab,
    prompt: PromptState,
    root: Node,
    temperature: float,
    generators: list[torch.Generator],
) -> list[tuple[list[Piece], Any]]:
    """Walk the tree once per generator; each round of pending choices is one forward pass."""
    den = vocab.denoiser
    plans: list[list[Piece]] = [[] for _ in generators]
    walkers = [walk(root, plan) for plan in plans]
    values: list[Any] = [None] * len(walkers)
    pending: dict[int, list[str]] = {}

    def advance(i: int, sent: int | None) -> None:
        try:
            pending[i] = walkers[i].send(sent) if sent is not None else next(walkers[i])
        except StopIteration as done:
            pending.pop(i, None)
            values[i] = done.value

    for i in range(len(walkers)):
        advance(i, None)
    while pending:
        order = sorted(pending)
        options = [[vocab.encode(t) or [den.eos_id] for t in pending[i]] for i in order]
        spans = [max(len(o) for o in opts) for opts in options]
        rows = [_plan_ids(vocab, plans[i]) for i in order]
        starts = [len(r) for r in rows]
        rows = [r + [den.mask_id] * (s + TAIL_MASKS) for r, s in zip(rows, spans, strict=True)]
        ids, attention = _pad(rows, den.eos_id)
        where = torch.zeros_like(ids, dtype=torch.bool)
        for b, (start, span) in enumerate(zip(starts, spans, strict=True)):
            where[b, start : start + span] = True
        logprobs = torch.log_softmax(den.logits(ids, attention, where, prompt), -1)
        offset = 0
        for b, i in enumerate(order):
            lp = logprobs[offset : offset + spans[b]]
            offset += spans[b]
            scores = score_options(lp, options[b])
            k, _ = sample(scores[None], torch.tensor([0]), temperature, [generators[i]])
            advance(i, int(k))
    return list(zip(plans, values, strict=True))


def score_options(logprobs: torch.Tensor, options: list[list[int]]) -> torch.Tensor:
    """Each option's mean log-probability over its tokens, written from the span's start."""
    return torch.tensor([float(logprobs[range(len(o)), o].mean()) for o in options])


def decide_choices(
    vocab: Vocab,
    prompt: PromptState,
    plans: Sequence[list[Piece]],
    temperature: float,
    generators: list[torch.Generator],
) -> None:
    """Decide every deferred value choice of every plan in one forward pass."""
    den = vocab.denoiser
    rows, choices = [], []
    for plan in plans:
        at: list[tuple[Piece, int]] = []
        rows.append(_plan_ids(vocab, plan, at))
        choices.append([(p, o) for p, o in at if isinstance(p, Choice)])
    if not any(choices):
        return
    ids, attention = _pad(rows, den.eos_id)
    where = torch.zeros_like(ids, dtype=torch.bool)
    for b, found in enumerate(choices):
        for choice, start in found:
            where[b, start : start + _choice_length(vocab, choice)] = True
    logprobs = torch.log_softmax(den.logits(ids, attention, where, prompt), -1)
    index = {(int(r), int(c)): n for n, (r, c) in enumerate(where.nonzero().tolist())}
    for b, found in enumerate(choices):
        for choice, start in found:
            span = logprobs[index[(b, start)] : index[(b, start)] + _choice_length(vocab, choice)]
            scores = score_options(span, [vocab.encode(t) for t in choice.texts])
            k, _ = sample(scores[None], torch.tensor([0]), temperature, [generators[b]])
            choice.chosen = int(k)


def infill(
    vocab: Vocab,
    prompt: PromptState,
    plans: Sequence[list[Piece]],
    settings: SamplerSettings,
    generators: list[torch.Generator],
    rngs: list[random.Random],
) -> None:
    """Fill every slot of every plan (sets ``Slot.text``) with one masked-diffusion run."""
    den = vocab.denoiser
    rows: list[list[int]] = []
    spans: list[list[tuple[Slot, int]]] = []
    for plan in plans:
        pieces: list[tuple[Piece, int]] = []
        rows.append(_plan_ids(vocab, plan, pieces))
        spans.append([(p, o) for p, o in pieces if isinstance(p, Slot)])
    ids, attention = _pad(rows, den.eos_id)
    vocab_class = torch.full_like(ids, ANY)
    owned = torch.zeros_like(ids, dtype=torch.bool)
    patterned: list[tuple[int, Slot, int]] = []
    for b, at in enumerate(spans):
        for slot, start in at:
            cls = NUMBER_BODY if isinstance(slot.node, NumberNode) else STRING_BODY
            vocab_class[b, start : start + slot.length] = cls
            if isinstance(slot.node, StringNode) and slot.node.pattern is not None:
                owned[b, start : start + slot.length] = True
                patterned.append((b, slot, start))
    hook = _PatternHook(den, patterned, settings.temperature, generators)
    filled = denoise(
        den,
        prompt,
        ids,
        attention,
        settings,
        generators,
        vocab_class,
        vocab.class_masks,
        (owned, hook) if patterned else None,
    )
    for b, at in enumerate(spans):
        for slot, start in at:
            tokens = filled[b, start : start + slot.length].tolist()
            if den.eos_id in tokens:
                tokens = tokens[: tokens.index(den.eos_id)]
            text = den.decode(tokens)
            if isinstance(slot.node, NumberNode):
                slot.text = fit_number(text, slot.node, rngs[b])
            else:
                slot.text = fit_string(text, slot.node, rngs[b])


@dataclass
class _PatternHook:
    """Commits pattern slots left to right, keeping each slot's text a prefix of a match."""

    den: Denoiser
    slots: list[tuple[int, Slot, int]]
    temperature: float
    generators: list[torch.Generator]

    def __call__(
        self, logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, ids: torch.Tensor
    ) -> None:
        index = {
            (int(r), int(c)): n for n, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True))
        }
        mask, eos = self.den.mask_id, self.den.eos_id
        for b, slot, start in self.slots:
            span = ids[b, start : start + slot.length]
            left = (span == mask).nonzero()
            if len(left) == 0:
                continue
            pos = start + int(left[0])
            prefix = span[: int(left[0])].tolist()
            ranked = self._ranked(logits[index[(b, pos)]], b)
            ids[b, pos] = self._first_legal(ranked, prefix, slot.node)
            if int(ids[b, pos]) == eos:
                ids[b, pos : start + slot.length] = eos

    def _ranked(self, row: torch.Tensor, b: int) -> list[int]:
        top = row.topk(64)
        scores = top.values
        if self.temperature > 0:
            u = torch.rand(scores.shape, generator=self.generators[b]).clamp_min(1e-20)
            scores = scores / self.temperature - torch.log(-torch.log(u))
        return top.indices[scores.argsort(descending=True)].tolist()

    def _first_legal(self, ranked: list[int], prefix: list[int], node: StringNode | NumberNode) -> int:
        assert isinstance(node, StringNode) and node.pattern is not None
        eos = self.den.eos_id
        done = self.den.decode(prefix)
        for token in ranked:
            if token == eos:
                if full_match(node.pattern, done) and len(done) >= node.min_length:
                    return eos
                continue
            text = self.den.decode([*prefix, token])
            if (node.max_length is None or len(text) <= node.max_length) and partial_match(
                node.pattern, text
            ):
                return token
        return eos  # nothing the model likes fits: the pattern's completion takes over
