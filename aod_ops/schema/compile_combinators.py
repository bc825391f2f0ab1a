"""Compile the combinators: ``$ref``, ``allOf``, ``not``, ``anyOf``, ``oneOf``, ``if``/``then``/``else``.

``$ref`` (with ``$dynamicRef``/``$recursiveRef``, resolved statically) and ``allOf`` are flattened
into the conjunction, ``not`` into a negated part; ``anyOf``, ``oneOf`` and ``if`` become union
branches, each compiled as its own conjunction, and schema dependencies (``dependentSchemas``,
the schema form of ``dependencies``) become a part or the absence of their property. ``oneOf``
branches exclude each other where that is expressible (see ``compile.py``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aod_ops.errors import SchemaError
from aod_ops.schema.compile_base import (
    CompilerBase,
    Impossible,
    Part,
    absent_names,
    json_key,
    strings,
    validation_keys,
)
from aod_ops.schema.nodes import ChoiceNode, Node, ObjectNode, UnionNode

MAX_BRANCHES = 16  # branches kept per union


class CombinatorCompiler(CompilerBase):
    """The compiler's references, negations and unions."""

    # -- conjunctions --------------------------------------------------------------------------

    def _flatten(self, parts: list[Part], stack: tuple[int, ...]) -> tuple[list[Part], tuple[int, ...]]:
        """Replace ``$ref`` by its target and ``allOf`` by its members, recursively."""
        flat: list[Part] = []
        todo = list(reversed(parts))
        while todo:
            part = todo.pop()
            schema = part.schema
            if part.negated:
                if schema is True or schema == {}:
                    raise Impossible(part.pointer, "not", "'not' of a schema that accepts everything")
                if schema is not False:  # 'not false' holds for every value
                    flat.append(self._resolve_negated(part, stack))
                continue
            if schema is True or schema == {}:
                continue
            if schema is False:
                raise Impossible(part.pointer, "false", "the schema is false: no value is allowed")
            if not isinstance(schema, dict):
                continue
            extra: list[Part] = []
            for keyword in ("$ref", "$dynamicRef", "$recursiveRef"):
                ref = part.get(keyword)
                if isinstance(ref, str):
                    target, stack = self._follow(part, keyword, ref, stack)
                    extra.append(target)
                    part = replace(part, consumed=part.consumed | {keyword})
                    if self.loaded.draft in ("draft4", "draft6", "draft7"):
                        # Before 2019-09, keywords beside $ref are ignored.
                        part = replace(part, schema={})
            negation = part.get("not")
            if negation is not None:
                extra.append(replace(part.sub(negation, "not"), negated=True))
                part = replace(part, consumed=part.consumed | {"not"})
            members = part.get("allOf")
            if isinstance(members, list):
                extra += [part.sub(m, "allOf", i) for i, m in enumerate(members)]
                part = replace(part, consumed=part.consumed | {"allOf"})
            if part.schema != {}:
                flat.append(part)
            todo.extend(reversed(extra))
        return flat, stack

    def _follow(
        self, part: Part, keyword: str, ref: str, stack: tuple[int, ...]
    ) -> tuple[Part, tuple[int, ...]]:
        try:
            target, scope, uri = part.scope.follow(ref, f"{self.loaded.source}: {keyword} at {part.pointer}")
        except SchemaError as error:
            raise Impossible(part.at(keyword), keyword, str(error)) from None
        if stack.count(id(target)) >= self.max_depth:
            raise Impossible(
                part.at(keyword), keyword, f"recursion through {ref!r} deeper than {self.max_depth}"
            )
        document, fragment = uri.split("#", 1) if "#" in uri else (uri, "")
        pointer = fragment if document == self.loaded.base_uri else f"{document}#{fragment}"
        return Part(target, scope, pointer), (*stack, id(target))

    def _resolve_negated(self, part: Part, stack: tuple[int, ...]) -> Part:
        """A negated part with its ``$ref`` chain resolved (its other keywords stay as they are)."""
        for _ in range(self.max_depth + 1):
            ref = part.get("$ref")
            if not isinstance(ref, str) or len(part.schema) != 1:
                return part
            target, _ = self._follow(part, "$ref", ref, stack)
            part = replace(target, negated=True, strict=part.strict)
        return part

    # -- unions --------------------------------------------------------------------------------

    def _union(
        self,
        rest: list[Part],
        options: list[list[Part]],
        stack: tuple[int, ...],
        pointer: str,
        keyword: str,
    ) -> Node:
        branches: list[Node] = []
        last: Impossible | None = None
        for extra in options:
            if len(branches) >= MAX_BRANCHES:
                break
            try:
                branches.append(self.compile(rest + extra, stack))
            except Impossible as error:
                last = error
        if not branches:
            reason = f"no branch of {keyword} can be satisfied" + (f" ({last.reason})" if last else "")
            raise Impossible(last.pointer if last else pointer, last.keyword if last else keyword, reason)
        return union_of(branches)

    def _one_of(self, rest: list[Part], members: list[Part], stack: tuple[int, ...], pointer: str) -> Node:
        """oneOf: each branch also excludes the others where that is expressible (type, required).

        Branches that stay open to each other's values are listed as unsupported, unless their
        types or fixed values are disjoint, or a required property with fixed values tells them
        apart.
        """
        negations = [self._resolve_negated(replace(m, negated=True), stack) for m in members]
        expressible = [
            absent_names(n, self.loaded) is not None or set(validation_keys(n, self.loaded)) == {"type"}
            for n in negations
        ]
        nodes: dict[int, Node] = {}
        last: Impossible | None = None
        for i, member in enumerate(members[:MAX_BRANCHES]):
            others = [n for j, n in enumerate(negations) if j != i and expressible[j]]
            try:
                nodes[i] = self.compile([*rest, member, *others], stack)
            except Impossible as error:
                last = error
        if not nodes:
            reason = "no branch of oneOf can be satisfied" + (f" ({last.reason})" if last else "")
            raise Impossible(last.pointer if last else pointer, last.keyword if last else "oneOf", reason)
        # A value from branch i must fail every other member j: j's negation was applied to i,
        # or their types or fixed values are disjoint, or a discriminating property differs.
        facts = [self._member_facts(m, stack) for m in members]
        for i in nodes:
            for j in range(len(members)):
                apart = expressible[j] or _disjoint(facts[i], facts[j])
                if j != i and not apart and not (j in nodes and _discriminated(nodes[i], nodes[j])):
                    self.note(
                        pointer, "oneOf", "branches not made exclusive; a value matching two is invalid"
                    )
        live = sorted(nodes)
        return union_of([nodes[i] for i in live])

    def _member_facts(self, member: Part, stack: tuple[int, ...]) -> tuple[set[str] | None, set[str] | None]:
        """A oneOf member's declared types and fixed values (None: not limited by the member)."""
        try:
            parts, _ = self._flatten([member], stack)
        except Impossible:
            return set(), set()
        types: set[str] | None = None
        values: set[str] | None = None
        for part in parts:
            if part.negated:
                continue
            declared = part.get("type")
            if declared is not None:
                names = set(strings(declared if isinstance(declared, list) else [declared]))
                names |= {"integer"} if "number" in names else set()
                types = names if types is None else types & names
            fixed = [part.schema["const"]] if "const" in part.keywords() else part.get("enum")
            if isinstance(fixed, list):
                keys = {json_key(v) for v in fixed}
                values = keys if values is None else values & keys
        return types, values

    def _if_branches(self, part: Part) -> list[list[Part]]:
        """``if``/``then``/``else`` as branches: (if and then), (else and not if)."""
        condition = part.sub(part.get("if"), "if")
        then, otherwise = part.get("then"), part.get("else")
        branches = [[condition] + ([part.sub(then, "then")] if then is not None else [])]
        negation = replace(condition, negated=True, strict=True)
        branches.append([negation] + ([part.sub(otherwise, "else")] if otherwise is not None else []))
        return branches

    def _schema_dependencies(
        self, parts: list[Part], part: Part, keyword: str, value: dict[str, Any]
    ) -> list[Part]:
        """Schema dependencies: applied when their property is required, else the property is left out."""
        required = {name for p in parts if not p.negated for name in strings(p.get("required"))}
        extra: list[Part] = []
        for name, dependency in value.items():
            if isinstance(dependency, list):
                continue  # a property dependency (dependentRequired), handled with the object
            if name in required:
                extra.append(part.sub(dependency, keyword, name))
            else:
                absent = self.synthetic({"required": [name]})
                extra.append(Part(absent, part.scope, part.at(keyword, name), negated=True))
        return extra


def _disjoint(a: tuple[set[str] | None, set[str] | None], b: tuple[set[str] | None, set[str] | None]) -> bool:
    """Whether no value fits both of two (types, fixed values) descriptions."""
    return any(x is not None and y is not None and not x & y for x, y in zip(a, b, strict=True))


def _discriminated(a: Node, b: Node) -> bool:
    """Two objects that each require a property with disjoint fixed values cannot both match."""
    if not isinstance(a, ObjectNode) or not isinstance(b, ObjectNode):
        return False
    fixed = {
        p.name: {json_key(o) for o in p.node.options}
        for p in a.properties
        if p.required and isinstance(p.node, ChoiceNode)
    }
    return any(
        p.name in fixed and not fixed[p.name] & {json_key(o) for o in p.node.options}
        for p in b.properties
        if p.required and isinstance(p.node, ChoiceNode)
    )


def union_of(nodes: list[Node]) -> Node:
    """One node for several alternatives: nested unions flattened, choices merged, duplicates dropped."""
    flat: list[Node] = []
    options: dict[str, Any] = {}
    for node in nodes:
        for branch in node.branches if isinstance(node, UnionNode) else (node,):
            if isinstance(branch, ChoiceNode):
                options.update((json_key(o), o) for o in branch.options if json_key(o) not in options)
            elif branch not in flat:
                flat.append(branch)
    if options:
        flat.insert(0, ChoiceNode(tuple(options.values())))
    return flat[0] if len(flat) == 1 else UnionNode(tuple(flat[:MAX_BRANCHES]))
