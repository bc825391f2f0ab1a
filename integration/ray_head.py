"""A real Ray head on loopback for the cluster-mode tests, started and stopped by the test.

``ray start --head --block`` runs in its own session with its own temp folder and free ports
(other Ray instances may share the machine), with the dashboard and its agent, which the Jobs
API needs, and with token authentication on a token of its own (clients send it as a Bearer
token, as the ``ray`` connection's password). Stopping signals that process, then ends every
process of its session or naming its temp folder, by id: ``ray stop`` would end every Ray
process on the machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
START_TIMEOUT = 120.0


@dataclass(frozen=True)
class RayHead:
    """A running head: its Jobs API address, auth token and temp folder (which holds its logs)."""

    address: str
    token: str
    temp_dir: Path

    @property
    def headers(self) -> dict[str, str]:
        """The HTTP headers a Jobs API client sends."""
        return {"Authorization": f"Bearer {self.token}"}


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _own_processes(session: int, marker: str) -> list[int]:
    """Ids of live processes in ``session`` or whose command line names ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            in_session = os.getsid(int(entry.name)) == session
        except (OSError, ProcessLookupError):
            continue
        if in_session or marker in cmdline:
            pids.append(int(entry.name))
    return pids


def _stop(process: subprocess.Popen[bytes], temp_dir: Path) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # `ray start --block` then shuts its node down
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        for pid in _own_processes(process.pid, str(temp_dir)):
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while _own_processes(process.pid, str(temp_dir)) and time.monotonic() < deadline:
            time.sleep(0.2)


@contextmanager
def ray_head(num_cpus: int = 2, attempts: int = 2) -> Iterator[RayHead]:
    """Start a Ray head on 127.0.0.1, wait until its Jobs API runs a job, stop it afterwards.

    A loaded machine can make ``ray start`` give up (its raylet must register within 30 s), so
    it is tried ``attempts`` times.
    """
    for attempt in range(1, attempts + 1):
        process, head = _start(num_cpus)
        try:
            _wait_for_jobs(head, process)
        except RuntimeError:
            _stop(process, head.temp_dir)
            shutil.rmtree(head.temp_dir, ignore_errors=True)
            if attempt == attempts:
                raise
            continue
        try:
            yield head
        finally:
            _stop(process, head.temp_dir)
            shutil.rmtree(head.temp_dir, ignore_errors=True)
        return


def _start(num_cpus: int) -> tuple[subprocess.Popen[bytes], RayHead]:
    # Ray's socket paths must stay short: a short folder under /tmp.
    temp_dir = Path(tempfile.mkdtemp(prefix="aodray-", dir="/tmp"))
    gcs, dashboard, client, agent, agent_grpc, runtime_env, metrics, node, objects = _free_ports(9)
    command = [
        str(BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address=127.0.0.1", f"--port={gcs}", f"--num-cpus={num_cpus}", "--num-gpus=0",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}", f"--node-manager-port={node}",
        f"--object-manager-port={objects}", "--object-store-memory=200000000",
        f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    token = secrets.token_hex(32)
    env = {
        **os.environ,
        # The job's entrypoint (`aod synthesize`) is found on the PATH the node inherits.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_ADDRESS": "",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
    }
    with (temp_dir / "ray-start.log").open("wb") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return process, RayHead(f"http://127.0.0.1:{dashboard}", token, temp_dir)


def _wait_for_jobs(head: RayHead, process: subprocess.Popen[bytes]) -> None:
    """Wait until a trivial job runs: the dashboard, and the agent that starts jobs, are up."""
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + START_TIMEOUT
    job_id = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited {process.returncode}:\n{_tail(head.temp_dir)}")
        try:
            client = JobSubmissionClient(head.address, headers=head.headers)
            job_id = job_id or client.submit_job(entrypoint="true")
            status = client.get_job_status(job_id).value
        except Exception:  # not up yet: the dashboard, or its job agent ("No available agent")
            time.sleep(1.0)
            continue
        if status == "SUCCEEDED":
            return
        if status in ("FAILED", "STOPPED"):
            raise RuntimeError(f"a trivial Ray job ended {status}: {client.get_job_logs(job_id)}")
        time.sleep(0.5)
    raise RuntimeError(f"Ray's Jobs API did not run a job in {START_TIMEOUT:g} s:\n{_tail(head.temp_dir)}")


def _tail(temp_dir: Path) -> str:
    text = (temp_dir / "ray-start.log").read_text(errors="replace")
    return "\n".join(text.splitlines()[-40:])
