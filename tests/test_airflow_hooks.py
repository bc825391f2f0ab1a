"""The provider's registration and its hooks for the ``aod`` and ``aod_ray`` connections and for
object-store credentials."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema
import pytest
import yaml
from airflow.sdk import Connection
from airflow.sdk.exceptions import AirflowNotFoundException

from aod_ops.airflow import get_provider_info
from aod_ops.airflow.exceptions import AoDConnectionError, AoDInputError
from aod_ops.airflow.hooks import AGENT_KEY_ENV, AoDHook, RayHook, StorageHook, storage_environment
from aod_ops.airflow.operators import load_partition
from aod_ops.errors import SpecError
from aod_ops.spec import AgentSetting, DLMSetting, load_spec

AIRFLOW_DIR = Path(airflow.__file__).parent
EXAMPLE_SPEC = Path(__file__).resolve().parents[1] / "examples" / "partitions.yaml"


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


def test_endpoints_replace_the_partitions_models_and_expose_the_key() -> None:
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
    assert AGENT_KEY_ENV not in os.environ
    with endpoints.environment():
        assert os.environ[AGENT_KEY_ENV] == "k-123"
    assert AGENT_KEY_ENV not in os.environ


def test_aod_connection_names_a_dlm_server_which_needs_free_mode(tmp_path: Path) -> None:
    extra = {"dlm": "inclusionAI/LLaDA2.0-mini-preview", "dlm_base_url": "http://sglang:30000"}
    endpoints = AoDHook.endpoints_of(aod_conn(extra=extra))
    server = DLMSetting(model="inclusionAI/LLaDA2.0-mini-preview", base_url="http://sglang:30000")
    assert endpoints.dlm == server
    # The example spec writes skeletons: a server cannot, and the partition says what to change.
    refusal = r"partition 'cars': field 'dlm': a DLM server \(http://sglang:30000\) writes free mode only"
    with pytest.raises(SpecError, match=refusal):
        load_partition(EXAMPLE_SPEC, "cars", endpoints.overrides())
    raw = yaml.safe_load(EXAMPLE_SPEC.read_text())
    raw["defaults"]["decoding"] = {**raw["defaults"].get("decoding", {}), "mode": "free"}
    for p in raw["partitions"]:  # the example's files, read from where the example keeps them
        for key in ("schema", "reference", "holdout"):
            if key in p:
                p[key] = str(EXAMPLE_SPEC.parent / p[key])
    free = tmp_path / "free.yaml"
    free.write_text(yaml.safe_dump(raw))
    assert load_partition(free, "cars", endpoints.overrides()).dlm == server


class _Models(BaseHTTPRequestHandler):
    """A stand-in OpenAI-compatible server: /v1/models answers 200 only with the right key."""

    def do_GET(self) -> None:
        ok = self.path == "/v1/models" and self.headers.get("Authorization") == "Bearer good"
        self.send_response(200 if ok else 401)
        self.end_headers()
        self.wfile.write(b'{"data": []}' if ok else b'{"error": "bad key"}')

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def models_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Models)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


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
