"""``aod optimize`` (run or resume the AoD loop per partition) and ``aod report`` (plot its rounds)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aod_ops import storage
from aod_ops.cli.args import add_model_args, check_trusted_model, non_negative_int, positive_int
from aod_ops.cli.console import console, progress_bar

if TYPE_CHECKING:
    from aod_ops.loop import RoundRecord
    from aod_ops.spec import Partition


def round_line(partition: str, record: RoundRecord) -> str:
    """One line per round: round, reward, quality and detection AUC beside the held-out rows',
    validity, TSR, field overlap, accepted or not, time, and what stood in for a down agent."""
    best = record.best
    metrics = best.metrics
    table, real = best.scores["table"], best.scores["holdout"]
    if record.accepted is None:
        outcome = f"kept v{best.prompt.version}" if record.proposals else "no proposals"
    else:
        outcome = f"accepted v{record.accepted} ({best.source})"
    line = (
        f"{partition} round {record.number}: reward {best.reward:.3f}  "
        f"quality {table['quality']:.2f} (real {real['quality']:.2f})  "
        f"detection AUC {table['detection_auc']:.2f} (real {real['detection_auc']:.2f})  "
        f"validity {metrics.validity:.2f}  TSR {metrics.tsr:.2f}  "
        f"field overlap {metrics.field_overlap:.2f} (real {real['field_overlap']:.2f})  "
        f"{outcome}  {record.seconds:.1f} s"
    )
    return line + "".join(f"  {note}" for note in record.fallbacks)  # what stood in for a down agent


def cmd_optimize(args: argparse.Namespace) -> int:
    """``aod optimize``: run or resume the AoD loop for each selected partition."""
    from aod_ops.spec import DLMSetting, load_spec

    check_trusted_model(args)
    for partition in load_spec(args.spec).select(args.partition):
        if args.model is not None:
            # The whole setting is replaced: the spec's trust belongs to the spec's model only.
            dlm = DLMSetting(model=args.model, trust_remote_code=args.trust_remote_code)
            partition = replace(partition, dlm=dlm)
        optimize_one(args, partition)
    return 0


def optimize_one(args: argparse.Namespace, partition: Partition) -> None:
    """Optimize one partition, with a progress bar and a line per round."""
    from aod_ops.loop import optimize_partition

    loop = partition.loop
    rounds = args.rounds or loop.rounds
    k, m = args.candidates or loop.candidates, args.proposals or loop.proposals
    dlm = partition.dlm.model + (f" at {partition.dlm.base_url}" if partition.dlm.base_url else "")
    console.print(
        f"{partition.name}: up to {rounds} rounds of {m} proposals x {k} candidates, "
        f"DLM {dlm} -> {storage.join(storage.locate(args.out), partition.name)}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    with progress_bar() as bar:
        # An upper bound: the run may stop early, or resume with rounds already done.
        task = bar.add_task(f"{partition.name} records", total=k * (1 + m * rounds), status="")

        def on_round(record: RoundRecord) -> None:
            bar.console.print(
                round_line(partition.name, record), markup=False, highlight=False, soft_wrap=True
            )
            bar.update(task, status=f"round {record.number}: reward {record.best.reward:.3f}")

        result = optimize_partition(
            partition,
            args.out,
            rounds=args.rounds,
            candidates=args.candidates,
            proposals=args.proposals,
            agent_calls=args.agent_calls,
            restart=args.restart,
            on_round=on_round,
            on_batch=lambda n: bar.update(task, advance=n),
        )
    if result.resumed:
        console.print(
            f"{partition.name}: rounds 1-{result.resumed} were read back from {result.run_dir}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"{partition.name}: best reward {result.best_reward:.3f} (prompt v{result.best_prompt.version}) "
        f"after {len(result.rounds)} round(s), stopped: {result.stop} -> {result.prompt_path}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def add_optimize_parser(sub: Any) -> None:
    """Register ``aod optimize`` on the subparsers ``sub``."""
    p = sub.add_parser("optimize", help="optimize each partition's DLM prompt with the AoD loop")
    p.add_argument("--spec", required=True, help="partition spec (YAML)")
    p.add_argument("--partition", help="only this partition (default: all, one after another)")
    p.add_argument(
        "--out", required=True, help="output folder or URI (s3://...): one run directory per partition"
    )
    p.add_argument("--rounds", type=positive_int, help="most rounds (default: the spec's loop.rounds)")
    p.add_argument(
        "--candidates", type=positive_int, help="candidates sampled per prompt (default: the spec's)"
    )
    p.add_argument("--proposals", type=positive_int, help="revised prompts per round (default: the spec's)")
    add_model_args(p)
    p.add_argument(
        "--agent-calls",
        type=non_negative_int,
        help="agent chat calls per round for proposals (default: all asked with an endpoint agent, "
        "none with the local SmolLM2, whose proposals the deterministic editor writes)",
    )
    p.add_argument("--restart", action="store_true", help="discard a recorded run instead of resuming it")
    p.set_defaults(handler=cmd_optimize)


def cmd_report(args: argparse.Namespace) -> int:
    """``aod report``: plot reward and metrics per round into the folder."""
    from aod_ops.report import write_report

    report = write_report(args.dir)
    console.print(
        f"report of {', '.join(report.partitions)}: {report.png} and {report.html}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return 0


def add_report_parser(sub: Any) -> None:
    """Register ``aod report`` on the subparsers ``sub``."""
    p = sub.add_parser("report", help="plot the AoD loop's reward and metrics per round (PNG + HTML)")
    p.add_argument(
        "dir", help="an `aod optimize --out` folder or URI, or one partition's run directory in it"
    )
    p.set_defaults(handler=cmd_report)
