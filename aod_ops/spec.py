"""The partition spec: one YAML file that tells the CLI, Ray and Airflow what to synthesize.

A spec has ``defaults`` (model, agent, loop and decoding settings) and ``partitions``; each
partition names its JSON Schema, its reference sample (JSONL, CSV or Parquet: the real data the
output must not copy), the target row count, domain notes for the agents, the sensitive columns,
and optionally its own settings, which override the defaults field by field. Paths are relative to
the spec file. ``load_spec`` checks everything, schemas and reference samples included, before any
work starts, and a problem raises ``SpecError`` naming the file, the partition and the field.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import re
import types
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from aod_ops.agents.prompt import check_decoding
from aod_ops.dlm.settings import DecodingSettings
from aod_ops.errors import AodError, DataError, SpecError
from aod_ops.privacy import PrivacyThresholds, sensitive_columns
from aod_ops.rules import Rule, check_fields, parse_rules
from aod_ops.schema import load_schema

REFERENCE_FORMATS = (".jsonl", ".ndjson", ".csv", ".parquet")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class LoopSettings:
    """The AoD loop's budget: at most ``rounds`` rounds of ``candidates`` records each, with
    ``proposals`` revised prompts per round; it stops early at ``target_reward`` or after
    ``patience`` rounds without improvement.
    """

    rounds: int = 5
    candidates: int = 16
    proposals: int = 3
    target_reward: float = 0.95
    patience: int = 2

    def __post_init__(self) -> None:
        for name in ("rounds", "candidates", "proposals", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.target_reward <= 1.0:
            raise ValueError(f"target_reward must be between 0 and 1, got {self.target_reward}")


@dataclass(frozen=True)
class DLMSetting:
    """The frozen diffusion model: a registered name (``aod-smol-dlm``) or a local model folder;
    ``trust_remote_code`` opts in to a model's own code (LLaDA, Dream); ``base_url`` selects a DLM
    server instead of a local model.
    """

    model: str = "aod-smol-dlm"
    trust_remote_code: bool = False
    base_url: str | None = None


@dataclass(frozen=True)
class AgentSetting:
    """The chat model behind the judge's critic and the optimizer.

    With no ``base_url`` it is the local SmolLM2-135M-Instruct; otherwise an OpenAI-compatible
    endpoint serving ``model``, with the API key read from the environment variable
    ``api_key_env`` (none sent when unset), ``timeout`` seconds per request and ``retries``.
    """

    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    timeout: float = 60.0
    retries: int = 3

    def __post_init__(self) -> None:
        if self.base_url is not None and not self.model:
            raise ValueError("an endpoint agent needs 'model' beside 'base_url'")
        if self.base_url is None and (self.model or self.api_key_env):
            raise ValueError("'model' and 'api_key_env' need 'base_url' (the local agent is SmolLM2)")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        if self.retries < 0:
            raise ValueError(f"retries must be at least 0, got {self.retries}")


@dataclass(frozen=True)
class Partition:
    """One partition with its settings resolved (the defaults overridden by its own).

    ``sensitive`` holds the columns the spec names and those the schema marks
    ``x-aod-sensitive: true``; ``thresholds`` the privacy gates (``max_field_overlap`` may be set
    per partition: a table of small-domain numbers repeats real values however it is made);
    ``rules`` the cross-field rules the judge counts, the value guides respect and GX checks.
    """

    name: str
    schema_path: Path
    reference_path: Path
    rows: int
    notes: str = ""
    sensitive: tuple[str, ...] = ()
    holdout_path: Path | None = None
    dlm: DLMSetting = field(default_factory=DLMSetting)
    agent: AgentSetting = field(default_factory=AgentSetting)
    critic: bool = False
    seed: int = 0
    loop: LoopSettings = field(default_factory=LoopSettings)
    decoding: DecodingSettings = field(default_factory=DecodingSettings)
    thresholds: PrivacyThresholds = field(default_factory=PrivacyThresholds)
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class Spec:
    """A loaded partition spec: its file and its partitions, in file order."""

    path: Path
    partitions: tuple[Partition, ...]

    def select(self, name: str | None = None) -> tuple[Partition, ...]:
        """All partitions, or the one called ``name`` (``SpecError`` listing the names if none is)."""
        if name is None:
            return self.partitions
        chosen = tuple(p for p in self.partitions if p.name == name)
        if not chosen:
            names = ", ".join(p.name for p in self.partitions)
            raise SpecError(f"{self.path}: no partition named {name!r} (partitions: {names})")
        return chosen


# The settings a partition may override; `defaults` holds the same keys.
_SETTINGS = ("dlm", "agent", "critic", "seed", "loop", "decoding")
_PARTITION_FIELDS = (
    "name", "schema", "reference", "holdout", "rows", "notes", "sensitive", "max_field_overlap", "rules",
    *_SETTINGS,
)  # fmt: skip
_T = TypeVar("_T")


class _Where:
    """Where in the spec a value sits, so that an error names the file, the partition and the field."""

    def __init__(self, path: Path, section: str) -> None:
        self.path = path
        self.section = section

    def fail(self, field_name: str, problem: str) -> NoReturn:
        raise SpecError(f"{self.path}: {self.section}: field {field_name!r}: {problem}")


def _check(where: _Where, name: str, value: Any, hint: Any) -> Any:
    """``value`` if it has the annotated type (an int is accepted as a float), else a ``SpecError``."""
    options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if get_origin(option) is Literal and value in get_args(option):
            return value
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
    wanted = " or ".join(
        "one of " + ", ".join(map(repr, get_args(o)))
        if get_origin(o) is Literal
        else getattr(o, "__name__", str(o))
        for o in options
    )
    where.fail(name, f"must be {wanted}, got {value!r}")


def _merge(where: _Where, name: str, base: _T, raw: Any) -> _T:
    """``base`` (a settings dataclass) with the fields given in the mapping ``raw`` replaced."""
    if not isinstance(raw, dict):
        where.fail(name, f"must be a mapping, got {raw!r}")
    hints = get_type_hints(type(base))
    known = [f.name for f in fields(base)]  # type: ignore[arg-type]
    values = {}
    for key, value in raw.items():
        if key not in known:
            where.fail(f"{name}.{key}", f"unknown field (expected one of: {', '.join(known)})")
        values[key] = _check(where, f"{name}.{key}", value, hints[key])
    try:
        return replace(base, **values)  # type: ignore[type-var]
    except ValueError as exc:
        where.fail(name, str(exc))


def _settings(where: _Where, raw: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The settings in ``raw`` applied over ``base`` (both keyed like ``_SETTINGS``)."""
    out = dict(base)
    for key in _SETTINGS:
        if key not in raw:
            continue
        value = raw[key]
        if key == "dlm":
            out[key] = _merge(where, key, DLMSetting(), {"model": value} if isinstance(value, str) else value)
        elif key == "agent":
            out[key] = AgentSetting() if value == "local" else _merge(where, key, AgentSetting(), value)
        elif key in ("critic", "seed"):
            out[key] = _check(where, key, value, bool if key == "critic" else int)
        else:
            out[key] = _merge(where, key, base[key], value)
    try:
        check_decoding(out["decoding"])
    except ValueError as exc:
        where.fail("decoding", str(exc))
    return out


def _file(where: _Where, name: str, base: Path, value: Any, suffixes: tuple[str, ...] = ()) -> Path:
    """An existing file named relative to the spec's folder."""
    if not isinstance(value, str) or not value:
        where.fail(name, f"must be a path, got {value!r}")
    path = (base / value).resolve()
    if not path.is_file():
        where.fail(name, f"file not found: {path}")
    if suffixes and path.suffix.lower() not in suffixes:
        where.fail(name, f"{path.name}: unsupported format (use {', '.join(suffixes)})")
    return path


def _partition(where: _Where, raw: dict[str, Any], base: Path, settings: dict[str, Any]) -> Partition:
    for key in raw:
        if key not in _PARTITION_FIELDS:
            where.fail(key, f"unknown field (expected one of: {', '.join(_PARTITION_FIELDS)})")
    for key in ("name", "schema", "reference", "rows"):
        if key not in raw:
            where.fail(key, "missing")
    name = _check(where, "name", raw["name"], str)
    if not _NAME.match(name):
        where.fail("name", f"{name!r} must be letters, digits, '_', '.' or '-' (it names folders and tasks)")
    rows = _check(where, "rows", raw["rows"], int)
    if rows < 1:
        where.fail("rows", f"must be at least 1, got {rows}")
    sensitive = raw.get("sensitive", [])
    if not isinstance(sensitive, list) or not all(isinstance(s, str) for s in sensitive):
        where.fail("sensitive", f"must be a list of column names, got {sensitive!r}")
    schema_path = _file(where, "schema", base, raw["schema"])
    try:
        schema = load_schema(schema_path).contents
    except AodError as exc:
        where.fail("schema", str(exc))
    columns = schema.get("properties", {}) if isinstance(schema, dict) else {}
    for column in sensitive:
        if column not in columns:
            where.fail("sensitive", f"{column!r} is not a top-level property of {schema_path.name}")
    max_overlap = raw.get("max_field_overlap", PrivacyThresholds.max_field_overlap)
    if isinstance(max_overlap, bool) or not isinstance(max_overlap, int | float) or not 0 <= max_overlap <= 1:
        where.fail("max_field_overlap", f"must be a number between 0 and 1, got {max_overlap!r}")
    holdout = raw.get("holdout")
    texts = raw.get("rules", [])
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        where.fail("rules", f"must be a list of comparisons such as 'temp_min <= temp_max', got {texts!r}")
    try:
        rules = parse_rules(texts)
        check_fields(rules, schema)
    except SpecError as exc:
        where.fail("rules", str(exc))
    partition = Partition(
        name=name,
        schema_path=schema_path,
        reference_path=_file(where, "reference", base, raw["reference"], REFERENCE_FORMATS),
        holdout_path=None if holdout is None else _file(where, "holdout", base, holdout, REFERENCE_FORMATS),
        rows=rows,
        notes=_check(where, "notes", raw.get("notes", ""), str),
        sensitive=tuple(dict.fromkeys([*sensitive, *sensitive_columns(schema)])),
        thresholds=PrivacyThresholds(max_field_overlap=float(max_overlap)),
        rules=rules,
        **_settings(where, raw, settings),
    )
    for key, path in (("reference", partition.reference_path), ("holdout", partition.holdout_path)):
        if path is None:
            continue
        try:
            records = read_records(path, schema)
        except DataError as exc:
            where.fail(key, str(exc))
        if not records:
            where.fail(key, f"{path.name} holds no records")
    return partition


def load_spec(path: str | Path) -> Spec:
    """Read and check a partition spec: every field, schema and reference sample.

    :raises SpecError: naming the file, the partition and the field that is wrong.
    """
    path = Path(path).resolve()
    top = _Where(path, "spec")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a mapping with 'defaults' and 'partitions'")
    for key in raw:
        if key not in ("defaults", "partitions"):
            top.fail(key, "unknown field (expected defaults, partitions)")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        top.fail("defaults", f"must be a mapping, got {defaults!r}")
    where = _Where(path, "defaults")
    for key in defaults:
        if key not in _SETTINGS:
            where.fail(key, f"unknown field (expected one of: {', '.join(_SETTINGS)})")
    base_settings = {
        "dlm": DLMSetting(),
        "agent": AgentSetting(),
        "critic": False,
        "seed": 0,
        "loop": LoopSettings(),
        "decoding": DecodingSettings(),
    }
    settings = _settings(where, defaults, base_settings)
    items = raw.get("partitions")
    if not isinstance(items, list) or not items:
        top.fail("partitions", "must be a non-empty list of partitions")
    partitions: list[Partition] = []
    for index, item in enumerate(items):
        label = f"partitions[{index}]"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            label = f"partition {item['name']!r}"
        where = _Where(path, label)
        if not isinstance(item, dict):
            where.fail("partitions", f"each partition must be a mapping, got {item!r}")
        partition = _partition(where, item, path.parent, settings)
        if any(p.name == partition.name for p in partitions):
            where.fail("name", "duplicate partition name")
        partitions.append(partition)
    return Spec(path=path, partitions=tuple(partitions))


def load_reference(partition: Partition, holdout: bool = False) -> list[dict[str, Any]]:
    """The partition's reference sample (or its held-out sample) as JSON-like records."""
    path = partition.holdout_path if holdout else partition.reference_path
    if path is None:
        raise SpecError(f"partition {partition.name!r} has no holdout sample")
    return read_records(path, load_schema(partition.schema_path).contents)


def read_records(path: Path, schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Records from a JSONL, CSV or Parquet file.

    CSV cells are typed by the schema's top-level property types (integer, number, boolean; an
    empty cell is null where the type allows it, else the property is left out); Parquet dates,
    times and decimals become ISO strings and floats, as in JSON.

    :raises DataError: naming the file (and line) that cannot be read.
    """
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path)
        if suffix == ".csv":
            return _read_csv(path, schema)
        if suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                return [_jsonable(row) for row in pq.read_table(path).to_pylist()]
            except pa.ArrowException as exc:
                raise DataError(f"{path}: not a readable Parquet file: {exc}") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text: {exc}") from exc
    raise DataError(f"{path}: unsupported format (use {', '.join(REFERENCE_FORMATS)})")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {number}: not valid JSON: {exc.msg}") from exc
            if not isinstance(record, dict):
                raise DataError(f"{path}: line {number}: a record must be a JSON object")
            records.append(record)
    return records


def _property_types(schema: dict[str, Any], name: str) -> list[str]:
    prop = schema.get("properties", {}).get(name, {})
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


def _read_csv(path: Path, schema: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            if None in row:  # DictReader files surplus cells under the key None
                raise DataError(f"{path}: line {reader.line_num}: more cells than header columns")
            record: dict[str, Any] = {}
            for column, cell in row.items():
                kinds = _property_types(schema, column)
                if not cell and "string" not in kinds:
                    if "null" in kinds:
                        record[column] = None
                    continue
                try:
                    record[column] = _cell(cell or "", kinds)
                except ValueError as exc:
                    raise DataError(f"{path}: line {reader.line_num}: column {column!r}: {exc}") from exc
            records.append(record)
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
