"""RayJobs' calls to Ray's Jobs REST API (all but submitting), against an httpx.MockTransport."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from aod_ops.errors import AodError
from aod_ops.ray.jobs import JobInfo, JobState, RayJobs

ADDRESS = "http://head:8265"
DETAILS = {
    "type": "SUBMISSION",
    "submission_id": "aod-cars-1",
    "status": "FAILED",
    "message": "Job entrypoint command failed with exit code 1",
    "entrypoint": "aod synthesize --spec spec/partitions.yaml",
    "start_time": 1_767_225_600_500,
    "end_time": 1_767_225_700_000,
    "metadata": {"airflow_dag_id": "aod_synthesis"},
    "runtime_env": {"working_dir": "gcs://_ray_pkg_0.zip"},
}


def on(
    handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any
) -> tuple[RayJobs, list[httpx.Request]]:
    """A RayJobs whose requests ``handler`` answers, and the requests it sent."""
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return handler(request)

    return RayJobs(ADDRESS, transport=httpx.MockTransport(record), **kwargs), sent


def test_a_jobs_state_and_record_come_from_get_api_jobs_id_with_the_connections_headers() -> None:
    jobs, sent = on(lambda request: httpx.Response(200, json=DETAILS), headers={"Authorization": "Bearer t"})
    assert jobs.state("aod-cars-1") == JobState("aod-cars-1", "FAILED", str(DETAILS["message"]))
    assert jobs.info("aod-cars-1") == JobInfo(
        submission_id="aod-cars-1",
        status="FAILED",
        message="Job entrypoint command failed with exit code 1",
        start_time=1_767_225_600.5,  # Ray's milliseconds as seconds
        entrypoint="aod synthesize --spec spec/partitions.yaml",
        metadata={"airflow_dag_id": "aod_synthesis"},
    )
    assert {(r.method, str(r.url)) for r in sent} == {("GET", f"{ADDRESS}/api/jobs/aod-cars-1")}
    assert all(r.headers["Authorization"] == "Bearer t" for r in sent)


def test_listing_keeps_drivers_started_without_the_jobs_api() -> None:
    driver = {"type": "DRIVER", "submission_id": None, "status": "RUNNING", "job_id": "02000000"}
    jobs, sent = on(lambda request: httpx.Response(200, json=[DETAILS, driver]))
    listed = jobs.list_jobs()
    assert [(j.submission_id, j.status, j.start_time) for j in listed] == [
        ("aod-cars-1", "FAILED", 1_767_225_600.5),
        (None, "RUNNING", None),
    ]
    assert [(r.method, r.url.path) for r in sent] == [("GET", "/api/jobs/")]


def test_logs_are_the_last_lines_and_stop_posts_to_the_job() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/jobs/aod-cars-1/logs":
            return httpx.Response(200, json={"logs": "".join(f"line {i}\n" for i in range(10))})
        assert (request.method, request.url.path) == ("POST", "/api/jobs/aod-cars-1/stop")
        return httpx.Response(200, json={"stopped": False})

    jobs, _ = on(handler)
    assert jobs.logs("aod-cars-1", lines=3) == "line 7\nline 8\nline 9"
    assert jobs.stop("aod-cars-1") is False  # it had already ended


def test_an_unknown_job_is_named_as_such() -> None:
    jobs, _ = on(lambda request: httpx.Response(404, text="Job aod-x does not exist"))
    for call in (jobs.state, jobs.logs, jobs.stop):
        with pytest.raises(AodError) as caught:
            call("aod-x")
        assert str(caught.value) == (
            f"Ray Jobs API at {ADDRESS}: no job 'aod-x' on the cluster (HTTP 404: Job aod-x does not exist)"
        )


def test_another_status_names_the_address_the_status_and_the_start_of_the_body() -> None:
    trace = "Traceback (most recent call last):\n" + "  File x\n" * 200
    jobs, _ = on(lambda request: httpx.Response(500, text=trace))
    with pytest.raises(
        AodError, match=r"^Ray Jobs API at http://head:8265: GET /api/jobs/ answered HTTP 500: "
    ) as caught:
        jobs.list_jobs()
    assert "Traceback (most recent call last): File x" in str(caught.value)
    assert len(str(caught.value)) < 400  # an excerpt, on one line
    jobs, _ = on(lambda request: httpx.Response(200, text="<html>a proxy's login page</html>"))
    with pytest.raises(AodError, match="answered with no JSON: <html>a proxy's login page</html>"):
        jobs.state("aod-cars-1")


def test_a_cluster_out_of_reach_is_an_error_naming_its_address() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    jobs, _ = on(refuse)
    with pytest.raises(AodError, match=r"^Ray Jobs API at http://head:8265 is not reachable: ConnectError: "):
        jobs.state("aod-cars-1")


def test_a_missing_ca_bundle_is_named(tmp_path: Path) -> None:
    jobs, sent = on(lambda request: httpx.Response(200, json=DETAILS), verify=str(tmp_path / "ca.pem"))
    with pytest.raises(AodError, match=f"CA certificates {tmp_path / 'ca.pem'}"):
        jobs.state("aod-cars-1")
    assert sent == []
