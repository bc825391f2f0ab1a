"""Compile a loaded JSON Schema into the node tree that the DLM sampler walks.

A schema location is compiled as a *conjunction* of schema dicts ("parts"): ``$ref`` targets and
``allOf`` members are flattened into it, so an instance must satisfy every part. ``anyOf``,
``oneOf``, type unions and ``if``/``then``/``else`` become ``UnionNode`` branches, each compiled
as its own conjunction. What is left is read keyword family by keyword family into one node per
JSON type.

Soundness comes first: a node describes only instances the schema accepts, as far as the
compiler can tell. A branch, optional property or array position that cannot be satisfied
(``false``, an empty enum, contradicting bounds, a pattern with no match in its length range,
recursion past ``max_depth``) is left out; when something required cannot be satisfied, the
whole location is. When that reaches the root, no record can be written: ``compile_schema``
raises ``SchemaError`` with the pointer and the reason. A keyword that is enforced by the
validator but not expressed in the tree is listed in ``CompiledSchema.unsupported`` with its
schema pointer; generated records are validated afterwards, so such a keyword is checked, never
silently dropped.

Known approximations (listed as unsupported where they can make a record invalid): each
``oneOf`` branch excludes the other members only where their negation is expressible (a
``type`` or ``required`` member) or they are disjoint anyway (types, fixed values, a required
discriminating property); otherwise a value may match two members. ``not`` is honoured for the
forms ``not: {}``, ``not: {type}``, ``not: {required}``, ``not: {anyOf: [...]}`` of those, and
any ``not`` over enum/const/boolean choices; the ``else`` branch of ``if`` is kept only where
``not if`` is expressible the same way; an optional property with a schema dependency
(``dependentSchemas``) is left out; ``$dynamicRef``/``$recursiveRef`` resolve statically.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import lru_cache
from typing import Any

from aod_ops.errors import SchemaError
from aod_ops.schema.load import LoadedSchema, Scope, json_pointer
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
    Unsupported,
)
from aod_ops.schema.patterns import FORMAT_PATTERNS, UncheckedPattern, complete, full_match, search

# Bounds that keep compilation to milliseconds and make it impossible to hang.
MAX_BRANCHES = 16  # branches kept per union
MAX_NODES = 20_000  # conjunctions compiled per schema
MAX_SECONDS = 2.0  # wall-clock limit per schema
# The most a schema may ask one value to hold: a record past these is not written in seconds.
MAX_LENGTH = 4096  # minLength
MAX_COUNT = 1000  # minItems, minProperties
EXTRA_ITEMS = 3  # array items generated past the minimum (or the prefix) at most
_SEED = 0  # completions at compile time (feasibility checks, property names) are deterministic

_TYPES = ("string", "number", "integer", "boolean", "null", "object", "array")
# Keywords that imply a type when "type" is absent.
_IMPLIED_TYPE = {
    "properties": "object",
    "required": "object",
    "additionalProperties": "object",
    "patternProperties": "object",
    "minProperties": "object",
    "maxProperties": "object",
    "propertyNames": "object",
    "dependentRequired": "object",
    "dependencies": "object",
    "items": "array",
    "prefixItems": "array",
    "additionalItems": "array",
    "minItems": "array",
    "maxItems": "array",
    "uniqueItems": "array",
    "contains": "array",
    "minLength": "string",
    "maxLength": "string",
    "pattern": "string",
    "format": "string",
    "minimum": "number",
    "maximum": "number",
    "exclusiveMinimum": "number",
    "exclusiveMaximum": "number",
    "multipleOf": "number",
}
# Validation keywords the compiler expresses (exactly, or approximately as documented above).
_HANDLED = frozenset(
    {
        "$ref",
        "$dynamicRef",
        "$recursiveRef",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "type",
        "enum",
        "const",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "minProperties",
        "maxProperties",
        "propertyNames",
        "dependencies",
        "dependentRequired",
        "dependentSchemas",
        "unevaluatedProperties",
        "items",
        "prefixItems",
        "additionalItems",
        "minItems",
        "maxItems",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "unevaluatedItems",
    }
)
_DISJUNCTIONS = ("anyOf", "oneOf", "if", "dependentSchemas", "dependencies")
_HINT_KEYS = ("default", "examples", "example")


class _Impossible(Exception):
    """No instance satisfies the conjunction being compiled (as far as the compiler can tell)."""

    def __init__(self, pointer: str, keyword: str, reason: str) -> None:
        super().__init__(reason)
        self.pointer, self.keyword, self.reason = pointer, keyword, reason


class _TooLarge(Exception):
    """The schema needs more compiling than the per-schema bounds allow."""


@dataclass(frozen=True)
class _Part:
    """One schema of a conjunction, where it sits, and which of its keywords are already used.

    A ``negated`` part must *not* be satisfied (from ``not``, or the ``else`` side of ``if``);
    ``strict`` negations make the branch impossible when they cannot be expressed, the others are
    reported unsupported and left to validation.
    """

    schema: Any
    scope: Scope
    pointer: str
    consumed: frozenset[str] = frozenset()
    negated: bool = False
    strict: bool = False

    def get(self, keyword: str) -> Any:
        """The keyword's value, unless absent, already consumed, or not a dict schema."""
        if not isinstance(self.schema, dict) or keyword in self.consumed:
            return None
        return self.schema.get(keyword)

    def sub(self, value: Any, *path: str | int) -> _Part:
        """The part for a subschema at ``path`` below this one."""
        return _Part(value, self.scope.enter(value), self.pointer + json_pointer(path))

    def at(self, *path: str | int) -> str:
        """The schema pointer of a keyword (or deeper location) of this part."""
        return self.pointer + json_pointer(path)


def compile_schema(schema: LoadedSchema, max_depth: int = 3) -> CompiledSchema:
    """Compile ``schema`` into a node tree and the list of keywords it could not express.

    ``max_depth`` bounds recursion: a ``$ref`` is followed at most ``max_depth`` times along one
    path; past that, optional recursive properties are left out, arrays of recursive items stay
    at their minimum length, and union branches that recurse are dropped.

    :raises SchemaError: when no instance can be built (``false``, an empty enum, contradicting
        bounds, a required part that cannot be satisfied), naming the schema pointer and the
        reason; also when the schema is too large or nests too deeply to compile.
    """
    compiler = _Compiler(schema, max_depth)
    scope = Scope(schema.registry.resolver(schema.base_uri), schema.base_uri, schema.specification)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # re's notes on odd but valid patterns
            root = compiler.compile([_Part(schema.contents, scope, "")], ())
    except _Impossible as error:
        raise SchemaError(
            f"{schema.source}: no value can satisfy the schema: {error.reason} "
            f"(keyword {error.keyword!r} at #{error.pointer})"
        ) from None
    except _TooLarge as error:
        raise SchemaError(f"{schema.source}: {error}") from None
    except RecursionError:
        raise SchemaError(f"{schema.source}: the schema nests too deeply through $ref to compile") from None
    return CompiledSchema(root=root, unsupported=tuple(compiler.unsupported.values()))


@dataclass
class _Compiler:
    loaded: LoadedSchema
    max_depth: int
    unsupported: dict[tuple[str, str], Unsupported] = field(default_factory=dict)
    memo: dict[Any, Node | _Impossible] = field(default_factory=dict)
    compiled: int = 0
    made: list[Any] = field(default_factory=list)
    validators: dict[tuple[int, str], Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def note(self, pointer: str, keyword: str, reason: str) -> None:
        """Record a keyword that the tree does not express (once per location)."""
        self.unsupported.setdefault((pointer, keyword), Unsupported(pointer, keyword, reason))

    # -- conjunctions ------------------------------------------------------------------------

    def compile(self, parts: list[_Part], stack: tuple[int, ...]) -> Node:
        """The node for the conjunction of ``parts``; ``stack`` holds the ``$ref`` targets above."""
        parts, stack = self._flatten(parts, stack)
        depth = tuple(sorted(Counter(stack).items()))
        key = (tuple((id(p.schema), p.scope.base, p.consumed, p.negated, p.strict) for p in parts), depth)
        if key in self.memo:
            cached = self.memo[key]
            if isinstance(cached, _Impossible):
                raise cached
            return cached
        self.compiled += 1
        if self.compiled > MAX_NODES or time.monotonic() - self.started > MAX_SECONDS:
            raise _TooLarge("schema too large to compile within the limits (recursion or size)")
        try:
            node = self._disjunctions(parts, stack)
        except _Impossible as error:
            self.memo[key] = error
            raise
        self.memo[key] = node
        return node

    def _flatten(self, parts: list[_Part], stack: tuple[int, ...]) -> tuple[list[_Part], tuple[int, ...]]:
        """Replace ``$ref`` by its target and ``allOf`` by its members, recursively."""
        flat: list[_Part] = []
        todo = list(reversed(parts))
        while todo:
            part = todo.pop()
            schema = part.schema
            if part.negated:
                if schema is True or schema == {}:
                    raise _Impossible(part.pointer, "not", "'not' of a schema that accepts everything")
                if schema is not False:  # 'not false' holds for every value
                    flat.append(self._resolve_negated(part, stack))
                continue
            if schema is True or schema == {}:
                continue
            if schema is False:
                raise _Impossible(part.pointer, "false", "the schema is false: no value is allowed")
            if not isinstance(schema, dict):
                continue
            extra: list[_Part] = []
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
        self, part: _Part, keyword: str, ref: str, stack: tuple[int, ...]
    ) -> tuple[_Part, tuple[int, ...]]:
        try:
            target, scope, uri = part.scope.follow(ref, f"{self.loaded.source}: {keyword} at {part.pointer}")
        except SchemaError as error:
            raise _Impossible(part.at(keyword), keyword, str(error)) from None
        if stack.count(id(target)) >= self.max_depth:
            raise _Impossible(
                part.at(keyword), keyword, f"recursion through {ref!r} deeper than {self.max_depth}"
            )
        document, fragment = uri.split("#", 1) if "#" in uri else (uri, "")
        pointer = fragment if document == self.loaded.base_uri else f"{document}#{fragment}"
        return _Part(target, scope, pointer), (*stack, id(target))

    def _resolve_negated(self, part: _Part, stack: tuple[int, ...]) -> _Part:
        """A negated part with its ``$ref`` chain resolved (its other keywords stay as they are)."""
        for _ in range(self.max_depth + 1):
            ref = part.get("$ref")
            if not isinstance(ref, str) or len(part.schema) != 1:
                return part
            target, _ = self._follow(part, "$ref", ref, stack)
            part = replace(target, negated=True, strict=part.strict)
        return part

    def _disjunctions(self, parts: list[_Part], stack: tuple[int, ...]) -> Node:
        """Expand the first anyOf/oneOf/if/dependency found into branches, else compile types.

        Schema dependencies come last, so that the branches above have said what is required.
        """
        for keyword in _DISJUNCTIONS:
            for index, part in enumerate(parts):
                value = None if part.negated else part.get(keyword)
                if value is None:
                    continue
                rest = [
                    *parts[:index],
                    replace(part, consumed=part.consumed | {keyword}),
                    *parts[index + 1 :],
                ]
                if keyword in ("anyOf", "oneOf") and isinstance(value, list):
                    members = [part.sub(v, keyword, i) for i, v in enumerate(value)]
                    if keyword == "anyOf":
                        return self._union(rest, [[m] for m in members], stack, part.at(keyword), keyword)
                    return self._one_of(rest, members, stack, part.at(keyword))
                if keyword == "if" and part.get("then") is None and part.get("else") is None:
                    return self.compile(rest, stack)  # a condition with no consequence
                if keyword == "if":
                    return self._union(rest, self._if_branches(part), stack, part.at(keyword), keyword)
                if keyword in ("dependentSchemas", "dependencies") and isinstance(value, dict):
                    return self.compile(rest + self._schema_dependencies(parts, part, keyword, value), stack)
        return self._types(parts, stack)

    def _union(
        self,
        rest: list[_Part],
        options: list[list[_Part]],
        stack: tuple[int, ...],
        pointer: str,
        keyword: str,
    ) -> Node:
        branches: list[Node] = []
        last: _Impossible | None = None
        for extra in options:
            if len(branches) >= MAX_BRANCHES:
                break
            try:
                branches.append(self.compile(rest + extra, stack))
            except _Impossible as error:
                last = error
        if not branches:
            reason = f"no branch of {keyword} can be satisfied" + (f" ({last.reason})" if last else "")
            raise _Impossible(last.pointer if last else pointer, last.keyword if last else keyword, reason)
        return _union_of(branches)

    def _one_of(self, rest: list[_Part], members: list[_Part], stack: tuple[int, ...], pointer: str) -> Node:
        """oneOf: each branch also excludes the others where that is expressible (type, required).

        Branches that stay open to each other's values are listed as unsupported, unless their
        types or fixed values are disjoint, or a required property with fixed values tells them
        apart.
        """
        negations = [self._resolve_negated(replace(m, negated=True), stack) for m in members]
        expressible = [
            _absent_names(n, self.loaded) is not None or set(_validation_keys(n, self.loaded)) == {"type"}
            for n in negations
        ]
        nodes: dict[int, Node] = {}
        last: _Impossible | None = None
        for i, member in enumerate(members[:MAX_BRANCHES]):
            others = [n for j, n in enumerate(negations) if j != i and expressible[j]]
            try:
                nodes[i] = self.compile([*rest, member, *others], stack)
            except _Impossible as error:
                last = error
        if not nodes:
            reason = "no branch of oneOf can be satisfied" + (f" ({last.reason})" if last else "")
            raise _Impossible(last.pointer if last else pointer, last.keyword if last else "oneOf", reason)
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
        return _union_of([nodes[i] for i in live])

    def _member_facts(self, member: _Part, stack: tuple[int, ...]) -> tuple[set[str] | None, set[str] | None]:
        """A oneOf member's declared types and fixed values (None: not limited by the member)."""
        try:
            parts, _ = self._flatten([member], stack)
        except _Impossible:
            return set(), set()
        types: set[str] | None = None
        values: set[str] | None = None
        for part in parts:
            if part.negated:
                continue
            declared = part.get("type")
            if declared is not None:
                names = set(_strings(declared if isinstance(declared, list) else [declared]))
                names |= {"integer"} if "number" in names else set()
                types = names if types is None else types & names
            fixed = [part.schema["const"]] if "const" in _keys(part) else part.get("enum")
            if isinstance(fixed, list):
                keys = {_json_key(v) for v in fixed}
                values = keys if values is None else values & keys
        return types, values

    def _if_branches(self, part: _Part) -> list[list[_Part]]:
        """``if``/``then``/``else`` as branches: (if and then), (else and not if)."""
        condition = part.sub(part.get("if"), "if")
        then, otherwise = part.get("then"), part.get("else")
        branches = [[condition] + ([part.sub(then, "then")] if then is not None else [])]
        negation = replace(condition, negated=True, strict=True)
        branches.append([negation] + ([part.sub(otherwise, "else")] if otherwise is not None else []))
        return branches

    def synthetic(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Keep a schema made by the compiler alive: memo keys hold the ids of part schemas."""
        self.made.append(schema)
        return schema

    def _schema_dependencies(
        self, parts: list[_Part], part: _Part, keyword: str, value: dict[str, Any]
    ) -> list[_Part]:
        """Schema dependencies: applied when their property is required, else the property is left out."""
        required = {name for p in parts if not p.negated for name in _strings(p.get("required"))}
        extra: list[_Part] = []
        for name, dependency in value.items():
            if isinstance(dependency, list):
                continue  # a property dependency (dependentRequired), handled with the object
            if name in required:
                extra.append(part.sub(dependency, keyword, name))
            else:
                absent = self.synthetic({"required": [name]})
                extra.append(_Part(absent, part.scope, part.at(keyword, name), negated=True))
        return extra

    # -- types -------------------------------------------------------------------------------

    def _types(self, parts: list[_Part], stack: tuple[int, ...]) -> Node:
        positive = [p for p in parts if not p.negated]
        negative = [p for p in parts if p.negated]
        self._note_unhandled(positive)
        for neg in negative:
            if not _validation_keys(neg, self.loaded):
                raise _Impossible(neg.pointer, "not", "'not' of a schema that accepts everything")
        if any(p.get("enum") is not None or "const" in _keys(p) for p in positive):
            return self._choice(positive, negative, self._enum_options(positive))
        types = self._allowed_types(positive, negative)
        nodes: list[Node] = []
        last: _Impossible | None = None
        for name in types:
            try:
                nodes.append(self._typed(name, positive, negative, stack))
            except _Impossible as error:
                last = error
        if not nodes:
            if last is not None:
                raise last
            pointer = positive[0].pointer if positive else ""
            raise _Impossible(pointer, "type", "no JSON type satisfies every part of the schema")
        return _union_of(nodes)

    def _note_unhandled(self, parts: list[_Part]) -> None:
        known = self.loaded.validator_class.VALIDATORS
        for part in parts:
            for keyword in _keys(part):
                if keyword in known and keyword not in _HANDLED:
                    self.note(part.at(keyword), keyword, "not compiled; checked after generation")

    def _allowed_types(self, positive: list[_Part], negative: list[_Part]) -> list[str]:
        allowed: set[str] | None = None
        implied: list[str] = []
        for part in positive:
            declared = part.get("type")
            if declared is not None:
                names = set(_strings(declared if isinstance(declared, list) else [declared]))
                if "number" in names:
                    names.add("integer")
                allowed = names if allowed is None else allowed & names
            implied += [_IMPLIED_TYPE[k] for k in _keys(part) if k in _IMPLIED_TYPE]
        anything = allowed is None and not implied
        if allowed is None:
            # No declared type: the kinds of value its keywords describe, or any kind.
            allowed = set(implied) if implied else set(_TYPES)
        for neg in negative:
            excluded = neg.get("type")
            if excluded is not None and set(_validation_keys(neg, self.loaded)) == {"type"}:
                names = set(_strings(excluded if isinstance(excluded, list) else [excluded]))
                allowed -= names | ({"integer"} if "number" in names else set())
        if "number" in allowed:
            allowed.discard("integer")  # a number slot also covers integers
        kinds = [t for t in _TYPES if t in allowed]
        # A value of any kind is written as a string (the first kind left after exclusions).
        return kinds[:1] if anything else kinds

    def _typed(self, name: str, positive: list[_Part], negative: list[_Part], stack: tuple[int, ...]) -> Node:
        if name == "null":
            return self._choice(positive, negative, [None])
        if name == "boolean":
            return self._choice(positive, negative, [True, False])
        self._apply_negations(name, negative)
        if name == "string":
            return self._string(positive)
        if name in ("number", "integer"):
            return self._number(positive, integer=name == "integer")
        if name == "object":
            return self._object(positive, negative, stack)
        return self._array(positive, stack)

    def _apply_negations(self, type_name: str, negative: list[_Part]) -> None:
        """Check negations for a non-choice type: inexpressible strict ones make it impossible."""
        for neg in negative:
            keys = set(_validation_keys(neg, self.loaded))
            if keys == {"type"}:
                continue  # applied when choosing types
            if _absent_names(neg, self.loaded) is not None:
                if type_name == "object":
                    continue  # applied by the object builder
                # 'required' holds for every non-object, so its negation holds for none.
                raise _Impossible(
                    neg.pointer, "not", f"a {type_name} satisfies 'required', so 'not' rejects it"
                )
            if neg.strict:
                raise _Impossible(
                    neg.pointer, "else", "the 'else' branch needs 'not if', which cannot be expressed"
                )
            self.note(neg.pointer, "not", f"'not' over a {type_name} is checked after generation")

    # -- choices -------------------------------------------------------------------------------

    def _enum_options(self, positive: list[_Part]) -> list[Any]:
        options: list[Any] | None = None
        for part in positive:
            values: list[Any] | None = None
            if "const" in _keys(part):
                values = [part.schema["const"]]
            enum = part.get("enum")
            if isinstance(enum, list):
                allowed = {_json_key(v) for v in enum}
                values = enum if values is None else [v for v in values if _json_key(v) in allowed]
            if values is not None:
                keys = {_json_key(v) for v in values}
                options = values if options is None else [v for v in options if _json_key(v) in keys]
        return options or []

    def _choice(self, positive: list[_Part], negative: list[_Part], options: list[Any]) -> ChoiceNode:
        kept: dict[str, Any] = {}
        for option in options:
            key = _json_key(option)
            if key in kept:
                continue
            allowed = all(self._valid(p, option) for p in positive)
            if allowed and not any(self._valid(n, option) for n in negative):
                kept[key] = option
        if not kept:
            pointer = positive[0].pointer if positive else (negative[0].pointer if negative else "")
            raise _Impossible(pointer, "enum", "no allowed value satisfies every part of the schema")
        return ChoiceNode(tuple(kept.values()))

    def _valid(self, part: _Part, value: Any) -> bool:
        """Whether ``value`` satisfies the part's whole schema (jsonschema, format checking on).

        A part with nothing but enum/const/type is checked by type alone: the caller's options
        already come from the enums, and a long enum would make full validation quadratic.
        """
        keys = set(_validation_keys(part, self.loaded))
        if not part.negated and keys <= {"enum", "const", "type"}:
            declared = part.get("type")
            if declared is None:
                return True
            names = _strings(declared if isinstance(declared, list) else [declared])
            checker = self.loaded.validator_class.TYPE_CHECKER
            return any(checker.is_type(value, name) for name in names if name in _TYPES)
        key = (id(part.schema), part.scope.base)
        validator = self.validators.get(key)
        if validator is None:
            cls = self.loaded.validator_class
            validator = cls(
                part.schema,
                registry=self.loaded.registry,
                format_checker=cls.FORMAT_CHECKER,
                _resolver=part.scope.resolver,
            )
            self.validators[key] = validator
        try:
            return bool(validator.is_valid(value))
        except Exception:  # a broken $ref deep inside: the value is not known to be valid
            return False

    # -- strings ----------------------------------------------------------------------------

    def _string(self, parts: list[_Part]) -> StringNode:
        min_length = _at_most(
            max([_int(p.get("minLength"), 0) for p in parts], default=0), "minLength", parts
        )
        maxima = [_int(p.get("maxLength"), -1) for p in parts if _int(p.get("maxLength"), -1) >= 0]
        max_length = min(maxima) if maxima else None
        pointer = parts[0].pointer if parts else ""
        if max_length is not None and min_length > max_length:
            raise _Impossible(pointer, "maxLength", f"minLength {min_length} exceeds maxLength {max_length}")
        patterns = [(p.get("pattern"), p) for p in parts if isinstance(p.get("pattern"), str)]
        formats = [(p.get("format"), p) for p in parts if isinstance(p.get("format"), str)]
        checked = self.loaded.validator_class.FORMAT_CHECKER.checkers
        pieces = [_full_match_form(pattern) for pattern, _ in patterns]
        format_pieces = [FORMAT_PATTERNS[f] for f, _ in formats if f in FORMAT_PATTERNS]
        for name, part in formats:
            if name in checked and name not in FORMAT_PATTERNS:
                self.note(
                    part.at("format"), "format", f"no generator for format {name!r}; checked after generation"
                )
        pattern = _combine(pieces + format_pieces)
        if pattern is not None and _completion(pattern, min_length, max_length) is None and format_pieces:
            # A format is a realism hint when unchecked; when checked, validation still applies.
            if any(f in checked for f, _ in formats if f in FORMAT_PATTERNS):
                self.note(
                    formats[0][1].at("format"), "format", "format and pattern combined; format checked after"
                )
            pattern = _combine(pieces)
        if pattern is not None and _completion(pattern, min_length, max_length) is None:
            relaxed = _combine([_full_match_form(p, relaxed=True) for p, _ in patterns])
            if relaxed is None or _completion(relaxed, min_length, max_length) is None:
                where = patterns[0][1].at("pattern") if patterns else pointer
                bounds = f"{min_length}..{max_length if max_length is not None else ''}"
                raise _Impossible(
                    where, "pattern", f"no string of length {bounds} matching the pattern was found"
                )
            pattern = relaxed
        hints = tuple(
            h
            for h in _hints(parts)
            if isinstance(h, str)
            and min_length <= len(h) <= (max_length if max_length is not None else len(h))
            and (pattern is None or full_match(pattern, h))
        )
        return StringNode(
            min_length=min_length,
            max_length=max_length,
            pattern=pattern,
            format=formats[0][0] if formats else None,
            hints=hints,
        )

    # -- numbers ----------------------------------------------------------------------------

    def _number(self, parts: list[_Part], integer: bool) -> NumberNode:
        low: tuple[float, bool] | None = None  # (bound, exclusive)
        high: tuple[float, bool] | None = None
        draft4 = self.loaded.draft == "draft4"
        for part in parts:
            for keyword, exclusive in (("minimum", False), ("exclusiveMinimum", True)):
                value = part.get(keyword)
                if keyword == "minimum" and draft4:
                    exclusive = part.get("exclusiveMinimum") is True
                usable = _is_number(value) and not (keyword == "exclusiveMinimum" and draft4)
                if usable and (low is None or value > low[0] or (value == low[0] and exclusive)):
                    low = (value, exclusive)
            for keyword, exclusive in (("maximum", False), ("exclusiveMaximum", True)):
                value = part.get(keyword)
                if keyword == "maximum" and draft4:
                    exclusive = part.get("exclusiveMaximum") is True
                usable = _is_number(value) and not (keyword == "exclusiveMaximum" and draft4)
                if usable and (high is None or value < high[0] or (value == high[0] and exclusive)):
                    high = (value, exclusive)
        pointer = parts[0].pointer if parts else ""
        step = self._multiple_of(parts, integer)
        minimum, maximum = (low[0] if low else None), (high[0] if high else None)
        exclusive_min, exclusive_max = bool(low and low[1]), bool(high and high[1])
        if integer:
            # Integer bounds are made inclusive: the slot then never has to reason about them.
            if minimum is not None:
                minimum = math.floor(minimum) + 1 if exclusive_min else math.ceil(minimum)
            if maximum is not None:
                maximum = math.ceil(maximum) - 1 if exclusive_max else math.floor(maximum)
            exclusive_min = exclusive_max = False
        if not _has_value_between(minimum, maximum, exclusive_min, exclusive_max, step):
            lower = f"{'above' if exclusive_min else 'from'} {minimum}"
            upper = f"{'below' if exclusive_max else 'to'} {maximum}"
            multiple = f" is a multiple of {step}" if step else ""
            kind = "integer" if integer else "number"
            raise _Impossible(pointer, "maximum", f"no {kind} {lower} {upper}{multiple}")
        hints = tuple(
            float(h)
            for h in _hints(parts)
            if _is_number(h)
            and (not integer or float(h).is_integer())
            and _in_bounds(h, minimum, maximum, exclusive_min, exclusive_max, step)
        )
        return NumberNode(
            integer=integer,
            minimum=minimum,
            maximum=maximum,
            exclusive_minimum=exclusive_min,
            exclusive_maximum=exclusive_max,
            multiple_of=step,
            hints=hints,
        )

    def _multiple_of(self, parts: list[_Part], integer: bool) -> float | None:
        values = [(Fraction(str(v)), p) for p in parts if _is_number(v := p.get("multipleOf")) and v > 0]
        if not values:
            return None
        step = values[0][0]
        for value, part in values[1:]:
            common = _lcm(step, value)
            if common is None:
                self.note(part.at("multipleOf"), "multipleOf", "several multipleOf without a common multiple")
            else:
                step = common
        if integer and step.denominator != 1:
            step = Fraction(step.numerator)  # integers that are multiples of p/q are multiples of p
        return int(step) if step.denominator == 1 else float(step)

    # -- objects ----------------------------------------------------------------------------

    def _object(self, parts: list[_Part], negative: list[_Part], stack: tuple[int, ...]) -> ObjectNode:
        pointer = parts[0].pointer if parts else ""
        required: list[str] = []
        declared: list[str] = []
        for part in parts:
            required += [n for n in _strings(part.get("required")) if n not in required]
            properties = part.get("properties")
            if isinstance(properties, dict):
                declared += [n for n in properties if n not in declared]
        absent: set[str] = set()
        for neg in negative:
            names = _absent_names(neg, self.loaded)
            if names is None:
                continue
            if not names:
                raise _Impossible(neg.pointer, "not", "every property that 'not' names is required")
            if len(names) == 1 or neg.get("anyOf") is not None:
                pick = names  # all of them must be absent
            else:
                pick = [n for n in names if n not in required][:1] or names[:1]  # one absent is enough
            blocked = [n for n in pick if n in required]
            if blocked:
                raise _Impossible(neg.pointer, "not", f"'not' forbids required property {blocked[0]!r}")
            absent.update(pick)
        dependencies = _property_dependencies(parts)
        names = declared + [n for n in required if n not in declared]
        index = 0
        while index < len(names):
            names += [t for t in dependencies.get(names[index], []) if t not in names]
            index += 1
        min_properties = _at_most(
            max([_int(p.get("minProperties"), 0) for p in parts], default=0), "minProperties", parts
        )
        maxima = [_int(p.get("maxProperties"), -1) for p in parts if _int(p.get("maxProperties"), -1) >= 0]
        max_properties = min(maxima) if maxima else None
        if max_properties is not None and min_properties > max_properties:
            raise _Impossible(
                pointer, "minProperties", f"{min_properties} exceeds maxProperties {max_properties}"
            )

        nodes: dict[str, Node] = {}
        for name in names:
            if name in absent:
                continue
            try:
                nodes[name] = self._property(parts, name, declared, stack)
            except _Impossible:
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
                        raise _Impossible(
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
                raise _Impossible(pointer, "required", f"required property {name!r} cannot be present")
        if max_properties is not None and len(must) > max_properties:
            raise _Impossible(
                pointer, "maxProperties", f"{len(must)} required properties exceed maxProperties"
            )
        if len(nodes) < min_properties:
            self._extra_properties(parts, nodes, declared, min_properties, absent, stack)
        properties = tuple(Property(name, node, name in must) for name, node in nodes.items())
        return ObjectNode(properties=properties, min_properties=min_properties, max_properties=max_properties)

    def _property(self, parts: list[_Part], name: str, declared: list[str], stack: tuple[int, ...]) -> Node:
        """The node of property ``name``: every part's say on it (properties, patterns, additional)."""
        subparts: list[_Part] = []
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
                raise _Impossible(
                    part.at("propertyNames"), "propertyNames", f"{name!r} is not an allowed name"
                )
        return self.compile(subparts, stack)

    def _search(self, part: _Part, pattern: str, name: str) -> bool:
        """Whether a patternProperties pattern matches ``name``; one that cannot be checked in
        time makes the property impossible, as validation would reject it."""
        try:
            return search(pattern, name)
        except UncheckedPattern as error:
            raise _Impossible(
                part.at("patternProperties", pattern), "patternProperties", str(error)
            ) from None

    def _extra_properties(
        self,
        parts: list[_Part],
        nodes: dict[str, Node],
        declared: list[str],
        min_properties: int,
        absent: set[str],
        stack: tuple[int, ...],
    ) -> None:
        """Add properties named after patternProperties (or generic names) to reach minProperties."""
        rng = random.Random(_SEED)
        candidates: list[str] = []
        for part in parts:
            patterns = part.get("patternProperties")
            for pattern in patterns if isinstance(patterns, dict) else {}:
                for _ in range(min_properties):
                    name = complete(_full_match_form(pattern), "", rng, min_length=1, max_length=32)
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
            except _Impossible:
                continue
        if len(nodes) >= min_properties:
            return
        raise _Impossible(
            parts[0].pointer if parts else "", "minProperties", "not enough properties can be added"
        )

    # -- arrays -----------------------------------------------------------------------------

    def _array(self, parts: list[_Part], stack: tuple[int, ...]) -> ArrayNode:
        pointer = parts[0].pointer if parts else ""
        legacy = self.loaded.draft != "draft2020-12"
        tuples: list[tuple[_Part, list[Any], str]] = []  # (part, positional schemas, their keyword)
        rests: list[_Part | None] = []  # each part's schema for items after its tuple (None: any)
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
        min_items = _at_most(max([_int(p.get("minItems"), 0) for p in parts], default=0), "minItems", parts)
        maxima = [_int(p.get("maxItems"), -1) for p in parts if _int(p.get("maxItems"), -1) >= 0]
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
            except _Impossible:
                if index < min_items:
                    raise
                break
        rest_parts = [p for p in rests if p is not None]
        item_node: Node | None = None
        if len(prefix) == width:
            try:
                item_node = self.compile(rest_parts, stack)
            except _Impossible:
                item_node = None
        contains_node = self._contains(parts, rest_parts, stack)
        if contains_node is not None and item_node is None:
            raise _Impossible(pointer, "contains", "no item after the tuple can satisfy 'contains'")
        if contains_node is not None:
            counts = [_int(p.get("minContains"), 1) for p in parts if p.get("contains") is not None]
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
            raise _Impossible(
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

    def _contains(self, parts: list[_Part], rest_parts: list[_Part], stack: tuple[int, ...]) -> Node | None:
        wanted = [
            p.sub(p.get("contains"), "contains")
            for p in parts
            if p.get("contains") is not None and _int(p.get("minContains"), 1) > 0
        ]
        if not wanted:
            return None
        return self.compile(rest_parts + wanted, stack)


# -- helpers -------------------------------------------------------------------------------------


def _keys(part: _Part) -> list[str]:
    if not isinstance(part.schema, dict):
        return []
    return [k for k in part.schema if k not in part.consumed]


def _validation_keys(part: _Part, loaded: LoadedSchema) -> list[str]:
    known = loaded.validator_class.VALIDATORS
    return [k for k in _keys(part) if k in known]


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _int(value: Any, default: int) -> int:
    if _is_number(value) and float(value).is_integer():
        return int(value)
    return default


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _json_key(value: Any) -> str:
    """A key equal for equal JSON values: 1 and 1.0 share one, True and 1 do not."""

    def normal(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: normal(x) for k, x in v.items()}
        if isinstance(v, list):
            return [normal(x) for x in v]
        return v

    return json.dumps(normal(value), sort_keys=True)


def _hints(parts: list[_Part]) -> list[Any]:
    found: list[Any] = []
    for part in parts:
        for key in _HINT_KEYS:
            if key not in _keys(part):
                continue
            value = part.schema[key]
            found += value if key == "examples" and isinstance(value, list) else [value]
    return found[:5]


def _absent_names(neg: _Part, loaded: LoadedSchema) -> list[str] | None:
    """Property names a negated part is about, when its negation is "(one of) these are absent".

    ``not: {required: [a, b]}`` means a or b is absent; ``not: {anyOf: [{required: [a]}, ...]}``
    means all of them are absent. ``None`` when the negation has another form.
    """
    keys = set(_validation_keys(neg, loaded))
    if keys == {"required"}:
        return _strings(neg.get("required"))
    if keys == {"anyOf"} and isinstance(neg.get("anyOf"), list):
        names: list[str] = []
        for member in neg.get("anyOf"):
            if not isinstance(member, dict) or set(member) - {"required", "description", "title"}:
                return None
            names += _strings(member.get("required"))
        return names
    return None


def _property_dependencies(parts: list[_Part]) -> dict[str, list[str]]:
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
                    merged[source] += [t for t in _strings(targets) if t not in merged[source]]
    return merged


def _disjoint(a: tuple[set[str] | None, set[str] | None], b: tuple[set[str] | None, set[str] | None]) -> bool:
    """Whether no value fits both of two (types, fixed values) descriptions."""
    return any(x is not None and y is not None and not x & y for x, y in zip(a, b, strict=True))


def _discriminated(a: Node, b: Node) -> bool:
    """Two objects that each require a property with disjoint fixed values cannot both match."""
    if not isinstance(a, ObjectNode) or not isinstance(b, ObjectNode):
        return False
    fixed = {
        p.name: {_json_key(o) for o in p.node.options}
        for p in a.properties
        if p.required and isinstance(p.node, ChoiceNode)
    }
    return any(
        p.name in fixed and not fixed[p.name] & {_json_key(o) for o in p.node.options}
        for p in b.properties
        if p.required and isinstance(p.node, ChoiceNode)
    )


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


def _union_of(nodes: list[Node]) -> Node:
    """One node for several alternatives: nested unions flattened, choices merged, duplicates dropped."""
    flat: list[Node] = []
    options: dict[str, Any] = {}
    for node in nodes:
        for branch in node.branches if isinstance(node, UnionNode) else (node,):
            if isinstance(branch, ChoiceNode):
                options.update((_json_key(o), o) for o in branch.options if _json_key(o) not in options)
            elif branch not in flat:
                flat.append(branch)
    if options:
        flat.insert(0, ChoiceNode(tuple(options.values())))
    return flat[0] if len(flat) == 1 else UnionNode(tuple(flat[:MAX_BRANCHES]))


_FLAGS = re.compile(r"\(\?([imsx]+)\)")


def _full_match_form(pattern: str, relaxed: bool = False) -> str:
    """A full-match regex whose matches all contain a match of ``pattern`` (a search).

    An anchored side stays as written; a side with no anchor is left open (``.*``) when the
    other side is anchored, and closed when neither is (``[a-z]+`` then means the whole value,
    the usual intent). ``relaxed`` opens every unanchored side.
    """
    flags = _FLAGS.match(pattern)
    body = pattern[flags.end() :] if flags else pattern
    core = f"(?{flags.group(1)}:{body})" if flags else f"(?:{body})"
    starts = body.startswith("^")
    ends = body.endswith("$") and not _escaped(body, len(body) - 1)
    open_start = not starts and (ends or relaxed)
    open_end = not ends and (starts or relaxed)
    return (".*" if open_start else "") + core + (".*" if open_end else "")


def _escaped(text: str, index: int) -> bool:
    backslashes = len(text[:index]) - len(text[:index].rstrip("\\"))
    return backslashes % 2 == 1


def _combine(pieces: list[str]) -> str | None:
    """One full-match regex for several: all but the last become lookaheads."""
    if not pieces:
        return None
    return "".join(f"(?=(?:{p})\\Z)" for p in pieces[:-1]) + pieces[-1]


def _at_most(value: int, keyword: str, parts: list[_Part]) -> int:
    """``value``, or ``_TooLarge`` naming the keyword, where and the limit when it is over it."""
    limit = MAX_LENGTH if keyword == "minLength" else MAX_COUNT
    if value > limit:
        where = parts[0].pointer if parts else ""
        raise _TooLarge(f"{keyword} {value} at #{where} is over the limit of {limit}")
    return value


@lru_cache(maxsize=8192)
def _completion(pattern: str, min_length: int, max_length: int | None) -> str | None:
    return complete(pattern, "", random.Random(_SEED), min_length, max_length)


def _lcm(a: Fraction, b: Fraction) -> Fraction | None:
    """The least common multiple of two positive rationals."""
    numerator = math.lcm(a.numerator * b.denominator, b.numerator * a.denominator)
    result = Fraction(numerator, a.denominator * b.denominator)
    return result if result.denominator < 10**9 else None


def _has_value_between(
    low: float | None, high: float | None, exclusive_low: bool, exclusive_high: bool, step: float | None
) -> bool:
    if low is None or high is None:
        return True
    if step is None:
        return low < high or (low == high and not exclusive_low and not exclusive_high)
    first = math.ceil(low / step) * step
    if exclusive_low and first == low:
        first += step
    return first < high or (first == high and not exclusive_high)


def _in_bounds(
    value: float,
    low: float | None,
    high: float | None,
    exclusive_low: bool,
    exclusive_high: bool,
    step: float | None,
) -> bool:
    if low is not None and (value < low or (exclusive_low and value == low)):
        return False
    if high is not None and (value > high or (exclusive_high and value == high)):
        return False
    return step is None or (value / step).is_integer()
