"""``aod validate``: the GX suite and the privacy gates on each synthesized partition."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aod_ops.cli.console import console
from aod_ops.cli.observer import ConsoleObserver
from aod_ops.pipeline import validate_table

if TYPE_CHECKING:
    from aod_ops.quality import ValidationSummary


def cmd_validate(args: argparse.Namespace) -> int:
    """``aod validate``: the GX suite and privacy gates on each synthesized partition."""
    from aod_ops.spec import load_spec

    observer = ConsoleObserver(verbose=args.verbose)
    summaries = [
        validate_table(p, args.data, rows=args.rows, docs=args.docs, observer=observer)
        for p in load_spec(args.spec).select(args.partition)
    ]
    return validation_status(summaries)


def validation_status(summaries: Sequence[ValidationSummary]) -> int:
    """1 when some partition failed its validation (the last line names each), else 0."""
    failed = [summary.partition for summary in summaries if not summary.success]
    if failed:
        console.print(f"validation failed for: {', '.join(failed)}")
        return 1
    return 0
