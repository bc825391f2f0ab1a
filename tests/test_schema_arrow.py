"""Arrow columns for a schema's top-level properties, and records converted to them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aod_ops.errors import DataError
from aod_ops.schema import arrow_schema, load_schema, to_arrow_row

ORDER = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "status": {"enum": ["new", "paid"]},
        "total": {"type": "number"},
        "gift": {"type": "boolean"},
        "note": {"type": ["string", "null"]},
        "code": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        "customer": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        },
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
            },
        },
        "tags": {"type": "array", "items": {"type": "string"}},
        "sizes": {"type": "array", "items": {"enum": [1, 2.5]}},
        "extra": {"type": "object"},
        "ref": {"$ref": "#/$defs/money"},
    },
    "$defs": {"money": {"type": "number", "multipleOf": 0.01}},
}


def test_types_of_top_level_properties() -> None:
    schema = arrow_schema(load_schema(ORDER))
    assert schema == pa.schema(
        [
            ("id", pa.int64()),
            ("status", pa.string()),
            ("total", pa.float64()),
            ("gift", pa.bool_()),
            ("note", pa.string()),
            ("code", pa.string()),
            ("customer", pa.struct([("name", pa.string()), ("age", pa.int64())])),
            ("lines", pa.list_(pa.struct([("sku", pa.string()), ("qty", pa.int64())]))),
            ("tags", pa.list_(pa.string())),
            ("sizes", pa.list_(pa.float64())),
            ("extra", pa.string()),
            ("ref", pa.float64()),
        ]
    )
    assert all(field.nullable for field in schema)


def test_a_root_that_is_not_an_object_has_no_columns() -> None:
    assert arrow_schema(load_schema({"type": "array", "items": {"type": "string"}})) == pa.schema([])


def test_object_branches_of_a_root_union_are_merged() -> None:
    schema = {
        "oneOf": [
            {
                "type": "object",
                "properties": {"kind": {"const": "a"}, "n": {"type": "integer"}},
                "required": ["kind"],
            },
            {
                "type": "object",
                "properties": {"kind": {"const": "b"}, "n": {"type": "number"}},
                "required": ["kind"],
            },
        ]
    }
    assert arrow_schema(load_schema(schema)) == pa.schema([("kind", pa.string()), ("n", pa.float64())])


def test_rows_fit_their_columns() -> None:
    loaded = load_schema(ORDER)
    record: dict[str, Any] = {
        "id": 7.0,
        "status": "paid",
        "total": 3,
        "code": 12,
        "customer": {"name": "Ann"},
        "lines": [{"sku": "x1", "qty": 2}],
        "extra": {"any": ["thing"]},
        "sizes": [1, 2.5],
    }
    assert loaded.errors(record) == []
    row = to_arrow_row(loaded, record)
    assert row == {
        "id": 7,
        "status": "paid",
        "total": 3.0,
        "gift": None,
        "note": None,
        "code": "12",
        "customer": {"name": "Ann", "age": None},
        "lines": [{"sku": "x1", "qty": 2}],
        "tags": None,
        "sizes": [1.0, 2.5],
        "extra": '{"any": ["thing"]}',
        "ref": None,
    }


def test_rows_write_to_parquet_and_read_back(tmp_path: Path) -> None:
    loaded = load_schema(ORDER)
    columns = arrow_schema(loaded)
    records = [
        {"id": 1, "status": "new", "note": None, "tags": ["a", "b"], "lines": []},
        {"id": 2, "status": "paid", "note": "fragile", "customer": {"name": "Bo", "age": 40}, "ref": 9.99},
    ]
    table = pa.Table.from_pylist([to_arrow_row(columns, r) for r in records], schema=columns)
    pq.write_table(table, tmp_path / "orders.parquet")
    back = pq.read_table(tmp_path / "orders.parquet")
    assert back.schema == columns
    assert back.column("customer").to_pylist() == [None, {"name": "Bo", "age": 40}]
    assert back.column("tags").to_pylist() == [["a", "b"], None]
    assert back.column("ref").to_pylist() == [None, 9.99]


def test_a_value_that_does_not_fit_names_its_field() -> None:
    columns = arrow_schema(load_schema(ORDER))
    with pytest.raises(DataError, match=r"field /customer/age: \"old\" does not fit the column type int64"):
        to_arrow_row(columns, {"id": 1, "customer": {"name": "x", "age": "old"}})


def test_an_integer_too_large_for_int64_is_left_to_the_record_column() -> None:
    columns = arrow_schema(load_schema({"properties": {"n": {"type": "integer"}}}))
    assert to_arrow_row(columns, {"n": 2**70}) == {"n": None}


def test_a_record_that_is_not_an_object_gives_empty_columns() -> None:
    columns = arrow_schema(load_schema(ORDER))
    assert set(to_arrow_row(columns, ["not", "an", "object"]).values()) == {None}
