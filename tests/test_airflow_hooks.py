"""The provider's registration and its hooks for the ``aod`` and ``aod_ray`` connections and for
object-store credentials."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import airflow
import jsonschema
import pytest
import yaml
from airflow.sdk import Connection
from airflow.sdk.exceptions import AirflowNotFoundException

from aod_ops.airflow import get_provider_info
from aod_ops.airflow.exceptions import AoDConnectionError, AoDInputError
from aod_ops.airflow.hooks import AGENT_KEY_ENV, AoDHook, RayHook, StorageHook, storage_environment
from aod_ops.airflow.operators import AoDOptimizeOperator, AoDSynthesizeOperator
from aod_ops.airflow.partitions import load_partition
from aod_ops.errors import SpecError
from aod_ops.spec import AgentSetting, DLMSetting, load_spec

if TYPE_CHECKING:
    from aod_ops.ray.plan import SynthesisOptions
    from tests.fakes import ChatRequest, ChatServer, FakeTaskInstance

AIRFLOW_DIR = Path(airflow.__file__).parent
EXAMPLE_SPEC = Path(__file__).resolve().parents[1] / "examples" / "partitions.yaml"


def example_spec(path: Path, **defaults: Any) -> Path:
    """The example spec written to ``path`` with other ``defaults``, reading the example's files."""
    raw = yaml.safe_load(EXAMPLE_SPEC.read_text())
    raw["defaults"].update(defaults)
    for p in raw["partitions"]:
        for key in ("schema", "reference", "holdout"):
            if key in p:
                p[key] = str(EXAMPLE_SPEC.parent / p[key])
    path.write_text(yaml.safe_dump(raw))
    return path


def aod_conn(**fields: object) -> Connection:
    extra = fields.pop("extra", {})
    return Connection(conn_id="aod_test", conn_type="aod", extra=json.dumps(extra), **fields)  # type: ignore[arg-type]


def test_entry_point_names_get_provider_info() -> None:
    (point,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("aod_ops")]
    assert point.load() is get_provider_info


def test_provider_info_passes_airflows_schemas() -> None:
    info = get_provider_info()
    runtime = json.loads((AIRFLOW_DIR / "provider_info.schema.json").read_text())
    jsonschema.validate(info, runtime)
    # The connection types' form declarations, as Airflow 3.2+ reads them from provider info.
    full = json.loads((AIRFLOW_DIR / "provider.yaml.schema.json").read_text())
    jsonschema.validate(info["connection-types"], full["properties"]["connection-types"])
    assert info["package-name"] == "aod-ops"
    assert {c["connection-type"]: c["hook-class-name"] for c in info["connection-types"]} == {
        "aod": "aod_ops.airflow.hooks.AoDHook",
        "aod_ray": "aod_ops.airflow.hooks.RayHook",
    }
    # Not the official Ray provider's type and default id, which clashed.
    assert (RayHook.conn_type, RayHook.default_conn_name) == ("aod_ray", "aod_ray_default")


@pytest.mark.parametrize("hook", [AoDHook, RayHook])
def test_ui_field_behaviour_is_the_declared_one(hook: type[AoDHook] | type[RayHook]) -> None:
    behaviour = hook.get_ui_field_behaviour()
    schema = json.loads((AIRFLOW_DIR / "customized_form_field_behaviours.schema.json").read_text())
    jsonschema.validate(behaviour, schema)
    declared = next(
        c for c in get_provider_info()["connection-types"] if c["connection-type"] == hook.conn_type
    )
    assert behaviour["hidden_fields"] == declared["ui-field-behaviour"]["hidden-fields"]
    assert behaviour["relabeling"]["password"] == declared["ui-field-behaviour"]["relabeling"]["password"]


def test_aod_connection_names_agent_endpoint_and_dlm() -> None:
    conn = aod_conn(
        host="http://vllm:8000/v1",
        password="s3cret",
        extra={"agent_model": "qwen3-8b", "dlm": "/models/LLaDA", "trust_remote_code": True},
    )
    endpoints = AoDHook.endpoints_of(conn)
    assert endpoints.agent == AgentSetting(
        base_url="http://vllm:8000/v1", model="qwen3-8b", api_key_env=AGENT_KEY_ENV
    )
    assert endpoints.dlm == DLMSetting(model="/models/LLaDA", trust_remote_code=True)
    assert "s3cret" not in repr(endpoints)


def test_aod_connection_builds_url_from_host_and_port() -> None:
    endpoints = AoDHook.endpoints_of(aod_conn(host="vllm", port=8000, extra={"agent_model": "m"}))
    assert endpoints.agent is not None
    assert endpoints.agent.base_url == "http://vllm:8000"
    assert endpoints.agent.api_key_env is None  # no password: no key is sent


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"host": "http://vllm:8000"}, "needs 'agent_model'"),
        ({"password": "k"}, "need the agent base URL"),
        ({"extra": {"dlm": "tiny-random", "trust_remote_code": "yes"}}, "'trust_remote_code' must be"),
        ({"extra": {"modle": "x"}}, "unknown extra field(s) modle"),
        ({"extra": {"dlm_base_url": "http://sglang:30000"}}, "'dlm_base_url' needs 'dlm'"),
        (
            {"extra": {"dlm": "m", "dlm_base_url": "http://sglang:30000", "trust_remote_code": True}},
            "'trust_remote_code' is for a local model",
        ),
    ],
)
def test_aod_connection_errors_name_the_field(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(AoDConnectionError, match="connection 'aod_test'") as caught:
        AoDHook.endpoints_of(aod_conn(**fields))
    assert problem in str(caught.value)
    assert isinstance(caught.value, AoDInputError)  # not retried


def test_endpoints_replace_the_partitions_models() -> None:
    conn = aod_conn(
        host="http://llm:9000/v1", password="k-123", extra={"agent_model": "m", "dlm": "tiny-random"}
    )
    endpoints = AoDHook.endpoints_of(conn)
    partition = load_partition(EXAMPLE_SPEC, "cars", endpoints.overrides())
    assert partition.dlm == DLMSetting(model="tiny-random")
    assert partition.agent == AgentSetting(
        base_url="http://llm:9000/v1", model="m", api_key_env=AGENT_KEY_ENV
    )
    assert partition.loop == load_spec(EXAMPLE_SPEC).select("cars")[0].loop
    assert AoDHook.endpoints_of(aod_conn()).overrides() == {}


def agent_connection(monkeypatch: pytest.MonkeyPatch, url: str, **extra: Any) -> None:
    """The ``aod`` connection ``aod_agent``: the agent endpoint at ``url`` with the key ``k-123``."""
    conn = {"conn_type": "aod", "host": url, "password": "k-123", "extra": {"agent_model": "m", **extra}}
    monkeypatch.setenv("AIRFLOW_CONN_AOD_AGENT", json.dumps(conn))


@pytest.fixture
def agent(chat_server: type[ChatServer]) -> Iterator[ChatServer]:
    """An agent endpoint that says which environment it was asked in: it answers ``leaked`` when
    the API key is in some environment variable of this process (the connection's own aside)."""

    def answer(request: ChatRequest) -> str:
        named = {name: value for name, value in os.environ.items() if name != "AIRFLOW_CONN_AOD_AGENT"}
        return "leaked" if AGENT_KEY_ENV in named or "k-123" in named.values() else "clean"

    with chat_server(answer) as srv:
        yield srv


def test_the_hook_returns_the_agents_chat_model_with_its_key_and_writes_no_variable(
    agent: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent_connection(monkeypatch, agent.url)
    before = dict(os.environ)
    chat = AoDHook("aod_agent").get_chat_model()
    assert chat is not None and chat.name == "m"
    assert chat.complete([{"role": "user", "content": "hi"}], max_tokens=4, temperature=0.0) == "clean"
    assert agent.requests[0].auth == "Bearer k-123"
    assert dict(os.environ) == before
    monkeypatch.setenv("AIRFLOW_CONN_AOD_LOCAL", json.dumps({"conn_type": "aod"}))
    assert AoDHook("aod_local").get_chat_model() is None  # the spec's agent applies


def test_the_optimize_task_hands_the_loop_the_connections_chat_model_and_writes_no_variable(
    agent: ChatServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, task_instance: FakeTaskInstance
) -> None:
    import aod_ops.loop

    agent_connection(monkeypatch, agent.url)
    asked: dict[str, Any] = {}

    def optimize_partition(partition: Any, out_dir: Any, **options: Any) -> SimpleNamespace:
        asked["environment"] = dict(os.environ)
        asked["reply"] = options["chat"].complete([{"role": "user", "content": "hi"}], 4, 0.0)
        return SimpleNamespace(
            prompt_path=tmp_path / "prompt.json",
            history_path=tmp_path / "history.json",
            best_reward=0.5,
            rounds=(),
            stop="rounds",
        )

    monkeypatch.setattr(aod_ops.loop, "optimize_partition", optimize_partition)
    before = dict(os.environ)
    task = AoDOptimizeOperator(
        task_id="o",
        spec_path=str(EXAMPLE_SPEC),
        partition="cars",
        out_dir=str(tmp_path),
        aod_conn_id="aod_agent",
    )
    task.execute({"ti": task_instance})  # type: ignore[arg-type]
    assert asked["reply"] == "clean" and agent.requests[0].auth == "Bearer k-123"
    assert asked["environment"] == before == dict(os.environ)


class _Stop(Exception):
    """Raised by a stand-in synthesis once it has seen what it was run with."""


def test_a_local_synthesis_hands_the_key_to_a_critic_alone_and_writes_no_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, task_instance: FakeTaskInstance
) -> None:
    import aod_ops.ray.synthesize

    agent_connection(monkeypatch, "http://127.0.0.1:9/v1")
    before = dict(os.environ)
    seen: list[SynthesisOptions] = []

    def synthesize(*args: Any, options: SynthesisOptions, **kwargs: Any) -> None:
        assert dict(os.environ) == before  # the synthesis runs in the worker's own environment
        seen.append(options)
        raise _Stop

    monkeypatch.setattr(aod_ops.ray.synthesize, "synthesize", synthesize)
    critic = example_spec(tmp_path / "critic.yaml", critic=True)
    for spec in (EXAMPLE_SPEC, critic):
        task = AoDSynthesizeOperator(
            task_id="s", spec_path=str(spec), partition="cars", out_dir=str(tmp_path), aod_conn_id="aod_agent"
        )
        with pytest.raises(_Stop):
            task.execute({"ti": task_instance})  # type: ignore[arg-type]
    # Without a critic nothing needs the key; a critic's judge actors get it in their runtime_env.
    assert [options.critic_api_key for options in seen] == [None, "k-123"]
    assert "k-123" not in repr(seen[1])
    assert dict(os.environ) == before


def test_a_local_synthesis_reaches_the_critic_with_the_connections_key(
    chat_server: type[ChatServer],
    ray_session: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    task_instance: FakeTaskInstance,
) -> None:
    """Ray started before the connection was read: the judge actors get the key only through
    their runtime_env, and the worker's environment never holds it."""
    schema = {
        "type": "object",
        "properties": {"color": {"enum": ["red", "blue"]}, "size": {"type": "integer", "maximum": 999}},
        "required": ["color", "size"],
    }
    (tmp_path / "shirts.json").write_text(json.dumps(schema))
    rows = [{"color": "red", "size": size} for size in range(8)]
    (tmp_path / "shirts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = {
        "defaults": {"dlm": "tiny-random", "critic": True},
        "partitions": [{"name": "shirts", "schema": "shirts.json", "reference": "shirts.jsonl", "rows": 2}],
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    with chat_server(lambda request: '{"realistic": true, "reason": "plausible"}') as critic:
        agent_connection(monkeypatch, critic.url)
        before = dict(os.environ)
        task = AoDSynthesizeOperator(
            task_id="s",
            spec_path=str(tmp_path / "spec.yaml"),
            partition="shirts",
            out_dir=str(tmp_path / "run"),
            aod_conn_id="aod_agent",
            actors=1,
        )
        summary = task.execute({"ti": task_instance})  # type: ignore[arg-type]
    assert summary["rows"] == 2 and dict(os.environ) == before
    assert critic.requests and {r.auth for r in critic.requests} == {"Bearer k-123"}
    assert "k-123" not in (tmp_path / "run" / "tables" / "shirts" / "report.json").read_text()


def test_aod_connection_names_a_dlm_server_which_needs_free_mode(tmp_path: Path) -> None:
    extra = {"dlm": "inclusionAI/LLaDA2.0-mini-preview", "dlm_base_url": "http://sglang:30000"}
    endpoints = AoDHook.endpoints_of(aod_conn(extra=extra))
    server = DLMSetting(model="inclusionAI/LLaDA2.0-mini-preview", base_url="http://sglang:30000")
    assert endpoints.dlm == server
    # The example spec writes skeletons: a server cannot, and the partition says what to change.
    refusal = r"partition 'cars': field 'dlm': a DLM server \(http://sglang:30000\) writes free mode only"
    with pytest.raises(SpecError, match=refusal):
        load_partition(EXAMPLE_SPEC, "cars", endpoints.overrides())
    decoding = yaml.safe_load(EXAMPLE_SPEC.read_text())["defaults"].get("decoding", {})
    free = example_spec(tmp_path / "free.yaml", decoding={**decoding, "mode": "free"})
    assert load_partition(free, "cars", endpoints.overrides()).dlm == server


@pytest.fixture
def models_server(chat_server: type[ChatServer]) -> Iterator[str]:
    """An OpenAI-compatible server's ``/v1`` URL whose ``/v1/models`` answers 200 only with the right key."""

    def answer(request: ChatRequest) -> tuple[int, bytes]:
        if request.path == "/v1/models" and request.auth == "Bearer good":
            return 200, b'{"data": []}'
        return 401, b'{"error": "bad key"}'

    with chat_server(answer) as server:
        yield server.url + "/v1"


@pytest.mark.parametrize(("key", "expected"), [("good", True), ("bad", False)])
def test_aod_test_connection_asks_the_endpoint(
    models_server: str, monkeypatch: pytest.MonkeyPatch, key: str, expected: bool
) -> None:
    uri = json.dumps(
        {"conn_type": "aod", "host": models_server, "password": key, "extra": {"agent_model": "m"}}
    )
    monkeypatch.setenv("AIRFLOW_CONN_AOD_PROBE", uri)
    ok, message = AoDHook("aod_probe").test_connection()
    assert ok is expected
    assert ("HTTP 401" in message) is not expected


def test_aod_test_connection_reports_an_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    uri = json.dumps({"conn_type": "aod", "host": "http://127.0.0.1:9/v1", "extra": {"agent_model": "m"}})
    monkeypatch.setenv("AIRFLOW_CONN_AOD_PROBE", uri)
    ok, message = AoDHook("aod_probe").test_connection()
    assert not ok and "cannot connect" in message


def test_ray_connection_gives_the_jobs_api_address() -> None:
    jobs = RayHook.jobs_of(Connection(conn_id="r", conn_type="aod_ray", host="ray-head"))
    assert jobs.address == "http://ray-head:8265"
    jobs = RayHook.jobs_of(
        Connection(
            conn_id="r",
            conn_type="aod_ray",
            host="https://ray.example.com",
            password="tok",
            extra='{"verify": false}',
        )
    )
    assert (jobs.address, jobs.headers, jobs.verify) == (
        "https://ray.example.com",
        {"Authorization": "Bearer tok"},
        False,
    )
    with pytest.raises(AoDConnectionError, match="no dashboard address"):
        RayHook.jobs_of(Connection(conn_id="r", conn_type="aod_ray"))


def test_ray_test_connection_fails_clearly_without_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_RAY_PROBE", json.dumps({"conn_type": "aod_ray", "host": "http://127.0.0.1:9"})
    )
    ok, message = RayHook("ray_probe").test_connection()
    assert not ok
    assert "http://127.0.0.1:9" in message


def test_a_connection_of_the_old_ray_type_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {"conn_type": "ray", "host": "ray-head", "password": "tok"}
    monkeypatch.setenv("AIRFLOW_CONN_RAY_OLD", json.dumps(conn))
    jobs = RayHook("ray_old").get_conn()
    assert (jobs.address, jobs.headers) == ("http://ray-head:8265", {"Authorization": "Bearer tok"})


@pytest.fixture
def only_the_old_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ray_default`` (the id before the rename) exists, ``aod_ray_default`` does not."""
    monkeypatch.delenv("AIRFLOW_CONN_AOD_RAY_DEFAULT", raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_RAY_DEFAULT", json.dumps({"conn_type": "ray", "host": "http://old:8265"})
    )


def rename_hints(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "rename it to 'aod_ray_default'" in r.getMessage()]


@pytest.mark.usefixtures("only_the_old_default")
def test_the_old_default_connection_is_used_when_the_new_one_is_missing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="aod_ops.airflow.hooks"):
        assert RayHook().get_conn().address == "http://old:8265"
    (hint,) = rename_hints(caplog)
    assert hint.startswith("Using the Ray connection 'ray_default' because 'aod_ray_default' does not exist")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="aod_ops.airflow.hooks"):  # the triggerer's way
        conn = asyncio.run(RayHook.aconnection("aod_ray_default"))
    assert conn.host == "http://old:8265"
    assert len(rename_hints(caplog)) == 1


@pytest.mark.usefixtures("only_the_old_default")
def test_the_old_default_stands_in_only_for_a_missing_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(AirflowNotFoundException, match="ray_elsewhere"):
        RayHook("ray_elsewhere").get_conn()
    with pytest.raises(AirflowNotFoundException, match="ray_elsewhere"):
        asyncio.run(RayHook.aconnection("ray_elsewhere"))
    new = {"conn_type": "aod_ray", "host": "http://new:8265"}
    monkeypatch.setenv("AIRFLOW_CONN_AOD_RAY_DEFAULT", json.dumps(new))
    with caplog.at_level(logging.INFO, logger="aod_ops.airflow.hooks"):
        assert RayHook().get_conn().address == "http://new:8265"
    assert rename_hints(caplog) == []


def test_without_either_default_the_error_names_the_new_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_AOD_RAY_DEFAULT", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_RAY_DEFAULT", raising=False)
    with pytest.raises(AirflowNotFoundException, match="`aod_ray_default` isn't defined"):
        RayHook().get_conn()


def test_a_storage_connection_is_exposed_as_aws_variables_while_the_task_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = {
        "conn_type": "aws",
        "login": "AKIDEXAMPLE",
        "password": "secret",
        "extra": {"region_name": "eu-west-1", "endpoint_url": "http://minio:9000"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AOD_S3", json.dumps(conn))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "the-workers-own")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    assert StorageHook("aod_s3").get_conn() == {
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://minio:9000",
    }
    with storage_environment("aod_s3"):
        assert (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]) == (
            "AKIDEXAMPLE",
            "secret",
        )
    assert os.environ["AWS_ACCESS_KEY_ID"] == "the-workers-own" and "AWS_SECRET_ACCESS_KEY" not in os.environ
    with storage_environment(None):
        assert os.environ["AWS_ACCESS_KEY_ID"] == "the-workers-own"
    monkeypatch.setenv("AIRFLOW_CONN_AOD_S3", json.dumps({**conn, "extra": {"bucket": "b"}}))
    with pytest.raises(AoDConnectionError, match="connection 'aod_s3': unknown extra field"):
        StorageHook("aod_s3").get_conn()
