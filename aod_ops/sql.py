"""Reference rows from a database: a spec's ``reference: {sql: "SELECT ...", conn: ...}``.

``conn`` is a SQLAlchemy URL (``postgresql+psycopg://reader@db.internal/warehouse``) or, when it is
not a URL, an Airflow connection id. Credentials come from the environment: the driver's own
variables (``PGPASSWORD`` for PostgreSQL), ``${NAME}`` in any part of the URL but the port, or the
Airflow connection. A query runs once per process: checking the spec, the loop, synthesis and
validation in one process share its rows. Messages name the connection with its password masked and
its query string left out; a driver's message has the password struck out.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aod_ops.errors import DataError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_MESSAGE = 300  # characters of a driver's message an error shows


@dataclass(frozen=True)
class SqlQuery:
    """A reference or holdout sample read from a database: the query ``sql`` run on ``conn``."""

    sql: str
    conn: str

    @property
    def name(self) -> str:
        """How messages name the source, as a file's name names a file (no password in it)."""
        return f"SQL query on {shown_conn(self.conn)}"

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:  # a logged or printed Partition shows no password either
        return f"SqlQuery(sql={self.sql!r}, conn={shown_conn(self.conn)!r})"

    def digest(self) -> str:
        """A SHA-256 of the query's columns and rows in order (a resumed run must see the same)."""
        rows = fetch(self)
        text = json.dumps([rows.columns, rows.rows], default=str, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class SqlRows:
    """What a query returned: its column names and its rows, as the driver typed the values."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


_results: dict[tuple[str, str], SqlRows] = {}
_lock = threading.Lock()  # two threads asking for one query wait for a single run of it


def fetch(query: SqlQuery) -> SqlRows:
    """The query's columns and rows, read from the database the first time this process asks.

    :raises DataError: in one line naming the connection (password masked), when it cannot be made,
        the query fails or returns no rows, or a column name repeats.
    """
    key = (query.conn, query.sql)
    with _lock:
        if key not in _results:
            _results[key] = _run(query)
        return _results[key]


def clear_cache() -> None:
    """Forget every query's rows: the next ``fetch`` reads the database again."""
    with _lock:
        _results.clear()


def shown_conn(conn: str) -> str:
    """``conn`` as messages show it: a URL with its password masked and no query string, or the
    Airflow connection id."""
    if "://" not in conn:
        return f"Airflow connection {conn!r}"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(conn)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return conn.split("://", 1)[0] + "://..."
    return url.set(query={}).render_as_string(hide_password=True)


def _run(query: SqlQuery) -> SqlRows:
    import sqlalchemy as sa
    from sqlalchemy.exc import NoSuchModuleError, SQLAlchemyError

    url = _url(query)
    secret = url.password or ""
    shown = shown_conn(query.conn)
    try:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    except (NoSuchModuleError, ImportError) as exc:
        raise DataError(
            f"{shown}: cannot load the database driver ({_message(exc, secret)}): install it, "
            "or name an installed one in the URL (postgresql+psycopg://...)"
        ) from None
    try:
        # The connection rolls back on leaving: nothing a query does is committed.
        with engine.connect() as connection:
            try:
                # Sent as written: no bind parameters, so ':' and '%' in it need no escaping.
                result = connection.exec_driver_sql(query.sql, execution_options={"no_parameters": True})
                if not result.returns_rows:
                    raise DataError(f"SQL query on {shown}: returns no rows (it must be a SELECT)")
                columns = tuple(result.keys())
                rows = tuple(tuple(_plain(value) for value in row) for row in result.fetchall())
            except SQLAlchemyError as exc:
                raise DataError(f"SQL query on {shown}: the query failed: {_message(exc, secret)}") from None
    except SQLAlchemyError as exc:  # raised by connect(): the query's own errors are handled above
        raise DataError(f"{shown}: cannot connect: {_message(exc, secret)}") from None
    finally:
        engine.dispose()
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise DataError(
            f"SQL query on {shown}: returns more than one column named {', '.join(map(repr, repeated))}"
        )
    return SqlRows(columns, rows)


def _url(query: SqlQuery) -> URL:
    """The URL to connect to: ``conn`` with ``${NAME}`` expanded, or an Airflow connection's."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if "://" not in query.conn:
        return _airflow_url(query.conn)
    shown = shown_conn(query.conn)
    try:
        url = make_url(query.conn)
    except (ArgumentError, ValueError):
        raise DataError(f"{shown}: conn is not a valid SQLAlchemy URL") from None
    try:
        # Each part is expanded on its own: a password's '@' or '/' needs no escaping.
        return url.set(
            username=_expand(url.username),
            password=_expand(url.password),
            host=_expand(url.host),
            database=_expand(url.database),
            query={
                k: tuple(_expand(x) or "" for x in v) if isinstance(v, tuple) else _expand(v) or ""
                for k, v in url.query.items()
            },
        )
    except KeyError as exc:
        raise DataError(f"{shown}: the environment variable {exc.args[0]} is not set") from None


def _expand(text: str | None) -> str | None:
    """``text`` with each ``${NAME}`` replaced by that environment variable (``KeyError`` if unset)."""
    if text is None:
        return None
    return _ENV.sub(lambda match: os.environ[match.group(1)], text)


def _airflow_url(conn_id: str) -> URL:
    """The SQLAlchemy URL of the Airflow connection ``conn_id``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        from airflow.exceptions import AirflowNotFoundException
        from airflow.sdk import BaseHook
    except ImportError:
        raise DataError(
            f"conn {conn_id!r} is not a URL, and Airflow (to look it up as a connection id) is not installed"
        ) from None
    try:
        uri = BaseHook.get_connection(conn_id).get_uri()
    except AirflowNotFoundException:
        raise DataError(f"Airflow connection {conn_id!r} is not defined") from None
    try:
        url = make_url(uri)
    except (ArgumentError, ValueError):
        raise DataError(f"Airflow connection {conn_id!r} is not a valid SQLAlchemy URL") from None
    # Airflow names PostgreSQL 'postgres', a name SQLAlchemy dropped; psycopg 3 is its current driver.
    return url.set(drivername="postgresql+psycopg") if url.drivername == "postgres" else url


def _plain(value: Any) -> Any:
    """A driver's value with the types JSON has no name for made text (a UUID)."""
    return str(value) if isinstance(value, uuid.UUID) else value


def _message(exc: BaseException, secret: str) -> str:
    """The driver's own message (without SQLAlchemy's statement and link) on one line, cut short,
    with ``secret`` struck out."""
    orig = getattr(exc, "orig", None)
    lines = str(orig if orig is not None else exc).strip().splitlines()
    text = " ".join(lines[0].split()) if lines else type(exc).__name__
    if secret:
        text = text.replace(secret, "***")
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."
