"""``aod validate``: the GX suite and the privacy gates on each synthesized partition."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from aod_ops import storage
from aod_ops.cli.console import console
from aod_ops.errors import DataError


def cmd_validate(args: argparse.Namespace) -> int:
    """``aod validate``: the GX suite and privacy gates on each synthesized partition."""
    from aod_ops.output import MANIFEST, committed_dir
    from aod_ops.quality import validate_partition
    from aod_ops.spec import load_reference, load_spec

    spec = load_spec(args.spec)
    root = storage.locate(args.data)
    failed = []
    for p in spec.select(args.partition):
        # On an object store the manifest names the committed folder: never a run that died.
        folder = committed_dir(root, p.name)
        if folder is None or not storage.is_dir(storage.join(folder, "data")):
            where = storage.join(root, p.name)
            expected = storage.join(where, MANIFEST if storage.is_remote(root) else "data")
            raise DataError(f"{where}: no synthesized partition here (expected {expected})")
        summary = validate_partition(
            storage.join(folder, "data"),
            p.schema_path,
            load_reference(p),
            args.rows or p.rows,
            partition=p.name,
            sensitive=p.sensitive,
            thresholds=p.thresholds,
            holdout=load_reference(p, holdout=True) if p.holdout_path else None,
            rules=p.rules,
            docs_dir=storage.join(folder, "docs") if args.docs else None,
            out_dir=folder,
        )
        if args.verbose:
            table = Table(
                title=f"{p.name}: {'passed' if summary.success else 'FAILED'} ({summary.rows} rows)"
            )
            for column in ("expectation", "column", "observed", "result"):
                table.add_column(column, overflow="fold")
            for o in summary.outcomes:
                table.add_row(
                    o.expectation, o.column or "", o.observed, "pass" if o.success else "[red]FAIL[/]"
                )
            Console().print(table)
        passed = sum(o.success for o in summary.outcomes)
        console.print(
            f"{p.name}: {'passed' if summary.success else 'FAILED'}: {passed} of {len(summary.outcomes)} "
            f"checks pass on {summary.rows} rows (GX expectations and privacy gates)",
            markup=False,
            soft_wrap=True,
        )
        for o in summary.failed:
            console.print(
                f"{p.name}: failed {o.expectation} on column {o.column}: {o.observed}",
                markup=False,
                soft_wrap=True,
            )
        console.print(
            f"{p.name}: results in {summary.result_path} and {summary.privacy_report_path}",
            markup=False,
            soft_wrap=True,
        )
        if summary.docs_path:
            console.print(f"{p.name}: data docs at {summary.docs_path}", markup=False, soft_wrap=True)
        if summary.fidelity_report_path:
            console.print(
                f"{p.name}: fidelity report at {summary.fidelity_report_path}", markup=False, soft_wrap=True
            )
        if not summary.success:
            failed.append(p.name)
    if failed:
        console.print(f"validation failed for: {', '.join(failed)}")
        return 1
    return 0
