"""Records per second of the DLM on embedded Ray with 1 and 2 actors, and in-process, in one run.

Every configuration generates the same candidates (the same seeds, prompt, batch size and one
torch thread per generator), so the figures compare the execution only:

- ``in_process``: ``Generator.generate`` called directly, batch after batch.
- ``ray_1_actor`` / ``ray_2_actors``: the ``DLMGenerator`` stage on an embedded Ray (a fresh
  local instance with 2 CPUs), read back in order through ``adapter.stream``.

Throughput is the steady state: records of the batches after the warm-up divided by the time
between the warm-up's end and the last batch (model loading and actor start-up are reported
apart, as ``startup_s``). The floors: two actors at least 1.6x one actor, and one actor at most
15 % slower than in-process. The machine's load average is recorded before and after, since a
busy machine moves every figure.

    python bench/ray_scaling.py [--model smollm2-bidir] [--partition seattle-weather]
        [--batch-size 8] [--batches 4] [--out bench/results/ray_scaling.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from aod_ops.agents.prompt import initial_prompt
from aod_ops.dlm.generate import Generator, record_seed
from aod_ops.dlm.models import load_denoiser
from aod_ops.ray import adapter
from aod_ops.ray.generator import DLMGenerator
from aod_ops.schema import load_schema
from aod_ops.spec import load_reference, load_spec

ROOT = Path(__file__).resolve().parent.parent
MIN_SPEEDUP = 1.6
MAX_OVERHEAD = 0.15


def _rate(arrivals: list[tuple[float, int]], warmup: int) -> dict[str, float]:
    """Steady-state records/s from ``(time, records)`` per batch, the first ``warmup`` batches
    (and the start-up before them) left out."""
    start = arrivals[warmup - 1][0]
    records = sum(n for _, n in arrivals[warmup:])
    seconds = arrivals[-1][0] - start
    return {"records": records, "seconds": round(seconds, 3), "records_per_s": round(records / seconds, 4)}


def _rounded(values: tuple[float, ...]) -> list[float]:
    return [round(v, 2) for v in values]


def in_process(job: dict[str, Any], batches: int, warmup: int) -> dict[str, Any]:
    """The generator called directly in this process with one torch thread."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    generator = Generator(load_denoiser(job["model"]), job["schema"])
    arrivals = [(time.perf_counter(), 0)]
    for seeds in job["batches"][: batches + warmup]:
        generator.generate(job["prompt"], seeds, job["decoding"])
        arrivals.append((time.perf_counter(), len(seeds)))
    arrivals = arrivals[1:]
    return {**_rate(arrivals, warmup), "startup_s": round(arrivals[warmup - 1][0] - started, 3)}


def on_ray(job: dict[str, Any], actors: int, batches: int, warmup: int) -> dict[str, Any]:
    """The DLMGenerator stage on ``actors`` actors (one CPU and one thread each)."""
    # Each actor's first batch carries its model load: the warm-up is one batch per actor.
    warmup = warmup * actors
    seeds = [s for batch in job["batches"][: batches + warmup] for s in batch]
    items = [{"index": i, "seed": s} for i, s in enumerate(seeds)]
    kwargs = {
        "schema": job["schema"],
        "model": job["model"],
        "trust_remote_code": False,
        "prompt": job["prompt"],
        "decoding": job["decoding"],
        "threads": 1,
    }
    stage = adapter.Stage(DLMGenerator, kwargs, actors=actors, batch_size=job["batch_size"], num_cpus=1.0)
    started = time.perf_counter()
    arrivals = [(time.perf_counter(), b.num_rows) for b in adapter.stream(items, job["batch_size"], [stage])]
    return {**_rate(arrivals, warmup), "startup_s": round(arrivals[warmup - 1][0] - started, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=str(ROOT / "examples" / "partitions.yaml"))
    parser.add_argument("--partition", default="seattle-weather")
    parser.add_argument("--model", default="smollm2-bidir")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=4, help="measured batches per actor")
    parser.add_argument("--warmup", type=int, default=1, help="batches per actor left out of the rate")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ray_scaling.json"))
    args = parser.parse_args(argv)

    (partition,) = load_spec(args.spec).select(args.partition)
    schema = load_schema(partition.schema_path)
    prompt = initial_prompt(partition, schema.contents, load_reference(partition))
    total = (args.batches + args.warmup) * 2  # enough seeds for two actors
    seeds = [record_seed(partition.seed, i) for i in range(total * args.batch_size)]
    job = {
        "schema": schema,
        "model": args.model,
        "prompt": prompt.render(schema.contents),
        "decoding": prompt.decoding,
        "batch_size": args.batch_size,
        "batches": [seeds[i : i + args.batch_size] for i in range(0, len(seeds), args.batch_size)],
    }
    load_before = os.getloadavg()
    results: dict[str, Any] = {"in_process": in_process(job, args.batches, args.warmup)}
    results["in_process"]["load_1min_after"] = round(os.getloadavg()[0], 2)
    print(f"in-process: {results['in_process']}", file=sys.stderr)
    with adapter.session("local"):  # a fresh embedded instance, never a cluster already running here
        for actors, name in ((1, "ray_1_actor"), (2, "ray_2_actors")):
            # Two actors get twice the batches, so each actor does the same work as the one actor.
            results[name] = on_ray(job, actors, args.batches * actors, args.warmup)
            results[name]["load_1min_after"] = round(os.getloadavg()[0], 2)
            print(f"{name}: {results[name]}", file=sys.stderr)
    load_after = os.getloadavg()
    speedup = results["ray_2_actors"]["records_per_s"] / results["ray_1_actor"]["records_per_s"]
    overhead = 1 - results["ray_1_actor"]["records_per_s"] / results["in_process"]["records_per_s"]
    report = {
        "command": "python bench/ray_scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "load_average": {"before": _rounded(load_before), "after": _rounded(load_after)},
        "settings": {
            "model": args.model,
            "partition": args.partition,
            "batch_size": args.batch_size,
            "measured_batches_per_actor": args.batches,
            "warmup_batches_per_actor": args.warmup,
            "threads_per_generator": 1,
        },
        "results": results,
        "speedup_2_vs_1_actor": round(speedup, 3),
        "ray_overhead_vs_in_process": round(overhead, 3),
        "floors": {
            f"speedup >= {MIN_SPEEDUP}": speedup >= MIN_SPEEDUP,
            f"overhead <= {MAX_OVERHEAD}": overhead <= MAX_OVERHEAD,
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if all(report["floors"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
