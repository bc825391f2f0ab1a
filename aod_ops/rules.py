"""Cross-field rules of a partition (``rules:`` in the spec), e.g. ``temp_min <= temp_max``.

A rule is a comparison between arithmetic expressions over a record's fields, written as in
Python: field names (a top-level property, or ``a.b`` for a nested one), numbers and quoted
strings, ``+ - * /``, unary minus, and the comparisons ``< <= > >= == !=`` (chains allowed:
``0 <= age <= 110``). It is parsed once with ``ast`` and evaluated by walking the tree: nothing
is ever executed, so a spec cannot run code through a rule.

A record *breaks* a rule when every field the rule names is present and the comparison is
false. A rule whose fields are missing from a record, or whose values cannot be compared (a
string with a number), does not apply to it. ISO dates compare correctly as strings
(``end_date >= start_date``).

``Rule.bound`` exposes a rule of the form ``a OP k * b + c`` (one field on each side, linear),
so the sampler's value guides can keep the two values on the right sides of each other.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aod_ops.errors import SpecError
from aod_ops.jsonvalues import json_pointer, pointer_tokens

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_ARITHMETIC: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_SYMBOL = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}


class _Missing(Exception):
    """A field the rule names is absent (or null) in the record: the rule does not apply."""


@dataclass(frozen=True)
class Bound:
    """A rule of the form ``left OP scale * right + offset`` between two numeric fields."""

    left: str
    op: str
    right: str
    scale: float
    offset: float


@dataclass(frozen=True)
class Rule:
    """One parsed cross-field rule: its text, the JSON pointers it reads, and its syntax tree."""

    text: str
    fields: tuple[str, ...]
    tree: ast.Compare

    def holds(self, record: Any) -> bool | None:
        """True or False for a record the rule applies to, None when it does not apply."""
        try:
            left = _value(self.tree.left, record)
            for op, right_node in zip(self.tree.ops, self.tree.comparators, strict=True):
                right = _value(right_node, record)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
        except (_Missing, TypeError, ZeroDivisionError):
            return None
        return True

    @property
    def bound(self) -> Bound | None:
        """The rule as ``left OP scale * right + offset`` when it has that shape, else None."""
        if len(self.tree.ops) != 1 or len(self.fields) != 2:
            return None
        left, right = _linear(self.tree.left), _linear(self.tree.comparators[0])
        if left is None or right is None:
            return None
        # Move everything to the form a*x OP b*y + c with x on the left, y on the right.
        terms = {name: left.get(name, 0.0) - right.get(name, 0.0) for name in self.fields}
        constant = right.get("", 0.0) - left.get("", 0.0)
        x, y = self.fields
        a, b = terms[x], -terms[y]
        if a == 0 or b == 0:
            return None
        op = _SYMBOL[type(self.tree.ops[0])]
        if a < 0:  # dividing by a negative coefficient turns the comparison around
            op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
        return Bound(left=x, op=op, right=y, scale=b / a, offset=constant / a)


def parse_rule(text: str) -> Rule:
    """Parse one rule; ``SpecError`` saying what is wrong when it is not a comparison we read."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise SpecError(f"rule {text!r} is not an expression: {exc.msg}") from exc
    if not isinstance(tree, ast.Compare):
        raise SpecError(f"rule {text!r} must compare two expressions (e.g. 'temp_min <= temp_max')")
    fields: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name | ast.Attribute):
            fields.append(_pointer(node, text))
        elif not isinstance(
            node, ast.Compare | ast.BinOp | ast.UnaryOp | ast.Constant | ast.USub | ast.UAdd | ast.Load
        ) and type(node) not in (*_COMPARE, *_ARITHMETIC):
            raise SpecError(f"rule {text!r} uses {type(node).__name__}, which rules do not allow")
        elif isinstance(node, ast.Constant) and (
            isinstance(node.value, bool) or not isinstance(node.value, int | float | str)
        ):
            raise SpecError(f"rule {text!r}: only numbers and strings may be written literally")
    if not fields:
        raise SpecError(f"rule {text!r} names no field")
    # An Attribute's inner Name was also walked; keep the outermost pointers only.
    outer = (f for f in fields if not any(o != f and o.startswith(f + "/") for o in fields))
    pointers = tuple(dict.fromkeys(outer))
    return Rule(text=text.strip(), fields=pointers, tree=tree)


def parse_rules(texts: Sequence[str]) -> tuple[Rule, ...]:
    """Parse every rule of a partition, in order."""
    return tuple(parse_rule(t) for t in texts)


def check_fields(rules: Sequence[Rule], schema: dict[str, Any]) -> None:
    """``SpecError`` when a rule names a field that is not a property of ``schema``."""
    for rule in rules:
        for pointer in rule.fields:
            node: Any = schema
            for token in pointer.strip("/").split("/"):
                properties = node.get("properties", {}) if isinstance(node, dict) else {}
                if token not in properties:
                    raise SpecError(f"rule {rule.text!r} names {pointer!r}, which the schema does not have")
                node = properties[token]


def violations(records: Sequence[Any], rules: Sequence[Rule]) -> float:
    """Share of ``records`` that break at least one rule (0.0 with no records or no rules)."""
    if not records or not rules:
        return 0.0
    return sum(any(rule.holds(r) is False for rule in rules) for r in records) / len(records)


def _pointer(node: ast.expr, text: str) -> str:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise SpecError(f"rule {text!r}: a field is a name or names joined by '.'")
    parts.append(node.id)
    return json_pointer(reversed(parts))


def _value(node: ast.expr, record: Any) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name | ast.Attribute):
        value = record
        for key in pointer_tokens(_pointer(node, "")):
            if not isinstance(value, dict) or value.get(key) is None:
                raise _Missing(key)
            value = value[key]
        if isinstance(value, bool):
            raise TypeError("a boolean is not compared by rules")
        return value
    if isinstance(node, ast.UnaryOp):
        operand = _value(node.operand, record)
        return -operand if isinstance(node.op, ast.USub) else +operand
    assert isinstance(node, ast.BinOp)
    return _ARITHMETIC[type(node.op)](_value(node.left, record), _value(node.right, record))


def _linear(node: ast.expr) -> dict[str, float] | None:
    """An expression as {pointer: coefficient, "": constant}, or None when it is not linear."""
    if isinstance(node, ast.Constant):
        return {"": float(node.value)} if isinstance(node.value, int | float) else None
    if isinstance(node, ast.Name | ast.Attribute):
        return {_pointer(node, ""): 1.0}
    if isinstance(node, ast.UnaryOp):
        inner = _linear(node.operand)
        sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
        return None if inner is None else {k: sign * v for k, v in inner.items()}
    if not isinstance(node, ast.BinOp):
        return None
    left, right = _linear(node.left), _linear(node.right)
    if left is None or right is None:
        return None
    if isinstance(node.op, ast.Add | ast.Sub):
        sign = 1.0 if isinstance(node.op, ast.Add) else -1.0
        out = dict(left)
        for key, value in right.items():
            out[key] = out.get(key, 0.0) + sign * value
        return out
    # A product or quotient is linear only when one side is a constant.
    if isinstance(node.op, ast.Mult):
        if set(left) == {""}:
            return {k: v * left[""] for k, v in right.items()}
        if set(right) == {""}:
            return {k: v * right[""] for k, v in left.items()}
    if isinstance(node.op, ast.Div) and set(right) == {""} and right[""] != 0:
        return {k: v / right[""] for k, v in left.items()}
    return None
