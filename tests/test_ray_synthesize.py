"""Synthesis parts without a Ray cluster: checks before Ray starts, pool sizing, the GPU check,
the command's pool flags, reading a run's stream a partition at a time, and the two
``map_batches`` stages called directly on Arrow batches."""

from __future__ import annotations

import argparse
import json
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import ray
import yaml

from aod_ops.cli.synthesize import add_synthesize_parser
from aod_ops.dlm.generate import record_seed
from aod_ops.dlm.settings import DecodingSettings
from aod_ops.errors import AodError, DataError, ModelError, SpecError
from aod_ops.ray import adapter, jobs
from aod_ops.ray import synthesize as synthesis
from aod_ops.ray.generator import CANDIDATES, DLMGenerator, PartitionPrompt
from aod_ops.ray.jobs import SynthesisJob
from aod_ops.ray.judging import VERDICTS, CandidateJudge, PartitionJudging
from aod_ops.ray.plan import SynthesisOptions, by_model, plan_partition, pool_shape, with_gpus
from aod_ops.ray.synthesize import _Rows, _stages, synthesize
from aod_ops.schema import load_schema
from aod_ops.spec import Partition, load_spec

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


SERVER = {"base_url": "http://sglang:30000", "model": "inclusionAI/LLaDA2.0-mini-preview"}


def test_a_server_dlm_loads_no_model_and_its_generators_get_its_key_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AOD_TEST_DLM_KEY", "sk-secret")
    dlm = {**SERVER, "api_key_env": "AOD_TEST_DLM_KEY"}
    (partition,) = load_spec(_spec(tmp_path, dlm=dlm, decoding={"mode": "free"})).partitions
    job = plan_partition(partition, SynthesisOptions())  # the served model is no local one: nothing checked
    assert job.dlm == partition.dlm
    monkeypatch.setattr(adapter, "put", lambda reference: reference)  # the object store: not here
    generator, judge = _stages(job, pool_shape(adapter.Cluster(cpus=2, gpus=0), SynthesisOptions()), 4)
    assert generator.kwargs["server"] == partition.dlm and generator.kwargs["model"] == SERVER["model"]
    assert generator.env_vars == {"AOD_TEST_DLM_KEY": "sk-secret"} and judge.env_vars == {}
    assert "sk-secret" not in repr(generator)
    # One pool per server: the same model behind two servers is two pools.
    other = replace(job, dlm=replace(job.dlm, base_url="http://sglang-2:30000"))
    assert [[j.dlm.base_url for j in group] for group in by_model([job, other, job])] == [
        [SERVER["base_url"]] * 2,
        ["http://sglang-2:30000"],
    ]


def test_a_critics_key_reaches_its_judges_alone_and_nothing_that_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AOD_TEST_CRITIC_KEY", raising=False)
    agent = {"base_url": "http://llm:9000/v1", "model": "m", "api_key_env": "AOD_TEST_CRITIC_KEY"}
    (partition,) = load_spec(_spec(tmp_path, agent=agent, critic=True)).partitions
    monkeypatch.setattr(adapter, "put", lambda reference: reference)  # the object store: not here
    pool = pool_shape(adapter.Cluster(cpus=2, gpus=0), SynthesisOptions())

    def environments(partition: Partition, options: SynthesisOptions) -> tuple[dict[str, str], ...]:
        return tuple(stage.env_vars for stage in _stages(plan_partition(partition, options), pool, 4))

    given = SynthesisOptions(critic_api_key="sk-critic")  # an Airflow connection's key
    assert environments(partition, given) == ({}, {"AOD_TEST_CRITIC_KEY": "sk-critic"})
    job = plan_partition(partition, given)
    assert "sk-critic" not in repr(given) + repr(job) + repr(_stages(job, pool, 4))
    assert job.fingerprint(False) == plan_partition(partition, SynthesisOptions()).fingerprint(False)
    # No key given: the variable's value here, else none (the actors read their own environment).
    assert environments(partition, SynthesisOptions()) == ({}, {})
    monkeypatch.setenv("AOD_TEST_CRITIC_KEY", "sk-here")
    assert environments(partition, SynthesisOptions()) == ({}, {"AOD_TEST_CRITIC_KEY": "sk-here"})
    assert environments(replace(partition, critic=False), given) == ({}, {})  # no critic, no key


@pytest.mark.parametrize(
    ("spec", "options", "error"),
    [
        (  # a server for the run, over a spec that writes skeletons
            {},
            {"model": "m", "dlm_base_url": "http://sglang:30000"},
            r"partition 'shirts': a DLM server \(http://sglang:30000\) writes free mode only, and the "
            r"prompt's mode is 'skeleton': use decoding: \{mode: free\}",
        ),
        (
            {"dlm": {**SERVER, "api_key_env": "AOD_TEST_UNSET"}, "decoding": {"mode": "free"}},
            {},
            r"partition 'shirts': DLM server http://sglang:30000/v1/chat/completions: environment "
            "variable AOD_TEST_UNSET is not set",
        ),
        (
            {"decoding": {"mode": "free"}},
            {"model": "m", "dlm_base_url": "http://sglang:30000", "trust_remote_code": True},
            r"model m: 'trust_remote_code' is for a local model",
        ),
    ],
)
def test_a_server_that_cannot_write_the_partition_fails_before_ray_starts(
    tmp_path: Path, no_ray_yet: None, spec: dict[str, Any], options: dict[str, Any], error: str
) -> None:
    with pytest.raises(ModelError, match=f"^{error}"):
        synthesize(_spec(tmp_path, **spec), tmp_path / "out", options=SynthesisOptions(**options))
    assert not ray.is_initialized()
    with pytest.raises(AodError, match="dlm-base-url and dlm-api-key-env need model"):
        SynthesisOptions(dlm_base_url="http://sglang:30000")


def test_a_property_in_the_provenance_namespace_fails_before_ray_starts(
    tmp_path: Path, no_ray_yet: None
) -> None:
    schema = {**SCHEMA, "properties": {**SCHEMA["properties"], "_aod_model": {"type": "string"}}}
    with pytest.raises(
        SpecError, match=r"partition 'shirts': field 'schema': .*'_aod_model' start with '_aod_'"
    ):
        synthesize(_spec(tmp_path, schema), tmp_path / "out")
    assert not ray.is_initialized()


@pytest.mark.parametrize(
    "name", ["rows", "actors", "min_actors", "max_actors", "batch_size", "max_candidates"]
)
def test_options_below_one_are_refused(name: str) -> None:
    with pytest.raises(AodError, match=rf"{name.replace('_', '-')} must be at least 1, got 0"):
        SynthesisOptions(**{name: 0})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"actors": 2, "max_actors": 4},
            "actors sets a fixed pool: give it or min-actors/max-actors, not both",
        ),
        ({"min_actors": 3, "max_actors": 2}, r"min-actors \(3\) must not exceed max-actors \(2\)"),
        ({"gpus_per_actor": -1.0}, "gpus-per-actor must not be negative"),
        ({"gpu_wait_s": -1.0}, "gpu-wait must not be negative"),
    ],
)
def test_inconsistent_pool_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(AodError, match=message):
        SynthesisOptions(**options)


def test_pool_on_cpus_gives_each_actor_its_threads() -> None:
    two_cpus = adapter.Cluster(cpus=2, gpus=0)
    default = pool_shape(two_cpus, SynthesisOptions())
    assert (
        default.actors,
        default.max_actors,
        default.threads,
        default.cpus,
        default.gpus,
        default.device,
    ) == (
        2,
        2,
        1,
        1.0,
        0.0,
        "cpu",
    )
    one = pool_shape(two_cpus, SynthesisOptions(actors=1))
    assert (one.actors, one.max_actors, one.threads, one.cpus) == (1, 1, 2, 2.0)  # the actor gets both cores
    with pytest.raises(AodError, match=r"3 actors x 1 threads need 3 CPUs; the Ray cluster has 2"):
        pool_shape(two_cpus, SynthesisOptions(actors=3))


def test_pool_on_gpus_gives_each_actor_one_gpu() -> None:
    pool = pool_shape(adapter.Cluster(cpus=16, gpus=2), SynthesisOptions())
    assert (pool.actors, pool.max_actors, pool.gpus, pool.cpus, pool.device) == (2, 2, 1.0, 1.0, "cuda")
    with pytest.raises(AodError, match=r"3 actors with 1 GPU each need more GPUs than the cluster's 2"):
        pool_shape(adapter.Cluster(cpus=16, gpus=2), SynthesisOptions(actors=3))


def test_an_autoscaling_pool_spans_min_to_max_actors() -> None:
    gpus = adapter.Cluster(cpus=16, gpus=2)
    pool = pool_shape(gpus, SynthesisOptions(min_actors=1, max_actors=16))
    assert (pool.actors, pool.max_actors, pool.gpus) == (1, 16, 1.0)
    assert pool_shape(gpus, SynthesisOptions(max_actors=1)).actors == 1  # the default minimum, capped
    growing = adapter.Cluster(cpus=2, gpus=1, may_grow=True)
    assert pool_shape(growing, SynthesisOptions(min_actors=4)).max_actors == 4  # at least the minimum
    # An autoscaler adds the GPUs a cluster that may grow is short of: the pool waits for them.
    pool = pool_shape(growing, SynthesisOptions(gpus_per_actor=1, min_actors=16, max_actors=64))
    assert (pool.actors, pool.max_actors, pool.gpus) == (16, 64, 1.0)
    with pytest.raises(AodError, match=r"16 actors with 1 GPU each need more GPUs than the cluster's 1"):
        pool_shape(adapter.Cluster(cpus=2, gpus=1), SynthesisOptions(gpus_per_actor=1, min_actors=16))
    cpus = pool_shape(
        adapter.Cluster(cpus=8, gpus=0), SynthesisOptions(min_actors=2, max_actors=6, threads_per_actor=1)
    )
    assert (cpus.actors, cpus.max_actors, cpus.threads, cpus.gpus) == (2, 6, 1, 0.0)


def test_asking_for_gpus_where_there_are_none_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpu_only = adapter.Cluster(cpus=2, gpus=0)
    assert with_gpus(cpu_only, SynthesisOptions()) is cpu_only  # GPUs only when there are some
    assert with_gpus(cpu_only, SynthesisOptions(gpus_per_actor=0)) is cpu_only
    with pytest.raises(
        AodError, match=r"^gpus-per-actor 1 asks for GPUs, but the Ray cluster has 0 GPUs and no autoscaler"
    ) as caught:
        with_gpus(cpu_only, SynthesisOptions(gpus_per_actor=1))
    assert "\n" not in str(caught.value) and "gpus-per-actor 0 to run on CPUs" in str(caught.value)
    # A joined cluster may have an autoscaler: it gets gpu-wait seconds to add a GPU node.
    asked: list[tuple[float, float]] = []
    arrived = adapter.Cluster(cpus=2, gpus=8, may_grow=True)

    def wait_for_gpus(gpus: float, seconds: float) -> adapter.Cluster:
        asked.append((gpus, seconds))
        return arrived if seconds > 5 else adapter.Cluster(cpus=2, gpus=0, may_grow=True)

    monkeypatch.setattr(adapter, "wait_for_gpus", wait_for_gpus)
    joined = adapter.Cluster(cpus=2, gpus=0, may_grow=True)
    assert with_gpus(joined, SynthesisOptions(gpus_per_actor=1)) is arrived
    with pytest.raises(
        AodError, match=r"^gpus-per-actor 0.5 asks for GPUs, .* none joined within 2 s \(gpu-wait\)"
    ):
        with_gpus(joined, SynthesisOptions(gpus_per_actor=0.5, gpu_wait_s=2))
    assert asked == [(1.0, 600.0), (0.5, 2.0)]


def test_the_pool_flags_reach_the_options_and_a_ray_jobs_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parser = argparse.ArgumentParser(prog="aod")
    add_synthesize_parser(parser.add_subparsers(dest="command"))
    flags = ["--min-actors", "16", "--max-actors", "64", "--gpus-per-actor", "1", "--gpu-wait", "900"]
    args = parser.parse_args(["synthesize", "--spec", "s.yaml", "--out", "o", *flags])
    seen: list[SynthesisOptions] = []

    def fake(spec: str, out: str, *, options: SynthesisOptions, **kwargs: Any) -> list[Any]:
        seen.append(options)
        return []

    monkeypatch.setattr(synthesis, "synthesize", fake)
    assert args.handler(args) == 0
    (options,) = seen
    assert (options.min_actors, options.max_actors, options.gpus_per_actor, options.gpu_wait_s) == (
        16,
        64,
        1.0,
        900.0,
    )
    default = parser.parse_args(["synthesize", "--spec", "s.yaml", "--out", "o"])
    assert (default.min_actors, default.max_actors, default.gpus_per_actor, default.gpu_wait) == (None,) * 4
    with pytest.raises(SystemExit):
        parser.parse_args(["synthesize", "--spec", "s.yaml", "--out", "o", "--gpus-per-actor", "-1"])
    job = SynthesisJob("s3://b/spec.yaml", "s3://b/out", min_actors=16, max_actors=64, gpus_per_actor=1.0)
    assert job.entrypoint() == (
        "aod synthesize --spec s3://b/spec.yaml --out s3://b/out"
        " --min-actors 16 --max-actors 64 --gpus-per-actor 1"
    )


def test_a_ray_job_runs_with_the_batch_thread_and_budget_flags_it_was_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parser = argparse.ArgumentParser(prog="aod")
    add_synthesize_parser(parser.add_subparsers(dest="command"))
    flags = ["--batch-size", "4", "--threads-per-actor", "2", "--max-candidates", "50", "--allow-partial"]
    address = ["--ray-address", "http://head:8265"]
    submitted: list[SynthesisJob] = []
    monkeypatch.setattr(jobs, "run_synthesis_job", lambda cluster, job, **kwargs: submitted.append(job))
    for given in ([], flags):
        args = parser.parse_args(
            ["synthesize", "--spec", "s3://b/spec.yaml", "--out", "s3://b/out", *address, *given]
        )
        assert args.handler(args) == 0
    default, chosen = (job.entrypoint() for job in submitted)
    assert (
        default == "aod synthesize --spec s3://b/spec.yaml --out s3://b/out --batch-size 16"
    )  # the command's
    assert chosen == (
        "aod synthesize --spec s3://b/spec.yaml --out s3://b/out"
        " --batch-size 4 --threads-per-actor 2 --max-candidates 50 --allow-partial"
    )


def test_the_dlm_server_flags_reach_the_options_and_a_ray_jobs_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parser = argparse.ArgumentParser(prog="aod")
    add_synthesize_parser(parser.add_subparsers(dest="command"))
    server = ["--model", "m", "--dlm-base-url", "http://sglang:30000", "--dlm-api-key-env", "KEY"]
    args = parser.parse_args(["synthesize", "--spec", "s.yaml", "--out", "o", *server])
    seen: list[SynthesisOptions] = []

    def fake(spec: str, out: str, *, options: SynthesisOptions, **kwargs: Any) -> list[Any]:
        seen.append(options)
        return []

    monkeypatch.setattr(synthesis, "synthesize", fake)
    assert args.handler(args) == 0
    assert (seen[0].model, seen[0].dlm_base_url, seen[0].dlm_api_key_env) == (
        "m",
        "http://sglang:30000",
        "KEY",
    )
    job = SynthesisJob("s3://b/spec.yaml", "s3://b/out", model="m", dlm_base_url="http://sglang:30000")
    assert job.entrypoint().endswith("--model m --dlm-base-url http://sglang:30000")


def test_a_runs_stream_is_read_one_partition_at_a_time() -> None:
    def batch(*rows: tuple[str, int]) -> pa.Table:
        return pa.Table.from_pylist([{"partition": p, "seed": s} for p, s in rows])

    stream = iter(
        [
            batch(("a", 0), ("a", 1)),
            batch(("a", 2), ("b", 0)),
            batch(("b", 1)),
            batch(("c", 0)),
            batch(("c", 1)),
        ]
    )
    rows = _Rows(stream, ["a", "b", "c"])
    a = rows.of("a")
    assert [[r["seed"] for r in rows] for rows in [next(a)]] == [[0, 1]]  # a has its rows: it stops reading
    # The rest of a is dropped; a batch holding the end of one partition and the start of the next is split.
    assert [[r["seed"] for r in got] for got in rows.of("b")] == [[0], [1]]
    assert [[r["seed"] for r in got] for got in rows.of("c")] == [[0], [1]]
    assert list(rows.of("c")) == []  # the stream's end


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
    assert [r["partition"] for r in rows] == [""] * 3  # a batch without partitions: the generator's own
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert [r["seed"] for r in rows] == [record_seed(5, i) for i in range(3)]
    for row in rows:
        assert row["valid"] and row["errors"] == [] and row["forwards"] > 0
        assert json.loads(row["record"])["color"] in {"red", "green", "blue"}
    # The same seed in another batch, at another position: the same candidate.
    again = generator(_seeds([7, 2])).to_pylist()[1]
    assert (again["text"], again["record"]) == (rows[2]["text"], rows[2]["record"])


class _Board:
    """A run's board as the actors see it: the partitions the driver has finished with."""

    def __init__(self, *closed: str) -> None:
        self.finished = frozenset(closed)
        self.loads = 0

    def closed(self) -> frozenset[str]:
        return self.finished

    def count_load(self) -> None:
        self.loads += 1


def test_one_generator_writes_each_partitions_seeds_with_its_prompt_and_skips_finished_ones() -> None:
    other = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 3}},
        "required": ["n"],
    }
    board = _Board("done")
    settings = DecodingSettings(steps=4)
    generator = DLMGenerator(
        load_schema(SCHEMA),
        "tiny-random",
        False,
        "Write a shirt.\nRecord:\n",
        settings,
        threads=1,
        partition="shirts",
        partitions={
            "counts": PartitionPrompt(load_schema(other), "A count.\nRecord:\n", settings),
            "done": PartitionPrompt(load_schema(other), "A count.\nRecord:\n", settings),
        },
        board=board,  # type: ignore[arg-type]
    )
    assert board.loads == 1  # the model, loaded once for every partition of the pool
    batch = pa.table(
        {
            "partition": ["shirts", "shirts", "done", "counts", "counts"],
            "index": [6, 7, 0, 0, 1],
            "seed": [record_seed(5, i) for i in (6, 7, 0, 0, 1)],
        }
    )
    rows = generator(batch).to_pylist()
    assert [(r["partition"], r["index"]) for r in rows] == [
        ("shirts", 6),
        ("shirts", 7),
        ("counts", 0),
        ("counts", 1),
    ]
    assert all(r["valid"] for r in rows)
    assert [sorted(json.loads(r["record"])) for r in rows] == [["color", "size"]] * 2 + [["n"]] * 2
    # Each partition's candidates are those it gets alone: a seed's record depends on its prompt only.
    alone = generator(pa.table({"partition": ["counts"], "index": [1], "seed": [record_seed(5, 1)]}))
    assert alone.to_pylist()[0]["record"] == rows[3]["record"]
    assert generator(pa.table({"partition": ["done"], "index": [3], "seed": [9]})).num_rows == 0


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
            "partition": [""] * 4,
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


def test_judge_stage_judges_each_candidate_by_its_partition_and_drops_finished_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(adapter, "get", lambda reference: reference)
    other = load_schema({"type": "object", "properties": {"n": {"type": "integer"}}})
    judge = CandidateJudge(
        load_schema(SCHEMA),
        REFERENCE,
        partition="shirts",
        partitions={"counts": PartitionJudging(other, [{"n": 1}]), "done": PartitionJudging(other, [])},
        board=_Board("done"),  # type: ignore[arg-type]
    )
    shirt, count = '{"color": "red", "size": 1}', '{"n": 1}'
    texts = [shirt, count, count, count]
    batch = pa.Table.from_pydict(
        {
            "partition": ["shirts", "counts", "done", "done"],
            "index": [0, 0, 0, 1],
            "seed": [1, 2, 3, 4],
            "text": texts,
            "record": texts,
            "errors": [[]] * 4,
            "valid": [True] * 4,
            "forwards": [1.0] * 4,
            "slots": [0] * 4,
            "repaired": [0] * 4,
        },
        schema=CANDIDATES,
    )
    rows = judge(batch).to_pylist()
    # Each is an exact copy of its own partition's reference; the finished partition's are gone.
    assert [(r["partition"], r["kinds"]) for r in rows] == [
        ("shirts", ["exact_copy"]),
        ("counts", ["exact_copy"]),
    ]
    assert judge(batch.slice(2)).num_rows == 0


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
