"""Synthesis at scale: seeds -> DLM actor pool -> judge -> exactly N valid rows as Parquet.

For the partitions of a spec, ``synthesize`` streams candidate seeds through a pool of
``DLMGenerator`` actors and a ``CandidateJudge`` stage, and reads the judged candidates back in
seed order. A candidate the judge accepts and that repeats no earlier row becomes a row; every
other one goes to the quarantine dataset with its reasons. A partition is finished as soon as it
has its target count, so the output holds exactly that many rows, and which rows they are
depends only on the spec, the prompt and the model (not on the actor count or the timing). When
the candidate budget is spent first, the partition fails with the counts, or keeps the rows it
has when partial output was asked for. A failed partition does not stop the others: every
partition is tried, and ``SynthesisFailed`` then names each failure beside what was written.

Partitions that share a model share one pool, built once for the run, so each actor loads the
model once: one stream holds their seeds, one partition after the other; the driver reads it a
partition at a time, and marks a partition that has its rows finished on the run's
``adapter.Board``, so that the actors skip the rest of its seeds. The pool is fixed or
autoscaling (``min_actors`` to ``max_actors``), with one GPU per actor when the run asks for
GPUs; a run that asks for GPUs on a cluster that has none and cannot get them fails at once
with one line, instead of running on CPUs. A partition whose DLM is a server
(``aod_ops.dlm.server``, free mode only) gets a pool per server: its actors load no model and
ask for no GPU, they send the prompts to the server (with its API key variable, the one
variable put in their environment), and its replies are judged like a local model's.

Everything that can be checked is checked before Ray starts (``aod_ops.ray.plan``, which also
holds ``SynthesisOptions`` and sizes the pool): the spec, schemas, reference samples, prompt
artifacts, the model name (or a server's free mode and key variable), the output columns, and
that the output (a folder or an object-store URI, see ``aod_ops.storage``) can be written. Each
partition is committed atomically (``aod_ops.output``); a rerun skips a partition whose committed
output was made with the same settings, and a run that died is cleaned up and redone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from functools import cache, partial
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from aod_ops import storage
from aod_ops.dlm.generate import record_seed
from aod_ops.errors import AodError
from aod_ops.fidelity import Yardstick, table_reward
from aod_ops.metrics import compute_metrics
from aod_ops.output import (
    PartitionWriter,
    Provenance,
    committed_dir,
    read_report,
    record_id,
    recover,
)
from aod_ops.privacy import privacy_report
from aod_ops.ray import adapter
from aod_ops.ray.generator import DLMGenerator, PartitionPrompt
from aod_ops.ray.judging import CandidateJudge, PartitionJudging
from aod_ops.ray.plan import (
    PartitionJob,
    PoolShape,
    SynthesisOptions,
    by_model,
    plan_partition,
    pool_shape,
    with_gpus,
)
from aod_ops.schema import compile_schema, is_choice_leaf
from aod_ops.spec import load_spec
from aod_ops.storage import Location


@dataclass(frozen=True)
class Progress:
    """Where one partition stands: valid rows of the target, rejected and judged candidates."""

    partition: str
    target: int
    valid: int
    rejected: int
    candidates: int
    seconds: float

    @property
    def records_per_s(self) -> float:
        """Judged candidates per second so far."""
        return self.candidates / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class PartitionResult:
    """One partition's outcome: ``complete`` (the target reached), ``partial`` (fewer rows, as
    allowed) or ``unchanged`` (the committed output already matched these settings)."""

    partition: str
    path: Location
    status: Literal["complete", "partial", "unchanged"]
    rows: int
    target: int
    candidates: int
    rejected: int
    seconds: float
    report: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class PartitionFailure:
    """A partition that could not be synthesized, and why (one line)."""

    partition: str
    reason: str


class SynthesisFailed(AodError):
    """Some partitions failed; every partition was tried and the others were written.

    :param results: the partitions written or left unchanged, in spec order.
    :param failures: each failed partition with its reason, in spec order.
    """

    def __init__(self, results: list[PartitionResult], failures: list[PartitionFailure]) -> None:
        self.results = results
        self.failures = failures
        reasons = "; ".join(f.reason for f in failures)
        total = len(results) + len(failures)
        super().__init__(
            reasons if total == 1 else f"{len(failures)} of {total} partitions failed: {reasons}"
        )


def synthesize(
    spec: str | Path,
    out: str | Path,
    *,
    partition: str | None = None,
    options: SynthesisOptions | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> list[PartitionResult]:
    """Synthesize the spec's partitions (or the one named) into ``out/<partition>/``.

    :param spec: the partition spec (YAML), a path or a URI.
    :param out: the output folder, or an object-store URI (``s3://bucket/prefix``).
    :param partition: only this partition.
    :param options: run settings (``SynthesisOptions``).
    :param on_progress: told after every judged batch, and once when a partition starts.
    :raises AodError: for a bad spec, schema, reference, prompt, model or option (before any
        actor starts), and when ``options.gpus_per_actor`` asks for GPUs that the cluster has
        not and cannot get.
    :raises SynthesisFailed: after every partition was tried, when some failed (a candidate
        budget spent before its target); it holds the results of the others.
    """
    options = options or SynthesisOptions()
    jobs = [plan_partition(p, options) for p in load_spec(spec).select(partition)]
    out = storage.locate(out)
    try:
        storage.check_writable(out)  # the credentials, the bucket: now, not after the synthesis
    except OSError as exc:
        raise AodError(f"{out}: cannot write the output there: {exc.strerror or exc}") from exc
    results: dict[str, PartitionResult] = {}
    for job in jobs:
        recover(out, job.name)
        folder, report = committed_dir(out, job.name), read_report(out, job.name)
        fingerprint = job.fingerprint(options.allow_partial)
        if folder is not None and report is not None and report.get("fingerprint") == fingerprint:
            results[job.name] = _result(folder, "unchanged", report)
    pending = [job for job in jobs if job.name not in results]
    failures: dict[str, PartitionFailure] = {}
    if pending:
        with adapter.session(options.ray_address) as cluster:
            if any(job.dlm.base_url is None for job in pending):
                cluster = with_gpus(cluster, options)
            for group in by_model(pending):
                # A DLM server's actors run no model: they ask for no GPU.
                sizing = replace(options, gpus_per_actor=0.0) if group[0].dlm.base_url else options
                _run_group(group, out, pool_shape(cluster, sizing), options, on_progress, results, failures)
    if failures:
        raise SynthesisFailed(
            [results[j.name] for j in jobs if j.name in results],
            [failures[j.name] for j in jobs if j.name in failures],
        )
    return [results[job.name] for job in jobs]


def _seeds(job: PartitionJob) -> list[dict[str, Any]]:
    """The candidate budget: each candidate's partition, its index in the run and its seed."""
    return [
        {"partition": job.name, "index": i, "seed": record_seed(job.partition.seed, i)}
        for i in range(job.budget)
    ]


def _stages(
    jobs: PartitionJob | Sequence[PartitionJob],
    pool: PoolShape,
    batch_size: int,
    board: adapter.Board | None = None,
) -> list[adapter.Stage]:
    """The generator pool and the judge for ``jobs`` (one job, or several sharing a model): the
    first job's settings as the stages' own, the others' as their further partitions.

    The generators of a DLM server get its API key variable, and the judges the critics' key
    variables (``PartitionJob.critic_env``), each stage only its own, in their environment."""
    first, *others = [jobs] if isinstance(jobs, PartitionJob) else jobs
    key = first.dlm.api_key_env
    generator = adapter.Stage(
        DLMGenerator,
        {
            "schema": first.schema,
            "model": first.dlm.model,
            "trust_remote_code": first.dlm.trust_remote_code,
            "prompt": first.prompt.render(first.schema.contents),
            "decoding": first.prompt.decoding,
            "guides": first.prompt.guides,
            "threads": pool.threads,
            "device": pool.device,
            "partition": first.name,
            "partitions": {
                j.name: PartitionPrompt(
                    j.schema, j.prompt.render(j.schema.contents), j.prompt.decoding, j.prompt.guides
                )
                for j in others
            },
            "board": board,
            "server": first.dlm if first.dlm.base_url is not None else None,
        },
        actors=pool.actors,
        max_actors=pool.max_actors,
        batch_size=batch_size,
        num_cpus=pool.cpus,
        num_gpus=pool.gpus,
        env_vars={key: os.environ[key]} if key is not None else {},
    )
    # The reference goes to the object store once per partition, shared by the batches.
    judging = {
        j.name: PartitionJudging(
            j.schema,
            adapter.put(j.reference),
            j.partition.sensitive,
            j.partition.notes,
            j.partition.agent if j.partition.critic else None,
            j.partition.seed,
        )
        for j in (first, *others)
    }
    own = judging.pop(first.name)
    judge = adapter.Stage(
        CandidateJudge,
        {
            "schema": own.schema,
            "reference": own.reference,
            "sensitive": own.sensitive,
            "notes": own.notes,
            "critic": own.critic,
            "seed": own.seed,
            "partition": first.name,
            "partitions": judging,
            "board": board,
        },
        # Light work, and on a small machine the generator pool holds every CPU: it reserves none.
        num_cpus=0.0,
        env_vars={name: key for j in (first, *others) for name, key in j.critic_env.items()},
    )
    return [generator, judge]


class _Rows:
    """The judged rows of one stream that holds several partitions' seeds, one partition after
    the other, read a partition at a time (``of``)."""

    def __init__(self, batches: Iterator[pa.Table], names: Sequence[str]) -> None:
        self._batches = batches
        self._order = {name: n for n, name in enumerate(names)}
        self._pending: list[dict[str, Any]] = []

    def of(self, name: str) -> Iterator[list[dict[str, Any]]]:
        """``name``'s rows, a judged batch's worth at a time, in seed order. Rows of the
        partitions before it (those past their target) are dropped; the first row of a later
        one ends it, and is kept for that partition."""
        mine = self._order[name]
        while True:
            if not self._pending:
                batch = next(self._batches, None)
                if batch is None:
                    return
                self._pending = batch.to_pylist()
                continue
            rows = [r for r in self._pending if self._order[r["partition"]] == mine]
            self._pending = [r for r in self._pending if self._order[r["partition"]] > mine]
            if rows:
                yield rows
            if self._pending:
                return


@dataclass
class _Tally:
    """The judged candidates of a partition so far, in seed order."""

    records: list[Any] = field(default_factory=list)
    valid: list[bool] = field(default_factory=list)
    critic_passed: list[bool] = field(default_factory=list)
    rejections: Counter[str] = field(default_factory=Counter)
    seen: set[str] = field(default_factory=set)
    forwards: float = 0.0
    slots: int = 0
    repaired: int = 0
    rejected: int = 0
    surplus: int = 0


def _run_group(
    jobs: Sequence[PartitionJob],
    out: Location,
    pool: PoolShape,
    options: SynthesisOptions,
    on_progress: Callable[[Progress], None] | None,
    results: dict[str, PartitionResult],
    failures: dict[str, PartitionFailure],
) -> None:
    """Synthesize partitions that share a model with one pool and one stream of their seeds;
    each partition's result or failure goes to ``results`` or ``failures``."""
    with adapter.board() as board:
        stages = _stages(jobs, pool, options.batch_size, board)
        seeds = [seed for job in jobs for seed in _seeds(job)]
        with closing(adapter.stream(seeds, options.batch_size, stages)) as batches:
            rows = _Rows(batches, [job.name for job in jobs])
            for job in jobs:
                try:
                    results[job.name] = _run(job, out, pool, options, on_progress, rows.of(job.name), board)
                except AodError as exc:  # that partition's failure: the next ones are still tried
                    failures[job.name] = PartitionFailure(job.name, str(exc))
                    if board is not None:
                        board.close(job.name)


def _run(
    job: PartitionJob,
    out: Location,
    pool: PoolShape,
    options: SynthesisOptions,
    on_progress: Callable[[Progress], None] | None,
    batches: Iterable[list[dict[str, Any]]],
    board: adapter.Board | None = None,
) -> PartitionResult:
    """Synthesize one partition from its judged ``batches`` and commit it (or fail with the
    counts); once it has its rows, the ``board`` marks it finished."""
    started = time.perf_counter()
    writer = PartitionWriter(out, job.schema, Provenance(job.name, job.prompt.version, job.dlm.model))
    tally = _Tally()
    first_batch = 0.0  # seconds until the first judged batch: starting the actors, loading the model

    def report_progress() -> None:
        if on_progress is not None:
            on_progress(
                Progress(
                    job.name,
                    job.target,
                    len(writer.ids),
                    tally.rejected,
                    len(tally.records),
                    time.perf_counter() - started,
                )
            )

    try:
        report_progress()
        for rows in batches:
            first_batch = first_batch or time.perf_counter() - started
            for position, row in enumerate(rows):
                if len(writer.ids) == job.target:
                    tally.surplus += len(rows) - position
                    break
                _take(job, writer, tally, row)
            report_progress()
            if len(writer.ids) == job.target:
                break
        if board is not None:
            board.close(job.name)  # the actors skip the rest of its seeds
        seconds = time.perf_counter() - started
        rows_made = len(writer.ids)
        if rows_made < job.target and not options.allow_partial:
            problems = ", ".join(f"{kind} {count}" for kind, count in tally.rejections.most_common())
            raise AodError(
                f"partition {job.name!r}: {rows_made} of {job.target} rows after {len(tally.records)} "
                f"candidates (the budget); {tally.rejected} rejected ({problems or 'none'}). Raise "
                "--max-candidates, optimize the prompt, or pass --allow-partial to keep the rows"
            )
        loads = board.loads() if board is not None else None
        report = _report(job, writer, tally, pool, options, seconds, first_batch, loads)
        path = writer.commit(report)
    except BaseException:
        writer.abort()
        raise
    return _result(path, report["status"], report)


def _take(job: PartitionJob, writer: PartitionWriter, tally: _Tally, row: dict[str, Any]) -> None:
    """Accept one judged candidate as a row, or quarantine it with its reasons."""
    record = None if row["record"] is None else json.loads(row["record"])
    tally.records.append(record)
    tally.valid.append(bool(row["valid"]))
    tally.critic_passed.append("critic" not in row["kinds"])
    tally.forwards += row["forwards"]
    tally.slots += row["slots"]
    tally.repaired += row["repaired"]
    kinds, reasons = list(row["kinds"]), list(row["reasons"])
    ok = bool(row["ok"])
    if ok:
        rid = record_id(job.name, record)
        if rid in tally.seen:
            ok = False
            kinds, reasons = (
                ["duplicate", *kinds],
                [f"repeats an earlier row of the partition ({rid})", *reasons],
            )
        else:
            tally.seen.add(writer.add(record, row["seed"]))
    if not ok:
        tally.rejected += 1
        tally.rejections[next((k for k in kinds if k != "copied"), "rejected")] += 1
        writer.reject(row["seed"], row["text"], record, kinds, reasons)


def _report(
    job: PartitionJob,
    writer: PartitionWriter,
    tally: _Tally,
    pool: PoolShape,
    options: SynthesisOptions,
    seconds: float,
    startup: float,
    model_loads: int | None = None,
) -> dict[str, Any]:
    """``report.json``: counts, metrics (the metrics contract's names), privacy figures, timings and settings.

    ``model_loads`` counts the pool's model loads so far in the run (one per actor started or
    restarted; the pool serves the run's partitions that share the model; none for a DLM
    server, whose actors load no model), None without Ray."""
    skip_leaf = cache(partial(is_choice_leaf, compile_schema(job.schema).root))
    p = job.partition
    metrics = compute_metrics(
        tally.records,
        tally.valid,
        job.reference,
        skip_leaf=skip_leaf,
        critic_passed=tally.critic_passed if p.critic else None,
        forwards=round(tally.forwards) if job.dlm.base_url is None else None,  # a server's are its own
        seconds=seconds,
    )
    privacy = privacy_report(
        writer.records,
        job.reference,
        skip_leaf=skip_leaf,
        sensitive=p.sensitive,
        thresholds=p.thresholds,
        ids=writer.ids,
        holdout=job.holdout,
    )
    yardstick = Yardstick(job.schema, job.reference, job.holdout, p.rules, p.sensitive)
    card = yardstick.score(writer.records, repair_rate=tally.repaired / tally.slots if tally.slots else None)
    baseline = yardstick.baseline()
    rows = len(writer.ids)
    return {
        "partition": job.name,
        "status": "complete" if rows == job.target else "partial",
        "fingerprint": job.fingerprint(options.allow_partial),
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "counts": {
            "target": job.target,
            "rows": rows,
            "candidates": len(tally.records),
            "valid": sum(tally.valid),
            "rejected": tally.rejected,
            "surplus": tally.surplus,
            "budget": job.budget,
        },
        "rejections": dict(tally.rejections.most_common()),
        "metrics": metrics.as_dict(),
        "privacy": privacy.as_dict(),
        # The table's fidelity and privacy figures beside the held-out real rows' (docs/architecture.md).
        "fidelity": {
            "yardstick": yardstick.source,
            "reward": table_reward(card, baseline),
            "holdout_reward": table_reward(baseline, baseline),
            "table": card.as_dict(),
            "holdout": baseline.as_dict(),
        },
        "timings": {
            "seconds": round(seconds, 3),
            "startup_seconds": round(startup, 3),
            "model_loads": model_loads,
            "records_per_s": round(len(tally.records) / seconds, 3) if seconds > 0 else None,
            "rows_per_s": round(rows / seconds, 3) if seconds > 0 else None,
        },
        "prompt": {"version": job.prompt.version, "source": job.prompt_source},
        "settings": {
            "model": job.dlm.model,
            "trust_remote_code": job.dlm.trust_remote_code,
            "dlm_base_url": job.dlm.base_url,
            "seed": p.seed,
            "decoding": asdict(job.prompt.decoding),
            "actors": pool.actors,
            "max_actors": pool.max_actors,
            "threads_per_actor": pool.threads,
            "gpus_per_actor": pool.gpus,
            "batch_size": options.batch_size,
            "max_candidates": job.budget,
            "allow_partial": options.allow_partial,
            "critic": p.critic,
        },
    }


def _result(path: Location, status: Any, report: dict[str, Any]) -> PartitionResult:
    counts = report["counts"]
    return PartitionResult(
        partition=report["partition"],
        path=path,
        status=status,
        rows=counts["rows"],
        target=counts["target"],
        candidates=counts["candidates"],
        rejected=counts["rejected"],
        seconds=report["timings"]["seconds"],
        report=report,
    )
