"""An interrupted ``aod synthesize`` stops its embedded Ray cluster; what a killed one left behind
is stopped by the next embedded session, and nobody else's processes are touched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import ray
import yaml

from aod_ops.errors import AodError
from aod_ops.ray import adapter

SCHEMA = {
    "type": "object",
    "properties": {"color": {"enum": ["red", "green", "blue"]}, "size": {"type": "integer"}},
    "required": ["color", "size"],
    "additionalProperties": False,
}


def _spec(folder: Path) -> Path:
    """A partition whose target is far out of reach: the run is still busy when it is stopped."""
    (folder / "shirts.json").write_text(json.dumps(SCHEMA))
    (folder / "shirts.jsonl").write_text('{"color": "red", "size": 1}\n{"color": "blue", "size": 2}\n')
    doc = {
        "defaults": {"dlm": "tiny-random", "decoding": {"steps": 2}},
        "partitions": [
            {"name": "shirts", "schema": "shirts.json", "reference": "shirts.jsonl", "rows": 1000}
        ],
    }
    (folder / "spec.yaml").write_text(yaml.safe_dump(doc))
    return folder / "spec.yaml"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], list[psutil.Process], Path]]:
    """``aod synthesize`` in a subprocess, once its generator actor runs: the process, the Ray
    processes it started, and the file its stderr goes to."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # embedded Ray
    args = ["synthesize", "--spec", str(_spec(tmp_path)), "--out", str(tmp_path / "out")]
    args += ["--actors", "1", "--threads-per-actor", "1", "--batch-size", "2", "--max-candidates", "1000"]
    stderr = tmp_path / "stderr.txt"
    with stderr.open("wb") as err:
        driver = subprocess.Popen(
            [sys.executable, "-m", "aod_ops.cli", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            # A shell's background job ignores SIGINT, and so would the driver (as a user's
            # `aod synthesize &` does): the test sends it, whatever ran pytest.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        ray_processes = _wait_for_the_actor(driver)
        yield driver, ray_processes, stderr
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        adapter.stop_cluster(adapter.embedded_dir(driver.pid))  # whatever a failed test left


def _wait_for_the_actor(driver: subprocess.Popen[bytes], timeout: float = 180.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert driver.poll() is None, "aod synthesize ended before it was stopped"
        try:
            processes = psutil.Process(driver.pid).children(recursive=True)
            if any(p.name().startswith("ray::MapWorker") for p in processes):
                return processes
        except psutil.Error:
            pass
        time.sleep(0.5)
    raise AssertionError(f"no generator actor after {timeout:g} s")


def _still_running(processes: list[psutil.Process]) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=5)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_stopped_synthesis_stops_its_ray_processes(
    running: tuple[subprocess.Popen[bytes], list[psutil.Process], Path], sig: int, code: int, word: str
) -> None:
    driver, ray_processes, stderr = running
    assert len(ray_processes) >= 4  # GCS, raylet, their agents, the actor at least
    driver.send_signal(sig)
    assert driver.wait(timeout=60) == code
    assert f"aod synthesize: {word}" in stderr.read_text()
    assert _still_running(ray_processes) == []
    assert not adapter.embedded_dir(driver.pid).exists()


def test_what_a_killed_synthesis_left_is_stopped_by_the_next_session(
    running: tuple[subprocess.Popen[bytes], list[psutil.Process], Path],
) -> None:
    driver, ray_processes, _ = running
    driver.kill()
    driver.wait()
    folder = adapter.embedded_dir(driver.pid)
    assert folder.is_dir()
    assert folder in adapter.reap_dead_clusters()
    assert _still_running(ray_processes) == []
    assert not folder.exists()


def _sleeper(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *args])


def test_an_embedded_session_first_stops_dead_drivers_clusters_and_only_those(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not ray.is_initialized()
    gone = _sleeper()
    gone.kill()
    gone.wait()
    dead = adapter.embedded_dir(gone.pid)
    (dead / "logs").mkdir(parents=True)
    leftover = _sleeper(str(dead / "logs"))  # its command line names the dead driver's folder
    live_driver = _sleeper()
    live = adapter.embedded_dir(live_driver.pid)
    live.mkdir(parents=True)
    neighbour = _sleeper(str(live / "logs"))  # a live driver's cluster process
    bystander = _sleeper("/tmp/ray/session_latest")  # a cluster started some other way
    started: list[str] = []

    def init(**kwargs: object) -> None:
        started.append(str(kwargs.get("_temp_dir")))
        raise RuntimeError("no Ray in this test")

    monkeypatch.setattr(ray, "init", init)
    try:
        with (
            pytest.raises(AodError, match="cannot start or join Ray at the local machine"),
            adapter.session(),
        ):
            pass
        assert leftover.wait(timeout=10) is not None and not dead.exists()
        assert started == [str(adapter.embedded_dir())] * 2
        assert not adapter.embedded_dir().exists()
        assert all(p.poll() is None for p in (live_driver, neighbour, bystander)) and live.is_dir()
    finally:
        for process in (leftover, live_driver, neighbour, bystander):
            process.kill()
            process.wait()
        live.rmdir()
