"""The compiled form of a JSON Schema: a tree of structure nodes and typed value slots.

The compiler (``compile.py``) turns a schema into this tree once; the DLM sampler walks it per
record, deciding every choice (an enum value, an optional property, a union branch, an array's
length) from the model's scores over the legal options, and infilling the value slots
(``StringNode``, ``NumberNode``) by masked diffusion. The structure around the slots is literal
JSON text, so a record's shape never depends on the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

from aod_ops.jsonvalues import pointer_tokens


@dataclass(frozen=True)
class StringNode:
    """A string value slot.

    ``pattern`` is a regular expression the whole value must match (the compiler anchors JSON
    Schema's search semantics into a full match, and turns a ``format`` into such a pattern);
    ``format`` is kept for hints and reporting. ``hints`` are example values from ``default``,
    ``examples`` and ``description``.
    """

    min_length: int = 0
    max_length: int | None = None
    pattern: str | None = None
    format: str | None = None
    hints: tuple[str, ...] = ()


@dataclass(frozen=True)
class NumberNode:
    """A number or integer value slot with inclusive or exclusive bounds and ``multipleOf``."""

    integer: bool = False
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    multiple_of: float | None = None
    hints: tuple[float, ...] = ()


@dataclass(frozen=True)
class ChoiceNode:
    """A value chosen from a fixed list of JSON values: enum, const, boolean or null."""

    options: tuple[Any, ...]


@dataclass(frozen=True)
class Property:
    """One property of an object: its name, its value's node, and whether it is required."""

    name: str
    node: Node
    required: bool


@dataclass(frozen=True)
class ObjectNode:
    """An object. Optional properties are chosen per record; the count stays within bounds."""

    properties: tuple[Property, ...] = ()
    min_properties: int = 0
    max_properties: int | None = None


@dataclass(frozen=True)
class ArrayNode:
    """An array: ``prefix`` items by position (prefixItems), then ``items`` up to the bounds.

    ``contains``, when set, is the node of the first item after the prefix, so that at least one
    item satisfies it; ``unique`` asks the sampler to keep items distinct.
    """

    prefix: tuple[Node, ...] = ()
    items: Node | None = None
    min_items: int = 0
    max_items: int | None = None
    unique: bool = False
    contains: Node | None = None


@dataclass(frozen=True)
class UnionNode:
    """One of several branches (oneOf, anyOf, a type union, if/then/else), chosen per record."""

    branches: tuple[Node, ...]


Node: TypeAlias = StringNode | NumberNode | ChoiceNode | ObjectNode | ArrayNode | UnionNode


@dataclass(frozen=True)
class Unsupported:
    """A keyword the compiler could not honour at ``pointer`` (a JSON pointer into the schema).

    Records are still generated and validated afterwards, so a record that breaks the keyword is
    reported invalid rather than passed silently.
    """

    pointer: str
    keyword: str
    reason: str


@dataclass(frozen=True)
class CompiledSchema:
    """The result of compiling a schema: the node tree and what it could not honour."""

    root: Node
    unsupported: tuple[Unsupported, ...] = field(default=())


def is_choice_leaf(root: Node, pointer: str) -> bool:
    """Whether the value at instance ``pointer`` always comes from a fixed list of values.

    True when every branch of the tree that can produce a value at ``pointer`` produces it from
    a ``ChoiceNode`` (an enum, const, boolean or null; also a leaf inside an enum's object or
    array option). False when some branch produces it from a string, number, object or array
    slot, or when no branch can produce it. The metrics leave such leaves out of field overlap:
    copying them from the reference is unavoidable.
    """
    return _choice_at(root, pointer_tokens(pointer)) is True


def _choice_at(node: Node, tokens: list[str]) -> bool | None:
    """True/False as for ``is_choice_leaf``; None when ``node`` cannot produce the pointer."""
    if isinstance(node, ChoiceNode):
        return True if any(_has_path(option, tokens) for option in node.options) else None
    if isinstance(node, UnionNode):
        return _all_of(_choice_at(branch, tokens) for branch in node.branches)
    if not tokens:
        return False
    head, rest = tokens[0], tokens[1:]
    if isinstance(node, ObjectNode):
        found = [p.node for p in node.properties if p.name == head]
        return _choice_at(found[0], rest) if found else None
    if isinstance(node, ArrayNode) and head.isdigit():
        index = int(head)
        if node.max_items is not None and index >= node.max_items:
            return None
        if index < len(node.prefix):
            return _choice_at(node.prefix[index], rest)
        # The sampler writes ``contains`` right after the prefix, then ``items``.
        if index == len(node.prefix) and node.contains is not None:
            return _choice_at(node.contains, rest)
        return _choice_at(node.items, rest) if node.items is not None else None
    return None


def _all_of(results: Any) -> bool | None:
    known = [r for r in results if r is not None]
    return all(known) if known else None


def _has_path(value: Any, tokens: list[str]) -> bool:
    for token in tokens:
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            return False
    return True
