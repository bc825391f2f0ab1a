"""RayJobTrigger driven with asyncio against a small fake JobSubmissionClient."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import ray.job_submission
from airflow.triggers.base import TriggerEvent

from aod_ops.airflow import triggers
from aod_ops.airflow.triggers import RayJobTrigger


class FakeJobClient:
    """Plays back a job's statuses, one per poll; records stops. Shared by every instance."""

    statuses: ClassVar[list[str]] = []
    polls: ClassVar[int] = 0
    stopped: ClassVar[list[str]] = []
    fail_with: ClassVar[Exception | None] = None
    addresses: ClassVar[list[str]] = []

    def __init__(self, address: str, **kwargs: Any) -> None:
        FakeJobClient.addresses.append(address)

    def get_job_info(self, job_id: str) -> Any:
        if FakeJobClient.fail_with is not None:
            raise FakeJobClient.fail_with
        status = FakeJobClient.statuses[min(FakeJobClient.polls, len(FakeJobClient.statuses) - 1)]
        FakeJobClient.polls += 1
        message = "Job failed due to an application error" if status == "FAILED" else ""
        return SimpleNamespace(status=ray.job_submission.JobStatus(status), message=message)

    def stop_job(self, job_id: str) -> bool:
        FakeJobClient.stopped.append(job_id)
        return True


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeJobClient]]:
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", FakeJobClient)
    monkeypatch.setenv(
        "AIRFLOW_CONN_RAY_UNIT", json.dumps({"conn_type": "aod_ray", "host": "http://head:8265"})
    )
    FakeJobClient.statuses, FakeJobClient.polls, FakeJobClient.stopped = [], 0, []
    FakeJobClient.fail_with, FakeJobClient.addresses = None, []
    yield FakeJobClient


def events(trigger: RayJobTrigger) -> list[TriggerEvent]:
    async def collect() -> list[TriggerEvent]:
        return [event async for event in trigger.run()]

    return asyncio.run(collect())


def test_trigger_polls_until_the_job_succeeds(fake_client: type[FakeJobClient]) -> None:
    fake_client.statuses = ["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"]
    (event,) = events(RayJobTrigger("ray_unit", "aod-cars-1", poll_interval=0.01))
    assert event.payload["status"] == "success"
    assert event.payload["job_status"] == "SUCCEEDED"
    assert event.payload["job_id"] == "aod-cars-1"
    assert fake_client.polls == 4
    assert fake_client.addresses == ["http://head:8265"]


@pytest.mark.parametrize("final", ["FAILED", "STOPPED"])
def test_trigger_reports_a_failed_or_stopped_job(fake_client: type[FakeJobClient], final: str) -> None:
    fake_client.statuses = ["RUNNING", final]
    (event,) = events(RayJobTrigger("ray_unit", "aod-cars-2", poll_interval=0.01))
    assert event.payload["status"] == "failed"
    assert event.payload["job_status"] == final
    assert event.payload["message"]


def test_trigger_times_out_on_a_job_that_never_ends(fake_client: type[FakeJobClient]) -> None:
    fake_client.statuses = ["RUNNING"]
    deadline = time.time() + 0.1
    (event,) = events(RayJobTrigger("ray_unit", "aod-cars-3", poll_interval=0.02, deadline=deadline))
    assert time.time() >= deadline
    assert event.payload["status"] == "timeout"
    assert event.payload["job_status"] == "RUNNING"
    assert event.payload["message"].startswith("not done by its deadline ")
    assert 3 <= fake_client.polls <= 8
    assert fake_client.stopped == []  # the operator decides to stop it


class Clock:
    """A wall clock that moves only when told (the fake cluster moves it 10 s per poll)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def test_a_trigger_rebuilt_by_a_restarted_triggerer_times_out_at_the_original_deadline(
    fake_client: type[FakeJobClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(1_767_225_600.0)  # 2026-01-01 00:00:00 UTC
    monkeypatch.setattr(triggers, "time", clock)  # the trigger module's wall clock only
    poll = FakeJobClient.get_job_info

    def poll_and_tick(self: FakeJobClient, job_id: str) -> Any:
        clock.now += 10.0
        return poll(self, job_id)

    monkeypatch.setattr(FakeJobClient, "get_job_info", poll_and_tick)
    fake_client.statuses = ["RUNNING"]
    trigger = RayJobTrigger("ray_unit", "aod-cars-6", poll_interval=0.001, deadline=clock.now + 60.0)
    _, kwargs = trigger.serialize()

    clock.now += 30.0  # the triggerer is down for 30 s, then rebuilds the trigger from its kwargs
    (event,) = events(RayJobTrigger(**kwargs))

    # Polls at +40, +50 and +60 s: the original deadline, not 60 s after the restart (+90 s).
    assert fake_client.polls == 3
    assert event.payload["status"] == "timeout"
    assert event.payload["message"] == "not done by its deadline 2026-01-01 00:01:00 UTC (0 s past it)"


def test_trigger_turns_a_polling_error_into_an_event(fake_client: type[FakeJobClient]) -> None:
    fake_client.fail_with = RuntimeError("Request failed with status code 404: Job aod-x does not exist.")
    (event,) = events(RayJobTrigger("ray_unit", "aod-x", poll_interval=0.01))
    assert event.payload["status"] == "error"
    assert "does not exist" in event.payload["message"]


def test_trigger_on_kill_stops_the_job(fake_client: type[FakeJobClient]) -> None:
    asyncio.run(RayJobTrigger("ray_unit", "aod-cars-4").on_kill())
    assert fake_client.stopped == ["aod-cars-4"]


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
