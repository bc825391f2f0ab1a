"""RayJobTrigger driven with asyncio against a small fake of Ray's Jobs REST API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest
from airflow.triggers.base import TriggerEvent

from aod_ops.airflow import triggers
from aod_ops.airflow.hooks import RayHook
from aod_ops.airflow.triggers import RayJobTrigger
from aod_ops.ray.jobs import RayJobs


class Clock:
    """A wall clock that moves only when told (the fake cluster moves it 10 s per poll)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


class FakeJobsAPI:
    """Plays back a job's statuses, one per ``GET /api/jobs/<id>``; records stops and the
    addresses asked. Shared by every RayJobs the trigger makes."""

    statuses: ClassVar[list[str]] = []
    polls: ClassVar[int] = 0
    stopped: ClassVar[list[str]] = []
    missing: ClassVar[bool] = False  # every job is unknown (HTTP 404)
    addresses: ClassVar[set[str]] = set()
    clock: ClassVar[Clock | None] = None  # moved 10 s on by each poll

    @staticmethod
    def handle(request: httpx.Request) -> httpx.Response:
        FakeJobsAPI.addresses.add(f"{request.url.scheme}://{request.url.netloc.decode()}")
        path = request.url.path
        job_id = path.removeprefix("/api/jobs/").removesuffix("/stop")
        if FakeJobsAPI.missing:
            return httpx.Response(404, text=f"Job {job_id} does not exist")
        if request.method == "POST" and path == f"/api/jobs/{job_id}/stop":
            FakeJobsAPI.stopped.append(job_id)
            return httpx.Response(200, json={"stopped": True})
        if request.method != "GET" or path != f"/api/jobs/{job_id}":
            return httpx.Response(405, text=f"not a Jobs API route: {request.method} {path}")
        if FakeJobsAPI.clock is not None:
            FakeJobsAPI.clock.now += 10.0
        status = FakeJobsAPI.statuses[min(FakeJobsAPI.polls, len(FakeJobsAPI.statuses) - 1)]
        FakeJobsAPI.polls += 1
        message = "Job failed due to an application error" if status == "FAILED" else ""
        details = {"submission_id": job_id, "status": status, "message": message, "type": "SUBMISSION"}
        return httpx.Response(200, json=details)


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeJobsAPI]]:
    jobs_of = RayHook.jobs_of

    def on_fake_api(conn: Any) -> RayJobs:
        jobs = jobs_of(conn)
        jobs.transport = httpx.MockTransport(FakeJobsAPI.handle)
        return jobs

    monkeypatch.setattr(RayHook, "jobs_of", staticmethod(on_fake_api))
    monkeypatch.setenv(
        "AIRFLOW_CONN_RAY_UNIT", json.dumps({"conn_type": "aod_ray", "host": "http://head:8265"})
    )
    FakeJobsAPI.statuses, FakeJobsAPI.polls, FakeJobsAPI.stopped = [], 0, []
    FakeJobsAPI.missing, FakeJobsAPI.addresses, FakeJobsAPI.clock = False, set(), None
    yield FakeJobsAPI


def events(trigger: RayJobTrigger) -> list[TriggerEvent]:
    async def collect() -> list[TriggerEvent]:
        return [event async for event in trigger.run()]

    return asyncio.run(collect())


def test_trigger_polls_until_the_job_succeeds(fake_api: type[FakeJobsAPI]) -> None:
    fake_api.statuses = ["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"]
    (event,) = events(RayJobTrigger("ray_unit", "aod-cars-1", poll_interval=0.01))
    assert event.payload["status"] == "success"
    assert event.payload["job_status"] == "SUCCEEDED"
    assert event.payload["job_id"] == "aod-cars-1"
    assert fake_api.polls == 4
    assert fake_api.addresses == {"http://head:8265"}


@pytest.mark.parametrize("final", ["FAILED", "STOPPED"])
def test_trigger_reports_a_failed_or_stopped_job(fake_api: type[FakeJobsAPI], final: str) -> None:
    fake_api.statuses = ["RUNNING", final]
    (event,) = events(RayJobTrigger("ray_unit", "aod-cars-2", poll_interval=0.01))
    assert event.payload["status"] == "failed"
    assert event.payload["job_status"] == final
    assert event.payload["message"]


def test_trigger_times_out_on_a_job_that_never_ends(fake_api: type[FakeJobsAPI]) -> None:
    fake_api.statuses = ["RUNNING"]
    deadline = time.time() + 0.1
    (event,) = events(RayJobTrigger("ray_unit", "aod-cars-3", poll_interval=0.02, deadline=deadline))
    assert time.time() >= deadline
    assert event.payload["status"] == "timeout"
    assert event.payload["job_status"] == "RUNNING"
    assert event.payload["message"].startswith("not done by its deadline ")
    assert 3 <= fake_api.polls <= 8
    assert fake_api.stopped == []  # the operator decides to stop it


def test_a_trigger_rebuilt_by_a_restarted_triggerer_times_out_at_the_original_deadline(
    fake_api: type[FakeJobsAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(1_767_225_600.0)  # 2026-01-01 00:00:00 UTC
    monkeypatch.setattr(triggers, "time", clock)  # the trigger module's wall clock only
    fake_api.clock = clock
    fake_api.statuses = ["RUNNING"]
    trigger = RayJobTrigger("ray_unit", "aod-cars-6", poll_interval=0.001, deadline=clock.now + 60.0)
    _, kwargs = trigger.serialize()

    clock.now += 30.0  # the triggerer is down for 30 s, then rebuilds the trigger from its kwargs
    (event,) = events(RayJobTrigger(**kwargs))

    # Polls at +40, +50 and +60 s: the original deadline, not 60 s after the restart (+90 s).
    assert fake_api.polls == 3
    assert event.payload["status"] == "timeout"
    assert event.payload["message"] == "not done by its deadline 2026-01-01 00:01:00 UTC (0 s past it)"


def test_trigger_turns_a_polling_error_into_an_event(fake_api: type[FakeJobsAPI]) -> None:
    fake_api.missing = True
    (event,) = events(RayJobTrigger("ray_unit", "aod-x", poll_interval=0.01))
    assert event.payload["status"] == "error"
    assert "does not exist" in event.payload["message"]


def test_trigger_on_kill_stops_the_job(fake_api: type[FakeJobsAPI]) -> None:
    asyncio.run(RayJobTrigger("ray_unit", "aod-cars-4").on_kill())
    assert fake_api.stopped == ["aod-cars-4"]


def test_trigger_serializes_to_what_rebuilds_it() -> None:
    trigger = RayJobTrigger("ray_unit", "aod-cars-5", poll_interval=3.0, deadline=1_767_225_600.0)
    path, kwargs = trigger.serialize()
    assert path == "aod_ops.airflow.triggers.RayJobTrigger"
    assert kwargs == {
        "ray_conn_id": "ray_unit",
        "job_id": "aod-cars-5",
        "poll_interval": 3.0,
        "deadline": 1_767_225_600.0,
    }
    rebuilt = RayJobTrigger(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)
