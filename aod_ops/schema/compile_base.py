"""What every keyword family of the schema compiler shares.

A ``Part`` is one schema dict of the conjunction being compiled; ``Impossible`` and ``TooLarge``
are how a family says that no instance fits or that the schema is over the limits;
``CompilerBase`` holds the compiler's state (memo, unsupported keywords, validators) and the
check of a value against a whole part. The families (``compile_combinators``,
``compile_objects``, ``compile_arrays``, ``compile_scalars``) build on it, and ``compile.py``
puts them together.
"""

from __future__ import annotations

import json
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from aod_ops.jsonvalues import json_pointer
from aod_ops.schema.load import LoadedSchema, Scope
from aod_ops.schema.nodes import Node, Unsupported

# The most a schema may ask one value to hold: a record past these is not written in seconds.
MAX_LENGTH = 4096  # minLength
MAX_COUNT = 1000  # minItems, minProperties
SEED = 0  # completions at compile time (feasibility checks, property names) are deterministic

JSON_TYPES = ("string", "number", "integer", "boolean", "null", "object", "array")


class Impossible(Exception):
    """No instance satisfies the conjunction being compiled (as far as the compiler can tell)."""

    def __init__(self, pointer: str, keyword: str, reason: str) -> None:
        super().__init__(reason)
        self.pointer, self.keyword, self.reason = pointer, keyword, reason


class TooLarge(Exception):
    """The schema needs more compiling than the per-schema bounds allow."""


@dataclass(frozen=True)
class Part:
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

    def sub(self, value: Any, *path: str | int) -> Part:
        """The part for a subschema at ``path`` below this one."""
        return Part(value, self.scope.enter(value), self.pointer + json_pointer(path))

    def at(self, *path: str | int) -> str:
        """The schema pointer of a keyword (or deeper location) of this part."""
        return self.pointer + json_pointer(path)

    def keywords(self) -> list[str]:
        """The keywords not consumed yet (none for a boolean schema)."""
        if not isinstance(self.schema, dict):
            return []
        return [k for k in self.schema if k not in self.consumed]


@dataclass
class CompilerBase(ABC):
    """The compiler's state, shared by the keyword families that extend it.

    ``compile`` (in ``compile.py``) compiles a conjunction of parts; the families call it for the
    subschemas they hold (properties, items, branches).
    """

    loaded: LoadedSchema
    max_depth: int
    unsupported: dict[tuple[str, str], Unsupported] = field(default_factory=dict)
    memo: dict[Any, Node | Impossible] = field(default_factory=dict)
    compiled: int = 0
    made: list[Any] = field(default_factory=list)
    validators: dict[tuple[int, str], Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @abstractmethod
    def compile(self, parts: list[Part], stack: tuple[int, ...]) -> Node:
        """The node for the conjunction of ``parts``; ``stack`` holds the ``$ref`` targets above."""

    def note(self, pointer: str, keyword: str, reason: str) -> None:
        """Record a keyword that the tree does not express (once per location)."""
        self.unsupported.setdefault((pointer, keyword), Unsupported(pointer, keyword, reason))

    def synthetic(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Keep a schema made by the compiler alive: memo keys hold the ids of part schemas."""
        self.made.append(schema)
        return schema

    def _valid(self, part: Part, value: Any) -> bool:
        """Whether ``value`` satisfies the part's whole schema (jsonschema, format checking on).

        A part with nothing but enum/const/type is checked by type alone: the caller's options
        already come from the enums, and a long enum would make full validation quadratic.
        """
        keys = set(validation_keys(part, self.loaded))
        if not part.negated and keys <= {"enum", "const", "type"}:
            declared = part.get("type")
            if declared is None:
                return True
            names = strings(declared if isinstance(declared, list) else [declared])
            checker = self.loaded.validator_class.TYPE_CHECKER
            return any(checker.is_type(value, name) for name in names if name in JSON_TYPES)
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


def validation_keys(part: Part, loaded: LoadedSchema) -> list[str]:
    """The part's unconsumed keywords that the schema's validator checks."""
    known = loaded.validator_class.VALIDATORS
    return [k for k in part.keywords() if k in known]


def strings(value: Any) -> list[str]:
    """The strings of a list value (none when it is not a list)."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def int_or(value: Any, default: int) -> int:
    """``value`` as an int when it is a finite whole number, else ``default``."""
    if is_number(value) and float(value).is_integer():
        return int(value)
    return default


def is_number(value: Any) -> bool:
    """Whether ``value`` is a finite JSON number (not a boolean)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def json_key(value: Any) -> str:
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


def absent_names(neg: Part, loaded: LoadedSchema) -> list[str] | None:
    """Property names a negated part is about, when its negation is "(one of) these are absent".

    ``not: {required: [a, b]}`` means a or b is absent; ``not: {anyOf: [{required: [a]}, ...]}``
    means all of them are absent. ``None`` when the negation has another form.
    """
    keys = set(validation_keys(neg, loaded))
    if keys == {"required"}:
        return strings(neg.get("required"))
    if keys == {"anyOf"} and isinstance(neg.get("anyOf"), list):
        names: list[str] = []
        for member in neg.get("anyOf"):
            if not isinstance(member, dict) or set(member) - {"required", "description", "title"}:
                return None
            names += strings(member.get("required"))
        return names
    return None


def at_most(value: int, keyword: str, parts: list[Part]) -> int:
    """``value``, or ``TooLarge`` naming the keyword, where and the limit when it is over it."""
    limit = MAX_LENGTH if keyword == "minLength" else MAX_COUNT
    if value > limit:
        where = parts[0].pointer if parts else ""
        raise TooLarge(f"{keyword} {value} at #{where} is over the limit of {limit}")
    return value
