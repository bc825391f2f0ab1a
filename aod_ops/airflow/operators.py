"""Operators that run the AoD pipeline for one schema partition, and the run's summary.

``AoDOptimizeOperator`` runs the AoD loop and writes the partition's best prompt;
``AoDSynthesizeOperator`` writes the partition's Parquet (with embedded Ray in the worker, or as
a job on a Ray cluster); ``AoDValidateOperator`` runs its GX checkpoint and privacy gates and
publishes the table as an asset; ``AoDSummaryOperator`` reports every partition's outcome.
Each partition operator runs its step's function of ``aod_ops.pipeline``, the one that ``aod run``
and the single ``aod`` commands call.

All of them take a partition spec and a partition's name and work under one run folder
(``out_dir``), laid out as ``prompts/<partition>/prompt.json`` and
``tables/<partition>/{data,quarantine}/`` with ``report.json``. The spec, the files it names and
the run folder are local paths or URIs (``s3://bucket/prefix``: then each table lies in the
folder its ``_manifest.json`` names, see ``aod_ops.output``); ``storage_conn_id`` names a
connection with the object store's credentials (``StorageHook``), else the worker's own are used.
Constructors only store their arguments: nothing is read when a DAG is parsed. XCom carries URIs
and small summaries.

Each partition is loaded on its own (``load_partition``; it and the operators' base classes are
in ``aod_ops.airflow.partitions``), so a broken partition fails its own tasks with the spec's
message and the others carry on. A bad spec, schema or data becomes ``AoDInputError``, which
Airflow does not retry; other engine errors become ``AoDTaskError``.
Each failure's message is also pushed to XCom under ``error`` for the summary.

The partition operators report their datasets to OpenLineage (the reference and holdout samples,
the prompt artifact, the table with its schema, fidelity and checks) when the OpenLineage
provider is installed: see ``aod_ops.airflow.lineage``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias, BaseOperator, TriggerRule, conf

from aod_ops import storage
from aod_ops.airflow.exceptions import (
    AoDInputError,
    AoDPartitionsFailed,
    AoDTriggerEventError,
    AoDValidationFailed,
    RayJobFailed,
)
from aod_ops.airflow.hooks import RayHook, storage_environment
from aod_ops.airflow.partitions import (
    ERROR_KEY,
    ModelOperator,
    PartitionOperator,
    PartitionSources,
    optional_int,
    optional_str,
    partition_spec,
)
from aod_ops.airflow.partitions import partition_names as partition_names  # the example DAG imports it here
from aod_ops.airflow.triggers import EVENT_STATUSES, RayJobTrigger, past_deadline
from aod_ops.pipeline import PROMPTS, TABLES, LoopOptions, optimize_prompt, synthesize_tables, validate_table
from aod_ops.storage import Location

if TYPE_CHECKING:
    from airflow.sdk import Context

    from aod_ops.airflow.lineage import Source, TableFacts
    from aod_ops.quality import ValidationSummary
    from aod_ops.ray.jobs import RayJobs, Submission
    from aod_ops.spec import Partition

#: The alias under which validated tables are published as assets (URI: the table's location).
TABLES_ALIAS = "aod_tables"


class AoDOptimizeOperator(ModelOperator):
    """Run the AoD loop for one partition and write its best prompt artifact.

    A rerun replaces the partition's recorded loop run in ``<out_dir>/prompts/<partition>/``.
    Returns ``{"partition", "prompt_uri", "history_uri", "best_reward"}``; the artifact is
    ``<out_dir>/prompts/<partition>/prompt.json``.

    :param rounds: the loop's maximum rounds instead of the spec's.
    :param candidates: candidates per round instead of the spec's.
    """

    template_fields: Sequence[str] = (*ModelOperator.template_fields, "rounds", "candidates")

    def __init__(
        self, *, rounds: int | str | None = None, candidates: int | str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.rounds = rounds
        self.candidates = candidates

    def execute(self, context: Context) -> dict[str, Any]:
        """Optimize the partition's prompt."""
        with self.reporting_errors(context):
            partition = self.load()
            loop = LoopOptions(
                rounds=optional_int(self.rounds, "rounds"),
                candidates=optional_int(self.candidates, "candidates"),
                restart=True,  # a rerun replaces the recorded run, whatever its settings were
            )
            # The connection's agent, its key passed in.
            result = optimize_prompt(partition, self.run_dir(PROMPTS), loop, chat=self.endpoints.chat_model())
        prompt = storage.uri(result.prompt_path)
        self.log.info(
            "Partition %s: best reward %.3f after %d rounds (%s); prompt %s",
            partition.name,
            result.best_reward,
            len(result.rounds),
            result.stop,
            prompt,
        )
        return {
            "partition": partition.name,
            "prompt_uri": prompt,
            "history_uri": storage.uri(result.history_path),
            "best_reward": float(result.best_reward),
        }

    def lineage_datasets(self, sources: PartitionSources) -> tuple[list[Source], list[Location | TableFacts]]:
        """The reference and holdout in; the prompt artifact out."""
        from aod_ops.ray.jobs import PROMPT_FILE  # the loop's name for it (aod_ops.loop imports torch)

        return sources.samples(), [storage.join(self.run_dir(PROMPTS), self.partition, PROMPT_FILE)]


class AoDSynthesizeOperator(ModelOperator):
    """Synthesize one partition's table into ``<out_dir>/tables/<partition>/``.

    ``execution_mode="local"`` runs the synthesis in the worker (embedded Ray);
    ``"ray_job"`` submits ``aod synthesize`` to the cluster of ``ray_conn_id`` through the Ray
    Jobs API, with the spec's folder and the prompt artifact in its runtime_env, pushes the job
    id to XCom (``ray_job_id``) and waits for it: in the worker, or with ``deferrable=True`` in
    the triggerer. A failed job's logs are copied into the task log; ``on_kill`` stops the job.
    The job's submission id comes from the task instance (``submission_id``), so a retry
    reattaches to the job its earlier try submitted while that job is pending, running or
    succeeded, and submits a new attempt (``<id>-2``, ...) after one that failed or was stopped.
    ``job_timeout`` runs from the job's first submission to an absolute deadline, which a
    retry or a restarted triggerer keeps.
    The job writes to ``out_dir`` as the cluster sees it, which must be storage the worker also
    sees (the validation reads it): an object-store URI, which the job writes with the cluster's
    own credentials, or a shared volume. Returns ``{"partition", "table_uri", "report_uri", "rows",
    "rejected", "ray_job_id"}``. A partition whose DLM is a server (``dlm_base_url``, free mode
    only) is synthesized by actors that send its prompts to the server.

    :param prompt_dir: a folder of ``<partition>/prompt.json`` artifacts (default:
        ``<out_dir>/prompts``, where ``AoDOptimizeOperator`` writes); None-like values use it.
    :param rows: rows to write instead of the spec's.
    :param actors: DLM actors instead of the synthesis default.
    :param execution_mode: ``"local"`` or ``"ray_job"``.
    :param ray_conn_id: the ``aod_ray`` connection (``ray_job`` mode).
    :param deferrable: wait for the job in the triggerer (``ray_job`` mode).
    :param poll_interval: seconds between job status polls.
    :param job_timeout: seconds from the job's submission until it is stopped (None: no limit).
    """

    template_fields: Sequence[str] = (
        *ModelOperator.template_fields,
        "prompt_dir",
        "rows",
        "actors",
        "execution_mode",
        "ray_conn_id",
    )

    def __init__(
        self,
        *,
        prompt_dir: str | None = None,
        rows: int | str | None = None,
        actors: int | str | None = None,
        execution_mode: str = "local",
        ray_conn_id: str = RayHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 10.0,
        job_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prompt_dir = prompt_dir
        self.rows = rows
        self.actors = actors
        self.execution_mode = execution_mode
        self.ray_conn_id = ray_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.job_timeout = job_timeout
        self.job_id: str | None = None
        self.result: dict[str, Any] | None = None  # what the task returns, for its lineage

    @cached_property
    def ray_jobs(self) -> RayJobs:
        """The Jobs API of the ``aod_ray`` connection's cluster."""
        return RayHook(self.ray_conn_id).get_conn()

    def prompts(self) -> Location:
        """The folder of prompt artifacts."""
        given = optional_str(self.prompt_dir)
        return storage.locate(given) if given is not None else self.run_dir(PROMPTS)

    def execute(self, context: Context) -> dict[str, Any]:
        """Synthesize locally, or submit the Ray job and wait for it (or defer)."""
        with self.reporting_errors(context):
            if self.execution_mode not in ("local", "ray_job"):
                mode = self.execution_mode
                raise AoDInputError(f"execution_mode must be 'local' or 'ray_job', got {mode!r}")
            partition = self.load()
            rows = optional_int(self.rows, "rows")
            actors = optional_int(self.actors, "actors")
            if self.execution_mode == "local":
                self._synthesize_locally(partition, rows, actors)
                return self._table_summary()
            submission = self._submit(context, partition, rows, actors)
            self.job_id = submission.job_id
        # Computed from the first submission, so that a retry that reattaches keeps it.
        deadline = None if self.job_timeout is None else submission.submitted_at + self.job_timeout
        if self.deferrable:
            self.defer(
                trigger=RayJobTrigger(self.ray_conn_id, self.job_id, self.poll_interval, deadline),
                method_name="execute_complete",
            )
        with self.reporting_errors(context):
            state = self.ray_jobs.wait(self.job_id, self.poll_interval, deadline)
            message = state.message
            if not state.terminal:
                assert deadline is not None  # wait returns a running job only past its deadline
                self.ray_jobs.stop(self.job_id)
                message = past_deadline(deadline)
            self._check_job(state.job_id, state.status, message, state.succeeded, not state.terminal)
            return self._table_summary()

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Finish after the trigger fired: the table's summary, or the failed job's logs."""
        with self.reporting_errors(context):
            if event is None or event.get("status") not in EVENT_STATUSES:
                raise AoDTriggerEventError(f"unexpected event from RayJobTrigger: {event!r}")
            self.job_id = str(event["job_id"])
            timed_out = event["status"] == "timeout"
            if timed_out:
                self.ray_jobs.stop(self.job_id)
            succeeded = event["status"] == "success"
            self._check_job(self.job_id, event["job_status"], event["message"], succeeded, timed_out)
            return self._table_summary()

    def on_kill(self) -> None:
        """Stop the Ray job when the task is killed while it waits in the worker."""
        if self.job_id is not None:
            self.log.info("Stopping Ray job %s", self.job_id)
            self.ray_jobs.stop(self.job_id)

    def _synthesize_locally(self, partition: Partition, rows: int | None, actors: int | None) -> None:
        from aod_ops.ray.plan import SynthesisOptions

        # Only a critic needs the agent's key here: its judge actors build their own chat model
        # and get the key in their runtime_env, never through this worker's environment.
        key = self.endpoints.api_key if partition.critic else None
        options = SynthesisOptions(rows=rows, actors=actors, prompt_dir=self.prompts(), critic_api_key=key)
        with partition_spec(self.spec_path, self.partition, self.overrides()) as spec:
            tables = self.run_dir(TABLES)
            (result,) = synthesize_tables(spec, tables, partition=self.partition, options=options)
        self.log.info(
            "Partition %s: %s, %d rows from %d candidates (%d rejected) in %.1f s",
            result.partition,
            result.status,
            result.rows,
            result.candidates,
            result.rejected,
            result.seconds,
        )

    def submission_id(self, context: Context) -> str:
        """The Ray job's submission id, the same for every try of this task instance:
        ``aod-<partition>-`` and a hash of the dag id, run id, task id and map index."""
        from aod_ops.ray.jobs import stable_submission_id

        ti = context["ti"]
        return stable_submission_id(self.partition, ti.dag_id, ti.run_id, ti.task_id, str(ti.map_index))

    def _submit(
        self, context: Context, partition: Partition, rows: int | None, actors: int | None
    ) -> Submission:
        from aod_ops.ray.jobs import SynthesisJob

        job = SynthesisJob(
            spec_path=self.spec_path,
            out=str(self.run_dir(TABLES)),
            partition=partition.name,
            rows=rows,
            actors=actors,
            model=partition.dlm.model,
            trust_remote_code=partition.dlm.trust_remote_code,
            dlm_base_url=partition.dlm.base_url,
            dlm_api_key_env=partition.dlm.api_key_env,
            prompt_dir=self.prompts(),
        )
        ti = context["ti"]
        metadata = {
            "airflow_dag_id": ti.dag_id,
            "airflow_run_id": ti.run_id,
            "airflow_task_id": ti.task_id,
            "airflow_map_index": str(ti.map_index),
        }
        submission = self.ray_jobs.submit_once(job, self.submission_id(context), metadata)
        ti.xcom_push(key="ray_job_id", value=submission.job_id)
        if submission.reattached:
            self.log.info(
                "Reattached to Ray job %s (%s) on %s: an earlier try submitted it",
                submission.job_id,
                submission.status,
                self.ray_jobs.address,
            )
        else:
            address, entrypoint = self.ray_jobs.address, job.entrypoint()
            self.log.info("Submitted Ray job %s to %s: %s", submission.job_id, address, entrypoint)
        return submission

    def _check_job(self, job_id: str, status: str, message: str, succeeded: bool, timed_out: bool) -> None:
        """Raise ``RayJobFailed`` with the job's logs (also written to the task log) unless it succeeded."""
        if succeeded:
            self.log.info("Ray job %s succeeded", job_id)
            return
        if timed_out:
            limit = "" if self.job_timeout is None else f"; job_timeout {self.job_timeout:g} s"
            message = f"{message}{limit}; stop requested"
        try:
            logs = self.ray_jobs.logs(job_id)
        except Exception as exc:  # the failure itself is what matters; say why the logs are missing
            logs = f"(could not fetch the job's logs: {exc})"
        self.log.error("Ray job %s ended %s: %s\n%s", job_id, status, message, logs)
        raise RayJobFailed(job_id, status, message, logs)

    def _table_summary(self) -> dict[str, Any]:
        from aod_ops.output import REPORT, read_report

        folder = self.table_dir()
        report = read_report(self.run_dir(TABLES), self.partition)
        if report is None:
            raise AoDInputError(
                f"partition {self.partition!r}: no intact output at {folder} after the synthesis; "
                "a Ray job must write to storage the Airflow worker also sees"
            )
        self.result = {
            "partition": self.partition,
            "table_uri": storage.uri(storage.join(folder, "data")),
            "report_uri": storage.uri(storage.join(folder, REPORT)),
            "rows": report["counts"]["rows"],
            "rejected": report["counts"]["rejected"],
            "ray_job_id": self.job_id,
            # The headline fidelity figures, each beside the held-out real rows' (report.json has all).
            "fidelity": {
                name: {
                    "table": report["fidelity"]["table"][name],
                    "holdout": report["fidelity"]["holdout"][name],
                }
                for name in FIDELITY_SUMMARY
            }
            | {
                "reward": {
                    "table": report["fidelity"]["reward"],
                    "holdout": report["fidelity"]["holdout_reward"],
                }
            },
        }
        return self.result

    def lineage_datasets(self, sources: PartitionSources) -> tuple[list[Source], list[Location | TableFacts]]:
        """The reference, holdout and prompt artifact (when there is one) in; the table out, with
        the rows written and the fidelity figures once the synthesis is done."""
        from aod_ops.ray.jobs import PROMPT_FILE

        prompt = storage.join(self.prompts(), self.partition, PROMPT_FILE)
        inputs = [*sources.samples(), *([prompt] if storage.is_file(prompt) else [])]
        done = self.result
        found = {} if done is None else {"rows": done["rows"], "fidelity": done["fidelity"]}
        return inputs, [self.table_facts(sources, **found)]


FIDELITY_SUMMARY = (
    "quality",
    "detection_auc",
    "dcr_protection",
    "field_overlap",
    "rule_violations",
    "repair_rate",
)
"""The fidelity figures a synthesis task's XCom summary carries, each beside the held-out rows'."""


class AoDValidateOperator(PartitionOperator):
    """Run one partition table's GX checkpoint and privacy gates, then publish it as an asset.

    Pushes the validation summary (verdict, counts, failed expectations, privacy verdicts, the
    result files' paths) to XCom, then raises ``AoDValidationFailed`` if anything failed; a table
    that passed is announced under the ``aod_tables`` alias as an asset whose URI is where the table
    lives: ``<out>/tables/<partition>`` (``file://`` or the object store's URI; on an object store
    readers find the committed files through its manifest there).

    :param rows: the row count the table must reach instead of the spec's (as synthesized).
    :param extra_suite: the user's own expectations: a GX suite JSON file or ``"module:function"``.
    """

    template_fields: Sequence[str] = (*PartitionOperator.template_fields, "rows", "extra_suite")

    def __init__(
        self, *, rows: int | str | None = None, extra_suite: str | None = None, **kwargs: Any
    ) -> None:
        kwargs["outlets"] = [*kwargs.get("outlets", []), AssetAlias(TABLES_ALIAS)]
        super().__init__(**kwargs)
        self.rows = rows
        self.extra_suite = extra_suite
        self.validation: ValidationSummary | None = None  # the checks' outcomes, for the task's lineage

    def execute(self, context: Context) -> dict[str, Any]:
        """Validate the partition's table."""
        from aod_ops.quality import ValidationFailed

        with self.reporting_errors(context):
            partition = self.load()
            summary = validate_table(
                partition,
                self.run_dir(TABLES),
                rows=optional_int(self.rows, "rows"),
                extra_suite=optional_str(self.extra_suite),
            )
            self.validation = summary
            result = summary.as_dict()
            context["ti"].xcom_push(key="return_value", value=result)
            if not summary.success:
                raise AoDValidationFailed(str(ValidationFailed(summary)), result)
        # The committed folder's data: on an object store, files no later run writes into.
        data_uri = storage.uri(storage.locate(summary.data_path))
        table_uri = storage.uri(storage.join(self.run_dir(TABLES), partition.name))
        context["outlet_events"][AssetAlias(TABLES_ALIAS)].add(
            Asset(uri=table_uri), extra={"partition": partition.name, "path": data_uri, "rows": summary.rows}
        )
        self.log.info("Partition %s passed: %d rows at %s", partition.name, summary.rows, data_uri)
        return result

    def lineage_datasets(self, sources: PartitionSources) -> tuple[list[Source], list[Location | TableFacts]]:
        """The reference, holdout and table in (the table with the checks' outcomes, once they
        ran); the table out, as the asset the task publishes."""
        table = self.table_facts(sources)
        return [*sources.samples(), replace(table, validation=self.validation)], [table]


@dataclass(frozen=True)
class PartitionOutcome:
    """How one partition's run went: each step's state, the first failed step and its error."""

    partition: str
    succeeded: bool
    states: dict[str, str | None]
    failed_step: str | None = None
    error: str | None = None
    validation: dict[str, Any] | None = None


def partition_outcomes(
    names: Sequence[str],
    steps: Sequence[str],
    states: Mapping[str, str | None],
    errors: Mapping[str, str | None],
    validations: Sequence[dict[str, Any] | None],
) -> list[PartitionOutcome]:
    """Each partition's outcome from its steps' task states and pushed errors.

    ``states`` and ``errors`` are keyed ``"<step>_<map index>"``; ``validations`` holds the
    validate step's summaries by map index. A partition succeeded when all its steps did.
    """
    outcomes = []
    for index, name in enumerate(names):
        step_states = {step: states.get(f"{step}_{index}") for step in steps}
        failed = next((step for step in steps if step_states[step] != "success"), None)
        outcomes.append(
            PartitionOutcome(
                partition=name,
                succeeded=failed is None,
                states=step_states,
                failed_step=failed,
                error=errors.get(f"{failed}_{index}") if failed else None,
                validation=validations[index] if index < len(validations) else None,
            )
        )
    return outcomes


class AoDSummaryOperator(BaseOperator):
    """Report every partition's outcome after the mapped steps, even when some failed.

    Writes ``<out_dir>/summary.json``, logs one line per partition, returns the outcomes, and
    raises ``AoDPartitionsFailed`` naming each failed partition and step, so that the DAG run
    fails when any partition failed. Runs with ``trigger_rule="all_done"`` by default.

    :param partitions: the partitions' names, in map index order (a list or the planning task's
        XCom).
    :param group_id: the mapped task group holding the steps.
    :param steps: the steps' task ids inside the group, in order.
    :param out_dir: the run's output folder or URI.
    :param storage_conn_id: a connection with the object store's credentials (``StorageHook``);
        None uses the worker's own.
    """

    template_fields: Sequence[str] = ("partitions", "out_dir", "storage_conn_id")

    def __init__(
        self,
        *,
        partitions: Any,
        group_id: str,
        out_dir: str,
        steps: Sequence[str] = ("optimize", "synthesize", "validate"),
        storage_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)
        self.partitions = partitions
        self.group_id = group_id
        self.out_dir = out_dir
        self.steps = tuple(steps)
        self.storage_conn_id = storage_conn_id

    def execute(self, context: Context) -> list[dict[str, Any]]:
        """Collect the states and errors, write the summary, fail if any partition failed."""
        ti = context["ti"]
        names = list(self.partitions or [])
        task_ids = [f"{self.group_id}.{step}" for step in self.steps]
        by_run = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id], task_ids=task_ids)
        prefix = f"{self.group_id}."
        states = {key.removeprefix(prefix): state for key, state in by_run.get(ti.run_id, {}).items()}
        # Pull only what exists (a missing XCom is logged as an error by the task SDK).
        errors = {
            f"{step}_{index}": ti.xcom_pull(task_ids=task_id, key=ERROR_KEY, map_indexes=index)
            for step, task_id in zip(self.steps, task_ids, strict=True)
            for index in range(len(names))
            if states.get(f"{step}_{index}") == "failed"
        }
        validations = [
            ti.xcom_pull(task_ids=task_ids[-1], map_indexes=index)
            if states.get(f"{self.steps[-1]}_{index}") in ("success", "failed")
            else None
            for index in range(len(names))
        ]
        outcomes = partition_outcomes(names, self.steps, states, errors, validations)
        records = [asdict(outcome) for outcome in outcomes]
        summary = storage.join(storage.locate(self.out_dir), "summary.json")
        with storage_environment(optional_str(self.storage_conn_id)):
            storage.write_text(summary, json.dumps(records, indent=2) + "\n")
        for outcome in outcomes:
            if outcome.succeeded:
                rows = (outcome.validation or {}).get("rows")
                self.log.info("partition %s: succeeded (%s rows, validation passed)", outcome.partition, rows)
            else:
                self.log.error(
                    "partition %s: FAILED at %s (%s): %s",
                    outcome.partition,
                    outcome.failed_step,
                    outcome.states[outcome.failed_step or ""],
                    outcome.error or "see that task's log",
                )
        failed = [o for o in outcomes if not o.succeeded]
        if failed:
            raise AoDPartitionsFailed(
                f"{len(failed)} of {len(outcomes)} partitions failed: "
                + "; ".join(f"{o.partition} at {o.failed_step}: {o.error or 'see its log'}" for o in failed)
            )
        return records
