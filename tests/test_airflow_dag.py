"""The example DAG imports cleanly, has the intended shape, and does no heavy work when parsed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import TriggerRule

DAGS = Path(__file__).resolve().parents[1] / "dags"


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS))


def test_dagbag_imports_without_errors(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}
    assert "aod_synthesis" in dagbag.dags


def test_steps_are_mapped_per_partition_then_summarized(dagbag: DagBag) -> None:
    dag = dagbag.dags["aod_synthesis"]
    assert {t.task_id for t in dag.tasks} == {
        "plan",
        "partition.optimize",
        "partition.synthesize",
        "partition.validate",
        "summary",
    }
    # The three steps sit in one mapped task group: each partition's steps depend on its own.
    assert type(dag.task_group_dict["partition"]).__name__ == "MappedTaskGroup"
    assert dag.get_task("partition.synthesize").upstream_task_ids == {"plan", "partition.optimize"}
    assert dag.get_task("partition.validate").upstream_task_ids == {"plan", "partition.synthesize"}
    summary = dag.get_task("summary")
    assert summary.trigger_rule == TriggerRule.ALL_DONE
    assert summary.upstream_task_ids == {"plan", "partition.validate"}


def test_daily_schedule_and_params_for_a_quick_run(dagbag: DagBag) -> None:
    dag = dagbag.dags["aod_synthesis"]
    assert "expression='0 0 * * *'" in repr(dag.timetable)  # @daily
    assert dag.max_active_runs == 1
    params = dag.params
    assert Path(params["spec"]).name == "partitions.yaml"
    for name in ("rounds", "candidates", "rows", "model"):
        assert params[name] is None  # the spec's settings unless the run's conf says otherwise
    assert params["execution_mode"] == "local"
    assert params["partitions"] == []


def test_parsing_reads_no_spec_and_imports_no_model_stack(tmp_path: Path) -> None:
    """The DAG file is parsed often: it must not read the spec or import torch, ray or GX."""
    code = (
        "import sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS)!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "heavy = [m for m in ('torch', 'ray', 'great_expectations', 'transformers') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    env = {**os.environ, "AOD_SPEC": str(tmp_path / "missing.yaml"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "HEAVY []" in done.stdout
