"""Chat backends: the HTTP backend against a real loopback server, the local one with real SmolLM2."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from aod_ops.agents.chat import OpenAIChat, TransformersChat, chat_model_from_spec
from aod_ops.errors import ModelError
from aod_ops.spec import AgentSetting

MESSAGES = [{"role": "user", "content": "Say hello."}]


class _Server:
    """A loopback OpenAI-like server whose behaviour is chosen by the URL's first path segment."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.flaky_failures = 0
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                state.requests.append(
                    {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
                )
                mode = self.path.split("/")[1]
                if mode == "flaky" and state.flaky_failures < 1:
                    state.flaky_failures += 1
                    self._send(500, b"overloaded")
                elif mode == "down":
                    self._send(503, b"maintenance")
                elif mode == "garbage":
                    self._send(200, b"<html>not json</html>")
                elif mode == "pages":
                    self._send(502, b"<html>\n<body>\n  Bad gateway\n</body>\n</html>\n" * 50)
                elif mode == "deep":
                    self._send(200, b'{"choices": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
                elif mode == "nochoices":
                    self._send(200, json.dumps({"id": "x", "choices": []}).encode())
                elif mode == "denied":
                    self._send(401, b"bad key")
                elif mode == "slow":
                    time.sleep(1.0)
                    self._send(200, b"{}")
                else:
                    reply = f"hello from {body['model']}"
                    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]}
                    self._send(200, json.dumps(answer).encode())

            def _send(self, status: int, payload: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def test_good_answer_sends_model_messages_and_key(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOD_TEST_KEY", "sekret")
    chat = OpenAIChat(server.url + "/good", "tiny-model", api_key_env="AOD_TEST_KEY")
    assert chat.complete(MESSAGES, max_tokens=12, temperature=0.3) == "hello from tiny-model"
    (request,) = server.requests
    assert request["path"] == "/good/v1/chat/completions"
    assert request["auth"] == "Bearer sekret"
    assert request["body"] == {
        "model": "tiny-model",
        "messages": MESSAGES,
        "max_tokens": 12,
        "temperature": 0.3,
    }


def test_a_seed_is_sent_when_given_and_errors_name_the_endpoints_kind(server: _Server) -> None:
    chat = OpenAIChat(server.url + "/good", "dlm", kind="DLM server")
    assert chat.complete(MESSAGES, max_tokens=4, temperature=0.5, seed=7) == "hello from dlm"
    assert server.requests[0]["body"]["seed"] == 7
    denied = OpenAIChat(server.url + "/denied", "dlm", retries=0, kind="DLM server")
    with pytest.raises(ModelError, match=rf"^DLM server {server.url}/denied/v1/chat/completions: HTTP 401"):
        denied.complete(MESSAGES, max_tokens=4, temperature=0.0)


def test_base_url_ending_in_v1_is_not_doubled(server: _Server) -> None:
    chat = OpenAIChat(server.url + "/good/v1/", "m")
    chat.complete(MESSAGES, max_tokens=4, temperature=0.0)
    assert server.requests[0]["path"] == "/good/v1/chat/completions"
    assert server.requests[0]["auth"] is None


def test_server_error_is_retried_then_succeeds(server: _Server) -> None:
    chat = OpenAIChat(server.url + "/flaky", "m", retries=2, backoff=0.01)
    assert chat.complete(MESSAGES, max_tokens=4, temperature=0.0) == "hello from m"
    assert len(server.requests) == 2


def test_persistent_server_error_gives_up_after_retries(server: _Server) -> None:
    chat = OpenAIChat(server.url + "/down", "m", retries=2, backoff=0.01)
    with pytest.raises(ModelError, match=r"HTTP 503.*after 3 attempts"):
        chat.complete(MESSAGES, max_tokens=4, temperature=0.0)
    assert len(server.requests) == 3


@pytest.mark.parametrize("mode", ["garbage", "nochoices", "deep"])
def test_garbage_answer_is_a_clear_model_error(server: _Server, mode: str) -> None:
    chat = OpenAIChat(server.url + "/" + mode, "m", retries=3, backoff=0.01)
    with pytest.raises(ModelError, match=r"not an OpenAI chat completion"):
        chat.complete(MESSAGES, max_tokens=4, temperature=0.0)
    assert len(server.requests) == 1  # an answer that is not a completion is not retried


def test_an_error_page_becomes_one_short_line(server: _Server) -> None:
    chat = OpenAIChat(server.url + "/pages", "m", retries=0)
    with pytest.raises(ModelError) as caught:
        chat.complete(MESSAGES, max_tokens=4, temperature=0.0)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400
    assert message.startswith(
        f"agent endpoint {server.url}/pages/v1/chat/completions: HTTP 502: <html> <body>"
    )


def test_client_error_is_not_retried(server: _Server) -> None:
    chat = OpenAIChat(server.url + "/denied", "m", retries=3, backoff=0.01)
    with pytest.raises(ModelError, match=r"HTTP 401: bad key"):
        chat.complete(MESSAGES, max_tokens=4, temperature=0.0)
    assert len(server.requests) == 1


def test_timeout_is_a_model_error(server: _Server) -> None:
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


def test_builder_makes_an_endpoint_chat_from_the_agent_setting(server: _Server) -> None:
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
