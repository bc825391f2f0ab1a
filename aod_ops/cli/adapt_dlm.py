"""``aod adapt-dlm``: train the masked-diffusion adapter on a corpus (``aod_ops.dlm.adapt``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from aod_ops.cli.console import console


def cmd_adapt_dlm(args: argparse.Namespace) -> int:
    """``aod adapt-dlm``: train the masked-diffusion adapter on a corpus (resumable)."""
    from aod_ops.dlm.adapt import adapt

    result = adapt(Path(args.corpus), Path(args.out), args.minutes, args.device, max_steps=args.max_steps)
    console.print(
        f"{result.steps} steps in {result.minutes:.1f} min; held-out masked CE "
        f"{result.heldout_ce_initial} -> {result.heldout_ce}; the model is {result.out_dir}: "
        f"use it as --model {result.out_dir} (or dlm: {result.out_dir} in a spec)",
        markup=False,
        highlight=False,
    )
    return 0
