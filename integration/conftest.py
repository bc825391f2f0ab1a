"""Fixtures the integration tests share with the unit tests, from ``tests/fakes.py``:
``task_instance`` (the Airflow task instance fields the operators read) and ``ray_session`` (Ray
started once for a module)."""

from tests.fakes import FakeTaskInstance, ray_session, task_instance

__all__ = ["FakeTaskInstance", "ray_session", "task_instance"]  # pytest finds the fixtures by name
