"""Compile the object keywords into an ``ObjectNode``.

``properties``, ``required``, ``patternProperties``, ``additionalProperties`` and
``unevaluatedProperties`` give each property the conjunction of what every part says about it;
``propertyNames`` rules names out; ``minProperties``/``maxProperties`` bound the count (names
made from patternProperties, or generic ones, fill up to the minimum); ``dependentRequired`` and
the list form of ``dependencies`` make properties required or leave out the one whose dependency
cannot be there. ``not: {required}`` leaves properties out. Schema dependencies
(``dependentSchemas``) are branches: ``compile_combinators``.
"""

from __future__ import annotations

import random

from aod_ops.schema.compile_base import (
    SEED,
    CompilerBase,
    Impossible,
    Part,
    absent_names,
    at_most,
    int_or,
    strings,
)
from aod_ops.schema.compile_scalars import full_match_form
from aod_ops.schema.nodes import Node, ObjectNode, Property
from aod_ops.schema.patterns import UncheckedPattern, complete, search


class ObjectCompiler(CompilerBase):
    """The compiler's objects."""

    def _object(self, parts: list[Part], negative: list[Part], stack: tuple[int, ...]) -> ObjectNode:
        pointer = parts[0].pointer if parts else ""
        required: list[str] = []
        declared: list[str] = []
        for part in parts:
            required += [n for n in strings(part.get("required")) if n not in required]
            properties = part.get("properties")
            if isinstance(properties, dict):
                declared += [n for n in properties if n not in declared]
        absent: set[str] = set()
        for neg in negative:
            names = absent_names(neg, self.loaded)
            if names is None:
                continue
            if not names:
                raise Impossible(neg.pointer, "not", "every property that 'not' names is required")
            if len(names) == 1 or neg.get("anyOf") is not None:
                pick = names  # all of them must be absent
            else:
                pick = [n for n in names if n not in required][:1] or names[:1]  # one absent is enough
            blocked = [n for n in pick if n in required]
            if blocked:
                raise Impossible(neg.pointer, "not", f"'not' forbids required property {blocked[0]!r}")
            absent.update(pick)
        dependencies = _property_dependencies(parts)
        names = declared + [n for n in required if n not in declared]
        index = 0
        while index < len(names):
            names += [t for t in dependencies.get(names[index], []) if t not in names]
            index += 1
        min_properties = at_most(
            max([int_or(p.get("minProperties"), 0) for p in parts], default=0), "minProperties", parts
        )
        maxima = [
            int_or(p.get("maxProperties"), -1) for p in parts if int_or(p.get("maxProperties"), -1) >= 0
        ]
        max_properties = min(maxima) if maxima else None
        if max_properties is not None and min_properties > max_properties:
            raise Impossible(
                pointer, "minProperties", f"{min_properties} exceeds maxProperties {max_properties}"
            )

        nodes: dict[str, Node] = {}
        for name in names:
            if name in absent:
                continue
            try:
                nodes[name] = self._property(parts, name, declared, stack)
            except Impossible:
                if name in required:
                    raise
        # A present property makes its dependencies required; one whose dependency cannot be
        # there is left out, and the dependencies of what remains are required.
        changed = True
        while changed:
            changed = False
            for source, targets in dependencies.items():
                if source in nodes and any(t not in nodes for t in targets):
                    if source in required:
                        missing = next(t for t in targets if t not in nodes)
                        raise Impossible(
                            pointer,
                            "dependentRequired",
                            f"{source!r} needs {missing!r}, which cannot be there",
                        )
                    del nodes[source]
                    changed = True
        must = set(required)
        for source, targets in dependencies.items():
            if source in nodes:
                must.update(targets)
        for name in required:
            if name not in nodes:
                raise Impossible(pointer, "required", f"required property {name!r} cannot be present")
        if max_properties is not None and len(must) > max_properties:
            raise Impossible(
                pointer, "maxProperties", f"{len(must)} required properties exceed maxProperties"
            )
        if len(nodes) < min_properties:
            self._extra_properties(parts, nodes, declared, min_properties, absent, stack)
        properties = tuple(Property(name, node, name in must) for name, node in nodes.items())
        return ObjectNode(properties=properties, min_properties=min_properties, max_properties=max_properties)

    def _property(self, parts: list[Part], name: str, declared: list[str], stack: tuple[int, ...]) -> Node:
        """The node of property ``name``: every part's say on it (properties, patterns, additional)."""
        subparts: list[Part] = []
        for part in parts:
            matched = False
            properties = part.get("properties")
            if isinstance(properties, dict) and name in properties:
                subparts.append(part.sub(properties[name], "properties", name))
                matched = True
            patterns = part.get("patternProperties")
            if isinstance(patterns, dict):
                for pattern, schema in patterns.items():
                    if self._search(part, pattern, name):
                        subparts.append(part.sub(schema, "patternProperties", pattern))
                        matched = True
            if not matched:
                keyword = "additionalProperties"
                extra = part.get(keyword)
                if extra is None and name not in declared:
                    keyword, extra = "unevaluatedProperties", part.get("unevaluatedProperties")
                if extra is not None:
                    subparts.append(part.sub(extra, keyword))
            names = part.get("propertyNames")
            if names is not None and not self._valid(part.sub(names, "propertyNames"), name):
                raise Impossible(
                    part.at("propertyNames"), "propertyNames", f"{name!r} is not an allowed name"
                )
        return self.compile(subparts, stack)

    def _search(self, part: Part, pattern: str, name: str) -> bool:
        """Whether a patternProperties pattern matches ``name``; one that cannot be checked in
        time makes the property impossible, as validation would reject it."""
        try:
            return search(pattern, name)
        except UncheckedPattern as error:
            raise Impossible(part.at("patternProperties", pattern), "patternProperties", str(error)) from None

    def _extra_properties(
        self,
        parts: list[Part],
        nodes: dict[str, Node],
        declared: list[str],
        min_properties: int,
        absent: set[str],
        stack: tuple[int, ...],
    ) -> None:
        """Add properties named after patternProperties (or generic names) to reach minProperties."""
        rng = random.Random(SEED)
        candidates: list[str] = []
        for part in parts:
            patterns = part.get("patternProperties")
            for pattern in patterns if isinstance(patterns, dict) else {}:
                for _ in range(min_properties):
                    name = complete(full_match_form(pattern), "", rng, min_length=1, max_length=32)
                    if name is not None:
                        candidates.append(name)
        candidates += [f"property{i + 1}" for i in range(min_properties)]
        for name in candidates:
            if len(nodes) >= min_properties:
                return
            if name in nodes or name in absent:
                continue
            try:
                nodes[name] = self._property(parts, name, declared, stack)
            except Impossible:
                continue
        if len(nodes) >= min_properties:
            return
        raise Impossible(
            parts[0].pointer if parts else "", "minProperties", "not enough properties can be added"
        )


def _property_dependencies(parts: list[Part]) -> dict[str, list[str]]:
    """dependentRequired and the list form of draft-4/7 dependencies, merged over the parts."""
    merged: dict[str, list[str]] = {}
    for part in parts:
        for keyword in ("dependentRequired", "dependencies"):
            # Read past "consumed": the schema form of "dependencies" was applied, the list form not.
            value = part.schema.get(keyword) if isinstance(part.schema, dict) else None
            if not isinstance(value, dict):
                continue
            for source, targets in value.items():
                if isinstance(targets, list):
                    merged.setdefault(source, [])
                    merged[source] += [t for t in strings(targets) if t not in merged[source]]
    return merged
