"""Every call into Ray lives here, so that a change in Ray's API is fixed in one place.

Ray Data pieces used: ``ray.data.from_items`` for the seeds, ``Dataset.map_batches`` with
``compute=ActorPoolStrategy(size=n)`` (not the deprecated ``concurrency=``) and named resources
(``num_cpus``, ``num_gpus``; the free-form ``**ray_remote_args`` are deprecated), and a streamed
``iter_batches`` whose order follows the input (``preserve_order``). Ray Data's actor pools
restart a dead actor and retry its tasks (``max_restarts=-1``, ``max_task_retries=-1`` by
default), which is how a killed worker is recovered.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

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
# Tasks queued on each actor: enough to keep it busy, few enough that little work is thrown away
# when the target is reached and the stream is stopped.
_TASKS_IN_FLIGHT = 2


@dataclass(frozen=True)
class Stage:
    """One ``map_batches`` stage run by an actor pool.

    ``fn`` is a callable class taking and returning a ``pyarrow.Table`` batch; it is built once
    per actor with ``kwargs``. ``batch_size`` None passes the incoming blocks as they are.
    """

    fn: type
    kwargs: dict[str, Any] = field(default_factory=dict)
    actors: int = 1
    batch_size: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass(frozen=True)
class Cluster:
    """The Ray cluster the driver is connected to: its logical CPUs and GPUs."""

    cpus: float
    gpus: float


@contextmanager
def session(address: str | None = None) -> Iterator[Cluster]:
    """Connect to Ray for the duration of the ``with`` block.

    A Ray session already open in this process (inside a Ray job, or one the caller opened) is
    used as it is and left open. Otherwise ``address`` (or ``RAY_ADDRESS``) names a cluster to
    join; with neither, ``ray.init()`` joins the local cluster if one is running, else starts an
    embedded one on this machine, which is shut down at the end.
    """
    # Ray Data logs every execution's start and end at INFO; the caller shows its own progress.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if ray.is_initialized():
        yield _cluster()
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    for attempt in range(1, _START_ATTEMPTS + 1):
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
            break
        except Exception as exc:  # Ray raises bare Exceptions too (a node that timed out starting)
            ray.shutdown()
            if attempt == _START_ATTEMPTS:
                where = address or "the local machine"
                raise AodError(f"cannot start or join Ray at {where} ({attempt} attempts): {exc}") from exc
    try:
        yield _cluster()
    finally:
        ray.shutdown()


def _cluster() -> Cluster:
    resources = ray.cluster_resources()
    return Cluster(cpus=float(resources.get("CPU", 0)), gpus=float(resources.get("GPU", 0)))


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
            compute=ActorPoolStrategy(size=stage.actors, max_tasks_in_flight_per_actor=_TASKS_IN_FLIGHT),
            num_cpus=stage.num_cpus,
            num_gpus=stage.num_gpus or None,
        )
    # The dataset's own copy of the context: nothing global changes.
    options = dataset.context
    options.execution_options.preserve_order = True
    options.enable_progress_bars = False  # the caller shows progress
    options.print_on_execution_start = False
    batches = dataset.iter_batches(batch_size=None, batch_format="pyarrow")
    try:
        yield from batches
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _default_data_context() -> DataContext:
    """Ray Data's process-wide default context, made now so that its own warnings are filtered."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_RAY_OWN_DEPRECATIONS.pattern, category=DeprecationWarning)
        return DataContext.get_current()
