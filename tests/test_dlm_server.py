"""A DLM behind a server, against a real OpenAI-compatible server on loopback that runs a real
model (SmolLM2-135M-Instruct through transformers, as SGLang would run LLaDA2): free-mode records
parsed and validated like a local model's, the loop, ``aod generate``, synthesis through Ray
(``aod synthesize`` and the Airflow tasks), and the refusals (skeleton mode, a server that fails)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import pyarrow.parquet as pq
import pytest
import yaml

from aod_ops.agents.chat import TransformersChat
from aod_ops.agents.judge import Judge
from aod_ops.agents.prompt import Prompt
from aod_ops.cli import main
from aod_ops.dlm.generate import Generator
from aod_ops.dlm.prompting import render_prompt
from aod_ops.dlm.server import DLMServer
from aod_ops.dlm.settings import DecodingSettings
from aod_ops.errors import ModelError
from aod_ops.loop import optimize_partition
from aod_ops.schema import LoadedSchema, load_schema
from aod_ops.spec import DLMSetting, load_spec

if TYPE_CHECKING:
    from tests.fakes import ChatRequest, ChatServer, FakeTaskInstance

pytestmark = pytest.mark.slow  # the server loads the real SmolLM2 weights

SERVED = "smollm2-135m-instruct"
# The most tokens the test server writes per reply, whatever max_tokens asks (servers cap replies
# too): a greedy reply to these prompts closes its JSON within it, and the tests stay fast.
CAP = 32
SCHEMA = {
    "title": "Person",
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
}
REFERENCE = [{"name": "Ada Lovelace", "age": 36}, {"name": "Alan Turing", "age": 41}]
GREEDY = DecodingSettings(mode="free", temperature=0.0, max_new_tokens=CAP)
PARSE_ERROR = ("parse error: the output is not a JSON document",)
JUNK = "Sorry, I cannot write that record."


class SmolLM2Answers:
    """A served SmolLM2's answers (``ChatServer``): the model's reply, sampled with the request's
    seed; the mode ``down`` answers 503, ``slow`` answers after a second, ``junk`` answers an even
    seed with ``JUNK`` (no record). A reply is generated once per request, the seed aside when
    greedy (temperature 0): a greedy reply does not depend on it."""

    def __init__(self) -> None:
        from aod_ops.hf import load_smollm2

        self.model, self.tokenizer = load_smollm2()
        self.lock = threading.Lock()  # one generation at a time: the model is shared by the threads
        self.replies: dict[str, str] = {}  # a reply per request, the seed left out of a greedy one's

    def __call__(self, request: ChatRequest) -> str | tuple[int, bytes]:
        body = request.body
        if request.mode == "down":
            return 503, b"no model loaded"
        if request.mode == "slow":
            time.sleep(1.0)
        if request.mode == "junk" and body.get("seed", 0) % 2 == 0:
            return JUNK
        asked = (body["messages"], min(body["max_tokens"], CAP), body["temperature"])
        seed = body.get("seed", 0)
        key = json.dumps([*asked, seed if body["temperature"] else None])
        with self.lock:
            if key not in self.replies:
                self.replies[key] = TransformersChat(self.model, self.tokenizer, seed=seed).complete(*asked)
            return self.replies[key]


@pytest.fixture(scope="module")
def server(chat_server: type[ChatServer]) -> Iterator[ChatServer]:
    """An OpenAI-compatible chat server on loopback running SmolLM2: ``POST
    [/<mode>]/v1/chat/completions`` (``SmolLM2Answers``)."""
    with chat_server(SmolLM2Answers()) as srv:
        yield srv


def received(server: ChatServer, since: int = 0) -> list[dict[str, Any]]:
    """The request bodies the server received since request number ``since``, in seed order."""
    return sorted((r.body for r in server.requests[since:]), key=lambda b: b.get("seed", 0))


@pytest.fixture
def schema_file(tmp_path: Path) -> Path:
    path = tmp_path / "person.json"
    path.write_text(json.dumps(SCHEMA))
    return path


def served_generator(schema: LoadedSchema, url: str, **setting: Any) -> Generator:
    server = DLMServer.from_setting(DLMSetting(model=SERVED, base_url=url, **setting))
    return Generator(None, schema, server=server)


def test_free_mode_records_come_from_the_server_parsed_and_validated(
    server: ChatServer, schema_file: Path
) -> None:
    schema = load_schema(schema_file)
    generator = served_generator(schema, server.url)
    prompt = render_prompt("Write one realistic record as JSON.", SCHEMA)
    before = len(server.requests)
    written = generator.generate(prompt, [11, 12], GREEDY)  # one batch: sent together
    cut = generator.generate(prompt, [13], replace(GREEDY, max_new_tokens=2))
    # What the server was asked: the rendered prompt, the model, the length, temperature and seed.
    assert received(server, before) == [
        {
            "model": SERVED,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": tokens,
            "temperature": 0.0,
            "seed": seed,
        }
        for seed, tokens in ((11, CAP), (12, CAP), (13, 2))
    ]
    assert {r.path for r in server.requests[before:]} == {"/v1/chat/completions"}
    # Greedy replies close their JSON within CAP tokens: valid records, checked against the schema.
    assert [c.seed for c in written] == [11, 12]
    for candidate in written:
        assert candidate.valid, candidate.text
        jsonschema.validate(candidate.record, SCHEMA)
    # Two tokens are no JSON document: a candidate with its error, not an exception.
    (broken,) = cut
    assert (broken.valid, broken.record, broken.errors, broken.seed) == (False, None, PARSE_ERROR, 13)
    # The judge whose verdicts send a synthesis's rejects to quarantine rejects it, and says why.
    judge = Judge(schema, REFERENCE)
    verdict = judge.verdicts([*written, broken])[-1]
    assert not verdict.ok and [f.kind for f in verdict.findings] == ["parse"]
    # The server's passes are its own: none counted here.
    assert (generator.stats.records, generator.stats.forwards) == (3, 0)


def test_a_failing_server_is_a_model_error_naming_its_url(server: ChatServer, schema_file: Path) -> None:
    schema = load_schema(schema_file)
    prompt = render_prompt("Write one realistic record as JSON.", SCHEMA)
    down = served_generator(schema, server.url + "/down", retries=0)
    with pytest.raises(ModelError, match=rf"^DLM server {server.url}/down/v1/chat/completions: HTTP 503"):
        down.generate(prompt, [1], GREEDY)
    slow = served_generator(schema, server.url + "/slow", retries=0, timeout=0.2)
    url = f"{server.url}/slow/v1/chat/completions"
    with pytest.raises(ModelError, match=rf"^DLM server {url}: no answer within 0.2 s \(after 1 attempts\)"):
        slow.generate(prompt, [1], GREEDY)


def test_skeleton_mode_with_a_server_is_refused_before_any_request(
    server: ChatServer, schema_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = len(server.requests)
    generator = served_generator(load_schema(schema_file), server.url)
    with pytest.raises(ModelError, match=r"free mode only .* use mode: free"):
        generator.generate(render_prompt("x"), [1], DecodingSettings())
    args = ["generate", "--schema", str(schema_file), "--dlm-base-url", server.url, "--model", SERVED]
    assert main(args) == 2
    assert "a DLM server writes free mode only (a chat API cannot infill a skeleton): add --mode free" in (
        capsys.readouterr().err
    )
    assert main([*args[:5], "--mode", "free"]) == 2  # and the served model must be named
    assert "--dlm-base-url needs --model" in capsys.readouterr().err
    assert len(server.requests) == before


def test_aod_generate_writes_the_servers_records(
    server: ChatServer, schema_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "people.jsonl"
    before = len(server.requests)
    args = ["generate", "--schema", str(schema_file), "-n", "2", "--mode", "free", "--temperature", "0"]
    assert main([*args, "--dlm-base-url", server.url, "--model", SERVED, "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        jsonschema.validate(json.loads(line), SCHEMA)  # greedy: valid, as in the generator test
    bodies = received(server, before)
    assert [(b["model"], b["max_tokens"], b["temperature"]) for b in bodies] == [(SERVED, 160, 0.0)] * 2
    assert bodies[0]["messages"][0]["content"].startswith("Write one realistic record as JSON.\nSchema: ")
    summary = capsys.readouterr().err
    assert "validity 1.000" in summary
    # The server's forward passes are not counted: the summary says so rather than showing 0.
    assert "forward passes/record n/a (DLM server)" in summary


def person_spec(folder: Path, dlm: Any, **defaults: Any) -> Path:
    """A one-partition spec in ``folder`` (``people``) whose DLM setting is ``dlm``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "person.json").write_text(json.dumps(SCHEMA))
    (folder / "people.jsonl").write_text("".join(json.dumps(r) + "\n" for r in REFERENCE))
    spec = {
        "defaults": {
            "dlm": dlm,
            "loop": {"rounds": 1, "candidates": 1, "proposals": 1, "target_reward": 0.0},
            "decoding": {"mode": "free", "temperature": 0.0, "max_new_tokens": CAP},
            **defaults,
        },
        "partitions": [{"name": "people", "schema": "person.json", "reference": "people.jsonl", "rows": 4}],
    }
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return folder / "spec.yaml"


def test_the_loop_samples_and_judges_the_servers_records(server: ChatServer, tmp_path: Path) -> None:
    spec = person_spec(tmp_path, {"base_url": server.url, "model": SERVED})
    (partition,) = load_spec(spec).partitions
    before = len(server.requests)
    result = optimize_partition(partition, tmp_path / "out")
    (record,) = result.rounds
    start = record.start  # target 0: the initial prompt is sampled and judged, nothing proposed
    assert len(start.candidates) == 1 and record.proposals == ()
    prompt = start.prompt.render(SCHEMA)
    bodies = received(server, before)
    assert [b["seed"] for b in bodies] == sorted(c.seed for c in start.candidates)
    assert all(b["messages"] == [{"role": "user", "content": prompt}] for b in bodies)
    assert {(b["model"], b["max_tokens"], b["temperature"]) for b in bodies} == {(SERVED, CAP, 0.0)}
    for candidate in start.candidates:
        if candidate.valid:
            jsonschema.validate(candidate.record, SCHEMA)
        else:
            assert candidate.errors
    assert start.metrics.validity == sum(c.valid for c in start.candidates)
    assert start.metrics.forwards_per_valid_record is None  # a server's passes are not counted
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["dlm"] == {"model": SERVED, "trust_remote_code": False, "base_url": server.url}


def test_a_server_down_fails_the_loop_naming_the_partition_and_url(
    server: ChatServer, tmp_path: Path
) -> None:
    spec = person_spec(tmp_path, {"base_url": server.url + "/down", "model": SERVED, "retries": 0})
    (partition,) = load_spec(spec).partitions
    with pytest.raises(ModelError, match=rf"^partition 'people': DLM server {server.url}/down/v1/chat"):
        optimize_partition(partition, tmp_path / "out")


def record_prompt(folder: Path) -> Path:
    """A prompt folder for ``people`` whose prompt gets a record the judge accepts: it asks for a
    given new record (SmolLM2-135M, asked for any record, echoes the schema, whose "string" the
    judge rejects as a placeholder)."""
    prompt = Prompt('Answer with this JSON: {"name":"Maria Lopez","age":29}', decoding=GREEDY)
    (folder / "people").mkdir(parents=True)
    (folder / "people" / "prompt.json").write_text(prompt.to_json())
    return folder


def test_aod_synthesize_writes_the_servers_records_and_quarantines_its_junk(
    server: ChatServer,
    ray_session: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = "sk-test-0123456789"
    dlm = {"base_url": server.url + "/junk", "model": SERVED, "api_key_env": "AOD_TEST_DLM_KEY"}
    spec = person_spec(tmp_path, dlm)
    # Set after Ray started: the actors get it only through the run's runtime_env.
    monkeypatch.setenv("AOD_TEST_DLM_KEY", key)
    before = len(server.requests)
    out = tmp_path / "tables"
    args = ["synthesize", "--spec", str(spec), "--out", str(out), "--rows", "1", "--actors", "1"]
    args += [
        "--batch-size",
        "2",
        "--max-candidates",
        "2",
        "--prompt-dir",
        str(record_prompt(tmp_path / "prompts")),
    ]
    # GPUs are for a local model: on this cluster without any, a server's run asks for none.
    assert main([*args, "--gpus-per-actor", "1"]) == 0
    # Seed 0 got junk, seed 1 the model's greedy reply: one row, one quarantined candidate.
    requests = server.requests[before:]
    assert sorted(r.body["seed"] for r in requests) == [0, 1]
    assert {r.auth for r in requests} == {f"Bearer {key}"}
    (row,) = pq.read_table(out / "people" / "data").to_pylist()
    jsonschema.validate(json.loads(row["_aod_record"]), SCHEMA)
    assert (row["_aod_seed"], row["_aod_model"]) == (1, SERVED)
    (rejected,) = pq.read_table(out / "people" / "quarantine").to_pylist()
    assert (rejected["seed"], rejected["text"], rejected["record"]) == (0, JUNK, None)
    assert rejected["kinds"] == ["parse"]
    report = json.loads((out / "people" / "report.json").read_text())
    assert report["settings"]["dlm_base_url"] == server.url + "/junk"
    assert (report["settings"]["gpus_per_actor"], report["timings"]["model_loads"]) == (0.0, 0)
    assert report["metrics"]["forwards_per_valid_record"] is None  # the server's passes are its own
    # The key reaches the server, and nothing that is written or shown.
    assert key not in (out / "people" / "report.json").read_text()
    assert key not in "".join(capsys.readouterr())


def test_the_aod_connections_dlm_server_runs_the_optimize_and_synthesize_tasks(
    server: ChatServer,
    ray_session: None,
    task_instance: FakeTaskInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aod_ops.airflow.operators import AoDOptimizeOperator, AoDSynthesizeOperator

    spec = person_spec(tmp_path, "tiny-random")  # the connection's DLM replaces the spec's
    extra = {"dlm": SERVED, "dlm_base_url": server.url}
    monkeypatch.setenv("AIRFLOW_CONN_AOD_DLM", json.dumps({"conn_type": "aod", "extra": extra}))
    common = {"spec_path": str(spec), "partition": "people", "out_dir": str(tmp_path / "run")}
    ti = task_instance
    before = len(server.requests)
    optimize = AoDOptimizeOperator(task_id="o", aod_conn_id="aod_dlm", **common)
    result = optimize.execute({"ti": ti})  # type: ignore[arg-type]
    assert result["partition"] == "people"
    assert result["prompt_uri"].endswith("/run/prompts/people/prompt.json")
    assert (tmp_path / "run" / "prompts" / "people" / "prompt.json").is_file()
    assert [b["model"] for b in received(server, before)] == [SERVED]
    before = len(server.requests)
    prompts = str(record_prompt(tmp_path / "prompts"))
    synthesize = AoDSynthesizeOperator(
        task_id="s", aod_conn_id="aod_dlm", rows=1, actors=1, prompt_dir=prompts, **common
    )
    summary = synthesize.execute({"ti": ti})  # type: ignore[arg-type]
    assert (summary["partition"], summary["rows"]) == ("people", 1)
    (row,) = pq.read_table(tmp_path / "run" / "tables" / "people" / "data").to_pylist()
    jsonschema.validate(json.loads(row["_aod_record"]), SCHEMA)
    assert row["_aod_model"] == SERVED and received(server, before)[0]["model"] == SERVED
