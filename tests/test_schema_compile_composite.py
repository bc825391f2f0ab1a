"""The schema compiler, keywords that compose schemas: arrays, combinators, references and
recursion; and ``is_choice_leaf`` on the compiled tree."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from aod_ops.schema import compile_schema, is_choice_leaf, load_schema
from aod_ops.schema.load import LoadedSchema
from aod_ops.schema.nodes import (
    ArrayNode,
    ChoiceNode,
    Node,
    NumberNode,
    ObjectNode,
    Property,
    StringNode,
    UnionNode,
)
from tests.schema_compile_helpers import compiled, instantiate, root, unsatisfiable, valid_instance

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
