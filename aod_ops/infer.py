"""``aod init``: a partition (JSON Schema, reference/holdout split, spec) inferred from a table.

The table is a JSON Lines, CSV or Parquet file, by path or URI (see ``aod_ops.storage``); it is
read as ``aod_ops.records`` reads a reference sample. CSV cells are typed by column: a column whose
every non-empty cell is an integer (no leading zeros: ``"02139"`` stays text) is integer, then
number, then boolean (``true``/``false``), else string; an empty cell is null. A NaN or infinite
number (Parquet, pandas) is null as well: JSON has no such number.

The schema (draft 2020-12) is genson's, then refined from the values:

- a value that is null somewhere has ``"null"`` among its types; a property missing from some
  records (JSON Lines) is left out of ``required``; objects get ``additionalProperties: false``;
- a string whose every non-null value is a date, date-time, uuid, email or uri (each checked by
  the validator's own format checker too) gets that ``format`` (a date column is a date, however
  few its values); a string without one gets an ``enum`` when it has few distinct values
  (``max_enum``), each seen often (``min_enum_count``); other strings get ``minLength`` and
  ``maxLength``, the shortest and longest seen, and, when every character is printable ASCII, a
  ``pattern`` of the characters seen (A-Z, a-z, 0-9 as whole ranges, others one by one): without
  it a model may write any character, and the judge rejects garbled text;
- numbers get ``minimum`` and ``maximum``, the smallest and largest seen (not widened: the
  honest default, which the user may loosen); arrays ``maxItems``, the longest seen;
- the root gets the partition's name as ``title`` and a TODO ``description``, each top-level
  property a TODO ``description``.

A table with a blank or repeated column name (a pandas index written to CSV, for one), or a column
named with the prefix of the output's provenance columns (``_aod_``), is refused.

The rows are shuffled with a seed and split into ``<name>_reference.jsonl`` and
``<name>_holdout.jsonl`` (20% held out by default); the spec names both, ``rows`` is the table's
row count, ``notes`` is a TODO, and ``sensitive`` lists the columns that look personal, by name
(``first_name``, ``email``, ``phone``, ``address``, ``latitude``, ``user_id``...) or by values
(most of them emails, phone numbers, street addresses or uuids), each with a comment saying why,
for the user to check. The schema is checked against every row and the written spec loaded with
``load_spec`` before the command reports success; files of an earlier ``aod init`` are replaced
only with ``--force``.
"""

from __future__ import annotations

import csv
import json
import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from aod_ops import storage
from aod_ops.errors import AodError, DataError
from aod_ops.jsonvalues import is_number
from aod_ops.storage import Location

TABLE_FORMATS = (".jsonl", ".ndjson", ".csv", ".parquet")
SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"
HOLDOUT = 0.2
MAX_ENUM = 20
MIN_ENUM_COUNT = 2
SHAPE_SHARE = 0.8
"""The share of a column's non-null strings that must look like emails (phones...) to flag it."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # as aod_ops.spec wants a partition name
_INTEGER = re.compile(r"[+-]?(?:0|[1-9][0-9]*)")
_NUMBER = re.compile(r"[+-]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# The shapes a format is recognised by; the validator's format checker must accept the value too.
_FORMATS = {
    "date-time": re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:\d\d)"),
    "date": re.compile(r"\d{4}-\d\d-\d\d"),
    "uuid": re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}"),
    "email": re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}"),
    "uri": re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+"),
}
# Sensitive columns: the words of a column's name, and the shapes of its values.
_SENSITIVE_WORDS = {
    "name": {"name", "firstname", "lastname", "surname", "fullname", "forename", "givenname", "username"},
    "email": {"email", "mail"},
    "phone": {"phone", "telephone", "tel", "mobile", "cell", "cellphone", "fax", "msisdn"},
    "address": {"address", "addr", "street", "zip", "zipcode", "postcode", "postal", "postalcode"},
    "coordinates": {"lat", "latitude", "lon", "lng", "long", "longitude", "coord", "coordinates", "geo"},
    "identifier": {
        "id", "uuid", "guid", "ssn", "passport", "iban", "ip", "dob", "birth", "birthdate", "birthday",
        "license", "licence", "account",
    },
}  # fmt: skip
_SENSITIVE_SHAPES = {
    "email": _FORMATS["email"],
    "phone": re.compile(r"\+?[0-9][0-9 ().-]{5,}[0-9]"),
    "address": re.compile(
        r"\d+[A-Za-z]?\s+.*\b(?:st|street|ave|avenue|blvd|boulevard|rd|road|dr|drive|ln|lane|way|ct|court|pl|"
        r"place|sq|square|hwy|highway)\b\.?.*",
        re.IGNORECASE,
    ),
    "identifier": _FORMATS["uuid"],
}
_SHAPE_WORDS = {
    "email": "emails",
    "phone": "phone numbers",
    "address": "street addresses",
    "identifier": "uuids",
}


@dataclass(frozen=True)
class InferSettings:
    """How the schema is refined: a string column without a format becomes an ``enum`` when it
    has at most ``max_enum`` distinct values, each seen at least ``min_enum_count`` times."""

    max_enum: int = MAX_ENUM
    min_enum_count: int = MIN_ENUM_COUNT


@dataclass(frozen=True)
class SensitiveGuess:
    """A column that looks sensitive: its ``kind`` (name, email, phone, address, coordinates,
    identifier) and the ``evidence`` (its name, or what its values look like)."""

    column: str
    kind: str
    evidence: str


@dataclass(frozen=True)
class InitResult:
    """What ``init_partition`` wrote: the files, the row counts and the sensitive guesses."""

    name: str
    source: Location
    table_rows: int
    rows: int
    columns: tuple[str, ...]
    spec_path: Location
    schema_path: Location
    reference_path: Location
    reference_rows: int
    holdout_path: Location | None
    holdout_rows: int
    sensitive: tuple[SensitiveGuess, ...]


def read_table(location: Location) -> list[dict[str, Any]]:
    """The rows of a JSON Lines, CSV or Parquet table as JSON records (CSV cells typed by column,
    non-finite numbers as null; see the module docstring).

    :raises DataError: for a missing, unreadable or empty table, an unknown suffix, a blank or
        repeated column name, or a value JSON cannot hold.
    """
    from aod_ops.records import read_records

    if storage.suffix(location) not in TABLE_FORMATS:
        raise DataError(f"{location}: unsupported table format (use {', '.join(TABLE_FORMATS)})")
    try:
        found = storage.is_file(location)
    except OSError as exc:
        raise DataError(f"{location}: cannot read: {exc.strerror or exc}") from exc
    if not found:
        raise DataError(f"{location}: file not found")
    header = _declared_columns(location)
    if header is not None:
        _check_column_names(location, header)
    if storage.suffix(location) == ".csv":
        text = {"properties": {column: {"type": ["string", "null"]} for column in header or ()}}
        records = _typed_csv(read_records(location, text), header or [])
    else:
        records = read_records(location, {})
    if not records:
        raise DataError(f"{location}: the table has no rows")
    cleaned = [_json_value(record, location, f"row {number}") for number, record in enumerate(records, 1)]
    if not any(cleaned):
        raise DataError(f"{location}: the table has no columns")
    return cleaned


def _declared_columns(location: Location) -> list[str] | None:
    """The column names a CSV header or a Parquet schema declares (None for JSON Lines)."""
    suffix = storage.suffix(location)
    try:
        if suffix == ".csv":
            with storage.open_file(location, "r", encoding="utf-8-sig", newline="") as handle:
                return next(csv.reader(handle), [])
        if suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            with storage.open_file(location) as handle:
                try:
                    return list(pq.read_schema(handle).names)
                except pa.ArrowException as exc:
                    reason = " ".join(str(exc).split())
                    raise DataError(f"{location}: not a readable Parquet file: {reason}") from exc
    except OSError as exc:
        raise DataError(f"{location}: cannot read: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{location}: not readable CSV: {exc}") from exc
    return None


def _check_column_names(location: Location, columns: Sequence[str]) -> None:
    for number, column in enumerate(columns, start=1):
        if not column.strip():
            raise DataError(
                f"{location}: column {number} has no name (a pandas index? write the table with "
                "index=False, or name the column)"
            )
    repeated = sorted(column for column, count in Counter(columns).items() if count > 1)
    if repeated:
        raise DataError(f"{location}: column names appear twice: {', '.join(map(repr, repeated))}")


def _typed_csv(records: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """CSV records (text or None) with each column typed by what all of its cells read as."""
    for column in columns:
        cells = [r[column] for r in records if r[column] is not None]
        if cells and all(_INTEGER.fullmatch(c.strip()) for c in cells):
            convert: Any = int
        elif cells and all(_NUMBER.fullmatch(c.strip()) and math.isfinite(float(c)) for c in cells):
            convert = float
        elif cells and all(c.strip().lower() in ("true", "false") for c in cells):
            convert = lambda c: c.strip().lower() == "true"  # noqa: E731
        else:
            continue
        for record in records:
            if record[column] is not None:
                record[column] = convert(record[column])
    return records


def _json_value(value: Any, location: Location, where: str) -> Any:
    """``value`` with non-finite numbers as null and tuples as lists; anything else JSON cannot
    hold (bytes, for one) is a ``DataError``."""
    if isinstance(value, dict):
        return {key: _json_value(item, location, f"{where}: {key}") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(item, location, where) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float):  # bool is an int
        return value
    raise DataError(f"{location}: {where}: a {type(value).__name__} value, which JSON cannot hold")


def infer_schema(
    records: Sequence[dict[str, Any]], title: str, settings: InferSettings | None = None
) -> dict[str, Any]:
    """A draft 2020-12 JSON Schema that every record of ``records`` satisfies: genson's, refined
    with nullability, formats, enums, bounds and TODO descriptions (see the module docstring)."""
    from genson import SchemaBuilder

    builder = SchemaBuilder(schema_uri=SCHEMA_DRAFT)
    for record in records:
        builder.add_object(record)
    schema: dict[str, Any] = builder.to_schema()
    _refine(schema, list(records), settings or InferSettings())
    properties = schema.get("properties", {})
    for column, subschema in properties.items():
        subschema["description"] = f"TODO: what {column} holds, its unit or meaning."
    head = {
        "$schema": SCHEMA_DRAFT,
        "title": title,
        "description": f"TODO: what one {title} record is (the agents read this).",
    }
    return head | {k: v for k, v in schema.items() if k != "$schema"}


def _refine(schema: dict[str, Any], values: list[Any], settings: InferSettings) -> None:
    """Add the keywords the observed ``values`` (present at this place) support to ``schema``."""
    if "anyOf" in schema:  # genson's union of an object or array with other types
        for branch in schema["anyOf"]:
            _refine(branch, [v for v in values if _fits_type(v, branch.get("type"))], settings)
        return
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    strings = [v for v in values if isinstance(v, str)]
    if "string" in kinds and strings:
        _refine_strings(schema, strings, set(kinds), settings)
    numbers = [v for v in values if is_number(v)]
    if numbers and ("number" in kinds or "integer" in kinds):
        schema["minimum"], schema["maximum"] = min(numbers), max(numbers)
    if "object" in kinds:
        objects = [v for v in values if isinstance(v, dict)]
        for key, subschema in schema.get("properties", {}).items():
            _refine(subschema, [o[key] for o in objects if key in o], settings)
        schema["additionalProperties"] = False
    arrays = [v for v in values if isinstance(v, list)]
    if "array" in kinds and arrays:
        schema["maxItems"] = max(map(len, arrays))
        if isinstance(schema.get("items"), dict):
            _refine(schema["items"], [item for array in arrays for item in array], settings)


def _refine_strings(
    schema: dict[str, Any], strings: list[str], kinds: set[str], settings: InferSettings
) -> None:
    """A format, else an enum (only where strings and null are the only types), else lengths and
    a pattern."""
    recognised = _format_of(strings)
    counts = Counter(strings)
    if recognised:  # the format says how long: a maxLength beside it only constrains generation
        schema["format"] = recognised
        return
    if (
        kinds <= {"string", "null"}
        and len(counts) <= settings.max_enum
        and min(counts.values()) >= settings.min_enum_count
    ):
        schema["enum"] = sorted(counts) + ([None] if "null" in kinds else [])
        return
    schema["minLength"], schema["maxLength"] = min(map(len, strings)), max(map(len, strings))
    pattern = _charset_pattern(strings)
    if pattern is not None:
        schema["pattern"] = pattern


def _charset_pattern(strings: list[str]) -> str | None:
    """A pattern allowing the characters seen (A-Z, a-z, 0-9 as whole ranges, others one by one),
    when all are printable ASCII: it keeps a model from writing other characters."""
    seen = set("".join(strings))
    if not seen or not all(" " <= c <= "~" for c in seen):
        return None
    ranges = [r for r in ("A-Z", "a-z", "0-9") if any(r[0] <= c <= r[2] for c in seen)]
    others = sorted(c for c in seen if not c.isalnum())
    return "^[" + "".join(ranges) + "".join("\\" + c if c in "\\]^-[" else c for c in others) + "]*$"


def _format_of(strings: list[str]) -> str | None:
    """The first format every string has, by its shape and by the validator's format checker."""
    from jsonschema import Draft202012Validator

    from aod_ops.schema.bounded import bounded_format_checker

    checker = bounded_format_checker(Draft202012Validator.FORMAT_CHECKER)
    for name, shape in _FORMATS.items():
        if all(shape.fullmatch(s) and checker.conforms(s, name) for s in strings):
            return name
    return None


def _fits_type(value: Any, kinds: str | list[str] | None) -> bool:
    """Whether ``value`` is of one of the JSON types ``kinds`` (genson's ``type``)."""
    wanted = {kinds} if isinstance(kinds, str) else set(kinds or ())
    names = {
        bool: "boolean",
        dict: "object",
        list: "array",
        str: "string",
        type(None): "null",
        float: "number",
    }
    actual = names.get(type(value), "integer")
    return actual in wanted or (actual == "integer" and "number" in wanted)


def guess_sensitive(records: Sequence[dict[str, Any]]) -> tuple[SensitiveGuess, ...]:
    """The top-level columns that look sensitive, by the words of their name or else by the shape
    of most of their string values (``SHAPE_SHARE``), in column order."""
    guesses = []
    for column in dict.fromkeys(key for record in records for key in record):
        words = _words(column)
        kind = next((k for k, names in _SENSITIVE_WORDS.items() if words & names), None)
        if kind is not None:
            guesses.append(SensitiveGuess(column, kind, "column name"))
            continue
        kind = _shape_of([r[column] for r in records if isinstance(r.get(column), str)])
        if kind is not None:
            guesses.append(SensitiveGuess(column, kind, f"values look like {_SHAPE_WORDS[kind]}"))
    return tuple(guesses)


def _shape_of(strings: list[str]) -> str | None:
    """The sensitive kind most (``SHAPE_SHARE``) of ``strings`` have the shape of, if any."""
    if not strings or all(_FORMATS["date"].fullmatch(s) for s in strings):
        return None  # 2012-01-01 has the shape of a phone number
    for kind, shape in _SENSITIVE_SHAPES.items():
        if sum(bool(shape.fullmatch(s.strip())) for s in strings) >= SHAPE_SHARE * len(strings):
            return kind
    return None


def _words(column: str) -> set[str]:
    """The lower-case words of a column name (``firstName``, ``first_name`` -> first, name), each
    also without a plural ``s``."""
    words = {w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", column)}
    return words | {w[:-1] for w in words if w.endswith("s") and len(w) > 2}


def split_rows(
    records: Sequence[dict[str, Any]], holdout: float = HOLDOUT, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The reference and holdout rows: ``holdout`` of the rows (rounded down) chosen with
    ``seed``, each part in the table's order."""
    held = set(random.Random(seed).sample(range(len(records)), int(len(records) * holdout)))
    reference = [r for i, r in enumerate(records) if i not in held]
    return reference, [r for i, r in enumerate(records) if i in held]


def spec_text(result: InitResult, source: str) -> str:
    """The partition spec ``init_partition`` writes: one partition, relative paths, the TODO notes
    and the sensitive guesses commented for the user to check."""
    lines = [
        f"# Written by `aod init` from {source} ({result.table_rows} rows). Fill in the TODOs (here",
        f"# and in {storage.name(result.schema_path)}), check `sensitive`, then:",
        f"#   aod run --spec {result.spec_path} --out OUT",
        "# Defaults (model, agent, loop, decoding) and rules: see examples/partitions.yaml.",
        "partitions:",
        f"  - name: {_scalar(result.name)}",
        f"    schema: {_scalar('schemas/' + storage.name(result.schema_path))}",
        f"    reference: {_scalar('data/' + storage.name(result.reference_path))}"
        f"  # {result.reference_rows} rows",
    ]
    if result.holdout_path is not None:
        lines.append(
            f"    holdout: {_scalar('data/' + storage.name(result.holdout_path))}"
            f"  # {result.holdout_rows} real rows kept apart: what the output is measured against"
        )
    lines += [
        f"    rows: {result.rows}",
        "    notes: >-",
        "      TODO: what a row is, typical values and how the columns relate, for the agents",
        "      that write and judge the prompts.",
        "    # Guessed by `aod init` from column names and values: CHECK them. No output value of a",
        "    # sensitive column may repeat a reference value, and no reference row is shown to the model.",
    ]
    if not result.sensitive:
        lines.append("    sensitive: []  # none guessed")
    else:
        lines.append("    sensitive:")
        lines += [f"      - {_scalar(g.column)}  # CHECK: {g.kind} ({g.evidence})" for g in result.sensitive]
    return "\n".join(lines) + "\n"


def _scalar(value: str) -> str:
    """``value`` as a YAML scalar, quoted where YAML needs it."""
    return yaml.safe_dump([value], default_flow_style=True, width=1 << 20, allow_unicode=True).strip()[1:-1]


def init_partition(
    source: str,
    out: str,
    name: str | None = None,
    holdout: float = HOLDOUT,
    seed: int = 0,
    rows: int | None = None,
    settings: InferSettings | None = None,
    force: bool = False,
) -> InitResult:
    """Infer a schema from the table ``source`` and write it, a reference/holdout split and a
    partition spec into the folder ``out`` (both paths or URIs).

    :param name: the partition's name (default: the table's file name without its suffix).
    :param holdout: the share of rows held out (0 for none).
    :param rows: the target row count (default: the table's).
    :param force: replace the files of an earlier ``aod init`` in ``out``.
    :raises AodError: for a table that cannot be read or used, a bad name, or files in the way.
    """
    from aod_ops.output import PREFIX
    from aod_ops.schema import load_schema
    from aod_ops.spec import load_spec

    location = storage.locate(source)
    name = name if name is not None else _default_name(storage.name(location))
    if not _NAME.match(name):
        raise AodError(f"partition name {name!r} must be letters, digits, '_', '.' or '-' (use --name)")
    records = read_table(location)
    columns = tuple(dict.fromkeys(key for record in records for key in record))
    clashes = [c for c in columns if c.startswith(PREFIX)]
    if clashes:
        raise DataError(
            f"{location}: columns {', '.join(map(repr, clashes))} start with {PREFIX!r}, the prefix of the "
            "output's provenance columns; rename them in the table"
        )
    schema = infer_schema(records, name, settings)
    loaded = load_schema(schema)
    for number, record in enumerate(records, start=1):
        issues = loaded.errors(record)
        if issues:  # never expected: the refinements only state what every value satisfies
            raise DataError(f"{location}: row {number}: the inferred schema refuses it: {issues[0].message}")
    reference, held = split_rows(records, holdout, seed)
    folder = storage.locate(out)
    result = InitResult(
        name=name,
        source=location,
        table_rows=len(records),
        rows=rows or len(records),
        columns=columns,
        spec_path=storage.join(folder, "partitions.yaml"),
        schema_path=storage.join(folder, "schemas", f"{name}.json"),
        reference_path=storage.join(folder, "data", f"{name}_reference.jsonl"),
        reference_rows=len(reference),
        holdout_path=storage.join(folder, "data", f"{name}_holdout.jsonl") if held else None,
        holdout_rows=len(held),
        sensitive=guess_sensitive(records),
    )
    targets = [result.spec_path, result.schema_path, result.reference_path, result.holdout_path]
    present = [str(t) for t in targets if t is not None and storage.exists(t)]
    if present and not force:
        raise AodError(f"{present[0]} exists (use another --out, or --force to replace it)")
    storage.write_text(result.schema_path, json.dumps(schema, indent=2, ensure_ascii=False) + "\n")
    storage.write_text(result.reference_path, _jsonl(reference))
    if result.holdout_path is not None:
        storage.write_text(result.holdout_path, _jsonl(held))
    storage.write_text(result.spec_path, spec_text(result, source))
    load_spec(result.spec_path)  # the spec runs as written: schema, samples and fields all check
    return result


def _default_name(file_name: str) -> str:
    stem = file_name.rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).lstrip("_.-") or "table"


def _jsonl(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
