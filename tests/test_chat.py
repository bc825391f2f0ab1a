"""Chat backends: the HTTP backend against a real loopback server, the local one with real SmolLM2."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from aod_ops.agents.chat import OpenAIChat, TransformersChat, chat_model_from_spec
from aod_ops.errors import ModelError
from aod_ops.spec import AgentSetting

if TYPE_CHECKING:
    from tests.fakes import Answer, ChatRequest, ChatServer

MESSAGES = [{"role": "user", "content": "Say hello."}]


def answers() -> Answer:
    """Answers chosen by the URL's first path segment: ``flaky`` fails once with 500, ``down``
    503, ``garbage`` HTML, ``pages`` a long HTML error page (502), ``deep`` JSON nested too deep,
    ``nochoices`` a completion without choices, ``denied`` 401, ``slow`` answers after a second;
    anything else is ``hello from <model>``."""
    flaky_failures: list[ChatRequest] = []

    def answer(request: ChatRequest) -> str | tuple[int, bytes]:
        mode = request.mode
        if mode == "flaky" and not flaky_failures:
            flaky_failures.append(request)
            return 500, b"overloaded"
        if mode == "down":
            return 503, b"maintenance"
        if mode == "garbage":
            return 200, b"<html>not json</html>"
        if mode == "pages":
            return 502, b"<html>\n<body>\n  Bad gateway\n</body>\n</html>\n" * 50
        if mode == "deep":
            return 200, b'{"choices": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        if mode == "nochoices":
            return 200, json.dumps({"id": "x", "choices": []}).encode()
        if mode == "denied":
            return 401, b"bad key"
        if mode == "slow":
            time.sleep(1.0)
            return 200, b"{}"
        return f"hello from {request.body['model']}"

    return answer


@pytest.fixture
def server(chat_server: type[ChatServer]) -> Iterator[ChatServer]:
    with chat_server(answers()) as srv:
        yield srv


def test_good_answer_sends_model_messages_and_key(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AOD_TEST_KEY", "sekret")
    chat = OpenAIChat(server.url + "/good", "tiny-model", api_key_env="AOD_TEST_KEY")
    assert chat.complete(MESSAGES, max_tokens=12, temperature=0.3) == "hello from tiny-model"
    (request,) = server.requests
    assert request.path == "/good/v1/chat/completions"
    assert request.auth == "Bearer sekret"
    assert request.body == {
        "model": "tiny-model",
        "messages": MESSAGES,
        "max_tokens": 12,
        "temperature": 0.3,
    }


def test_a_seed_is_sent_when_given_and_errors_name_the_endpoints_kind(server: ChatServer) -> None:
    chat = OpenAIChat(server.url + "/good", "dlm", kind="DLM server")
    assert chat.complete(MESSAGES, max_tokens=4, temperature=0.5, seed=7) == "hello from dlm"
    assert server.requests[0].body["seed"] == 7
    denied = OpenAIChat(server.url + "/denied", "dlm", retries=0, kind="DLM server")
    with pytest.raises(ModelError, match=rf"^DLM server {server.url}/denied/v1/chat/completions: HTTP 401"):
        denied.complete(MESSAGES, max_tokens=4, temperature=0.0)


def test_base_url_ending_in_v1_is_not_doubled(server: ChatServer) -> None:
    chat = OpenAIChat(server.url + "/good/v1/", "m")
    chat.complete(MESSAGES, max_tokens=4, temperature=0.0)
    assert server.requests[0].path == "/good/v1/chat/completions"
    assert server.requests[0].auth is None


def test_server_error_is_retried_then_succeeds(server: ChatServer) -> None:
    chat = OpenAIChat(server.url + "/flaky", "m", retries=2, backoff=0.01)
    assert chat.complete(MESSAGES, max_tokens=4, temperature=0.0) == "hello from m"
    assert len(server.requests) == 2


def test_persistent_server_error_gives_up_after_retries(server: ChatServer) -> None:
    chat = OpenAIChat(server.url + "/down", "m", retries=2, backoff=0.01)
    with pytest.raises(ModelError, match=r"HTTP 503.*after 3 attempts"):
        chat.complete(MESSAGES, max_tokens=4, temperature=0.0)
    assert len(server.requests) == 3


@pytest.mark.parametrize("mode", ["garbage", "nochoices", "deep"])
def test_garbage_answer_is_a_clear_model_error(server: ChatServer, mode: str) -> None:
    chat = OpenAIChat(server.url + "/" + mode, "m", retries=3, backoff=0.01)
    with pytest.raises(ModelError, match=r"not an OpenAI chat completion"):
        chat.complete(MESSAGES, max_tokens=4, temperature=0.0)
    assert len(server.requests) == 1  # an answer that is not a completion is not retried


def test_an_error_page_becomes_one_short_line(server: ChatServer) -> None:
    chat = OpenAIChat(server.url + "/pages", "m", retries=0)
    with pytest.raises(ModelError) as caught:
        chat.complete(MESSAGES, max_tokens=4, temperature=0.0)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400
    assert message.startswith(
        f"agent endpoint {server.url}/pages/v1/chat/completions: HTTP 502: <html> <body>"
    )


def test_client_error_is_not_retried(server: ChatServer) -> None:
    chat = OpenAIChat(server.url + "/denied", "m", retries=3, backoff=0.01)
    with pytest.raises(ModelError, match=r"HTTP 401: bad key"):
        chat.complete(MESSAGES, max_tokens=4, temperature=0.0)
    assert len(server.requests) == 1


def test_timeout_is_a_model_error(server: ChatServer) -> None:
    chat = OpenAIChat(server.url + "/slow", "m", timeout=0.2, retries=0)
    with pytest.raises(ModelError, match=r"no answer within 0.2 s"):
        chat.complete(MESSAGES, max_tokens=4, temperature=0.0)


def test_closed_port_is_a_model_error_after_backoff() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    chat = OpenAIChat(f"http://127.0.0.1:{port}", "m", retries=2, backoff=0.05)
    started = time.perf_counter()
    with pytest.raises(ModelError, match=rf"127.0.0.1:{port}/v1/chat/completions: cannot connect"):
        chat.complete(MESSAGES, max_tokens=4, temperature=0.0)
    assert time.perf_counter() - started >= 0.05 + 0.1  # backoff doubled between attempts


def test_missing_api_key_variable_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AOD_TEST_MISSING", raising=False)
    with pytest.raises(ModelError, match="AOD_TEST_MISSING is not set"):
        OpenAIChat("http://127.0.0.1:9", "m", api_key_env="AOD_TEST_MISSING")


def test_a_key_given_as_an_argument_is_sent_and_no_variable_is_read(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AOD_TEST_UNSET", raising=False)
    setting = AgentSetting(base_url=server.url + "/good", model="m", api_key_env="AOD_TEST_UNSET")
    chat = chat_model_from_spec(setting, api_key="from-a-connection")  # the unset variable is not read
    assert chat.complete(MESSAGES, max_tokens=4, temperature=0.0) == "hello from m"
    assert server.requests[0].auth == "Bearer from-a-connection"
    assert "AOD_TEST_UNSET" not in os.environ


def test_builder_makes_an_endpoint_chat_from_the_agent_setting(server: ChatServer) -> None:
    chat = chat_model_from_spec(AgentSetting(base_url=server.url + "/good", model="served", retries=1))
    assert isinstance(chat, OpenAIChat)
    assert chat.complete(MESSAGES, max_tokens=4, temperature=0.0) == "hello from served"


@pytest.mark.slow
def test_local_smollm2_answers_with_text_and_is_seeded() -> None:
    chat = chat_model_from_spec(AgentSetting(), seed=3)
    assert isinstance(chat, TransformersChat)
    messages = [{"role": "user", "content": "Name one fruit."}]
    first = chat.complete(messages, max_tokens=8, temperature=0.7)
    assert first.strip()
    again = TransformersChat(seed=3).complete(messages, max_tokens=8, temperature=0.7)
    assert again == first  # same seed and call number, same sample
