"""Fuzz campaign: hostile schemas, specs, reference files and Parquet tables through ``aod``.

Each target draws inputs with hypothesis (records of the example schemas come from
hypothesis-jsonschema, then are broken), writes them where a user would, and runs what a user
would run, in this process, under a time limit:

- ``schema``: a drawn JSON Schema file (random keywords, ReDoS patterns, contradicting bounds,
  broken ``$ref``, nesting hundreds deep, text that is not JSON) through ``aod generate`` on the
  tiny random DLM;
- ``spec``: a drawn partition spec (the example spec with values replaced, removed or nested,
  YAML alias bombs, text that is not YAML) through loading it and its reference samples, the
  first thing every command does;
- ``reference``: a drawn reference file (JSONL, CSV or Parquet rows of the cars schema, broken:
  wrong types, missing fields, deep values, garbled lines) through loading it;
- ``validate``: a drawn synthesized partition (the output contract's Parquet with broken records,
  extra and missing columns, columns of the wrong type, ReDoS strings) through ``aod validate``.

An input passes when the command returns a result or fails with one error line (an ``AodError``);
a hang (past ``--limit`` seconds) or a traceback (any other exception) is a finding: hypothesis
shrinks it and the target stops with the smallest input that shows it.

    python bench/fuzz.py [--examples 2500 | --examples schema=4000,validate=1000]
        [--targets schema,spec,reference,validate]
        [--limit 20] [--seed 0] [--out bench/results/fuzz.json]

The counts are recorded in bench/RESULTS.md; tests/test_fuzz.py runs a short version of each.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from aod_ops import cli
from aod_ops.errors import AodError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CARS = json.loads((EXAMPLES / "schemas" / "cars.json").read_text())

EVIL_PATTERNS = ["^(a+)+$", "(a|aa)+$", "^(\\w+\\s?)*$", "(x+x+)+y", "^(([a-z])+.)+[A-Z]([a-z])+$"]
PATTERNS = [*EVIL_PATTERNS, "[", "(?<=a)b", "\\p{L}+", "^$", "a{2,1}", "(?P<n>a)(?P=n)", "^[A-Z]{3}$"]
FORMATS = ["date", "date-time", "time", "email", "uri", "uuid", "ipv4", "hostname", "regex", "no-such"]
TYPES = ["string", "integer", "number", "boolean", "null", "object", "array", "no-such"]
REFS = ["#", "#/definitions/d", "#/$defs/d", "#/nope", "other.json", "http://example.com/s.json"]
DRAFTS = [
    "https://json-schema.org/draft/2020-12/schema",
    "http://json-schema.org/draft-07/schema#",
    "http://json-schema.org/draft-04/schema#",
    "http://example.com/no-such-draft",
]
EVIL_TEXT = "a" * 41 + "!"


def json_values(max_leaves: int = 6) -> st.SearchStrategy[Any]:
    """Any JSON value, a few leaves deep."""
    leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    return st.recursive(
        leaf,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=max_leaves,
    )


def nested(depth: int, key: str, leaf: Any) -> Any:
    """``leaf`` wrapped ``depth`` times in ``{key: ...}`` (a list when ``key`` is empty)."""
    value = leaf
    for _ in range(depth):
        value = [value] if not key else {key: value}
    return value


class _Text(str):
    """JSON text already written (not a string value to quote)."""


def to_json(value: Any) -> str:
    """The JSON text of ``value`` at any depth (``json.dumps`` recurses once per level)."""
    parts: list[str] = []
    todo: list[Any] = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, _Text):
            parts.append(item)
            continue
        if isinstance(item, dict):
            pending: list[Any] = [_Text("{")]
            for i, (key, inner) in enumerate(item.items()):
                pending += [_Text(("," if i else "") + json.dumps(key) + ":"), inner]
        elif isinstance(item, list):
            pending = [_Text("[")]
            for i, inner in enumerate(item):
                pending += [_Text(","), inner] if i else [inner]
        else:
            parts.append(json.dumps(item))
            continue
        pending.append(_Text("}" if isinstance(item, dict) else "]"))
        todo.extend(reversed(pending))
    return "".join(parts)


def nesting(value: Any) -> int:
    """How many lists and objects deep ``value`` nests."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        item, level = todo.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict | list):
            todo.extend((inner, level + 1) for inner in (item.values() if isinstance(item, dict) else item))
    return deepest


def deep_schema(depth: int) -> dict[str, Any]:
    """An object schema whose one property is an object schema, ``depth`` levels down."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


NAMES = st.sampled_from(
    ["a", "b", "name", "x y", "", "$ref", "record_id", "model", "_aod_seed", "ü", "a/b~c"]
) | st.text(max_size=6)
NUMBERS = st.integers(-(10**20), 10**20) | st.floats(allow_nan=False) | st.sampled_from([0, 1, 5, -1, 1e308])
SIZES = st.integers(-2, 30) | st.just(10**9)


def keyword_schemas() -> st.SearchStrategy[Any]:
    """Schemas of random keywords with random and hostile values, nested a few levels."""
    leaf = st.booleans() | st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(TYPES) | st.lists(st.sampled_from(TYPES), max_size=3),
            "minimum": NUMBERS,
            "maximum": NUMBERS,
            "exclusiveMinimum": NUMBERS | st.booleans(),
            "multipleOf": NUMBERS,
            "minLength": SIZES,
            "maxLength": SIZES,
            "pattern": st.sampled_from(PATTERNS) | st.text(max_size=6),
            "format": st.sampled_from(FORMATS),
            "enum": st.lists(json_values(3), max_size=4),
            "const": json_values(3),
            "$ref": st.sampled_from(REFS),
        },
    )

    def branch(sub: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.fixed_dictionaries(
            {},
            optional={
                "type": st.sampled_from(["object", "array"]),
                "properties": st.dictionaries(NAMES, sub, max_size=4),
                "required": st.lists(NAMES, max_size=4),
                "additionalProperties": sub,
                "patternProperties": st.dictionaries(st.sampled_from(PATTERNS), sub, max_size=2),
                "minProperties": SIZES,
                "maxProperties": SIZES,
                "items": sub | st.lists(sub, max_size=3),
                "prefixItems": st.lists(sub, max_size=3),
                "minItems": SIZES,
                "maxItems": SIZES,
                "uniqueItems": st.booleans(),
                "anyOf": st.lists(sub, max_size=3),
                "oneOf": st.lists(sub, max_size=3),
                "allOf": st.lists(sub, max_size=3),
                "not": sub,
                "if": sub,
                "then": sub,
                "else": sub,
                "definitions": st.fixed_dictionaries({"d": sub}),
                "$defs": st.fixed_dictionaries({"d": sub}),
            },
        )

    return st.recursive(leaf, branch, max_leaves=10)


def schema_texts() -> st.SearchStrategy[str]:
    """The text of a schema file: random keywords under a draft, deep nesting, or not a schema."""
    drawn = st.tuples(keyword_schemas(), st.none() | st.sampled_from(DRAFTS)).map(
        lambda pair: {**pair[0], "$schema": pair[1]} if isinstance(pair[0], dict) and pair[1] else pair[0]
    )
    deep = st.integers(1, 400).map(deep_schema)
    deep_refs = st.integers(1, 300).map(
        lambda n: {"$ref": "#/$defs/d0", "$defs": {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(n)}}
    )
    return st.one_of(
        drawn.map(json.dumps),
        deep.map(json.dumps),
        deep_refs.map(json.dumps),
        json_values().map(json.dumps),
        st.text(max_size=40),
        st.sampled_from(['{"type": "object"', "[" * 5000, '{"a": ' * 3000]),
    )


def break_record(record: dict[str, Any], data: st.DataObject) -> Any:
    """``record`` with one thing wrong, or left as it is."""
    kind = data.draw(st.sampled_from(["keep", "replace", "drop", "add", "deep", "evil", "other"]))
    name = data.draw(st.sampled_from(sorted(record) or ["Name"]))
    if kind == "replace":
        return {**record, name: data.draw(json_values())}
    if kind == "drop":
        return {k: v for k, v in record.items() if k != name}
    if kind == "add":
        return {**record, data.draw(NAMES): data.draw(json_values())}
    if kind == "deep":
        return {
            **record,
            name: nested(data.draw(st.integers(1, 3000)), data.draw(st.sampled_from(["", "a"])), 1),
        }
    if kind == "evil":
        return {**record, name: EVIL_TEXT}
    if kind == "other":
        return data.draw(json_values())
    return record


def records_of(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Valid records of a flat object schema: each property's values from hypothesis-jsonschema.

    (Property by property: hypothesis-jsonschema 0.23's object strategy predates the current
    hypothesis internals.)
    """
    required = set(schema.get("required", []))
    values = {name: from_schema(sub) for name, sub in schema["properties"].items()}
    return st.fixed_dictionaries(
        {n: s for n, s in values.items() if n in required},
        optional={n: s for n, s in values.items() if n not in required},
    )


CAR_RECORDS = records_of(CARS)


def reference_rows(data: st.DataObject, max_rows: int = 6) -> list[Any]:
    """Rows of the cars schema from hypothesis-jsonschema, some of them broken."""
    rows = data.draw(st.lists(CAR_RECORDS, min_size=0, max_size=max_rows))
    return [break_record(row, data) for row in rows]


class Hang(BaseException):
    """An input ran past the time limit (a BaseException: no ``except Exception`` swallows it)."""


@dataclass
class Tally:
    """What a target's inputs came to: ``outcomes`` counts results and clean errors by kind."""

    target: str
    inputs: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    finding: str | None = None


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``aod ARGV`` in this process: its exit code and what it printed on stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    return code, err.getvalue()


def expect_clean(code: int, stderr: str, command: str) -> str:
    """The outcome of one ``aod`` run; an assertion error when it printed a traceback or no reason."""
    assert "Traceback" not in stderr, stderr[-3000:]
    if code == 2:
        errors = [line for line in stderr.splitlines() if line.startswith(f"aod {command}: error: ")]
        assert len(errors) == 1, f"exit 2 without one error line:\n{stderr[-3000:]}"
        return "error"
    assert code in (0, 1), f"exit {code}:\n{stderr[-3000:]}"
    return "result" if code == 0 else "failed checks"


def load_cleanly(load: Callable[[], Any]) -> str:
    """The outcome of a loader: a result, or an ``AodError`` with a one-line message."""
    try:
        load()
    except AodError as exc:
        message = str(exc)
        assert message and "\n" not in message, f"not one line: {message[:3000]}"
        return f"error: {type(exc).__name__}"
    return "result"


def target_schema(data: st.DataObject, work: Path) -> str:
    """A drawn schema file through ``aod generate`` (2 records, the tiny random DLM, either mode)."""
    schema = work / "schema.json"
    schema.write_text(data.draw(schema_texts()))
    mode = data.draw(st.sampled_from(["skeleton", "free"]))
    argv = [
        "generate",
        "--schema",
        str(schema),
        "-n",
        "2",
        "--model",
        "tiny-random",
        "--steps",
        "2",
        "--mode",
        mode,
    ]
    code, stderr = run_cli([*argv, "--out", str(work / "records.jsonl")])
    return expect_clean(code, stderr, "generate")


def _spec_values(data: st.DataObject, spec: Any, depth: int = 0) -> Any:
    """The example spec with drawn values replaced, removed, nested or added."""
    if isinstance(spec, dict):
        out = {}
        for key, value in spec.items():
            change = data.draw(st.sampled_from(["keep"] * 40 + ["replace", "drop", "nest"]))
            if change == "replace":
                out[key] = data.draw(json_values())
            elif change == "nest":
                # JSON is YAML: deep values are written as JSON (PyYAML's dumper recurses per level)
                out[key] = nested(
                    data.draw(st.integers(1, 600)), data.draw(st.sampled_from(["", "a"])), value
                )
            elif change == "keep":
                out[key] = _spec_values(data, value, depth + 1)
        if data.draw(st.integers(0, 9)) == 0:
            out[data.draw(NAMES)] = data.draw(json_values())
        return out
    if isinstance(spec, list):
        return [_spec_values(data, item, depth + 1) for item in spec]
    return spec


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9)
)


def target_spec(data: st.DataObject, work: Path) -> str:
    """A drawn spec (beside the example schemas and data) through loading it and its samples."""
    from aod_ops.spec import load_reference, load_spec

    example = yaml.safe_load((EXAMPLES / "partitions.yaml").read_text())
    kind = data.draw(st.sampled_from(["mutated"] * 6 + ["alias bomb", "text", "deep"]))
    if kind == "mutated":
        text = json.dumps(_spec_values(data, example))
    elif kind == "alias bomb":
        text = ALIAS_BOMB
    elif kind == "deep":
        text = "partitions: " + "[" * data.draw(st.integers(1, 5000))
    else:
        text = data.draw(st.text(max_size=60))
    path = work / "partitions.yaml"
    path.write_text(text)
    for folder in ("schemas", "data"):
        (work / folder).symlink_to(EXAMPLES / folder)

    def load() -> None:
        for partition in load_spec(path).partitions:
            load_reference(partition)
            if partition.holdout_path is not None:
                load_reference(partition, holdout=True)

    return load_cleanly(load)


def _write_rows(rows: list[Any], path: Path, data: st.DataObject) -> None:
    """``rows`` as JSONL (some lines garbled), CSV (cells as text) or Parquet (where Arrow can)."""
    if path.suffix == ".jsonl":
        lines = [to_json(row) for row in rows]
        if lines and data.draw(st.booleans()):
            at = data.draw(st.integers(0, len(lines) - 1))
            lines[at] = data.draw(st.sampled_from([lines[at][: len(lines[at]) // 2], "", "\x00\xff", "[]"]))
        path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
    elif path.suffix == ".csv":
        import csv

        names = sorted({k for row in rows if isinstance(row, dict) for k in row})
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(names)
            for row in rows:
                cells = row if isinstance(row, dict) else {}
                writer.writerow(
                    [
                        to_json(cells[n]) if isinstance(cells.get(n), dict | list) else cells.get(n, "")
                        for n in names
                    ]
                )
    else:
        # Arrow takes minutes to type a value nested a thousand deep: deep values go in as JSON text.
        rows = [
            {k: to_json(v) if nesting(v) > 50 else v for k, v in r.items()} if isinstance(r, dict) else r
            for r in rows
        ]
        try:
            pq.write_table(
                pa.Table.from_pylist([r if isinstance(r, dict) else {"value": r} for r in rows]), path
            )
        except (pa.ArrowException, OverflowError, RecursionError):
            path.write_bytes(b"PAR1 not Parquet")


def target_reference(data: st.DataObject, work: Path) -> str:
    """A drawn reference file for the cars schema through loading it with its spec."""
    from aod_ops.spec import load_reference, load_spec

    suffix = data.draw(st.sampled_from([".jsonl", ".csv", ".parquet"]))
    reference = work / f"reference{suffix}"
    _write_rows(reference_rows(data), reference, data)
    shutil.copy(EXAMPLES / "schemas" / "cars.json", work / "cars.json")
    spec = {"partitions": [{"name": "cars", "schema": "cars.json", "reference": reference.name, "rows": 10}]}
    (work / "spec.yaml").write_text(yaml.safe_dump(spec))
    return load_cleanly(lambda: load_reference(load_spec(work / "spec.yaml").partitions[0]))


def target_validate(data: st.DataObject, work: Path) -> str:
    """A drawn synthesized cars partition through ``aod validate`` against the example spec."""
    from aod_ops.output import PREFIX, RECORD, RECORD_ID, output_schema, record_id
    from aod_ops.schema import load_schema
    from aod_ops.schema.arrow import to_arrow_row

    columns = output_schema(load_schema(EXAMPLES / "schemas" / "cars.json"))
    rows = []
    for record in reference_rows(data, max_rows=8):
        try:
            typed = to_arrow_row(columns, record)
        except (AodError, TypeError, ValueError, OverflowError, RecursionError, AttributeError):
            typed = {}  # a value that fits no typed column is null there, as the writer leaves it
        text = to_json(record) if data.draw(st.integers(0, 5)) else data.draw(st.text(max_size=20))
        rows.append({**typed, RECORD_ID: record_id("cars", text), PREFIX + "partition": "cars", RECORD: text})
    table = pa.Table.from_pylist(rows, schema=pa.schema([f.with_nullable(True) for f in columns]))
    change = data.draw(st.sampled_from(["keep"] * 4 + ["extra", "drop", "retype", "empty"]))
    name = data.draw(st.sampled_from(table.column_names))
    if change == "extra":
        table = table.append_column(data.draw(NAMES) or "extra", pa.array([EVIL_TEXT] * table.num_rows))
    elif change == "drop":
        table = table.drop_columns([name])
    elif change == "retype":
        table = table.set_column(table.column_names.index(name), name, pa.array([EVIL_TEXT] * table.num_rows))
    elif change == "empty":
        table = table.slice(0, 0)
    folder = work / "tables" / "cars" / "data"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-0.parquet")
    spec = ["--spec", str(EXAMPLES / "partitions.yaml"), "--partition", "cars"]
    code, stderr = run_cli(["validate", *spec, "--data", str(work / "tables"), "--rows", "5"])
    return expect_clean(code, stderr, "validate")


TARGETS: dict[str, Callable[[st.DataObject, Path], str]] = {
    "schema": target_schema,
    "spec": target_spec,
    "reference": target_reference,
    "validate": target_validate,
}


def run_target(name: str, examples: int, limit: float, rng_seed: int = 0) -> Tally:
    """Run target ``name`` on ``examples`` drawn inputs; ``Tally.finding`` is the first failure."""
    tally = Tally(name)
    target = TARGETS[name]

    @seed(rng_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
        report_multiple_bugs=False,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: minutes on a deep input
    )
    @given(st.data())
    def one(data: st.DataObject) -> None:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                with cli.time_limit(limit, Hang):
                    outcome = target(data, Path(tmp))
            except Hang as exc:
                raise AssertionError(f"hang: {exc}") from None
        tally.inputs += 1
        tally.seconds += time.perf_counter() - started
        tally.outcomes[outcome] += 1

    try:
        one()
    except Exception as exc:  # hypothesis re-raises the failure: the finding, with where and what
        frames = traceback.format_list(traceback.extract_tb(exc.__traceback__)[-12:])
        drawn = "\n".join(getattr(exc, "__notes__", []))
        tally.finding = f"{type(exc).__name__}: {str(exc)[:1500]}\n{''.join(frames)}{drawn[:2000]}"
    return tally


def main(argv: list[str] | None = None) -> int:
    """Run the campaign; print and write the tallies; exit 1 when any target found something."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--examples",
        default="2500",
        help="inputs per target: one count for all, or per target (schema=4000,validate=1000)",
    )
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--limit", type=float, default=20.0, help="seconds an input may take")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "fuzz.json"))
    args = parser.parse_args(argv)
    tallies = []
    counts = dict(item.split("=") for item in args.examples.split(",")) if "=" in args.examples else {}
    for name in args.targets.split(","):
        tally = run_target(name, int(counts.get(name, args.examples)), args.limit, args.seed)
        tallies.append(tally)
        status = f"FINDING\n{tally.finding}" if tally.finding else "no hang, no traceback"
        print(f"{name}: {tally.inputs} inputs in {tally.seconds:.0f} s: {status}", flush=True)
        print("  " + ", ".join(f"{k} {v}" for k, v in tally.outcomes.most_common()), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "command": "python bench/fuzz.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "inputs": sum(t.inputs for t in tallies),
        "findings": sum(t.finding is not None for t in tallies),
        "targets": [{**asdict(t), "outcomes": dict(t.outcomes.most_common())} for t in tallies],
    }
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{summary['inputs']} inputs, {summary['findings']} findings -> {out}")
    return 1 if summary["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
