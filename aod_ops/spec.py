"""The partition spec: one YAML file that tells the CLI, Ray and Airflow what to synthesize.

A spec has ``defaults`` (model, agent, loop and decoding settings) and ``partitions``; each
partition names its JSON Schema, its reference sample (JSONL, CSV, Parquet, or the rows of a SQL
query, see ``aod_ops.sql``: the real data the output must not copy), the target row count, domain
notes for the agents, the sensitive columns,
and optionally its own settings, which override the defaults field by field. Files are named by
paths relative to the spec file or by URIs (``s3://bucket/cars.csv``, see ``aod_ops.storage``); a
spec may itself be read from a URI. ``load_spec`` checks everything, schemas and reference samples
included, before any work starts, and a problem raises ``SpecError`` naming the file, the
partition and the field.

Every reference and holdout row is read and validated against the partition's schema
(``aod_ops.records``): a row that breaks it is refused with its file, line, JSON pointer and
reason, or left out (with a warning) where the spec says ``invalid_rows: skip``; ``load_reference``
gives a partition's rows. A spec larger than ``MAX_SPEC_BYTES``, nested deeper than
``MAX_SPEC_DEPTH`` or expanding (through YAML aliases) to more than ``MAX_SPEC_VALUES`` values is
refused with one line naming the limit.
"""

from __future__ import annotations

import logging
import re
import reprlib
import types
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from aod_ops import storage
from aod_ops.dlm.settings import DecodingSettings, check_decoding
from aod_ops.errors import AodError, DataError, SpecError
from aod_ops.output import output_schema
from aod_ops.privacy import PrivacyThresholds, sensitive_columns
from aod_ops.records import REFERENCE_FORMATS, RowProblem, check_rows
from aod_ops.rules import Rule, check_fields, parse_rules
from aod_ops.schema import load_schema
from aod_ops.sql import SqlQuery
from aod_ops.storage import Location

# Limits on a spec file: a real one is a few KiB, a handful of levels deep.
MAX_SPEC_BYTES = 1 << 20
MAX_SPEC_DEPTH = 32
MAX_SPEC_VALUES = 100_000  # after YAML aliases are expanded: a "billion laughs" spec stops here
# How many of a file's bad rows an error or a warning shows (the rest are counted).
SHOWN_PROBLEMS = 5
AgentFallback = Literal["error", "editor"]
InvalidRows = Literal["error", "skip"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_log = logging.getLogger(__name__)
# Values in error messages are shown cut short: a hostile spec must not print megabytes.
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80
_short.maxlevel = 3


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
    ``trust_remote_code`` opts in to a model's own code (LLaDA, Dream).

    With ``base_url`` the DLM is a server instead (an OpenAI-compatible endpoint, such as SGLang
    serving LLaDA2) and ``model`` the name it serves; the API key is read from the environment
    variable ``api_key_env`` (none sent when unset), with ``timeout`` seconds per request (time
    queued at the server included) and ``retries``. A server writes free mode only
    (``aod_ops.dlm.server``).
    """

    model: str = "aod-smol-dlm"
    trust_remote_code: bool = False
    base_url: str | None = None
    api_key_env: str | None = None
    timeout: float = 120.0
    retries: int = 3

    def __post_init__(self) -> None:
        if self.base_url is not None and self.trust_remote_code:
            raise ValueError("'trust_remote_code' is for a local model; a DLM server runs its model itself")
        if self.base_url is None and self.api_key_env:
            raise ValueError("'api_key_env' needs 'base_url' (a local DLM takes no key)")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        if self.retries < 0:
            raise ValueError(f"retries must be at least 0, got {self.retries}")


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
    ``rules`` the cross-field rules the judge counts, the value guides respect and GX checks;
    ``agent_fallback`` what the loop does when the agent (or the critic) fails: ``"error"`` fails
    the round, ``"editor"`` goes on without it and says so; ``invalid_rows`` what loading does with
    reference or holdout rows that break the schema: ``"error"`` refuses the file, ``"skip"``
    leaves them out with a warning. A reference or holdout sample is a file or a ``SqlQuery``.
    """

    name: str
    schema_path: Location
    reference_path: Location | SqlQuery
    rows: int
    notes: str = ""
    sensitive: tuple[str, ...] = ()
    holdout_path: Location | SqlQuery | None = None
    dlm: DLMSetting = field(default_factory=DLMSetting)
    agent: AgentSetting = field(default_factory=AgentSetting)
    agent_fallback: AgentFallback = "error"
    critic: bool = False
    seed: int = 0
    loop: LoopSettings = field(default_factory=LoopSettings)
    decoding: DecodingSettings = field(default_factory=DecodingSettings)
    invalid_rows: InvalidRows = "error"
    thresholds: PrivacyThresholds = field(default_factory=PrivacyThresholds)
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class Spec:
    """A loaded partition spec: its file and its partitions, in file order."""

    path: Location
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
_SETTINGS = ("dlm", "agent", "agent_fallback", "critic", "seed", "loop", "decoding", "invalid_rows")
_PARTITION_FIELDS = (
    "name", "schema", "reference", "holdout", "rows", "notes", "sensitive", "max_field_overlap", "rules",
    *_SETTINGS,
)  # fmt: skip
_T = TypeVar("_T")


class _Where:
    """Where in the spec a value sits, so that an error names the file, the partition and the field."""

    def __init__(self, path: Location, section: str) -> None:
        self.path = path
        self.section = section

    def fail(self, field_name: str, problem: str) -> NoReturn:
        raise SpecError(f"{self.path}: {self.section}: field {field_name!r}: {problem}")


def _key(key: Any) -> str:
    """A mapping key as an error message names it, cut short."""
    text = str(key)
    return text if len(text) <= 60 else text[:57] + "..."


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
    where.fail(name, f"must be {wanted}, got {_short.repr(value)}")


def _merge(where: _Where, name: str, base: _T, raw: Any) -> _T:
    """``base`` (a settings dataclass) with the fields given in the mapping ``raw`` replaced."""
    if not isinstance(raw, dict):
        where.fail(name, f"must be a mapping, got {_short.repr(raw)}")
    hints = get_type_hints(type(base))
    known = [f.name for f in fields(base)]  # type: ignore[arg-type]
    values = {}
    for key, value in raw.items():
        if key not in known:
            where.fail(f"{name}.{_key(key)}", f"unknown field (expected one of: {', '.join(known)})")
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
            if isinstance(value, dict) and value.get("base_url") is not None and "model" not in value:
                where.fail(key, "a DLM server needs 'model' beside 'base_url' (the name it serves)")
            out[key] = _merge(where, key, DLMSetting(), {"model": value} if isinstance(value, str) else value)
        elif key == "agent":
            out[key] = AgentSetting() if value == "local" else _merge(where, key, AgentSetting(), value)
        elif key in ("critic", "seed"):
            out[key] = _check(where, key, value, bool if key == "critic" else int)
        elif key in ("agent_fallback", "invalid_rows"):
            out[key] = _check(where, key, value, AgentFallback if key == "agent_fallback" else InvalidRows)
        else:
            out[key] = _merge(where, key, base[key], value)
    try:
        check_decoding(out["decoding"])
    except ValueError as exc:
        where.fail("decoding", str(exc))
    return out


def _file(where: _Where, name: str, base: Location, value: Any, suffixes: tuple[str, ...] = ()) -> Location:
    """An existing file named by a URI or a path relative to the spec's folder."""
    if not isinstance(value, str) or not value:
        where.fail(name, f"must be a path, got {_short.repr(value)}")
    try:
        path = storage.locate(value, base)
        found = storage.is_file(path)
    except AodError as exc:  # an unknown scheme
        where.fail(name, str(exc))
    except OSError as exc:  # an object store out of reach, or refusing the credentials
        where.fail(name, f"cannot read {value}: {exc.strerror or exc}")
    if not found:
        where.fail(name, f"file not found: {path}")
    if suffixes and storage.suffix(path) not in suffixes:
        where.fail(name, f"{storage.name(path)}: unsupported format (use {', '.join(suffixes)})")
    return path


def _sample(where: _Where, name: str, base: Location, value: Any) -> Location | SqlQuery:
    """A reference or holdout sample: a file (see ``_file``) or ``{sql: ..., conn: ...}``."""
    if not isinstance(value, dict):
        return _file(where, name, base, value, REFERENCE_FORMATS)
    for key in value:
        if key not in ("sql", "conn"):
            where.fail(f"{name}.{_key(key)}", "unknown field (expected sql, conn)")
    for key in ("sql", "conn"):
        # The value is not shown: a conn may hold a password.
        if not isinstance(value.get(key), str) or not value[key].strip():
            where.fail(f"{name}.{key}", "must be a non-empty string" + ("" if key in value else " (missing)"))
    return SqlQuery(sql=value["sql"], conn=value["conn"].strip())


def _partition(where: _Where, raw: dict[str, Any], base: Location, settings: dict[str, Any]) -> Partition:
    for key in raw:
        if key not in _PARTITION_FIELDS:
            where.fail(_key(key), f"unknown field (expected one of: {', '.join(_PARTITION_FIELDS)})")
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
        where.fail("sensitive", f"must be a list of column names, got {_short.repr(sensitive)}")
    schema_path = _file(where, "schema", base, raw["schema"])
    try:
        loaded = load_schema(schema_path)
        output_schema(loaded)  # a property in the provenance columns' namespace: before any model loads
    except AodError as exc:
        where.fail("schema", str(exc))
    schema = loaded.contents
    columns = schema.get("properties", {}) if isinstance(schema, dict) else {}
    for column in sensitive:
        if column not in columns:
            where.fail("sensitive", f"{column!r} is not a top-level property of {storage.name(schema_path)}")
    max_overlap = raw.get("max_field_overlap", PrivacyThresholds.max_field_overlap)
    if isinstance(max_overlap, bool) or not isinstance(max_overlap, int | float) or not 0 <= max_overlap <= 1:
        where.fail("max_field_overlap", f"must be a number between 0 and 1, got {_short.repr(max_overlap)}")
    holdout = raw.get("holdout")
    texts = raw.get("rules", [])
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        where.fail(
            "rules", f"must be a list of comparisons such as 'temp_min <= temp_max', got {_short.repr(texts)}"
        )
    try:
        rules = parse_rules(texts)
        check_fields(rules, schema)
    except SpecError as exc:
        where.fail("rules", str(exc))
    partition = Partition(
        name=name,
        schema_path=schema_path,
        reference_path=_sample(where, "reference", base, raw["reference"]),
        holdout_path=None if holdout is None else _sample(where, "holdout", base, holdout),
        rows=rows,
        notes=_check(where, "notes", raw.get("notes", ""), str),
        sensitive=tuple(dict.fromkeys([*sensitive, *sensitive_columns(schema)])),
        thresholds=PrivacyThresholds(max_field_overlap=float(max_overlap)),
        rules=rules,
        **_settings(where, raw, settings),
    )
    dlm, mode = partition.dlm, partition.decoding.mode
    if dlm.base_url is not None and mode != "free":
        # A chat API returns text: it cannot give the scores a skeleton's slots are filled from.
        where.fail(
            "dlm",
            f"a DLM server ({dlm.base_url}) writes free mode only, and decoding.mode is {mode!r}: "
            "set decoding: {mode: free}",
        )
    for key, path in (("reference", partition.reference_path), ("holdout", partition.holdout_path)):
        if path is None:
            continue
        try:
            records, problems = check_rows(path, loaded)
        except DataError as exc:
            where.fail(key, str(exc))
        if problems and partition.invalid_rows == "error":
            where.fail(key, _refusal(path, problems, len(records)))
        if problems:
            _log.warning(_skip_warning(path, problems, len(records)))
        if not records:
            source = path.name if isinstance(path, SqlQuery) else storage.name(path)
            where.fail(key, f"{source} holds no records" + (" that fit the schema" if problems else ""))
    return partition


def load_spec(path: str | Path) -> Spec:
    """Read and check a partition spec: every field, schema and reference sample.

    :raises SpecError: naming the file, the partition and the field that is wrong.
    """
    path = storage.locate(path)
    top = _Where(path, "spec")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a mapping with 'defaults' and 'partitions'")
    for key in raw:
        if key not in ("defaults", "partitions"):
            top.fail(_key(key), "unknown field (expected defaults, partitions)")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        top.fail("defaults", f"must be a mapping, got {_short.repr(defaults)}")
    where = _Where(path, "defaults")
    for key in defaults:
        if key not in _SETTINGS:
            where.fail(_key(key), f"unknown field (expected one of: {', '.join(_SETTINGS)})")
    base_settings = {
        "dlm": DLMSetting(),
        "agent": AgentSetting(),
        "agent_fallback": "error",
        "critic": False,
        "seed": 0,
        "loop": LoopSettings(),
        "decoding": DecodingSettings(),
        "invalid_rows": "error",
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
            where.fail("partitions", f"each partition must be a mapping, got {_short.repr(item)}")
        partition = _partition(where, item, storage.parent(path), settings)
        if any(p.name == partition.name for p in partitions):
            where.fail("name", "duplicate partition name")
        partitions.append(partition)
    return Spec(path=path, partitions=tuple(partitions))


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a nesting limit: it composes nodes recursively, so a deeply
    nested document would otherwise end in a ``RecursionError``."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        """The next node, refused past ``MAX_SPEC_DEPTH`` levels."""
        self.depth += 1
        try:
            if self.depth > MAX_SPEC_DEPTH:
                raise yaml.MarkedYAMLError(
                    problem=f"nested deeper than {MAX_SPEC_DEPTH} levels, the limit for a spec",
                    problem_mark=self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def read_yaml(path: Location) -> Any:
    """A spec file's YAML document, within the size, depth and value-count limits.

    :raises SpecError: in one line, naming the file and what is wrong (the limit, where one is).
    """
    try:
        data = storage.read_bytes(path, MAX_SPEC_BYTES + 1)  # never more: the file may be endless
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec: {exc.strerror or exc}") from exc
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: larger than {MAX_SPEC_BYTES >> 20} MiB, the limit for a spec")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    try:
        raw = yaml.load(text, Loader=_SpecLoader)  # a SafeLoader: no Python objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise SpecError(f"{path}: not valid YAML: {at}{exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    except ValueError as exc:  # a number Python will not convert, such as an integer of 5000 digits
        reason = " ".join(str(exc).split(";")[0].split())[:200]  # without Python's advice to programmers
        raise SpecError(f"{path}: not valid YAML: {reason}") from exc
    _check_expansion(path, raw)
    return raw


def _check_expansion(path: Location, raw: Any) -> None:
    """Refuse a document whose aliases expand it past ``MAX_SPEC_VALUES`` values or
    ``MAX_SPEC_DEPTH`` levels (an alias may even point at its own ancestor): checking or printing
    such a spec would never end. The walk stops at the limit, so it is quick."""
    stack: list[tuple[Any, int]] = [(raw, 1)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_SPEC_VALUES:
            raise SpecError(
                f"{path}: more than {MAX_SPEC_VALUES} values (YAML aliases expanded), the limit for a spec"
            )
        if depth > MAX_SPEC_DEPTH:
            raise SpecError(
                f"{path}: nested deeper than {MAX_SPEC_DEPTH} levels (YAML aliases followed), "
                "the limit for a spec"
            )
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def _problem_rows(problems: list[RowProblem]) -> int:
    return len({p.location for p in problems})


def _refusal(path: Location | SqlQuery, problems: list[RowProblem], valid: int) -> str:
    """The one-line error for a file with rows that break the schema."""
    bad = _problem_rows(problems)
    return (
        f"{path}: {bad} of {bad + valid} rows break the schema "
        f"(fix them, or set invalid_rows: skip to leave them out): {_listed(problems)}"
    )


def _skip_warning(path: Location | SqlQuery, problems: list[RowProblem], valid: int) -> str:
    """The one-line warning for rows left out under ``invalid_rows: skip``."""
    bad = _problem_rows(problems)
    return (
        f"{path}: warning: left out {bad} of {bad + valid} rows that break the schema "
        f"(invalid_rows: skip): {_listed(problems)}"
    )


def _listed(problems: list[RowProblem]) -> str:
    """The first ``SHOWN_PROBLEMS`` problems and how many more there are, on one line."""
    more = len(problems) - SHOWN_PROBLEMS
    return "; ".join(str(problem) for problem in problems[:SHOWN_PROBLEMS]) + (
        f"; and {more} more problems" if more > 0 else ""
    )


def load_reference(partition: Partition, holdout: bool = False) -> list[dict[str, Any]]:
    """The partition's reference sample (or its held-out sample) as JSON-like records: the rows
    that fit its schema (``load_spec`` has refused the file, or warned of the others).

    :raises DataError: naming the partition and the field, when rows break the schema and the
        partition does not skip them (the file changed since the spec was loaded), or the file
        cannot be read or the query run. A query runs once per process (see ``aod_ops.sql``).
    """
    path = partition.holdout_path if holdout else partition.reference_path
    if path is None:
        raise SpecError(f"partition {partition.name!r} has no holdout sample")
    try:
        records, problems = check_rows(path, load_schema(partition.schema_path))
        if problems and partition.invalid_rows == "error":
            raise DataError(_refusal(path, problems, len(records)))
    except DataError as exc:  # named as load_spec names it: a query's message names only its connection
        raise DataError(
            f"partition {partition.name!r}: field {'holdout' if holdout else 'reference'!r}: {exc}"
        ) from exc
    return records
