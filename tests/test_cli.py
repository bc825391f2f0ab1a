"""The ``aod`` command: outputs, exit codes and one-line messages for user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aod_ops.cli import main

EXAMPLES = Path(__file__).parent.parent / "examples"
FIXTURES = Path(__file__).parent / "fixtures" / "schemas"


@pytest.mark.parametrize("cache", [[], ["--no-cache"]])
def test_generate_writes_json_lines_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cache: list[str]
) -> None:
    out = tmp_path / "cars.jsonl"
    args = ["generate", "--schema", str(EXAMPLES / "schemas" / "cars.json"), "-n", "3", "--out", str(out)]
    assert main([*args, "--model", "tiny-random", "--steps", "4", *cache]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and all(r["Cylinders"] in (3, 4, 5, 6, 8) for r in records)
    err = capsys.readouterr().err
    assert "validity 1.000" in err and "forward passes/record" in err and "records/s" in err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read schema"),
        ("{not json", "line 1"),
        ('{"properties": {"a": {"type": "strnig"}}}', "properties/a"),
    ],
)
def test_bad_schemas_exit_2_with_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, expected: str
) -> None:
    path = tmp_path / "person.json"
    if content is not None:
        path.write_text(content)
    assert main(["generate", "--schema", str(path), "--model", "tiny-random"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aod generate: error: ") and str(path) in err and expected in err
    assert "\n" not in err and "Traceback" not in err


def test_unknown_model_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--schema", str(EXAMPLES / "schemas" / "cars.json"), "--model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_coverage_reports_per_schema_results_and_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for path in sorted(FIXTURES.glob("github_trivial_*.json"))[:3]:
        (schemas / path.name).write_text(path.read_text())
    (schemas / "broken.json").write_text('{"type": "strnig"}')
    report = tmp_path / "coverage.json"
    assert main(["coverage", "--schemas", str(schemas), "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    by_file = {Path(r["file"]).name: r for r in result["schemas"]}
    assert len(by_file) == 4 and result["coverage"] == pytest.approx(0.75)
    assert not by_file["broken.json"]["ok"] and by_file["broken.json"]["reason"].startswith("schema:")
    assert all(r["seconds"] >= 0 for r in result["schemas"])
    assert "coverage 0.750 over 4 schemas" in capsys.readouterr().out


def test_coverage_of_an_empty_folder_is_a_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["coverage", "--schemas", str(tmp_path)]) == 2
    assert "no *.json schemas" in capsys.readouterr().err


def test_validate_names_a_missing_partition_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "validate",
            "--spec",
            str(EXAMPLES / "partitions.yaml"),
            "--data",
            str(tmp_path),
            "--partition",
            "cars",
        ]
    )
    assert code == 2
    assert f"{tmp_path / 'cars'}: no synthesized partition here" in capsys.readouterr().err


def test_adapt_dlm_writes_a_model_that_generate_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    city = {"type": "string", "maxLength": 12}
    schema = {"type": "object", "properties": {"city": city}, "required": ["city"]}
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = [{"instruction": "A city.", "record": {"city": c}, "schema": schema} for c in ("Oslo", "Lima")]
    (corpus / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    model = tmp_path / "my-dlm"
    assert main(["adapt-dlm", "--corpus", str(corpus), "--out", str(model), "--max-steps", "1"]) == 0
    assert "1 steps in" in capsys.readouterr().err
    assert {"adapter.safetensors", "adapter_config.json", "checkpoint.pt", "log.jsonl"} <= {
        p.name for p in model.iterdir()
    }
    (tmp_path / "city.json").write_text(json.dumps(schema))
    out = tmp_path / "cities.jsonl"
    args = ["generate", "--schema", str(tmp_path / "city.json"), "-n", "2", "--steps", "4", "--out", str(out)]
    assert main([*args, "--model", str(model)]) == 0
    assert [set(json.loads(line)) for line in out.read_text().splitlines()] == [{"city"}, {"city"}]
