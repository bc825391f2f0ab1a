"""Skeleton infilling: the compiled schema gives the structure, the model fills the values.

For each record a walker goes down the compiled node tree and writes the record's skeleton: the
literal JSON text of its structure, and a run of mask tokens for every string or number slot.
Every choice on the way (an enum value, an optional property, a union branch, one more array
item) is put to the model: the options' tokens are scored at masked positions after the
skeleton so far, and one is drawn from those scores, so a choice is always legal
(``plan_records``). Then the slots are infilled by the masked-diffusion sampler, under per-slot
vocabulary limits (``infill.py``, with the vocabulary classes of ``vocab.py``). A slot's length
(``slot_length``) leaves room for any legal value of a slot decoded left to right.
"""

from __future__ import annotations

import json
import math
from collections.abc import Generator as PyGenerator
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from aod_ops.dlm.denoiser import Denoiser, PromptState
from aod_ops.dlm.field_guides import CategoryGuide, DateGuide, FieldGuide, fits_string
from aod_ops.dlm.guides import Guides, RecordGuide
from aod_ops.dlm.legal import DATE_LENGTH, NumberLegal, number_legal, usable_guide
from aod_ops.dlm.sampler import sample
from aod_ops.dlm.text import TextGuide
from aod_ops.dlm.vocab import Vocab
from aod_ops.jsonvalues import escape_token
from aod_ops.schema.nodes import (
    ArrayNode,
    ChoiceNode,
    Node,
    NumberNode,
    ObjectNode,
    StringNode,
    UnionNode,
)

STRING_TOKENS = 8  # slot length of a string with no length limits
PATTERN_TOKENS = 24  # the longest a pattern slot is decoded by the model before completion
NUMBER_TOKENS = 8  # slot length of a number decoded freely (not both bounds, no guide)
TEXT_TOKENS = 48  # the longest slot of a guided free-text string
ARRAY_EXTRA_ITEMS = 3  # items past minItems when maxItems is unbounded


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
        return max(len(c) for c in guide.categories if fits_string(node, c)) + 1
    if isinstance(guide, TextGuide):  # most tokens write two characters or more
        most = guide.longest if node.max_length is None else min(node.max_length, guide.longest)
        return min(TEXT_TOKENS, math.ceil(most / 2) + 2)
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
    return pointer + "/" + escape_token(name)


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


def pad_rows(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
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
        ids, attention = pad_rows(list(rows), den.eos_id, den.device)
        reach, _ = pad_rows(list(ends), 0, den.device)
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
