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

The compiler is one class put together from its keyword families: ``compile_combinators``
($ref, allOf, not, anyOf, oneOf, if), ``compile_objects``, ``compile_arrays`` and
``compile_scalars`` (enum/const, strings, numbers), over the state and parts of
``compile_base``. This module holds the entry point and the dispatch: flatten the conjunction,
expand its first disjunction into branches, then pick the JSON types and hand each to its family.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from dataclasses import replace

from aod_ops.errors import SchemaError
from aod_ops.schema.compile_arrays import ArrayCompiler
from aod_ops.schema.compile_base import (
    JSON_TYPES,
    Impossible,
    Part,
    TooLarge,
    absent_names,
    strings,
    validation_keys,
)
from aod_ops.schema.compile_combinators import CombinatorCompiler, union_of
from aod_ops.schema.compile_objects import ObjectCompiler
from aod_ops.schema.compile_scalars import ScalarCompiler
from aod_ops.schema.load import LoadedSchema, Scope
from aod_ops.schema.nodes import CompiledSchema, Node

# Bounds that keep compilation to milliseconds and make it impossible to hang.
MAX_NODES = 20_000  # conjunctions compiled per schema
MAX_SECONDS = 2.0  # wall-clock limit per schema

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
            root = compiler.compile([Part(schema.contents, scope, "")], ())
    except Impossible as error:
        raise SchemaError(
            f"{schema.source}: no value can satisfy the schema: {error.reason} "
            f"(keyword {error.keyword!r} at #{error.pointer})"
        ) from None
    except TooLarge as error:
        raise SchemaError(f"{schema.source}: {error}") from None
    except RecursionError:
        raise SchemaError(f"{schema.source}: the schema nests too deeply through $ref to compile") from None
    return CompiledSchema(root=root, unsupported=tuple(compiler.unsupported.values()))


class _Compiler(CombinatorCompiler, ObjectCompiler, ArrayCompiler, ScalarCompiler):
    """The schema compiler: the keyword families, and the dispatch between them."""

    # -- dispatch ------------------------------------------------------------------------------

    def compile(self, parts: list[Part], stack: tuple[int, ...]) -> Node:
        """The node for the conjunction of ``parts``; ``stack`` holds the ``$ref`` targets above."""
        parts, stack = self._flatten(parts, stack)
        depth = tuple(sorted(Counter(stack).items()))
        key = (tuple((id(p.schema), p.scope.base, p.consumed, p.negated, p.strict) for p in parts), depth)
        if key in self.memo:
            cached = self.memo[key]
            if isinstance(cached, Impossible):
                raise cached
            return cached
        self.compiled += 1
        if self.compiled > MAX_NODES or time.monotonic() - self.started > MAX_SECONDS:
            raise TooLarge("schema too large to compile within the limits (recursion or size)")
        try:
            node = self._disjunctions(parts, stack)
        except Impossible as error:
            self.memo[key] = error
            raise
        self.memo[key] = node
        return node

    def _disjunctions(self, parts: list[Part], stack: tuple[int, ...]) -> Node:
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

    # -- types -------------------------------------------------------------------------------

    def _types(self, parts: list[Part], stack: tuple[int, ...]) -> Node:
        """A choice of fixed values, or one node per JSON type the parts allow (a union of them)."""
        positive = [p for p in parts if not p.negated]
        negative = [p for p in parts if p.negated]
        self._note_unhandled(positive)
        for neg in negative:
            if not validation_keys(neg, self.loaded):
                raise Impossible(neg.pointer, "not", "'not' of a schema that accepts everything")
        if any(p.get("enum") is not None or "const" in p.keywords() for p in positive):
            return self._choice(positive, negative, self._enum_options(positive))
        types = self._allowed_types(positive, negative)
        nodes: list[Node] = []
        last: Impossible | None = None
        for name in types:
            try:
                nodes.append(self._typed(name, positive, negative, stack))
            except Impossible as error:
                last = error
        if not nodes:
            if last is not None:
                raise last
            pointer = positive[0].pointer if positive else ""
            raise Impossible(pointer, "type", "no JSON type satisfies every part of the schema")
        return union_of(nodes)

    def _note_unhandled(self, parts: list[Part]) -> None:
        known = self.loaded.validator_class.VALIDATORS
        for part in parts:
            for keyword in part.keywords():
                if keyword in known and keyword not in _HANDLED:
                    self.note(part.at(keyword), keyword, "not compiled; checked after generation")

    def _allowed_types(self, positive: list[Part], negative: list[Part]) -> list[str]:
        allowed: set[str] | None = None
        implied: list[str] = []
        for part in positive:
            declared = part.get("type")
            if declared is not None:
                names = set(strings(declared if isinstance(declared, list) else [declared]))
                if "number" in names:
                    names.add("integer")
                allowed = names if allowed is None else allowed & names
            implied += [_IMPLIED_TYPE[k] for k in part.keywords() if k in _IMPLIED_TYPE]
        anything = allowed is None and not implied
        if allowed is None:
            # No declared type: the kinds of value its keywords describe, or any kind.
            allowed = set(implied) if implied else set(JSON_TYPES)
        for neg in negative:
            excluded = neg.get("type")
            if excluded is not None and set(validation_keys(neg, self.loaded)) == {"type"}:
                names = set(strings(excluded if isinstance(excluded, list) else [excluded]))
                allowed -= names | ({"integer"} if "number" in names else set())
        if "number" in allowed:
            allowed.discard("integer")  # a number slot also covers integers
        kinds = [t for t in JSON_TYPES if t in allowed]
        # A value of any kind is written as a string (the first kind left after exclusions).
        return kinds[:1] if anything else kinds

    def _typed(self, name: str, positive: list[Part], negative: list[Part], stack: tuple[int, ...]) -> Node:
        """The node of JSON type ``name``, from the family that compiles it."""
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

    def _apply_negations(self, type_name: str, negative: list[Part]) -> None:
        """Check negations for a non-choice type: inexpressible strict ones make it impossible."""
        for neg in negative:
            keys = set(validation_keys(neg, self.loaded))
            if keys == {"type"}:
                continue  # applied when choosing types
            if absent_names(neg, self.loaded) is not None:
                if type_name == "object":
                    continue  # applied by the object builder
                # 'required' holds for every non-object, so its negation holds for none.
                raise Impossible(
                    neg.pointer, "not", f"a {type_name} satisfies 'required', so 'not' rejects it"
                )
            if neg.strict:
                raise Impossible(
                    neg.pointer, "else", "the 'else' branch needs 'not if', which cannot be expressed"
                )
            self.note(neg.pointer, "not", f"'not' over a {type_name} is checked after generation")
