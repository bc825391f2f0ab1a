"""The operators' OpenLineage lineage, as the OpenLineage provider extracts it around real runs.

Each operator runs as in ``test_airflow_operators`` (a context holding a task instance that keeps
its XComs; a Ray job stand-in for the synthesis, whose table is committed as a job would); then
the provider's ``ExtractorManager`` extracts the task's lineage for the state the task ended in,
as its listener does. The validation runs its real GX checkpoint and privacy gates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.providers.openlineage.extractors import OperatorLineage
from airflow.providers.openlineage.extractors.manager import ExtractorManager
from airflow.sdk import Asset, AssetAlias
from airflow.sdk.execution_time.context import OutletEventAccessors
from airflow.utils.state import TaskInstanceState
from openlineage.client.serde import Serde
from test_airflow_operators import FakeJobs
from test_light_install import BLOCKED as LIGHT_INSTALL_BLOCKED

from aod_ops.airflow.exceptions import AoDValidationFailed
from aod_ops.airflow.operators import (
    FIDELITY_SUMMARY,
    TABLES_ALIAS,
    AoDOptimizeOperator,
    AoDSynthesizeOperator,
    AoDValidateOperator,
)
from aod_ops.output import PartitionWriter, Provenance, output_schema
from aod_ops.schema import load_schema
from tests.fakes import FakeTaskInstance

ROOT = Path(__file__).resolve().parents[1]
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["name", "age", "plan", "address"],
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Z][a-z]+$"},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "plan": {"enum": ["basic", "pro"]},
        "address": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}


def person(name: str, age: int, plan: str, city: str, tag: str) -> dict[str, Any]:
    return {"name": name, "age": age, "plan": plan, "address": {"city": city}, "tags": [tag]}


REFERENCE = [
    person("Alice", 34, "basic", "Lyon", "early"),
    person("Bruno", 45, "pro", "Porto", "loyal"),
    person("Chiara", 29, "basic", "Turin", "new"),
    person("Dmitri", 52, "pro", "Riga", "vip"),
    person("Elena", 61, "basic", "Seville", "early"),
    person("Farid", 38, "pro", "Ghent", "new"),
]
HOLDOUT = [
    person("Olga", 26, "pro", "Oslo", "loyal"),
    person("Pavel", 44, "basic", "Prague", "new"),
    person("Quinn", 58, "pro", "Quimper", "vip"),
    person("Rosa", 33, "basic", "Rome", "early"),
    person("Sven", 49, "pro", "Sofia", "new"),
    person("Tomas", 64, "basic", "Tallinn", "loyal"),
]
# Novel in every leaf but the plan (a choice): no copy, far from every reference row.
GOOD = [
    person("Gustav", 23, "basic", "Bergen", "a1"),
    person("Hanna", 27, "pro", "Graz", "b2"),
    person("Ivo", 31, "basic", "Split", "c3"),
    person("Jana", 41, "pro", "Brno", "d4"),
    person("Karl", 48, "basic", "Kiel", "e5"),
    person("Lena", 56, "pro", "Tartu", "f6"),
    person("Milo", 67, "basic", "Bari", "g7"),
    person("Nora", 72, "pro", "Aarhus", "h8"),
]
ROWS = len(GOOD)


class FakeDagRun:
    """The dag run fields the extractor manager reads."""

    run_id = FakeTaskInstance.run_id


def write_spec(folder: Path, partition: dict[str, Any]) -> Path:
    """A spec of one partition ``people`` (plus ``partition``'s fields) with its schema."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "people.json").write_text(json.dumps(SCHEMA))
    spec = {
        "defaults": {"dlm": "tiny-random"},
        "partitions": [{"name": "people", "schema": "people.json", "rows": ROWS, **partition}],
    }
    path = folder / "partitions.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    """The ``people`` spec with its reference and holdout as local JSONL files."""
    (tmp_path / "spec").mkdir()
    for name, rows in (("reference", REFERENCE), ("holdout", HOLDOUT)):
        (tmp_path / "spec" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return write_spec(tmp_path / "spec", {"reference": "reference.jsonl", "holdout": "holdout.jsonl"})


def commit_table(out: Path, records: list[dict[str, Any]]) -> None:
    """Commit ``records`` as the partition's table in ``<out>/tables``, as a synthesis job does,
    with a report holding the counts and fidelity figures the synthesis task reads."""
    writer = PartitionWriter(out / "tables", load_schema(SCHEMA), Provenance("people", 1, "tiny-random"))
    for seed, record in enumerate(records):
        writer.add(record, seed)
    figures = {name: 0.5 + index / 100 for index, name in enumerate(FIDELITY_SUMMARY)}
    writer.commit(
        {
            "counts": {"rows": len(records), "rejected": 3},
            "fidelity": {
                "table": figures,
                "holdout": {name: value + 0.2 for name, value in figures.items()},
                "reward": 0.71,
                "holdout_reward": 0.93,
            },
        }
    )


def lineage(op: Any, state: TaskInstanceState, ti: FakeTaskInstance | None = None) -> OperatorLineage:
    """The task's lineage as the OpenLineage listener extracts it in ``state``."""
    return ExtractorManager().extract_metadata(FakeDagRun(), op, state, ti)


def names(datasets: list[Any]) -> list[tuple[str, str]]:
    return [(d.namespace, d.name) for d in datasets]


def as_json(datasets: list[Any]) -> list[dict[str, Any]]:
    """The datasets as the emitted event's JSON carries them."""
    return [json.loads(Serde.to_json(d)) for d in datasets]


def fields(dataset: dict[str, Any]) -> dict[str, Any]:
    """The schema facet's fields by name: a type, or for a nested field (type, its fields)."""

    def shown(field: dict[str, Any]) -> Any:
        nested = field.get("fields")
        return (field["type"], {f["name"]: shown(f) for f in nested}) if nested else field["type"]

    return {field["name"]: shown(field) for field in dataset["facets"]["schema"]["fields"]}


def table_fields() -> dict[str, Any]:
    """The fields the schema facet must show: every Parquet column of the partition's table."""
    columns = output_schema(load_schema(SCHEMA))
    expected = {
        "name": "string",
        "age": "int64",
        "plan": "string",
        "address": ("struct", {"city": "string"}),
        "tags": ("list", {"_element": "string"}),
        "_aod_created_at": "timestamp[us, tz=UTC]",
    }
    assert set(expected) <= set(columns.names)
    return {name: expected.get(name, str(columns.field(name).type)) for name in columns.names}


def test_the_synthesis_reads_the_samples_and_prompt_and_writes_the_table(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    prompt = out / "prompts" / "people" / "prompt.json"
    prompt.parent.mkdir(parents=True)
    prompt.write_text('{"instruction": "x"}')
    commit_table(out, GOOD)
    op = AoDSynthesizeOperator(
        task_id="synthesize",
        spec_path=str(spec),
        partition="people",
        out_dir=str(out),
        execution_mode="ray_job",
        deferrable=False,
    )
    op.ray_jobs = FakeJobs()  # type: ignore[assignment]
    started = lineage(op, TaskInstanceState.RUNNING)
    ti = FakeTaskInstance()
    result = op.execute({"ti": ti})
    done = lineage(op, TaskInstanceState.SUCCESS, ti)

    samples = [("file", str(spec.parent / "reference.jsonl")), ("file", str(spec.parent / "holdout.jsonl"))]
    assert names(done.inputs) == [*samples, ("file", str(prompt))]
    # The table is the dataset its asset names (the provider translates the asset's URI).
    table = out / "tables" / "people"
    asset = ExtractorManager.convert_to_ol_dataset(Asset(uri=table.as_uri()))
    assert asset is not None and names(done.outputs) == [("file", str(table))] == names([asset])
    (output,) = as_json(done.outputs)
    assert fields(output) == table_fields()
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == ROWS == result["rows"]
    assert output["facets"]["aod_fidelity"]["figures"] == result["fidelity"]
    assert result["fidelity"]["quality"] == {"table": 0.5, "holdout": 0.7}
    # Before the run: the same datasets, without what the run found.
    (planned,) = as_json(started.outputs)
    assert names(started.inputs) == names(done.inputs) and names(started.outputs) == names(done.outputs)
    assert "aod_fidelity" not in planned["facets"] and planned["outputFacets"] == {}


def validate_op(spec: Path, out: Path | str) -> AoDValidateOperator:
    return AoDValidateOperator(task_id="validate", spec_path=str(spec), partition="people", out_dir=str(out))


def assertions(dataset: dict[str, Any]) -> list[dict[str, Any]]:
    return dataset["inputFacets"]["dataQualityAssertions"]["assertions"]


def test_a_passing_validation_carries_each_check_and_publishes_the_table(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    commit_table(out, GOOD)
    op = validate_op(spec, out)
    ti, events = FakeTaskInstance(), OutletEventAccessors()
    result = op.execute({"ti": ti, "outlet_events": events})
    done = lineage(op, TaskInstanceState.SUCCESS, ti)

    table = ("file", str(out / "tables" / "people"))
    # The output is the table the task published, as the provider translates that asset.
    (event,) = events[AssetAlias(TABLES_ALIAS)].asset_alias_events
    published = ExtractorManager.convert_to_ol_dataset(Asset(uri=event.dest_asset_key.uri))
    assert published is not None and names([published]) == [table]
    samples = [("file", str(spec.parent / "reference.jsonl")), ("file", str(spec.parent / "holdout.jsonl"))]
    assert names(done.inputs) == [*samples, table]
    assert names(done.outputs) == [table]
    checked = as_json(done.inputs)[2]
    assert fields(checked) == fields(as_json(done.outputs)[0]) == table_fields()
    checks = assertions(checked)
    assert result["success"] and len(checks) == result["evaluated"]
    assert all(check["success"] for check in checks)
    by_kind = {(check["assertion"], check.get("column")): check for check in checks}
    assert by_kind["expect_column_values_to_be_between", "age"]["params"] == {
        "source": "schema:/properties/age/bounds"
    }
    gate = by_kind["dcr_p5", "_aod_record"]
    assert gate["expected"].startswith("> ") and float(gate["actual"]) > float(gate["expected"][2:])
    assert checked["inputFacets"]["dataQualityMetrics"]["rowCount"] == ROWS


def test_a_failed_validation_shows_each_failing_check_as_a_failed_assertion(
    spec: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    commit_table(out, [*GOOD[:-1], {**GOOD[-1], "age": 150}])
    op = validate_op(spec, out)
    ti = FakeTaskInstance()
    with pytest.raises(AoDValidationFailed):
        op.execute({"ti": ti, "outlet_events": OutletEventAccessors()})
    failed = lineage(op, TaskInstanceState.FAILED, ti)

    checks = assertions(as_json(failed.inputs)[2])
    failing = {(check["assertion"], check.get("column")) for check in checks if not check["success"]}
    reported = {(f["expectation"], f["column"]) for f in ti.xcoms["return_value"]["failed"]}
    assert ("expect_column_values_to_be_between", "age") in failing
    assert failing == reported
    assert len(checks) == ti.xcoms["return_value"]["evaluated"] > len(failing)


@pytest.mark.parametrize(
    ("conn", "namespace"),
    [
        ("postgresql+psycopg://reader:${PGPASS}@db.internal/warehouse", "postgres://db.internal:5432"),
        ("warehouse_readonly", "postgres://db.internal:5433"),  # an Airflow connection id
    ],
)
def test_query_and_object_store_samples_are_named_as_openlineage_names_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conn: str, namespace: str
) -> None:
    secret = "s3cr3t-pw"
    monkeypatch.setenv("PGPASS", secret)
    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE_READONLY", f"postgres://reader:{secret}@db.internal:5433/warehouse"
    )
    query = "SELECT p.name, p.age, a.city FROM people p JOIN crm.accounts a ON a.person = p.id"
    spec = write_spec(
        tmp_path / "spec",
        {"reference": {"sql": query, "conn": conn}, "holdout": "s3://lake/people/holdout.jsonl"},
    )
    out = "s3://lake/aod/2026-01-01"
    validate = validate_op(spec, out)
    optimize = AoDOptimizeOperator(task_id="optimize", spec_path=str(spec), partition="people", out_dir=out)

    planned = lineage(validate, TaskInstanceState.RUNNING)
    tables = [(namespace, "warehouse.public.people"), (namespace, "warehouse.crm.accounts")]
    table = ("s3://lake", "aod/2026-01-01/tables/people")
    assert sorted(names(planned.inputs)[:2]) == sorted(tables)
    assert names(planned.inputs)[2:] == [("s3://lake", "people/holdout.jsonl"), table]
    assert names(planned.outputs) == [table]
    assert secret not in json.dumps(as_json(planned.inputs))
    optimized = lineage(optimize, TaskInstanceState.RUNNING)
    assert names(optimized.inputs) == names(planned.inputs)[:3]
    assert names(optimized.outputs) == [("s3://lake", "aod/2026-01-01/prompts/people/prompt.json")]


MISSING = r"""
import datetime as dt
import importlib.abc
import json
import sys

BLOCKED = frozenset(sys.argv[1].split(","))


class Missing(importlib.abc.MetaPathFinder):
    # As if these packages were not installed: the error names the top-level package, as Python's does.
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in BLOCKED:
            raise ModuleNotFoundError(f"No module named {top!r}", name=top)
        return None


sys.meta_path.insert(0, Missing())
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import DAG

from aod_ops.airflow.operators import AoDValidateOperator

result = {}
bag = DagBag(dag_folder=sys.argv[2])
result["import_errors"] = {str(k): str(v)[-500:] for k, v in bag.import_errors.items()}
with DAG("t", schedule=None, start_date=dt.datetime(2026, 1, 1)):
    op = AoDValidateOperator(task_id="v", spec_path=sys.argv[3], partition="cars", out_dir=sys.argv[4])
lineage = ("openlineage", "airflow.providers.openlineage.extractors", "aod_ops.airflow.lineage")
result["lineage_loaded"] = sorted(m for m in sys.modules if m.startswith(lineage))
try:
    result["inputs"] = [[d.namespace, d.name] for d in op.get_openlineage_facets_on_start().inputs]
except ModuleNotFoundError as exc:
    result["inputs"] = f"no module named {exc.name}"
result["blocked_loaded"] = sorted({m.partition(".")[0] for m in sys.modules} & BLOCKED)
print("RESULT " + json.dumps(result))
"""


def run_missing(blocked: Sequence[str], out: Path) -> dict[str, Any]:
    """Parse the DAGs, build a validate operator and ask for its lineage in a process where the
    ``blocked`` packages cannot be imported."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    args = [",".join(blocked), str(ROOT / "dags"), str(ROOT / "examples" / "partitions.yaml"), str(out)]
    done = subprocess.run(
        [sys.executable, "-c", MISSING, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    assert result["import_errors"] == {}
    assert result["blocked_loaded"] == []
    return result


def test_the_operators_work_without_the_openlineage_provider(tmp_path: Path) -> None:
    """Without OpenLineage the DAG parses and the operators build, importing none of it; only
    their lineage methods, which nothing but the OpenLineage provider calls, cannot run."""
    result = run_missing(["openlineage", "openlineage_sql"], tmp_path)
    assert result["lineage_loaded"] == []
    assert result["inputs"] == "no module named openlineage"


def test_lineage_needs_none_of_the_engine(tmp_path: Path) -> None:
    """The lineage works where only ``aod-ops[airflow]`` is installed (no torch, Ray, GX...)."""
    result = run_missing(LIGHT_INSTALL_BLOCKED, tmp_path)
    data = ROOT / "examples" / "data"
    assert result["inputs"] == [
        ["file", str(data / "cars_reference.jsonl")],
        ["file", str(data / "cars_holdout.jsonl")],
        ["file", str(tmp_path / "tables" / "cars")],
    ]
