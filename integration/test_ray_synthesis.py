"""Synthesis end to end on a real local Ray (2 CPUs, no dashboard) with the tiny random DLM.

One Ray session serves the module. The spec has three partitions: ``shirts`` (a small enum
domain, so duplicates and exact copies of the reference appear and are quarantined), ``items``
(nested object and array: typed struct and list columns) and ``pairs`` (four possible records,
one of them in the reference: its target of four cannot be met, so it ends partial or fails).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import warnings
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq
import pytest
import ray
import yaml
from ray.data import ActorPoolStrategy

from aod_ops.cli.synthesize import add_synthesize_parser
from aod_ops.errors import AodError, SpecError
from aod_ops.output import STAGING, record_id
from aod_ops.ray import adapter
from aod_ops.ray.plan import SynthesisOptions
from aod_ops.ray.synthesize import PartitionResult, Progress, synthesize

pytestmark = pytest.mark.integration

SCHEMAS: dict[str, dict[str, Any]] = {
    "shirts": {
        "title": "Shirt",
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue", "black"]},
            "size": {"enum": ["S", "M", "L"]},
            "model": {"enum": ["slim", "regular"]},  # named like a provenance column, which has a prefix
        },
        "required": ["color", "size", "model"],
        "additionalProperties": False,
    },
    "items": {
        "title": "Item",
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 2, "maxLength": 6, "pattern": "^[a-z]+$"},
            "count": {"type": "integer", "minimum": 0, "maximum": 999},
            "dims": {
                "type": "object",
                "properties": {
                    "w": {"type": "number", "minimum": 0, "maximum": 10},
                    "h": {"type": "integer", "minimum": 1, "maximum": 5},
                },
                "required": ["w", "h"],
                "additionalProperties": False,
            },
            "tags": {"type": "array", "items": {"enum": ["x", "y", "z"]}, "minItems": 1, "maxItems": 3},
        },
        "required": ["name", "count", "dims", "tags"],
        "additionalProperties": False,
    },
    "pairs": {
        "type": "object",
        "properties": {"left": {"type": "boolean"}, "right": {"type": "boolean"}},
        "required": ["left", "right"],
        "additionalProperties": False,
    },
}
REFERENCES: dict[str, list[dict[str, Any]]] = {
    "shirts": [
        {"color": "red", "size": "S", "model": "slim"},
        {"color": "blue", "size": "M", "model": "regular"},
        {"color": "green", "size": "L", "model": "slim"},
        {"color": "black", "size": "S", "model": "regular"},
    ],
    "items": [
        {"name": "cup", "count": 3, "dims": {"w": 2.5, "h": 2}, "tags": ["x"]},
        {"name": "lamp", "count": 10, "dims": {"w": 4.0, "h": 5}, "tags": ["y", "z"]},
    ],
    "pairs": [{"left": True, "right": True}],
}
TARGETS = {"shirts": 8, "items": 10, "pairs": 4}
# Four seeds per batch, two generator actors; the budget is 12 candidates per target row.
OPTIONS = SynthesisOptions(actors=2, batch_size=4, allow_partial=True)


def _write_spec(folder: Path, rows: dict[str, int] = TARGETS, extra: dict[str, Any] | None = None) -> Path:
    for name, schema in SCHEMAS.items():
        (folder / f"{name}.json").write_text(json.dumps(schema))
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in REFERENCES[name]))
    partitions = [
        {"name": name, "schema": f"{name}.json", "reference": f"{name}.jsonl", "rows": count, "notes": name}
        for name, count in rows.items()
    ]
    doc = {
        "defaults": {"dlm": "tiny-random", "seed": 3, "decoding": {"temperature": 1.0, "steps": 4}},
        "partitions": partitions + ([extra] if extra else []),
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def first_run(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The three partitions synthesized once; the warnings, Ray Data's log and progress kept."""
    folder = tmp_path_factory.mktemp("first")
    spec = _write_spec(folder)
    progress: list[Progress] = []
    log = _Capture()
    logging.getLogger("ray.data").addHandler(log)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = synthesize(spec, folder / "out", options=OPTIONS, on_progress=progress.append)
    finally:
        logging.getLogger("ray.data").removeHandler(log)
    return {
        "spec": spec,
        "out": folder / "out",
        "results": {r.partition: r for r in results},
        "progress": progress,
        "warnings": caught,
        "log": log.messages,
    }


def _data(out: Path, name: str) -> list[dict[str, Any]]:
    return pq.read_table(out / name / "data").to_pylist()


def _quarantine(out: Path, name: str) -> list[dict[str, Any]]:
    return pq.read_table(out / name / "quarantine").to_pylist()


def _seeds_cover_the_candidates(out: Path, name: str, report: dict[str, Any]) -> None:
    """Every judged candidate is a row or a quarantined reject, once: nothing lost, nothing twice."""
    seeds = [r["_aod_seed"] for r in _data(out, name)] + [r["seed"] for r in _quarantine(out, name)]
    assert len(seeds) == len(set(seeds)) == report["counts"]["candidates"]


def test_each_partition_gets_exactly_its_target_of_distinct_rows(first_run: dict[str, Any]) -> None:
    out, results = first_run["out"], first_run["results"]
    assert [(r.partition, r.status, r.rows) for r in results.values()] == [
        ("shirts", "complete", 8),
        ("items", "complete", 10),
        ("pairs", "partial", 3),
    ]
    for name in ("shirts", "items"):
        rows = _data(out, name)
        assert len(rows) == TARGETS[name]
        assert len({r["_aod_record_id"] for r in rows}) == len(rows)
        for row in rows:
            record = json.loads(row["_aod_record"])
            assert row["_aod_record_id"] == record_id(name, record)
            assert (row["_aod_partition"], row["_aod_model"], row["_aod_prompt_version"]) == (
                name,
                "tiny-random",
                1,
            )
            assert record not in REFERENCES[name]
            assert all(row[key] == value for key, value in record.items() if key != "dims")  # typed columns
        _seeds_cover_the_candidates(out, name, results[name].report)
    item = _data(out, "items")[0]
    record = json.loads(item["_aod_record"])
    assert item["dims"] == record["dims"] and item["tags"] == record["tags"]  # struct and list columns
    assert isinstance(item["count"], int) and item["_aod_created_at"].tzinfo is not None


def test_rejects_are_quarantined_with_their_reasons(first_run: dict[str, Any]) -> None:
    out, report = first_run["out"], first_run["results"]["shirts"].report
    accepted = {r["_aod_record"] for r in _data(out, "shirts")}
    rejects = _quarantine(out, "shirts")
    assert len(rejects) == report["counts"]["rejected"] > 0
    assert sum(report["rejections"].values()) == len(rejects)
    kinds = {r["kinds"][0] for r in rejects}
    assert {"exact_copy", "duplicate"} <= kinds
    for reject in rejects:
        assert reject["reasons"] and reject["partition"] == "shirts"
        record = json.loads(reject["record"])
        if reject["kinds"][0] == "exact_copy":
            assert record in REFERENCES["shirts"]
            assert "exact copy of a reference record" in reject["reasons"][0]
        elif reject["kinds"][0] == "duplicate":
            assert reject["record"] in accepted or record in [json.loads(r["record"]) for r in rejects]


def test_report_holds_counts_metrics_privacy_and_settings(first_run: dict[str, Any]) -> None:
    report = json.loads((first_run["out"] / "shirts" / "report.json").read_text())
    assert report["status"] == "complete"
    counts = report["counts"]
    assert counts["rows"] + counts["rejected"] == counts["candidates"] <= counts["budget"] == 80
    metrics = report["metrics"]
    assert metrics["candidates"] == counts["candidates"] and metrics["validity"] == 1.0
    assert metrics["tsr"] == pytest.approx(counts["rows"] / counts["candidates"])
    assert metrics["exact_match_rate"] > 0  # the copies are among the candidates, not the rows
    privacy = report["privacy"]
    assert privacy["records"] == 8 and privacy["reference_rows"] == 4
    assert {c["name"]: c["value"] for c in privacy["checks"]}["exact_match_rate"] == 0.0
    assert report["settings"]["actors"] == 2 and report["settings"]["batch_size"] == 4
    assert report["timings"]["seconds"] > report["timings"]["startup_seconds"] > 0
    partial = first_run["results"]["pairs"].report
    assert (
        partial["status"] == "partial"
        and partial["counts"]["candidates"] == partial["counts"]["budget"] == 40
    )


def test_progress_counts_up_to_the_target(first_run: dict[str, Any]) -> None:
    shirts = [p for p in first_run["progress"] if p.partition == "shirts"]
    assert shirts[0].valid == shirts[0].candidates == 0
    assert [p.valid for p in shirts] == sorted(p.valid for p in shirts)
    assert shirts[-1].valid == 8 and shirts[-1].rejected == first_run["results"]["shirts"].rejected
    assert shirts[-1].records_per_s > 0


def test_the_session_already_open_is_used_and_left_open(first_run: dict[str, Any]) -> None:
    assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 2
    assert first_run["results"]["shirts"].report["settings"]["threads_per_actor"] == 1


def test_the_pipeline_raises_no_deprecation_warning(first_run: dict[str, Any]) -> None:
    deprecations = [w for w in first_run["warnings"] if issubclass(w.category, DeprecationWarning)]
    assert deprecations == []
    # Ray Data reports some deprecated arguments (``concurrency=``) in its log, not as warnings.
    assert not [m for m in first_run["log"] if "deprecated" in m.lower()]


class _Identity:
    def __call__(self, batch: Any) -> Any:
        return batch


def test_a_deprecated_ray_argument_in_package_code_fails_the_tests(ray_session: None) -> None:
    # pyproject's filterwarnings makes a DeprecationWarning raised on behalf of an aod_ops module an
    # error: the free-form remote arguments of map_batches are deprecated in Ray 2.60.
    dataset = ray.data.from_items([{"x": 1}])
    call = "dataset.map_batches(_Identity, compute=ActorPoolStrategy(size=1), max_restarts=1)"
    scope = {"__name__": "aod_ops.ray.probe", "dataset": dataset, "_Identity": _Identity}
    scope["ActorPoolStrategy"] = ActorPoolStrategy
    with pytest.raises(DeprecationWarning, match="ray_remote_args"):
        exec(compile(call, "aod_ops/ray/probe.py", "exec"), scope)


def test_a_second_run_into_the_same_output_changes_nothing(first_run: dict[str, Any]) -> None:
    out = first_run["out"]
    before = {name: _data(out, name) for name in TARGETS}
    results = synthesize(first_run["spec"], out, options=OPTIONS)
    assert [(r.partition, r.status) for r in results] == [(n, "unchanged") for n in TARGETS]
    assert {name: _data(out, name) for name in TARGETS} == before
    assert not (out / STAGING).exists()


def test_the_command_summarizes_each_partition(
    first_run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="aod")
    add_synthesize_parser(parser.add_subparsers(dest="command"))
    spec, out = str(first_run["spec"]), str(first_run["out"])
    # Nothing changed since the first run: the command reports every partition without starting Ray.
    args = parser.parse_args(["synthesize", "--spec", spec, "--out", out, "--allow-partial"])
    assert args.handler(args) == 0
    lines = capsys.readouterr().out.splitlines()
    table = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines]
    shown = {cells[0]: cells[1:4] for cells in table if cells and cells[0] in TARGETS}
    results = first_run["results"].items()
    expected = {name: ["unchanged", f"{r.rows}/{r.target}", str(r.candidates)] for name, r in results}
    assert shown == expected


def _generator_workers() -> list[psutil.Process]:
    """The DLMGenerator actor processes of this test's Ray session (all descendants of this process)."""
    return [
        child
        for child in psutil.Process().children(recursive=True)
        if "MapBatches(DLMGenerator)" in " ".join(child.cmdline())
    ]


def test_a_retry_after_a_crash_with_a_worker_killed_midway_completes_without_duplicates(
    first_run: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(first_run["out"], out)
    # A run that crashed while writing `items`: its output gone, its staging folder left behind.
    stale = out / STAGING / "items" / "0123456789ab"
    shutil.move(out / "items", stale)
    (stale / "report.json").unlink()
    killed: list[int] = []

    def kill_one_generator(progress: Progress) -> None:
        if killed or progress.candidates == 0:
            return
        workers = _generator_workers()
        assert workers, "no generator actor process found"
        killed.append(workers[0].pid)
        os.kill(workers[0].pid, signal.SIGKILL)

    options = SynthesisOptions(actors=2, batch_size=2, allow_partial=True)
    results: list[PartitionResult] = synthesize(
        first_run["spec"], out, options=options, on_progress=kill_one_generator
    )
    assert killed, "the run ended before a worker could be killed"
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    by_name = {r.partition: r for r in results}
    assert by_name["shirts"].status == by_name["pairs"].status == "unchanged"
    assert by_name["items"].status == "complete"
    rows = _data(out, "items")
    assert len(rows) == len({r["_aod_record_id"] for r in rows}) == TARGETS["items"]
    # The same seeds give the same records whatever the batch size and the restarts.
    assert [r["_aod_record_id"] for r in rows] == [
        r["_aod_record_id"] for r in _data(first_run["out"], "items")
    ]
    _seeds_cover_the_candidates(out, "items", by_name["items"].report)
    assert not (out / STAGING).exists()


def test_a_spent_budget_fails_with_the_counts_and_commits_nothing(ray_session: None, tmp_path: Path) -> None:
    spec = _write_spec(tmp_path)
    options = SynthesisOptions(actors=1, batch_size=4, max_candidates=12)
    counts = r"partition 'pairs': [0-3] of 4 rows after 12 candidates \(the budget\); \d+ rejected \("
    with pytest.raises(AodError, match=counts):
        synthesize(spec, tmp_path / "out", partition="pairs", options=options)
    assert not (tmp_path / "out" / "pairs").exists()
    assert not (tmp_path / "out" / STAGING).exists()


def test_a_bad_partition_fails_the_run_before_any_actor_starts(
    ray_session: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    monkeypatch.setattr(adapter, "stream", lambda *args: started.append("stream"))
    monkeypatch.setattr(adapter, "session", lambda *args: started.append("session"))
    # The first partitions are fine; the last one names a reference file that does not exist.
    bad = {"name": "boots", "schema": "shirts.json", "reference": "boots.jsonl", "rows": 2}
    spec = _write_spec(tmp_path, extra=bad)
    with pytest.raises(SpecError, match=r"partition 'boots': field 'reference': file not found"):
        synthesize(spec, tmp_path / "out")
    assert started == []
    assert not (tmp_path / "out").exists()
