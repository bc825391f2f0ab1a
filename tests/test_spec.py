"""The partition spec: the shipped examples load, settings merge, and bad specs fail precisely."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from aod_ops.errors import DataError, SpecError
from aod_ops.metrics import canonical_json
from aod_ops.records import MAX_RECORD_DEPTH, read_records
from aod_ops.spec import MAX_SPEC_DEPTH, MAX_SPEC_VALUES, AgentSetting, DLMSetting, load_reference, load_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_examples_load_with_defaults_and_overrides_merged() -> None:
    spec = load_spec(EXAMPLES / "partitions.yaml")
    by_name = {p.name: p for p in spec.partitions}
    assert list(by_name) == ["cars", "airports", "la-riots", "seattle-weather"]
    riots = by_name["la-riots"]
    assert riots.sensitive == ("first_name", "last_name", "address", "longitude", "latitude")
    assert riots.loop.candidates == 8 and riots.loop.rounds == 5  # one field overridden, the rest default
    weather = by_name["seattle-weather"]
    assert weather.decoding.temperature == 0.9 and weather.decoding.steps == 16
    assert weather.decoding.cache  # the dual cache is on unless a spec turns it off
    assert by_name["cars"].decoding.temperature == 0.8
    assert by_name["cars"].agent == AgentSetting()  # "local"
    assert by_name["cars"].schema_path == (EXAMPLES / "schemas" / "cars.json").resolve()
    assert spec.select("airports") == (by_name["airports"],)
    # The field-overlap gate: 0.3 unless a partition sets its own (cars: small-domain numbers).
    assert by_name["airports"].thresholds.max_field_overlap == 0.3
    assert [r.text for r in by_name["cars"].rules] == ["Displacement >= 15 * Cylinders"]


@pytest.mark.parametrize("name", ["cars", "airports", "la-riots", "seattle-weather"])
def test_example_reference_and_holdout_are_disjoint_extracts(name: str) -> None:
    (partition,) = load_spec(EXAMPLES / "partitions.yaml").select(name)
    reference = load_reference(partition)
    holdout = load_reference(partition, holdout=True)
    assert len(reference) >= 40 and len(holdout) >= 20
    assert not {canonical_json(r) for r in reference} & {canonical_json(r) for r in holdout}


def test_select_unknown_partition_lists_the_names() -> None:
    spec = load_spec(EXAMPLES / "partitions.yaml")
    with pytest.raises(SpecError, match=r"no partition named 'boats' \(partitions: cars, airports"):
        spec.select("boats")


def _spec(tmp_path: Path, partition: dict[str, Any], defaults: dict[str, Any] | None = None) -> Path:
    """A spec in ``tmp_path`` with the cars schema and reference beside it."""
    shutil.copy(EXAMPLES / "schemas" / "cars.json", tmp_path / "cars.json")
    shutil.copy(EXAMPLES / "data" / "cars_reference.jsonl", tmp_path / "cars.jsonl")
    base = {"name": "cars", "schema": "cars.json", "reference": "cars.jsonl", "rows": 10}
    doc = {"defaults": defaults or {}, "partitions": [{**base, **partition}]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("partition", "field", "problem"),
    [
        ({"colour": "red"}, "colour", "unknown field"),
        ({"schema": "missing.json"}, "schema", "file not found"),
        ({"reference": "cars.txt"}, "reference", "file not found"),
        ({"rows": 0}, "rows", "must be at least 1"),
        ({"rows": "many"}, "rows", "must be int, got 'many'"),
        ({"rows": True}, "rows", "must be int, got True"),
        ({"sensitive": ["Owner"]}, "sensitive", "'Owner' is not a top-level property of cars.json"),
        ({"sensitive": "Name"}, "sensitive", "must be a list"),
        ({"loop": {"rounds": "five"}}, "loop.rounds", "must be int"),
        ({"loop": {"round": 5}}, "loop.round", "unknown field"),
        ({"loop": {"target_reward": 2}}, "loop", "target_reward must be between 0 and 1"),
        ({"decoding": {"mode": "greedy"}}, "decoding.mode", "must be one of 'skeleton', 'free'"),
        ({"decoding": {"temperature": -1}}, "decoding", "temperature must be between 0"),
        ({"decoding": {"cache": "no"}}, "decoding.cache", "must be bool, got 'no'"),
        ({"agent": {"base_url": "http://localhost:8000"}}, "agent", "needs 'model'"),
        ({"agent": {"model": "x"}}, "agent", "need 'base_url'"),
        ({"dlm": {"base_url": "http://sglang:30000"}}, "dlm", "needs 'model' beside 'base_url'"),
        ({"dlm": {"model": "x", "api_key_env": "KEY"}}, "dlm", "'api_key_env' needs 'base_url'"),
        (
            {"dlm": {"base_url": "http://s:30000", "model": "x", "trust_remote_code": True}},
            "dlm",
            "'trust_remote_code' is for a local model",
        ),
        (
            {"dlm": {"base_url": "http://s:30000", "model": "x", "timeout": 0}, "decoding": {"mode": "free"}},
            "dlm",
            "timeout must be positive",
        ),
        (
            {"dlm": {"base_url": "http://s:30000", "model": "x"}},
            "dlm",
            "a DLM server (http://s:30000) writes free mode only, and decoding.mode is 'skeleton': "
            "set decoding: {mode: free}",
        ),
        ({"name": "bad name!"}, "name", "must be letters, digits"),
        ({"max_field_overlap": 1.5}, "max_field_overlap", "must be a number between 0 and 1, got 1.5"),
        ({"max_field_overlap": "high"}, "max_field_overlap", "must be a number between 0 and 1"),
        ({"agent_fallback": "ignore"}, "agent_fallback", "must be one of 'error', 'editor', got 'ignore'"),
        ({"invalid_rows": "drop"}, "invalid_rows", "must be one of 'error', 'skip', got 'drop'"),
    ],
)
def test_bad_partition_field_names_file_partition_and_field(
    tmp_path: Path, partition: dict[str, Any], field: str, problem: str
) -> None:
    path = _spec(tmp_path, partition)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert str(path) in message
    assert "partition '" in message
    assert f"field {field!r}" in message
    assert problem in message


def test_bad_default_is_reported_under_defaults(tmp_path: Path) -> None:
    path = _spec(tmp_path, {}, defaults={"loop": {"patience": 0}})
    with pytest.raises(SpecError, match=r"spec.yaml: defaults: field 'loop': patience must be at least 1"):
        load_spec(path)
    path = _spec(tmp_path, {}, defaults={"model": "x"})
    with pytest.raises(SpecError, match=r"defaults: field 'model': unknown field"):
        load_spec(path)


def test_missing_field_and_unnamed_partition(tmp_path: Path) -> None:
    path = _spec(tmp_path, {"name": None})
    with pytest.raises(SpecError, match=r"partitions\[0\]: field 'name': must be str"):
        load_spec(path)
    doc = yaml.safe_load(path.read_text())
    del doc["partitions"][0]["rows"]
    doc["partitions"][0]["name"] = "cars"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match=r"partition 'cars': field 'rows': missing"):
        load_spec(path)


def test_duplicate_partition_names_fail(tmp_path: Path) -> None:
    path = _spec(tmp_path, {})
    doc = yaml.safe_load(path.read_text())
    doc["partitions"].append(dict(doc["partitions"][0]))
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match=r"partition 'cars': field 'name': duplicate partition name"):
        load_spec(path)


def test_unreadable_reference_fails_at_load_with_its_line(tmp_path: Path) -> None:
    path = _spec(tmp_path, {})
    with (tmp_path / "cars.jsonl").open("a") as handle:
        handle.write('{"Name": "broken"\n')
    with pytest.raises(
        SpecError, match=r"partition 'cars': field 'reference': .*cars.jsonl: line 201: not valid JSON"
    ):
        load_spec(path)


def test_broken_schema_fails_at_load(tmp_path: Path) -> None:
    path = _spec(tmp_path, {})
    (tmp_path / "cars.json").write_text('{"type": "object", "properties": ')
    with pytest.raises(SpecError, match=r"partition 'cars': field 'schema'"):
        load_spec(path)


def test_unsupported_reference_format(tmp_path: Path) -> None:
    path = _spec(tmp_path, {"reference": "cars.xlsx"})
    (tmp_path / "cars.xlsx").write_text("x")
    with pytest.raises(SpecError, match=r"field 'reference': cars.xlsx: unsupported format"):
        load_spec(path)


def test_spec_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope.yaml: cannot read the spec"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("partitions: [\n")
    with pytest.raises(SpecError, match=r"bad.yaml: not valid YAML"):
        load_spec(bad)
    bad.write_text("partitions: []\n")
    with pytest.raises(SpecError, match=r"bad.yaml: spec: field 'partitions': must be a non-empty list"):
        load_spec(bad)


def test_endpoint_agent_and_dlm_mapping(tmp_path: Path) -> None:
    agent = {"base_url": "http://127.0.0.1:8000", "model": "qwen", "api_key_env": "KEY", "timeout": 5}
    path = _spec(tmp_path, {"dlm": {"model": "llada", "trust_remote_code": True}}, defaults={"agent": agent})
    (partition,) = load_spec(path).partitions
    assert partition.agent == AgentSetting(
        base_url="http://127.0.0.1:8000", model="qwen", api_key_env="KEY", timeout=5.0
    )
    assert partition.dlm.model == "llada" and partition.dlm.trust_remote_code
    assert partition.agent_fallback == "error" and partition.invalid_rows == "error"  # the defaults


def test_a_dlm_server_in_free_mode_is_a_dlm_setting(tmp_path: Path) -> None:
    server = {"base_url": "http://sglang:30000", "model": "LLaDA2.0-mini", "api_key_env": "KEY", "retries": 1}
    # The defaults may name the server before a partition chooses free mode: the partition is checked.
    path = _spec(tmp_path, {"decoding": {"mode": "free"}}, defaults={"dlm": server})
    (partition,) = load_spec(path).partitions
    assert partition.dlm == DLMSetting(
        model="LLaDA2.0-mini", base_url="http://sglang:30000", api_key_env="KEY", retries=1
    )
    assert partition.dlm.timeout == 120.0


def test_agent_fallback_and_invalid_rows_are_settings_a_partition_overrides(tmp_path: Path) -> None:
    path = _spec(
        tmp_path, {"invalid_rows": "error"}, defaults={"agent_fallback": "editor", "invalid_rows": "skip"}
    )
    (partition,) = load_spec(path).partitions
    assert partition.agent_fallback == "editor" and partition.invalid_rows == "error"


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "count": {"type": "integer"},
        "price": {"type": "number"},
        "active": {"type": "boolean"},
        "note": {"type": ["string", "null"]},
        "score": {"type": ["number", "null"]},
        "code": {"type": ["integer", "string"]},
    },
}


def test_csv_cells_are_typed_by_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "ref.csv"
    path.write_text("name,count,price,active,note,score,code\nab,3,2.5,true,,,7\n42,-1,3,False,hi,,X1\n")
    assert read_records(path, SCHEMA) == [
        # An empty cell is no value: null where the type allows it, else left out.
        {"name": "ab", "count": 3, "price": 2.5, "active": True, "note": None, "score": None, "code": 7},
        {"name": "42", "count": -1, "price": 3.0, "active": False, "note": "hi", "score": None, "code": "X1"},
    ]


def test_csv_cell_of_the_wrong_type_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "ref.csv"
    path.write_text("name,count\nab,3\ncd,three\n")
    with pytest.raises(DataError, match=r"ref.csv: line 3: column 'count': 'three' is not integer"):
        read_records(path, SCHEMA)
    path.write_text("name,count\nab,3,4\n")
    with pytest.raises(DataError, match=r"line 2: more cells than header columns"):
        read_records(path, SCHEMA)


def test_parquet_reference_becomes_json_values(tmp_path: Path) -> None:
    import datetime as dt
    from decimal import Decimal

    table = pa.table(
        {
            "name": ["a", "b"],
            "day": [dt.date(2020, 1, 2), dt.date(2021, 3, 4)],
            "price": pa.array([Decimal("1.50"), Decimal("2.25")], pa.decimal128(5, 2)),
            "tags": [["x"], []],
        }
    )
    path = tmp_path / "ref.parquet"
    pq.write_table(table, path)
    records = read_records(path, {"type": "object"})
    assert records == [
        {"name": "a", "day": "2020-01-02", "price": 1.5, "tags": ["x"]},
        {"name": "b", "day": "2021-03-04", "price": 2.25, "tags": []},
    ]
    json.dumps(records)  # plain JSON values
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"bad.parquet: not a readable Parquet file"):
        read_records(tmp_path / "bad.parquet", {})


WEATHER = {
    "type": "object",
    "properties": {
        "date": {"type": "string", "format": "date"},
        "weather": {"enum": ["sun", "rain", "snow"]},
        "temp_max": {"type": "number"},
        "station": {"type": "string"},
    },
    "required": ["date", "weather", "temp_max", "station"],
    "additionalProperties": False,
}
GOOD_ROWS = "".join(f"2015-01-{day:02d},sun,{day}.5,SEA\n" for day in range(1, 9))


def _weather(tmp_path: Path, rows: str, holdout: str | None = None, **partition: Any) -> Path:
    """A spec with the weather schema and CSV reference ``rows`` (after the header, on line 2)."""
    (tmp_path / "weather.json").write_text(json.dumps(WEATHER))
    header = "date,weather,temp_max,station\n"
    (tmp_path / "weather.csv").write_text(header + rows)
    entry = {"name": "weather", "schema": "weather.json", "reference": "weather.csv", "rows": 10, **partition}
    if holdout is not None:
        (tmp_path / "holdout.csv").write_text(header + holdout)
        entry["holdout"] = "holdout.csv"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"partitions": [entry]}))
    return path


BAD_ROWS = "2015-02-01,hail,3.0,SEA\nyesterday,rain,4.0,SEA\n2015-02-03,snow,1.0,\n"


def test_reference_rows_that_break_the_schema_are_refused_with_file_line_pointer_and_reason(
    tmp_path: Path,
) -> None:
    path = _weather(tmp_path, GOOD_ROWS.split("\n", 1)[0] + "\n" + BAD_ROWS + GOOD_ROWS.split("\n", 1)[1])
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    csv = tmp_path / "weather.csv"
    assert "\n" not in message
    assert message.startswith(f"{path}: partition 'weather': field 'reference': {csv}: 3 of 11 rows break")
    head, listed = message.split("leave them out): ")
    assert "invalid_rows: skip" in head
    assert listed.split("; ") == [
        "weather.csv line 3 at /weather: 'hail' is not one of ['sun', 'rain', 'snow']",
        "weather.csv line 4 at /date: 'yesterday' is not a 'date'",
        "weather.csv line 5 at /: 'station' is a required property",  # the empty cell
    ]


def test_many_bad_rows_show_the_first_few_and_a_count(tmp_path: Path) -> None:
    rows = "".join(f"2015-03-{day:02d},hail,1.0,SEA\n" for day in range(1, 21))
    path = _weather(tmp_path, GOOD_ROWS + rows)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert "20 of 28 rows break the schema" in message and "\n" not in message
    listed = message.split("leave them out): ")[1].split("; ")
    assert len(listed) == 6 and listed[-1] == "and 15 more problems"


def test_holdout_rows_are_checked_too(tmp_path: Path) -> None:
    path = _weather(tmp_path, GOOD_ROWS, holdout="2016-01-01,sun,cold,SEA\n2016-01-02,sun,1,SEA\n")
    with pytest.raises(SpecError, match=r"field 'holdout': .*holdout.csv: line 2: column 'temp_max': 'cold'"):
        load_spec(path)
    path = _weather(tmp_path, GOOD_ROWS, holdout="2016-01-01,fog,1.0,SEA\n2016-01-02,sun,1,SEA\n")
    with pytest.raises(
        SpecError, match=r"field 'holdout': .*1 of 2 rows break.*: holdout.csv line 2 at /weather"
    ):
        load_spec(path)


def test_invalid_rows_skip_leaves_them_out_with_a_one_line_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _weather(tmp_path, GOOD_ROWS + BAD_ROWS, invalid_rows="skip")
    with caplog.at_level(logging.WARNING, logger="aod_ops.spec"):
        (partition,) = load_spec(path).partitions
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in warning
    assert warning.startswith(
        f"{tmp_path / 'weather.csv'}: warning: left out 3 of 11 rows that break the schema"
    )
    assert (
        "line 10 at /weather: 'hail'" in warning
        and "line 12 at /: 'station' is a required property" in warning
    )
    reference = load_reference(partition)
    assert len(reference) == 8 and {r["weather"] for r in reference} == {"sun"}


def test_a_reference_with_no_valid_row_fails_even_when_skipping(tmp_path: Path) -> None:
    path = _weather(tmp_path, BAD_ROWS, invalid_rows="skip")
    with pytest.raises(
        SpecError, match=r"field 'reference': weather.csv holds no records that fit the schema"
    ):
        load_spec(path)


def test_load_reference_refuses_rows_broken_after_the_spec_was_loaded(tmp_path: Path) -> None:
    path = _weather(tmp_path, GOOD_ROWS)
    (partition,) = load_spec(path).partitions
    with (tmp_path / "weather.csv").open("a") as handle:
        handle.write("2015-02-01,hail,3.0,SEA\n")
    with pytest.raises(DataError, match=r"weather.csv: 1 of 9 rows break the schema"):
        load_reference(partition)


def _alias_bomb() -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\npartitions: *a8\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (_alias_bomb(), f"more than {MAX_SPEC_VALUES} values (YAML aliases expanded), the limit for a spec"),
        ("defaults: &d {loop: *d}\n", f"nested deeper than {MAX_SPEC_DEPTH} levels (YAML aliases followed)"),
        (
            "partitions: " + "[" * 10_000 + "]" * 10_000,
            f"nested deeper than {MAX_SPEC_DEPTH} levels, the limit",
        ),
        ("".join("  " * i + f"k{i}:\n" for i in range(100)), f"nested deeper than {MAX_SPEC_DEPTH} levels"),
        ("defaults: {seed: " + "9" * 6000 + "}\n", "not valid YAML: Exceeds the limit (4300 digits)"),
        ("!!python/object/apply:os.system [echo hi]\n", "could not determine a constructor"),
        ("partitions:\n\t- name: x\n", "not valid YAML: line 2, column 1: found character '\\t'"),
        ("- just\n- a list\n", "a spec is a mapping with 'defaults' and 'partitions'"),
        ("defaults: {rows: " + "x" * 100_000 + "}\n", "field 'rows': unknown field"),
        (
            "defaults: {seed: [" + "1, " * 50_000 + "1]}\npartitions: []\n",
            "field 'seed': must be int, got [1, 1",
        ),
    ],
)
def test_hostile_yaml_is_a_one_line_spec_error_naming_the_limit(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and problem in message
    assert "\n" not in message and len(message) < 400


def test_huge_and_binary_spec_files_are_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    with path.open("wb") as handle:
        handle.truncate(100 * 2**20)  # 100 MB (sparse): only the first MiB is ever read
    with pytest.raises(SpecError, match=r"spec.yaml: larger than 1 MiB, the limit for a spec$"):
        load_spec(path)
    path.write_bytes(b"partitions: [\xff\xfe]\n")
    with pytest.raises(SpecError, match=r"spec.yaml: not UTF-8 text \(byte 13\)$"):
        load_spec(path)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", f"nested deeper than {MAX_RECORD_DEPTH} levels"),
        ('{"a": ' + "[" * 150 + "]" * 150 + "}", f"nested deeper than {MAX_RECORD_DEPTH} levels"),
        ('{"a": ' + "9" * 5000 + "}", "not valid JSON: Exceeds the limit (4300 digits)"),
    ],
)
def test_hostile_jsonl_lines_are_a_one_line_data_error_naming_file_and_line(
    tmp_path: Path, line: str, problem: str
) -> None:
    path = tmp_path / "ref.jsonl"
    path.write_text('{"a": 1}\n' + line + "\n")
    with pytest.raises(DataError) as caught:
        read_records(path, {})
    message = str(caught.value)
    assert message.startswith(f"{path}: line 2: ") and problem in message
    assert "\n" not in message and len(message) < 300


def test_unreadable_csv_is_a_data_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "ref.csv"
    path.write_text("name,count\nab,3\n" + "x" * 200_000 + ",4\n")
    with pytest.raises(DataError, match=r"ref.csv: line 3: not readable CSV: field larger than field limit"):
        read_records(path, SCHEMA)


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    path = tmp_path / "ref.csv"
    path.write_text("\ufeffcount,name\n3,ab\n", encoding="utf-8")
    assert read_records(path, SCHEMA) == [{"count": 3, "name": "ab"}]
