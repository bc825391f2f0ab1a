"""The schema compiler: each keyword family, edge cases, recursion, and instances that validate."""

from __future__ import annotations

import json
import math
import random
import string
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aod_ops.errors import SchemaError
from aod_ops.schema import compile_schema, is_choice_leaf, load_schema
from aod_ops.schema.load import LoadedSchema
from aod_ops.schema.nodes import (
    ArrayNode,
    ChoiceNode,
    CompiledSchema,
    Node,
    NumberNode,
    ObjectNode,
    Property,
    StringNode,
    UnionNode,
)
from aod_ops.schema.patterns import FORMAT_PATTERNS, complete, full_match

FIXTURES = Path(__file__).parent / "fixtures" / "schemas"
# Fixtures with no valid instance at all (the schema contradicts itself), and why.
UNSATISFIABLE = {"glaiveai2k_calculate_area_2f92f3ea.json": "not"}


def compiled(schema: dict[str, Any], max_depth: int = 3) -> CompiledSchema:
    return compile_schema(load_schema(schema), max_depth=max_depth)


def root(schema: dict[str, Any]) -> Node:
    return compiled(schema).root


def unsatisfiable(schema: dict[str, Any], max_depth: int = 3) -> str:
    """The one-line ``SchemaError`` of a schema no value can satisfy."""
    with pytest.raises(SchemaError) as raised:
        compiled(schema, max_depth)
    message = str(raised.value)
    assert message.startswith("<dict>: no value can satisfy the schema: ") and "\n" not in message
    return message


def instantiate(node: Node, rng: random.Random) -> Any:
    """A random value walking the tree the way the sampler does (random choices, filler text)."""
    if isinstance(node, ChoiceNode):
        return rng.choice(node.options)
    if isinstance(node, StringNode):
        if node.pattern is not None:
            text = complete(node.pattern, "", rng, node.min_length, node.max_length)
            assert text is not None, node.pattern
            return text
        top = node.min_length + 8 if node.max_length is None else min(node.max_length, node.min_length + 8)
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(node.min_length, top)))
    if isinstance(node, NumberNode):
        return _number(node, rng)
    if isinstance(node, UnionNode):
        assert node.branches, "an empty union has no value"
        return instantiate(rng.choice(node.branches), rng)
    if isinstance(node, ObjectNode):
        optional = [p for p in node.properties if not p.required]
        required = len(node.properties) - len(optional)
        count = rng.randint(0, len(optional))
        count = max(count, node.min_properties - required)
        if node.max_properties is not None:
            count = min(count, node.max_properties - required)
        chosen = {p.name for p in rng.sample(optional, count)}
        return {p.name: instantiate(p.node, rng) for p in node.properties if p.required or p.name in chosen}
    assert isinstance(node, ArrayNode)
    value = [instantiate(n, rng) for n in node.prefix]
    if node.contains is not None:
        value.append(instantiate(node.contains, rng))
    most = node.max_items if node.max_items is not None else node.min_items + 3
    length = rng.randint(max(node.min_items, len(value)), max(node.min_items, len(value), most))
    for _ in range(50 + 2 * length):
        if len(value) >= length or node.items is None:
            break
        item = instantiate(node.items, rng)
        if not (
            node.unique and json.dumps(item, sort_keys=True) in [json.dumps(v, sort_keys=True) for v in value]
        ):
            value.append(item)
    return value


def _number(node: NumberNode, rng: random.Random) -> int | float:
    low = (
        node.minimum if node.minimum is not None else (node.maximum - 100 if node.maximum is not None else 0)
    )
    high = node.maximum if node.maximum is not None else low + 100
    step = node.multiple_of or (1 if node.integer else None)
    for _ in range(100):
        if step is not None:
            first, last = math.ceil(low / step), math.floor(high / step)
            value: int | float = rng.randint(first, max(first, last)) * step
            if node.integer:
                value = int(value)
        else:
            value = round(rng.uniform(low, high), 3)
        if not (node.exclusive_minimum and value == node.minimum) and not (
            node.exclusive_maximum and value == node.maximum
        ):
            return value
    raise AssertionError(f"no value for {node}")


def valid_instance(loaded: LoadedSchema, tree: CompiledSchema, tries: int = 3) -> Any:
    """An instance of ``tree`` that validates against the schema (the last issues when none)."""
    issues: list[Any] = []
    for seed in range(tries):
        value = instantiate(tree.root, random.Random(seed))
        issues = loaded.errors(value)
        if not issues:
            return value
    raise AssertionError(f"no valid instance: {issues}")


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


# -- arrays -------------------------------------------------------------------------------------


def test_items_and_length_cap() -> None:
    assert root({"type": "array", "items": {"type": "integer"}}) == ArrayNode(
        items=NumberNode(integer=True), max_items=3
    )
    node = root({"type": "array", "minItems": 2, "maxItems": 100})
    assert node == ArrayNode(items=StringNode(), min_items=2, max_items=5)


def test_draft4_tuple_items_without_additional_items() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "items": [{"type": "string"}, {"type": "integer"}],
        "additionalItems": False,
    }
    assert root(schema) == ArrayNode(prefix=(StringNode(), NumberNode(integer=True)), items=None, max_items=2)


def test_prefix_items_2020_12() -> None:
    node = root(
        {"type": "array", "prefixItems": [{"const": "x"}], "items": {"type": "boolean"}, "minItems": 2}
    )
    assert node == ArrayNode(
        prefix=(ChoiceNode(("x",)),), items=ChoiceNode((True, False)), min_items=2, max_items=5
    )


def test_unique_items_of_an_enum_cap_the_length() -> None:
    node = root({"type": "array", "uniqueItems": True, "items": {"enum": ["a", "b"]}, "minItems": 1})
    assert node == ArrayNode(items=ChoiceNode(("a", "b")), min_items=1, max_items=2, unique=True)
    unsatisfiable({"type": "array", "uniqueItems": True, "items": {"type": "boolean"}, "minItems": 3})


def test_contains_puts_a_matching_item_first() -> None:
    node = root({"type": "array", "items": {"type": "integer"}, "contains": {"minimum": 5}})
    assert isinstance(node, ArrayNode)
    assert node.contains == NumberNode(integer=True, minimum=5)
    assert node.min_items == 1


def test_max_contains_is_listed() -> None:
    tree = compiled({"type": "array", "contains": {"type": "integer"}, "maxContains": 2})
    assert [(u.pointer, u.keyword) for u in tree.unsupported] == [("/maxContains", "maxContains")]


# -- combinators --------------------------------------------------------------------------------


def test_all_of_merges() -> None:
    node = root(
        {
            "allOf": [
                {"properties": {"a": {"type": "string"}}},
                {"properties": {"b": {"type": "integer"}}},
                {"required": ["a"]},
            ]
        }
    )
    assert node == ObjectNode(
        (Property("a", StringNode(), True), Property("b", NumberNode(integer=True), False))
    )


def test_any_of_is_a_union() -> None:
    assert root({"anyOf": [{"type": "string"}, {"type": "integer"}]}) == UnionNode(
        (StringNode(), NumberNode(integer=True))
    )


def test_one_of_branches_exclude_each_other_by_required_properties() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {}, "b": {}},
        "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
    }
    tree = compiled(schema)
    assert tree.unsupported == ()
    assert isinstance(tree.root, UnionNode)
    shapes = sorted(
        tuple((p.name, p.required) for p in b.properties)
        for b in tree.root.branches
        if isinstance(b, ObjectNode)
    )
    assert shapes == [(("a", True),), (("b", True),)]
    loaded = load_schema(schema)
    for seed in range(10):
        assert loaded.errors(instantiate(tree.root, random.Random(seed))) == []


def test_one_of_that_cannot_be_made_exclusive_is_listed() -> None:
    tree = compiled({"oneOf": [{"type": "integer"}, {"type": "number", "maximum": 3}]})
    assert [(u.pointer, u.keyword) for u in tree.unsupported] == [("/oneOf", "oneOf")]


def test_one_of_exclusive_by_type_or_discriminator_is_not_listed() -> None:
    assert compiled({"oneOf": [{"type": "string"}, {"type": "null"}]}).unsupported == ()
    kinds = [{"properties": {"kind": {"const": k}, "v": {}}, "required": ["kind"]} for k in ("a", "b")]
    assert compiled({"oneOf": kinds}).unsupported == ()


def test_if_then_else_with_an_expressible_condition() -> None:
    schema = {
        "properties": {"a": {}, "b": {}, "c": {}},
        "if": {"required": ["a"]},
        "then": {"required": ["b"]},
        "else": {"required": ["c"]},
    }
    tree = compiled(schema)
    assert isinstance(tree.root, UnionNode) and len(tree.root.branches) == 2
    loaded = load_schema(schema)
    for seed in range(10):
        assert loaded.errors(instantiate(tree.root, random.Random(seed))) == []


def test_if_then_keeps_only_the_then_branch_when_not_if_is_inexpressible() -> None:
    schema = {
        "properties": {"country": {"type": "string"}, "zip": {"type": "string"}},
        "if": {"properties": {"country": {"const": "US"}}, "required": ["country"]},
        "then": {"properties": {"zip": {"pattern": "^[0-9]{5}$"}}, "required": ["zip"]},
        "else": {"properties": {"zip": {"maxLength": 3}}},
    }
    tree = compiled(schema)
    assert isinstance(tree.root, ObjectNode)
    assert {p.name: p.required for p in tree.root.properties} == {"country": True, "zip": True}
    valid_instance(load_schema(schema), tree)


# -- references and recursion -------------------------------------------------------------------


TREE = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$ref": "#/definitions/node",
    "definitions": {
        "node": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/definitions/node"}},
            },
        }
    },
}


def depth(node: Node) -> int:
    if isinstance(node, ObjectNode):
        return 1 + max((depth(p.node) for p in node.properties), default=0)
    if isinstance(node, ArrayNode):
        return max([depth(n) for n in (*node.prefix, node.items, node.contains) if n is not None], default=0)
    if isinstance(node, UnionNode):
        return max((depth(b) for b in node.branches), default=0)
    return 0


@pytest.mark.parametrize("max_depth", [1, 2, 3, 5])
def test_recursion_is_bounded_by_max_depth(max_depth: int) -> None:
    tree = compiled(TREE, max_depth=max_depth)
    assert tree.unsupported == ()
    assert depth(tree.root) == max_depth
    valid_instance(load_schema(TREE), tree)


def test_required_infinite_recursion_is_reported() -> None:
    message = unsatisfiable(
        {
            "$defs": {
                "n": {"type": "object", "required": ["next"], "properties": {"next": {"$ref": "#/$defs/n"}}}
            },
            "$ref": "#/$defs/n",
        }
    )
    assert "recursion through '#/$defs/n' deeper than 3 (keyword '$ref' at #" in message


def test_recursion_prefers_branches_that_end() -> None:
    schema = {
        "$defs": {
            "v": {
                "anyOf": [
                    {"type": "integer"},
                    {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/v"}},
                ]
            }
        },
        "$ref": "#/$defs/v",
    }
    tree = compiled(schema, max_depth=2)
    valid_instance(load_schema(schema), tree)


def test_wide_recursive_schema_compiles_fast() -> None:
    names = [f"p{i}" for i in range(25)]
    schema = {
        "$defs": {"n": {"type": "object", "properties": {n: {"$ref": "#/$defs/n"} for n in names}}},
        "$ref": "#/$defs/n",
    }
    started = time.monotonic()
    tree = compiled(schema)
    assert time.monotonic() - started < 3  # generous: the test machine is shared
    assert isinstance(tree.root, ObjectNode) and len(tree.root.properties) == 25


def test_refs_to_other_files_compile(tmp_path: Path) -> None:
    (tmp_path / "money.json").write_text(json.dumps({"type": "number", "minimum": 0, "multipleOf": 0.01}))
    (tmp_path / "order.json").write_text(
        json.dumps({"type": "object", "required": ["total"], "properties": {"total": {"$ref": "money.json"}}})
    )
    node = compile_schema(load_schema(tmp_path / "order.json")).root
    assert node == ObjectNode((Property("total", NumberNode(minimum=0, multiple_of=0.01), True),))


def test_draft7_ignores_keywords_beside_ref_and_2019_merges_them() -> None:
    defs = {"s": {"type": "string"}}
    old = root(
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": defs,
            "$ref": "#/definitions/s",
            "maxLength": 2,
        }
    )
    new = root({"$defs": defs, "$ref": "#/$defs/s", "maxLength": 2})
    assert old == StringNode()
    assert new == StringNode(max_length=2)


def test_an_enforced_keyword_the_compiler_does_not_know_is_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    def even(validator: Any, wanted: Any, instance: Any, schema: Any) -> Any:
        if wanted and isinstance(instance, int) and instance % 2:
            yield jsonschema.ValidationError("odd")

    extended = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"even": even})
    monkeypatch.setattr(LoadedSchema, "validator_class", property(lambda self: extended))
    tree = compiled({"properties": {"n": {"type": "integer", "even": True}}})
    assert [(u.pointer, u.keyword) for u in tree.unsupported] == [("/properties/n/even", "even")]


def test_annotations_are_not_listed() -> None:
    schema = {
        "title": "T",
        "description": "d",
        "$comment": "c",
        "examples": ["x"],
        "readOnly": True,
        "deprecated": True,
        "contentMediaType": "text/plain",
        "x-custom": 1,
        "type": "string",
    }
    assert compiled(schema).unsupported == ()


# -- is_choice_leaf -----------------------------------------------------------------------------


def test_is_choice_leaf() -> None:
    schema = {
        "properties": {
            "kind": {"enum": ["a", "b"]},
            "flag": {"type": "boolean"},
            "name": {"type": "string"},
            "maybe": {"type": ["string", "null"]},
            "tags": {"type": "array", "items": {"const": "t"}},
            "pair": {"type": "array", "prefixItems": [{"const": 1}, {"type": "integer"}]},
            "fixed": {"const": {"deep": [1, 2]}},
            "either": {"anyOf": [{"const": 1}, {"enum": [2, 3]}]},
        }
    }
    tree = root(schema)
    expected = {
        "/kind": True,
        "/flag": True,
        "/name": False,
        "/maybe": False,
        "/tags/0": True,
        "/tags/2": True,
        "/pair/0": True,
        "/pair/1": False,
        "/fixed": True,
        "/fixed/deep/1": True,
        "/either": True,
        "/nothing": False,
        "": False,
    }
    assert {p: is_choice_leaf(tree, p) for p in expected} == expected


# -- real schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_fixture_compiles_fast_and_a_naive_instance_validates(path: Path) -> None:
    started = time.monotonic()
    loaded = load_schema(path)
    if path.name in UNSATISFIABLE:
        with pytest.raises(
            SchemaError, match=f"no value can satisfy the schema: .*keyword '{UNSATISFIABLE[path.name]}'"
        ):
            compile_schema(loaded)
        return
    tree = compile_schema(loaded)
    assert time.monotonic() - started < 2  # generous: the test machine is shared; a hang is what it catches
    assert not (isinstance(tree.root, UnionNode) and not tree.root.branches), tree.unsupported
    valid_instance(loaded, tree)


def test_fixture_unsupported_keywords() -> None:
    listed = {
        path.name: sorted({(u.pointer, u.keyword) for u in compile_schema(load_schema(path)).unsupported})
        for path in sorted(FIXTURES.glob("*.json"))
        if path.name not in UNSATISFIABLE
    }
    assert {name: items for name, items in listed.items() if items} == {
        "github_medium_o81108.json": [
            ("/definitions/component/oneOf", "oneOf"),
            ("/definitions/function/properties/arguments/oneOf", "oneOf"),
            ("/definitions/sequence/properties/items/oneOf", "oneOf"),
        ],
        # oneOf branches not known to exclude each other: checked on the record afterwards.
        "github_medium_o83286.json": [("/definitions/attribute/oneOf", "oneOf")],
    }


# -- property test ------------------------------------------------------------------------------

_LEAVES: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("string")},
        optional={
            "minLength": st.integers(0, 4),
            "maxLength": st.integers(0, 8),
            "pattern": st.sampled_from(["^[a-z]+$", "[0-9]", "^ab", "x$"]),
            "format": st.sampled_from(["date", "email", "uuid", "ipv4", "topic"]),
        },
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["integer", "number"])},
        optional={
            "minimum": st.integers(-5, 5),
            "maximum": st.integers(-5, 20),
            "exclusiveMinimum": st.integers(-5, 5),
            "multipleOf": st.sampled_from([2, 3, 0.5]),
        },
    ),
    st.fixed_dictionaries(
        {
            "enum": st.lists(
                st.one_of(st.integers(0, 3), st.sampled_from(["a", "b"]), st.none()), min_size=1, max_size=4
            )
        }
    ),
    st.just({"type": "boolean"}),
    st.just({}),
)


def _composite(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    names = st.sampled_from(["a", "b", "c", "d"])
    required = st.lists(names, max_size=2, unique=True)
    objects = st.fixed_dictionaries(
        {"type": st.just("object"), "properties": st.dictionaries(names, children, max_size=3)},
        optional={
            "required": required,
            "additionalProperties": st.booleans(),
            "minProperties": st.integers(0, 2),
            "maxProperties": st.integers(1, 3),
            "dependentRequired": st.dictionaries(names, required, max_size=2),
            "not": st.one_of(st.fixed_dictionaries({"required": required}), st.just({"type": "null"})),
            "if": st.fixed_dictionaries({"required": required}),
            "then": st.fixed_dictionaries({"required": required}),
            "else": st.fixed_dictionaries({"required": required}),
        },
    )
    arrays = st.fixed_dictionaries(
        {"type": st.just("array"), "items": children},
        optional={
            "minItems": st.integers(0, 3),
            "maxItems": st.integers(0, 5),
            "uniqueItems": st.booleans(),
            "contains": children,
        },
    )
    branches = st.lists(children, min_size=1, max_size=3)
    unions = st.one_of(
        st.fixed_dictionaries({"anyOf": branches}),
        st.fixed_dictionaries({"oneOf": branches}),
        st.fixed_dictionaries({"allOf": st.lists(children, min_size=1, max_size=2)}),
        st.fixed_dictionaries(
            {"type": st.just(["string", "null"])}, optional={"not": st.just({"const": "x"})}
        ),
    )
    return st.one_of(objects, arrays, unions)


SCHEMAS = st.recursive(_LEAVES, _composite, max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=SCHEMAS, seed=st.integers(0, 1000))
def test_compiled_schemas_give_valid_instances_or_say_why(schema: dict[str, Any], seed: int) -> None:
    loaded = load_schema(schema)
    try:
        tree = compile_schema(loaded)
    except SchemaError as error:  # an impossible schema says why, on one line
        assert "no value can satisfy the schema: " in str(error) and "\n" not in str(error)
        return
    value = instantiate(tree.root, random.Random(seed))
    issues = loaded.errors(value)
    assert not issues or tree.unsupported, (value, issues)


# -- hostile schemas ----------------------------------------------------------------------------


def test_a_pattern_property_that_times_out_on_a_name_leaves_the_property_out() -> None:
    name = "g" * 40 + "!"
    schema = {"properties": {name: {}, "kept": {"type": "integer"}}, "patternProperties": {"^(g|g)+$": {}}}
    started = time.monotonic()
    node = root(schema)
    assert isinstance(node, ObjectNode) and [p.name for p in node.properties] == ["kept"]
    message = unsatisfiable({**schema, "required": [name]})
    assert time.monotonic() - started < 10
    assert "pattern '^(g|g)+$' timed out" in message
    assert message.endswith("(keyword 'patternProperties' at #/patternProperties/^(g|g)+$)")


def test_enum_options_a_pattern_times_out_on_are_left_out() -> None:
    evil = "h" * 40 + "!"
    assert root({"type": "string", "enum": ["hh", evil], "pattern": "^(h|h)+$"}) == ChoiceNode(("hh",))


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "string", "minLength": 10**9}, "minLength 1000000000 at # is over the limit of 4096"),
        ({"type": "array", "minItems": 5000}, "minItems 5000 at # is over the limit of 1000"),
        (
            {"properties": {"a": {"type": "object", "minProperties": 10**9}}, "required": ["a"]},
            "minProperties 1000000000 at #/properties/a is over the limit of 1000",
        ),
    ],
)
def test_a_value_asked_to_be_huge_is_refused_at_once_naming_the_limit(
    schema: dict[str, Any], message: str
) -> None:
    started = time.monotonic()
    with pytest.raises(SchemaError, match=message):
        compile_schema(load_schema(schema))
    assert time.monotonic() - started < 5  # a billion names or characters are never built
