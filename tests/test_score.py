"""``aod score`` and the fidelity report: real held-out rows beat random values, the JSON carries
every figure of both sides, each table format is read, bad input exits 2 naming the file, and the
report's image and page are written."""

from __future__ import annotations

import json
import random
import struct
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aod_ops.cli import main
from aod_ops.errors import DataError
from aod_ops.fidelity_report import FIGURES, write_fidelity_report
from aod_ops.schema import load_schema
from aod_ops.score import TableScore, read_table, score_table
from aod_ops.spec import load_spec

EXAMPLES = Path(__file__).parent.parent / "examples"
SPEC = EXAMPLES / "partitions.yaml"
HOLDOUT = EXAMPLES / "data" / "cars_holdout.jsonl"
CARS = load_schema(EXAMPLES / "schemas" / "cars.json")


def random_cars(path: Path, rows: int = 100) -> Path:
    """Records of uniform random values, each within its column's schema (valid but unrealistic)."""
    rng = random.Random(7)
    properties = CARS.contents["properties"]
    lines = []
    for _ in range(rows):
        record: dict[str, Any] = {}
        for name, schema in properties.items():
            if "enum" in schema:
                record[name] = rng.choice(schema["enum"])
            elif schema["type"] == "integer":
                record[name] = rng.randint(schema["minimum"], schema["maximum"])
            elif schema["type"] == "number":
                record[name] = round(rng.uniform(schema["minimum"], schema["maximum"]), 1)
            else:
                record[name] = "".join(
                    rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(rng.randint(1, 30))
                )
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return path


def score(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["score", "--spec", str(SPEC), "--partition", "cars", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The held-out file and a table of random values, each scored once through ``aod score``."""
    folder = tmp_path_factory.mktemp("score")
    garbage = random_cars(folder / "random.jsonl")
    results: dict[str, Any] = {"folder": folder}
    for name, data in (("holdout", HOLDOUT), ("random", garbage)):
        out = folder / f"{name}.json"
        argv = ["score", "--spec", str(SPEC), "--partition", "cars", "--data", str(data), "--json", str(out)]
        if name == "random":
            argv += ["--report", str(folder / "report")]
        assert main(argv) == 0
        results[name] = json.loads(out.read_text())
    return results


def test_held_out_rows_have_a_higher_reward_than_random_values(scored: dict[str, Any]) -> None:
    real, noise = scored["holdout"], scored["random"]
    assert real["table"]["reward"] > noise["table"]["reward"]
    # Random values within the schema are valid: fidelity, not validity, tells them apart.
    assert noise["table"]["validity"] == 1.0
    assert noise["table"]["detection_auc"] > 0.8 > real["table"]["detection_auc"]
    assert noise["table"]["column_shapes"] < real["table"]["column_shapes"]
    # The held-out figure does not depend on the table scored.
    assert real["holdout"] == noise["holdout"]


def test_the_json_has_every_figure_of_both_sides_and_the_yardstick(scored: dict[str, Any]) -> None:
    result = scored["random"]
    assert result["yardstick"] == "holdout" and result["partition"] == "cars"
    for side in ("table", "holdout"):
        assert {figure.name for figure in FIGURES} | {"reward", "columns"} <= set(result[side])
    assert result["table"]["rows"] == 100 and result["table"]["repair_rate"] is None
    assert {column["pointer"] for column in result["table"]["columns"]} == {
        "/" + name for name in CARS.contents["properties"]
    }


def test_the_printout_lists_figures_beside_the_held_out_rows_and_the_worst_columns(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    garbage = random_cars(tmp_path / "random.jsonl", rows=40)
    code, out, err = score(["--data", str(garbage)], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith(f"cars: {garbage} (40 rows) against 50 held-out rows")
    header = next(line for line in lines if line.startswith("figure"))
    assert header.split() == ["figure", "table", "held-out", "aim"]
    assert any(line.startswith("reward") for line in lines)
    for figure in FIGURES:
        assert any(line.startswith(figure.label + " ") for line in lines), figure.label
    assert "where the table differs most:" in out
    assert any(line.startswith("  - ") for line in lines)


def test_the_fidelity_report_has_a_panel_per_column_a_pair_heatmap_and_privacy(
    scored: dict[str, Any],
) -> None:
    folder = scored["folder"] / "report"
    png, page = folder / "fidelity.png", folder / "fidelity.html"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 1000 and height > 800
    text = page.read_text()
    assert '<img src="fidelity.png"' in text
    assert "detection AUC" in text and "field overlap" in text
    # Ten example rows of each side.
    assert text.count('<table class="examples">') == 2
    assert text.count("<tr><td>") == 20


def test_the_report_function_returns_its_panels_and_is_fast(tmp_path: Path) -> None:
    (partition,) = load_spec(SPEC).select("la-riots")  # 11 columns: text, numbers, dates, categories
    result: TableScore = score_table(partition, partition.reference_path)
    started = time.perf_counter()
    report = write_fidelity_report(
        result.card, result.baseline, result.valid_records, result.yardstick_rows, tmp_path, "la-riots"
    )
    assert time.perf_counter() - started < 5
    assert report.panels == len(result.card.columns) + 2 == 13
    assert report.png.is_file() and report.html.is_file()
    # The reference copied verbatim: the privacy figures say so.
    assert result.card.exact_match_rate == 1.0 and result.reward == 0.0


def test_parquet_is_read_from_its_record_column_or_else_its_schema_columns(tmp_path: Path) -> None:
    records = [json.loads(line) for line in HOLDOUT.read_text().splitlines()[:4]]
    ours = tmp_path / "ours"
    ours.mkdir()
    texts = [json.dumps(r) for r in records[:3]] + ['{"Name": "cut off']
    pq.write_table(
        pa.table({"_aod_record_id": list("abcd"), "_aod_record": texts}), ours / "part-00000.parquet"
    )
    read = read_table(ours, CARS)
    assert read[:3] == records[:3] and read[3] is None  # a row that is not JSON: an invalid record

    other = tmp_path / "other.parquet"
    columns = {name: [r.get(name) for r in records] for name in records[0]}
    pq.write_table(pa.table({**columns, "index": [0, 1, 2, 3]}), other)
    assert read_table(other, CARS) == records  # the column the schema does not have is left out

    csv = tmp_path / "cars.csv"
    rows = [{"index": i, **r} for i, r in enumerate(records)]
    csv.write_text(
        "\n".join(",".join(map(str, row)) for row in [rows[0].keys(), *(r.values() for r in rows)])
    )
    read = read_table(csv, CARS)
    assert [set(r) for r in read] == [set(records[0])] * 4  # the column the schema does not have is left out
    assert [r["Displacement"] for r in read] == [r["Displacement"] for r in records]


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (None, "no such file or folder"),
        (lambda p: p.write_text('{"speed": 3}\n{"speed": 4}\n'), "none of the schema's columns"),
        (lambda p: p.write_text('{"Name": "ford"\n'), "line 1: not valid JSON"),
        (lambda p: p.write_text(""), "the table holds no rows"),
    ],
)
def test_bad_tables_exit_2_with_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], write: Any, expected: str
) -> None:
    path = tmp_path / "table.jsonl"
    if write is not None:
        write(path)
    code, out, err = score(["--data", str(path)], capsys)
    assert code == 2 and out == ""
    line = err.strip()
    assert line.startswith("aod score: error: ") and str(path) in line and expected in line
    assert "\n" not in line and "Traceback" not in line


def test_an_unreadable_parquet_and_an_unknown_partition_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "table.parquet"
    broken.write_bytes(b"PAR1 not really")
    code, _, err = score(["--data", str(broken)], capsys)
    assert code == 2 and f"{broken}: not a readable Parquet file" in err
    code = main(["score", "--spec", str(SPEC), "--partition", "boats", "--data", str(HOLDOUT)])
    err = capsys.readouterr().err
    assert code == 2 and "no partition named 'boats'" in err and str(SPEC.resolve()) in err


def test_read_table_names_the_columns_it_expected(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("speed,colour\n3,red\n")
    with pytest.raises(DataError, match=r"none of the schema's columns \(Name, .*its columns: colour, speed"):
        read_table(path, CARS)
