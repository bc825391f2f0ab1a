"""The provider's own exception types.

Input errors (a bad spec, schema, reference sample or connection) and failed quality gates are
not retried: the same input fails the same way, so they derive from ``AirflowFailException``.
Other failures (a model or Ray that cannot be reached or started, a failed Ray job) may pass on a
retry, so they are plain ``AirflowException``s.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class AoDProviderError(AirflowException):
    """Base of every error the aod_ops provider raises."""


class AoDInputError(AoDProviderError, AirflowFailException):
    """The task's input is wrong (spec, schema, reference sample, connection or argument).

    The message is the engine's, naming the file, partition and field; retrying cannot help.
    """


class AoDTaskError(AoDProviderError):
    """The engine failed for another reason (a model or Ray out of reach, a spent candidate
    budget); the message is the engine's. Retried as the task's ``retries`` allow."""


class AoDConnectionError(AoDInputError):
    """An ``aod`` or ``aod_ray`` connection whose fields cannot be used as they are."""


class RayJobFailed(AoDProviderError):
    """A Ray job that ended FAILED or STOPPED, or was not done within its timeout.

    :param job_id: the Ray job's submission id.
    :param status: its last status (``FAILED``, ``STOPPED``, or ``RUNNING`` on a timeout).
    :param message: what Ray or the poller said.
    :param logs: the tail of the job's logs, when they could be fetched.
    """

    def __init__(self, job_id: str, status: str, message: str, logs: str = "") -> None:
        text = f"Ray job {job_id} ended {status}: {message}"
        if logs:
            text += f"\n--- last lines of the job's logs ---\n{logs}"
        super().__init__(text)
        self.job_id = job_id
        self.status = status
        self.logs = logs


class AoDTriggerEventError(AoDProviderError):
    """A deferred task resumed with an event it cannot read (None, or an unknown status)."""


class AoDValidationFailed(AoDProviderError, AirflowFailException):
    """A partition that failed its GX expectations or privacy gates.

    ``summary`` is the small summary dict also pushed to XCom (``return_value``).
    """

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


class AoDPartitionsFailed(AoDProviderError, AirflowFailException):
    """A run in which at least one partition failed; the message names each one and its step."""
