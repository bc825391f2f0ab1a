"""Loading JSON Schemas: drafts, meta-schema checks, $ref resolution, validation issues."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aod_ops.errors import SchemaError
from aod_ops.schema import LoadedSchema, ValidationIssue, load_schema


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
    import time

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
