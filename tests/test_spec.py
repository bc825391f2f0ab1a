"""The partition spec: the shipped examples load, settings merge, and bad specs fail precisely."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from aod_ops.errors import DataError, SpecError
from aod_ops.metrics import canonical_json
from aod_ops.spec import AgentSetting, load_reference, load_spec, read_records

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_examples_load_with_defaults_and_overrides_merged() -> None:
    spec = load_spec(EXAMPLES / "partitions.yaml")
    by_name = {p.name: p for p in spec.partitions}
    assert list(by_name) == ["cars", "airports", "la-riots", "seattle-weather"]
    riots = by_name["la-riots"]
    assert riots.sensitive == ("first_name", "last_name", "address", "longitude", "latitude")
    assert riots.loop.candidates == 8 and riots.loop.rounds == 5  # one field overridden, the rest default
    weather = by_name["seattle-weather"]
    assert weather.decoding.temperature == 0.9 and weather.decoding.steps == 16
    assert weather.decoding.cache  # the dual cache is on unless a spec turns it off
    assert by_name["cars"].decoding.temperature == 0.8
    assert by_name["cars"].agent == AgentSetting()  # "local"
    assert by_name["cars"].schema_path == (EXAMPLES / "schemas" / "cars.json").resolve()
    assert spec.select("airports") == (by_name["airports"],)
    # The field-overlap gate: 0.3 unless a partition sets its own (cars: small-domain numbers).
    assert by_name["airports"].thresholds.max_field_overlap == 0.3
    assert [r.text for r in by_name["cars"].rules] == ["Displacement >= 15 * Cylinders"]


@pytest.mark.parametrize("name", ["cars", "airports", "la-riots", "seattle-weather"])
def test_example_reference_and_holdout_are_disjoint_extracts(name: str) -> None:
    (partition,) = load_spec(EXAMPLES / "partitions.yaml").select(name)
    reference = load_reference(partition)
    holdout = load_reference(partition, holdout=True)
    assert len(reference) >= 40 and len(holdout) >= 20
    assert not {canonical_json(r) for r in reference} & {canonical_json(r) for r in holdout}


def test_select_unknown_partition_lists_the_names() -> None:
    spec = load_spec(EXAMPLES / "partitions.yaml")
    with pytest.raises(SpecError, match=r"no partition named 'boats' \(partitions: cars, airports"):
        spec.select("boats")


def _spec(tmp_path: Path, partition: dict[str, Any], defaults: dict[str, Any] | None = None) -> Path:
    """A spec in ``tmp_path`` with the cars schema and reference beside it."""
    shutil.copy(EXAMPLES / "schemas" / "cars.json", tmp_path / "cars.json")
    shutil.copy(EXAMPLES / "data" / "cars_reference.jsonl", tmp_path / "cars.jsonl")
    base = {"name": "cars", "schema": "cars.json", "reference": "cars.jsonl", "rows": 10}
    doc = {"defaults": defaults or {}, "partitions": [{**base, **partition}]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("partition", "field", "problem"),
    [
        ({"colour": "red"}, "colour", "unknown field"),
        ({"schema": "missing.json"}, "schema", "file not found"),
        ({"reference": "cars.txt"}, "reference", "file not found"),
        ({"rows": 0}, "rows", "must be at least 1"),
        ({"rows": "many"}, "rows", "must be int, got 'many'"),
        ({"rows": True}, "rows", "must be int, got True"),
        ({"sensitive": ["Owner"]}, "sensitive", "'Owner' is not a top-level property of cars.json"),
        ({"sensitive": "Name"}, "sensitive", "must be a list"),
        ({"loop": {"rounds": "five"}}, "loop.rounds", "must be int"),
        ({"loop": {"round": 5}}, "loop.round", "unknown field"),
        ({"loop": {"target_reward": 2}}, "loop", "target_reward must be between 0 and 1"),
        ({"decoding": {"mode": "greedy"}}, "decoding.mode", "must be one of 'skeleton', 'free'"),
        ({"decoding": {"temperature": -1}}, "decoding", "temperature must be between 0"),
        ({"decoding": {"cache": "no"}}, "decoding.cache", "must be bool, got 'no'"),
        ({"agent": {"base_url": "http://localhost:8000"}}, "agent", "needs 'model'"),
        ({"agent": {"model": "x"}}, "agent", "need 'base_url'"),
        ({"name": "bad name!"}, "name", "must be letters, digits"),
        ({"max_field_overlap": 1.5}, "max_field_overlap", "must be a number between 0 and 1, got 1.5"),
        ({"max_field_overlap": "high"}, "max_field_overlap", "must be a number between 0 and 1"),
    ],
)
def test_bad_partition_field_names_file_partition_and_field(
    tmp_path: Path, partition: dict[str, Any], field: str, problem: str
) -> None:
    path = _spec(tmp_path, partition)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert str(path) in message
    assert "partition '" in message
    assert f"field {field!r}" in message
    assert problem in message


def test_bad_default_is_reported_under_defaults(tmp_path: Path) -> None:
    path = _spec(tmp_path, {}, defaults={"loop": {"patience": 0}})
    with pytest.raises(SpecError, match=r"spec.yaml: defaults: field 'loop': patience must be at least 1"):
        load_spec(path)
    path = _spec(tmp_path, {}, defaults={"model": "x"})
    with pytest.raises(SpecError, match=r"defaults: field 'model': unknown field"):
        load_spec(path)


def test_missing_field_and_unnamed_partition(tmp_path: Path) -> None:
    path = _spec(tmp_path, {"name": None})
    with pytest.raises(SpecError, match=r"partitions\[0\]: field 'name': must be str"):
        load_spec(path)
    doc = yaml.safe_load(path.read_text())
    del doc["partitions"][0]["rows"]
    doc["partitions"][0]["name"] = "cars"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match=r"partition 'cars': field 'rows': missing"):
        load_spec(path)


def test_duplicate_partition_names_fail(tmp_path: Path) -> None:
    path = _spec(tmp_path, {})
    doc = yaml.safe_load(path.read_text())
    doc["partitions"].append(dict(doc["partitions"][0]))
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match=r"partition 'cars': field 'name': duplicate partition name"):
        load_spec(path)


def test_unreadable_reference_fails_at_load_with_its_line(tmp_path: Path) -> None:
    path = _spec(tmp_path, {})
    with (tmp_path / "cars.jsonl").open("a") as handle:
        handle.write('{"Name": "broken"\n')
    with pytest.raises(
        SpecError, match=r"partition 'cars': field 'reference': .*cars.jsonl: line 201: not valid JSON"
    ):
        load_spec(path)


def test_broken_schema_fails_at_load(tmp_path: Path) -> None:
    path = _spec(tmp_path, {})
    (tmp_path / "cars.json").write_text('{"type": "object", "properties": ')
    with pytest.raises(SpecError, match=r"partition 'cars': field 'schema'"):
        load_spec(path)


def test_unsupported_reference_format(tmp_path: Path) -> None:
    path = _spec(tmp_path, {"reference": "cars.xlsx"})
    (tmp_path / "cars.xlsx").write_text("x")
    with pytest.raises(SpecError, match=r"field 'reference': cars.xlsx: unsupported format"):
        load_spec(path)


def test_spec_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope.yaml: cannot read the spec"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("partitions: [\n")
    with pytest.raises(SpecError, match=r"bad.yaml: not valid YAML"):
        load_spec(bad)
    bad.write_text("partitions: []\n")
    with pytest.raises(SpecError, match=r"bad.yaml: spec: field 'partitions': must be a non-empty list"):
        load_spec(bad)


def test_endpoint_agent_and_dlm_mapping(tmp_path: Path) -> None:
    agent = {"base_url": "http://127.0.0.1:8000", "model": "qwen", "api_key_env": "KEY", "timeout": 5}
    path = _spec(tmp_path, {"dlm": {"model": "llada", "trust_remote_code": True}}, defaults={"agent": agent})
    (partition,) = load_spec(path).partitions
    assert partition.agent == AgentSetting(
        base_url="http://127.0.0.1:8000", model="qwen", api_key_env="KEY", timeout=5.0
    )
    assert partition.dlm.model == "llada" and partition.dlm.trust_remote_code


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "count": {"type": "integer"},
        "price": {"type": "number"},
        "active": {"type": "boolean"},
        "note": {"type": ["string", "null"]},
        "score": {"type": ["number", "null"]},
        "code": {"type": ["integer", "string"]},
    },
}


def test_csv_cells_are_typed_by_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "ref.csv"
    path.write_text("name,count,price,active,note,score,code\nab,3,2.5,true,,,7\n42,-1,3,False,hi,,X1\n")
    assert read_records(path, SCHEMA) == [
        {"name": "ab", "count": 3, "price": 2.5, "active": True, "note": "", "score": None, "code": 7},
        {"name": "42", "count": -1, "price": 3.0, "active": False, "note": "hi", "score": None, "code": "X1"},
    ]


def test_csv_cell_of_the_wrong_type_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "ref.csv"
    path.write_text("name,count\nab,3\ncd,three\n")
    with pytest.raises(DataError, match=r"ref.csv: line 3: column 'count': 'three' is not integer"):
        read_records(path, SCHEMA)
    path.write_text("name,count\nab,3,4\n")
    with pytest.raises(DataError, match=r"line 2: more cells than header columns"):
        read_records(path, SCHEMA)


def test_parquet_reference_becomes_json_values(tmp_path: Path) -> None:
    import datetime as dt
    from decimal import Decimal

    table = pa.table(
        {
            "name": ["a", "b"],
            "day": [dt.date(2020, 1, 2), dt.date(2021, 3, 4)],
            "price": pa.array([Decimal("1.50"), Decimal("2.25")], pa.decimal128(5, 2)),
            "tags": [["x"], []],
        }
    )
    path = tmp_path / "ref.parquet"
    pq.write_table(table, path)
    records = read_records(path, {"type": "object"})
    assert records == [
        {"name": "a", "day": "2020-01-02", "price": 1.5, "tags": ["x"]},
        {"name": "b", "day": "2021-03-04", "price": 2.25, "tags": []},
    ]
    json.dumps(records)  # plain JSON values
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"bad.parquet: not a readable Parquet file"):
        read_records(tmp_path / "bad.parquet", {})
