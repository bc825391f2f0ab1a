"""``aod optimize`` (run or resume the AoD loop per partition) and ``aod report`` (plot its rounds)."""

from __future__ import annotations

import argparse
from typing import Any

from aod_ops.cli.args import add_model_args, check_trusted_model, non_negative_int, positive_int
from aod_ops.cli.observer import ConsoleObserver
from aod_ops.pipeline import LoopOptions, optimize_prompt, with_dlm


def cmd_optimize(args: argparse.Namespace) -> int:
    """``aod optimize``: run or resume the AoD loop for each selected partition."""
    from aod_ops.spec import load_spec

    check_trusted_model(args)
    loop = LoopOptions(
        rounds=args.rounds,
        candidates=args.candidates,
        proposals=args.proposals,
        agent_calls=args.agent_calls,
        restart=args.restart,
    )
    observer = ConsoleObserver()
    for partition in load_spec(args.spec).select(args.partition):
        partition = with_dlm(partition, args.model, args.trust_remote_code)
        optimize_prompt(partition, args.out, loop, observer=observer)
    return 0


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

    ConsoleObserver().reported(write_report(args.dir))
    return 0


def add_report_parser(sub: Any) -> None:
    """Register ``aod report`` on the subparsers ``sub``."""
    p = sub.add_parser("report", help="plot the AoD loop's reward and metrics per round (PNG + HTML)")
    p.add_argument(
        "dir", help="an `aod optimize --out` folder or URI, or one partition's run directory in it"
    )
    p.set_defaults(handler=cmd_report)
