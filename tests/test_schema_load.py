"""Loading JSON Schemas: drafts, meta-schema checks, $ref resolution, validation issues."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from aod_ops.errors import SchemaError
from aod_ops.schema import LoadedSchema, ValidationIssue, load_schema
from aod_ops.schema.bounded import MAX_FORMAT_LENGTH
from aod_ops.schema.load import MAX_DEPTH, MAX_SCHEMA_BYTES, MAX_SCHEMA_VALUES


def write(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("uri", "draft"),
    [
        ("http://json-schema.org/draft-04/schema#", "draft4"),
        ("http://json-schema.org/draft-04/schema", "draft4"),
        ("http://json-schema.org/draft-06/schema#", "draft6"),
        ("http://json-schema.org/draft-07/schema#", "draft7"),
        ("https://json-schema.org/draft/2019-09/schema", "draft2019-09"),
        ("https://json-schema.org/draft/2020-12/schema", "draft2020-12"),
    ],
)
def test_draft_comes_from_dollar_schema(uri: str, draft: str) -> None:
    loaded = load_schema({"$schema": uri, "type": "string"})
    assert loaded.draft == draft
    assert loaded.source == "<dict>"


def test_undeclared_draft_is_2020_12() -> None:
    assert load_schema({"type": "object"}).draft == "draft2020-12"


def test_unknown_dollar_schema_is_named() -> None:
    with pytest.raises(SchemaError, match=r"unknown \$schema 'http://example.com/my-meta'"):
        load_schema({"$schema": "http://example.com/my-meta"})


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(SchemaError, match=r"nope\.json: cannot read schema"):
        load_schema(missing)


def test_invalid_json_reports_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "type": "object",\n  "properties": {,}\n}\n', encoding="utf-8")
    with pytest.raises(SchemaError, match=r"bad\.json: not valid JSON: .* at line 3 column 18"):
        load_schema(bad)


def test_meta_schema_error_names_file_and_pointer(tmp_path: Path) -> None:
    path = write(tmp_path / "typo.json", {"properties": {"a": {"type": "strnig"}}})
    with pytest.raises(SchemaError) as caught:
        load_schema(path)
    message = str(caught.value)
    assert "typo.json" in message
    assert "properties/a" in message
    assert "strnig" in message


def test_meta_schema_error_of_draft4(tmp_path: Path) -> None:
    schema = {"$schema": "http://json-schema.org/draft-04/schema#", "properties": {"n": {"minimum": "0"}}}
    with pytest.raises(SchemaError, match=r"d4\.json: invalid schema at /properties/n/minimum"):
        load_schema(write(tmp_path / "d4.json", schema))


def test_a_pattern_python_cannot_compile_is_rejected() -> None:
    with pytest.raises(SchemaError, match=r"/properties/code/pattern"):
        load_schema({"properties": {"code": {"type": "string", "pattern": "\\p{L}+"}}})


def test_non_object_schema_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(
        SchemaError, match=r"list\.json: a JSON Schema must be an object or a boolean, not list"
    ):
        load_schema(write(tmp_path / "list.json", [{"type": "string"}]))


def test_boolean_schema_files(tmp_path: Path) -> None:
    assert load_schema(write(tmp_path / "t.json", True)).errors({"anything": [1]}) == []
    assert load_schema(write(tmp_path / "f.json", False)).errors(1) != []


def test_local_definitions_and_defs_resolve() -> None:
    draft7 = load_schema(
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": {"age": {"type": "integer", "minimum": 0}},
            "properties": {"age": {"$ref": "#/definitions/age"}},
        }
    )
    assert draft7.errors({"age": 3}) == []
    assert [i.pointer for i in draft7.errors({"age": -1})] == ["/age"]
    modern = load_schema(
        {"$defs": {"age": {"type": "integer", "minimum": 0}}, "properties": {"age": {"$ref": "#/$defs/age"}}}
    )
    assert [i.keyword for i in modern.errors({"age": "x"})] == ["type"]


def test_relative_file_refs_resolve_from_disk(tmp_path: Path) -> None:
    (tmp_path / "common").mkdir()
    address = {
        "type": "object",
        "required": ["zip"],
        "properties": {"zip": {"$ref": "#/definitions/zip"}},
        "definitions": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
    }
    write(tmp_path / "common" / "address.json", address)
    write(tmp_path / "common" / "defs.json", {"definitions": {"name": {"type": "string", "minLength": 1}}})
    main = write(
        tmp_path / "person.json",
        {
            "type": "object",
            "properties": {
                "home": {"$ref": "common/address.json"},
                "name": {"$ref": "common/defs.json#/definitions/name"},
            },
        },
    )
    loaded = load_schema(main)
    assert loaded.base_uri == main.resolve().as_uri()
    assert loaded.errors({"home": {"zip": "12345"}, "name": "Ann"}) == []
    issues = loaded.errors({"home": {"zip": "12a45"}, "name": ""})
    assert [(i.pointer, i.keyword) for i in issues] == [("/home/zip", "pattern"), ("/name", "minLength")]


def test_a_pickled_schema_is_small_and_resolves_its_files_without_them(tmp_path: Path) -> None:
    write(tmp_path / "defs.json", {"definitions": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}}})
    main = write(
        tmp_path / "place.json",
        {"type": "object", "properties": {"zip": {"$ref": "defs.json#/definitions/zip"}}},
    )
    pickled = pickle.dumps(load_schema(main))
    (tmp_path / "defs.json").unlink()  # a Ray worker sees none of the schema's files
    loaded = pickle.loads(pickled)
    assert len(pickled) < 4_000  # not the standard meta-schemas (over 100 KB): every process has those
    assert loaded.errors({"zip": "12345"}) == []
    assert [i.pointer for i in loaded.errors({"zip": "1"})] == ["/zip"]


def test_refs_under_an_absolute_id_are_read_next_to_the_file(tmp_path: Path) -> None:
    write(tmp_path / "item.json", {"type": "integer"})
    main = write(
        tmp_path / "list.json",
        {"$id": "https://example.com/schemas/list.json", "type": "array", "items": {"$ref": "item.json"}},
    )
    loaded = load_schema(main)
    assert loaded.base_uri == "https://example.com/schemas/list.json"
    assert loaded.errors([1, 2]) == []
    assert [i.pointer for i in loaded.errors([1, "x"])] == ["/1"]


def test_missing_ref_target_names_file_and_pointer(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.json", {"properties": {"a": {"$ref": "#/definitions/nothing"}}})
    with pytest.raises(
        SchemaError, match=r"broken\.json: \$ref at /properties/a: cannot resolve '#/definitions/nothing'"
    ):
        load_schema(path)


def test_missing_ref_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "main.json", {"items": {"$ref": "other.json"}})
    with pytest.raises(SchemaError, match=r"main\.json: \$ref at /items: cannot resolve 'other\.json'"):
        load_schema(path)


def test_broken_referenced_file_reports_that_file(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text("{oops", encoding="utf-8")
    path = write(tmp_path / "main.json", {"items": {"$ref": "other.json"}})
    with pytest.raises(SchemaError, match=r"other\.json: not valid JSON"):
        load_schema(path)


def test_invalid_referenced_file_reports_that_file_and_pointer(tmp_path: Path) -> None:
    write(tmp_path / "other.json", {"properties": {"b": {"minLength": -1}}})
    path = write(tmp_path / "main.json", {"items": {"$ref": "other.json"}})
    with pytest.raises(SchemaError, match=r"other\.json: invalid schema at /properties/b/minLength"):
        load_schema(path)


def test_recursive_refs_load() -> None:
    loaded = load_schema(
        {
            "$defs": {
                "node": {
                    "type": "object",
                    "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                }
            },
            "$ref": "#/$defs/node",
        }
    )
    assert loaded.errors({"kids": [{"kids": []}, {}]}) == []
    assert [i.pointer for i in loaded.errors({"kids": [{"kids": 3}]})] == ["/kids/0/kids"]


def test_errors_are_issues_with_pointer_keyword_and_value() -> None:
    loaded = load_schema(
        {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": {"type": "integer"},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}},
            },
        }
    )
    issues = loaded.errors({"tags": ["a", "c"]})
    assert issues == [
        ValidationIssue(
            pointer="", message="'id' is a required property", keyword="required", value={"tags": ["a", "c"]}
        ),
        ValidationIssue(pointer="/tags/1", message="'c' is not one of ['a', 'b']", keyword="enum", value="c"),
    ]


def test_an_anyof_failure_names_the_inner_reason() -> None:
    loaded = load_schema(
        {"properties": {"n": {"anyOf": [{"type": "integer", "minimum": 10}, {"type": "null"}]}}}
    )
    (issue,) = loaded.errors({"n": 3})
    assert issue.pointer == "/n"
    assert "10" in issue.message


def test_format_checking_is_on() -> None:
    loaded = load_schema(
        {"properties": {"mail": {"format": "email"}, "at": {"format": "date-time"}, "ip": {"format": "ipv4"}}}
    )
    assert loaded.errors({"mail": "a@b.co", "at": "2024-01-02T03:04:05Z", "ip": "10.0.0.1"}) == []
    bad = loaded.errors({"mail": "nobody", "at": "2024-01-02 03:04", "ip": "300.1.1.1"})
    assert sorted(i.pointer for i in bad) == ["/at", "/ip", "/mail"]
    assert {i.keyword for i in bad} == {"format"}


def test_validator_is_built_once() -> None:
    loaded = load_schema({"type": "string"})
    assert loaded.validator() is loaded.validator()
    assert isinstance(loaded, LoadedSchema)


def test_loads_fast_enough_for_a_coverage_run() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "definitions": {
            f"d{i}": {"type": "object", "properties": {"x": {"type": "string"}}} for i in range(30)
        },
        "properties": {f"p{i}": {"$ref": f"#/definitions/d{i}"} for i in range(30)},
    }
    started = time.monotonic()
    for _ in range(20):
        load_schema(schema)
    assert (time.monotonic() - started) / 20 < 0.2


def test_the_schema_package_imports_neither_ray_nor_airflow() -> None:
    code = "import sys, aod_ops.schema; print(sorted(m for m in ('ray', 'airflow') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# -- hostile input: patterns, depth, size -------------------------------------------------------


def nested(levels: int, leaf: dict[str, Any] | None = None) -> dict[str, Any]:
    """A schema of objects in objects: ``levels`` schemas, two JSON levels each (properties/a)."""
    schema: dict[str, Any] = leaf or {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def test_a_pattern_that_times_out_is_a_clear_error_in_bounded_time() -> None:
    # Exponential on any backtracking engine (the regex package included): 41 characters take ages.
    loaded = load_schema({"properties": {"code": {"type": "string", "pattern": "^(c|c)+$"}}})
    started = time.monotonic()
    (issue,) = loaded.errors({"code": "c" * 40 + "!"})
    assert time.monotonic() - started < 5
    assert (issue.pointer, issue.keyword) == ("/code", "pattern")
    assert issue.message.startswith("pattern '^(c|c)+$' timed out")
    assert issue.message.endswith("it counts as not matching (at schema path #/properties/code/pattern)")
    assert not loaded.is_valid({"code": "c" * 40 + "!"})
    # The same pattern on an ordinary value: a search, as JSON Schema says.
    assert loaded.errors({"code": "ccc"}) == [] and loaded.is_valid({"code": "ccc"})
    assert [i.message for i in loaded.errors({"code": "x"})] == ["'x' does not match '^(c|c)+$'"]


def test_the_redos_repro_is_fast_and_patterns_keep_search_semantics() -> None:
    loaded = load_schema(
        {"properties": {"word": {"type": "string", "pattern": "^(a+)+$"}, "id": {"pattern": "[0-9]"}}}
    )
    started = time.monotonic()
    (issue,) = loaded.errors({"word": "a" * 41 + "!"})
    assert time.monotonic() - started < 5
    assert issue.message == f"'{'a' * 41}!' does not match '^(a+)+$'"
    assert loaded.errors({"word": "aaa", "id": "x7y"}) == []  # "[0-9]" anywhere in the value


def test_pattern_properties_that_time_out_name_the_pattern_and_the_property() -> None:
    loaded = load_schema(
        {"patternProperties": {"^(d|d)+$": {"type": "integer"}}, "additionalProperties": False}
    )
    name = "d" * 40 + "!"
    issues = loaded.errors({name: 1, "dd": 2})
    assert [(i.pointer, i.keyword) for i in issues] == [("", "patternProperties")]
    assert issues[0].message.startswith("pattern '^(d|d)+$' timed out")
    assert f"on property name {name!r}" in issues[0].message
    assert [i.message for i in loaded.errors({"dd": "x", "e": 1})] == [
        "'e' does not match any of the regexes: '^(d|d)+$'",
        "'x' is not of type 'integer'",
    ]


def test_formats_are_checked_on_strings_up_to_a_length() -> None:
    loaded = load_schema({"properties": {"site": {"format": "uri"}, "re": {"format": "regex"}}})
    assert loaded.errors({"site": "https://example.com/" + "a" * 100}) == []
    (too_long,) = loaded.errors({"site": "https://example.com/" + "a" * MAX_FORMAT_LENGTH})
    assert too_long.keyword == "format"
    # "regex" compiles the value: deep parentheses are an invalid value, not a RecursionError.
    (deep,) = loaded.errors({"re": "(" * 2000 + ")" * 2000})
    assert deep.keyword == "format"


def test_a_schema_nested_past_the_limit_is_one_line_naming_it(tmp_path: Path) -> None:
    assert load_schema(nested(MAX_DEPTH // 2 - 1)).draft == "draft2020-12"  # 62 levels: fine
    path = write(tmp_path / "deep.json", nested(120))
    with pytest.raises(SchemaError) as raised:
        load_schema(path)
    message = str(raised.value)
    assert message == (
        f"{path}: nested deeper than 64 levels at #/properties/a/properties/a/properties/a/...; "
        "the limit is 64"
    )
    # Far past what Python's JSON parser takes: still one line, no RecursionError.
    (tmp_path / "deeper.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SchemaError, match=r"deeper\.json: nested deeper than 64 levels; the limit is 64$"):
        load_schema(tmp_path / "deeper.json")


def test_a_ref_chain_nested_past_the_limit_is_one_line_naming_it() -> None:
    chain = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(100)}
    with pytest.raises(SchemaError) as raised:
        load_schema({"$defs": {**chain, "d100": {"type": "string"}}, "$ref": "#/$defs/d0"})
    assert str(raised.value) == (
        "<dict>: nested deeper than 64 levels at #/$defs/d64, counting each $ref as a level; the limit is 64"
    )
    # A chain within the limit, and recursion (a $ref back up its own path), load.
    short = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(30)}
    load_schema({"$defs": {**short, "d30": {"type": "string"}}, "$ref": "#/$defs/d0"})
    load_schema({"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"})


def test_a_schema_larger_than_the_limits_is_one_line_naming_them(tmp_path: Path) -> None:
    with pytest.raises(
        SchemaError, match=f"^<dict>: more than {MAX_SCHEMA_VALUES} JSON values; the limit is"
    ):
        load_schema({"enum": list(range(MAX_SCHEMA_VALUES))})
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"description": "x" * MAX_SCHEMA_BYTES}))
    with pytest.raises(
        SchemaError, match=f"big.json: .* bytes, larger than the limit of {MAX_SCHEMA_BYTES} bytes$"
    ):
        load_schema(big)


def test_a_record_nested_past_the_limit_is_invalid_not_a_crash() -> None:
    loaded = load_schema(
        {"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"}
    )
    record: list[Any] = []
    for _ in range(MAX_DEPTH):
        record = [record]
    assert loaded.errors(record) == [] and loaded.is_valid(record)
    for deep in (MAX_DEPTH + 1, 5_000):  # 5,000 is far past Python's recursion limit
        value: list[Any] = []
        for _ in range(deep):
            value = [value]
        (issue,) = loaded.errors(value)
        assert issue.pointer == "/0" * (MAX_DEPTH + 1)
        assert (issue.message, issue.keyword, issue.value) == (
            "nested deeper than 64 levels; the limit is 64",
            "depth",
            None,
        )
        assert not loaded.is_valid(value)


def test_a_ref_cycle_that_never_moves_into_the_value_is_an_issue_not_a_crash() -> None:
    loaded = load_schema(
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
    )
    (issue,) = loaded.errors(1)
    assert issue.message == "the schema recurses without end on this value (a $ref cycle)"


def test_unevaluated_properties_beside_pattern_properties_is_refused() -> None:
    with pytest.raises(
        SchemaError, match=r"unevaluatedProperties in a schema with patternProperties .* without a time limit"
    ):
        load_schema({"patternProperties": {"^x": {}}, "unevaluatedProperties": False})
    load_schema({"properties": {"x": {}}, "unevaluatedProperties": False})
