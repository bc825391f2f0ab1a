"""``jsonschema`` validator classes whose schema regexes and format checks run in bounded time.

``jsonschema`` matches ``pattern``, ``patternProperties`` and the patterns that
``additionalProperties`` skips with Python's ``re``, which backtracks exponentially on a hostile
pattern: one value could stall a validation for ever. ``bounded_validator`` replaces those three
keywords with versions that match through ``patterns.search`` (the ``regex`` engine under a time
limit), where a pattern that times out fails its check with a message naming it. Its format
checker refuses strings longer than ``MAX_FORMAT_LENGTH`` (some checkers take about a second per
thousand characters) and treats a checker's ``RecursionError`` as a failed check.

``unevaluatedProperties`` still matches ``patternProperties`` with ``re`` inside ``jsonschema``;
``load_schema`` refuses a schema that has both keywords.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from jsonschema import FormatChecker
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import extend

from aod_ops.schema.patterns import UncheckedPattern, search

MAX_FORMAT_LENGTH = 4096
"""The longest string a ``format`` is checked on; a longer one fails the check."""


def bounded_validator(cls: type[Validator]) -> type[Validator]:
    """``cls`` with bounded ``pattern``/``patternProperties``/``additionalProperties`` and formats.

    A new class each call (not registered with ``jsonschema``, so ``validator_for`` is unchanged).
    """
    bounded: type[Validator] = extend(
        cls,
        validators={
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties,
        },
        format_checker=bounded_format_checker(cls.FORMAT_CHECKER),
    )
    return bounded


def bounded_format_checker(checker: FormatChecker) -> FormatChecker:
    """The formats of ``checker``, each refusing over-long strings and surviving deep recursion."""
    bounded = FormatChecker(formats=())
    for name, (check, raises) in checker.checkers.items():
        bounded.checkers[name] = (_within_limits(check), raises)
    return bounded


def _within_limits(check: Callable[[object], bool]) -> Callable[[object], bool]:
    def bounded_check(instance: object) -> bool:
        if isinstance(instance, str) and len(instance) > MAX_FORMAT_LENGTH:
            return False
        try:
            return bool(check(instance))
        except RecursionError:  # format "regex" compiles the value: deep parentheses recurse
            return False

    return bounded_check


def _short(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unchecked(error: UncheckedPattern, where: str) -> ValidationError:
    # The cause lets LoadedSchema.errors add the pattern's place in the schema to the message.
    return ValidationError(f"{error} {where}; it counts as not matching", cause=error)


def _pattern(
    validator: Validator, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    try:
        if search(pattern, instance):
            return
    except UncheckedPattern as error:
        yield _unchecked(error, f"on {_short(instance)}")
        return
    yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Validator, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for name, value in instance.items():
            try:
                matched = search(pattern, name)
            except UncheckedPattern as error:
                yield _unchecked(error, f"on property name {_short(name)}")
                continue
            if matched:
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _additional_properties(
    validator: Validator, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties") or {}
    patterns = schema.get("patternProperties") or {}
    extras = []
    for name in instance:
        if name in properties:
            continue
        try:
            if any(search(pattern, name) for pattern in patterns):
                continue
        except UncheckedPattern:
            continue  # patternProperties, beside this keyword, reports the pattern
        extras.append(name)
    if validator.is_type(additional, "object"):
        for name in extras:
            yield from validator.descend(instance[name], additional, path=name)
    elif additional is False and extras:
        names = ", ".join(repr(name) for name in sorted(extras))
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            listed = ", ".join(repr(pattern) for pattern in sorted(patterns))
            yield ValidationError(f"{names} {verb} not match any of the regexes: {listed}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(f"Additional properties are not allowed ({names} {verb} unexpected)")
