"""aod_synthesis: privacy-safe synthetic tables for every partition of a spec, once a day.

For each partition of the spec (mapped at run time over the spec's partition names): optimize
the DLM's prompt with the AoD loop, synthesize the table, validate it with its GX suite and
privacy gates. A summary then reports each partition's outcome, and fails the run if any
partition failed; the other partitions' tables are still written and published.

Output goes to ``<out>/<logical date>/`` (``prompts/``, ``tables/``, ``summary.json``): a rerun
of a date replaces that date's output. ``spec`` and ``out`` are local paths or URIs
(``s3://bucket/prefix``); ``storage_conn_id`` names a connection holding the object store's
credentials (else the worker's own are used). Parsing this file reads nothing but the environment.

Quick run: ``airflow dags test aod_synthesis --conf '{"rounds": 1, "candidates": 4, "rows": 8}'``.
Defaults for the spec and output folder come from ``AOD_SPEC`` and ``AOD_OUTPUT`` when set.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task, task_group

from aod_ops.airflow.hooks import storage_environment
from aod_ops.airflow.operators import (
    AoDOptimizeOperator,
    AoDSummaryOperator,
    AoDSynthesizeOperator,
    AoDValidateOperator,
    partition_names,
)

PROJECT = Path(__file__).resolve().parent.parent
EXAMPLE_SPEC = PROJECT / "examples" / "partitions.yaml"
DEFAULT_OUT = PROJECT / "out" / "aod_synthesis"
SPEC = "{{ params.spec }}"
RUN_DIR = "{{ params.out }}/{{ (dag_run.logical_date or dag_run.run_after) | ds }}"
STORAGE_CONN = "{{ params.storage_conn_id }}"
COUNT = ["null", "integer"]
NAME = ["null", "string"]

with DAG(
    dag_id="aod_synthesis",
    description="AoD synthesis per schema partition: optimize, synthesize, validate, summarize",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    # A model or Ray out of reach may pass on a retry; a bad spec, schema or table is not retried.
    default_args={"retries": 1, "retry_delay": dt.timedelta(seconds=30)},
    render_template_as_native_obj=True,
    tags=["aod"],
    params={
        "spec": Param(os.environ.get("AOD_SPEC", str(EXAMPLE_SPEC)), type="string"),
        "out": Param(os.environ.get("AOD_OUTPUT", str(DEFAULT_OUT)), type="string"),
        "partitions": Param([], type="array", description="partition names; empty: all"),
        "rounds": Param(None, type=COUNT, minimum=1, description="AoD loop rounds; null: the spec's"),
        "candidates": Param(None, type=COUNT, minimum=1, description="per round; null: the spec's"),
        "rows": Param(None, type=COUNT, minimum=1, description="rows per partition; null: the spec's"),
        "model": Param(None, type=NAME, description="DLM instead of the spec's, e.g. tiny-random"),
        "trust_remote_code": Param(False, type="boolean", description="let `model` run its own code (LLaDA)"),
        "execution_mode": Param("local", enum=["local", "ray_job"], description="worker or Ray job"),
        "aod_conn_id": Param(None, type=NAME, description="an `aod` connection for the models"),
        "ray_conn_id": Param(
            "aod_ray_default", type="string", description="the `aod_ray` connection (ray_job mode)"
        ),
        "storage_conn_id": Param(
            None,
            type=NAME,
            description="a connection with S3 credentials for s3:// paths; null: the worker's",
        ),
    },
) as dag:

    @task
    def plan(**context: Any) -> list[str]:
        """The names of the partitions to run (each partition is checked by its own tasks)."""
        params = context["params"]
        with storage_environment(params["storage_conn_id"]):
            return partition_names(params["spec"], params["partitions"])

    @task_group(group_id="partition")
    def per_partition(name: str, spec: str, run_dir: str) -> None:
        """Optimize, synthesize and validate one partition; its tasks depend on its own only."""
        optimize = AoDOptimizeOperator(
            task_id="optimize",
            spec_path=spec,
            partition=name,
            out_dir=run_dir,
            storage_conn_id=STORAGE_CONN,
            rounds="{{ params.rounds }}",
            candidates="{{ params.candidates }}",
            model="{{ params.model }}",
            trust_remote_code="{{ params.trust_remote_code }}",
            aod_conn_id="{{ params.aod_conn_id }}",
        )
        synthesize = AoDSynthesizeOperator(
            task_id="synthesize",
            spec_path=spec,
            partition=name,
            out_dir=run_dir,
            storage_conn_id=STORAGE_CONN,
            rows="{{ params.rows }}",
            model="{{ params.model }}",
            trust_remote_code="{{ params.trust_remote_code }}",
            aod_conn_id="{{ params.aod_conn_id }}",
            execution_mode="{{ params.execution_mode }}",
            ray_conn_id="{{ params.ray_conn_id }}",
            deferrable=True,
        )
        validate = AoDValidateOperator(
            task_id="validate",
            spec_path=spec,
            partition=name,
            out_dir=run_dir,
            storage_conn_id=STORAGE_CONN,
            rows="{{ params.rows }}",
        )
        optimize >> synthesize >> validate

    names = plan()
    steps = per_partition.partial(spec=SPEC, run_dir=RUN_DIR).expand(name=names)
    steps >> AoDSummaryOperator(
        task_id="summary",
        partitions=names,
        group_id="partition",
        out_dir=RUN_DIR,
        storage_conn_id=STORAGE_CONN,
    )
