"""Locations by URI (``aod_ops.storage``) and the partition commit on an object store, against a
real S3 API on loopback (moto's server, see ``conftest.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from aod_ops import storage
from aod_ops.errors import SpecError
from aod_ops.output import MANIFEST, PartitionWriter, Provenance, committed_dir, read_report, recover
from aod_ops.ray.jobs import SynthesisJob, job_bundle
from aod_ops.schema import load_schema
from aod_ops.spec import load_reference, load_spec
from aod_ops.storage import StorageError

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"color": {"$ref": "colors.json"}, "size": {"$ref": "#/$defs/size"}},
    "required": ["color", "size"],
    "$defs": {"size": {"type": "integer", "minimum": 1, "maximum": 9}},
}
COLORS = {"enum": ["red", "green", "blue"]}
COLORS_SCHEMA = {"type": "object", "properties": {"color": COLORS, "size": {"type": "integer"}}}
REFERENCE = [{"color": "red", "size": 1}, {"color": "blue", "size": 2}]
HOLDOUT = [{"color": "green", "size": 3}]


def _jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_a_local_location_is_an_absolute_path_and_a_uri_stays_a_uri(tmp_path: Path) -> None:
    assert storage.locate("data/x.csv", tmp_path) == tmp_path / "data" / "x.csv"
    assert storage.locate(f"file://{tmp_path}/x.csv") == tmp_path / "x.csv"
    assert storage.locate("s3://bucket/out/") == "s3://bucket/out"
    assert storage.locate("../data/x.csv", "s3://bucket/spec") == "s3://bucket/data/x.csv"
    assert storage.locate("s3://other/x.csv", tmp_path) == "s3://other/x.csv"
    assert storage.join("s3://bucket/out", "cars", "data") == "s3://bucket/out/cars/data"
    assert (storage.name("s3://b/d/x.CSV"), storage.suffix("s3://b/d/x.CSV")) == ("x.CSV", ".csv")
    assert storage.parent("s3://b/d/x.csv") == "s3://b/d"
    assert storage.uri(tmp_path / "x") == (tmp_path / "x").as_uri()


def test_an_unknown_scheme_is_an_error_that_names_it() -> None:
    with pytest.raises(StorageError, match=r"bogus://b/x: unknown scheme 'bogus'"):
        storage.locate("bogus://b/x")


def test_a_local_write_is_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "new" / "folder" / "x.json"
    storage.write_text(target, "{}\n")
    storage.write_text(target, '{"a": 1}\n')
    assert storage.read_text(target) == '{"a": 1}\n'
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]
    assert storage.list_files(tmp_path / "new" / "folder", ".json") == [target]
    assert storage.list_files(tmp_path / "missing") == []
    storage.remove(tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_files_on_s3_are_written_read_listed_and_removed(s3_bucket: str) -> None:
    folder = f"{s3_bucket}/a"
    storage.write_text(f"{folder}/x.json", "{}")
    storage.write_bytes(f"{folder}/sub/y.bin", b"\x00\x01")
    assert storage.read_text(f"{folder}/x.json") == "{}"
    assert storage.read_bytes(f"{folder}/sub/y.bin", limit=1) == b"\x00"
    assert storage.list_files(folder) == [f"{folder}/x.json"]
    assert storage.list_folders(folder) == [f"{folder}/sub"]
    assert (
        storage.is_dir(folder)
        and storage.is_file(f"{folder}/x.json")
        and storage.size(f"{folder}/x.json") == 2
    )
    with storage.staged(f"{folder}/docs") as local:
        (local / "page").mkdir()
        (local / "page" / "index.html").write_text("<p>hi</p>")
    assert storage.read_text(f"{folder}/docs/page/index.html") == "<p>hi</p>"
    storage.remove(folder)
    assert not storage.exists(folder)
    with pytest.raises(FileNotFoundError):
        storage.read_text(f"{folder}/x.json")


def _spec_on_s3(bucket: str, **partition: Any) -> str:
    """A spec on S3: a relative schema path with a $ref to a schema next to it, a reference
    named by its URI and a holdout by a path relative to the spec."""
    storage.write_text(f"{bucket}/spec/schemas/shirts.json", json.dumps(SCHEMA))
    storage.write_text(f"{bucket}/spec/schemas/colors.json", json.dumps(COLORS))
    storage.write_text(f"{bucket}/samples/shirts.jsonl", _jsonl(REFERENCE))
    storage.write_text(f"{bucket}/spec/data/holdout.jsonl", _jsonl(HOLDOUT))
    entry = {
        "name": "shirts",
        "schema": "schemas/shirts.json",
        "reference": f"{bucket}/samples/shirts.jsonl",
        "holdout": "data/holdout.jsonl",
        "rows": 4,
        **partition,
    }
    spec = f"{bucket}/spec/spec.yaml"
    storage.write_text(spec, yaml.safe_dump({"defaults": {"dlm": "tiny-random"}, "partitions": [entry]}))
    return spec


def test_a_spec_its_schema_reference_and_holdout_are_read_from_s3(s3_bucket: str) -> None:
    spec = load_spec(_spec_on_s3(s3_bucket))
    (shirts,) = spec.partitions
    assert spec.path == f"{s3_bucket}/spec/spec.yaml"
    assert shirts.schema_path == f"{s3_bucket}/spec/schemas/shirts.json"
    assert shirts.holdout_path == f"{s3_bucket}/spec/data/holdout.jsonl"
    assert load_reference(shirts) == REFERENCE
    assert load_reference(shirts, holdout=True) == HOLDOUT
    schema = load_schema(shirts.schema_path)
    assert [i.keyword for i in schema.errors({"color": "pink", "size": 0})] == ["enum", "minimum"]


def test_spec_files_missing_on_s3_or_of_unknown_scheme_fail_naming_the_field(s3_bucket: str) -> None:
    missing = _spec_on_s3(s3_bucket, holdout="data/nope.jsonl")
    with pytest.raises(
        SpecError, match=rf"field 'holdout': file not found: {s3_bucket}/spec/data/nope.jsonl"
    ):
        load_spec(missing)
    unknown = _spec_on_s3(s3_bucket, reference="ftps3://bucket/x.jsonl")
    with pytest.raises(SpecError, match=r"field 'reference': ftps3://bucket/x.jsonl: unknown scheme 'ftps3'"):
        load_spec(unknown)


def _writer(out: str, records: list[dict[str, Any]]) -> PartitionWriter:
    writer = PartitionWriter(out, load_schema(COLORS_SCHEMA), Provenance("shirts", 1, "tiny-random"))
    for seed, record in enumerate(records):
        writer.add(record, seed)
    writer.reject(99, "not json", None, ["parse"], ["did not parse"])
    return writer


def _rows(folder: storage.Location) -> list[int]:
    files = storage.list_files(storage.join(folder, "data"), ".parquet")
    sizes = []
    for file in files:
        with storage.open_file(file) as handle:
            sizes.extend(pq.read_table(handle).column("size").to_pylist())
    return sizes


def test_a_commit_on_s3_is_a_manifest_naming_a_folder_of_its_own(s3_bucket: str) -> None:
    out = f"{s3_bucket}/tables"
    writer = _writer(out, REFERENCE)
    assert committed_dir(out, "shirts") is None  # written, not committed: nobody sees it
    folder = writer.commit({"partition": "shirts", "counts": {"rows": 2}})
    assert folder == committed_dir(out, "shirts") == writer.staging
    manifest = json.loads(storage.read_text(f"{out}/shirts/{MANIFEST}"))
    token = storage.name(folder)
    assert manifest["commit"] == token and manifest["rows"] == 2
    assert manifest["data"] == [{"path": f"{token}/data/part-00000.parquet", "rows": 2}]
    assert manifest["quarantine"] == [{"path": f"{token}/quarantine/part-00000.parquet", "rows": 1}]
    assert read_report(out, "shirts") == {"partition": "shirts", "counts": {"rows": 2}}
    assert _rows(folder) == [1, 2]


def test_a_second_commit_replaces_the_first_and_a_dead_run_stays_invisible(s3_bucket: str) -> None:
    out = f"{s3_bucket}/tables"
    first = _writer(out, REFERENCE).commit({"counts": {"rows": 2}})
    dead = _writer(out, HOLDOUT)  # killed before its commit: its file is written, not committed
    dead._flush("data")
    assert committed_dir(out, "shirts") == first and _rows(first) == [1, 2]
    recover(out, "shirts")  # what the next run does first
    assert storage.list_folders(f"{out}/shirts") == [first]
    second = _writer(out, HOLDOUT).commit({"counts": {"rows": 1}})
    assert committed_dir(out, "shirts") == second and _rows(second) == [3]
    assert storage.list_folders(f"{out}/shirts") == [second]  # the previous commit is gone
    aborted = _writer(out, REFERENCE)
    aborted.abort()
    assert storage.list_folders(f"{out}/shirts") == [second]


def test_read_report_on_s3_refuses_a_commit_whose_data_does_not_match(s3_bucket: str) -> None:
    out = f"{s3_bucket}/tables"
    folder = _writer(out, REFERENCE).commit({"counts": {"rows": 2}})
    storage.remove(storage.join(folder, "data", "part-00000.parquet"))
    assert read_report(out, "shirts") is None


def test_a_local_output_keeps_its_layout(tmp_path: Path) -> None:
    folder = _writer(str(tmp_path), REFERENCE).commit({"counts": {"rows": 2}})
    assert folder == committed_dir(tmp_path, "shirts") == tmp_path / "shirts"
    assert sorted(p.name for p in folder.iterdir()) == ["data", "quarantine", "report.json"]  # type: ignore[union-attr]
    assert not (tmp_path / "shirts" / MANIFEST).exists()


def test_a_ray_job_reads_a_spec_and_prompts_on_s3_from_there(s3_bucket: str) -> None:
    spec = _spec_on_s3(s3_bucket)
    job = SynthesisJob(spec, f"{s3_bucket}/tables", "shirts", prompt_dir=f"{s3_bucket}/prompts")
    assert job.entrypoint() == (
        f"aod synthesize --spec {spec} --out {s3_bucket}/tables --partition shirts "
        f"--prompt-dir {s3_bucket}/prompts"
    )
    with job_bundle(job) as bundle:  # nothing of the spec's travels: the cluster reads it from S3
        assert list(bundle.iterdir()) == []
