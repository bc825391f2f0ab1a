"""Cluster mode against a real Ray head that the module starts on loopback and stops afterwards.

The head has 2 CPUs, its dashboard (the Jobs API) and token authentication. Jobs run
``aod synthesize`` with the tiny random DLM on a spec whose folder travels in the job's
runtime_env: a job that succeeds writes the partition; a failing job's logs are fetched; a stopped
job ends STOPPED without output; the deferrable operator runs a job through its trigger; a retried
task reattaches to its job instead of submitting a second one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import pytest
from airflow.sdk.exceptions import TaskDeferred
from ray_head import RayHead, ray_head
from tiny_specs import write_tiny_spec

from aod_ops.agents.prompt import initial_prompt
from aod_ops.airflow.operators import AoDSynthesizeOperator
from aod_ops.cli import main
from aod_ops.errors import AodError
from aod_ops.ray.jobs import JobInfo, RayJobs, SynthesisJob, run_synthesis_job
from aod_ops.schema import load_schema
from aod_ops.spec import load_reference, load_spec

if TYPE_CHECKING:
    from tests.fakes import FakeTaskInstance

pytestmark = pytest.mark.integration
JOB_TIMEOUT = 420.0


@pytest.fixture(scope="module")
def head() -> Iterator[RayHead]:
    with ray_head(num_cpus=2) as running:
        yield running


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_spec(tmp_path_factory.mktemp("spec"), ["seattle-weather", "car-specs"], rows=4)


@pytest.fixture
def jobs(head: RayHead) -> RayJobs:
    return RayJobs(head.address, headers=head.headers)


def test_a_synthesis_job_writes_the_partition_with_the_prompt_it_carried(
    jobs: RayJobs, spec: Path, tmp_path: Path
) -> None:
    (partition,) = load_spec(spec).select("seattle-weather")
    schema = load_schema(partition.schema_path).contents
    prompt = replace(initial_prompt(partition, schema, load_reference(partition)), version=7)
    (tmp_path / "prompts" / partition.name).mkdir(parents=True)
    (tmp_path / "prompts" / partition.name / "prompt.json").write_text(prompt.to_json())
    out = tmp_path / "tables"
    job = SynthesisJob(spec, str(out), partition.name, rows=4, actors=1, prompt_dir=tmp_path / "prompts")

    job_id = jobs.submit(job, {"airflow_dag_id": "test"})
    state = jobs.wait(job_id, poll_interval=2.0, deadline=time.time() + JOB_TIMEOUT)

    assert state.succeeded, jobs.logs(job_id)
    info = jobs.info(job_id)
    assert info.entrypoint == job.entrypoint() and info.metadata == {"airflow_dag_id": "test"}
    table = pq.read_table(out / partition.name / "data")
    assert table.num_rows == 4
    assert set(table.column("_aod_prompt_version").to_pylist()) == {7}
    assert set(table.column("_aod_model").to_pylist()) == {"tiny-random"}
    report = json.loads((out / partition.name / "report.json").read_text())
    assert report["counts"]["rows"] == 4
    assert report["prompt"]["source"].endswith("prompts/seattle-weather/prompt.json")


def test_aod_synthesize_with_a_dashboard_address_submits_a_ray_job(
    head: RayHead,
    spec: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", head.token)  # the cluster's token, as Ray's own tools take it
    out = tmp_path / "tables"
    args = ["synthesize", "--spec", str(spec), "--partition", "car-specs", "--rows", "3", "--actors", "1"]
    assert main([*args, "--out", str(out), "--ray-address", head.address]) == 0
    assert pq.read_table(out / "car-specs" / "data").num_rows == 3
    err = capsys.readouterr().err
    assert f"to {head.address}" in err and "succeeded" in err


def test_a_failing_jobs_logs_are_fetched(jobs: RayJobs, spec: Path, tmp_path: Path) -> None:
    job = SynthesisJob(spec, str(tmp_path / "tables"), "car-specs", rows=4, model="no-such-model")
    said: list[str] = []
    with pytest.raises(AodError) as caught:
        run_synthesis_job(jobs, job, poll_interval=1.0, timeout=JOB_TIMEOUT, echo=said.append)
    message = str(caught.value)
    assert " ended FAILED" in message
    assert "last lines of the job's logs" in message
    assert "unknown model 'no-such-model'" in message  # the job's own error, from its logs
    assert said[0].startswith("submitted Ray job aod-car-specs-")
    assert not (tmp_path / "tables" / "car-specs").exists()


def test_a_stopped_job_ends_stopped_without_output(jobs: RayJobs, spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    job_id = jobs.submit(SynthesisJob(spec, str(out), "car-specs", rows=5000, actors=1))
    deadline = time.monotonic() + JOB_TIMEOUT
    while (state := jobs.state(job_id)).status == "PENDING" and time.monotonic() < deadline:
        time.sleep(1.0)
    assert state.status == "RUNNING", jobs.logs(job_id)
    time.sleep(5.0)  # let the driver get into the synthesis

    assert jobs.stop(job_id)
    final = jobs.wait(job_id, poll_interval=1.0, deadline=time.time() + 120.0)

    assert final.status == "STOPPED"
    assert not (out / "car-specs" / "report.json").exists()


def test_the_deferrable_operator_runs_the_job_through_its_trigger(
    head: RayHead,
    spec: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    task_instance: FakeTaskInstance,
) -> None:
    conn = {"conn_type": "aod_ray", "host": head.address, "password": head.token}
    monkeypatch.setenv("AIRFLOW_CONN_RAY_IT", json.dumps(conn))
    op = AoDSynthesizeOperator(
        task_id="synthesize",
        spec_path=str(spec),
        partition="car-specs",
        out_dir=str(tmp_path / "run"),
        rows=4,
        actors=1,
        execution_mode="ray_job",
        ray_conn_id="ray_it",
        deferrable=True,
        poll_interval=2.0,
        job_timeout=JOB_TIMEOUT,
    )
    ti = task_instance
    context: Any = {"ti": ti}
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)

    async def first_event() -> dict[str, Any]:
        async for event in deferred.value.trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger fired no event")

    event = asyncio.run(first_event())
    assert event["status"] == "success", event
    result = op.execute_complete(context, event)

    assert result["ray_job_id"] == ti.xcoms["ray_job_id"] == event["job_id"]
    assert result["rows"] == 4
    assert pq.read_table(tmp_path / "run" / "tables" / "car-specs" / "data").num_rows == 4


def _stop_once_started(jobs: RayJobs, job_id: str) -> str:
    """Stop a job once it has left PENDING (Ray can stop it only then); its final status."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while jobs.state(job_id).status == "PENDING" and time.monotonic() < deadline:
        time.sleep(1.0)
    jobs.stop(job_id)
    return jobs.wait(job_id, poll_interval=1.0, deadline=time.time() + 120.0).status


def test_a_retried_task_reattaches_to_its_job_instead_of_submitting_another(
    head: RayHead,
    jobs: RayJobs,
    spec: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    task_instance: FakeTaskInstance,
) -> None:
    conn = {"conn_type": "aod_ray", "host": head.address, "password": head.token}
    monkeypatch.setenv("AIRFLOW_CONN_RAY_IT", json.dumps(conn))
    # Not the run of the test above, whose job succeeded.
    ti = replace(task_instance, run_id="manual__retried")

    def one_try() -> Any:
        """One try of the task instance, by a fresh operator as Airflow makes for each try; its trigger."""
        op = AoDSynthesizeOperator(
            task_id="synthesize",
            spec_path=str(spec),
            partition="car-specs",
            out_dir=str(tmp_path / "run"),
            rows=5000,  # long enough to be running still when the retry comes
            actors=1,
            execution_mode="ray_job",
            ray_conn_id="ray_it",
            deferrable=True,
            job_timeout=JOB_TIMEOUT,
        )
        with pytest.raises(TaskDeferred) as deferred:
            op.execute({"ti": ti})
        return deferred.value.trigger

    def attempts(job_id: str) -> list[JobInfo]:
        return [j for j in jobs.list_jobs() if (j.submission_id or "").startswith(job_id)]

    first = one_try()
    capsys.readouterr()
    retry = one_try()

    assert retry.job_id == first.job_id == ti.xcoms["ray_job_id"]
    # The deadline runs from the job's submission as Ray recorded it (the first try took its own
    # clock a moment before), not from the retry.
    assert retry.deadline == pytest.approx(first.deadline, abs=5.0)
    assert f"Reattached to Ray job {first.job_id}" in capsys.readouterr().out
    (job,) = attempts(first.job_id)  # exactly one Ray job for the two tries
    airflow_keys = {key: value for key, value in (job.metadata or {}).items() if key.startswith("airflow_")}
    assert airflow_keys == {
        "airflow_dag_id": ti.dag_id,
        "airflow_run_id": ti.run_id,
        "airflow_task_id": ti.task_id,
        "airflow_map_index": str(ti.map_index),
    }

    # Once the job is stopped, the next try submits a new attempt: Ray refuses a submission id twice.
    assert _stop_once_started(jobs, first.job_id) == "STOPPED"
    second_attempt = one_try()
    assert second_attempt.job_id == f"{first.job_id}-2"
    assert second_attempt.deadline > first.deadline
    assert sorted(j.submission_id for j in attempts(first.job_id)) == [first.job_id, second_attempt.job_id]
    assert _stop_once_started(jobs, second_attempt.job_id) == "STOPPED"
