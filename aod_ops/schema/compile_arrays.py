"""Compile the array keywords into an ``ArrayNode``.

``prefixItems``/``items`` (and draft 4 to 2019-09's ``items`` array with ``additionalItems``),
``unevaluatedItems`` for the items past the tuple, ``minItems``/``maxItems``, ``uniqueItems``
(the length capped by how many distinct values the item node has) and ``contains`` with
``minContains``; ``maxContains`` is left to validation.
"""

from __future__ import annotations

import math
from typing import Any

from aod_ops.schema.compile_base import CompilerBase, Impossible, Part, at_most, int_or
from aod_ops.schema.nodes import ArrayNode, ChoiceNode, Node, NumberNode, ObjectNode, StringNode, UnionNode

EXTRA_ITEMS = 3  # array items generated past the minimum (or the prefix) at most


class ArrayCompiler(CompilerBase):
    """The compiler's arrays."""

    def _array(self, parts: list[Part], stack: tuple[int, ...]) -> ArrayNode:
        pointer = parts[0].pointer if parts else ""
        legacy = self.loaded.draft != "draft2020-12"
        tuples: list[tuple[Part, list[Any], str]] = []  # (part, positional schemas, their keyword)
        rests: list[Part | None] = []  # each part's schema for items after its tuple (None: any)
        for part in parts:
            items = part.get("items")
            positional, keyword, rest_keyword = [], "items", "additionalItems"
            if legacy and isinstance(items, list):
                positional, rest = items, part.get("additionalItems")
            elif not legacy:
                positional, keyword, rest_keyword = part.get("prefixItems") or [], "prefixItems", "items"
                rest = items
            else:
                rest, rest_keyword = items, "items"
            if rest is None:
                rest, rest_keyword = part.get("unevaluatedItems"), "unevaluatedItems"
            tuples.append((part, positional if isinstance(positional, list) else [], keyword))
            rests.append(part.sub(rest, rest_keyword) if rest is not None else None)
        min_items = at_most(max([int_or(p.get("minItems"), 0) for p in parts], default=0), "minItems", parts)
        maxima = [int_or(p.get("maxItems"), -1) for p in parts if int_or(p.get("maxItems"), -1) >= 0]
        max_items = min(maxima) if maxima else None
        unique = any(p.get("uniqueItems") is True for p in parts)

        width = max((len(positional) for _, positional, _ in tuples), default=0)
        prefix: list[Node] = []
        for index in range(width):
            if max_items is not None and index >= max_items:
                break
            subparts = [
                part.sub(positional[index], keyword, index) if index < len(positional) else rest
                for (part, positional, keyword), rest in zip(tuples, rests, strict=True)
            ]
            try:
                prefix.append(self.compile([p for p in subparts if p is not None], stack))
            except Impossible:
                if index < min_items:
                    raise
                break
        rest_parts = [p for p in rests if p is not None]
        item_node: Node | None = None
        if len(prefix) == width:
            try:
                item_node = self.compile(rest_parts, stack)
            except Impossible:
                item_node = None
        contains_node = self._contains(parts, rest_parts, stack)
        if contains_node is not None and item_node is None:
            raise Impossible(pointer, "contains", "no item after the tuple can satisfy 'contains'")
        if contains_node is not None:
            counts = [int_or(p.get("minContains"), 1) for p in parts if p.get("contains") is not None]
            least = max(counts, default=1)
            if least > 1:
                item_node = contains_node  # every further item satisfies 'contains'
            min_items = max(min_items, len(prefix) + least)
            for part in parts:
                if part.get("maxContains") is not None:
                    self.note(part.at("maxContains"), "maxContains", "not compiled; checked after generation")
        if unique and item_node is not None and not prefix:
            # Distinct items run out when the item node has few values (an enum, an empty object).
            distinct = _value_count(item_node, limit=max(min_items, EXTRA_ITEMS) + 1)
            max_items = distinct if max_items is None else min(max_items, distinct)
        most = len(prefix) if item_node is None else max(min_items, len(prefix)) + EXTRA_ITEMS
        max_items = most if max_items is None else min(max_items, most)
        if min_items > max_items:
            raise Impossible(
                pointer, "minItems", f"minItems {min_items} cannot be reached (at most {max_items})"
            )
        return ArrayNode(
            prefix=tuple(prefix),
            items=item_node,
            min_items=min_items,
            max_items=max_items,
            unique=unique,
            contains=contains_node,
        )

    def _contains(self, parts: list[Part], rest_parts: list[Part], stack: tuple[int, ...]) -> Node | None:
        wanted = [
            p.sub(p.get("contains"), "contains")
            for p in parts
            if p.get("contains") is not None and int_or(p.get("minContains"), 1) > 0
        ]
        if not wanted:
            return None
        return self.compile(rest_parts + wanted, stack)


def _value_count(node: Node, limit: int) -> int:
    """How many distinct values ``node`` can produce, counted up to ``limit``."""
    if isinstance(node, ChoiceNode):
        return min(len(node.options), limit)
    if isinstance(node, UnionNode):
        return min(sum(_value_count(b, limit) for b in node.branches), limit)
    if isinstance(node, ObjectNode):
        count = 1
        for prop in node.properties:
            count *= _value_count(prop.node, limit) + (0 if prop.required else 1)
            if count >= limit:
                return limit
        return count
    if (
        isinstance(node, NumberNode)
        and node.integer
        and node.minimum is not None
        and node.maximum is not None
    ):
        step = node.multiple_of or 1
        return min(max(0, math.floor(node.maximum / step) - math.ceil(node.minimum / step) + 1), limit)
    if isinstance(node, StringNode) and node.max_length == 0:
        return 1
    if isinstance(node, ArrayNode) and node.max_items == 0:
        return 1
    return limit
