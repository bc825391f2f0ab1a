"""``aod synthesize``: the pipeline's synthesis step (``aod_ops.pipeline.synthesize_tables``), or
the same command submitted to a cluster as a Ray job (``aod_ops.ray.jobs``).

``add_synthesize_parser`` registers the subcommand on the ``aod`` parser; Ray is imported only
when the command runs, so the other commands start fast and run without it.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from rich.console import Console

from aod_ops.cli.args import add_model_args, check_trusted_model, non_negative_number, positive_int
from aod_ops.cli.observer import ConsoleObserver
from aod_ops.pipeline import synthesize_tables


def add_synthesize_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``synthesize`` to the ``aod`` subcommands (``sub`` is from ``add_subparsers``)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "synthesize",
        help="synthesize each partition's target rows on Ray into Parquet",
        description="Generate exactly --rows valid rows per partition with a pool of DLM actors on Ray "
        "(embedded unless --ray-address or RAY_ADDRESS names a cluster), judge them, and write "
        "OUT/<partition>/data, OUT/<partition>/quarantine and OUT/<partition>/report.json.",
    )
    p.add_argument("--spec", required=True, help="partition spec (YAML; a path or a URI)")
    p.add_argument(
        "--out",
        required=True,
        help="output folder or URI, e.g. s3://bucket/prefix (one subfolder per partition)",
    )
    p.add_argument("--partition", help="only this partition")
    p.add_argument("--rows", type=positive_int, help="target rows per partition (default: the spec's rows)")
    p.add_argument(
        "--actors",
        type=positive_int,
        help="a fixed pool of this many DLM actors (default: an autoscaling pool, see --min-actors)",
    )
    p.add_argument(
        "--min-actors",
        type=positive_int,
        help="fewest DLM actors (default: one per GPU, else one per CPU, the cluster has now; at most 8)",
    )
    p.add_argument(
        "--max-actors",
        type=positive_int,
        help="most DLM actors: the pool grows to it while the cluster or its autoscaler has room "
        "(default: --min-actors)",
    )
    p.add_argument(
        "--gpus-per-actor",
        type=non_negative_number,
        help="GPUs per DLM actor; above 0 asks for GPUs: a cluster with none that cannot get any is "
        "an error; 0 runs on CPUs (default: 1 when the cluster has GPUs, else 0)",
    )
    p.add_argument(
        "--gpu-wait",
        type=non_negative_number,
        metavar="SECONDS",
        help="with --gpus-per-actor, how long a joined cluster without GPUs gets to add some "
        "through its autoscaler (default 600)",
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=16, help="candidates per model batch (default 16)"
    )
    p.add_argument(
        "--threads-per-actor", type=positive_int, help="torch CPU threads (and CPUs reserved) per actor"
    )
    p.add_argument("--prompt-dir", help="folder (or URI) with <partition>/prompt.json from the AoD loop")
    add_model_args(p)
    p.add_argument(
        "--dlm-base-url",
        help="with --model: an OpenAI-compatible server (e.g. SGLang) that serves it, free mode only",
    )
    p.add_argument(
        "--dlm-api-key-env",
        metavar="NAME",
        help="with --dlm-base-url: the environment variable holding the server's API key",
    )
    p.add_argument(
        "--max-candidates", type=positive_int, help="candidate budget per partition (default: 10 per row)"
    )
    p.add_argument("--allow-partial", action="store_true", help="keep the rows made when the budget runs out")
    p.add_argument(
        "--ray-address",
        help="Ray cluster: a dashboard URL (http://head:8265) submits a Ray job through the Jobs API; "
        "another address is joined (default: RAY_ADDRESS, else embedded Ray)",
    )
    p.set_defaults(handler=cmd_synthesize)
    return p


#: The options that a Ray job (``SynthesisJob``) and a run in this process (``SynthesisOptions``)
#: both take, under the names the command parses them by: a job runs with every one of them.
_SHARED_OPTIONS = (
    "rows",
    "actors",
    "min_actors",
    "max_actors",
    "gpus_per_actor",
    "batch_size",
    "threads_per_actor",
    "max_candidates",
    "allow_partial",
    "prompt_dir",
    "model",
    "trust_remote_code",
    "dlm_base_url",
    "dlm_api_key_env",
)


def cmd_synthesize(args: argparse.Namespace) -> int:
    """``aod synthesize``: 0 when every partition was written, 1 when some failed (the others
    were written, and each failure is listed with its reason).

    A dashboard address (``http(s)://host:8265``) submits the run as a Ray job through the Jobs
    API instead and waits for it; any other address is joined as a Ray client.
    """
    check_trusted_model(args)
    shared = {name: getattr(args, name) for name in _SHARED_OPTIONS}
    if args.ray_address and args.ray_address.startswith(("http://", "https://")):
        from aod_ops.ray.jobs import RayJobs, SynthesisJob, run_synthesis_job

        job = SynthesisJob(args.spec, args.out, args.partition, gpu_wait=args.gpu_wait, **shared)
        token = os.environ.get("RAY_AUTH_TOKEN")  # a cluster with token authentication
        headers = {"Authorization": f"Bearer {token}"} if token else None
        run_synthesis_job(RayJobs(args.ray_address, headers=headers), job, echo=Console(stderr=True).print)
        return 0
    from aod_ops.ray.plan import GPU_WAIT_S, SynthesisOptions
    from aod_ops.ray.synthesize import SynthesisFailed

    options = SynthesisOptions(
        gpu_wait_s=GPU_WAIT_S if args.gpu_wait is None else args.gpu_wait,
        ray_address=args.ray_address,
        **shared,
    )
    try:
        synthesize_tables(
            args.spec, args.out, partition=args.partition, options=options, observer=ConsoleObserver()
        )
    except SynthesisFailed:
        return 1  # the observer listed each failure
    return 0
