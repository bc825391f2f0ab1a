"""Run ``aod synthesize`` on a Ray cluster as a job, through the Ray Jobs API.

This module is the one place that talks to the Jobs API. A ``SynthesisJob`` says what to run;
``RayJobs`` submits it (through ``ray.job_submission``, which uploads the job's files) with a
``runtime_env`` whose ``working_dir`` carries what the cluster cannot read itself: a local spec's
folder (the spec, its schemas and reference samples) and local prompt artifacts. A spec, a file
or a prompt folder named by a URI (``s3://...``) is read by the job from there, with the
cluster's own credentials. ``RayJobs`` then reports the job's state, fetches its logs and stops
it through the Jobs REST API with ``httpx``: following a job needs no Ray on this side (the
Airflow triggerer has none). ``run_synthesis_job`` is the whole round trip for the command
line: submit, print the job id, poll, stop on Ctrl-C, and raise with the logs' tail when the job
fails.

A caller that may run twice for the same work (an Airflow task and its retries) names the job
with ``stable_submission_id`` and submits it with ``RayJobs.submit_once``: a second call follows
the job the first one submitted instead of starting another.

The job writes to ``out`` as the cluster sees it: a path on a volume shared with the submitter,
or an object-store URI that the synthesis writer understands.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from aod_ops import storage
from aod_ops.errors import AodError
from aod_ops.spec import load_spec

#: The statuses after which a job does not change any more.
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
#: The statuses after which ``submit_once`` submits a new attempt instead of following the job.
RESUBMIT_STATUSES = frozenset({"FAILED", "STOPPED"})
#: Where the spec's folder and the prompts sit inside the job's working directory.
SPEC_DIR = "spec"
PROMPT_DIR = "prompts"
PROMPT_FILE = "prompt.json"
LOG_TAIL_LINES = 200
#: Ray puts a submission id in URLs and file names: only these characters are kept.
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
_NAME_IN_ID = 40


def _id_prefix(partition: str | None) -> str:
    """``aod-<partition>-``, the partition's name made safe for an id and cut to 40 characters."""
    name = _UNSAFE_ID_CHARS.sub("-", partition or "all").strip("-")[:_NAME_IN_ID].strip("-")
    return f"aod-{name or 'all'}-"


def stable_submission_id(partition: str | None, *key: str) -> str:
    """A submission id that the same ``key`` always gives: ``aod-<partition>-<16 hex digits>``.

    The hex digits are a SHA-256 of ``key`` (e.g. an Airflow task instance's dag id, run id, task
    id and map index), so an id is at most 61 characters whatever the key holds, and a retry of
    the same work finds its job.
    """
    digest = hashlib.sha256("\x1f".join(key).encode()).hexdigest()[:16]
    return _id_prefix(partition) + digest


@dataclass(frozen=True)
class JobState:
    """A Ray job's status (``PENDING``, ``RUNNING``, ``SUCCEEDED``, ``FAILED``, ``STOPPED``)."""

    job_id: str
    status: str
    message: str = ""

    @property
    def terminal(self) -> bool:
        """Whether the job has ended."""
        return self.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        """Whether the job ended successfully."""
        return self.status == "SUCCEEDED"


@dataclass(frozen=True)
class Submission:
    """The job that ``RayJobs.submit_once`` left to follow.

    :param job_id: its submission id: the stable id, or a later attempt's ``<id>-<n>``.
    :param status: its status when ``submit_once`` returned.
    :param reattached: True when the job was already there and nothing was submitted.
    :param submitted_at: when it was submitted, in UTC epoch seconds (Ray's record of it for a
        job that was already there).
    """

    job_id: str
    status: str
    reattached: bool
    submitted_at: float


@dataclass(frozen=True)
class SynthesisJob:
    """One ``aod synthesize`` run to submit as a Ray job.

    :param spec_path: the partition spec, a path or a URI. A local spec's folder travels with the
        job, so every local file its partitions name must lie inside that folder.
    :param out: the output folder or URI as the cluster sees it (a relative local path is made
        absolute, since the job runs in its own working directory).
    :param partition: one partition's name, or None for all of them.
    :param rows: rows per partition instead of the spec's.
    :param actors: a fixed pool of this many DLM actors instead of the synthesis default.
    :param min_actors: the autoscaling pool's fewest DLM actors (``--min-actors``).
    :param max_actors: its most DLM actors (``--max-actors``).
    :param gpus_per_actor: GPUs per DLM actor (``--gpus-per-actor``; above 0 asks for GPUs).
    :param gpu_wait: seconds the cluster gets to add its first GPU node (``--gpu-wait``).
    :param batch_size: candidates per model batch (``--batch-size``; default: the command's).
    :param threads_per_actor: torch CPU threads (and CPUs reserved) per actor
        (``--threads-per-actor``).
    :param max_candidates: candidate budget per partition (``--max-candidates``).
    :param allow_partial: keep the rows made when the budget runs out (``--allow-partial``).
    :param model: the DLM instead of the spec's.
    :param trust_remote_code: let ``model`` run its own code (``--trust-remote-code``).
    :param dlm_base_url: a server that serves ``model`` (``--dlm-base-url``, free mode only).
    :param dlm_api_key_env: the variable holding its API key (``--dlm-api-key-env``), in the
        cluster's environment: the key itself never travels with the job.
    :param prompt_dir: a folder (or URI) of ``<partition>/prompt.json`` artifacts (the loop's
        output); from a local folder, the selected partitions' prompts travel with the job.
    :param env_vars: environment variables for the job (never secrets: Ray shows them).
    """

    spec_path: str | Path
    out: str
    partition: str | None = None
    rows: int | None = None
    actors: int | None = None
    min_actors: int | None = None
    max_actors: int | None = None
    gpus_per_actor: float | None = None
    gpu_wait: float | None = None
    batch_size: int | None = None
    threads_per_actor: int | None = None
    max_candidates: int | None = None
    allow_partial: bool = False
    model: str | None = None
    trust_remote_code: bool = False
    dlm_base_url: str | None = None
    dlm_api_key_env: str | None = None
    prompt_dir: str | Path | None = None
    env_vars: Mapping[str, str] = field(default_factory=dict)

    def entrypoint(self) -> str:
        """The shell command the job runs, relative to its working directory."""
        spec = _shipped(self.spec_path, f"{SPEC_DIR}/{storage.name(storage.locate(self.spec_path))}")
        args = ["aod", "synthesize", "--spec", spec, "--out", str(storage.locate(self.out))]
        for flag, value in (
            ("--partition", self.partition),
            ("--rows", self.rows),
            ("--actors", self.actors),
            ("--min-actors", self.min_actors),
            ("--max-actors", self.max_actors),
            ("--gpus-per-actor", self.gpus_per_actor),
            ("--gpu-wait", self.gpu_wait),
            ("--batch-size", self.batch_size),
            ("--threads-per-actor", self.threads_per_actor),
            ("--max-candidates", self.max_candidates),
            ("--model", self.model),
            ("--dlm-base-url", self.dlm_base_url),
            ("--dlm-api-key-env", self.dlm_api_key_env),
        ):
            if value is not None:
                args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        if self.model is not None and self.trust_remote_code:
            args.append("--trust-remote-code")
        if self.allow_partial:
            args.append("--allow-partial")
        if self.prompt_dir is not None:
            args += ["--prompt-dir", _shipped(self.prompt_dir, PROMPT_DIR)]
        return shlex.join(args)


def _shipped(location: str | Path, in_bundle: str) -> str:
    """How the job names ``location``: its place in the working directory when it is local
    (shipped), else its URI (read from there)."""
    found = storage.locate(location)
    return in_bundle if isinstance(found, Path) else found


@contextmanager
def job_bundle(job: SynthesisJob) -> Iterator[Path]:
    """A temporary folder holding what the job needs from this machine: ``spec/`` (a local spec's
    folder) and ``prompts/<partition>/`` (from a local prompt folder).

    The spec is loaded first, so a bad spec fails here with its own message instead of on the
    cluster; a local partition file outside a local spec's folder is an ``AodError``.
    """
    spec = load_spec(job.spec_path)
    partitions = spec.select(job.partition)
    root = spec.path.parent if isinstance(spec.path, Path) else None
    for partition in partitions:
        for name, path in (
            ("schema", partition.schema_path),
            ("reference", partition.reference_path),
            ("holdout", partition.holdout_path),
        ):
            # A query's rows, and a file named by a URI, are read on the cluster: nothing to ship.
            if isinstance(path, Path) and root is not None and not path.is_relative_to(root):
                raise AodError(
                    f"{spec.path}: partition {partition.name!r}: {name} {path} is outside the spec's "
                    f"folder {root}; a Ray job receives only that folder"
                )
    with tempfile.TemporaryDirectory(prefix="aod-job-") as tmp:
        bundle = Path(tmp)
        if root is not None:
            shutil.copytree(root, bundle / SPEC_DIR, ignore=shutil.ignore_patterns(".*", "__pycache__"))
        # As in a local run, a partition without a prompt artifact uses its initial prompt.
        folder = None if job.prompt_dir is None else storage.locate(job.prompt_dir)
        prompts = [folder / p.name / PROMPT_FILE for p in partitions] if isinstance(folder, Path) else []
        for prompt in filter(Path.is_file, prompts):
            target = bundle / PROMPT_DIR / prompt.parent.name / PROMPT_FILE
            target.parent.mkdir(parents=True)
            shutil.copyfile(prompt, target)
        yield bundle


@dataclass(frozen=True)
class JobInfo:
    """What Ray's Jobs API records about one job (its ``JobDetails``, the fields used here).

    :param submission_id: the id it was submitted under; None for a driver started without the
        Jobs API.
    :param status: ``PENDING``, ``RUNNING``, ``SUCCEEDED``, ``FAILED`` or ``STOPPED``.
    :param message: Ray's message about the status.
    :param start_time: when it was submitted, in UTC epoch seconds (Ray's is in milliseconds).
    :param entrypoint: the shell command it runs.
    :param metadata: the metadata it was submitted with.
    """

    submission_id: str | None
    status: str
    message: str = ""
    start_time: float | None = None
    entrypoint: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, details: Any) -> JobInfo:
        """A job as ``GET /api/jobs/{id}`` and ``GET /api/jobs/`` give it."""
        if not isinstance(details, dict) or not isinstance(details.get("status"), str):
            raise AodError(f"Ray Jobs API: a job record without a status: {_excerpt(repr(details))}")
        started = details.get("start_time")
        return cls(
            submission_id=details.get("submission_id"),
            status=details["status"],
            message=details.get("message") or "",
            start_time=started / 1000 if started else None,
            entrypoint=details.get("entrypoint") or "",
            metadata=dict(details.get("metadata") or {}),
        )


def _excerpt(text: str, limit: int = 300) -> str:
    """The start of a response body, on one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


class RayJobs:
    """A Ray cluster's Jobs API (its dashboard address, e.g. ``http://127.0.0.1:8265``).

    Submitting goes through Ray's ``JobSubmissionClient``, which uploads the job's working
    directory; everything else (a job's state, its logs, stopping it, listing jobs) is a plain
    request to the Jobs REST API, so a process that only follows jobs (Airflow's triggerer)
    needs neither Ray nor its version of the cluster.

    :param address: the dashboard's HTTP(S) address.
    :param headers: extra HTTP headers, e.g. an ``Authorization`` header for a proxy.
    :param verify: TLS verification: True, False, or a CA bundle's path (a file or a folder).
    :param timeout: seconds each REST request may take.
    :param transport: the ``httpx`` transport of the REST requests (tests give a
        ``httpx.MockTransport``); None: the network.
    """

    def __init__(
        self,
        address: str,
        headers: Mapping[str, str] | None = None,
        verify: bool | str = True,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.address = address
        self.headers = dict(headers or {})
        self.verify = verify
        self.timeout = timeout
        self.transport = transport

    @cached_property
    def client(self) -> Any:
        """The ``JobSubmissionClient`` that submits jobs (it checks the cluster's version when made)."""
        from ray.job_submission import JobSubmissionClient

        try:
            return JobSubmissionClient(self.address, headers=self.headers or None, verify=self.verify)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise AodError(f"Ray Jobs API at {self.address} is not reachable: {exc}") from exc

    def _tls(self) -> bool | ssl.SSLContext:
        """``verify`` as httpx takes it: a CA bundle's path (a file or a folder) becomes an SSL
        context, as Ray's client makes it."""
        if not isinstance(self.verify, str):
            return self.verify
        try:
            if Path(self.verify).is_dir():
                return ssl.create_default_context(capath=self.verify)
            return ssl.create_default_context(cafile=self.verify)
        except (OSError, ssl.SSLError) as exc:
            raise AodError(f"Ray Jobs API at {self.address}: CA certificates {self.verify}: {exc}") from exc

    def _request(self, method: str, path: str, job_id: str | None = None) -> Any:
        """One Jobs REST API request; its JSON answer. Not reaching the cluster, any status but
        200 (404: no such job), or an answer that is not JSON is an ``AodError``."""
        url = self.address.rstrip("/") + path
        tls = self._tls()
        try:
            with httpx.Client(
                headers=self.headers, verify=tls, timeout=self.timeout, transport=self.transport
            ) as http:
                response = http.request(method, url)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise AodError(
                f"Ray Jobs API at {self.address} is not reachable: {type(exc).__name__}: {exc}"
            ) from exc
        body = _excerpt(response.text)
        if response.status_code == 404 and job_id is not None:
            raise AodError(
                f"Ray Jobs API at {self.address}: no job {job_id!r} on the cluster (HTTP 404: {body})"
            )
        if response.status_code != 200:
            raise AodError(
                f"Ray Jobs API at {self.address}: {method} {path} answered HTTP "
                f"{response.status_code}: {body}"
            )
        try:
            return response.json()
        except ValueError:
            raise AodError(
                f"Ray Jobs API at {self.address}: {method} {path} answered with no JSON: {body}"
            ) from None

    @staticmethod
    def _job_path(job_id: str, action: str = "") -> str:
        return f"/api/jobs/{quote(job_id, safe='')}" + (f"/{action}" if action else "")

    def submit(
        self, job: SynthesisJob, metadata: Mapping[str, str] | None = None, submission_id: str | None = None
    ) -> str:
        """Submit ``job`` and return its submission id (by default ``aod-<partition>-<random>``).

        Ray refuses a submission id it already knows (``RuntimeError``): to run the same work
        again under one id, see ``submit_once``.
        """
        job_id = submission_id or _id_prefix(job.partition) + uuid.uuid4().hex[:12]
        with job_bundle(job) as bundle:
            runtime_env: dict[str, Any] = {"working_dir": str(bundle)}
            if job.env_vars:
                runtime_env["env_vars"] = dict(job.env_vars)
            return str(
                self.client.submit_job(
                    entrypoint=job.entrypoint(),
                    submission_id=job_id,
                    runtime_env=runtime_env,
                    metadata=dict(metadata or {}),
                )
            )

    def submit_once(
        self, job: SynthesisJob, submission_id: str, metadata: Mapping[str, str] | None = None
    ) -> Submission:
        """Submit ``job`` under ``submission_id`` unless that job already runs or succeeded.

        The latest attempt on the cluster (``submission_id``, then ``<submission_id>-2``, ``-3``,
        ...) is followed when it is PENDING, RUNNING or SUCCEEDED; after one that ended FAILED or
        STOPPED the next attempt is submitted, since Ray refuses a submission id twice.
        """
        attempt, info = self._latest_attempt(submission_id) or (0, None)
        if info is not None and info.status not in RESUBMIT_STATUSES:
            started = info.start_time or time.time()
            return Submission(str(info.submission_id), info.status, True, started)
        job_id = submission_id if attempt == 0 else f"{submission_id}-{attempt + 1}"
        submitted_at = time.time()
        return Submission(self.submit(job, metadata, job_id), "PENDING", False, submitted_at)

    def _latest_attempt(self, submission_id: str) -> tuple[int, JobInfo] | None:
        """The highest attempt number of ``submission_id`` on the cluster and its record."""
        pattern = re.compile(re.escape(submission_id) + r"(?:-([0-9]+))?")
        attempts: dict[int, JobInfo] = {}
        for info in self.list_jobs():
            if info.submission_id and (match := pattern.fullmatch(info.submission_id)):
                attempts[int(match[1] or 1)] = info
        if not attempts:
            return None
        number = max(attempts)
        return number, attempts[number]

    def list_jobs(self) -> list[JobInfo]:
        """Every job the cluster knows, drivers started without the Jobs API included."""
        answer = self._request("GET", "/api/jobs/")
        if not isinstance(answer, list):
            raise AodError(
                f"Ray Jobs API at {self.address}: GET /api/jobs/ answered {_excerpt(repr(answer))}"
            )
        return [JobInfo.from_json(details) for details in answer]

    def info(self, job_id: str) -> JobInfo:
        """What the cluster records about the job."""
        return JobInfo.from_json(self._request("GET", self._job_path(job_id), job_id))

    def state(self, job_id: str) -> JobState:
        """The job's current status and Ray's message about it."""
        info = self.info(job_id)
        return JobState(job_id, info.status, info.message)

    def logs(self, job_id: str, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the job's driver logs."""
        logs = self._member("GET", self._job_path(job_id, "logs"), job_id, "logs")
        return "\n".join(str(logs or "").splitlines()[-lines:])

    def stop(self, job_id: str) -> bool:
        """Ask Ray to stop the job; False when it had already ended."""
        return bool(self._member("POST", self._job_path(job_id, "stop"), job_id, "stopped"))

    def _member(self, method: str, path: str, job_id: str, key: str) -> Any:
        """``key`` of the JSON object that a request about ``job_id`` answers."""
        answer = self._request(method, path, job_id)
        if not isinstance(answer, dict) or key not in answer:
            raise AodError(
                f"Ray Jobs API at {self.address}: {method} {path} answered without {key!r}: "
                f"{_excerpt(repr(answer))}"
            )
        return answer[key]

    def wait(self, job_id: str, poll_interval: float = 5.0, deadline: float | None = None) -> JobState:
        """Poll until the job ends, or until ``deadline`` (UTC epoch seconds, as ``time.time()``)
        has passed (its state then)."""
        while not (state := self.state(job_id)).terminal:
            if deadline is not None and time.time() >= deadline:
                return state
            time.sleep(poll_interval)
        return state


def run_synthesis_job(
    jobs: RayJobs,
    job: SynthesisJob,
    poll_interval: float = 5.0,
    timeout: float | None = None,
    echo: Callable[[str], None] = print,
) -> JobState:
    """Submit ``job`` to a cluster and wait for it: the whole round trip for the command line.

    A cluster with token authentication needs the token in ``jobs.headers`` (``aod synthesize``
    puts ``RAY_AUTH_TOKEN`` there, as Ray's own tools take it). Ctrl-C stops the job before
    re-raising. A job that fails, is stopped, or runs past ``timeout`` raises
    ``AodError`` with the tail of its logs.
    """
    job_id = jobs.submit(job)
    echo(f"submitted Ray job {job_id} to {jobs.address}")
    deadline = None if timeout is None else time.time() + timeout
    try:
        state = jobs.wait(job_id, poll_interval, deadline)
    except KeyboardInterrupt:
        jobs.stop(job_id)
        echo(f"stopped Ray job {job_id}")
        raise
    if not state.terminal:
        jobs.stop(job_id)
        state = JobState(job_id, state.status, f"not done after {timeout:g} s; stopped")
    if not state.succeeded:
        raise AodError(
            f"Ray job {job_id} ended {state.status}: {state.message}\n"
            f"--- last lines of the job's logs ---\n{jobs.logs(job_id)}"
        )
    echo(f"Ray job {job_id} succeeded")
    return state
