"""DiffusionGemma behind the sampler's ``Denoiser`` interface, through transformers' own
``DiffusionGemmaForBlockDiffusion``.

DiffusionGemma is not a masked-diffusion model. A causal encoder reads the prompt once into a KV
cache; a bidirectional decoder reads that cache (never writing it) and refines a canvas; its
corruption is uniform noise: a noised position holds a random token of the vocabulary, not a mask
token, and the decoder predicts the clean token at every position in place (no shift). Each
denoising step also gets the previous step's logits back (self-conditioning).

The sampler keeps the mask id as its mark of an undecided position. Here the canvas is the
record's tokens (a skeleton's literal text and every committed token, fixed) with every
undecided position holding a token drawn uniformly from the vocabulary, fresh at every pass, as
the model's own sampler renoises the positions it has not accepted. The draw is seeded from the
record's own tokens, so a record comes out the same for the same seed and never depends on its
batch neighbours. Between the passes of one ``denoise`` run (the sampler hands over its
``RecordCache``) the last pass's logits are fed back as the self-conditioning signal; a pass
without one (choices, a first step) gets none, as the model's first step does.

A record is one canvas, however long: the checkpoint's ``canvas_length`` (256) is the block
length it was trained on, and a longer record is outside its training but still runs.
"""

from __future__ import annotations

import hashlib
from copy import deepcopy
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from aod_ops.dlm.denoiser import Denoiser, PromptState, RecordCache, load_error
from aod_ops.errors import ModelError


@dataclass(frozen=True)
class EncodedPrompt(PromptState):
    """A prompt the encoder read into its KV cache (batch 1), which the decoder reads only.

    ``batched`` keeps the cache repeated for the last batch size asked for, since the sampler runs
    many passes over one batch.
    """

    cache: Any = None
    batched: dict[int, Any] = field(default_factory=dict, compare=False, repr=False)

    def for_batch(self, batch: int) -> Any:
        """The prompt's cache repeated for ``batch`` records."""
        if batch not in self.batched:
            copy = deepcopy(self.cache)
            copy.batch_repeat_interleave(batch)
            self.batched.clear()
            self.batched[batch] = copy
        return self.batched[batch]


@dataclass
class DiffusionGemmaDenoiser(Denoiser):
    """DiffusionGemma: encoder over the prompt, decoder over a noised canvas (see the module)."""

    @cached_property
    def context(self) -> int | None:
        """The most tokens (prompt and canvas) the model attends over."""
        value = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        return value if isinstance(value, int) and value > 0 else None

    @cached_property
    def noise_vocab(self) -> int:
        """Noised positions hold a token drawn uniformly from these first ids (the text vocabulary)."""
        return int(self.model.config.get_text_config().vocab_size)

    @torch.no_grad()
    def encode_prompt(self, prompt_ids: list[int]) -> PromptState:
        """The prompt's KV cache from the causal encoder, after a beginning-of-text token (and at
        least that token: the decoder reads its context from the cache)."""
        from transformers import DynamicCache

        bos = self.tokenizer.bos_token_id
        ids = list(prompt_ids)
        if bos is not None and ids[:1] != [bos]:
            ids = [int(bos), *ids]
        ids = ids or [self.eos_id]
        cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        self.model.model.encoder(input_ids=torch.tensor([ids], device=self.model.device), cache=cache)
        self.forwards += 1
        return EncodedPrompt(tuple(ids), cache=cache)

    @torch.no_grad()
    def logits(
        self,
        ids: torch.Tensor,
        attention: torch.Tensor,
        where: torch.Tensor,
        prompt: PromptState,
        cache: RecordCache | None = None,
    ) -> torch.Tensor:
        """Float logits ``[N, V]`` at the ``where`` positions from one decoder pass over the
        noised canvas (``Denoiser.logits`` says what the arguments are). With a ``cache`` the
        pass gets the last pass's logits as self-conditioning and leaves its own there.

        The decoder takes a padding mask only: a per-position ``attention`` (``[B, L, L]``) is
        read as every position seeing what any position of its record may.
        """
        if not isinstance(prompt, EncodedPrompt):
            raise TypeError("DiffusionGemma reads a prompt from its own encode_prompt")
        if attention.dim() == 3:
            attention = attention.any(1)
        batch, length = ids.shape
        n = len(prompt.ids)
        self._check_context(n, length)
        keys = torch.cat([torch.ones((batch, n), dtype=torch.bool, device=ids.device), attention], 1)
        previous = cache.self_conditioning if cache is not None else None
        if previous is not None and previous.shape[:2] != ids.shape:
            previous = None  # another batch: nothing of this one to condition on
        hidden = self.model.model(
            cache=prompt.for_batch(batch),
            decoder_input_ids=self.canvas(ids, attention),
            decoder_attention_mask=keys,
            self_conditioning_logits=previous,
        ).last_hidden_state
        self.forwards += 1
        rows, cols = where.nonzero(as_tuple=True)
        if cache is not None:
            # Every position's logits, kept in the model's dtype ([B, L, V]: the largest tensor
            # of a pass at large vocabularies); only the selected rows are returned in float.
            every = self.model.lm_head(hidden)
            cap = self.model.final_logit_softcapping
            cache.self_conditioning = every.div_(cap).tanh_().mul_(cap) if cap else every
        return self._head(hidden[rows, cols])

    def canvas(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """``ids`` with every undecided position (the mask id) holding a uniformly drawn token.

        Each record draws from a stream seeded by its own tokens (padding left out), so the draw
        is reproducible and independent of the other records of the batch.
        """
        undecided = ids == self.mask_id
        if not undecided.any():
            return ids
        noise = torch.zeros_like(ids)
        for row in undecided.any(1).nonzero()[:, 0].tolist():
            own = ids[row][attention[row]]
            digest = hashlib.blake2b(own.cpu().numpy().tobytes(), digest_size=8).digest()
            stream = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
            draw = torch.randint(self.noise_vocab, (len(own),), generator=stream)
            noise[row, attention[row]] = draw.to(ids.device)
        return torch.where(undecided, noise, ids)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output layer with the model's final soft-capping, in float."""
        logits = self.model.lm_head(hidden).float()
        cap = self.model.final_logit_softcapping
        return torch.tanh(logits / cap) * cap if cap else logits


def diffusion_gemma_denoiser(path: Path, raw: dict[str, Any]) -> DiffusionGemmaDenoiser:
    """A DiffusionGemma folder (``save_pretrained`` of ``DiffusionGemmaForBlockDiffusion``).

    The undecided mark is the tokenizer's mask token (else its unknown token), or
    ``aod_mask_token_id`` in ``config.json``: the model never sees it (noise stands there), and
    the sampler never commits it.
    """
    import transformers
    from transformers import AutoTokenizer

    try:
        from transformers import DiffusionGemmaForBlockDiffusion
    except ImportError:
        raise ModelError(
            f"model folder {path} is a DiffusionGemma checkpoint, and transformers "
            f"{transformers.__version__} has no DiffusionGemma (5.24 has)"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = DiffusionGemmaForBlockDiffusion.from_pretrained(path).eval()
    except (OSError, ValueError, KeyError) as exc:
        raise load_error(path, exc) from exc
    mark = raw.get("aod_mask_token_id", tokenizer.mask_token_id)
    mark = mark if mark is not None else tokenizer.unk_token_id
    if mark is None:
        raise ModelError(
            f"model {path} has no token to mark undecided positions (a mask or unknown token, or "
            "aod_mask_token_id in config.json)"
        )
    if tokenizer.eos_token_id is None:
        raise ModelError(f"model {path} has no end-of-text token")
    return DiffusionGemmaDenoiser(model, tokenizer, int(mark), int(tokenizer.eos_token_id), False, path.name)


def tiny_config(tokenizer: Any, text: dict[str, Any], canvas_length: int | None = None) -> Any:
    """A DiffusionGemma config for ``tokenizer`` with the text model ``text`` describes (sizes,
    layers) and a one-layer vision tower it never uses: the tests' and the GPU check's model."""
    from transformers import DiffusionGemmaConfig

    text = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
        **text,
    }
    vision = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "position_embedding_size": 64,
    }
    extra: dict[str, Any] = {} if canvas_length is None else {"canvas_length": canvas_length}
    return DiffusionGemmaConfig(text_config=text, vision_config=vision, **extra)
