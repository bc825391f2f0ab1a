"""The sampler's dual cache against full passes: speed and quality, in one run.

For every partition of the spec and every ``--modes`` mode, the DLM writes ``--candidates``
records from the static prompt (the quality benchmark's ``dlm-skeleton`` / ``dlm-free``) twice
on the same seeds: once recomputing every position on every step (``cache: false``), once with
the dual cache (``cache: true``). Both are judged with the same judge; the ratio of records/s is
the speed-up, and validity, field overlap and reward say whether the approximation costs quality.

    python bench/dual_cache.py [--partitions cars] [--modes skeleton,free] [--candidates 16]
        [--threads 2] [--out bench/results/dual_cache.json]

Writes ``--out`` and a markdown table beside it (``dual_cache.md``) for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aod_ops.dlm.generate import Generator  # noqa: E402
from aod_ops.dlm.models import load_denoiser  # noqa: E402
from aod_ops.fidelity import Yardstick  # noqa: E402
from aod_ops.schema import load_schema  # noqa: E402
from aod_ops.spec import load_reference, load_spec  # noqa: E402
from bench.quality import DEFAULT_SPEC, BenchSettings, Context, row, sample_dlm, static_prompt  # noqa: E402

COLUMNS = ("validity", "field_overlap", "diversity", "reward", "records_per_s")


def measure(
    spec_path: Path, partitions: list[str] | None, modes: list[str], settings: BenchSettings
) -> dict[str, Any]:
    """Rows of (partition, mode, cache) with the judge's metrics, and the speed-up per pair."""
    spec = load_spec(spec_path)
    chosen = [p for name in partitions for p in spec.select(name)] if partitions else list(spec.partitions)
    denoiser = load_denoiser(settings.model)
    _ = denoiser.token_texts
    load_before, started = os.getloadavg(), time.perf_counter()
    rows = []
    for partition in chosen:
        schema = load_schema(partition.schema_path)
        ctx = Context(partition, schema, load_reference(partition), [])
        yardstick = Yardstick.for_partition(partition)
        for mode in modes:
            prompt = static_prompt(ctx, mode, settings)  # type: ignore[arg-type]
            for cache in (False, True):
                cached = replace(prompt, decoding=replace(prompt.decoding, cache=cache))
                run = sample_dlm(Generator(denoiser, schema), cached, ctx, settings)
                result = row(replace(run, system=f"dlm-{mode}"), yardstick)
                rows.append({"partition": partition.name, "mode": mode, "cache": cache, **result})
                print(
                    f"{partition.name} {mode} cache={cache}: "
                    + ", ".join(f"{k} {result[k]:.3f}" for k in COLUMNS if result[k] is not None),
                    flush=True,
                )
    speedups = {
        f"{a['partition']}/{a['mode']}": b["records_per_s"] / a["records_per_s"]
        for a, b in zip(rows[::2], rows[1::2], strict=True)
    }
    return {
        "rows": rows,
        "speedup": speedups,
        "settings": {
            "spec": str(spec_path.relative_to(ROOT) if spec_path.is_relative_to(ROOT) else spec_path),
            "candidates": settings.candidates,
            "batch_size": settings.batch_size,
            "dlm": settings.model,
            "torch_threads": torch.get_num_threads(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "total_s": time.perf_counter() - started,
        },
    }


def markdown(results: dict[str, Any]) -> str:
    """The rows as a table: each pair of full passes and dual cache, with the speed-up."""
    head = "| partition | mode | cache | " + " | ".join(COLUMNS) + " | speed-up |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results["rows"]:
        cells = ["–" if r[k] is None else f"{r[k]:.2f}" for k in COLUMNS]
        speedup = results["speedup"][f"{r['partition']}/{r['mode']}"] if r["cache"] else None
        extra = f"**{speedup:.2f}x**" if speedup else ""
        lines.append(
            f"| {r['partition']} | {r['mode']} | {'dual' if r['cache'] else 'full'} | "
            + " | ".join(cells)
            + f" | {extra} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--partitions", help="comma-separated partition names (default: all)")
    parser.add_argument("--modes", default="skeleton,free", help="comma-separated: skeleton, free")
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--model", default="aod-smol-dlm")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dual_cache.json")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    if any(m not in ("skeleton", "free") for m in modes):
        parser.error(f"--modes: choose from skeleton, free, got {args.modes!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = BenchSettings(candidates=args.candidates, model=args.model)
    partitions = args.partitions.split(",") if args.partitions else None
    results = measure(args.spec, partitions, modes, settings)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
