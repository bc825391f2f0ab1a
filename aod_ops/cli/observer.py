"""``ConsoleObserver``: the pipeline's steps as the ``aod`` commands show them.

The console (stderr) gets a heading per step of ``aod run``, a progress bar per loop and per
synthesis, a line per loop round, and a few lines per partition written or validated; stdout
gets the synthesis' summary table and, with ``-v``, each validation's checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from aod_ops.cli.console import console, progress_bar
from aod_ops.pipeline import LoopOptions, Observer
from aod_ops.storage import Location

if TYPE_CHECKING:
    from aod_ops.loop import LoopResult, RoundRecord
    from aod_ops.quality import ValidationSummary
    from aod_ops.ray.synthesize import PartitionFailure, PartitionResult
    from aod_ops.ray.synthesize import Progress as Step
    from aod_ops.report import Report
    from aod_ops.spec import Partition


def say(text: str) -> None:
    """One line on the console, as written (no markup, no highlighting, never wrapped)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


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


class ConsoleObserver(Observer):
    """Shows each step on the console while it runs.

    :param verbose: print every validation check and its result, not only the failures.
    """

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self._bar: Progress | None = None  # the bar of the loop or synthesis running now
        self._tasks: dict[str, TaskID] = {}  # its task per partition

    def step(self, name: str) -> None:
        """A heading: ``aod <step>``."""
        console.rule(f"aod {name}")

    @contextmanager
    def _showing(self) -> Iterator[Progress]:
        with progress_bar() as bar:
            self._bar, self._tasks = bar, {}
            try:
                yield bar
            finally:
                self._bar = None

    @contextmanager
    def optimizing(self, partition: Partition, run_dir: Location, loop: LoopOptions) -> Iterator[None]:
        """What the loop will do at most, then a bar of the records it samples."""
        settings = partition.loop
        rounds = loop.rounds or settings.rounds
        k, m = loop.candidates or settings.candidates, loop.proposals or settings.proposals
        dlm = partition.dlm.model + (f" at {partition.dlm.base_url}" if partition.dlm.base_url else "")
        plan = f"up to {rounds} rounds of {m} proposals x {k} candidates"
        say(f"{partition.name}: {plan}, DLM {dlm} -> {run_dir}")
        with self._showing() as bar:
            # An upper bound: the run may stop early, or resume with rounds already done.
            total = k * (1 + m * rounds)
            self._tasks[partition.name] = bar.add_task(f"{partition.name} records", total=total, status="")
            yield

    def round_done(self, partition: str, record: RoundRecord) -> None:
        """The round's line, above the bar."""
        assert self._bar is not None
        self._bar.console.print(round_line(partition, record), markup=False, highlight=False, soft_wrap=True)
        self._bar.update(
            self._tasks[partition], status=f"round {record.number}: reward {record.best.reward:.3f}"
        )

    def batch_done(self, partition: str, candidates: int) -> None:
        """The bar moves on."""
        assert self._bar is not None
        self._bar.update(self._tasks[partition], advance=candidates)

    def optimized(self, result: LoopResult) -> None:
        """The rounds read back, the best reward and where the prompt is."""
        if result.resumed:
            say(f"{result.partition}: rounds 1-{result.resumed} were read back from {result.run_dir}")
        best = f"best reward {result.best_reward:.3f} (prompt v{result.best_prompt.version})"
        rounds = f"after {len(result.rounds)} round(s), stopped: {result.stop}"
        say(f"{result.partition}: {best} {rounds} -> {result.prompt_path}")

    def reported(self, report: Report) -> None:
        """Where the plot is."""
        say(f"report of {', '.join(report.partitions)}: {report.png} and {report.html}")

    @contextmanager
    def synthesizing(self) -> Iterator[None]:
        """A bar per partition."""
        with self._showing():
            yield

    def progress(self, step: Step) -> None:
        """The partition's bar: valid rows of the target, rejected candidates and the pace."""
        assert self._bar is not None
        if step.partition not in self._tasks:
            self._tasks[step.partition] = self._bar.add_task(
                step.partition, total=step.target, status="starting"
            )
        status = (
            f"rejected {step.rejected}  {step.records_per_s:.1f} records/s" if step.candidates else "starting"
        )
        self._bar.update(self._tasks[step.partition], completed=step.valid, status=status)

    def synthesized(
        self, tables: str | Path, results: list[PartitionResult], failures: list[PartitionFailure]
    ) -> None:
        """The summary table, then a line per failed partition with its reason."""
        _summary(tables, results, failures)
        for failure in failures:
            say(f"{failure.partition}: failed: {failure.reason}")

    def validated(self, summary: ValidationSummary) -> None:
        """The verdict, each failed check, where the results are (and, verbose, every check)."""
        name = summary.partition
        if self.verbose:
            table = Table(title=f"{name}: {'passed' if summary.success else 'FAILED'} ({summary.rows} rows)")
            for column in ("expectation", "column", "observed", "result"):
                table.add_column(column, overflow="fold")
            for o in summary.outcomes:
                table.add_row(
                    o.expectation, o.column or "", o.observed, "pass" if o.success else "[red]FAIL[/]"
                )
            Console().print(table)
        passed = sum(o.success for o in summary.outcomes)
        say(
            f"{name}: {'passed' if summary.success else 'FAILED'}: {passed} of {len(summary.outcomes)} "
            f"checks pass on {summary.rows} rows (GX expectations and privacy gates)"
        )
        for o in summary.failed:
            say(f"{name}: failed {o.expectation} on column {o.column}: {o.observed}")
        say(f"{name}: results in {summary.result_path} and {summary.privacy_report_path}")
        if summary.docs_path:
            say(f"{name}: data docs at {summary.docs_path}")
        if summary.fidelity_report_path:
            say(f"{name}: fidelity report at {summary.fidelity_report_path}")


def _summary(out_dir: str | Path, results: list[PartitionResult], failures: list[PartitionFailure]) -> None:
    """The summary table: a line per partition and one for its held-out rows; a failed
    partition's line says so (its reason follows the table)."""
    # Under each partition, the same figures for its held-out real rows (the ceiling).
    table = Table(title=f"synthesized into {out_dir}")
    for column in (
        "partition",
        "status",
        "rows",
        "cand.",
        "rej.",
        "reward",
        "quality",
        "AUC",
        "privacy",
        "s",
    ):
        table.add_column(column, justify="left" if column in ("partition", "status", "privacy") else "right")
    for result in results:
        fidelity, privacy = result.report["fidelity"], result.report["privacy"]
        failed = [c["name"] for c in privacy["checks"] if not c["passed"]]
        table.add_row(
            result.partition,
            result.status,
            f"{result.rows}/{result.target}",
            str(result.candidates),
            str(result.rejected),
            f"{fidelity['reward']:.2f}",
            f"{fidelity['table']['quality']:.2f}",
            f"{fidelity['table']['detection_auc']:.2f}",
            "ok" if not failed else "failed " + " ".join(failed),
            f"{result.seconds:.0f}",
        )
        real = fidelity["holdout"]
        table.add_row(
            " held-out",
            "real rows",
            "",
            "",
            "",
            f"{fidelity['holdout_reward']:.2f}",
            f"{real['quality']:.2f}",
            f"{real['detection_auc']:.2f}",
            "",
            "",
            style="dim",
        )
    for failure in failures:
        table.add_row(failure.partition, "FAILED", *[""] * 8, style="red")
    # A table written to a file or a CI log is not cut to the 80 columns rich assumes there.
    out = Console()
    if not out.is_terminal:
        out.width = max(out.width, 160)
    out.print(table)
