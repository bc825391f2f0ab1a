"""``RayJobTrigger``: wait for a Ray job in the triggerer, without holding a worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from aod_ops.airflow.hooks import RayHook

if TYPE_CHECKING:
    from aod_ops.ray.jobs import RayJobs

#: The statuses of the trigger's one event.
EVENT_STATUSES = frozenset({"success", "failed", "timeout", "error"})


def past_deadline(deadline: float, now: float | None = None) -> str:
    """What a job that missed its deadline (UTC epoch seconds) is told: when it was, how long ago."""
    now = time.time() if now is None else now
    when = datetime.fromtimestamp(deadline, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"not done by its deadline {when} ({now - deadline:.0f} s past it)"


class RayJobTrigger(BaseTrigger):
    """Poll a Ray job until it ends, then fire one event.

    The event's payload: ``status`` (``success``; ``failed`` when the job ended FAILED or STOPPED;
    ``timeout``; ``error`` when polling itself failed), ``job_id``, ``job_status`` (Ray's) and
    ``message``. It follows the job through the Jobs REST API (``RayJobs``), so the triggerer
    needs no Ray; the client is synchronous, so each call runs in a thread.

    :param ray_conn_id: the ``aod_ray`` connection of the cluster.
    :param job_id: the job's submission id.
    :param poll_interval: seconds between status polls.
    :param deadline: when to give up, in UTC epoch seconds (None: no limit). It is absolute, so
        a trigger that a restarted triggerer rebuilds keeps it.
    """

    def __init__(
        self, ray_conn_id: str, job_id: str, poll_interval: float = 10.0, deadline: float | None = None
    ) -> None:
        super().__init__()
        self.ray_conn_id = ray_conn_id
        self.job_id = job_id
        self.poll_interval = poll_interval
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and the arguments that rebuild this trigger in the triggerer."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "ray_conn_id": self.ray_conn_id,
                "job_id": self.job_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
            },
        )

    async def _jobs(self) -> RayJobs:
        return RayHook.jobs_of(await RayHook.aconnection(self.ray_conn_id))

    def _event(self, status: str, job_status: str, message: str) -> TriggerEvent:
        payload = {"status": status, "job_id": self.job_id, "job_status": job_status, "message": message}
        return TriggerEvent(payload)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll the job's status every ``poll_interval`` seconds; yield one event when it ends."""
        try:
            jobs = await self._jobs()
            while not (state := await asyncio.to_thread(jobs.state, self.job_id)).terminal:
                if self.deadline is not None and time.time() >= self.deadline:
                    yield self._event("timeout", state.status, past_deadline(self.deadline))
                    return
                self.log.info("Ray job %s is %s", self.job_id, state.status)
                await asyncio.sleep(self.poll_interval)
        except Exception as exc:  # the operator turns this event into a typed failure
            yield self._event("error", "UNKNOWN", f"polling the job failed: {type(exc).__name__}: {exc}")
            return
        status = "success" if state.succeeded else "failed"
        yield self._event(status, state.status, state.message or f"job {state.status.lower()}")

    async def on_kill(self) -> None:
        """Stop the job when a user kills the deferred task (mark failed, clear, mark success)."""
        jobs = await self._jobs()
        stopped = await asyncio.to_thread(jobs.stop, self.job_id)
        self.log.info("Ray job %s: %s", self.job_id, "stop requested" if stopped else "already ended")
