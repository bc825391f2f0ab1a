"""The expectations a partition's table must meet, derived from its JSON Schema, as plain values.

Nothing here imports Great Expectations: an ``ExpectationSpec`` is a GX expectation type and its
keyword arguments, turned into a GX object by the adapter (``gx_adapter.py``) only when a
checkpoint runs.

From the output contract: ``_aod_record_id`` and ``_aod_record`` not null, ``_aod_record_id``
unique, the row count at least the target, no column but the contract's and the typed columns of
the schema's top-level properties, and the ``_aod_record`` column (JSON text) valid against the
whole schema (formats checked).
From each top-level property (its typed column; ``$ref`` followed within the schema):

- required, and null not allowed by its ``type``/``enum``/``const`` -> values not null;
- ``enum``/``const`` of scalars of one JSON type -> values in set;
- ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum`` on a number or integer
  -> values between (strict for exclusive bounds; draft 4's boolean form too);
- ``pattern`` on a string -> values match the pattern (a search, as in JSON Schema, on the
  ``regex`` engine under a time limit: a value the pattern times out on is unexpected);
- ``minLength``/``maxLength`` on a string -> value lengths between.

Nested properties are checked through the ``_aod_record`` column's JSON Schema expectation.

From each cross-field rule of the partition (``rules:`` in the spec, ``aod_ops.rules``): a rule
``a OP b`` between two top-level numeric columns (``>=``, ``>``, ``<=``, ``<``, ``==``) -> GX's
column-pair expectation on the typed columns; any other rule (a factor or offset, a nested field,
``!=``, strings) -> ``expect_column_values_to_satisfy_rule`` on the ``_aod_record`` column, which
evaluates the rule on each parsed record. Either way a row breaks the rule only when every field
it names is present, as the judge counts violations.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import referencing.exceptions

from aod_ops.errors import SpecError
from aod_ops.jsonvalues import is_number, pointer_tokens
from aod_ops.output import CONTRACT_COLUMNS, RECORD, RECORD_ID
from aod_ops.rules import Bound, Rule
from aod_ops.schema import LoadedSchema, arrow_schema

RECORD_SCHEMA_EXPECTATION = "expect_column_values_to_match_record_schema"
"""GX's ``expect_column_values_to_match_json_schema`` with a fast metric (see ``gx_adapter``)."""

PATTERN_EXPECTATION = "expect_column_values_to_match_schema_pattern"
"""GX's ``expect_column_values_to_match_regex`` matched in bounded time (see ``gx_adapter``)."""

COLUMNS_EXPECTATION = "expect_table_columns_to_be_in_set"
"""Every column of the table is one of ``column_set`` (a custom expectation, see ``gx_adapter``)."""

RULE_EXPECTATION = "expect_column_values_to_satisfy_rule"
"""Each ``_aod_record`` (JSON text) keeps a cross-field rule; a custom expectation (see ``gx_adapter``)."""

RULE_SOURCE = "rule:"
"""The ``source`` prefix of a rule's expectation; the rule's text follows it."""

# A bound `left OP right` as GX's pair expectation: (type, column A is the left side, or_equal).
_PAIR_EXPECTATIONS = {
    ">=": ("expect_column_pair_values_a_to_be_greater_than_b", True, True),
    ">": ("expect_column_pair_values_a_to_be_greater_than_b", True, False),
    "<=": ("expect_column_pair_values_a_to_be_greater_than_b", False, True),
    "<": ("expect_column_pair_values_a_to_be_greater_than_b", False, False),
    "==": ("expect_column_pair_values_to_be_equal", True, None),
}


@dataclass(frozen=True)
class ExpectationSpec:
    """One GX expectation as plain values: its type (``expect_...``), kwargs, and where it came from.

    ``source`` says why the expectation exists: ``contract`` (the output contract), ``schema``
    (the whole schema), the keyword's place such as ``schema:/properties/age/bounds``, or
    ``user``.
    """

    type: str
    kwargs: dict[str, Any]
    source: str = "user"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def column(self) -> str | None:
        """The column the expectation is about (None for table-level expectations)."""
        return column_of(self.kwargs)


def column_of(kwargs: Mapping[str, Any]) -> str | None:
    """The column named by an expectation's kwargs: ``column``, or ``"A, B"`` for a column pair."""
    if kwargs.get("column") is not None:
        return str(kwargs["column"])
    if kwargs.get("column_A") is not None and kwargs.get("column_B") is not None:
        return f"{kwargs['column_A']}, {kwargs['column_B']}"
    return None


@dataclass(frozen=True)
class ExpectationOutcome:
    """How one expectation or privacy gate fared: what, on which column, observed value, verdict.

    ``observed`` is a short text: an observed value, ``"3 of 120 unexpected, e.g. ..."``, or
    ``"error: ..."`` when the check itself could not run (a missing column, unparseable JSON).
    """

    expectation: str
    column: str | None
    success: bool
    observed: str
    source: str


def schema_expectations(
    schema: LoadedSchema, target_rows: int, rules: Sequence[Rule] = ()
) -> list[ExpectationSpec]:
    """The expectations of a partition's table for ``schema``, ``target_rows`` and its ``rules``."""
    specs = [
        ExpectationSpec("expect_column_values_to_not_be_null", {"column": RECORD_ID}, "contract"),
        ExpectationSpec("expect_column_values_to_be_unique", {"column": RECORD_ID}, "contract"),
        ExpectationSpec("expect_column_values_to_not_be_null", {"column": RECORD}, "contract"),
        ExpectationSpec(
            RECORD_SCHEMA_EXPECTATION,
            {"column": RECORD, "json_schema": schema.contents},
            "schema",
        ),
        ExpectationSpec("expect_table_row_count_to_be_between", {"min_value": target_rows}, "contract"),
        ExpectationSpec(COLUMNS_EXPECTATION, {"column_set": table_columns(schema)}, "contract"),
    ]
    resolver = schema.registry.resolver(schema.base_uri)
    root = _follow(schema.contents, resolver)
    properties = root.get("properties") if root is not None else None
    if not isinstance(properties, Mapping):
        return specs + rule_expectations(schema, rules)
    required = set(root.get("required") or ()) if root is not None else set()
    draft4 = schema.draft == "draft4"
    for name, subschema in properties.items():
        resolved = _follow(subschema, resolver)
        if resolved is not None:
            specs.extend(_property_expectations(name, resolved, name in required, draft4))
    return specs + rule_expectations(schema, rules)


def table_columns(schema: LoadedSchema) -> list[str]:
    """The columns a partition's table may have: the contract's, then the schema's typed columns."""
    return [*CONTRACT_COLUMNS, *arrow_schema(schema).names]


def rule_expectations(schema: LoadedSchema, rules: Sequence[Rule]) -> list[ExpectationSpec]:
    """One expectation per cross-field rule: a column-pair one where the typed columns allow it."""
    if not rules:
        return []
    numeric = {
        f.name for f in arrow_schema(schema) if (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
    }
    specs = []
    for rule in rules:
        source = RULE_SOURCE + rule.text
        pair = _pair_kwargs(rule.bound, numeric)
        if pair is None:
            specs.append(ExpectationSpec(RULE_EXPECTATION, {"column": RECORD, "rule": rule.text}, source))
        else:
            specs.append(ExpectationSpec(pair[0], pair[1], source))
    return specs


def _pair_kwargs(bound: Bound | None, numeric: set[str]) -> tuple[str, dict[str, Any]] | None:
    """GX's pair expectation for ``left OP right`` between two numeric top-level columns, else None."""
    if bound is None or bound.scale != 1 or bound.offset != 0 or bound.op not in _PAIR_EXPECTATIONS:
        return None
    left, right = _column(bound.left), _column(bound.right)
    if left not in numeric or right not in numeric:
        return None
    kind, left_is_a, or_equal = _PAIR_EXPECTATIONS[bound.op]
    a, b = (left, right) if left_is_a else (right, left)
    # A row missing either value is one the rule does not apply to (Rule.holds is None there).
    kwargs: dict[str, Any] = {"column_A": a, "column_B": b, "ignore_row_if": "either_value_is_missing"}
    if or_equal is not None:
        kwargs["or_equal"] = or_equal
    return kind, kwargs


def _column(pointer: str) -> str | None:
    """The top-level property a one-token JSON pointer names (None for a nested field)."""
    tokens = pointer_tokens(pointer)
    return tokens[0] if len(tokens) == 1 else None


def _follow(subschema: Any, resolver: Any) -> Mapping[str, Any] | None:
    """``subschema`` with a ``$ref`` chain followed; None when a reference leaves the schema."""
    for _ in range(32):  # a cycle of bare $refs is not a schema anyone writes; stop rather than loop
        if not isinstance(subschema, Mapping) or "$ref" not in subschema:
            return subschema if isinstance(subschema, Mapping) else None
        try:
            resolved = resolver.lookup(str(subschema["$ref"]))
        except referencing.exceptions.Unresolvable:
            return None  # the record's JSON Schema expectation still covers the property
        subschema, resolver = resolved.contents, resolved.resolver
    return None


def _types(subschema: Mapping[str, Any]) -> set[str]:
    declared = subschema.get("type")
    if isinstance(declared, str):
        return {declared}
    return {str(item) for item in declared} if isinstance(declared, list) else set()


def _property_expectations(
    name: str, subschema: Mapping[str, Any], required: bool, draft4: bool
) -> list[ExpectationSpec]:
    where = f"schema:/properties/{name.replace('~', '~0').replace('/', '~1')}"
    specs: list[ExpectationSpec] = []

    def expect(kind: str, keyword: str, **kwargs: Any) -> None:
        specs.append(
            ExpectationSpec(f"expect_column_{kind}", {"column": name, **kwargs}, f"{where}/{keyword}")
        )

    types = _types(subschema)
    choices: list[Any] | None = None
    if isinstance(subschema.get("enum"), list):
        choices = list(subschema["enum"])
    elif "const" in subschema:
        choices = [subschema["const"]]
    nullable = "null" in types or (choices is not None and None in choices) or not (types or choices)
    if required and not nullable:
        expect("values_to_not_be_null", "required")
    # GX leaves nulls out of set checks, so null needs no place in the set.
    values = [choice for choice in choices or () if choice is not None]
    kinds = {_json_type(value) for value in values}
    if len(kinds) == 1 and kinds != {"other"}:
        # Options of mixed types (or objects, arrays) sit in a column of JSON text: no set check.
        expect("values_to_be_in_set", "enum" if "enum" in subschema else "const", value_set=values)
    if types and types <= {"number", "integer", "null"} and types - {"null"}:
        bounds = _bounds(subschema, draft4)
        if bounds:
            expect("values_to_be_between", "bounds", **bounds)
    if types and types <= {"string", "null"} and "string" in types:
        if isinstance(subschema.get("pattern"), str):
            expect("values_to_match_schema_pattern", "pattern", regex=subschema["pattern"])
        lengths = {
            key: subschema[keyword]
            for key, keyword in (("min_value", "minLength"), ("max_value", "maxLength"))
            if isinstance(subschema.get(keyword), int)
        }
        if lengths:
            expect("value_lengths_to_be_between", "length", **lengths)
    return specs


def _bounds(subschema: Mapping[str, Any], draft4: bool) -> dict[str, Any]:
    """GX ``between`` kwargs for a number schema's bounds, keeping the tighter of two forms."""
    bounds: dict[str, Any] = {}
    for side, inclusive, exclusive, tighter in (
        ("min", "minimum", "exclusiveMinimum", max),
        ("max", "maximum", "exclusiveMaximum", min),
    ):
        candidates: list[tuple[float, bool]] = []
        if is_number(subschema.get(inclusive)):
            # Draft 4 writes an exclusive bound as a boolean beside the inclusive keyword.
            strict = draft4 and subschema.get(exclusive) is True
            candidates.append((subschema[inclusive], strict))
        if is_number(subschema.get(exclusive)):
            candidates.append((subschema[exclusive], True))
        if candidates:
            value = tighter(candidate[0] for candidate in candidates)
            bounds[f"{side}_value"] = value
            bounds[f"strict_{side}"] = any(strict for bound, strict in candidates if bound == value)
    return bounds


def _json_type(value: Any) -> str:
    """``string``, ``number`` or ``boolean`` for a scalar; ``other`` for an object or array."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else "other"


def extra_expectations(reference: str | Path) -> list[ExpectationSpec]:
    """Load a user's own expectations to add on top of the derived suite.

    ``reference`` is a GX suite JSON file (``{"expectations": [{"type": ..., "kwargs": ...}]}``)
    or ``"module:function"`` naming a callable that returns expectations: GX ``Expectation``
    objects or ``{"type": ..., "kwargs": ...}`` dicts.
    """
    text = str(reference)
    if isinstance(reference, Path) or text.endswith(".json"):
        path = Path(text)
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SpecError(f"cannot read the expectation suite {path}: {exc}") from exc
        items = loaded.get("expectations") if isinstance(loaded, Mapping) else None
        if not isinstance(items, list):
            raise SpecError(f"expectation suite {path} has no 'expectations' list")
        return [_as_spec(item, str(path)) for item in items]
    module_name, _, function_name = text.partition(":")
    if not module_name or not function_name:
        raise SpecError(f"extra expectations {text!r}: give a suite .json file or 'module:function'")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"cannot load the expectations callable {text!r}: {exc}") from exc
    returned = function()
    if not isinstance(returned, Iterable):
        raise SpecError(f"expectations callable {text!r} returned {type(returned).__name__}, not a list")
    return [_as_spec(item, text) for item in returned]


def _as_spec(item: Any, origin: str) -> ExpectationSpec:
    # A GX Expectation object carries its type and kwargs in its configuration.
    if hasattr(item, "configuration"):
        item = item.configuration.to_json_dict()
    if not isinstance(item, Mapping) or not isinstance(item.get("type"), str):
        raise SpecError(f"{origin}: an expectation needs a 'type' (and 'kwargs'), got {item!r}")
    kwargs = item.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise SpecError(f"{origin}: kwargs of {item['type']} must be an object")
    return ExpectationSpec(item["type"], dict(kwargs), "user", dict(item.get("meta") or {}))
