"""The partition operators without a scheduler: arguments, spec loading, Ray job handling."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml
from airflow.sdk import DAG
from airflow.sdk.exceptions import TaskDeferred

from aod_ops.airflow.exceptions import AoDInputError, AoDTriggerEventError, RayJobFailed
from aod_ops.airflow.operators import (
    AoDOptimizeOperator,
    AoDSynthesizeOperator,
    AoDValidateOperator,
    partition_outcomes,
)
from aod_ops.airflow.partitions import load_partition, optional_int, partition_names
from aod_ops.airflow.triggers import RayJobTrigger
from aod_ops.errors import AodError, SpecError
from aod_ops.ray.jobs import JobState, RayJobs, Submission, SynthesisJob, job_bundle

if TYPE_CHECKING:
    from tests.fakes import FakeTaskInstance

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def spec_with_broken_partition(tmp_path: Path) -> Path:
    """The example spec plus a partition whose schema is not a valid JSON Schema."""
    root = tmp_path / "spec"
    shutil.copytree(EXAMPLES, root)
    (root / "schemas" / "broken.json").write_text(
        json.dumps({"type": "object", "properties": {"x": {"type": "strin"}}})
    )
    spec = root / "partitions.yaml"
    raw = yaml.safe_load(spec.read_text())
    broken_entry = {"name": "broken", "schema": "schemas/broken.json", "rows": 4}
    raw["partitions"].append({**broken_entry, "reference": "data/cars_reference.jsonl"})
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    return spec


class FakeJobs:
    """A RayJobs stand-in: records submissions, deadlines and stops, answers with a given final
    state (a state that is not final: the wait ran past its deadline)."""

    address = "http://head:8265"
    submitted_at = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC

    def __init__(self, final: str = "SUCCEEDED") -> None:
        self.final = final
        self.submitted: list[SynthesisJob] = []
        self.submission_ids: list[str] = []
        self.deadlines: list[float | None] = []
        self.stopped: list[str] = []

    def submit_once(self, job: SynthesisJob, submission_id: str, metadata: dict[str, str]) -> Submission:
        self.submitted.append(job)
        self.submission_ids.append(submission_id)
        return Submission("aod-cars-0123", "PENDING", False, self.submitted_at)

    def wait(self, job_id: str, poll_interval: float, deadline: float | None) -> JobState:
        self.deadlines.append(deadline)
        return JobState(job_id, self.final, "boom" if self.final == "FAILED" else "")

    def logs(self, job_id: str, lines: int = 200) -> str:
        return "Traceback (most recent call last):\nValueError: the DLM ran out of memory"

    def stop(self, job_id: str) -> bool:
        self.stopped.append(job_id)
        return True


def context(ti: FakeTaskInstance) -> Any:
    """A task context holding only ``ti`` (all that these operator paths read)."""
    return {"ti": ti}


def synthesize_op(tmp_path: Path, **kwargs: Any) -> AoDSynthesizeOperator:
    op = AoDSynthesizeOperator(
        task_id="synthesize",
        spec_path=str(EXAMPLES / "partitions.yaml"),
        partition="cars",
        out_dir=str(tmp_path / "run"),
        execution_mode="ray_job",
        **kwargs,
    )
    return op


def test_constructors_do_no_io_and_template_paths_names_and_counts(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere" / "spec.yaml")
    with DAG("t", schedule=None, start_date=dt.datetime(2026, 1, 1)):
        optimize = AoDOptimizeOperator(
            task_id="o", spec_path=missing, partition="{{ params.p }}", out_dir="{{ ds }}", aod_conn_id="nope"
        )
        synthesize = AoDSynthesizeOperator(task_id="s", spec_path=missing, partition="x", out_dir="o")
        validate = AoDValidateOperator(task_id="v", spec_path=missing, partition="x", out_dir="o")
    assert not (tmp_path / "nowhere").exists()
    for op in (optimize, synthesize, validate):
        assert {"spec_path", "partition", "out_dir"} <= set(op.template_fields)
    assert {"rounds", "candidates", "model", "aod_conn_id"} <= set(optimize.template_fields)
    assert {"rows", "execution_mode", "prompt_dir", "ray_conn_id"} <= set(synthesize.template_fields)
    assert [o.name for o in validate.outlets] == ["aod_tables"]  # the partitions' tables, at run time


def test_partition_names_reads_only_the_names(spec_with_broken_partition: Path) -> None:
    names = ["cars", "airports", "la-riots", "seattle-weather", "broken"]
    assert partition_names(spec_with_broken_partition) == names
    assert partition_names(spec_with_broken_partition, ["broken", "cars"]) == ["cars", "broken"]
    with pytest.raises(SpecError, match="no partition named 'trucks'"):
        partition_names(spec_with_broken_partition, ["trucks"])


def test_a_broken_partition_does_not_stop_its_siblings(spec_with_broken_partition: Path) -> None:
    cars = load_partition(spec_with_broken_partition, "cars")
    assert cars.name == "cars" and cars.rows == 1000
    assert cars.schema_path == spec_with_broken_partition.parent / "schemas" / "cars.json"
    with pytest.raises(SpecError) as caught:
        load_partition(spec_with_broken_partition, "broken")
    message = str(caught.value)
    assert message.startswith(f"{spec_with_broken_partition}: partition 'broken': field 'schema'")
    assert "'strin' is not valid" in message


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), ("None", None), (3, 3), ("8", 8)])
def test_optional_counts_accept_native_and_rendered_values(value: Any, expected: int | None) -> None:
    assert optional_int(value, "rows") == expected


@pytest.mark.parametrize("value", ["eight", 0, "2.5", -1])
def test_optional_counts_reject_what_is_not_a_positive_whole_number(value: Any) -> None:
    with pytest.raises(AoDInputError, match="rows must be a whole number"):
        optional_int(value, "rows")


def test_partition_outcomes_name_the_first_failed_step_and_its_error() -> None:
    states = {
        "optimize_0": "success",
        "synthesize_0": "success",
        "validate_0": "success",
        "optimize_1": "failed",
        "synthesize_1": "upstream_failed",
        "validate_1": "upstream_failed",
    }
    errors = {"optimize_1": "partitions.yaml: partition 'broken': field 'schema': invalid"}
    good, bad = partition_outcomes(
        ["cars", "broken"], ("optimize", "synthesize", "validate"), states, errors, [{"rows": 8}, None]
    )
    assert good.succeeded and good.failed_step is None and good.validation == {"rows": 8}
    assert not bad.succeeded
    assert (bad.failed_step, bad.error) == ("optimize", errors["optimize_1"])
    assert bad.states["synthesize"] == "upstream_failed"


def test_ray_job_mode_submits_records_the_job_and_defers(
    tmp_path: Path, task_instance: FakeTaskInstance
) -> None:
    op = synthesize_op(
        tmp_path, deferrable=True, rows=8, model="tiny-random", ray_conn_id="ray_x", job_timeout=600
    )
    op.ray_jobs = FakeJobs()  # type: ignore[assignment]
    ti = task_instance
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context(ti))
    trigger = deferred.value.trigger
    assert isinstance(trigger, RayJobTrigger)
    assert (trigger.job_id, trigger.ray_conn_id) == ("aod-cars-0123", "ray_x")
    assert trigger.deadline == FakeJobs.submitted_at + 600  # absolute, from the first submission
    assert op.ray_jobs.submission_ids == [op.submission_id(context(ti))]  # type: ignore[attr-defined]
    assert ti.xcoms["ray_job_id"] == "aod-cars-0123"
    (job,) = op.ray_jobs.submitted  # type: ignore[attr-defined]
    assert (job.partition, job.rows, job.model) == ("cars", 8, "tiny-random")
    assert job.prompt_dir == tmp_path / "run" / "prompts"
    assert job.out == str(tmp_path / "run" / "tables")


def test_a_failed_job_puts_its_logs_in_the_error(tmp_path: Path, task_instance: FakeTaskInstance) -> None:
    op = synthesize_op(tmp_path, deferrable=False)
    op.ray_jobs = FakeJobs(final="FAILED")  # type: ignore[assignment]
    ti = task_instance
    with pytest.raises(RayJobFailed, match="the DLM ran out of memory") as caught:
        op.execute(context(ti))
    assert caught.value.job_id == "aod-cars-0123" and caught.value.status == "FAILED"
    assert "ran out of memory" in ti.xcoms["error"]


def test_the_worker_waits_until_the_deadline_and_then_stops_the_job(
    tmp_path: Path, task_instance: FakeTaskInstance
) -> None:
    op = synthesize_op(tmp_path, deferrable=False, job_timeout=60)
    op.ray_jobs = FakeJobs(final="RUNNING")  # type: ignore[assignment]
    with pytest.raises(RayJobFailed) as caught:
        op.execute(context(task_instance))
    assert op.ray_jobs.deadlines == [FakeJobs.submitted_at + 60]  # type: ignore[attr-defined]
    assert op.ray_jobs.stopped == ["aod-cars-0123"]  # type: ignore[attr-defined]
    message = str(caught.value).splitlines()[0]
    assert re.fullmatch(
        r"Ray job aod-cars-0123 ended RUNNING: not done by its deadline 2026-01-01 00:01:00 UTC "
        r"\(\d+ s past it\); job_timeout 60 s; stop requested",
        message,
    )


def test_execute_complete_stops_a_timed_out_job_and_rejects_unknown_events(
    tmp_path: Path, task_instance: FakeTaskInstance
) -> None:
    op = synthesize_op(tmp_path, job_timeout=60)
    op.ray_jobs = FakeJobs()  # type: ignore[assignment]
    event = {
        "status": "timeout",
        "job_id": "aod-cars-9",
        "job_status": "RUNNING",
        "message": "not done by its deadline 2026-01-01 00:01:00 UTC (4 s past it)",
    }
    expected = (
        "ended RUNNING: not done by its deadline 2026-01-01 00:01:00 UTC \\(4 s past it\\); job_timeout 60 s"
    )
    with pytest.raises(RayJobFailed, match=expected):
        op.execute_complete(context(task_instance), event)
    assert op.ray_jobs.stopped == ["aod-cars-9"]  # type: ignore[attr-defined]
    with pytest.raises(AoDTriggerEventError, match="unexpected event"):
        op.execute_complete(context(task_instance), None)


def test_the_submission_id_is_the_same_for_every_try_of_a_task_instance(
    tmp_path: Path, task_instance: FakeTaskInstance
) -> None:
    op = synthesize_op(tmp_path)
    first, retry = task_instance, replace(task_instance)
    job_id = op.submission_id(context(first))
    assert job_id == op.submission_id(context(retry))
    assert re.fullmatch(r"aod-cars-[0-9a-f]{16}", job_id)
    other_partition = replace(task_instance, map_index=1)
    other_run = replace(task_instance, run_id="scheduled__2026-01-02T00:00:00+00:00")
    assert len({job_id, *(op.submission_id(context(ti)) for ti in (other_partition, other_run))}) == 3


def test_the_submission_id_keeps_to_the_characters_ray_accepts(
    tmp_path: Path, task_instance: FakeTaskInstance
) -> None:
    op = synthesize_op(tmp_path)
    op.partition = "la riots/1992 – “downtown” " + "x" * 200
    ti = replace(task_instance, run_id="manual__2026-01-01T00:00:00+00:00")
    job_id = op.submission_id(context(ti))
    assert re.fullmatch(r"aod-la-riots-1992-downtown-x{17}-[0-9a-f]{16}", job_id)
    assert len(job_id) <= 61


class FakeCluster:
    """The jobs on a cluster by submission id, with their statuses: its Jobs REST API's
    ``GET /api/jobs/`` (``handle``) and a submitting client's ``submit_job``.

    Like Ray, it refuses a submission id it already knows.
    """

    started_ms = 1_767_225_000_000  # when the jobs already there were submitted

    def __init__(self, statuses: dict[str, str]) -> None:
        self.jobs = {job_id: self._details(job_id, status) for job_id, status in statuses.items()}
        self.submitted: list[str] = []

    def _details(self, job_id: str | None, status: str) -> dict[str, Any]:
        return {"submission_id": job_id, "status": status, "start_time": self.started_ms, "message": ""}

    def handle(self, request: httpx.Request) -> httpx.Response:
        if (request.method, request.url.path) != ("GET", "/api/jobs/"):
            return httpx.Response(405, text=f"not expected here: {request.method} {request.url.path}")
        driver = self._details(None, "RUNNING")  # a driver that did not come through the Jobs API
        return httpx.Response(200, json=[*self.jobs.values(), driver])

    def submit_job(self, *, entrypoint: str, submission_id: str, **kwargs: Any) -> str:
        if submission_id in self.jobs:
            raise RuntimeError(f"Request failed with status code 500: Job {submission_id} already exists.")
        self.jobs[submission_id] = self._details(submission_id, "PENDING")
        self.submitted.append(submission_id)
        return submission_id


def ray_job_op_on(tmp_path: Path, cluster: FakeCluster) -> AoDSynthesizeOperator:
    """A deferrable ``ray_job`` operator whose RayJobs talks to ``cluster``."""
    op = synthesize_op(tmp_path, deferrable=True, job_timeout=600)
    jobs = RayJobs("http://head:8265", transport=httpx.MockTransport(cluster.handle))
    jobs.client = cluster  # submits
    op.ray_jobs = jobs
    return op


# Each row: the attempts already on the cluster (by suffix), then the job the task follows and
# whether it submitted that one.
@pytest.mark.parametrize(
    ("attempts", "followed", "submits"),
    [
        ({}, "", True),
        ({"": "PENDING"}, "", False),
        ({"": "RUNNING"}, "", False),
        ({"": "SUCCEEDED"}, "", False),
        ({"": "FAILED"}, "-2", True),
        ({"": "STOPPED"}, "-2", True),
        ({"": "FAILED", "-2": "RUNNING"}, "-2", False),
        ({"": "FAILED", "-2": "STOPPED"}, "-3", True),
        ({"": "SUCCEEDED", "-2x": "FAILED", "-02-3": "FAILED"}, "", False),  # others' ids are not attempts
    ],
)
def test_a_retry_reattaches_to_a_live_or_finished_job_and_resubmits_after_a_failed_one(
    tmp_path: Path,
    task_instance: FakeTaskInstance,
    capsys: pytest.CaptureFixture[str],
    attempts: dict[str, str],
    followed: str,
    submits: bool,
) -> None:
    ti = task_instance
    stable = synthesize_op(tmp_path).submission_id(context(ti))
    another_tasks = {"aod-cars-0000000000000000": "RUNNING"}
    cluster = FakeCluster(
        {**another_tasks, **{stable + suffix: status for suffix, status in attempts.items()}}
    )
    op = ray_job_op_on(tmp_path, cluster)

    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context(ti))

    trigger = deferred.value.trigger
    assert isinstance(trigger, RayJobTrigger)
    assert trigger.job_id == ti.xcoms["ray_job_id"] == stable + followed
    assert cluster.submitted == ([stable + followed] if submits else [])
    log = capsys.readouterr().out
    assert ("Reattached to Ray job " + stable + followed in log) is not submits
    assert ("Submitted Ray job " + stable + followed in log) is submits
    assert trigger.deadline is not None
    if submits:  # the deadline runs from this submission
        assert before + 600 <= trigger.deadline <= time.time() + 600
    else:  # from the job's own submission, which Ray recorded
        assert trigger.deadline == FakeCluster.started_ms / 1000 + 600


def test_on_kill_stops_the_submitted_job(tmp_path: Path) -> None:
    op = synthesize_op(tmp_path)
    op.ray_jobs = FakeJobs()  # type: ignore[assignment]
    op.on_kill()
    assert op.ray_jobs.stopped == []  # type: ignore[attr-defined]
    op.job_id = "aod-cars-7"
    op.on_kill()
    assert op.ray_jobs.stopped == ["aod-cars-7"]  # type: ignore[attr-defined]


def test_an_unknown_execution_mode_is_an_input_error(tmp_path: Path, task_instance: FakeTaskInstance) -> None:
    op = synthesize_op(tmp_path)
    op.execution_mode = "cluster"
    with pytest.raises(AoDInputError, match="execution_mode must be 'local' or 'ray_job'"):
        op.execute(context(task_instance))


def test_an_input_error_is_pushed_for_the_summary_and_not_retried(
    tmp_path: Path, task_instance: FakeTaskInstance
) -> None:
    op = synthesize_op(tmp_path, deferrable=True)
    op.partition = "trucks"
    op.ray_jobs = FakeJobs()  # type: ignore[assignment]
    ti = task_instance
    with pytest.raises(AoDInputError, match="no partition named 'trucks'"):
        op.execute(context(ti))
    assert "no partition named 'trucks'" in ti.xcoms["error"]
    assert op.ray_jobs.submitted == []  # type: ignore[attr-defined]


def test_job_entrypoint_and_bundle_carry_the_spec_and_prompt(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts" / "cars"
    prompts.mkdir(parents=True)
    (prompts / "prompt.json").write_text('{"instruction": "x"}')
    job = SynthesisJob(
        EXAMPLES / "partitions.yaml", "out/run", "cars", rows=8, prompt_dir=tmp_path / "prompts"
    )
    entry = job.entrypoint()
    assert entry.startswith("aod synthesize --spec spec/partitions.yaml --out /")
    assert entry.endswith("out/run --partition cars --rows 8 --prompt-dir prompts")
    with job_bundle(job) as bundle:
        assert (bundle / "spec" / "partitions.yaml").is_file()
        assert (bundle / "spec" / "schemas" / "cars.json").is_file()
        assert (bundle / "prompts" / "cars" / "prompt.json").read_text() == '{"instruction": "x"}'
        assert not (bundle / "prompts" / "airports").exists()
    assert not bundle.exists()


def test_job_bundle_refuses_a_file_outside_the_spec_and_skips_a_missing_prompt(tmp_path: Path) -> None:
    job = SynthesisJob(EXAMPLES / "partitions.yaml", str(tmp_path), "cars", prompt_dir=tmp_path)
    with job_bundle(job) as bundle:  # no prompt yet: the job uses the partition's initial prompt
        assert not (bundle / "prompts").exists()
    root = tmp_path / "spec"
    root.mkdir()
    text = (EXAMPLES / "partitions.yaml").read_text()
    text = text.replace("schemas/", f"{EXAMPLES}/schemas/").replace("data/", f"{EXAMPLES}/data/")
    (root / "partitions.yaml").write_text(text)
    job = SynthesisJob(root / "partitions.yaml", str(tmp_path), "cars")
    with pytest.raises(AodError, match="outside the spec's folder"), job_bundle(job):
        pass
