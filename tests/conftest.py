"""Fixtures shared by several test modules: real servers started by the tests, and fakes.

- ``postgres_url``, ``s3_endpoint``, ``s3_bucket``: a real PostgreSQL and a real S3 API.
- ``chat_server``, ``scripted_chat``, ``task_instance``, ``ray_session``: the fakes of
  ``tests/fakes.py`` (an OpenAI-compatible server on loopback, a scripted chat model, an Airflow
  task instance, Ray started for a module), which the integration tests share.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

from tests.fakes import (
    Answer,
    ChatRequest,
    ChatServer,
    FakeTaskInstance,
    ScriptedChat,
    chat_server,
    ray_session,
    scripted_chat,
    task_instance,
)

__all__ = [  # the fixtures pytest finds here, and the fakes' types for the modules' annotations
    "Answer",
    "ChatRequest",
    "ChatServer",
    "FakeTaskInstance",
    "ScriptedChat",
    "chat_server",
    "ray_session",
    "scripted_chat",
    "task_instance",
]


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The SQLAlchemy URL of a real PostgreSQL server started for the session by ``pgserver``
    (trust authentication on a Unix socket: any password is accepted), removed afterwards."""
    with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set", a fallback it takes
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        import pgserver  # a dev dependency, imported only where a test asks for the server

    server = pgserver.get_server(tmp_path_factory.mktemp("postgres"), cleanup_mode="delete")
    try:
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a real S3 API on loopback: moto's server mode on a free port, for the session."""
    import logging
    import socket

    from moto.server import ThreadedMotoServer  # a dev dependency, as pgserver

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a log line per request
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket on the loopback S3 (``s3://<name>``), with the ``AWS_*`` environment
    pointing at it as a user's would: the endpoint, test credentials and a region."""
    import uuid

    import s3fs

    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()  # a filesystem made before now had other settings
    bucket = f"aod-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(bucket)
    return f"s3://{bucket}"
