"""The DLM's dtype on this CPU: fp32 against bf16, in one run.

``aod_ops.hf.fast_dtype`` runs models in bf16 only where the CPU's oneDNN has native bf16 kernels
(AVX-512 or AMX); elsewhere bf16 is emulated. This measures what that choice is worth here: a
matrix product of the size of one MLP layer of a batch, and one full forward pass of the DLM over
a batch of skeleton records of a partition (the sampler's costliest call), each in both dtypes.

    python bench/dtype.py [--partition cars] [--batch-size 16] [--repeats 3] [--threads 2]
        [--model aod-smol-dlm] [--out bench/results/dtype.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aod_ops.dlm.models import load_denoiser  # noqa: E402
from aod_ops.dlm.skeleton import layout_record  # noqa: E402
from aod_ops.hf import fast_dtype  # noqa: E402
from aod_ops.schema import load_schema  # noqa: E402
from aod_ops.spec import load_reference, load_spec  # noqa: E402
from bench.quality import DEFAULT_SPEC, BenchSettings, Context, static_prompt  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def best_seconds(call: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls, after one untimed warm-up."""
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(
    spec_path: Path, partition_name: str, batch_size: int, repeats: int, model: str
) -> dict[str, Any]:
    """Seconds of a matrix product and of a full DLM pass in each dtype, and their ratios."""
    partition = next(iter(load_spec(spec_path).select(partition_name)))
    schema = load_schema(partition.schema_path)
    ctx = Context(partition, schema, load_reference(partition), [])
    denoiser = load_denoiser(model)
    settings = BenchSettings(candidates=batch_size, batch_size=batch_size, model=model)
    prompt_text = static_prompt(ctx, "skeleton", settings).render(schema.contents)
    laid = [layout_record(denoiser, record) for record in ctx.reference[:batch_size]]
    width = max(len(tokens) for tokens, _ in laid)
    ids = torch.full((len(laid), width), denoiser.eos_id)
    attention = torch.zeros_like(ids, dtype=torch.bool)
    for b, (tokens, values) in enumerate(laid):
        ids[b, : len(tokens)] = torch.tensor(tokens)
        ids[b, : len(tokens)][torch.tensor(values)] = denoiser.mask_id
        attention[b, : len(tokens)] = True
    where = ids == denoiser.mask_id
    positions = ids.numel()
    hidden = denoiser.model.config.hidden_size
    inner = denoiser.model.config.intermediate_size
    rows = []
    loaded = next(denoiser.model.parameters()).dtype  # restored after: built-ins load once
    for name, dtype in DTYPES.items():
        a, w = torch.randn(positions, hidden, dtype=dtype), torch.randn(inner, hidden, dtype=dtype)
        matmul_s = best_seconds(lambda a=a, w=w: a @ w.T, repeats * 10)
        denoiser.model.to(dtype)
        state = denoiser.encode_prompt(denoiser.encode(prompt_text))
        pass_s = best_seconds(lambda state=state: denoiser.logits(ids, attention, where, state), repeats)
        rows.append(
            {
                "dtype": name,
                "matmul_gflops": 2 * positions * hidden * inner / matmul_s / 1e9,
                "full_pass_s": pass_s,
            }
        )
        print(f"{name}: matmul {rows[-1]['matmul_gflops']:.1f} GFLOPS, full pass {pass_s:.2f} s", flush=True)
    denoiser.model.to(loaded)
    fp32, bf16 = rows
    return {
        "rows": rows,
        "bf16_over_fp32_pass_s": bf16["full_pass_s"] / fp32["full_pass_s"],
        "fast_dtype": str(fast_dtype()).removeprefix("torch."),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "settings": {
            "partition": partition.name,
            "batch_size": len(laid),
            "record_tokens": int(ids.shape[1]),
            "prompt_tokens": len(denoiser.encode(prompt_text)),
            "repeats": repeats,
            "dlm": model,
            "torch_threads": torch.get_num_threads(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--partition", default="cars")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="aod-smol-dlm")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dtype.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = measure(args.spec, args.partition, args.batch_size, args.repeats, args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"bf16 / fp32 seconds per full pass: {results['bf16_over_fp32_pass_s']:.2f}; "
        f"fast_dtype here: {results['fast_dtype']} (CPU capability {results['cpu_capability']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
