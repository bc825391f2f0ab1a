"""Validating a partition's Parquet with a real GX checkpoint and the privacy gates.

Each defect is written into a real Parquet partition and shown to fail the expectation or gate
that should catch it, named with its column. GX is imported once for the module.
"""

import hashlib
import json
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aod_ops.cli import main
from aod_ops.errors import DataError
from aod_ops.metrics import canonical_json
from aod_ops.quality import ValidationFailed, ValidationSummary, gx_adapter, validate_partition
from aod_ops.rules import parse_rules
from aod_ops.schema import arrow_schema, load_schema, to_arrow_row

FIXTURES = Path(__file__).parent / "fixtures" / "quality"

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["name", "age", "plan", "ssn", "address"],
    "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 20, "pattern": "^[A-Z][a-z]+$"},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "plan": {"enum": ["basic", "pro"]},
        "ssn": {"type": "string", "pattern": "^[0-9]{3}-[0-9]{2}-[0-9]{4}$", "x-aod-sensitive": True},
        "address": {"$ref": "#/$defs/address"},
        "since": {"type": "string", "format": "date"},
    },
    "$defs": {
        "address": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}
    },
}


def person(name: str, age: Any, plan: str, ssn: str, city: str) -> dict[str, Any]:
    return {"name": name, "age": age, "plan": plan, "ssn": ssn, "address": {"city": city}}


REFERENCE = [
    person("Alice", 34, "basic", "101-11-1111", "Lyon"),
    person("Bruno", 45, "pro", "202-22-2222", "Porto"),
    person("Chiara", 29, "basic", "303-33-3333", "Turin"),
    person("Dmitri", 52, "pro", "404-44-4444", "Riga"),
    person("Elena", 61, "basic", "505-55-5555", "Seville"),
    person("Farid", 38, "pro", "606-66-6666", "Ghent"),
]
# Novel in every non-choice leaf: no copy, no overlap, far from every reference row.
GOOD = [
    person("Gustav", 23, "basic", "711-00-0001", "Bergen"),
    person("Hanna", 27, "pro", "722-00-0002", "Graz"),
    person("Ivo", 31, "basic", "733-00-0003", "Split"),
    person("Jana", 41, "pro", "744-00-0004", "Brno"),
    person("Karl", 48, "basic", "755-00-0005", "Kiel"),
    person("Lena", 56, "pro", "766-00-0006", "Tartu"),
    person("Milo", 67, "basic", "777-00-0007", "Bari"),
    person("Nora", 72, "pro", "788-00-0008", "Aarhus"),
]

CONTRACT = pa.schema(
    [
        ("_aod_record_id", pa.string()),
        ("_aod_partition", pa.string()),
        ("_aod_record", pa.string()),
        ("_aod_prompt_version", pa.string()),
        ("_aod_model", pa.string()),
        ("_aod_seed", pa.int64()),
        ("_aod_created_at", pa.timestamp("us", tz="UTC")),
    ]
)
COLUMNS = arrow_schema(load_schema(SCHEMA))  # the typed columns of the top-level properties


def record_id(record: Any) -> str:
    return hashlib.sha256(canonical_json(record).encode()).hexdigest()[:16]


def write_partition(
    folder: Path,
    records: list[dict[str, Any]],
    ids: list[str] | None = None,
    files: int = 1,
    texts: dict[int, str] | None = None,
) -> Path:
    """Write records as the output contract's Parquet dataset (``files`` Parquet files).

    ``texts`` replaces the ``record`` text of the rows at those positions.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ids = ids or [record_id(record) for record in records]
    texts = texts or {}
    rows = [
        {
            "_aod_record_id": rid,
            "_aod_partition": "people",
            "_aod_record": texts.get(position, json.dumps(record)),
            # A value of the wrong type cannot sit in its typed column: it is null there.
            **to_arrow_row(COLUMNS, record if isinstance(record["age"], int) else {**record, "age": None}),
            "_aod_prompt_version": "v3",
            "_aod_model": "aod-smol-dlm",
            "_aod_seed": 7,
            "_aod_created_at": datetime(2026, 1, 2, tzinfo=UTC),
        }
        for position, (rid, record) in enumerate(zip(ids, records, strict=True))
    ]
    size = -(-len(rows) // files)
    for part in range(files):
        chunk = rows[part * size : (part + 1) * size]
        table = pa.Table.from_pylist(chunk, schema=pa.unify_schemas([CONTRACT, COLUMNS]))
        pq.write_table(table, folder / f"part-{part}.parquet")
    return folder


def validate(folder: Path, target_rows: int = len(GOOD), **kwargs: Any) -> ValidationSummary:
    return validate_partition(folder, SCHEMA, REFERENCE, target_rows, **kwargs)


def failures(summary: ValidationSummary) -> set[tuple[str, str | None]]:
    return {(outcome.expectation, outcome.column) for outcome in summary.failed}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ValidationSummary]:
    """A good partition of two Parquet files and a quarantine sub-folder, validated with Data Docs."""
    folder = write_partition(tmp_path_factory.mktemp("good") / "people", GOOD, files=2)
    (folder / "quarantine").mkdir()
    (folder / "quarantine" / "rejects.parquet").write_bytes(b"not read: sub-folders are left out")
    docs = folder.parent / "docs"
    return folder, validate(folder, docs_dir=docs)


def test_a_good_partition_passes_every_expectation_and_gate(good: tuple[Path, ValidationSummary]) -> None:
    _, summary = good
    assert summary.success, summary.failed
    assert summary.rows == 8 and summary.unparsed_records == 0
    assert summary.partition == "people"
    kinds = {outcome.expectation for outcome in summary.outcomes}
    assert {
        "expect_column_values_to_match_record_schema",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_match_schema_pattern",
        "expect_column_value_lengths_to_be_between",
        "expect_column_values_to_be_unique",
        "expect_table_columns_to_be_in_set",
        "expect_table_row_count_to_be_between",
        "exact_match_rate",
        "field_overlap",
        "dcr_p5",
        "sensitive:ssn",
    } <= kinds
    # The plan enum is a choice leaf: field overlap counts name, age, ssn and city, none copied.
    assert summary.privacy.check("field_overlap").value == 0.0
    assert summary.as_dict()["failed"] == []


def test_results_are_written_beside_the_data(good: tuple[Path, ValidationSummary]) -> None:
    folder, summary = good
    result = json.loads((folder / "validation_result.json").read_text())
    assert result["success"] is True
    assert len(result["results"]) == sum(outcome.source != "privacy" for outcome in summary.outcomes)
    privacy = json.loads((folder / "privacy_report.json").read_text())
    assert privacy["passed"] is True
    assert {check["name"] for check in privacy["checks"]} == {
        "exact_match_rate",
        "field_overlap",
        "dcr_p5",
        "sensitive:ssn",
    }
    assert summary.docs_path is not None and Path(summary.docs_path).is_file()
    assert "<html" in Path(summary.docs_path).read_text().lower()


def with_record(position: int, **changes: Any) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    def change(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        records[position] = {**records[position], **changes}
        return records

    return change


CASES: dict[
    str, tuple[Callable[[list[dict[str, Any]]], list[dict[str, Any]]], set[tuple[str, str | None]]]
] = {
    "wrong type": (
        with_record(0, age="forty"),
        {
            ("expect_column_values_to_match_record_schema", "_aod_record"),
            ("expect_column_values_to_not_be_null", "age"),
        },
    ),
    "out of range": (
        with_record(1, age=150),
        {
            ("expect_column_values_to_match_record_schema", "_aod_record"),
            ("expect_column_values_to_be_between", "age"),
        },
    ),
    "not in the enum": (
        with_record(2, plan="gold"),
        {
            ("expect_column_values_to_match_record_schema", "_aod_record"),
            ("expect_column_values_to_be_in_set", "plan"),
        },
    ),
    "pattern": (
        with_record(3, name="jana"),
        {
            ("expect_column_values_to_match_record_schema", "_aod_record"),
            ("expect_column_values_to_match_schema_pattern", "name"),
        },
    ),
    "too long": (
        with_record(4, name="Karlheinzbartholomew" + "x"),
        {
            ("expect_column_values_to_match_record_schema", "_aod_record"),
            ("expect_column_value_lengths_to_be_between", "name"),
        },
    ),
    # Formats are checked, as everywhere in aod_ops (GX's own JSON Schema metric does not).
    "bad date": (
        with_record(6, since="2024-13-45"),
        {("expect_column_values_to_match_record_schema", "_aod_record")},
    ),
    "sensitive value copied": (with_record(5, ssn=REFERENCE[0]["ssn"]), {("sensitive:ssn", "ssn")}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_defect_fails_its_expectation_on_its_column(case: str, tmp_path: Path) -> None:
    change, expected = CASES[case]
    folder = write_partition(tmp_path / "people", change([dict(record) for record in GOOD]))
    summary = validate(folder, partition=f"people-{case}")
    assert not summary.success
    assert failures(summary) == expected


def test_an_out_of_range_value_is_shown_as_observed(tmp_path: Path) -> None:
    folder = write_partition(tmp_path / "people", with_record(1, age=150)([dict(r) for r in GOOD]))
    summary = validate(folder, partition="people-observed")
    (between,) = [o for o in summary.failed if o.expectation == "expect_column_values_to_be_between"]
    assert between.observed == "1 of 8 unexpected, e.g. 150"
    assert between.source == "schema:/properties/age/bounds"


def test_a_record_that_is_not_json_is_unexpected_and_left_out_of_privacy(tmp_path: Path) -> None:
    folder = write_partition(tmp_path / "people", GOOD, texts={6: '{"name": "Milo", "age": 67'})
    summary = validate(folder, partition="people-not-json")
    assert failures(summary) == {("expect_column_values_to_match_record_schema", "_aod_record")}
    assert summary.failed[0].observed.startswith('1 of 8 unexpected, e.g. \'{"name": "Milo"')
    assert summary.unparsed_records == 1
    assert summary.privacy.records == 7


def test_a_duplicate_record_id_fails_uniqueness(tmp_path: Path) -> None:
    ids = [record_id(record) for record in GOOD]
    ids[1] = ids[0]
    summary = validate(write_partition(tmp_path / "people", GOOD, ids=ids), partition="people-dup")
    assert failures(summary) == {("expect_column_values_to_be_unique", "_aod_record_id")}


def test_an_exact_copy_of_a_reference_row_fails_the_privacy_gate(tmp_path: Path) -> None:
    copied = dict(REFERENCE[3])
    summary = validate(write_partition(tmp_path / "people", [*GOOD, copied]), partition="people-copy")
    assert ("exact_match_rate", "_aod_record") in failures(summary)
    # The copy also carries a reference ssn.
    assert ("sensitive:ssn", "ssn") in failures(summary)
    (gate,) = [o for o in summary.failed if o.expectation == "exact_match_rate"]
    assert record_id(copied) in gate.observed
    assert summary.privacy.check("exact_match_rate").examples == (record_id(copied),)


def test_too_few_rows_fail_the_row_count(good: tuple[Path, ValidationSummary]) -> None:
    folder, _ = good
    summary = validate(folder, target_rows=100, partition="people-short")
    assert failures(summary) == {("expect_table_row_count_to_be_between", None)}
    assert summary.failed[0].observed == "8"


def test_a_failure_raises_validation_failed_with_its_summary(tmp_path: Path) -> None:
    folder = write_partition(tmp_path / "people", with_record(2, plan="gold")([dict(r) for r in GOOD]))
    with pytest.raises(ValidationFailed, match="expect_column_values_to_be_in_set on plan") as raised:
        validate(folder, partition="people-raise", raise_on_failure=True)
    assert not raised.value.summary.success
    assert (folder / "validation_result.json").is_file()


def test_user_expectations_run_on_top_and_gx_objects_are_reused(
    good: tuple[Path, ValidationSummary], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, first = good
    suite = tmp_path / "extra.json"
    suite.write_text(
        json.dumps(
            {
                "expectations": [
                    {
                        "type": "expect_column_values_to_be_between",
                        "kwargs": {"column": "age", "max_value": 50},
                    }
                ]
            }
        )
    )
    # The same partition name again: its suite is replaced, not duplicated.
    summary = validate(folder, extra_suite=suite)
    assert failures(summary) == {("expect_column_values_to_be_between", "age")}
    (user,) = summary.failed
    assert user.source == "user" and user.observed.startswith("3 of 8 unexpected")  # 56, 67, 72
    suites = [s.name for s in gx_adapter.context().suites.all() if s.name == "people"]
    assert suites == ["people"]
    assert len(gx_adapter.context().suites.get("people").expectations) == len(first.outcomes) - 4 + 1

    monkeypatch.syspath_prepend(str(FIXTURES))
    from_callable = validate(
        folder, extra_suite="user_expectations:expectations", partition="people-callable"
    )
    assert from_callable.success
    assert {o.expectation for o in from_callable.outcomes if o.source == "user"} == {
        "expect_column_values_to_not_be_in_set",
        "expect_column_values_to_be_between",
    }
    sys.modules.pop("user_expectations", None)


def test_missing_or_corrupt_parquet_is_a_data_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"partition data not found: {tmp_path / 'nowhere'}"):
        validate(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=f"no Parquet files in {empty}"):
        validate(empty)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "part-0.parquet").write_bytes(b"PAR1 this is not a Parquet file")
    with pytest.raises(DataError, match=f"cannot read Parquet file {corrupt / 'part-0.parquet'}"):
        validate(corrupt)
    no_record = tmp_path / "no_record"
    no_record.mkdir()
    pq.write_table(pa.table({"_aod_record_id": ["a"]}), no_record / "part-0.parquet")
    with pytest.raises(DataError, match="no _aod_record column"):
        validate(no_record)


WEATHER = load_schema(Path(__file__).parent.parent / "examples" / "schemas" / "seattle-weather.json")
WEATHER_ROWS = [
    {"date": f"2014-03-{day:02d}", "precipitation": 0.5 * day, "temp_max": 10.0 + day, "temp_min": 2.0 + day,
     "wind": 3.1, "weather": "rain"}
    for day in range(1, 9)
]  # fmt: skip


def write_weather(folder: Path, records: list[dict[str, Any]]) -> Path:
    """The output contract's Parquet of seattle-weather records (the typed columns included)."""
    folder.mkdir(parents=True)
    columns = arrow_schema(WEATHER)
    rows = [
        {
            "_aod_record_id": record_id(r),
            "_aod_partition": "weather",
            "_aod_record": json.dumps(r),
            **to_arrow_row(columns, r),
        }
        for r in records
    ]
    pq.write_table(
        pa.Table.from_pylist(rows, schema=pa.unify_schemas([CONTRACT, columns])), folder / "p.parquet"
    )
    return folder


@pytest.mark.parametrize("rule", ["temp_min <= temp_max", "temp_min <= 0.9 * temp_max + 4"])
def test_a_row_breaking_a_rule_fails_its_expectation_naming_the_rule(tmp_path: Path, rule: str) -> None:
    broken = [dict(r) for r in WEATHER_ROWS]
    broken[2] = {**broken[2], "temp_min": 30.0, "temp_max": 12.0}  # in range on its own: only the rule breaks
    (parsed,) = parse_rules([rule])
    kwargs: dict[str, Any] = {"rules": [parsed], "partition": f"weather-{len(rule)}"}
    clean = validate_partition(write_weather(tmp_path / "clean", WEATHER_ROWS), WEATHER, [], 8, **kwargs)
    assert clean.success, clean.failed
    summary = validate_partition(write_weather(tmp_path / "broken", broken), WEATHER, [], 8, **kwargs)
    (failed,) = summary.failed
    assert failed.source == f"rule:{rule}"
    assert failed.observed.startswith(f"rule {rule}: 1 of 8 unexpected")
    if rule == "temp_min <= temp_max":  # a plain bound between two columns: GX's pair expectation
        assert (failed.expectation, failed.column) == (
            "expect_column_pair_values_a_to_be_greater_than_b",
            "temp_max, temp_min",
        )
        assert failed.observed.endswith("e.g. {temp_max: 12.0, temp_min: 30.0}")
    else:  # a rule with a factor and an offset: the row-wise check on the record
        assert (failed.expectation, failed.column) == ("expect_column_values_to_satisfy_rule", "_aod_record")
        assert failed.observed.endswith("e.g. {temp_min: 30.0, temp_max: 12.0}")
    with pytest.raises(ValidationFailed, match=re.escape(f"rule {rule}: 1 of 8 unexpected")):
        validate_partition(tmp_path / "broken", WEATHER, [], 8, raise_on_failure=True, **kwargs)


def test_data_docs_come_with_a_fidelity_report(tmp_path: Path) -> None:
    folder = write_weather(tmp_path / "weather", WEATHER_ROWS)
    reference = [{**r, "date": r["date"].replace("2014", "2013"), "wind": 4.2} for r in WEATHER_ROWS]
    holdout = [{**r, "date": r["date"].replace("2014", "2012"), "wind": 2.5} for r in WEATHER_ROWS]
    summary = validate_partition(
        folder, WEATHER, reference, 8, holdout=holdout, docs_dir=tmp_path / "docs", partition="weather-docs"
    )
    report = Path(str(summary.fidelity_report_path))
    assert report == tmp_path / "docs" / "fidelity.html" and report.is_file()
    assert (tmp_path / "docs" / "fidelity.png").read_bytes()[:4] == b"\x89PNG"
    assert summary.as_dict()["fidelity_report_path"] == str(report)
    assert Path(str(summary.docs_path)).parent == report.parent  # beside the GX Data Docs
    without = validate_partition(folder, WEATHER, reference, 8, partition="weather-docs")
    assert without.fidelity_report_path is None


def test_a_pattern_failure_names_the_pattern(tmp_path: Path) -> None:
    folder = write_partition(tmp_path / "people", with_record(3, name="jana")([dict(r) for r in GOOD]))
    summary = validate(folder, partition="people-pattern-named")
    (pattern,) = [
        o for o in summary.failed if o.expectation == "expect_column_values_to_match_schema_pattern"
    ]
    assert pattern.observed == "pattern '^[A-Z][a-z]+$': 1 of 8 unexpected, e.g. 'jana'"
    (record,) = [o for o in summary.failed if o.expectation == "expect_column_values_to_match_record_schema"]
    assert record.observed.endswith("(/name: 'jana' does not match '^[A-Z][a-z]+$')")


def test_a_column_the_schema_does_not_have_fails_naming_it(tmp_path: Path) -> None:
    folder = write_partition(tmp_path / "people", GOOD)
    table = pq.read_table(folder / "part-0.parquet")
    pq.write_table(
        table.append_column("nickname", pa.array(["x"] * table.num_rows)), folder / "part-0.parquet"
    )
    summary = validate(folder, partition="people-extra-column")
    assert failures(summary) == {("expect_table_columns_to_be_in_set", "nickname")}
    (outcome,) = summary.failed
    assert outcome.observed.startswith("unexpected column 'nickname': neither a top-level property")
    assert outcome.source == "contract"
    # The contract's own columns and the schema's typed ones are what a good table has.
    good = validate(write_partition(tmp_path / "good", GOOD), partition="people-columns-ok")
    assert good.success, good.failed


# A pattern that backtracks exponentially even on the regex engine: each check times out.
HOSTILE = {
    "type": "object",
    "required": ["word"],
    "properties": {"word": {"type": "string", "pattern": "^(b|b)+$"}},
}


def write_words(folder: Path, words: list[str]) -> Path:
    """The output contract's Parquet of ``{"word": ...}`` records."""
    folder.mkdir(parents=True)
    columns = arrow_schema(load_schema(HOSTILE))
    rows = [
        {
            "_aod_record_id": f"r{i}",
            "_aod_partition": "words",
            "_aod_record": json.dumps({"word": w}),
            "word": w,
        }
        for i, w in enumerate(words)
    ]
    table = pa.Table.from_pylist(rows, schema=pa.unify_schemas([CONTRACT, columns]))
    pq.write_table(table, folder / "part-0.parquet")
    return folder


def test_a_pattern_that_times_out_fails_its_checks_naming_the_pattern(tmp_path: Path) -> None:
    evil = "b" * 40 + "!"
    folder = write_words(tmp_path / "words", ["bbb", evil, "bb"])
    started = time.monotonic()
    summary = validate_partition(folder, HOSTILE, [], 3, partition="words-hostile")
    assert time.monotonic() - started < 10
    assert failures(summary) == {
        ("expect_column_values_to_match_schema_pattern", "word"),
        ("expect_column_values_to_match_record_schema", "_aod_record"),
    }
    pattern, record = sorted(summary.failed, key=lambda o: o.expectation, reverse=True)
    assert pattern.observed.startswith("pattern '^(b|b)+$': 1 of 3 unexpected, e.g. 'bbbb")
    assert "timed out" in pattern.observed
    assert "(/word: pattern '^(b|b)+$' timed out" in record.observed
    assert "at schema path #/properties/word/pattern" in record.observed


def test_aod_validate_of_the_redos_repro_fails_fast_naming_the_pattern(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The case: Python's re takes minutes on 41 a's and a '!' against ^(a+)+$.
    schema = {
        "type": "object",
        "required": ["word"],
        "properties": {"word": {"type": "string", "pattern": "^(a+)+$"}},
    }
    (tmp_path / "word.json").write_text(json.dumps(schema))
    (tmp_path / "reference.jsonl").write_text('{"word": "aaa"}\n{"word": "aaaa"}\n')
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "partitions:\n  - {name: words, schema: word.json, reference: reference.jsonl, rows: 2}\n"
    )
    data = tmp_path / "out" / "words" / "data"
    data.mkdir(parents=True)
    rows = [
        {
            "_aod_record_id": f"r{i}",
            "_aod_partition": "words",
            "_aod_record": json.dumps({"word": w}),
            "word": w,
        }
        for i, w in enumerate(["a" * 41 + "!", "aaaaaaa"])
    ]
    pq.write_table(pa.Table.from_pylist(rows), data / "part-0.parquet")
    started = time.monotonic()
    code = main(["validate", "--spec", str(spec), "--data", str(tmp_path / "out")])
    assert time.monotonic() - started < 10
    assert code == 1
    err = capsys.readouterr().err
    assert (
        "words: failed expect_column_values_to_match_schema_pattern on column word: pattern '^(a+)+$'" in err
    )
    assert "validation failed for: words" in err


def test_records_nested_past_the_limit_are_unexpected_not_a_crash(tmp_path: Path) -> None:
    deep: Any = "Bari"
    for _ in range(100):
        deep = {"city": deep}
    texts = {
        6: "[" * 5_000 + "]" * 5_000,  # past what Python's JSON parser takes
        7: json.dumps({**GOOD[7], "address": deep}),  # parses, but nests past MAX_DEPTH
    }
    summary = validate(write_partition(tmp_path / "people", GOOD, texts=texts), partition="people-deep")
    assert failures(summary) == {("expect_column_values_to_match_record_schema", "_aod_record")}
    (record,) = summary.failed
    assert record.observed.startswith("2 of 8 unexpected")
    assert "nested deeper than 64 levels; the limit is 64" in record.observed
    assert summary.unparsed_records == 2 and summary.privacy.records == 6
