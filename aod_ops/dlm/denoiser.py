"""The interface the masked-diffusion sampler runs: a ``Denoiser`` (a bidirectional token model
with a mask token, counted per forward pass), the prompt it encodes once (``PromptState``), the
record's key/value cache between passes (``RecordCache``), and how a model whose own code keeps no
cache is run (``FullPass``). ``models.py`` loads the backends behind it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import DynamicCache

from aod_ops.errors import ModelError


@dataclass(frozen=True)
class PromptState:
    """A prompt encoded once for many forward passes.

    The prompt attends to itself only (a prefix-LM mask), so the record's tokens never change
    it: its keys and values are computed once per prompt and reused by every step of the
    sampler, and every record of a batch. ``layers`` is None for models without the standard
    ``transformers`` body (LLaDA's own code): their prompt is prepended on every pass instead.
    """

    ids: tuple[int, ...]
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None
    last_hidden: torch.Tensor | None = None  # the prompt's last hidden state, for shifted heads


@dataclass
class RecordCache:
    """Every position's keys and values, kept between the sampler's passes so that a pass need
    recompute only a ``window`` of columns (Fast-dLLM's dual cache, arXiv 2505.22618).

    ``window`` None asks for a full pass that fills ``layers``; a window (``[B, L]`` bool, per
    record) asks for a pass over the window's columns that writes their fresh keys and values
    back. A record's positions outside its window keep the keys and values of the last pass that
    computed them: an approximation. The window is per record so that a record's draws never
    depend on what its batch neighbours did.
    """

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None
    window: torch.Tensor | None = None
    # DiffusionGemma's self-conditioning: the last pass's logits at every position ([B, L, V]),
    # fed back into the next pass over the same records.
    self_conditioning: torch.Tensor | None = None


@dataclass(frozen=True)
class FullPass:
    """How a model whose own code keeps no reusable cache is run: whole, on prompt and record, at
    every pass, with the attention mask that code takes.

    ``padding``: a ``[B, T]`` 1/0 mask, attention both ways (LLaDA). ``square``: a
    ``[B, 1, T, T]`` bool mask, attention both ways (Dream). ``blocks``: a ``[B, 1, T, T]`` 1/0
    mask in the model's dtype, block-causal over blocks of ``block`` positions counted from the
    prompt's first token, with position ids (LLaDA2's block diffusion: a block attends to itself
    and the blocks before it). Padding is never attended to.
    """

    mask: Literal["padding", "square", "blocks"] = "padding"
    block: int = 32


def _key_values(cache: Any) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Every layer's keys and values from a ``transformers`` cache."""
    return tuple((layer.keys, layer.values) for layer in cache.layers)


@dataclass
class Denoiser:
    """A bidirectional token model with a mask token, counted per forward pass."""

    model: Any
    tokenizer: Any
    mask_id: int
    eos_id: int
    shift: bool
    name: str
    forwards: int = field(default=0)
    # None: the model has transformers' own body and runs the cached path; else its own code
    # runs whole at every pass.
    full_pass: FullPass | None = field(default=None)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are: every tensor the sampler builds for it lives there."""
        return torch.device(self.model.get_input_embeddings().weight.device)

    @cached_property
    def context(self) -> int | None:
        """The most tokens (prompt and record) the model attends over, None when its config does
        not say."""
        for name in ("max_position_embeddings", "max_sequence_length", "n_positions"):
            value = getattr(self.model.config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def _body(self) -> tuple[Any, Any] | None:
        """transformers' body (``cache=`` in, ``.cache`` and ``.last_hidden_state`` out) and the
        output layer, for the cached path; None for a model run whole (``full_pass``)."""
        if self.full_pass is not None:
            return None
        body, head = getattr(self.model, "model", None), self.model.get_output_embeddings()
        return (body, head) if body is not None and head is not None else None

    def _check_context(self, prompt: int, record: int) -> None:
        if self.context is not None and prompt + record > self.context:
            raise ModelError(
                f"{self.name}: a record of this schema outgrows the model's context of {self.context} tokens "
                f"({prompt} prompt tokens and {record} record tokens so far); the schema asks for longer "
                "records (minItems, minProperties, minLength, required properties) than the model can write"
            )

    @torch.no_grad()
    def encode_prompt(self, prompt_ids: list[int]) -> PromptState:
        """The prompt's keys and values (one forward pass), for ``logits``."""
        parts = self._body()
        if parts is None or not prompt_ids:
            return PromptState(tuple(prompt_ids))
        device = parts[1].weight.device
        ids = torch.tensor([prompt_ids], device=device)
        square = torch.ones((1, 1, len(prompt_ids), len(prompt_ids)), dtype=torch.bool, device=device)
        out = parts[0](input_ids=ids, attention_mask=square, use_cache=True)
        self.forwards += 1
        return PromptState(tuple(prompt_ids), _key_values(out.cache), out.last_hidden_state[:, -1])

    @torch.no_grad()
    def logits(
        self,
        ids: torch.Tensor,
        attention: torch.Tensor,
        where: torch.Tensor,
        prompt: PromptState,
        cache: RecordCache | None = None,
    ) -> torch.Tensor:
        """Float logits ``[N, V]`` for the ``N`` positions where ``where`` (``[B, L]`` bool) is set.

        ``ids`` are the tokens after ``prompt``; row n of the result scores the token at the
        n-th selected position (in ``where.nonzero()`` order). ``attention`` is ``[B, L]`` bool,
        False on padding, or ``[B, L, L]``: what each position may attend to (a model run by its
        own code with a padding mask sees every position that any may). Passing a 4D mask makes
        the model attend both ways (transformers uses a 4D mask as given). Only the selected
        positions go through the output layer, which is most of the memory at large
        vocabularies.

        With a ``cache`` whose ``window`` is None the pass is a full one and stores every
        position's keys and values in it; with a ``window`` (and stored layers) only the window's
        columns are recomputed (and written back) and every other position's keys and values come
        from the cache: ``where`` must then lie inside the window.
        """
        batch, length = ids.shape
        n = len(prompt.ids)
        self._check_context(n, length)
        rows, cols = where.nonzero(as_tuple=True)
        device = ids.device
        per_query = attention if attention.dim() == 3 else None
        if per_query is not None:
            attention = per_query.any(1)
        keys = torch.cat([torch.ones((batch, n), dtype=torch.bool, device=device), attention], 1)
        if self.full_pass is not None:
            return self._own_code_logits(ids, keys, rows, cols, prompt, self.full_pass, per_query)
        parts = self._body()
        self.forwards += 1
        if prompt.layers is None or parts is None:
            start = torch.tensor([prompt.ids], dtype=torch.long, device=device).expand(batch, n)
            full = torch.cat([start, ids], 1)
            mask = keys[:, None, None, :].expand(batch, 1, n + length, n + length).clone()
            mask[:, :, :n, n:] = False  # the prompt attends to itself only, as in the cached path
            if per_query is not None:
                mask[:, 0, n:, n:] = per_query
            at = (n + cols - int(self.shift)).clamp_min(0)
            if parts is None:
                return self.model(input_ids=full, attention_mask=mask).logits[rows, at].float()
            hidden = parts[0](input_ids=full, attention_mask=mask).last_hidden_state
            return parts[1](hidden[rows, at]).float()
        if cache is not None and cache.window is not None and cache.layers is not None:
            assert per_query is None, "a window pass attends as the full pass before it did"
            return self._window_logits(ids, attention, rows, cols, prompt, cache)
        past = DynamicCache(config=self.model.config)
        for i, (k, v) in enumerate(prompt.layers):
            past.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), i)
        positions = torch.arange(n, n + length, device=device)[None].expand(batch, length)
        mask = keys[:, None, None, :].expand(batch, 1, length, n + length)
        if per_query is not None:
            mask = torch.cat([mask[:, :, :, :n], per_query[:, None]], 3)
        hidden = parts[0](
            input_ids=ids, attention_mask=mask, cache=past, position_ids=positions
        ).last_hidden_state
        if cache is not None:
            cache.layers = _key_values(past)
        if self.shift:
            assert prompt.last_hidden is not None
            first = prompt.last_hidden[:, None].expand(batch, 1, hidden.shape[-1])
            hidden = torch.cat([first, hidden[:, :-1]], 1)
        return parts[1](hidden[rows, cols]).float()

    def _own_code_logits(
        self,
        ids: torch.Tensor,
        keys: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        prompt: PromptState,
        run: FullPass,
        per_query: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits at ``(rows, cols)`` from the model's own forward over prompt and record.

        ``keys`` (``[B, T]`` bool) is False on padding. The prompt attends to the record as in
        the family's own sampler: LLaDA and Dream attend both ways over the whole sequence,
        LLaDA2 block-causally. ``per_query`` (``[B, L, L]``) narrows what each record position
        sees where the family's mask is 4D (Dream, LLaDA2), the prompt then seeing only itself;
        LLaDA's 2D mask cannot say it.
        """
        batch, n, total, device = ids.shape[0], len(prompt.ids), keys.shape[1], ids.device
        start = torch.tensor([prompt.ids], dtype=torch.long, device=device).expand(batch, n)
        extra: dict[str, torch.Tensor] = {}
        if run.mask == "padding":
            mask = keys.long()
        else:
            # Every query row keeps the prompt's keys or the record's, so no row is all False
            # (NaN in attention); a padding row keeps them all.
            square = keys[:, None, None, :].expand(batch, 1, total, total).clone()
            if per_query is not None:  # and the prompt, which every position sees, sees only itself
                square[:, 0, n:, n:] &= per_query | ~keys[:, n:, None]
                square[:, 0, :n, n:] = False
            if run.mask == "blocks":
                block = torch.arange(total, device=device) // run.block
                square &= (block[None, :] <= block[:, None])[None, None]
                extra["position_ids"] = torch.arange(total, device=device)[None].expand(batch, total)
            mask = square if run.mask == "square" else square.to(self.model.dtype)
        self.forwards += 1
        out = self.model(input_ids=torch.cat([start, ids], 1), attention_mask=mask, use_cache=False, **extra)
        return out.logits[rows, (n + cols - int(self.shift)).clamp_min(0)].float()

    def _window_logits(
        self,
        ids: torch.Tensor,
        attention: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        prompt: PromptState,
        cache: RecordCache,
    ) -> torch.Tensor:
        """Logits at ``(rows, cols)`` from a pass over the cache's window columns only.

        A shifted head reads the prediction for column c at c-1, so that column runs too. The
        batch runs the union of its records' columns; each record attends to the fresh keys and
        values of its own columns and to the cached ones of every other column, and its fresh
        ones replace the cached ones.
        """
        body, head = self._body()  # type: ignore[misc]
        assert cache.layers is not None and cache.window is not None
        layers, window = cache.layers, cache.window
        batch, length = ids.shape
        n = len(prompt.ids)
        fresh = window.clone()
        if self.shift:
            fresh[:, :-1] |= window[:, 1:]
        run = fresh.any(0).nonzero()[:, 0]
        past = DynamicCache(config=self.model.config)
        for i, (k, v) in enumerate(layers):
            past.update(k, v, i)
        cached = torch.cat(
            [torch.ones((batch, n), dtype=torch.bool, device=ids.device), attention & ~fresh], 1
        )
        keys = torch.cat([cached, (attention & fresh)[:, run]], 1)
        mask = keys[:, None, None, :].expand(batch, 1, len(run), keys.shape[1])
        positions = (n + run)[None].expand(batch, len(run))
        hidden = body(
            input_ids=ids[:, run], attention_mask=mask, cache=past, position_ids=positions
        ).last_hidden_state
        mine = fresh[:, run][:, None, :, None]  # [B, 1, R, 1]: the record's own columns
        for (k, v), (new_k, new_v) in zip(layers, _key_values(past), strict=True):
            # In place: the stored tensors belong to this cache alone (the full pass made them).
            k[:, :, n + run] = torch.where(mine, new_k[:, :, -len(run) :], k[:, :, n + run])
            v[:, :, n + run] = torch.where(mine, new_v[:, :, -len(run) :], v[:, :, n + run])
        index = torch.full((length,), -1, dtype=torch.long, device=ids.device)
        index[run] = torch.arange(len(run), device=ids.device)
        if not self.shift:
            return head(hidden[rows, index[cols]]).float()
        assert prompt.last_hidden is not None
        picked = hidden[rows, index[(cols - 1).clamp_min(0)]]
        first = prompt.last_hidden.expand(len(rows), -1)
        return head(torch.where((cols == 0)[:, None], first, picked)).float()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``."""
        return str(self.tokenizer.decode(ids))

    @cached_property
    def token_texts(self) -> list[str]:
        """The text of every token id, for building per-slot vocabulary constraints."""
        return [self.tokenizer.decode([i]) for i in range(self.vocab_size)]

    @cached_property
    def vocab_size(self) -> int:
        """Rows of the output layer (may exceed the tokenizer's length)."""
        return int(self.model.get_output_embeddings().weight.shape[0])


def load_error(path: Path, exc: BaseException) -> ModelError:
    """A folder transformers could not load, as one line naming it (no traceback)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelError(f"model folder {path}: cannot load it: {first}")
