"""Synthesis parts without a Ray cluster: checks before Ray starts, pool sizing, and the two
``map_batches`` stages called directly on Arrow batches."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import ray
import yaml

from aod_ops.dlm.generate import record_seed
from aod_ops.dlm.settings import DecodingSettings
from aod_ops.errors import AodError, DataError, ModelError, SpecError
from aod_ops.ray import adapter
from aod_ops.ray.generator import CANDIDATES, DLMGenerator
from aod_ops.ray.judging import VERDICTS, CandidateJudge
from aod_ops.ray.synthesize import SynthesisOptions, _pool, synthesize
from aod_ops.schema import load_schema

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "color": {"enum": ["red", "green", "blue"]},
        "size": {"type": "integer", "minimum": 1, "maximum": 9},
    },
    "required": ["color", "size"],
    "additionalProperties": False,
}
REFERENCE = [{"color": "red", "size": 1}, {"color": "blue", "size": 2}]


def _spec(tmp_path: Path, schema: dict[str, Any] = SCHEMA, **partition: Any) -> Path:
    (tmp_path / "shirts.json").write_text(json.dumps(schema))
    (tmp_path / "shirts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in REFERENCE))
    doc = {
        "defaults": {"dlm": "tiny-random"},
        "partitions": [
            {"name": "shirts", "schema": "shirts.json", "reference": "shirts.jsonl", "rows": 4, **partition}
        ],
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def no_ray_yet() -> None:
    assert not ray.is_initialized(), "another test left Ray running"


def test_a_bad_spec_fails_before_ray_starts(tmp_path: Path, no_ray_yet: None) -> None:
    with pytest.raises(SpecError, match=r"partition 'shirts': field 'rows': must be at least 1"):
        synthesize(_spec(tmp_path, rows=0), tmp_path / "out")
    assert not ray.is_initialized()
    assert not (tmp_path / "out").exists()


def test_a_malformed_prompt_artifact_fails_naming_the_file(tmp_path: Path, no_ray_yet: None) -> None:
    prompt = tmp_path / "prompts" / "shirts" / "prompt.json"
    prompt.parent.mkdir(parents=True)
    prompt.write_text('{"instruction": "x"}')
    with pytest.raises(DataError, match=rf"{prompt}: not a prompt artifact"):
        synthesize(
            _spec(tmp_path), tmp_path / "out", options=SynthesisOptions(prompt_dir=tmp_path / "prompts")
        )
    assert not ray.is_initialized()


def test_an_unknown_model_fails_before_ray_starts(tmp_path: Path, no_ray_yet: None) -> None:
    with pytest.raises(ModelError, match=r"unknown model 'no-such-model'"):
        synthesize(_spec(tmp_path), tmp_path / "out", options=SynthesisOptions(model="no-such-model"))
    assert not ray.is_initialized()


def test_a_property_in_the_provenance_namespace_fails_before_ray_starts(
    tmp_path: Path, no_ray_yet: None
) -> None:
    schema = {**SCHEMA, "properties": {**SCHEMA["properties"], "_aod_model": {"type": "string"}}}
    with pytest.raises(
        SpecError, match=r"partition 'shirts': field 'schema': .*'_aod_model' start with '_aod_'"
    ):
        synthesize(_spec(tmp_path, schema), tmp_path / "out")
    assert not ray.is_initialized()


@pytest.mark.parametrize("name", ["rows", "actors", "batch_size", "max_candidates"])
def test_options_below_one_are_refused(name: str) -> None:
    with pytest.raises(AodError, match=rf"{name.replace('_', '-')} must be at least 1, got 0"):
        SynthesisOptions(**{name: 0})  # type: ignore[arg-type]


def test_pool_on_cpus_gives_each_actor_its_threads() -> None:
    two_cpus = adapter.Cluster(cpus=2, gpus=0)
    default = _pool(two_cpus, SynthesisOptions())
    assert (default.actors, default.threads, default.cpus, default.gpus, default.device) == (
        2,
        1,
        1.0,
        0.0,
        "cpu",
    )
    one = _pool(two_cpus, SynthesisOptions(actors=1))
    assert (one.actors, one.threads, one.cpus) == (1, 2, 2.0)  # the actor gets both cores
    with pytest.raises(AodError, match=r"3 actors x 1 threads need 3 CPUs; the Ray cluster has 2"):
        _pool(two_cpus, SynthesisOptions(actors=3))


def test_pool_on_gpus_gives_each_actor_one_gpu() -> None:
    pool = _pool(adapter.Cluster(cpus=16, gpus=2), SynthesisOptions())
    assert (pool.actors, pool.gpus, pool.cpus, pool.device) == (2, 1.0, 1.0, "cuda")
    with pytest.raises(AodError, match=r"3 actors with 1 GPU each need more GPUs than the cluster's 2"):
        _pool(adapter.Cluster(cpus=16, gpus=2), SynthesisOptions(actors=3))


def _seeds(indices: list[int]) -> pa.Table:
    return pa.table({"index": indices, "seed": [record_seed(5, i) for i in indices]})


def test_generator_turns_seeds_into_candidates_that_depend_only_on_the_seed() -> None:
    generator = DLMGenerator(
        load_schema(SCHEMA),
        "tiny-random",
        False,
        "Write a shirt.\nRecord:\n",
        DecodingSettings(steps=4),
        threads=1,
    )
    batch = generator(_seeds([0, 1, 2]))
    assert batch.schema == CANDIDATES
    rows = batch.to_pylist()
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert [r["seed"] for r in rows] == [record_seed(5, i) for i in range(3)]
    for row in rows:
        assert row["valid"] and row["errors"] == [] and row["forwards"] > 0
        assert json.loads(row["record"])["color"] in {"red", "green", "blue"}
    # The same seed in another batch, at another position: the same candidate.
    again = generator(_seeds([7, 2])).to_pylist()[1]
    assert (again["text"], again["record"]) == (rows[2]["text"], rows[2]["record"])


def test_judge_stage_flags_copies_parse_errors_and_schema_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    # The object store is the adapter's business; here the "reference" is the sample itself.
    monkeypatch.setattr(adapter, "get", lambda reference: reference)
    judge = CandidateJudge(load_schema(SCHEMA), REFERENCE)
    texts = [
        '{"color": "green", "size": 7}',
        '{"color": "red", "size": 1}',
        "{oops",
        '{"color": "pink", "size": 3}',
    ]
    records = [json.loads(t) if t != "{oops" else None for t in texts]
    errors = [[], [], ["parse error: the output is not a JSON document"], ["/color: 'pink' is not one of"]]
    batch = pa.Table.from_pydict(
        {
            "index": [0, 1, 2, 3],
            "seed": [10, 11, 12, 13],
            "text": texts,
            "record": [None if r is None else json.dumps(r) for r in records],
            "errors": errors,
            "valid": [True, True, False, False],
            "forwards": [1.0] * 4,
            "slots": [0] * 4,
            "repaired": [0] * 4,
        },
        schema=CANDIDATES,
    )
    judged = judge(batch)
    assert judged.schema.names == CANDIDATES.names + VERDICTS.names
    rows = judged.to_pylist()
    assert [r["ok"] for r in rows] == [True, False, False, False]
    assert [r["kinds"] for r in rows][1:] == [["exact_copy"], ["parse"], ["schema"]]
    assert "exact copy of a reference record" in rows[1]["reasons"][0]
    assert "'enum'" in rows[3]["reasons"][0] and "/color" in rows[3]["reasons"][0]


def test_the_native_noise_filter_drops_only_rays_known_noise_and_passes_the_rest_at_once() -> None:
    noise = (
        b"[2026-12-03 02:14:01,631 E 10807 10807] core_worker.cc:2465: Actor with class name: "
        b"'MapWorker(MapBatches(DLMGenerator))' and ID: 'cd79' has constructor arguments in the "
        b"object store and max_restarts > 0. See https://github.com/ray-project/ray/issues/53727\n"
    )
    error = b"[2026-12-03 02:14:02,000 E 10807 10807] core_worker.cc:99: the GCS is unreachable\n"
    read, write = os.pipe()
    out_read, out = os.pipe()
    thread = threading.Thread(target=adapter._pump, args=(read, out))
    thread.start()
    os.write(write, b"\rrecords 3/8")  # a progress bar's update: no newline, passed on at once
    with open(out_read, "rb", buffering=0, closefd=False) as sink:
        assert sink.read(100) == b"\rrecords 3/8"
        for chunk in (noise[:20], noise[20:90], noise[90:] + error[:10], error[10:] + b"[done]\n"):
            os.write(write, chunk)
        os.close(write)
        thread.join(timeout=10)
        assert sink.read(1000) == error + b"[done]\n"


def test_errors_of_tasks_on_actors_killed_at_a_streams_end_are_left_out_and_no_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ray._private import worker

    printed: list[list[str]] = []
    monkeypatch.setattr(
        worker, "print_to_stdstream", lambda data, ignore_prefix: printed.append(data["lines"])
    )
    adapter._drop_teardown_errors()
    adapter._drop_teardown_errors()  # once is enough: installing it again changes nothing
    teardown = (
        "Task MapWorker(MapBatches(DLMGenerator)).submit failed. There are infinite retries remaining, so "
        "the task will be retried. Error: The actor is dead because it was killed by `ray.kill`."
    )
    other = "Task MapWorker(MapBatches(DLMGenerator)).submit failed: the actor died of an out-of-memory kill."
    for lines in ([teardown], [other], [teardown, other]):
        worker.print_to_stdstream({"lines": lines, "pid": "raylet", "is_err": False}, ignore_prefix=False)
    assert printed == [[other], [other]]
