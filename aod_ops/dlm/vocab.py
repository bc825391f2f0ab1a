"""The vocabulary of one denoiser as the skeleton sampler needs it.

``Vocab`` holds per-class masks (``ANY``, ``STRING_BODY``, ``NUMBER_BODY``: which tokens may
stand in which slot), the ordinary tokens by their text and by their first character (to list
the tokens that continue a legal value), a free-text guide's bias and word prior over the tokens
(``text_scores``), and the memoised token ids of skeleton text (``encode``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from aod_ops.dlm.denoiser import Denoiser
from aod_ops.dlm.legal import WORD_NOVEL, TextLegal, WordPrior
from aod_ops.dlm.text import TextGuide

ANY, STRING_BODY, NUMBER_BODY = 0, 1, 2


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

    def text_bias(self, guide: TextGuide) -> torch.Tensor:
        """``[V]``, added to the model's scores in a slot the text guide steers: minus infinity
        for a token that writes a character the field does not use, ``WORD_NOVEL`` for the others
        when the guide has words (``text_scores`` lifts those that write toward one), and 0 for
        end-of-text, where the shape and the model decide the value ends."""
        cache = self.__dict__.setdefault("_text_bias", {})
        if guide not in cache:
            den = self.denoiser
            chars = set(guide.chars)
            usable = torch.tensor([bool(t) and set(t) <= chars for t in den.token_texts], device=den.device)
            bias = torch.full((len(usable),), WORD_NOVEL if guide.words else 0.0, device=den.device)
            bias[den.eos_id] = 0.0
            usable[den.eos_id] = True
            cache[guide] = bias.masked_fill(~usable, float("-inf"))
        return cache[guide]

    @cached_property
    def by_first_char(self) -> dict[str, torch.Tensor]:
        """Ordinary tokens by the first character they write."""
        out: dict[str, list[int]] = {}
        for text, tokens in self.by_text.items():
            out.setdefault(text[0], []).extend(tokens)
        return {c: torch.tensor(t, device=self.denoiser.device) for c, t in out.items()}

    def text_scores(self, legal: TextLegal, row: torch.Tensor, text: str) -> torch.Tensor:
        """The model's scores ``row`` at the next position of a guided text slot that holds
        ``text``: the guide's characters and words applied (``text_bias``, ``WordPrior``), and
        every token whose first character the slot's shape cannot take next set to minus
        infinity, so that the ranked tokens the sampler tries are nearly all legal."""
        guide = legal.guide
        row = row + self.text_bias(guide)
        starts = self.by_first_char
        follow = [starts[c] for c in guide.chars if c in starts and legal.allows(text + c)]
        keep = torch.zeros_like(row, dtype=torch.bool)
        keep[self.denoiser.eos_id] = True
        if follow:
            keep[torch.cat(follow)] = True
        row = row.masked_fill(~keep, float("-inf"))
        if guide.words:
            priors = self.__dict__.setdefault("_word_priors", {})
            if guide not in priors:
                priors[guide] = WordPrior(guide.words, self.by_text)
            scores = priors[guide].scores(text)
            if scores:
                tokens = torch.tensor(list(scores), device=row.device)
                lift = torch.tensor(list(scores.values()), device=row.device, dtype=row.dtype) - WORD_NOVEL
                row[tokens] += lift
        return row

    def encode(self, text: str) -> list[int]:
        """Token ids of a piece of skeleton text (memoised: skeletons repeat their keys)."""
        cache = self.__dict__.setdefault("_cache", {})
        if text not in cache:
            cache[text] = self.denoiser.encode(text)
        return list(cache[text])
