"""The example DAG on a real Airflow: ``airflow dags test``, a real scheduler run, a failure path.

Each test gets a fresh AIRFLOW_HOME (SQLite) made with ``airflow db migrate``; Airflow runs in
subprocesses, as a user runs it. The partitions are tables the tiny random DLM can fill (see
``tiny_specs``). All runs write under one output folder for one logical date, so a later run of
a partition finds its committed table and replaces it (the same rows, never more).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from ray.job_submission import JobSubmissionClient
from ray_head import RayHead, ray_head
from tiny_specs import write_tiny_spec

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
DAGS = Path(__file__).resolve().parents[1] / "dags"
DATE = "2026-11-20"
GOOD = ["seattle-weather", "weather-b"]
QUICK = {"rounds": 1, "candidates": 4, "rows": 8, "model": "tiny-random"}
RUN_TIMEOUT = 1200


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of an Airflow process in ``home``, with this project's DAGs."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra,
    }


def airflow(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the ``airflow`` command; its output comes back as text."""
    return subprocess.run(
        [str(BIN / "airflow"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def fresh_home(home: Path) -> dict[str, str]:
    """A new AIRFLOW_HOME with its metadata database migrated; returns its environment."""
    home.mkdir(parents=True)
    env = airflow_env(home)
    done = airflow(env, "db", "migrate")
    assert done.returncode == 0, done.stderr[-3000:]
    return env


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {
        "good": write_tiny_spec(tmp_path_factory.mktemp("good"), GOOD),
        "broken": write_tiny_spec(tmp_path_factory.mktemp("broken"), ["seattle-weather", "broken"]),
    }


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("out")


def summary(out: Path) -> dict[str, dict[str, Any]]:
    """The run's summary.json, by partition."""
    return {o["partition"]: o for o in json.loads((out / DATE / "summary.json").read_text())}


def test_dags_test_writes_and_validates_two_partitions(
    tmp_path: Path, specs: dict[str, Path], out: Path
) -> None:
    env = fresh_home(tmp_path / "home")
    conf = {"spec": str(specs["good"]), "out": str(out), **QUICK}
    done = airflow(
        env, "dags", "test", "aod_synthesis", DATE, "--conf", json.dumps(conf), timeout=RUN_TIMEOUT
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]

    outcomes = summary(out)
    assert set(outcomes) == set(GOOD)
    for name in GOOD:
        outcome = outcomes[name]
        assert outcome["succeeded"], outcome
        assert outcome["states"] == {"optimize": "success", "synthesize": "success", "validate": "success"}
        assert outcome["validation"]["success"] and outcome["validation"]["rows"] == 8
        table_dir = out / DATE / "tables" / name
        assert pq.read_table(table_dir / "data").num_rows == 8
        assert json.loads((table_dir / "validation_result.json").read_text())["success"] is True
        assert (out / DATE / "prompts" / name / "prompt.json").is_file()
    # The validated tables were published as assets through the task's alias.
    assets = airflow(env, "assets", "list", "--output", "json")
    assert assets.returncode == 0, assets.stderr[-2000:]
    uris = {asset["uri"] for asset in json.loads(assets.stdout)}
    assert {(out / DATE / "tables" / name).as_uri() for name in GOOD} <= uris  # where the tables are


def test_providers_list_shows_the_provider(tmp_path: Path) -> None:
    env = fresh_home(tmp_path / "home")
    done = airflow(env, "providers", "list", "--output", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    (provider,) = [p for p in json.loads(done.stdout) if p["package_name"] == "aod-ops"]
    assert provider["version"] == "0.1.0"
    hooks = airflow(env, "providers", "hooks", "--output", "json")
    types = {h["connection_type"]: h["class"] for h in json.loads(hooks.stdout)}
    assert types["aod"] == "aod_ops.airflow.hooks.AoDHook"
    assert types["aod_ray"] == "aod_ops.airflow.hooks.RayHook"


def test_a_broken_partition_fails_alone_and_the_summary_says_so(
    tmp_path: Path, specs: dict[str, Path], out: Path
) -> None:
    env = fresh_home(tmp_path / "home")
    conf = {"spec": str(specs["broken"]), "out": str(out), **QUICK}
    done = airflow(
        env, "dags", "test", "aod_synthesis", DATE, "--conf", json.dumps(conf), timeout=RUN_TIMEOUT
    )
    log = done.stdout + done.stderr
    assert done.returncode != 0 and "DagRun failed" in log, log[-5000:]

    outcomes = summary(out)
    good, broken = outcomes["seattle-weather"], outcomes["broken"]
    assert good["succeeded"] and good["validation"]["success"]
    assert not broken["succeeded"]
    assert broken["failed_step"] == "optimize"
    assert broken["states"] == {
        "optimize": "failed",
        "synthesize": "upstream_failed",
        "validate": "upstream_failed",
    }
    # The spec's own message: the file, the partition, the field and what is wrong.
    assert broken["error"].startswith(f"{specs['broken']}: partition 'broken': field 'schema'")
    assert "'strin' is not valid" in broken["error"]
    assert "AoDInputError" in log and "partition 'broken'" in log
    assert "1 of 2 partitions failed: broken at optimize" in log
    # The rerun of this date replaced the partition's table: the same rows, not twice as many.
    assert pq.read_table(out / DATE / "tables" / "seattle-weather" / "data").num_rows == 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def head() -> Iterator[RayHead]:
    with ray_head(num_cpus=2) as running:
        yield running


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """End each component's process group (its task processes included), by id."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for process in processes:
        try:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_a_scheduler_runs_the_dag_with_ray_jobs_to_success(
    tmp_path: Path, specs: dict[str, Path], out: Path, head: RayHead
) -> None:
    """Scheduler, DAG processor, API server and triggerer; the run is triggered and polled through
    the REST API; synthesis runs as Ray jobs that the triggerer waits for."""
    home = tmp_path / "home"
    fresh_home(home)
    port = _free_port()
    ray_conn = {"conn_type": "aod_ray", "host": head.address, "password": head.token}
    env = airflow_env(
        home,
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",  # only the run the test triggers
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__API_AUTH__JWT_SECRET="aod-integration-test-secret-of-sufficient-length",
        AIRFLOW_CONN_AOD_RAY_DEFAULT=json.dumps(ray_conn),
    )
    processes: list[subprocess.Popen[bytes]] = []
    logs = {}
    try:
        for component in ("api-server", "scheduler", "dag-processor", "triggerer"):
            logs[component] = home / f"{component}.log"
            with logs[component].open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [str(BIN / "airflow"), component],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        api = f"http://127.0.0.1:{port}"
        client = httpx.Client(base_url=api, timeout=30)
        deadline = time.monotonic() + 300
        while True:  # the API server answers and the DAG processor has stored the DAG
            try:
                token = client.get("/auth/token").json()["access_token"]
                client.headers["Authorization"] = f"Bearer {token}"
                if client.get("/api/v2/dags/aod_synthesis").status_code == 200:
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            assert time.monotonic() < deadline, {c: p.read_text()[-2000:] for c, p in logs.items()}
            time.sleep(3)

        conf = {"spec": str(specs["good"]), "out": str(out), "execution_mode": "ray_job", **QUICK}
        created = client.post(
            "/api/v2/dags/aod_synthesis/dagRuns", json={"logical_date": f"{DATE}T00:00:00Z", "conf": conf}
        )
        assert created.status_code == 200, created.text
        run_id = created.json()["dag_run_id"]
        deadline = time.monotonic() + RUN_TIMEOUT
        while (state := client.get(f"/api/v2/dags/aod_synthesis/dagRuns/{run_id}").json()["state"]) not in (
            "success",
            "failed",
        ):
            assert time.monotonic() < deadline, f"run still {state} after {RUN_TIMEOUT} s"
            time.sleep(10)
        tasks = client.get(f"/api/v2/dags/aod_synthesis/dagRuns/{run_id}/taskInstances").json()
        states = {(t["task_id"], t["map_index"]): t["state"] for t in tasks["task_instances"]}
        assert state == "success", (states, logs["scheduler"].read_text()[-3000:])
    finally:
        _stop_all(processes)

    assert set(states.values()) == {"success"} and len(states) == 2 + 3 * len(GOOD)
    # Synthesis ran as one Ray job per partition, waited for in the triggerer.
    jobs = JobSubmissionClient(head.address, headers=head.headers).list_jobs()
    ours = [j for j in jobs if (j.metadata or {}).get("airflow_run_id") == run_id]
    assert sorted((j.metadata or {})["airflow_map_index"] for j in ours) == ["0", "1"]
    assert {j.status.value for j in ours} == {"SUCCEEDED"}
    run_logs = home / "logs" / "dag_id=aod_synthesis" / f"run_id={run_id}" / "task_id=partition.synthesize"
    for index in range(len(GOOD)):
        task_log = run_logs / f"map_index={index}" / "attempt=1.log"
        assert "Pausing task as DEFERRED" in task_log.read_text()
        # Airflow names the triggerer's part of the log after the triggerer job's id.
        (trigger_file,) = task_log.parent.glob("attempt=1.log.trigger.*.log")
        trigger_log = trigger_file.read_text()
        assert "Trigger fired event" in trigger_log and "'status': 'success'" in trigger_log
    for name in GOOD:
        assert pq.read_table(out / DATE / "tables" / name / "data").num_rows == 8
