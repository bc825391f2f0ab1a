"""The pipeline's steps: optimize a partition's prompt, synthesize partitions, validate a table;
and ``run``, which chains them for a spec's partitions.

Each step has this one code path: ``aod run`` and the single commands (``aod optimize``,
``aod synthesize``, ``aod validate``), the Airflow operators (a task per step) and the quality
benchmark call these functions. A run folder holds ``prompts/<partition>/`` (the loop's run
directory and its ``prompt.json``) and ``tables/<partition>/`` (the committed table).

What a step shows while it runs is an ``Observer``'s business: the default one shows nothing, the
``aod`` command's prints each step (``aod_ops.cli.observer``). The steps import the engine, and
synthesis Ray, only when they run, so this module is light enough for a DAG's parse.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from aod_ops import storage
from aod_ops.errors import DataError
from aod_ops.storage import Location

if TYPE_CHECKING:
    from aod_ops.agents.chat import ChatModel
    from aod_ops.loop import LoopResult, RoundRecord
    from aod_ops.quality import ValidationSummary
    from aod_ops.ray.plan import SynthesisOptions
    from aod_ops.ray.synthesize import PartitionFailure, PartitionResult, Progress
    from aod_ops.report import Report
    from aod_ops.spec import Partition

#: The run folder's step folders: the loop's runs and prompts, and the tables.
PROMPTS = "prompts"
TABLES = "tables"


@dataclass(frozen=True)
class LoopOptions:
    """How the AoD loop runs; None keeps the partition's ``loop`` setting.

    :param rounds: the most rounds.
    :param candidates: K, candidates per evaluation.
    :param proposals: M, revised prompts per round.
    :param agent_calls: chat calls per round the agent may spend writing proposals (None: the
        loop's default, see ``aod_ops.loop.optimize_partition``).
    :param restart: discard a recorded run of the partition instead of resuming it.
    """

    rounds: int | None = None
    candidates: int | None = None
    proposals: int | None = None
    agent_calls: int | None = None
    restart: bool = False


class Observer:
    """What the steps tell as they go. This one shows nothing; a subclass shows what it likes."""

    def step(self, name: str) -> None:
        """``run`` starts a step: ``optimize``, ``report``, ``synthesize`` or ``validate``."""

    @contextmanager
    def optimizing(self, partition: Partition, run_dir: Location, loop: LoopOptions) -> Iterator[None]:
        """Around one partition's loop, which writes ``run_dir``."""
        yield

    def round_done(self, partition: str, record: RoundRecord) -> None:
        """A round of the loop is written."""

    def batch_done(self, partition: str, candidates: int) -> None:
        """A DLM batch of the loop is sampled."""

    def optimized(self, result: LoopResult) -> None:
        """A partition's loop ended."""

    def reported(self, report: Report) -> None:
        """The loop's plot is written."""

    @contextmanager
    def synthesizing(self) -> Iterator[None]:
        """Around a synthesis."""
        yield

    def progress(self, step: Progress) -> None:
        """Where a partition's synthesis stands (after each judged batch, and as it starts)."""

    def synthesized(
        self, tables: str | Path, results: list[PartitionResult], failures: list[PartitionFailure]
    ) -> None:
        """A synthesis ended: the partitions written, and those that failed."""

    def validated(self, summary: ValidationSummary) -> None:
        """A table was validated (passed or not)."""


QUIET = Observer()


def with_dlm(partition: Partition, model: str | None, trust_remote_code: bool = False) -> Partition:
    """``partition`` with ``model`` as its DLM (None: its own). The whole ``dlm`` setting is
    replaced: the spec's trust belongs to the spec's model, never to ``model``."""
    if model is None:
        return partition
    from aod_ops.spec import DLMSetting

    return replace(partition, dlm=DLMSetting(model=model, trust_remote_code=trust_remote_code))


def optimize_prompt(
    partition: Partition,
    prompts: str | Path,
    loop: LoopOptions = LoopOptions(),
    *,
    chat: ChatModel | None = None,
    observer: Observer = QUIET,
) -> LoopResult:
    """Run (or resume) the AoD loop for ``partition`` into ``prompts/<partition>/``, which ends
    with its best prompt in ``prompt.json`` (``aod_ops.loop.optimize_partition``).

    :param chat: the agent's and critic's chat model, such as an Airflow connection's (its API
        key passed in); None: the one the partition's ``agent`` setting names.
    """
    from aod_ops.loop import optimize_partition

    run_dir = storage.join(storage.locate(prompts), partition.name)
    with observer.optimizing(partition, run_dir, loop):
        result = optimize_partition(
            partition,
            prompts,
            rounds=loop.rounds,
            candidates=loop.candidates,
            proposals=loop.proposals,
            agent_calls=loop.agent_calls,
            restart=loop.restart,
            on_round=lambda record: observer.round_done(partition.name, record),
            on_batch=lambda n: observer.batch_done(partition.name, n),
            chat=chat,
        )
    observer.optimized(result)
    return result


def synthesize_tables(
    spec: str | Path,
    tables: str | Path,
    *,
    partition: str | None = None,
    options: SynthesisOptions | None = None,
    observer: Observer = QUIET,
) -> list[PartitionResult]:
    """Synthesize the spec's partitions (or the one named) into ``tables/<partition>/`` on Ray
    (``aod_ops.ray.synthesize.synthesize``: embedded, or the cluster ``options`` names).

    :raises SynthesisFailed: after every partition was tried, when some failed; the observer
        was told of both the written and the failed ones.
    """
    from aod_ops.ray.synthesize import SynthesisFailed, synthesize

    try:
        with observer.synthesizing():
            results = synthesize(
                spec, tables, partition=partition, options=options, on_progress=observer.progress
            )
    except SynthesisFailed as failed:
        observer.synthesized(tables, failed.results, failed.failures)
        raise
    observer.synthesized(tables, results, [])
    return results


def validate_table(
    partition: Partition,
    tables: str | Path,
    *,
    rows: int | None = None,
    docs: bool = False,
    extra_suite: str | None = None,
    observer: Observer = QUIET,
) -> ValidationSummary:
    """Run the GX suite and the privacy gates on ``partition``'s committed table in ``tables``
    and write their results beside it (``aod_ops.quality.validate_partition``).

    :param rows: the row count the table must reach (default: the partition's ``rows``).
    :param docs: also write GX Data Docs and the fidelity report into the table's ``docs/``.
    :param extra_suite: the user's own expectations: a GX suite JSON file or ``"module:function"``.
    :raises DataError: when no table of the partition is committed there.
    """
    from aod_ops.output import MANIFEST, committed_dir
    from aod_ops.quality import validate_partition
    from aod_ops.spec import load_reference

    root = storage.locate(tables)
    # On an object store the manifest names the committed folder: never a run that died.
    folder = committed_dir(root, partition.name)
    if folder is None or not storage.is_dir(storage.join(folder, "data")):
        where = storage.join(root, partition.name)
        expected = storage.join(where, MANIFEST if storage.is_remote(root) else "data")
        raise DataError(f"{where}: no synthesized partition here (expected {expected})")
    summary = validate_partition(
        storage.join(folder, "data"),
        partition.schema_path,
        load_reference(partition),
        rows or partition.rows,
        partition=partition.name,
        sensitive=partition.sensitive,
        thresholds=partition.thresholds,
        holdout=load_reference(partition, holdout=True) if partition.holdout_path else None,
        rules=partition.rules,
        extra_suite=extra_suite,
        docs_dir=storage.join(folder, "docs") if docs else None,
        out_dir=folder,
    )
    observer.validated(summary)
    return summary


@dataclass(frozen=True)
class RunResult:
    """What ``run`` did: where it wrote, each step's outcome, and the partitions that could not
    be synthesized (not validated either)."""

    prompts: Location
    tables: Location
    loops: list[LoopResult]
    synthesized: list[PartitionResult]
    failures: list[PartitionFailure]
    validations: list[ValidationSummary]

    @property
    def succeeded(self) -> bool:
        """Whether every partition was synthesized and passed its validation."""
        return not self.failures and all(summary.success for summary in self.validations)


def run(
    spec: str | Path,
    out: str | Path,
    *,
    partition: str | None = None,
    model: str | None = None,
    trust_remote_code: bool = False,
    loop: LoopOptions = LoopOptions(),
    rows: int | None = None,
    docs: bool = False,
    observer: Observer = QUIET,
) -> RunResult:
    """Optimize each partition's prompt, plot the loop's rounds, synthesize the tables and validate
    them, in ``out/prompts/`` and ``out/tables/``: the DAG's steps without Airflow.

    As in the DAG, a partition that cannot be synthesized fails alone: the others are validated.

    :param partition: only this partition (default: all, one after another).
    :param model: the DLM of every step instead of each partition's (``with_dlm``).
    :param trust_remote_code: let ``model`` run its own code.
    :param rows: target rows per partition instead of the spec's.
    :param docs: also write GX Data Docs and the fidelity report per table.
    """
    from aod_ops.ray.plan import SynthesisOptions
    from aod_ops.ray.synthesize import SynthesisFailed
    from aod_ops.report import write_report
    from aod_ops.spec import load_spec

    root = storage.locate(out)
    prompts, tables = storage.join(root, PROMPTS), storage.join(root, TABLES)
    partitions = load_spec(spec).select(partition)
    observer.step("optimize")
    loops = [
        optimize_prompt(with_dlm(p, model, trust_remote_code), prompts, loop, observer=observer)
        for p in partitions
    ]
    observer.step("report")
    observer.reported(write_report(prompts))
    observer.step("synthesize")
    options = SynthesisOptions(
        rows=rows, prompt_dir=prompts, model=model, trust_remote_code=trust_remote_code
    )
    try:
        synthesized = synthesize_tables(spec, tables, partition=partition, options=options, observer=observer)
        failures: list[PartitionFailure] = []
    except SynthesisFailed as failed:
        synthesized, failures = failed.results, failed.failures
    observer.step("validate")
    skipped = {failure.partition for failure in failures}
    validations = [
        validate_table(p, tables, rows=rows, docs=docs, observer=observer)
        for p in partitions
        if p.name not in skipped
    ]
    return RunResult(prompts, tables, loops, synthesized, failures, validations)
