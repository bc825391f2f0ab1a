"""Hooks for the provider's two connection types, ``aod`` (model endpoints) and ``aod_ray`` (a
cluster), and for object-store credentials.

``AoDHook`` reads which DLM and which agent endpoint a partition should use, and the agent's API
key; ``ModelEndpoints.overrides`` gives them as spec fields that replace the partition's, and
``ModelEndpoints.chat_model`` (``AoDHook.get_chat_model``) the agent endpoint's chat model, built
with the key as an argument, which the optimize task hands to the loop: no environment variable
of the worker carries it. (The Ray actors of a local synthesis with a critic build their own
chat model: the synthesize task hands them the key in their ``runtime_env`` under
``AOD_AGENT_KEY``, see ``aod_ops.ray.plan.PartitionJob.critic_env``.)
``RayHook`` gives the
Ray Jobs API client (``aod_ops.ray.jobs.RayJobs``) of a cluster's dashboard address; it still
reads connections made before the type was renamed from ``ray`` (the official Ray provider's).
``StorageHook`` reads S3 credentials from a connection (the Amazon provider's ``aws`` connection
fields), and ``storage_environment`` exposes them to ``aod_ops.storage`` the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from aod_ops.airflow import AOD_UI_FIELDS, RAY_UI_FIELDS
from aod_ops.airflow.exceptions import AoDConnectionError

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from aod_ops.agents.chat import ChatModel
    from aod_ops.ray.jobs import RayJobs
    from aod_ops.spec import AgentSetting, DLMSetting

#: The variable the connection's agent setting names for its API key: a local synthesis' judge
#: actors (a critic's) get the key under it in their ``runtime_env``, never through this process's
#: environment; the loop gets the key in its chat model (``ModelEndpoints.chat_model``).
AGENT_KEY_ENV = "AOD_AGENT_KEY"
#: The Ray connection's default id before it was renamed ``aod_ray_default`` (it clashed with the
#: official Ray provider's); still read when the new one does not exist.
LEGACY_RAY_CONN_ID = "ray_default"

log = logging.getLogger(__name__)


def _ui_behaviour(fields: dict[str, Any]) -> dict[str, Any]:
    """The provider-info form declaration in the shape ``get_ui_field_behaviour`` returns."""
    return {
        "hidden_fields": list(fields["hidden-fields"]),
        "relabeling": dict(fields["relabeling"]),
        "placeholders": dict(fields["placeholders"]),
    }


@contextmanager
def exported(variables: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables while the block runs, then restore what was there."""
    previous = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _url(conn: Connection, default_port: int | None = None) -> str | None:
    """The connection's host as a URL: kept when it has a scheme, else ``http://host[:port]``."""
    if not conn.host:
        return None
    if "://" in conn.host:
        return conn.host
    port = conn.port or default_port
    return f"http://{conn.host}" + (f":{port}" if port else "")


@dataclass(frozen=True)
class ModelEndpoints:
    """The models an ``aod`` connection names; None keeps the partition's spec setting."""

    dlm: DLMSetting | None = None
    agent: AgentSetting | None = None
    api_key: str | None = field(default=None, repr=False)

    def overrides(self) -> dict[str, Any]:
        """The spec fields (``dlm``, ``agent``) that replace a partition's, as they are written in a spec."""
        fields = {"dlm": self.dlm, "agent": self.agent}
        return {name: asdict(value) for name, value in fields.items() if value is not None}

    def chat_model(self) -> ChatModel | None:
        """The agent endpoint's chat model, with the API key passed to it as an argument; None when
        the connection names no agent endpoint (the partition's own ``agent`` setting applies)."""
        if self.agent is None:
            return None
        from aod_ops.agents.chat import chat_model_from_spec

        return chat_model_from_spec(self.agent, api_key=self.api_key)


class AoDHook(BaseHook):
    """The model endpoints of an ``aod`` connection.

    Host (and port): the agent's OpenAI-compatible base URL, empty for the local SmolLM2 agent;
    password: its API key; extra: ``agent_model`` (needed with a base URL), ``dlm`` (a built-in
    DLM or a local folder; with ``dlm_base_url``, the model the server serves), ``dlm_base_url``
    (an OpenAI-compatible DLM server, free mode only: the partition's ``decoding.mode`` must be
    ``free``; the optimize and synthesize tasks both use it), ``trust_remote_code`` (lets that
    local ``dlm`` run its own code; it applies to no other model, the spec's included).

    :param aod_conn_id: the ``aod`` connection's id.
    """

    conn_name_attr = "aod_conn_id"
    default_conn_name = "aod_default"
    conn_type = "aod"
    hook_name = "Agents of Diffusion model endpoints"

    def __init__(self, aod_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aod_conn_id = aod_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form's hidden, relabelled and explained fields."""
        return _ui_behaviour(AOD_UI_FIELDS)

    def get_conn(self) -> ModelEndpoints:
        """The connection's models, checked (``AoDConnectionError`` says which field is wrong)."""
        return self.endpoints_of(self.get_connection(self.aod_conn_id))

    def get_chat_model(self) -> ChatModel | None:
        """The connection's agent endpoint as a chat model, its API key passed as an argument
        (``ModelEndpoints.chat_model``); None when the connection names no agent endpoint."""
        return self.get_conn().chat_model()

    @staticmethod
    def endpoints_of(conn: Connection) -> ModelEndpoints:
        """The models a connection names."""
        from aod_ops.spec import AgentSetting, DLMSetting  # imports torch: not at DAG parse time

        extra = conn.extra_dejson
        where = f"connection {conn.conn_id!r}"
        unknown = sorted(set(extra) - {"agent_model", "dlm", "dlm_base_url", "trust_remote_code"})
        if unknown:
            raise AoDConnectionError(f"{where}: unknown extra field(s) {', '.join(unknown)}")
        base_url = _url(conn)
        agent = None
        if base_url is not None:
            if not extra.get("agent_model"):
                raise AoDConnectionError(f"{where}: an agent base URL needs 'agent_model' in the extra")
            agent = AgentSetting(
                base_url=base_url,
                model=str(extra["agent_model"]),
                api_key_env=AGENT_KEY_ENV if conn.password else None,
            )
        elif extra.get("agent_model") or conn.password:
            raise AoDConnectionError(f"{where}: 'agent_model' and the API key need the agent base URL (host)")
        dlm = None
        trust = extra.get("trust_remote_code", False)
        if not isinstance(trust, bool):
            raise AoDConnectionError(f"{where}: 'trust_remote_code' must be true or false, got {trust!r}")
        if trust and not extra.get("dlm"):
            # It would otherwise look as if it trusted the spec's model, which it never does.
            raise AoDConnectionError(f"{where}: 'trust_remote_code' trusts the connection's 'dlm'; set it")
        server = extra.get("dlm_base_url") or None
        if server is not None and not extra.get("dlm"):
            raise AoDConnectionError(f"{where}: 'dlm_base_url' needs 'dlm' in the extra: the model it serves")
        if extra.get("dlm"):
            try:
                dlm = DLMSetting(model=str(extra["dlm"]), trust_remote_code=trust, base_url=server)
            except ValueError as exc:
                raise AoDConnectionError(f"{where}: {exc}") from exc
        return ModelEndpoints(dlm=dlm, agent=agent, api_key=conn.password or None)

    def test_connection(self) -> tuple[bool, str]:
        """Check the connection's fields, then ask the agent endpoint for its models."""
        try:
            endpoints = self.get_conn()
        except AoDConnectionError as exc:
            return False, str(exc)
        if endpoints.agent is None:
            return True, "No agent endpoint: the local SmolLM2 agent will be used."
        assert endpoints.agent.base_url is not None
        root = endpoints.agent.base_url.rstrip("/")
        url = root + ("/models" if root.endswith("/v1") else "/v1/models")
        headers = {"Authorization": f"Bearer {endpoints.api_key}"} if endpoints.api_key else {}
        try:
            response = httpx.get(url, headers=headers, timeout=10.0)
        except httpx.HTTPError as exc:
            return False, f"{url}: cannot connect ({exc})"
        if response.status_code != 200:
            return False, f"{url}: HTTP {response.status_code}: {response.text[:200]}"
        return True, f"{url} answered; agent model {endpoints.agent.model}"


class RayHook(BaseHook):
    """The Jobs API of the Ray cluster an ``aod_ray`` connection names.

    Host: the dashboard's address (``http://ray-head:8265``, or a bare host name with the port in
    the port field, 8265 by default); password: the token sent as ``Authorization: Bearer``, the
    cluster's ``RAY_AUTH_TOKEN`` when it runs with ``RAY_AUTH_MODE=token`` (or an authenticating
    proxy's token); extra ``verify``: check the dashboard's TLS certificate (default true).

    The type was ``ray`` before, as the official Ray provider's: a connection of that type is read
    the same way, and the old default id ``ray_default`` is used when ``aod_ray_default`` does
    not exist.

    :param ray_conn_id: the ``aod_ray`` connection's id.
    """

    conn_name_attr = "ray_conn_id"
    default_conn_name = "aod_ray_default"
    conn_type = "aod_ray"
    hook_name = "Ray cluster (Jobs API)"
    default_dashboard_port = 8265

    def __init__(self, ray_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ray_conn_id = ray_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form's hidden, relabelled and explained fields."""
        return _ui_behaviour(RAY_UI_FIELDS)

    def get_conn(self) -> RayJobs:
        """The cluster's Jobs API client (made lazily: it reaches the cluster on first use)."""
        return self.jobs_of(self.connection(self.ray_conn_id))

    @classmethod
    def connection(cls, conn_id: str) -> Connection:
        """The connection ``conn_id``; for the default id, when it does not exist, ``ray_default``."""
        try:
            return cls.get_connection(conn_id)
        except AirflowNotFoundException as missing:
            if conn_id != cls.default_conn_name:
                raise
            try:
                conn = cls.get_connection(LEGACY_RAY_CONN_ID)
            except AirflowNotFoundException:
                raise missing from None
        cls._warn_legacy_default()
        return conn

    @classmethod
    async def aconnection(cls, conn_id: str) -> Connection:
        """``connection`` for the triggerer's event loop."""
        try:
            return await cls.aget_connection(conn_id)
        except AirflowNotFoundException as missing:
            if conn_id != cls.default_conn_name:
                raise
            try:
                conn = await cls.aget_connection(LEGACY_RAY_CONN_ID)
            except AirflowNotFoundException:
                raise missing from None
        cls._warn_legacy_default()
        return conn

    @classmethod
    def _warn_legacy_default(cls) -> None:
        log.warning(
            "Using the Ray connection %r because %r does not exist; rename it to %r "
            "(the old id is the official Ray provider's too)",
            LEGACY_RAY_CONN_ID,
            cls.default_conn_name,
            cls.default_conn_name,
        )

    @classmethod
    def jobs_of(cls, conn: Connection) -> RayJobs:
        """The Jobs API client of an ``aod_ray`` (or older ``ray``) connection."""
        from aod_ops.ray.jobs import RayJobs

        address = _url(conn, cls.default_dashboard_port)
        if address is None:
            raise AoDConnectionError(f"connection {conn.conn_id!r}: no dashboard address (host)")
        verify = conn.extra_dejson.get("verify", True)
        if not isinstance(verify, bool | str):
            raise AoDConnectionError(
                f"connection {conn.conn_id!r}: 'verify' must be true, false or a CA bundle path"
            )
        headers = {"Authorization": f"Bearer {conn.password}"} if conn.password else None
        return RayJobs(address, headers=headers, verify=verify)

    def test_connection(self) -> tuple[bool, str]:
        """List the cluster's jobs through the Jobs API."""
        try:
            jobs = self.get_conn()
            count = len(jobs.list_jobs())
        except Exception as exc:  # any failure is the answer to show in the UI
            return False, str(exc)
        return True, f"Ray Jobs API at {jobs.address} answered ({count} jobs)"


class StorageHook(BaseHook):
    """The S3 credentials of a connection, as the environment variables botocore reads.

    The fields are an Amazon provider ``aws`` connection's (any connection type will do): login,
    the access key id; password, the secret access key; extra ``aws_session_token``,
    ``region_name`` and ``endpoint_url`` (an S3-compatible store such as MinIO; the host field,
    when set, is used instead).

    :param storage_conn_id: the connection's id.
    """

    conn_name_attr = "storage_conn_id"
    default_conn_name = "aws_default"
    conn_type = "aws"
    hook_name = "Object storage credentials (S3)"

    def __init__(self, storage_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.storage_conn_id = storage_conn_id

    def get_conn(self) -> dict[str, str]:
        """``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
        ``AWS_DEFAULT_REGION`` and ``AWS_ENDPOINT_URL``, those the connection sets."""
        conn = self.get_connection(self.storage_conn_id)
        extra = conn.extra_dejson
        unknown = sorted(set(extra) - {"aws_session_token", "region_name", "endpoint_url"})
        if unknown:
            raise AoDConnectionError(
                f"connection {conn.conn_id!r}: unknown extra field(s) {', '.join(unknown)}"
            )
        values = {
            "AWS_ACCESS_KEY_ID": conn.login,
            "AWS_SECRET_ACCESS_KEY": conn.password,
            "AWS_SESSION_TOKEN": extra.get("aws_session_token"),
            "AWS_DEFAULT_REGION": extra.get("region_name"),
            "AWS_ENDPOINT_URL": _url(conn) or extra.get("endpoint_url"),
        }
        return {name: str(value) for name, value in values.items() if value}


@contextmanager
def storage_environment(storage_conn_id: str | None) -> Iterator[None]:
    """Expose a connection's S3 credentials (``StorageHook``) to ``aod_ops.storage`` while the
    block runs; with None, the worker's own (its environment, ``~/.aws``, an instance role)."""
    with exported({} if storage_conn_id is None else StorageHook(storage_conn_id).get_conn()):
        yield
