"""Every call into Ray lives here, so that a change in Ray's API is fixed in one place.

Ray Data pieces used: ``ray.data.from_items`` for the seeds, ``Dataset.map_batches`` with
``compute=ActorPoolStrategy(size=n)`` or ``ActorPoolStrategy(min_size=m, max_size=n)`` (an
autoscaling pool; not the deprecated ``concurrency=``), named resources (``num_cpus``,
``num_gpus``; the free-form ``**ray_remote_args`` are deprecated), a ``runtime_env`` holding a
stage's environment variables, and a streamed ``iter_batches`` whose order follows the input
(``preserve_order``). Ray Data's actor pools restart a dead actor and retry its tasks
(``max_restarts=-1``, ``max_task_retries=-1`` by default), which is how a killed worker is
recovered. An actor that asks for a GPU (``num_gpus``) and cannot be placed is a pending
resource demand, which Ray's autoscaler answers with a GPU node; before a pool starts,
``wait_for_gpus`` asks the autoscaler for the first one (``request_resources``). A ``Board`` (a
small actor) tells a pool's actors which partitions the driver has finished with, and counts
their model loads.

An embedded cluster keeps its sessions, logs and sockets in a folder of its own, named after the
driver's process id (``embedded_dir``). Its processes are stopped with it, also when the driver
is interrupted; and what a killed driver's cluster left behind (its agents and workers outlive
it) is found by that folder alone and stopped by the next embedded session. A cluster started
any other way (``ray start``, another program) is never touched.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import ray
from ray.data import ActorPoolStrategy, DataContext

from aod_ops.errors import AodError

# Constructing Ray Data's default context warns about three of its own deprecated fields even
# though nothing sets them (ray-project/ray#65302, still in 2.60); only these are silenced, so a
# deprecated argument of ours still fails the tests.
_RAY_OWN_DEPRECATIONS = re.compile(r"`(use_push_based_shuffle|use_polars|use_arrow_tensor_v2)` is deprecated")
# A local Ray node must register within a fixed 30 s, which an overloaded machine can miss.
_START_ATTEMPTS = 2
# Seconds a leftover Ray process gets to stop on SIGTERM before SIGKILL (its agents ignore it).
_STOP_GRACE = 3.0
# The threads of a Ray Data stream that call into Ray (its scheduling loop, the workers that
# fetch and format its batches), and how long closing a stream waits for them to end.
_STREAM_THREADS = ("StreamingExecutor-", "iter_threaded", "map_tp_")
_STREAM_THREADS_GRACE = 10.0
# Tasks queued on each actor: enough to keep it busy, few enough that little work is thrown away
# when the target is reached and the stream is stopped.
_TASKS_IN_FLIGHT = 2
# What Ray logs on every run that succeeds, and which says nothing to act on: that an embedded
# cluster got token authentication (the default), that Ray Data's own progress bars are off (ours
# show progress), and, from Ray's C++ core, that Ray Data's actors have constructor arguments in
# the object store (ray-project/ray#53727: Ray Data keeps them in scope), and the errors of tasks
# queued on actors Ray Data killed when a stream ended (``_drop_teardown_errors``). Workers' output stays in
# the session's log files (log_to_driver off): their errors reach the caller as exceptions.
_TEARDOWN_ERROR = "The actor is dead because it was killed by `ray.kill`"
_QUIET_LOGGERS = ("ray._private.authentication.authentication_token_setup", "ray.data._internal.progress")
_NATIVE_LINE = re.compile(rb"\[\d{4}-\d\d-\d\d [\d:,]+ [DIWEF] \d+ \d+\] ")
_NATIVE_NOISE = re.compile(
    rb"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store"
)


@dataclass(frozen=True)
class Stage:
    """One ``map_batches`` stage run by an actor pool.

    ``fn`` is a callable class taking and returning a ``pyarrow.Table`` batch; it is built once
    per actor with ``kwargs``. The pool holds ``actors`` actors, or, with ``max_actors`` above
    it, autoscales between the two (``compute`` is its strategy). ``batch_size`` None passes the
    incoming blocks as they are. ``env_vars`` are set in its actors' environment (an API key:
    left out of the stage's repr).
    """

    fn: type
    kwargs: dict[str, Any] = field(default_factory=dict)
    actors: int = 1
    batch_size: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_actors: int | None = None
    env_vars: dict[str, str] = field(default_factory=dict, repr=False)

    def compute(self) -> ActorPoolStrategy:
        """The stage's actor pool: fixed, or autoscaling from ``actors`` to ``max_actors``."""
        if self.max_actors is None or self.max_actors == self.actors:
            return ActorPoolStrategy(size=self.actors, max_tasks_in_flight_per_actor=_TASKS_IN_FLIGHT)
        return ActorPoolStrategy(
            min_size=self.actors, max_size=self.max_actors, max_tasks_in_flight_per_actor=_TASKS_IN_FLIGHT
        )


@dataclass(frozen=True)
class Cluster:
    """The Ray cluster the driver is connected to: its logical CPUs and GPUs now, and whether
    nodes may join it (``may_grow``: a cluster this process started has no autoscaler; one it
    joined may have one, which cannot be told from here)."""

    cpus: float
    gpus: float
    may_grow: bool = False


@contextmanager
def session(address: str | None = None) -> Iterator[Cluster]:
    """Connect to Ray for the duration of the ``with`` block.

    A Ray session already open in this process (inside a Ray job, or one the caller opened) is
    used as it is and left open. Otherwise ``address`` (or ``RAY_ADDRESS``) names a cluster to
    join; with neither, an embedded cluster is started on this machine in ``embedded_dir()``,
    after stopping what killed drivers' embedded clusters left behind, and it is shut down at the
    end, also when the block is interrupted.
    """
    # Ray Data logs every execution's start and end at INFO; the caller shows its own progress.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if ray.is_initialized():
        yield _cluster(may_grow=not _started_here())
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    folder = None
    if address is None:
        reap_dead_clusters()
        folder = embedded_dir()
        folder.mkdir(parents=True, exist_ok=True)
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    with _native_noise_dropped():
        try:
            _init(address, folder)
            # ray.init installs its own SIGTERM handler (sys.exit); a handler the caller set (the
            # CLI's, an Airflow task's) decides instead. Either way the ``finally`` below runs.
            if sigterm not in (None, signal.SIG_DFL):
                signal.signal(signal.SIGTERM, sigterm)
            yield _cluster(may_grow=not _started_here())
        finally:
            ray.shutdown()
            if folder is not None:
                stop_cluster(folder)  # whatever ray.shutdown did not stop, and the folder itself
            if sigterm is not None:
                signal.signal(signal.SIGTERM, sigterm)


@contextmanager
def _native_noise_dropped() -> Iterator[None]:
    """For the ``with`` block, drop the lines of Ray's C++ core that match ``_NATIVE_NOISE`` from
    standard error (file descriptor 2, which it writes to directly); everything else, Python's
    output and progress bars included, passes on as it comes."""
    with suppress(AttributeError, ValueError, OSError):
        sys.stderr.flush()
    try:
        out = os.dup(2)
    except OSError:  # no standard error to filter
        yield
        return
    read, write = os.pipe()
    saved = os.dup(2)
    os.dup2(write, 2)
    os.close(write)
    thread = threading.Thread(target=_pump, args=(read, out), name="aod-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        with suppress(AttributeError, ValueError, OSError):
            sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe ends once the processes started meanwhile have exited too
        os.close(saved)
        thread.join(timeout=1.0)


def _pump(read: int, out: int) -> None:
    """Copy ``read`` to ``out`` as it comes, holding back only a line that starts like a log line
    of Ray's C++ core until it is whole, and dropping it if it is noise."""
    pending = b""
    with open(read, "rb", buffering=0) as pipe, open(out, "wb", buffering=0) as sink:
        while chunk := pipe.read(65536):
            pending += chunk
            while pending:
                if pending.startswith(b"[") and (
                    _NATIVE_LINE.match(pending) or (len(pending) < 40 and b"\n" not in pending)
                ):
                    end = pending.find(b"\n")
                    if end < 0:
                        break  # the rest of the line is still to come
                    line, pending = pending[: end + 1], pending[end + 1 :]
                    if not _NATIVE_NOISE.search(line):
                        sink.write(line)
                    continue
                end = pending.find(b"\n", 0)
                cut = len(pending) if end < 0 else end + 1
                sink.write(pending[:cut])
                pending = pending[cut:]
                if end < 0:
                    break
        sink.write(pending)


def _drop_teardown_errors() -> None:
    """Leave out, of the errors Ray's driver prints as ``(raylet)`` lines, those of tasks queued on
    actors that Ray Data killed when a stream ended (ours end at the target row count): each says
    the actor "was killed by `ray.kill`", which only that teardown does here. Any other error is
    printed as Ray prints it."""
    from ray._private import worker

    show = getattr(worker, "print_to_stdstream", None)
    if show is None or getattr(show, "aod_filtered", False):
        return

    def filtered(data: dict[str, Any], ignore_prefix: bool) -> None:
        lines = [line for line in data.get("lines", []) if _TEARDOWN_ERROR not in str(line)]
        if lines:
            show({**data, "lines": lines}, ignore_prefix)

    filtered.aod_filtered = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = filtered


def _init(address: str | None, folder: Path | None) -> None:
    """Join the cluster at ``address``, or start an embedded one in ``folder``."""
    # "local" starts a new cluster: never a ``ray start`` one found on the machine.
    where: dict[str, Any] = (
        {"address": address} if folder is None else {"address": "local", "_temp_dir": str(folder)}
    )
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    _drop_teardown_errors()
    for attempt in range(1, _START_ATTEMPTS + 1):
        try:
            ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False, **where)
            return
        except Exception as exc:  # Ray raises bare Exceptions too (a node that timed out starting)
            ray.shutdown()
            if attempt == _START_ATTEMPTS:
                place = address or "the local machine"
                raise AodError(f"cannot start or join Ray at {place} ({attempt} attempts): {exc}") from exc


def embedded_dir(pid: int | None = None) -> Path:
    """The folder of the embedded cluster that process ``pid`` (default: this one) starts.

    One per driver, so that its processes are known by the folder their command lines and open
    files name; short (under ``/tmp`` unless ``RAY_TMPDIR`` says otherwise, as for Ray's own),
    since Ray's socket paths in it must fit in 107 bytes.
    """
    root = Path(os.environ.get("RAY_TMPDIR") or "/tmp") / f"aod-ray-{os.getuid()}"
    return root / str(os.getpid() if pid is None else pid)


def reap_dead_clusters() -> list[Path]:
    """Stop the processes that embedded clusters of killed drivers left behind and remove their
    folders; returns the folders. A live driver's cluster is left alone."""
    root = embedded_dir().parent
    dead = (
        [f for f in sorted(root.iterdir()) if f.name.isdigit() and not _driver_alive(f)]
        if root.is_dir()
        else []
    )
    for folder in dead:
        stop_cluster(folder)
    return dead


def _driver_alive(folder: Path) -> bool:
    """Whether the process named by ``folder`` is the live driver that made it (not a process that
    was given the same id later: the folder is older than such a process)."""
    try:
        driver = psutil.Process(int(folder.name))
        alive = driver.status() != psutil.STATUS_ZOMBIE
        return alive and driver.create_time() <= folder.stat().st_mtime + 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError):
        return False


def stop_cluster(folder: Path) -> None:
    """Stop every Ray process of the embedded cluster in ``folder`` (SIGTERM, then SIGKILL) and
    remove the folder.

    Its processes are this user's whose command line names the folder (GCS, raylet, dashboard,
    monitors) or, for ``ray::`` processes (agents, workers), that hold a file open in it; this
    process, the driver, is never one of them.
    """
    inside = f"{folder}{os.sep}"
    found = []
    for process in psutil.process_iter(["cmdline", "uids"]):
        try:
            if process.pid == os.getpid() or process.info["uids"].real != os.getuid():
                continue
            cmdline = process.info["cmdline"] or []
            if any(inside in arg for arg in cmdline) or (
                cmdline[:1]
                and cmdline[0].startswith("ray::")
                and any(f.path.startswith(inside) for f in process.open_files())
            ):
                found.append(process)
        except (psutil.Error, AttributeError):  # gone, a zombie, or not ours to read
            continue
    for process in found:
        with suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(found, timeout=_STOP_GRACE)
    for process in alive:
        with suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=_STOP_GRACE)
    shutil.rmtree(folder, ignore_errors=True)


def _cluster(may_grow: bool) -> Cluster:
    resources = ray.cluster_resources()
    return Cluster(float(resources.get("CPU", 0)), float(resources.get("GPU", 0)), may_grow)


def _started_here() -> bool:
    """Whether the open session's cluster was started by this process (``ray.init()`` without an
    address), as opposed to joined."""
    from ray._private import worker

    node = getattr(worker, "_global_node", None)
    return bool(node is not None and getattr(node, "head", False))


def wait_for_gpus(gpus: float, seconds: float, poll: float = 2.0) -> Cluster:
    """Ask the autoscaler for one bundle of ``gpus`` GPUs and wait up to ``seconds`` until the
    cluster holds it; returns the cluster as it then is (still short of GPUs if none came).

    The request is withdrawn before returning: the pool's actors, placed at once, hold the
    GPUs from then on, and a cluster left to itself scales down when the run ends.
    """
    from ray.autoscaler.sdk import request_resources

    deadline = time.monotonic() + seconds
    request_resources(bundles=[{"GPU": gpus}])
    try:
        while True:
            cluster = _cluster(may_grow=True)
            left = deadline - time.monotonic()
            if cluster.gpus >= gpus or left <= 0:
                return cluster
            time.sleep(min(poll, left))
    finally:
        request_resources(bundles=[])


class _BoardActor:
    """The state behind a ``Board``."""

    def __init__(self) -> None:
        self.finished: set[str] = set()
        self.loads = 0

    def close(self, partition: str) -> None:
        self.finished.add(partition)

    def closed(self) -> frozenset[str]:
        return frozenset(self.finished)

    def loaded(self) -> int:
        self.loads += 1
        return self.loads

    def count(self) -> int:
        return self.loads


@dataclass(frozen=True)
class Board:
    """What the driver and a pool's actors share during one run, through a small actor of no
    CPU: the partitions the driver has finished with (their remaining seeds are skipped) and
    how many actors have loaded their model.

    An actor that cannot reach the board goes on as if nothing were finished: a lost board costs
    the skipped work, never rows.
    """

    handle: Any

    def close(self, partition: str) -> None:
        """Mark ``partition`` finished (the driver, once it has its rows)."""
        ray.get(self.handle.close.remote(partition))

    def closed(self) -> frozenset[str]:
        """The partitions finished so far (an actor, before each batch)."""
        try:
            return frozenset(ray.get(self.handle.closed.remote()))
        except ray.exceptions.RayError:
            return frozenset()

    def count_load(self) -> None:
        """Count one model load (an actor, once it has loaded its model)."""
        with suppress(ray.exceptions.RayError):
            ray.get(self.handle.loaded.remote())

    def loads(self) -> int:
        """Model loads counted so far."""
        return int(ray.get(self.handle.count.remote()))


@contextmanager
def board() -> Iterator[Board | None]:
    """A ``Board`` for the ``with`` block, stopped at its end; None outside a Ray session."""
    if not ray.is_initialized():
        yield None
        return
    handle: Any = ray.remote(num_cpus=0)(_BoardActor).remote()
    try:
        yield Board(handle)
    finally:
        ray.kill(handle)


def put(value: Any) -> Any:
    """Put ``value`` in the object store once and return its reference (an ``ObjectRef``)."""
    return ray.put(value)


def get(reference: Any) -> Any:
    """The value behind an object reference made by ``put`` (called inside an actor)."""
    return ray.get(reference)


def stream(
    items: Sequence[dict[str, Any]], block_rows: int, stages: Sequence[Stage]
) -> Generator[pa.Table, None, None]:
    """Run ``items`` (rows, cut into blocks of about ``block_rows``) through ``stages`` and yield
    the output batches in input order.

    Closing the iterator (or leaving a ``for`` loop over it) stops the pipeline and its actors.
    """
    _default_data_context()
    # from_items builds the blocks in this process (from_arrow would run a task per block).
    dataset: ray.data.Dataset = ray.data.from_items(
        list(items), override_num_blocks=max(1, -(-len(items) // block_rows))
    )
    for stage in stages:
        dataset = dataset.map_batches(
            stage.fn,
            fn_constructor_kwargs=stage.kwargs,
            batch_size=stage.batch_size,
            batch_format="pyarrow",
            compute=stage.compute(),
            num_cpus=stage.num_cpus,
            num_gpus=stage.num_gpus or None,
            runtime_env={"env_vars": stage.env_vars} if stage.env_vars else None,
        )
    # The dataset's own copy of the context: nothing global changes.
    options = dataset.context
    options.execution_options.preserve_order = True
    options.enable_progress_bars = False  # the caller shows progress
    options.print_on_execution_start = False
    before = set(threading.enumerate())
    batches = dataset.iter_batches(batch_size=None, batch_format="pyarrow")
    try:
        yield from batches
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
        _join_stream_threads(before)


def _join_stream_threads(before: set[threading.Thread]) -> None:
    """Wait (a bounded time) for the threads Ray Data started for a stream since ``before``.

    Closing a stream leaves its threads winding down (its batch workers notice the close within
    0.1 s, or when the call they are in returns; Ray Data's shutdown waits 2 s for its loop);
    one that touches Ray after ``ray.shutdown`` makes Ray's core exit the whole process with
    status 1 and no traceback, which a run that ends its session right after its stream hit.
    """
    deadline = time.monotonic() + _STREAM_THREADS_GRACE
    for thread in set(threading.enumerate()) - before:
        if thread.name.startswith(_STREAM_THREADS) and thread is not threading.current_thread():
            thread.join(timeout=max(0.0, deadline - time.monotonic()))


def _default_data_context() -> DataContext:
    """Ray Data's process-wide default context, made now so that its own warnings are filtered."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_RAY_OWN_DEPRECATIONS.pattern, category=DeprecationWarning)
        return DataContext.get_current()
