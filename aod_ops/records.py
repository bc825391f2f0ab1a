"""Records of a reference or holdout sample, and how they break the partition's schema.

A sample is a JSONL, CSV or Parquet file (named by a path or a URI, see ``aod_ops.storage``) or the
rows of a SQL query (``aod_ops.sql``), read as JSON-like records: CSV cells and SQL values typed by
the schema's top-level property types, Parquet values as JSON would hold them. ``read_records``
reads a file; ``check_rows`` reads a file or a query and validates each record against the
schema, with a ``RowProblem`` per error (the file, the line or row, the JSON pointer and the
reason); what to do with them (refuse the file or leave the rows out) is the spec's to say
(``aod_ops.spec``). A record nested deeper than ``MAX_RECORD_DEPTH`` is refused with one line
naming the limit.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import re
import reprlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aod_ops import storage
from aod_ops.errors import DataError
from aod_ops.schema import LoadedSchema
from aod_ops.sql import SqlQuery, fetch
from aod_ops.storage import Location

REFERENCE_FORMATS = (".jsonl", ".ndjson", ".csv", ".parquet")
MAX_RECORD_DEPTH = 100  # nesting of a reference record (JSON nests far deeper before it fails)
# Column names in error messages are shown cut short: a hostile query must not print megabytes.
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80
_short.maxlevel = 3


@dataclass(frozen=True)
class RowProblem:
    """One way a reference or holdout row breaks the partition's schema: the file, where the row
    is in it (``line 4`` of a text file, ``row 4`` of a Parquet file), the JSON pointer of the
    offending value and the validator's reason."""

    path: Location | SqlQuery
    location: str
    pointer: str
    reason: str

    def __str__(self) -> str:
        source = self.path.name if isinstance(self.path, SqlQuery) else storage.name(self.path)
        return f"{source} {self.location} at {self.pointer or '/'}: {self.reason}"


def check_rows(
    path: Location | SqlQuery, schema: LoadedSchema
) -> tuple[list[dict[str, Any]], list[RowProblem]]:
    """The records of a reference file that fit ``schema``, and a problem per error of the others.

    :raises DataError: naming the file (and line) that cannot be read.
    """
    valid: list[dict[str, Any]] = []
    problems: list[RowProblem] = []
    for location, record in _located_records(path, schema.contents):
        issues = schema.errors(record)
        if not issues:
            valid.append(record)
        for issue in issues:
            reason = " ".join(issue.message.split())
            reason = reason if len(reason) <= 160 else reason[:157] + "..."
            problems.append(RowProblem(path, location, issue.pointer, reason))
    return valid, problems


def read_records(path: Location, schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Records from a JSONL, CSV or Parquet file (not validated: see ``check_rows``).

    CSV cells are typed by the schema's top-level property types (integer, number, boolean); an
    empty cell is no value: null where the type allows it, else the property is left out. Parquet
    dates, times and decimals become ISO strings and floats, as in JSON.

    :raises DataError: naming the file (and line) that cannot be read, or a record nested deeper
        than ``MAX_RECORD_DEPTH``.
    """
    return [record for _, record in _located_records(path, schema)]


def _located_records(path: Location | SqlQuery, schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``read_records`` with where each record is: ``line N`` (JSONL, CSV) or ``row N`` (Parquet,
    SQL)."""
    if isinstance(path, SqlQuery):
        return _read_sql(path, schema)
    suffix = storage.suffix(path)
    try:
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path)
        if suffix == ".csv":
            return _read_csv(path, schema)
        if suffix == ".parquet":
            return _read_parquet(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    raise DataError(f"{path}: unsupported format (use {', '.join(REFERENCE_FORMATS)})")


def _depth(value: Any) -> int:
    """How deeply ``value`` nests (a scalar is 0), counted without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _too_deep(path: Location | SqlQuery, location: str) -> DataError:
    return DataError(
        f"{path}: {location}: nested deeper than {MAX_RECORD_DEPTH} levels, the limit for a record"
    )


def _read_jsonl(path: Location) -> list[tuple[str, dict[str, Any]]]:
    records = []
    with storage.open_file(path, "r", encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {number}: not valid JSON: {exc.msg}") from exc
            except RecursionError:
                raise _too_deep(path, f"line {number}") from None
            except ValueError as exc:  # an integer of thousands of digits
                reason = str(exc).split(";")[0]  # without Python's advice to programmers
                raise DataError(f"{path}: line {number}: not valid JSON: {reason}") from exc
            if not isinstance(record, dict):
                raise DataError(f"{path}: line {number}: a record must be a JSON object")
            if _depth(record) > MAX_RECORD_DEPTH:
                raise _too_deep(path, f"line {number}")
            records.append((f"line {number}", record))
    return records


def _read_parquet(path: Location) -> list[tuple[str, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with storage.open_file(path) as handle:
            rows = pq.read_table(handle).to_pylist()
    except pa.ArrowException as exc:
        raise DataError(f"{path}: not a readable Parquet file: {' '.join(str(exc).split())}") from exc
    records = []
    for number, row in enumerate(rows, start=1):
        if _depth(row) > MAX_RECORD_DEPTH:
            raise _too_deep(path, f"row {number}")
        records.append((f"row {number}", _jsonable(row)))
    return records


def _read_sql(query: SqlQuery, schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A query's rows, typed as a Parquet file's are; a NULL is no value, as an empty CSV cell is
    (null where the column's type allows it, else the property is left out)."""
    result = fetch(query)
    properties = schema.get("properties")
    unknown = [c for c in result.columns if not isinstance(properties, dict) or c not in properties]
    if unknown:
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise DataError(
            f"{query}: returns columns the schema does not have: "
            f"{', '.join(_short.repr(c) for c in unknown[:10])}{more} (select only its properties)"
        )
    nullable = {column: "null" in _property_types(schema, column) for column in result.columns}
    records = []
    for number, values in enumerate(result.rows, start=1):
        row = {c: v for c, v in zip(result.columns, values, strict=True) if v is not None or nullable[c]}
        if _depth(row) > MAX_RECORD_DEPTH:
            raise _too_deep(query, f"row {number}")
        records.append((f"row {number}", _jsonable(row)))
    return records


def _property_types(schema: dict[str, Any], name: str) -> list[str]:
    properties = schema.get("properties")
    prop = properties.get(name) if isinstance(properties, dict) else None
    if not isinstance(prop, dict):  # absent, or a boolean schema: read as text
        prop = {}
    kind = prop.get("type")
    if kind is None and isinstance(prop.get("enum"), list):
        # An untyped enum is typed by its options: {"enum": [4, 6, 8]} reads "6" as 6.
        kind = [_json_type(option) for option in prop["enum"]]
        kind = sorted(set(kind), key=kind.index)
    kind = kind or "string"
    return [kind] if isinstance(kind, str) else list(kind)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "null" if value is None else "string"


def _read_csv(path: Location, schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    records = []
    # utf-8-sig: a spreadsheet's byte-order mark is not part of the first column's name.
    with storage.open_file(path, "r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            for row in reader:
                if None in row:  # DictReader files surplus cells under the key None
                    raise DataError(f"{path}: line {reader.line_num}: more cells than header columns")
                record: dict[str, Any] = {}
                for column, cell in row.items():
                    kinds = _property_types(schema, column)
                    if not cell:
                        # An empty cell is no value: a required property is then missing.
                        if "null" in kinds:
                            record[column] = None
                        continue
                    try:
                        record[column] = _cell(cell, kinds)
                    except ValueError as exc:
                        raise DataError(f"{path}: line {reader.line_num}: column {column!r}: {exc}") from exc
                records.append((f"line {reader.line_num}", record))
        except csv.Error as exc:  # a cell over the csv module's size limit, on the line it was reading
            raise DataError(f"{path}: line {reader.line_num + 1}: not readable CSV: {exc}") from exc
    return records


def _cell(text: str, kinds: list[str]) -> Any:
    """A CSV cell as the first of the schema's types it reads as."""
    for kind in kinds:
        if kind == "integer" and re.fullmatch(r"[+-]?\d+", text.strip()):
            return int(text)
        if kind == "number":
            try:
                number = float(text)
            except ValueError:
                continue
            if math.isfinite(number):
                return number
        if kind == "boolean" and text.strip().lower() in ("true", "false"):
            return text.strip().lower() == "true"
        if kind == "string":
            return text
    raise ValueError(f"{text!r} is not {' or '.join(kinds)}")


def _jsonable(value: Any) -> Any:
    """A Parquet value as the JSON value it stands for."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value
