"""Records per second of the DLM on embedded Ray with 1 and 2 actors, and in-process, in one run.

Every configuration generates the same candidates (the same seeds, prompt, batch size and one
torch thread per generator), so the figures compare the execution only:

- ``in_process``: ``Generator.generate`` called directly, batch after batch.
- ``ray_1_actor`` / ``ray_2_actors``: the ``DLMGenerator`` stage on an embedded Ray (a fresh
  local instance with 2 CPUs), read back in order through ``adapter.stream``.

Throughput is the steady state: each generator's first batch (model loading, first pass) is
left out, and the window runs from the start of the first remaining batch (the wall clock inside
the worker) to the moment the last batch is in the caller's hands, so Ray's scheduling and the
transfer of results count against it. Start-up (actors, model loads) is reported apart, as
``startup_s``. The floors: two actors at least 1.6x one actor, and one actor at most
15 % slower than in-process. The machine's load average is recorded before and after, since a
busy machine moves every figure.

    python bench/ray_scaling.py [--model aod-smol-dlm] [--partition seattle-weather]
        [--batch-size 8] [--batches 4] [--out bench/results/ray_scaling.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
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


@dataclass(frozen=True)
class _Batch:
    """One generated batch: who made it, when it started (wall clock), when its records were in
    the caller's hands, and how many records it held."""

    worker: int
    started: float
    delivered: float
    records: int


def _rate(batches: list[_Batch], warmup: int) -> dict[str, float]:
    """Steady-state records/s: each worker's first ``warmup`` batches (its model load and first
    pass) are left out; the window runs from the first remaining batch's start to the last
    delivery, so Ray's scheduling and transfer of results stay inside it."""
    kept: list[_Batch] = []
    for worker in {b.worker for b in batches}:
        kept += sorted((b for b in batches if b.worker == worker), key=lambda b: b.started)[warmup:]
    records = sum(b.records for b in kept)
    seconds = max(b.delivered for b in kept) - min(b.started for b in kept)
    return {"records": records, "seconds": round(seconds, 3), "records_per_s": round(records / seconds, 4)}


def _rounded(values: tuple[float, ...]) -> list[float]:
    return [round(v, 2) for v in values]


def in_process(job: dict[str, Any], batches: int, warmup: int) -> dict[str, Any]:
    """The generator called directly in this process with one torch thread."""
    torch.set_num_threads(1)
    began = time.time()
    generator = Generator(load_denoiser(job["model"]), job["schema"])
    timed = []
    for seeds in job["batches"][: batches + warmup]:
        started = time.time()
        generator.generate(job["prompt"], seeds, job["decoding"])
        timed.append(_Batch(os.getpid(), started, time.time(), len(seeds)))
    return {**_rate(timed, warmup), "startup_s": round(timed[warmup - 1].delivered - began, 3)}


class TimedGenerator(DLMGenerator):
    """``DLMGenerator`` that also says which process made a batch and when it started."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.time()
        out = super().__call__(batch)
        out = out.append_column("worker", pa.array([os.getpid()] * out.num_rows, pa.int64()))
        return out.append_column("started", pa.array([started] * out.num_rows, pa.float64()))


def on_ray(job: dict[str, Any], actors: int, batches: int, warmup: int) -> dict[str, Any]:
    """The generator stage on ``actors`` actors (one CPU and one thread each)."""
    seeds = [s for batch in job["batches"][: batches + warmup * actors] for s in batch]
    items = [{"index": i, "seed": s} for i, s in enumerate(seeds)]
    kwargs = {
        "schema": job["schema"],
        "model": job["model"],
        "trust_remote_code": False,
        "prompt": job["prompt"],
        "decoding": job["decoding"],
        "threads": 1,
    }
    stage = adapter.Stage(TimedGenerator, kwargs, actors=actors, batch_size=job["batch_size"], num_cpus=1.0)
    began = time.time()
    timed = [
        _Batch(out["worker"][0].as_py(), out["started"][0].as_py(), time.time(), out.num_rows)
        for out in adapter.stream(items, job["batch_size"], [stage])
    ]
    first = min(b.delivered for b in timed)
    return {
        **_rate(timed, warmup),
        "startup_s": round(first - began, 3),
        "workers": len({b.worker for b in timed}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=str(ROOT / "examples" / "partitions.yaml"))
    parser.add_argument("--partition", default="seattle-weather")
    parser.add_argument("--model", default="aod-smol-dlm")
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
