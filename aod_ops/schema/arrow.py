"""Arrow types for a schema's top-level properties: the typed columns of the Parquet output.

Each top-level property becomes a nullable column: strings, enums of strings and anything whose
type is unclear (a union of types, a free-form object) as ``string`` (JSON text for values that
are not strings), integers as ``int64``, numbers as ``float64``, booleans as ``bool``, objects
with declared properties as ``struct``, arrays as ``list`` of their item type. The mapping is
read from the compiled node tree, so ``$ref``, ``allOf`` and unions are already resolved.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from aod_ops.errors import DataError
from aod_ops.schema.compile import compile_schema
from aod_ops.schema.load import LoadedSchema
from aod_ops.schema.nodes import ArrayNode, ChoiceNode, Node, NumberNode, ObjectNode, StringNode

_INT64 = (-(2**63), 2**63 - 1)


def arrow_schema(schema: LoadedSchema) -> pa.Schema:
    """The Arrow schema of ``schema``'s top-level properties (empty when the root is no object)."""
    root = _arrow_type(compile_schema(schema).root)
    if not pa.types.is_struct(root):
        return pa.schema([])
    return pa.schema([root.field(i) for i in range(root.num_fields)])


def to_arrow_row(schema: LoadedSchema | pa.Schema, record: Any) -> dict[str, Any]:
    """One record's values for the columns of ``arrow_schema`` (missing properties are None).

    Pass the ``pa.Schema`` when converting many records: from a ``LoadedSchema`` the mapping
    is derived again on every call. A value that does not fit its column (which a record valid
    against the schema never has) raises ``DataError`` naming the field.
    """
    columns = schema if isinstance(schema, pa.Schema) else arrow_schema(schema)
    values = record if isinstance(record, dict) else {}
    return {f.name: _convert(values.get(f.name), f.type, "/" + f.name) for f in columns}


def _arrow_type(node: Node) -> pa.DataType:
    if isinstance(node, StringNode):
        return pa.string()
    if isinstance(node, NumberNode):
        in_range = all(b is None or _INT64[0] <= b <= _INT64[1] for b in (node.minimum, node.maximum))
        return pa.int64() if node.integer and in_range else pa.float64()
    if isinstance(node, ChoiceNode):
        return _unify([_value_type(o) for o in node.options if o is not None])
    if isinstance(node, ObjectNode):
        if not node.properties:
            return pa.string()
        return pa.struct([pa.field(p.name, _arrow_type(p.node)) for p in node.properties])
    if isinstance(node, ArrayNode):
        items = [*node.prefix, *(n for n in (node.contains, node.items) if n is not None)]
        return pa.list_(_unify([_arrow_type(n) for n in items])) if items else pa.string()
    return _unify([_arrow_type(b) for b in node.branches if not _only_null(b)])


def _only_null(node: Node) -> bool:
    return isinstance(node, ChoiceNode) and all(o is None for o in node.options)


def _value_type(value: Any) -> pa.DataType:
    """The column type for one fixed value (an enum or const option)."""
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64() if _INT64[0] <= value <= _INT64[1] else pa.float64()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()  # strings, and objects or arrays as JSON text


def _unify(types: list[pa.DataType]) -> pa.DataType:
    """One type for values of several types; ``string`` (JSON text) when they do not agree."""
    if not types:
        return pa.string()
    result = types[0]
    for other in types[1:]:
        result = _unify_pair(result, other)
    return result


def _unify_pair(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    if a == b:
        return a
    numeric = {pa.int64(), pa.float64()}
    if a in numeric and b in numeric:
        return pa.float64()
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        names = [*a.names, *(n for n in b.names if n not in a.names)]
        fields = [pa.field(n, _unify([t.field(n).type for t in (a, b) if n in t.names])) for n in names]
        return pa.struct(fields)
    if pa.types.is_list(a) and pa.types.is_list(b):
        return pa.list_(_unify_pair(a.value_type, b.value_type))
    return pa.string()


def _convert(value: Any, kind: pa.DataType, where: str) -> Any:
    if value is None:
        return None
    if pa.types.is_string(kind):
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if pa.types.is_boolean(kind) and isinstance(value, bool):
        return value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if pa.types.is_int64(kind) and number and float(value).is_integer():
        whole = int(value)
        # A valid record may hold an integer too large for int64; its exact value stays in `record`.
        return whole if _INT64[0] <= whole <= _INT64[1] else None
    if pa.types.is_float64(kind) and number:
        return float(value)
    if pa.types.is_struct(kind) and isinstance(value, dict):
        fields = [kind.field(i) for i in range(kind.num_fields)]
        return {f.name: _convert(value.get(f.name), f.type, f"{where}/{f.name}") for f in fields}
    if pa.types.is_list(kind) and isinstance(value, list):
        return [_convert(v, kind.value_type, f"{where}/{i}") for i, v in enumerate(value)]
    raise DataError(f"field {where}: {json.dumps(value)[:80]} does not fit the column type {kind}")
