"""The generator pool on a real local Ray (2 CPUs, no dashboard) with the tiny random DLM.

Two partitions that share a model are synthesized through one pool: one ``map_batches`` per
stage for the run, each actor loading the model once (the actors count their loads on the run's
board), and the stream's threads ended with it. An autoscaling pool gets its fewest and most
actors as Ray Data's ``ActorPoolStrategy``; the rows of a partition are the same whatever the pool
and whichever partitions share it; and a run that asks for GPUs on a cluster that has none fails
at once with one line.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import ray
import yaml
from ray.data import ActorPoolStrategy

from aod_ops.errors import AodError
from aod_ops.ray import adapter
from aod_ops.ray.plan import SynthesisOptions
from aod_ops.ray.synthesize import PartitionResult, Progress, synthesize

pytestmark = pytest.mark.integration

SCHEMAS: dict[str, dict[str, Any]] = {
    "shirts": {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue", "black"]},
            "size": {"type": "integer", "minimum": 1, "maximum": 9},
        },
        "required": ["color", "size"],
        "additionalProperties": False,
    },
    "boxes": {
        "type": "object",
        "properties": {
            "w": {"type": "integer", "minimum": 1, "maximum": 50},
            "h": {"type": "integer", "minimum": 1, "maximum": 50},
        },
        "required": ["w", "h"],
        "additionalProperties": False,
    },
}
REFERENCES = {
    "shirts": [{"color": "red", "size": 1}, {"color": "blue", "size": 2}],
    "boxes": [{"w": 3, "h": 4}, {"w": 10, "h": 2}],
}
TARGET = 6  # rows per partition; batches of 4 seeds, so a batch holds two partitions' seeds


def _spec(folder: Path) -> Path:
    for name, schema in SCHEMAS.items():
        (folder / f"{name}.json").write_text(json.dumps(schema))
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in REFERENCES[name]))
    doc = {
        "defaults": {"dlm": "tiny-random", "seed": 7, "decoding": {"temperature": 1.0, "steps": 4}},
        "partitions": [
            {"name": name, "schema": f"{name}.json", "reference": f"{name}.jsonl", "rows": TARGET}
            for name in SCHEMAS
        ],
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _spec(tmp_path_factory.mktemp("spec"))


class _Spy:
    """What the run asked of Ray Data: its datasets' sizes and each ``map_batches`` stage."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.items: list[int] = []
        self.stages: list[dict[str, Any]] = []
        from_items, map_batches = ray.data.from_items, ray.data.Dataset.map_batches

        def counted_from_items(items: list[Any], **kwargs: Any) -> Any:
            self.items.append(len(items))
            return from_items(items, **kwargs)

        def recorded_map_batches(dataset: Any, fn: Any, **kwargs: Any) -> Any:
            self.stages.append({"fn": fn.__name__, **kwargs})
            return map_batches(dataset, fn, **kwargs)

        monkeypatch.setattr(ray.data, "from_items", counted_from_items)
        monkeypatch.setattr(ray.data.Dataset, "map_batches", recorded_map_batches)


def _run(spec: Path, out: Path, options: SynthesisOptions, **kwargs: Any) -> dict[str, Any]:
    progress: list[Progress] = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        spy = _Spy(monkeypatch)
        results = synthesize(spec, out, options=options, on_progress=progress.append, **kwargs)
    threads = [t.name for t in threading.enumerate()]
    return {
        "results": {r.partition: r for r in results},
        "spy": spy,
        "progress": progress,
        "out": out,
        "threads": threads,
    }


@pytest.fixture(scope="module")
def fixed(ray_session: None, spec: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both partitions through a fixed pool of one actor."""
    return _run(spec, tmp_path_factory.mktemp("fixed") / "out", SynthesisOptions(actors=1, batch_size=4))


@pytest.fixture(scope="module")
def autoscaling(ray_session: None, spec: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both partitions through a pool of one to two actors."""
    options = SynthesisOptions(min_actors=1, max_actors=2, batch_size=4)
    return _run(spec, tmp_path_factory.mktemp("autoscaling") / "out", options)


def _rows(out: Path, name: str) -> list[tuple[str, int]]:
    return [(r["_aod_record_id"], r["_aod_seed"]) for r in pq.read_table(out / name / "data").to_pylist()]


def test_one_pool_serves_both_partitions_and_each_actor_loads_the_model_once(fixed: dict[str, Any]) -> None:
    results: dict[str, PartitionResult] = fixed["results"]
    assert [(r.partition, r.status, r.rows) for r in results.values()] == [
        ("shirts", "complete", TARGET),
        ("boxes", "complete", TARGET),
    ]
    spy = fixed["spy"]
    # One dataset of both partitions' seeds (their budgets), one generator pool and one judge.
    assert spy.items == [sum(r.report["counts"]["budget"] for r in results.values())]
    assert [s["fn"] for s in spy.stages] == ["DLMGenerator", "CandidateJudge"]
    # The one actor loaded the model once, for both partitions (a pool per partition: twice).
    assert [r.report["timings"]["model_loads"] for r in results.values()] == [1, 1]
    for result in results.values():
        report = result.report
        assert report["counts"]["rows"] + report["counts"]["rejected"] == report["counts"]["candidates"]
        assert (report["settings"]["actors"], report["settings"]["max_actors"]) == (1, 1)
    # Each partition's progress starts at nothing and ends at its target, one after the other.
    names = [p.partition for p in fixed["progress"]]
    assert names == sorted(names, key=list(results).index)
    for name in results:
        steps = [p for p in fixed["progress"] if p.partition == name]
        assert (steps[0].valid, steps[-1].valid) == (0, TARGET)
    # The stream's threads have ended with it: one that outlived the session would call into a
    # shut-down Ray, which ends the whole process (status 1, no traceback).
    assert not [t for t in fixed["threads"] if t.startswith(("StreamingExecutor-", "iter_threaded"))]


def test_an_autoscaling_pool_gets_its_fewest_and_most_actors(autoscaling: dict[str, Any]) -> None:
    generator, judge = autoscaling["spy"].stages
    assert generator["fn"] == "DLMGenerator" and isinstance(generator["compute"], ActorPoolStrategy)
    assert (generator["compute"].min_size, generator["compute"].max_size) == (1, 2)
    assert generator["num_gpus"] is None and generator["num_cpus"] == 1.0  # a CPU run asks for no GPU
    assert (judge["compute"].min_size, judge["compute"].max_size) == (1, 1)
    for result in autoscaling["results"].values():
        assert result.status == "complete"
        assert (result.report["settings"]["actors"], result.report["settings"]["max_actors"]) == (1, 2)
        assert 1 <= result.report["timings"]["model_loads"] <= 2


def test_a_partitions_rows_do_not_depend_on_the_pool_or_the_partitions_beside_it(
    fixed: dict[str, Any], autoscaling: dict[str, Any], spec: Path, tmp_path: Path
) -> None:
    for name in SCHEMAS:
        assert _rows(autoscaling["out"], name) == _rows(fixed["out"], name)
    alone = _run(spec, tmp_path / "out", SynthesisOptions(actors=1, batch_size=4), partition="boxes")
    assert list(alone["results"]) == ["boxes"]
    assert _rows(tmp_path / "out", "boxes") == _rows(fixed["out"], "boxes")


def test_asking_for_gpus_on_a_cluster_without_any_fails_at_once_with_one_line(
    ray_session: None, spec: Path, tmp_path: Path
) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        spy = _Spy(monkeypatch)
        with pytest.raises(AodError) as caught:
            synthesize(spec, tmp_path / "out", options=SynthesisOptions(gpus_per_actor=1))
    message = str(caught.value)
    assert message.startswith(
        "gpus-per-actor 1 asks for GPUs, but the Ray cluster has 0 GPUs and no autoscaler to add any"
    )
    assert "\n" not in message
    assert spy.stages == [] and spy.items == []  # no actor started, nothing run on CPUs instead
    assert not any((tmp_path / "out" / name).exists() for name in SCHEMAS)


def test_a_joined_cluster_gets_gpu_wait_seconds_to_add_gpus(
    ray_session: None, spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a cluster joined at an address: it may have an autoscaler, asked here for one GPU.
    monkeypatch.setattr(adapter, "_started_here", lambda: False)
    options = SynthesisOptions(gpus_per_actor=1, gpu_wait_s=1)
    with pytest.raises(AodError, match=r"has 0 GPUs and none joined within 1 s \(gpu-wait\)"):
        synthesize(spec, tmp_path / "out", options=options)
