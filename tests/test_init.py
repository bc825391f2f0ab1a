"""``aod init``: the inferred schema validates every row of a JSON Lines, CSV or Parquet table
(nested values and nulls included), enums, formats and sensitive columns are recognised on small
tables, the written spec loads and its rows validate, an example table's spec runs under
``aod run``, and bad input exits 2 with one line."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from aod_ops import cli, storage
from aod_ops.cli.init import add_init_parser
from aod_ops.infer import (
    InferSettings,
    guess_sensitive,
    infer_schema,
    init_partition,
    read_table,
    split_rows,
)
from aod_ops.schema import load_schema
from aod_ops.spec import load_reference, load_spec

EXAMPLES = Path(__file__).parent.parent / "examples"


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def assert_validates(schema: dict[str, Any], records: list[dict[str, Any]]) -> None:
    loaded = load_schema(schema)
    assert [(i, loaded.errors(r)) for i, r in enumerate(records) if loaded.errors(r)] == []


@pytest.fixture
def aod(monkeypatch: pytest.MonkeyPatch) -> Callable[..., int]:
    """``aod`` as its ``main`` runs it, with ``init`` registered (until cli.py registers it)."""
    build = cli.build_parser

    def build_with_init() -> argparse.ArgumentParser:
        parser = build()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "init" not in sub.choices:
            add_init_parser(sub)
        return parser

    monkeypatch.setattr(cli, "build_parser", build_with_init)
    return lambda *argv: cli.main([str(a) for a in argv])


NESTED = [
    {"id": 1, "tags": ["a", "b"], "owner": {"name": "x", "age": 3}, "note": None, "mixed": {"k": 1}},
    {"id": 2, "tags": [], "owner": {"name": "y", "age": None}, "note": "hi", "mixed": "text"},
    {"id": 3.5, "tags": ["c"], "owner": None, "extra": [{"p": 1}, {"p": "q", "r": None}]},
]


def test_jsonl_with_nested_values_missing_keys_and_nulls_validates_every_row(tmp_path: Path) -> None:
    records = read_table(write_jsonl(tmp_path / "t.jsonl", NESTED))
    schema = infer_schema(records, "t")
    assert_validates(schema, records)
    props = schema["properties"]
    assert set(schema["required"]) == {
        "id",
        "tags",
        "owner",
    }  # "note", "mixed", "extra" are missing somewhere
    assert props["id"] == {
        "type": "number",
        "minimum": 1,
        "maximum": 3.5,
        "description": props["id"]["description"],
    }
    assert props["tags"]["maxItems"] == 2 and props["tags"]["items"]["maxLength"] == 1
    owner = next(b for b in props["owner"]["anyOf"] if b.get("type") == "object")
    assert owner["additionalProperties"] is False and owner["properties"]["age"]["type"] == [
        "integer",
        "null",
    ]
    assert props["note"]["type"] == ["null", "string"]
    assert schema["additionalProperties"] is False and schema["$schema"].endswith("2020-12/schema")
    assert schema["title"] == "t" and "TODO" in schema["description"] and "TODO" in props["id"]["description"]
    assert not load_schema(schema).is_valid({**records[0], "unknown": 1})


def test_csv_cells_are_typed_by_column_and_empty_cells_are_null(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('n,x,zip,flag,text,empty\n1,1.5,02139,true,a,\n2,,10001,False,,\n-3,2,00501,,"c, d",\n')
    records = read_table(path)
    assert records[0] == {"n": 1, "x": 1.5, "zip": "02139", "flag": True, "text": "a", "empty": None}
    assert records[1]["x"] is None and records[1]["flag"] is False and records[2]["x"] == 2.0
    schema = infer_schema(records, "t")
    assert_validates(schema, records)
    kinds = {k: v["type"] for k, v in schema["properties"].items()}
    assert kinds == {
        "n": "integer", "x": ["null", "number"], "zip": "string", "flag": ["boolean", "null"],
        "text": ["null", "string"], "empty": "null",
    }  # fmt: skip


def test_parquet_structs_lists_dates_nulls_and_nan_validate(tmp_path: Path) -> None:
    table = pa.table(
        {
            "when": pa.array([dt.date(2020, 1, 2), dt.date(2021, 3, 4), None]),
            "at": pa.array([dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC)] * 3, pa.timestamp("s", "UTC")),
            "score": [1.5, math.nan, None],
            "point": [{"x": 1, "y": 2}, None, {"x": 3, "y": None}],
            "items": [[1, 2], [], None],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    records = read_table(tmp_path / "t.parquet")
    assert records[1]["score"] is None and records[0]["when"] == "2020-01-02"  # NaN is no value
    schema = infer_schema(records, "t")
    assert_validates(schema, records)
    props = schema["properties"]
    assert props["when"]["format"] == "date" and props["at"]["format"] == "date-time"
    point = {b["type"]: b for b in props["point"]["anyOf"]}
    assert point["object"]["properties"]["y"] == {"type": ["integer", "null"], "minimum": 2, "maximum": 2}
    assert {b["type"]: b for b in props["items"]["anyOf"]}["array"]["maxItems"] == 2


def test_low_cardinality_strings_become_enums_as_configured() -> None:
    colors = ["red", "blue", "red", "blue", "green", "green", None]
    records = [{"color": c, "once": f"v{i % 6}", "wide": f"w{i}"} for i, c in enumerate(colors)]
    props = infer_schema(records, "t")["properties"]
    assert props["color"]["enum"] == ["blue", "green", "red", None]  # nullable: null is an option
    assert "enum" not in props["once"]  # v0 is seen twice, v1..v5 once
    assert "enum" not in props["wide"] and (props["wide"]["minLength"], props["wide"]["maxLength"]) == (2, 2)
    assert props["wide"]["pattern"] == "^[a-z0-9]*$"
    tight = infer_schema(records, "t", InferSettings(max_enum=2))["properties"]
    assert "enum" not in tight["color"] and tight["color"]["maxLength"] == 5
    loose = infer_schema(records, "t", InferSettings(min_enum_count=1))["properties"]
    assert loose["once"]["enum"] == [f"v{i}" for i in range(6)]
    assert "enum" not in infer_schema([{"n": 1}, {"n": 1}, {"n": "a"}, {"n": "a"}], "t")["properties"]["n"]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["2012-01-01", "1999-12-31"], "date"),
        (["2012-01-01T10:00:00Z", "2012-01-01T10:00:00.5+02:00"], "date-time"),
        (["a@example.com", "b.c@mail.example.org"], "email"),
        (["123e4567-e89b-12d3-a456-426614174000", "00000000-0000-4000-8000-000000000000"], "uuid"),
        (["https://example.com/a?b=1", "ftp://host/file"], "uri"),
        (["2012-01-01", "2012-02-30"], None),  # no 30 February: the format checker refuses it
        (["2012-01-01T10:00:00", "2012-01-01T11:00:00"], None),  # no time zone: not RFC 3339
        (["a@example.com", "not an email"], None),  # every value must match
    ],
)
def test_a_format_is_given_only_when_every_value_has_it(values: list[str], expected: str | None) -> None:
    records = [{"v": v} for v in values] + [{"v": None}]
    prop = infer_schema(records, "t", InferSettings(max_enum=0))["properties"]["v"]
    assert prop.get("format") == expected
    assert_validates(infer_schema(records, "t"), records)


def test_free_text_gets_lengths_and_a_pattern_of_the_characters_seen() -> None:
    records = [{"v": v} for v in ["O'Brien-Smith [x]", "a\\b^c", "Zoë"]]
    assert "pattern" not in infer_schema(records, "t")["properties"]["v"]  # ë is not ASCII
    prop = infer_schema(records[:2], "t")["properties"]["v"]
    assert prop["pattern"] == r"^[A-Za-z '\-\[\\\]\^]*$" and (prop["minLength"], prop["maxLength"]) == (5, 17)
    assert_validates(infer_schema(records[:2], "t"), records[:2])
    assert not load_schema(infer_schema(records[:2], "t")).is_valid({"v": "abc1"})


def test_sensitive_columns_are_guessed_by_name_and_by_values() -> None:
    records = [
        {
            "firstName": "Ann", "Email": "x", "phone_number": "1", "street_address": "x", "lat": 1.0,
            "user_id": 7, "contact": f"p{i}@example.com", "reach": "+1 (555) 010-2030",
            "home": f"{i + 10} Oak Street", "token": "123e4567-e89b-12d3-a456-426614174000",
            "day": "2012-01-01", "city": "Paris", "count": 3, "hostname": "h",
        }
        for i in range(5)
    ]  # fmt: skip
    guesses = {g.column: (g.kind, g.evidence) for g in guess_sensitive(records)}
    assert guesses == {
        "firstName": ("name", "column name"),
        "Email": ("email", "column name"),
        "phone_number": ("phone", "column name"),
        "street_address": ("address", "column name"),
        "lat": ("coordinates", "column name"),
        "user_id": ("identifier", "column name"),
        "contact": ("email", "values look like emails"),
        "reach": ("phone", "values look like phone numbers"),
        "home": ("address", "values look like street addresses"),
        "token": ("identifier", "values look like uuids"),
    }


def test_the_split_is_seeded_and_keeps_the_table_order() -> None:
    records = [{"i": i} for i in range(10)]
    reference, held = split_rows(records, 0.2, seed=3)
    assert (
        len(reference) == 8 and len(held) == 2 and sorted(reference + held, key=lambda r: r["i"]) == records
    )
    assert [r["i"] for r in reference] == sorted(r["i"] for r in reference)
    assert split_rows(records, 0.2, seed=3) == (reference, held) != split_rows(records, 0.2, seed=4)
    assert split_rows(records, 0.0) == (records, [])


def test_the_written_spec_loads_and_its_rows_validate(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "people.jsonl", [{"email": f"p{i}@example.com", "n": i} for i in range(10)]
    )
    result = init_partition(str(source), str(tmp_path / "out"))
    spec = load_spec(tmp_path / "out" / "partitions.yaml")
    (partition,) = spec.partitions
    assert (partition.name, partition.rows, partition.sensitive) == ("people", 10, ("email",))
    assert (result.reference_rows, result.holdout_rows) == (8, 2)
    reference, held = load_reference(partition), load_reference(partition, holdout=True)
    assert sorted(r["n"] for r in reference + held) == list(range(10))
    assert_validates(load_schema(partition.schema_path).contents, reference + held)
    text = (tmp_path / "out" / "partitions.yaml").read_text()
    assert "notes: >-\n      TODO:" in text and "- email  # CHECK: email (column name)" in text
    again = init_partition(str(source), str(tmp_path / "out"), name="p2", holdout=0, rows=3, force=True)
    raw = yaml.safe_load((tmp_path / "out" / "partitions.yaml").read_text())["partitions"][0]
    assert again.holdout_path is None and "holdout" not in raw and raw["rows"] == 3 and raw["name"] == "p2"


def test_a_table_and_an_out_folder_given_by_uri(tmp_path: Path) -> None:
    root = f"memory://{tmp_path.name}"  # fsspec's in-memory filesystem, unique to this test
    storage.write_text(f"{root}/in/t.csv", "a,b\n1,x\n2,y\n3,z\n4,w\n5,v\n")
    result = init_partition(f"{root}/in/t.csv", f"{root}/out")
    assert result.spec_path == f"{root}/out/partitions.yaml" and result.reference_rows == 4
    (partition,) = load_spec(result.spec_path).partitions
    assert partition.reference_path == f"{root}/out/data/t_reference.jsonl"


def test_a_column_name_yaml_must_quote_survives_the_spec(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "t.jsonl", [{"#name: 'x'": f"v{i}", "n": i} for i in range(4)])
    init_partition(str(source), str(tmp_path / "out"))
    (partition,) = load_spec(tmp_path / "out" / "partitions.yaml").partitions
    assert partition.sensitive == ("#name: 'x'",)


def test_init_prints_what_it_wrote_and_the_guesses(
    tmp_path: Path, aod: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    source = EXAMPLES / "data" / "la-riots_reference.jsonl"
    assert aod("init", "--from", source, "--name", "riots", "--out", tmp_path) == 0
    out = capsys.readouterr().out
    assert "riots: 40 rows, 11 columns" in out and f"spec:      {tmp_path / 'partitions.yaml'}" in out
    assert "  first_name: name (column name)" in out and "  latitude: coordinates (column name)" in out


@pytest.mark.parametrize("table", ["airports", "cars", "la-riots", "seattle-weather"])
def test_each_example_tables_schema_validates_every_row(tmp_path: Path, table: str) -> None:
    data = EXAMPLES / "data"
    path = tmp_path / f"{table}.jsonl"
    path.write_text(
        (data / f"{table}_reference.jsonl").read_text() + (data / f"{table}_holdout.jsonl").read_text()
    )
    result = init_partition(str(path), str(tmp_path / "out"))
    assert_validates(json.loads(Path(result.schema_path).read_text()), read_table(path))
    assert load_spec(result.spec_path).partitions[0].rows == result.table_rows


@pytest.mark.integration
def test_aod_run_completes_on_an_example_tables_init_output(tmp_path: Path, aod: Callable[..., int]) -> None:
    source = EXAMPLES / "data" / "la-riots_reference.jsonl"
    assert aod("init", "--from", source, "--name", "riots", "--out", tmp_path / "init") == 0
    run = ["--model", "tiny-random", "--rounds", "1", "--candidates", "2", "--rows", "4"]
    assert aod("run", "--spec", tmp_path / "init" / "partitions.yaml", "--out", tmp_path / "run", *run) == 0
    assert list((tmp_path / "run" / "tables" / "riots" / "data").glob("*.parquet"))


def _bad_tables(tmp: Path) -> dict[str, tuple[Path, str]]:
    (tmp / "empty.jsonl").write_text("\n")
    (tmp / "header.csv").write_text("a,b\n")
    (tmp / "t.xlsx").write_text("x")
    (tmp / "index.csv").write_text(",a\n0,1\n")
    (tmp / "twice.csv").write_text("a,b,a\n1,2,3\n")
    write_jsonl(tmp / "clash.jsonl", [{"record_id": 1, "_aod_model": "x"}])
    write_jsonl(tmp / "blank.jsonl", [{}, {}])
    (tmp / "broken.jsonl").write_text('{"a": 1}\n{"a": \n')
    return {
        "missing": (tmp / "nope.csv", "nope.csv: file not found"),
        "suffix": (tmp / "t.xlsx", "unsupported table format (use .jsonl, .ndjson, .csv, .parquet)"),
        "empty": (tmp / "empty.jsonl", "the table has no rows"),
        "header only": (tmp / "header.csv", "the table has no rows"),
        "no columns": (tmp / "blank.jsonl", "the table has no columns"),
        "unnamed column": (tmp / "index.csv", "column 1 has no name (a pandas index?"),
        "repeated column": (tmp / "twice.csv", "column names appear twice: 'a'"),
        "clash": (
            tmp / "clash.jsonl",
            "columns '_aod_model' start with '_aod_', the prefix of the output's provenance columns",
        ),
        "bad json": (tmp / "broken.jsonl", "line 2: not valid JSON"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "suffix",
        "empty",
        "header only",
        "no columns",
        "unnamed column",
        "repeated column",
        "clash",
        "bad json",
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, aod: Callable[..., int], capsys: pytest.CaptureFixture[str], case: str
) -> None:
    path, message = _bad_tables(tmp_path)[case]
    assert aod("init", "--from", path, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith("aod init: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_bad_name_or_files_in_the_way_exit_2(
    tmp_path: Path, aod: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(tmp_path / "t.jsonl", [{"n": i} for i in range(3)])
    assert aod("init", "--from", source, "--name", "a b", "--out", tmp_path / "out") == 2
    assert "partition name 'a b' must be letters, digits" in capsys.readouterr().err
    assert aod("init", "--from", source, "--out", tmp_path / "out") == 0
    assert aod("init", "--from", source, "--out", tmp_path / "out") == 2
    assert "partitions.yaml exists (use another --out, or --force to replace it)" in capsys.readouterr().err
    assert aod("init", "--from", source, "--out", tmp_path / "out", "--force") == 0
