"""``aod init``: infer a JSON Schema and a partition spec from a table (``aod_ops.infer``)."""

from __future__ import annotations

import argparse
from typing import Any

from aod_ops.cli.args import non_negative_int, positive_int
from aod_ops.infer import HOLDOUT, MAX_ENUM, MIN_ENUM_COUNT, InferSettings, init_partition


def _fraction(text: str) -> float:
    """An argparse type for the holdout share: a number from 0 up to (not including) 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def add_init_parser(sub: Any) -> None:
    """Register ``aod init`` on the subparsers ``sub``."""
    p = sub.add_parser(
        "init",
        help="write a JSON Schema and a partition spec inferred from a table",
        description="Infer a JSON Schema from a table (JSON Lines, CSV or Parquet; a path or a URI) and "
        "write it, a seeded reference/holdout split of its rows and a partition spec that `aod run` "
        "runs as it is, with TODO notes and the columns that look sensitive marked for you to check.",
    )
    p.add_argument("--from", dest="table", required=True, help="the table: .jsonl, .csv or .parquet")
    p.add_argument("--name", help="partition name (default: the table's file name)")
    p.add_argument(
        "--out", required=True, help="folder for partitions.yaml, schemas/ and data/ (a path or a URI)"
    )
    p.add_argument(
        "--holdout", type=_fraction, default=HOLDOUT, help=f"share of rows held out (default {HOLDOUT})"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the reference/holdout split (default 0)")
    p.add_argument("--rows", type=positive_int, help="target row count (default: the table's)")
    p.add_argument(
        "--max-enum",
        type=non_negative_int,
        default=MAX_ENUM,
        help=f"most distinct values of a string column written as an enum (default {MAX_ENUM}; 0: no enums)",
    )
    p.add_argument(
        "--min-enum-count",
        type=positive_int,
        default=MIN_ENUM_COUNT,
        help=f"fewest times each enum value must be seen (default {MIN_ENUM_COUNT})",
    )
    p.add_argument("--force", action="store_true", help="replace the files of an earlier aod init in --out")
    p.set_defaults(handler=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    """``aod init``: write the schema, the split and the spec; print them and the sensitive guesses."""
    result = init_partition(
        args.table,
        args.out,
        name=args.name,
        holdout=args.holdout,
        seed=args.seed,
        rows=args.rows,
        settings=InferSettings(max_enum=args.max_enum, min_enum_count=args.min_enum_count),
        force=args.force,
    )
    print(f"{result.name}: {result.table_rows} rows, {len(result.columns)} columns from {result.source}")
    print(f"  schema:    {result.schema_path}")
    print(f"  reference: {result.reference_path} ({result.reference_rows} rows)")
    if result.holdout_path is not None:
        print(f"  holdout:   {result.holdout_path} ({result.holdout_rows} rows)")
    print(f"  spec:      {result.spec_path}")
    if result.sensitive:
        print("sensitive columns guessed (check them in the spec):")
        for guess in result.sensitive:
            print(f"  {guess.column}: {guess.kind} ({guess.evidence})")
    else:
        print("sensitive columns guessed: none (add any in the spec)")
    print(f"next: fill in the TODOs, then: aod run --spec {result.spec_path} --out OUT")
    return 0
