"""Reference and holdout rows from a database (``reference: {sql, conn}``), against a real
PostgreSQL started by the tests: rows typed to JSON and validated like a file's, one query per
process, one-line errors naming the partition, the field and the connection, never a password."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
import yaml

from aod_ops import sql
from aod_ops.cli import main
from aod_ops.errors import DataError, SpecError
from aod_ops.loop import run_settings
from aod_ops.records import read_records
from aod_ops.spec import LoopSettings, load_reference, load_spec
from aod_ops.sql import SqlQuery

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CARS_SCHEMA = EXAMPLES / "schemas" / "cars.json"
CARS = ["Name", "Miles_per_Gallon", "Cylinders", "Displacement", "Horsepower", "Weight_in_lbs",
        "Acceleration", "Year", "Origin"]  # fmt: skip
CAR_TYPES = ["text", "numeric", "integer", "double precision", "integer", "integer", "numeric(4,1)",
             "integer", "text"]  # fmt: skip
PAYMENTS = {
    "type": "object",
    "properties": {
        "day": {"type": "string", "format": "date"},
        "amount": {"type": "number", "minimum": 0},
        "note": {"type": ["string", "null"]},
        "tag": {"type": "string"},
        "booked": {"type": "string"},
    },
    "required": ["day", "amount"],
    "additionalProperties": False,
}
PAYMENT_ROWS = [  # the third breaks the schema: a negative amount
    ("2024-01-02", "12.50", "first", "a", "2024-01-02 10:00:00"),
    ("2024-01-03", "7.25", None, None, "2024-01-03 11:30:00"),
    ("2024-01-04", "-1.00", "refund", "b", "2024-01-04 09:15:00"),
]
GOOD = "SELECT day, amount, note, tag, booked FROM sqlref.payments WHERE amount >= 0 ORDER BY id"
ALL = "SELECT day, amount, note, tag, booked FROM sqlref.payments ORDER BY id"
# Counts its own runs: the sequence is not rolled back with the read-only transaction.
COUNTED = GOOD.replace("WHERE", "WHERE (SELECT nextval('sqlref.reads')) > 0 AND")
SECRET = "hunter2@s/cret"  # trust authentication accepts any password: this one must never show


@pytest.fixture(scope="module")
def db(postgres_url: str) -> str:
    """The session's server with the test tables in the schema ``sqlref``: the example cars
    (reference and holdout), payments and a counter of reads."""
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    columns = ", ".join(f'"{c}" {t}' for c, t in zip(CARS, CAR_TYPES, strict=True))
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS sqlref CASCADE; CREATE SCHEMA sqlref")
        for split in ("reference", "holdout"):
            conn.exec_driver_sql(f"CREATE TABLE sqlref.cars_{split} (id serial, {columns})")
            rows = [json.loads(line) for line in (EXAMPLES / "data" / f"cars_{split}.jsonl").open()]
            names = ", ".join(f'"{c}"' for c in CARS)
            values = ", ".join(f":{c}" for c in CARS)
            conn.execute(sa.text(f"INSERT INTO sqlref.cars_{split} ({names}) VALUES ({values})"), rows)
        conn.exec_driver_sql(
            "CREATE TABLE sqlref.payments (id serial, day date NOT NULL, amount numeric(8, 2) NOT NULL, "
            "note text, tag text, booked timestamp)"
        )
        conn.execute(
            sa.text(
                "INSERT INTO sqlref.payments (day, amount, note, tag, booked) "
                "VALUES (CAST(:d AS date), CAST(:a AS numeric), :n, :t, CAST(:b AS timestamp))"
            ),
            [dict(zip("dantb", row, strict=True)) for row in PAYMENT_ROWS],
        )
        conn.exec_driver_sql("CREATE SEQUENCE sqlref.reads")
    engine.dispose()
    return postgres_url


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    """Each test reads the database anew: the cache lasts a process, the tests share one."""
    sql.clear_cache()
    yield
    sql.clear_cache()


def with_password(url: str, password: str = SECRET) -> str:
    """``url`` (``...://postgres:@/...``) with ``password``, percent-encoded."""
    return url.replace("postgres:@", f"postgres:{quote(password, safe='')}@", 1)


def write_spec(folder: Path, reference: Any, holdout: Any = None, **extra: Any) -> Path:
    """A one-partition spec ``payments`` over the ``PAYMENTS`` schema."""
    (folder / "payments.json").write_text(json.dumps(PAYMENTS))
    partition = {"name": "payments", "schema": "payments.json", "reference": reference, "rows": 2, **extra}
    if holdout is not None:
        partition["holdout"] = holdout
    (folder / "spec.yaml").write_text(yaml.safe_dump({"partitions": [partition]}))
    return folder / "spec.yaml"


def reads(url: str) -> int:
    """How many times ``COUNTED`` has run on the server."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        last, called = conn.exec_driver_sql("SELECT last_value, is_called FROM sqlref.reads").one()
    engine.dispose()
    return int(last) if called else 0


def test_reference_and_holdout_from_sql_are_typed_as_json_and_validated(db: str, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, {"sql": GOOD, "conn": db}, {"sql": GOOD + " LIMIT 1", "conn": db})
    (partition,) = load_spec(spec).partitions
    assert partition.reference_path == SqlQuery(GOOD, db)
    # Dates and timestamps are ISO text, numerics floats; a NULL is null where the type allows it,
    # else the property is left out (as an empty CSV cell).
    assert load_reference(partition) == [
        {"day": "2024-01-02", "amount": 12.5, "note": "first", "tag": "a", "booked": "2024-01-02T10:00:00"},
        {"day": "2024-01-03", "amount": 7.25, "note": None, "booked": "2024-01-03T11:30:00"},
    ]
    assert load_reference(partition, holdout=True) == load_reference(partition)[:1]


def test_the_query_runs_once_for_the_spec_check_and_every_later_load(db: str, tmp_path: Path) -> None:
    before = reads(db)
    spec = write_spec(tmp_path, {"sql": COUNTED, "conn": db}, {"sql": COUNTED, "conn": db})
    (partition,) = load_spec(spec).partitions
    for _ in range(3):
        assert len(load_reference(partition)) == 2 and len(load_reference(partition, holdout=True)) == 2
    # The loop's resume check digests the rows it already has.
    settings = run_settings(partition, LoopSettings(), None)
    assert settings["reference_sha256"] == settings["holdout_sha256"] == SqlQuery(COUNTED, db).digest()
    assert reads(db) == before + 1
    sql.clear_cache()
    load_reference(partition)
    assert reads(db) == before + 2


def test_a_query_failing_after_the_spec_was_loaded_names_the_partition(db: str, tmp_path: Path) -> None:
    engine = sa.create_engine(db, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE sqlref.vanishing AS SELECT day, amount FROM sqlref.payments LIMIT 1"
        )
    (partition,) = load_spec(
        write_spec(tmp_path, {"sql": "SELECT * FROM sqlref.vanishing", "conn": db})
    ).partitions
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE sqlref.vanishing")
    engine.dispose()
    assert len(load_reference(partition)) == 1  # this process read it with the spec
    sql.clear_cache()  # as a new process would
    failed = r"the query failed: relation \"sqlref.vanishing\" does not exist$"
    with pytest.raises(
        DataError, match=r"^partition 'payments': field 'reference': SQL query on .*: " + failed
    ):
        load_reference(partition)


def test_bad_sql_is_one_line_naming_partition_field_and_connection(db: str, tmp_path: Path) -> None:
    (tmp_path / "payments.jsonl").write_text('{"day": "2024-01-01", "amount": 1}\n')
    conn = with_password(db)
    spec = write_spec(tmp_path, "payments.jsonl", {"sql": "SELECT day FROM sqlref.nowhere", "conn": conn})
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    message = str(caught.value)
    assert "\n" not in message and SECRET not in message and "hunter2" not in message
    assert message.startswith(
        f"{spec}: partition 'payments': field 'holdout': SQL query on postgresql+psycopg"
    )
    assert 'postgres:***@/postgres: the query failed: relation "sqlref.nowhere" does not exist' in message


def test_columns_the_schema_lacks_are_named(db: str, tmp_path: Path) -> None:
    query = "SELECT id, day, amount, 1 AS extra FROM sqlref.payments"
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tmp_path, {"sql": query, "conn": db}))
    message = str(caught.value)
    assert "partition 'payments': field 'reference': SQL query on" in message
    assert message.endswith(
        "returns columns the schema does not have: 'id', 'extra' (select only its properties)"
    )


def test_rows_breaking_the_schema_are_refused_or_skipped_like_a_files(
    db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(SpecError, match=r"field 'reference': SQL query on .*: 1 of 3 rows break the schema"):
        load_spec(write_spec(tmp_path, {"sql": ALL, "conn": db}))
    with caplog.at_level(logging.WARNING, logger="aod_ops.spec"):
        (partition,) = load_spec(
            write_spec(tmp_path, {"sql": ALL, "conn": db}, invalid_rows="skip")
        ).partitions
    (warning,) = [record.getMessage() for record in caplog.records]
    assert (
        "left out 1 of 3 rows" in warning
        and "row 3 at /amount: -1.0 is less than the minimum of 0" in warning
    )
    assert [r["day"] for r in load_reference(partition)] == ["2024-01-02", "2024-01-03"]


def test_a_password_never_shows_in_an_error(monkeypatch: pytest.MonkeyPatch, db: str) -> None:
    # In the URL, or from the environment (${NAME}: its '@' and '/' need no escaping); a driver's
    # message that quotes it has it struck out.
    monkeypatch.setenv("AOD_TEST_DB_PASSWORD", SECRET)
    from_env = db.replace("postgres:@", "postgres:${AOD_TEST_DB_PASSWORD}@", 1)
    assert sql.fetch(SqlQuery("SELECT 1 AS one", from_env)).rows == ((1,),)
    for conn in (with_password(db), from_env):
        with pytest.raises(DataError) as caught:
            sql.fetch(SqlQuery(f'SELECT * FROM "{SECRET}"', conn))
        message = str(caught.value)
        assert message.startswith(
            "SQL query on postgresql+psycopg://postgres:***@/postgres: the query failed"
        )
        assert 'relation "***" does not exist' in message and "hunter2" not in message
    assert "hunter2" not in repr(SqlQuery("SELECT 1", with_password(db)))  # as a logged Partition shows it
    monkeypatch.delenv("AOD_TEST_DB_PASSWORD")
    with pytest.raises(DataError, match=r"the environment variable AOD_TEST_DB_PASSWORD is not set"):
        sql.fetch(SqlQuery("SELECT 2 AS two", from_env))


def test_a_failed_connection_names_it_without_the_password(db: str) -> None:
    conn = with_password(db).replace("/postgres?", "/no_such_db?")
    with pytest.raises(DataError) as caught:
        sql.fetch(SqlQuery("SELECT 1 AS one", conn))
    message = str(caught.value)
    assert message.startswith("postgresql+psycopg://postgres:***@/no_such_db: cannot connect: ")
    assert 'database "no_such_db" does not exist' in message and "\n" not in message
    assert SECRET not in message and quote(SECRET, safe="") not in message


def test_an_airflow_connection_id_is_resolved_through_airflow(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Airflow calls a PostgreSQL connection 'postgres'; its URI becomes a psycopg URL.
    monkeypatch.setenv(
        "AIRFLOW_CONN_AOD_WAREHOUSE", with_password(db).replace("postgresql+psycopg", "postgres")
    )
    assert sql.fetch(SqlQuery("SELECT 1 AS one", "aod_warehouse")).columns == ("one",)
    with pytest.raises(DataError) as caught:
        sql.fetch(SqlQuery("SELECT * FROM sqlref.nowhere", "aod_warehouse"))
    assert str(caught.value).startswith("SQL query on Airflow connection 'aod_warehouse': the query failed")
    assert SECRET not in str(caught.value)
    with pytest.raises(DataError, match=r"^Airflow connection 'aod_nowhere' is not defined$"):
        sql.fetch(SqlQuery("SELECT 1", "aod_nowhere"))


def test_a_statement_that_returns_no_rows_is_refused(db: str) -> None:
    with pytest.raises(DataError, match=r"returns no rows \(it must be a SELECT\)"):
        sql.fetch(SqlQuery("CREATE TEMPORARY TABLE scratch (a int)", db))


def test_the_sql_field_is_checked_without_showing_the_conn(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"field 'reference.conn': must be a non-empty string \(missing\)$"):
        load_spec(write_spec(tmp_path, {"sql": "SELECT 1"}))
    with pytest.raises(SpecError, match=r"field 'reference.table': unknown field \(expected sql, conn\)$"):
        load_spec(write_spec(tmp_path, {"sql": "SELECT 1", "conn": "x", "table": "t"}))


def test_aod_score_against_sql_rows_matches_the_same_rows_from_files(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ", ".join(f'"{c}"' for c in CARS)
    partition = {
        "name": "cars",
        "schema": str(CARS_SCHEMA),
        "reference": {"sql": f"SELECT {names} FROM sqlref.cars_reference ORDER BY id", "conn": db},
        "holdout": {"sql": f"SELECT {names} FROM sqlref.cars_holdout ORDER BY id", "conn": db},
        "rows": 10,
        "rules": ["Displacement >= 15 * Cylinders"],
    }
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"partitions": [partition]}))
    (cars,) = load_spec(spec).partitions
    assert load_reference(cars) == read_records(EXAMPLES / "data" / "cars_reference.jsonl", {})
    table = EXAMPLES / "data" / "cars_holdout.jsonl"
    out = tmp_path / "score.json"
    argv = ["score", "--spec", str(spec), "--partition", "cars", "--data", str(table), "--json", str(out)]
    assert main(argv) == 0
    scored = json.loads(out.read_text())
    assert scored["yardstick"] == "holdout" and "100 rows" in capsys.readouterr().out
    # The held-out rows scored against themselves: every figure as the file spec gives it.
    assert (
        main([*argv[:2], str(EXAMPLES / "partitions.yaml"), *argv[3:-1], str(tmp_path / "files.json")]) == 0
    )
    assert scored["table"] == json.loads((tmp_path / "files.json").read_text())["table"]
