"""What the schema compiler's tests share: compiling a schema in one call, the one-line error of
a schema no value satisfies, and random instances made the way the sampler walks the tree."""

from __future__ import annotations

import json
import math
import random
import string
from typing import Any

import pytest

from aod_ops.errors import SchemaError
from aod_ops.schema import compile_schema, load_schema
from aod_ops.schema.load import LoadedSchema
from aod_ops.schema.nodes import (
    ArrayNode,
    ChoiceNode,
    CompiledSchema,
    Node,
    NumberNode,
    ObjectNode,
    StringNode,
    UnionNode,
)
from aod_ops.schema.patterns import complete


def compiled(schema: dict[str, Any], max_depth: int = 3) -> CompiledSchema:
    """``schema`` loaded and compiled."""
    return compile_schema(load_schema(schema), max_depth=max_depth)


def root(schema: dict[str, Any]) -> Node:
    """The root node ``schema`` compiles to."""
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
