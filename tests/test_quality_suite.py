"""The expectation suite derived from a JSON Schema, as plain values (no GX run here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aod_ops.errors import SpecError
from aod_ops.quality.suite import CONTRACT_COLUMNS, ExpectationSpec, extra_expectations, schema_expectations
from aod_ops.rules import parse_rules
from aod_ops.schema import load_schema


def by_column(specs: list[ExpectationSpec]) -> dict[tuple[str, str | None], ExpectationSpec]:
    return {(spec.type, spec.column): spec for spec in specs}


def test_contract_expectations_come_first_for_any_schema() -> None:
    schema = load_schema({"type": "array", "items": {"type": "integer"}})
    specs = by_column(schema_expectations(schema, target_rows=50))
    assert set(specs) == {
        ("expect_column_values_to_not_be_null", "_aod_record_id"),
        ("expect_column_values_to_be_unique", "_aod_record_id"),
        ("expect_column_values_to_not_be_null", "_aod_record"),
        ("expect_column_values_to_match_record_schema", "_aod_record"),
        ("expect_table_row_count_to_be_between", None),
        ("expect_table_columns_to_be_in_set", None),
    }
    assert specs["expect_table_row_count_to_be_between", None].kwargs == {"min_value": 50}
    # An array schema has no typed columns: the table may have the contract's columns only.
    assert specs["expect_table_columns_to_be_in_set", None].kwargs == {"column_set": list(CONTRACT_COLUMNS)}
    assert (
        specs["expect_column_values_to_match_record_schema", "_aod_record"].kwargs["json_schema"]
        == schema.contents
    )


def test_top_level_keywords_become_column_expectations() -> None:
    schema = load_schema(
        {
            "type": "object",
            "required": ["name", "age", "plan", "note"],
            "properties": {
                "name": {"type": "string", "minLength": 2, "maxLength": 20, "pattern": "^[A-Z]"},
                "age": {"$ref": "#/$defs/age"},
                "plan": {"enum": ["basic", "pro", None]},
                "tier": {"const": 3},
                "mixed": {"enum": ["a", 1]},
                "shape": {"enum": [{"x": 1}]},
                "note": {"type": ["string", "null"], "maxLength": 5},
                "score": {"type": "number", "minimum": 0, "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}},
                "seed": {"type": "integer", "minimum": 0},
            },
            "$defs": {"age": {"type": "integer", "minimum": 18, "maximum": 99}},
        }
    )
    specs = by_column(schema_expectations(schema, target_rows=1))
    derived = {key for key, spec in specs.items() if spec.source.startswith("schema:/")}
    assert derived == {
        ("expect_column_values_to_not_be_null", "name"),
        ("expect_column_values_to_match_schema_pattern", "name"),
        ("expect_column_value_lengths_to_be_between", "name"),
        ("expect_column_values_to_not_be_null", "age"),
        ("expect_column_values_to_be_between", "age"),
        # plan allows null: no not-null, and null is left out of the set.
        ("expect_column_values_to_be_in_set", "plan"),
        ("expect_column_values_to_be_in_set", "tier"),
        # mixed and shape are enums of mixed types and of objects: JSON-text columns, no set.
        # note is required but nullable: only its length.
        ("expect_column_value_lengths_to_be_between", "note"),
        ("expect_column_values_to_be_between", "score"),
        # tags is an array (the record's JSON Schema covers it).
        # seed is named like a provenance column, which lives in the contract's namespace.
        ("expect_column_values_to_be_between", "seed"),
    }
    assert specs["expect_column_values_to_match_schema_pattern", "name"].kwargs == {
        "column": "name",
        "regex": "^[A-Z]",
    }
    assert specs["expect_column_value_lengths_to_be_between", "name"].kwargs == {
        "column": "name",
        "min_value": 2,
        "max_value": 20,
    }
    # The table may have the contract's columns and one per top-level property.
    assert specs["expect_table_columns_to_be_in_set", None].kwargs["column_set"] == [
        *CONTRACT_COLUMNS,
        *("name", "age", "plan", "tier", "mixed", "shape", "note", "score", "tags", "seed"),
    ]
    age = specs["expect_column_values_to_be_between", "age"]
    assert age.kwargs == {
        "column": "age",
        "min_value": 18,
        "max_value": 99,
        "strict_min": False,
        "strict_max": False,
    }
    assert age.source == "schema:/properties/age/bounds"
    assert specs["expect_column_values_to_be_in_set", "plan"].kwargs["value_set"] == ["basic", "pro"]
    assert specs["expect_column_values_to_be_in_set", "tier"].kwargs["value_set"] == [3]
    # minimum 0 and exclusiveMinimum 0: the exclusive one is as tight, so the bound is strict.
    assert specs["expect_column_values_to_be_between", "score"].kwargs == {
        "column": "score",
        "min_value": 0,
        "strict_min": True,
        "max_value": 1,
        "strict_max": True,
    }


def test_draft4_boolean_exclusive_bounds_are_strict() -> None:
    schema = load_schema(
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "object",
            "properties": {"x": {"type": "number", "minimum": 1, "exclusiveMinimum": True, "maximum": 2}},
        }
    )
    (between,) = [spec for spec in schema_expectations(schema, 1) if spec.column == "x"]
    assert between.kwargs == {
        "column": "x",
        "min_value": 1,
        "strict_min": True,
        "max_value": 2,
        "strict_max": False,
    }


def test_a_user_suite_file_adds_expectations(tmp_path: Path) -> None:
    suite = tmp_path / "extra.json"
    suite.write_text(
        json.dumps(
            {
                "name": "mine",
                "expectations": [
                    {
                        "type": "expect_column_values_to_be_between",
                        "kwargs": {"column": "age", "max_value": 50},
                    }
                ],
            }
        )
    )
    (spec,) = extra_expectations(suite)
    assert (spec.type, spec.kwargs, spec.source) == (
        "expect_column_values_to_be_between",
        {"column": "age", "max_value": 50},
        "user",
    )


def test_bad_user_expectations_are_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"cannot read the expectation suite .*missing\.json"):
        extra_expectations(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"expectations": [{"kwargs": {}}]}')
    with pytest.raises(SpecError, match="needs a 'type'"):
        extra_expectations(bad)
    with pytest.raises(SpecError, match=r"give a suite \.json file or 'module:function'"):
        extra_expectations("no_colon_here")
    with pytest.raises(SpecError, match="cannot load the expectations callable 'no_such_module_xyz:f'"):
        extra_expectations("no_such_module_xyz:f")


def test_importing_the_quality_package_does_not_import_gx() -> None:
    # GX takes seconds to import; only running a validation should pay for it.
    code = "import sys, aod_ops.quality; print('great_expectations' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "False"


def test_each_rule_becomes_a_pair_expectation_or_a_row_wise_one() -> None:
    schema = load_schema(
        {
            "type": "object",
            "properties": {
                "low": {"type": "number"},
                "high": {"type": "integer"},
                "day": {"type": "string", "format": "date"},
                "end": {"type": "string", "format": "date"},
                "engine": {"type": "object", "properties": {"size": {"type": "number"}}},
            },
        }
    )
    rules = parse_rules(
        [
            "low <= high",  # a pair of numeric columns: GX's own pair expectation
            "high > low",
            "low == high",
            "low >= 2 * high",  # a factor: row-wise on the record
            "low <= high + 1",  # an offset
            "end >= day",  # strings
            "engine.size <= high",  # a nested field has no typed column
            "low != high",
        ]
    )
    specs = [spec for spec in schema_expectations(schema, 1, rules) if spec.source.startswith("rule:")]
    assert [spec.source for spec in specs] == [f"rule:{rule.text}" for rule in rules]
    greater = "expect_column_pair_values_a_to_be_greater_than_b"
    missing = {"ignore_row_if": "either_value_is_missing"}
    assert [(spec.type, spec.kwargs) for spec in specs[:3]] == [
        (greater, {"column_A": "high", "column_B": "low", "or_equal": True, **missing}),
        (greater, {"column_A": "high", "column_B": "low", "or_equal": False, **missing}),
        ("expect_column_pair_values_to_be_equal", {"column_A": "low", "column_B": "high", **missing}),
    ]
    assert specs[0].column == "high, low"
    for spec, rule in zip(specs[3:], rules[3:], strict=True):
        assert (spec.type, spec.kwargs) == (
            "expect_column_values_to_satisfy_rule",
            {"column": "_aod_record", "rule": rule.text},
        )


def test_no_rules_add_no_expectations() -> None:
    schema = load_schema({"type": "object", "properties": {"a": {"type": "number"}}})
    assert schema_expectations(schema, 1) == schema_expectations(schema, 1, ())
    assert not any(spec.source.startswith("rule:") for spec in schema_expectations(schema, 1))
