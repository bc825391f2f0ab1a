"""``aod coverage``: one instance per schema of a folder; coverage and failure reasons by keyword."""

from __future__ import annotations

import argparse
import json
import math
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from aod_ops import storage
from aod_ops.cli.args import DEFAULT_INSTRUCTION, decoding_settings
from aod_ops.cli.console import progress_bar
from aod_ops.errors import AodError


class SchemaTimeout(Exception):
    """One schema ran past its time limit."""


@contextmanager
def time_limit(seconds: float, error: type[BaseException] = SchemaTimeout) -> Iterator[None]:
    """Raise ``error`` (its message: the limit) in this thread after ``seconds`` (Unix alarm)."""

    def fire(signum: int, frame: Any) -> None:
        raise error(f"over {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def cover_one(path: Path, generator_model: Any, settings: Any, attempts: int) -> tuple[bool, str]:
    """Try to produce one valid instance of the schema at ``path``; returns (ok, reason). The
    model's forward passes are counted on ``generator_model`` (``Denoiser.forwards``)."""
    from aod_ops.dlm.generate import Generator
    from aod_ops.dlm.prompting import render_prompt
    from aod_ops.schema import load_schema

    schema = load_schema(path)
    generator = Generator(generator_model, schema)
    assert generator.compiled is not None
    reason = ""
    for seed in range(attempts):
        (candidate,) = generator.generate(render_prompt(DEFAULT_INSTRUCTION), [seed], settings)
        if candidate.valid:
            return True, ""
        issues = schema.errors(candidate.record) if candidate.record is not None else []
        unsupported = generator.compiled.unsupported
        if not issues and unsupported:  # nothing could be built: the compiler says why
            return False, f"unsupported {unsupported[0].keyword}: {unsupported[0].reason}"
        keyword = issues[0].keyword if issues else "parse"
        if keyword in {u.keyword for u in unsupported}:
            keyword = f"unsupported {keyword}"
        reason = f"{keyword}: {candidate.errors[0]}"
    return False, reason


def cmd_coverage(args: argparse.Namespace) -> int:
    """``aod coverage``: one instance per schema, validated; coverage and reasons by keyword."""
    from aod_ops.dlm.models import load_denoiser

    files = sorted(p for d in args.schemas for p in Path(d).rglob("*.json"))
    if not files:
        raise AodError(f"no *.json schemas under {', '.join(args.schemas)}")
    denoiser = load_denoiser(args.model, args.trust_remote_code)
    settings = decoding_settings(args)
    rows: list[dict[str, Any]] = []
    with progress_bar() as bar:
        task = bar.add_task("coverage", total=len(files), status="")
        for path in files:
            started, forwards = time.perf_counter(), denoiser.forwards
            try:
                with time_limit(args.timeout_per_schema):
                    ok, reason = cover_one(path, denoiser, settings, args.attempts)
            except SchemaTimeout:
                ok, reason = False, f"timeout: over {args.timeout_per_schema:g} s"
            except AodError as e:
                ok, reason = False, f"schema: {e}"
            except Exception as e:  # a crash on one schema is a finding, not the end of the run
                ok, reason = False, f"crash: {type(e).__name__}: {e}"
            rows.append(
                {
                    "file": str(path),
                    "ok": ok,
                    "reason": reason,
                    "seconds": round(time.perf_counter() - started, 3),
                    "forward_passes": denoiser.forwards - forwards,
                }
            )
            done = sum(r["ok"] for r in rows)
            bar.update(task, advance=1, status=f"covered {done}/{len(rows)}")
    coverage = sum(r["ok"] for r in rows) / len(rows)
    summary = {
        f"{name}_{q}": quantile([r[name] for r in rows], level)
        for name in ("seconds", "forward_passes")
        for q, level in (("median", 0.5), ("p95", 0.95))
    }
    if args.json:
        storage.write_text(
            storage.locate(args.json),
            json.dumps({"coverage": coverage, "summary": summary, "schemas": rows}, indent=1),
        )
    reasons = Counter(r["reason"].split(":")[0] for r in rows if not r["ok"])
    table = Table(title=f"coverage {coverage:.3f} over {len(rows)} schemas")
    table.add_column("failure reason (keyword)")
    table.add_column("schemas", justify="right")
    for reason, count in reasons.most_common(15):
        table.add_row(reason, str(count))
    Console().print(table)
    Console().print(
        "per schema: {seconds_median:.2f} s median, {seconds_p95:.2f} s p95; forward passes "
        "{forward_passes_median:g} median, {forward_passes_p95:g} p95".format(**summary)
    )
    return 0


def quantile(values: list[float], level: float) -> float:
    """The ``level`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(level * len(ordered)) - 1))]
