"""Fakes the unit and the integration tests share, with their fixtures (each folder's
``conftest.py`` imports the fixtures it offers from here).

- ``chat_server``: ``ChatServer``, an OpenAI-compatible endpoint on loopback whose answers a test
  module chooses; ``scripted_chat``: ``ScriptedChat``, a chat model answering from a script.
- ``task_instance``: ``FakeTaskInstance``, the Airflow task instance fields the operators read.
- ``ray_session``: Ray started once for a module.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from aod_ops.errors import ModelError


@dataclass(frozen=True)
class ChatRequest:
    """One request a ``ChatServer`` received: its path, its JSON body (None for a GET) and its
    ``Authorization`` header."""

    path: str
    body: Any
    auth: str | None

    @property
    def mode(self) -> str:
        """The path's first segment (``down`` in ``/down/v1/chat/completions``): tests choose the
        server's behaviour by the base URL they give the client."""
        return self.path.split("/")[1]


Answer = Callable[[ChatRequest], str | tuple[int, bytes]]
"""What a ``ChatServer`` answers a request: the assistant's reply (sent as a chat completion with
status 200), or a status and the raw response body."""


class ChatServer:
    """An OpenAI-compatible endpoint on loopback (``url``): every GET and POST is kept in
    ``requests`` and answered by ``answer``. Used as a context manager, it serves in a thread
    while the block runs; leaving the block waits for the replies in progress."""

    def __init__(self, answer: Answer) -> None:
        self.requests: list[ChatRequest] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                self._answer(None)

            def do_POST(self) -> None:
                self._answer(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

            def _answer(self, body: Any) -> None:
                request = ChatRequest(self.path, body, self.headers.get("Authorization"))
                requests.append(request)
                answered = answer(request)
                if isinstance(answered, str):
                    model = body.get("model") if isinstance(body, dict) else None
                    message = {"role": "assistant", "content": answered}
                    reply = {
                        "object": "chat.completion",
                        "model": model,
                        "choices": [{"index": 0, "message": message}],
                    }
                    answered = (200, json.dumps(reply).encode())
                status, payload = answered
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> ChatServer:
        serving = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        serving.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def chat_server() -> type[ChatServer]:
    """``ChatServer``, for a module's own server fixture: ``with chat_server(answer) as server:``."""
    return ChatServer


class ScriptedChat:
    """A fake chat model for unit tests: answers from a script, or raises ModelError when down;
    ``sent`` keeps the messages of every call."""

    name = "scripted"

    def __init__(self, answers: list[str], down: bool = False) -> None:
        self.answers = answers
        self.down = down
        self.sent: list[list[dict[str, str]]] = []

    @property
    def calls(self) -> int:
        """How many times the model was asked, answered or not."""
        return len(self.sent)

    def complete(self, messages: list[dict[str, str]], max_tokens: int, temperature: float) -> str:
        self.sent.append(messages)
        if self.down:
            raise ModelError("agent endpoint http://127.0.0.1:9: cannot connect")
        return self.answers.pop(0)


@pytest.fixture(scope="session")
def scripted_chat() -> type[ScriptedChat]:
    """``ScriptedChat``: ``scripted_chat(["answer", ...])``, or ``scripted_chat([], down=True)``."""
    return ScriptedChat


@dataclass
class FakeTaskInstance:
    """The task instance fields the operators read, with XComs kept in a dict. Another try, map
    index or run of the same task: ``dataclasses.replace(ti, map_index=1)``."""

    dag_id: str = "aod_synthesis"
    run_id: str = "manual__1"
    task_id: str = "partition.synthesize"
    map_index: int = 0
    xcoms: dict[str, Any] = field(default_factory=dict, init=False)  # a replace() starts with none

    def xcom_push(self, key: str, value: Any) -> None:
        """Keep ``value`` under ``key``, as Airflow's XCom would."""
        self.xcoms[key] = value


@pytest.fixture
def task_instance() -> FakeTaskInstance:
    """A fresh fake task instance, for an operator's ``context["ti"]``."""
    return FakeTaskInstance()


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """Ray started once for the module's tests (two CPUs, no dashboard, the workers' output not
    copied to the test's), before any test sets a variable: its workers see only what a run
    passes them."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()
