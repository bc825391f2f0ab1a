"""Infilling a skeleton's value slots with one masked-diffusion run.

A slot with a known set of legal values is decoded left to right, its text kept a prefix of a
legal value (``Legal``, in ``legal.py``): a pattern or format; a number with both bounds, or with
a value guide's window (``guides.py``); a guided date (the ISO dates of its window) or
low-cardinality string (the reference's categories); a guided free-text string (its drawn shape,
with the guide's prior over tokens added to the model's). At each
position the highest-ranked token the model offers (after temperature) that keeps the prefix
legal is committed. The text of every slot is then checked,
and where the compiler has to change it (cut, pad, complete, fold into range, or invent a value
the model did not write) the slot is marked ``repaired``: validity earned that way is the
compiler's, and the repair rate reports it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from aod_ops.dlm.denoiser import PromptState
from aod_ops.dlm.guides import RecordGuide
from aod_ops.dlm.legal import Legal, TextLegal, fit_number, fit_string, slot_legal
from aod_ops.dlm.sampler import denoise
from aod_ops.dlm.settings import SamplerSettings
from aod_ops.dlm.skeleton import Choice, Piece, Slot, pad_rows, plan_ids
from aod_ops.dlm.vocab import ANY, NUMBER_BODY, STRING_BODY, Vocab
from aod_ops.schema.nodes import NumberNode, StringNode


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
    ids, attention = pad_rows(rows, den.eos_id, den.device)
    vocab_class = torch.full_like(ids, ANY)
    owned = torch.zeros_like(ids, dtype=torch.bool)
    sequential = torch.zeros_like(ids, dtype=torch.bool)
    ordered: list[tuple[int, Slot, int, Legal]] = []
    for b, at in enumerate(spans):
        record = guides[b] if guides is not None else None
        windows = record.settle(_decided(plans[b])) if record is not None else {}
        for slot, start in at:
            legal = slot_legal(slot.node, slot.pointer, record, windows)
            numeric = isinstance(slot.node, NumberNode) or (legal is not None and legal.numeric)
            vocab_class[b, start : start + slot.length] = NUMBER_BODY if numeric else STRING_BODY
            if legal is not None:
                owned[b, start : start + slot.length] = True
                ordered.append((b, slot, start, legal))
            # Free text, guided or not, is written a token a step (under ``left_to_right``).
            if isinstance(legal, TextLegal) or (legal is None and isinstance(slot.node, StringNode)):
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
                fixed = text if legal.done(text) else legal.nearest(text, rngs[b])
                slot.text, slot.repaired = fixed, fixed != text
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
    legal value: at each position the highest-ranked token (after temperature) that does, at
    every position of the slot that has logits at this step (``denoise`` says which)."""

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
            # The slot's first masks that have logits at this step, each token chosen legal after
            # the ones chosen before it.
            pos = start + int(left[0])
            while pos < start + slot.length and (b, pos) in index:
                prefix = ids[b, start:pos].tolist()
                ids[b, pos] = self._first_legal(logits[index[(b, pos)]], b, prefix, legal)
                if int(ids[b, pos]) == eos:
                    ids[b, pos : start + slot.length] = eos
                    break
                pos += 1

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
        if isinstance(legal, TextLegal):
            row = self.vocab.text_scores(legal, row, done)
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
