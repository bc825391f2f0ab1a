"""The schema compiler, keyword families of one value: strings, numbers, choices and objects.

Arrays, combinators and references are in ``test_schema_compile_composite``; real, generated and
hostile schemas in ``test_schema_compile_whole``."""

from __future__ import annotations

import random

import jsonschema
import pytest

from aod_ops.schema import compile_schema, load_schema
from aod_ops.schema.nodes import ChoiceNode, NumberNode, ObjectNode, Property, StringNode, UnionNode
from aod_ops.schema.patterns import FORMAT_PATTERNS, complete, full_match
from tests.schema_compile_helpers import compiled, root, unsatisfiable, valid_instance

# -- strings ------------------------------------------------------------------------------------


def test_string_lengths() -> None:
    assert root({"type": "string", "minLength": 2, "maxLength": 5}) == StringNode(min_length=2, max_length=5)


@pytest.mark.parametrize(
    ("pattern", "full"),
    [
        ("^[a-z]+$", "(?:^[a-z]+$)"),
        ("^ab", "(?:^ab).*"),
        ("\\.json$", ".*(?:\\.json$)"),
        ("[0-9]{3}", "(?:[0-9]{3})"),
        ("(?i)^x$", "(?i:^x$)"),
        ("^a\\$", "(?:^a\\$).*"),
    ],
)
def test_pattern_becomes_a_full_match(pattern: str, full: str) -> None:
    node = root({"type": "string", "pattern": pattern})
    assert isinstance(node, StringNode)
    assert node.pattern == full


def test_unanchored_pattern_opens_up_when_lengths_demand_it() -> None:
    node = root({"type": "string", "pattern": "[0-9]{3}", "minLength": 6})
    assert isinstance(node, StringNode)
    assert node.pattern == ".*(?:[0-9]{3}).*"
    value = complete(node.pattern, "", random.Random(0), 6)
    assert value is not None and len(value) >= 6


def test_format_becomes_its_pattern_and_is_kept() -> None:
    node = root({"type": "string", "format": "date-time"})
    assert node == StringNode(pattern=FORMAT_PATTERNS["date-time"], format="date-time")


def test_unknown_format_is_only_a_hint() -> None:
    assert root({"type": "string", "format": "topic"}) == StringNode(format="topic")


def test_format_and_pattern_are_both_honoured() -> None:
    node = root({"type": "string", "format": "email", "pattern": "@example\\.com$"})
    assert isinstance(node, StringNode) and node.pattern is not None
    value = complete(node.pattern, "", random.Random(0))
    assert value is not None and value.endswith("@example.com")
    assert jsonschema.Draft202012Validator.FORMAT_CHECKER.conforms(value, "email")


def test_format_that_contradicts_the_pattern_is_left_to_validation() -> None:
    tree = compiled({"type": "string", "format": "email", "pattern": "^[0-9]+$"})
    assert isinstance(tree.root, StringNode) and tree.root.pattern == "(?:^[0-9]+$)"
    assert [(u.pointer, u.keyword) for u in tree.unsupported] == [("/format", "format")]


def test_unsatisfiable_pattern_is_reported_with_its_pointer() -> None:
    message = unsatisfiable(
        {
            "properties": {"code": {"type": "string", "pattern": "^[a-z]{5}$", "maxLength": 3}},
            "required": ["code"],
        }
    )
    assert message.endswith(
        "no string of length 0..3 matching the pattern was found "
        "(keyword 'pattern' at #/properties/code/pattern)"
    )


def test_optional_property_that_cannot_be_satisfied_is_left_out() -> None:
    node = root(
        {"properties": {"code": {"type": "string", "pattern": "^[a-z]{5}$", "maxLength": 3}, "n": {}}}
    )
    assert isinstance(node, ObjectNode)
    assert [p.name for p in node.properties] == ["n"]


def test_string_hints_come_from_default_and_examples_that_fit() -> None:
    node = root({"type": "string", "maxLength": 5, "default": "Oslo", "examples": ["Bergen", "Rome"]})
    assert isinstance(node, StringNode)
    assert node.hints == ("Oslo", "Rome")


# -- numbers ------------------------------------------------------------------------------------


def test_integer_bounds() -> None:
    assert root({"type": "integer", "minimum": 1, "maximum": 9}) == NumberNode(
        integer=True, minimum=1, maximum=9
    )


def test_draft4_boolean_exclusive_bounds_make_integer_bounds_inclusive() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "integer",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 10,
        "exclusiveMaximum": True,
    }
    assert root(schema) == NumberNode(integer=True, minimum=1, maximum=9)


def test_draft6_numeric_exclusive_bounds() -> None:
    node = root(
        {
            "$schema": "http://json-schema.org/draft-06/schema#",
            "type": "number",
            "exclusiveMinimum": 0.5,
            "minimum": 0,
        }
    )
    assert node == NumberNode(minimum=0.5, exclusive_minimum=True)
    node = root({"type": "integer", "exclusiveMaximum": 2.5})
    assert node == NumberNode(integer=True, maximum=2)


def test_multiple_of_combines_through_all_of() -> None:
    node = root({"type": "integer", "allOf": [{"multipleOf": 4}, {"multipleOf": 6}]})
    assert isinstance(node, NumberNode) and node.multiple_of == 12
    assert root({"type": "integer", "multipleOf": 0.5}) == NumberNode(integer=True, multiple_of=1)
    assert root({"type": "number", "multipleOf": 0.25}) == NumberNode(multiple_of=0.25)


def test_impossible_bounds_are_reported() -> None:
    message = unsatisfiable({"type": "integer", "minimum": 3, "maximum": 4, "multipleOf": 5})
    assert message.endswith("no integer from 3 to 4 is a multiple of 5 (keyword 'maximum' at #)")
    message = unsatisfiable({"type": "integer", "minimum": 5, "maximum": 1})
    assert message.endswith("no integer from 5 to 1 (keyword 'maximum' at #)")
    message = unsatisfiable(
        {"properties": {"x": {"type": "number", "exclusiveMinimum": 1, "maximum": 1}}, "required": ["x"]}
    )
    assert message.endswith("no number above 1 to 1 (keyword 'maximum' at #/properties/x)")


def test_number_hints() -> None:
    node = root({"type": "number", "minimum": 0, "default": 5, "examples": [-1, 7.5]})
    assert isinstance(node, NumberNode) and node.hints == (5.0, 7.5)


# -- choices ------------------------------------------------------------------------------------


def test_enum_const_boolean_null_are_choices() -> None:
    assert root({"enum": ["a", "b"]}) == ChoiceNode(("a", "b"))
    assert root({"const": 3}) == ChoiceNode((3,))
    assert root({"type": "boolean"}) == ChoiceNode((True, False))
    assert root({"type": "null"}) == ChoiceNode((None,))


def test_enum_options_are_filtered_by_the_rest_of_the_schema() -> None:
    assert root({"type": "string", "enum": ["a", 1, "bb"], "maxLength": 1}) == ChoiceNode(("a",))
    assert root({"enum": [1, 2, 3], "allOf": [{"enum": [2, 3, 4]}], "not": {"const": 3}}) == ChoiceNode((2,))
    assert root({"enum": [1, 1.0, True]}) == ChoiceNode((1, True))


def test_empty_enum_intersection_is_impossible() -> None:
    message = unsatisfiable({"allOf": [{"enum": ["a"]}, {"enum": ["b"]}]})
    assert "(keyword 'enum' at #" in message


def test_type_union_with_null() -> None:
    assert root({"type": ["string", "null"]}) == UnionNode((ChoiceNode((None,)), StringNode()))


def test_anything_is_a_string_unless_excluded() -> None:
    assert root({}) == StringNode()
    assert isinstance(root({"not": {"type": "string"}}), NumberNode)


def test_false_is_impossible() -> None:
    assert unsatisfiable({"not": {}}).endswith("(keyword 'not' at #/not)")
    assert "(keyword 'false' at #/properties/gone)" in unsatisfiable(
        {"properties": {"gone": False}, "required": ["gone"]}
    )
    assert root({"properties": {"gone": False, "kept": {"type": "integer"}}}) == ObjectNode(
        (Property("kept", NumberNode(integer=True), False),)
    )


# -- objects ------------------------------------------------------------------------------------


def test_required_and_optional_properties() -> None:
    node = root(
        {
            "type": "object",
            "required": ["a"],
            "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
        }
    )
    assert node == ObjectNode(
        (Property("a", StringNode(), True), Property("b", NumberNode(integer=True), False))
    )


def test_required_property_not_declared_comes_from_additional_properties() -> None:
    node = root({"type": "object", "required": ["x"], "additionalProperties": {"type": "boolean"}})
    assert node == ObjectNode((Property("x", ChoiceNode((True, False)), True),))


def test_required_property_forbidden_by_additional_properties_is_impossible() -> None:
    unsatisfiable(
        {"type": "object", "required": ["x"], "properties": {"y": {}}, "additionalProperties": False}
    )


def test_pattern_properties_apply_to_declared_names() -> None:
    node = root({"properties": {"x_a": {"type": "string"}}, "patternProperties": {"^x_": {"maxLength": 3}}})
    assert node == ObjectNode((Property("x_a", StringNode(max_length=3), False),))


def test_min_properties_adds_names_from_pattern_properties() -> None:
    loaded = load_schema(
        {
            "type": "object",
            "minProperties": 2,
            "patternProperties": {"^[a-z]{3}_[0-9]$": {"type": "integer"}},
            "additionalProperties": False,
        }
    )
    tree = compile_schema(loaded)
    assert isinstance(tree.root, ObjectNode) and tree.root.min_properties == 2
    assert len(tree.root.properties) >= 2
    assert all(full_match("[a-z]{3}_[0-9]", p.name) for p in tree.root.properties)
    valid_instance(loaded, tree)


def test_min_properties_with_nothing_declared() -> None:
    loaded = load_schema({"type": "object", "minProperties": 1})
    valid_instance(loaded, compile_schema(loaded))


def test_max_properties_below_the_required_count_is_impossible() -> None:
    message = unsatisfiable({"required": ["a", "b"], "properties": {"a": {}, "b": {}}, "maxProperties": 1})
    assert "2 required properties exceed maxProperties" in message


def test_dependent_required_makes_targets_required() -> None:
    node = root(
        {"properties": {"card": {}, "billing": {}, "x": {}}, "dependentRequired": {"card": ["billing"]}}
    )
    assert isinstance(node, ObjectNode)
    assert {p.name: p.required for p in node.properties} == {"card": False, "billing": True, "x": False}


def test_draft4_schema_dependency_of_an_optional_property_leaves_it_out() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "properties": {"a": {}, "b": {}},
        "dependencies": {"a": {"required": ["zzz"], "properties": {"zzz": {"type": "integer"}}}},
    }
    node = root(schema)
    assert isinstance(node, ObjectNode) and [p.name for p in node.properties] == ["b"]
    schema["required"] = ["a"]
    node = root(schema)
    assert isinstance(node, ObjectNode)
    assert {p.name: p.required for p in node.properties} == {"a": True, "b": False, "zzz": True}


def test_property_names_drop_names_they_forbid() -> None:
    node = root({"properties": {"ok": {}, "Bad": {}}, "propertyNames": {"pattern": "^[a-z]+$"}})
    assert isinstance(node, ObjectNode) and [p.name for p in node.properties] == ["ok"]


def test_not_required_removes_the_property() -> None:
    node = root({"properties": {"a": {}, "b": {}}, "not": {"required": ["a"]}})
    assert isinstance(node, ObjectNode) and [p.name for p in node.properties] == ["b"]
    unsatisfiable({"properties": {"a": {}}, "required": ["a"], "not": {"required": ["a"]}})


def test_not_of_an_inexpressible_kind_is_listed_as_checked_after() -> None:
    tree = compiled({"type": "string", "not": {"pattern": "^x"}})
    assert tree.root == StringNode()
    assert [(u.pointer, u.keyword) for u in tree.unsupported] == [("/not", "not")]
