"""The partition output on disk: stable record ids, typed Parquet, quarantine, atomic commits."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aod_ops.errors import SchemaError
from aod_ops.output import (
    CONTRACT_COLUMNS,
    QUARANTINE,
    STAGING,
    PartitionWriter,
    Provenance,
    output_schema,
    read_report,
    record_id,
    recover,
)
from aod_ops.schema import load_schema

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "count": {"type": "integer", "minimum": 0, "maximum": 100},
        "dims": {
            "type": "object",
            "properties": {"w": {"type": "number"}, "h": {"type": "integer", "minimum": 0, "maximum": 9}},
        },
        "tags": {"type": "array", "items": {"enum": ["x", "y"]}},
    },
}
RECORDS = [
    {"name": "cup", "count": 3, "dims": {"w": 2.5, "h": 2}, "tags": ["x"]},
    {"name": "lamp", "count": 10, "dims": {"w": 4.0, "h": 5}, "tags": ["y", "x"]},
    {"name": "pen", "count": 0, "tags": []},
]


def _writer(out: Path, rows_per_file: int = 100) -> PartitionWriter:
    return PartitionWriter(out, load_schema(SCHEMA), Provenance("items", 2, "tiny-random"), rows_per_file)


def _report(rows: int) -> dict[str, Any]:
    return {"partition": "items", "counts": {"rows": rows}}


def test_record_id_is_a_hash_of_partition_and_canonical_record() -> None:
    record = {"b": 18.0, "a": [1, {"y": 2, "x": 1}]}
    same = {"a": [1, {"x": 1, "y": 2}], "b": 18}  # key order and 18.0 vs 18 do not matter
    assert record_id("cars", record) == record_id("cars", same)
    assert record_id("cars", record) != record_id("boats", record)
    assert record_id("cars", record) != record_id("cars", {**same, "b": 19})
    # Pinned: a changed scheme would give existing outputs new ids and break idempotent reruns.
    assert record_id("cars", {"a": 1}) == "8c663040aec30378a6050cad25fb5c1a"


def test_output_schema_puts_typed_columns_between_the_provenance_columns() -> None:
    schema = output_schema(load_schema(SCHEMA))
    assert schema.names == [
        "_aod_record_id",
        "_aod_partition",
        "_aod_record",
        "name",
        "count",
        "dims",
        "tags",
        *CONTRACT_COLUMNS[3:],
    ]
    assert schema.field("dims").type == pa.struct([("w", pa.float64()), ("h", pa.int64())])
    assert schema.field("tags").type == pa.list_(pa.string())
    assert schema.field("_aod_created_at").type == pa.timestamp("us", tz="UTC")


def test_properties_named_like_provenance_get_their_own_columns() -> None:
    names = ["record_id", "partition", "record", "prompt_version", "model", "seed", "created_at"]
    schema = load_schema({"type": "object", "properties": {name: {"type": "string"} for name in names}})
    assert output_schema(schema).names == [*CONTRACT_COLUMNS[:3], *names, *CONTRACT_COLUMNS[3:]]


def test_a_property_in_the_provenance_namespace_is_refused() -> None:
    schema = load_schema({"type": "object", "properties": {"_aod_seed": {"type": "integer"}}})
    with pytest.raises(SchemaError, match=r"'_aod_seed' start with '_aod_', the prefix of the output's"):
        output_schema(schema)


def test_commit_writes_typed_rows_quarantine_and_report_then_removes_staging(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    ids = [writer.add(record, seed=100 + i) for i, record in enumerate(RECORDS)]
    writer.reject(
        7, '{"name": ""}', {"name": ""}, ["degenerate"], ['record 1 at /name: "" is an empty string']
    )
    writer.reject(8, "not json", None, ["parse"], ["record 2 did not parse"])
    final = writer.commit(_report(3))

    assert final == tmp_path / "items"
    assert sorted(p.name for p in final.iterdir()) == ["data", "quarantine", "report.json"]
    assert not (tmp_path / STAGING).exists()
    data = pq.read_table(final / "data")
    assert data.schema == output_schema(load_schema(SCHEMA))
    rows = data.to_pylist()
    assert [r["_aod_record_id"] for r in rows] == ids == [record_id("items", r) for r in RECORDS]
    assert [json.loads(r["_aod_record"]) for r in rows] == RECORDS
    assert rows[0]["dims"] == {"w": 2.5, "h": 2} and rows[1]["tags"] == ["y", "x"]
    assert rows[2]["dims"] is None and rows[2]["tags"] == []  # a missing property is null
    assert {(r["_aod_partition"], r["_aod_prompt_version"], r["_aod_model"]) for r in rows} == {
        ("items", 2, "tiny-random")
    }
    assert [r["_aod_seed"] for r in rows] == [100, 101, 102]
    quarantine = pq.read_table(final / "quarantine")
    assert quarantine.schema == QUARANTINE
    rejects = quarantine.to_pylist()
    assert [(r["seed"], r["record"], r["kinds"]) for r in rejects] == [
        (7, '{"name": ""}', ["degenerate"]),
        (8, None, ["parse"]),
    ]
    assert rejects[1]["text"] == "not json" and rejects[1]["reasons"] == ["record 2 did not parse"]
    assert read_report(tmp_path, "items") == _report(3)


def test_rows_beyond_rows_per_file_go_to_further_files(tmp_path: Path) -> None:
    writer = _writer(tmp_path, rows_per_file=2)
    for i, record in enumerate(RECORDS):
        writer.add(record, seed=i)
    final = writer.commit(_report(3))
    files = sorted(p.name for p in (final / "data").iterdir())
    assert files == ["part-00000.parquet", "part-00001.parquet"]
    assert pq.read_table(final / "data").num_rows == 3
    # No rejects: an empty quarantine file still carries the schema for readers.
    assert pq.read_table(final / "quarantine").schema == QUARANTINE


def test_commit_replaces_an_earlier_output_whole(tmp_path: Path) -> None:
    first = _writer(tmp_path)
    for i, record in enumerate(RECORDS):
        first.add(record, seed=i)
    first.commit(_report(3))
    second = _writer(tmp_path)
    second.add(RECORDS[0], seed=0)
    final = second.commit(_report(1))
    assert pq.read_table(final / "data").column("_aod_seed").to_pylist() == [0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items"]


def test_abort_leaves_the_committed_output_as_it_was(tmp_path: Path) -> None:
    first = _writer(tmp_path)
    first.add(RECORDS[0], seed=0)
    first.commit(_report(1))
    second = _writer(tmp_path)
    second.add(RECORDS[1], seed=1)
    second.abort()
    assert pq.read_table(tmp_path / "items" / "data").column("_aod_seed").to_pylist() == [0]


def test_recover_removes_what_a_dead_run_left_in_staging(tmp_path: Path) -> None:
    first = _writer(tmp_path)
    first.add(RECORDS[0], seed=0)
    first.commit(_report(1))
    dead = _writer(tmp_path)  # a run that died before committing: its staging folder stays
    dead.add(RECORDS[1], seed=1)
    dead._flush("data")
    recover(tmp_path, "items")
    assert not (tmp_path / STAGING / "items").exists()
    assert read_report(tmp_path, "items") == _report(1)


def test_recover_finishes_a_commit_cut_off_between_its_renames(tmp_path: Path) -> None:
    first = _writer(tmp_path)
    first.add(RECORDS[0], seed=0)
    first.commit(_report(1))
    second = _writer(tmp_path)
    second.add(RECORDS[1], seed=1)
    second.add(RECORDS[2], seed=2)
    second._flush("data", always=True)
    second._flush("quarantine", always=True)
    (second.staging / "report.json").write_text(json.dumps(_report(2)))
    # The crash: the old output moved aside, the new one not yet moved in.
    os.rename(tmp_path / "items", second.staging.with_name(second.staging.name + ".old"))
    assert read_report(tmp_path, "items") is None
    recover(tmp_path, "items")
    assert read_report(tmp_path, "items") == _report(2)
    assert pq.read_table(tmp_path / "items" / "data").column("_aod_seed").to_pylist() == [1, 2]
    assert not (tmp_path / STAGING / "items").exists()


def test_read_report_refuses_an_output_whose_data_does_not_match_its_counts(tmp_path: Path) -> None:
    assert read_report(tmp_path, "items") is None
    writer = _writer(tmp_path, rows_per_file=2)
    for i, record in enumerate(RECORDS):
        writer.add(record, seed=i)
    final = writer.commit(_report(3))
    (final / "data" / "part-00001.parquet").unlink()
    assert read_report(tmp_path, "items") is None
