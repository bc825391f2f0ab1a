"""The ``aod`` command: outputs, exit codes and one-line messages for user errors."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest
import torch
import yaml

from aod_ops import cli, pipeline, report
from aod_ops.cli import build_parser, main
from aod_ops.ray import adapter
from aod_ops.report import Report
from aod_ops.spec import Partition

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


def test_the_decoding_options_reach_the_sampler_settings_and_coverage_uses_llada_order() -> None:
    from aod_ops.cli import build_parser
    from aod_ops.cli.args import decoding_settings

    parser = build_parser()
    generate = decoding_settings(
        parser.parse_args(["generate", "--schema", "s.json", "--order", "confidence"])
    )
    assert generate.order == "confidence" and generate.steps == 16
    assert decoding_settings(parser.parse_args(["generate", "--schema", "s.json"])).order == "left_to_right"
    coverage = decoding_settings(parser.parse_args(["coverage", "--schemas", "d"]))
    assert (coverage.order, coverage.steps, coverage.temperature) == ("confidence", 4, 1.0)


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


SERVER_KEY = ["--dlm-api-key-env", "AOD_TEST_UNSET"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--dlm-api-key-env", "KEY"], "--dlm-api-key-env is the DLM server's key, and no --dlm-base-url"),
        (["--mode", "free", "--dlm-base-url", "http://127.0.0.1:9"], "--dlm-base-url needs --model"),
        (
            ["--mode", "free", "--dlm-base-url", "http://127.0.0.1:9", "--model", "m", "--trust-remote-code"],
            "'trust_remote_code' is for a local model",
        ),
        (
            ["--mode", "free", "--dlm-base-url", "http://127.0.0.1:9", "--model", "m", *SERVER_KEY],
            "DLM server http://127.0.0.1:9/v1/chat/completions: environment variable AOD_TEST_UNSET is not",
        ),
    ],
)
def test_dlm_server_options_that_do_not_fit_exit_2_before_any_request(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, options: list[str], expected: str
) -> None:
    monkeypatch.delenv("AOD_TEST_UNSET", raising=False)
    assert main(["generate", "--schema", str(EXAMPLES / "schemas" / "cars.json"), *options]) == 2
    assert expected in capsys.readouterr().err


def test_unknown_model_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--schema", str(EXAMPLES / "schemas" / "cars.json"), "--model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("missing", ["torch", "great_expectations", "sklearn"])
def test_a_command_without_the_engine_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], missing: str
) -> None:
    def without_engine(args: argparse.Namespace) -> int:
        raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)

    monkeypatch.setattr(cli, "cmd_generate", without_engine)
    assert main(["generate", "--schema", str(EXAMPLES / "schemas" / "cars.json")]) == 2
    assert capsys.readouterr().err == (
        f"aod generate: error: this command needs the engine: pip install 'aod-ops[engine]' "
        f"(no module named {missing})\n"
    )


def test_another_missing_module_is_a_bug_and_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise ModuleNotFoundError("No module named 'aod_ops.gone'", name="aod_ops.gone")

    monkeypatch.setattr(cli, "cmd_generate", broken)
    with pytest.raises(ModuleNotFoundError, match=r"aod_ops\.gone"):
        main(["generate", "--schema", str(EXAMPLES / "schemas" / "cars.json")])


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
    # Each compiled schema costs forward passes; the broken one costs none.
    assert by_file["broken.json"]["forward_passes"] == 0
    assert all(r["forward_passes"] > 0 for r in result["schemas"] if r["ok"])
    passes = sorted(r["forward_passes"] for r in result["schemas"])
    assert result["summary"]["forward_passes_median"] == passes[1]
    assert result["summary"]["forward_passes_p95"] == passes[3]
    out = capsys.readouterr().out
    assert "coverage 0.750 over 4 schemas" in out and "forward passes" in out


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


@pytest.mark.parametrize(
    ("argv", "flag", "value"),
    [
        (["generate", "--schema", "s.json"], "-n", "0"),
        (["generate", "--schema", "s.json"], "-n", "-1"),
        (["generate", "--schema", "s.json"], "--batch-size", "0"),
        (["generate", "--schema", "s.json"], "--steps", "0"),
        (["coverage", "--schemas", "d"], "--attempts", "0"),
        (["synthesize", "--spec", "s.yaml", "--out", "o"], "--rows", "0"),
        (["synthesize", "--spec", "s.yaml", "--out", "o"], "--actors", "-1"),
        (["synthesize", "--spec", "s.yaml", "--out", "o"], "--batch-size", "0"),
        (["synthesize", "--spec", "s.yaml", "--out", "o"], "--threads-per-actor", "0"),
        (["synthesize", "--spec", "s.yaml", "--out", "o"], "--max-candidates", "0"),
        (["optimize", "--spec", "s.yaml", "--out", "o"], "--rounds", "0"),
        (["optimize", "--spec", "s.yaml", "--out", "o"], "--candidates", "0"),
        (["optimize", "--spec", "s.yaml", "--out", "o"], "--proposals", "-2"),
        (["run", "--spec", "s.yaml", "--out", "o"], "--rows", "0"),
        (["run", "--spec", "s.yaml", "--out", "o"], "--rounds", "0"),
        (["run", "--spec", "s.yaml", "--out", "o"], "--candidates", "0"),
        (["validate", "--spec", "s.yaml", "--data", "d"], "--rows", "0"),
        (["adapt-dlm", "--corpus", "c", "--out", "o"], "--max-steps", "0"),
    ],
)
def test_counts_below_one_are_refused_by_the_parser(
    capsys: pytest.CaptureFixture[str], argv: list[str], flag: str, value: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        main([*argv, flag, value])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert (
        err.strip().splitlines()[-1]
        == f"aod {argv[0]}: error: argument {flag}: must be at least 1, got {value}"
    )
    assert "Traceback" not in err


def test_counts_that_are_not_whole_numbers_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["generate", "--schema", "s.json", "-n", "2.5"])
    assert capsys.readouterr().err.strip().endswith("argument -n: must be a whole number, got '2.5'")


def test_no_agent_calls_is_a_count_but_fewer_is_not(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        build_parser().parse_args(["optimize", "--spec", "s", "--out", "o", "--agent-calls", "0"]).agent_calls
        == 0
    )
    with pytest.raises(SystemExit):
        main(["optimize", "--spec", "s", "--out", "o", "--agent-calls", "-1"])
    assert "argument --agent-calls: must be at least 0, got -1" in capsys.readouterr().err


def _two_partitions(folder: Path) -> Path:
    """``flags`` cannot reach its rows (its only record is the reference's); ``shirts`` can."""
    shirts = {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "blue"]}, "size": {"type": "integer"}},
        "required": ["color", "size"],
        "additionalProperties": False,
    }
    flags = {"type": "object", "properties": {"ok": {"const": True}}, "required": ["ok"]}
    (folder / "shirts.json").write_text(json.dumps(shirts))
    (folder / "shirts.jsonl").write_text('{"color": "red", "size": 1}\n{"color": "blue", "size": 2}\n')
    (folder / "flags.json").write_text(json.dumps(flags))
    (folder / "flags.jsonl").write_text('{"ok": true}\n')
    doc = {
        "defaults": {"dlm": "tiny-random", "decoding": {"steps": 2}},
        "partitions": [
            {"name": "flags", "schema": "flags.json", "reference": "flags.jsonl", "rows": 2},
            {"name": "shirts", "schema": "shirts.json", "reference": "shirts.jsonl", "rows": 2},
        ],
    }
    (folder / "spec.yaml").write_text(yaml.safe_dump(doc))
    return folder / "spec.yaml"


@pytest.fixture
def ray_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's part played in this process: each block goes through the stages in turn."""

    @contextmanager
    def session(address: str | None = None) -> Iterator[adapter.Cluster]:
        yield adapter.Cluster(cpus=2, gpus=0)

    def stream(
        items: Sequence[dict[str, Any]], block_rows: int, stages: Sequence[adapter.Stage]
    ) -> Iterator[pa.Table]:
        fns = [stage.fn(**stage.kwargs) for stage in stages]
        for start in range(0, len(items), block_rows):
            batch = pa.Table.from_pylist(list(items[start : start + block_rows]))
            for fn in fns:
                batch = fn(batch)
            yield batch

    monkeypatch.setattr(adapter, "session", session)
    monkeypatch.setattr(adapter, "stream", stream)
    monkeypatch.setattr(adapter, "put", lambda value: value)
    monkeypatch.setattr(adapter, "get", lambda value: value)
    monkeypatch.setattr(torch, "set_num_threads", lambda threads: None)  # the actors' setting


SYNTHESIS = ["--batch-size", "4", "--max-candidates", "8"]


def test_synthesize_tries_every_partition_writes_the_good_ones_and_lists_each_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ray_in_this_process: None
) -> None:
    out = tmp_path / "out"
    assert main(["synthesize", "--spec", str(_two_partitions(tmp_path)), "--out", str(out), *SYNTHESIS]) == 1
    assert (out / "shirts" / "report.json").is_file() and not (out / "flags").exists()
    captured = capsys.readouterr()
    assert "flags: failed: partition 'flags': 0 of 2 rows after 8 candidates (the budget)" in captured.err
    assert "exact_copy 8" in captured.err and "Traceback" not in captured.err
    table = captured.out
    assert "shirts" in table and "complete" in table and "flags" in table and "FAILED" in table


def test_run_validates_the_partitions_that_were_synthesized(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    ray_in_this_process: None,
) -> None:
    validated: list[str] = []

    def validate_table(partition: Partition, tables: Path, **options: Any) -> SimpleNamespace:
        validated.append(partition.name)
        return SimpleNamespace(partition=partition.name, success=True)

    monkeypatch.setattr(pipeline, "optimize_prompt", lambda partition, prompts, loop, **kwargs: None)
    monkeypatch.setattr(
        report, "write_report", lambda folder: Report(folder / "r.png", folder / "r.html", ())
    )
    monkeypatch.setattr(pipeline, "validate_table", validate_table)
    out = tmp_path / "run"
    assert main(["run", "--spec", str(_two_partitions(tmp_path)), "--out", str(out), "--rows", "2"]) == 1
    assert validated == ["shirts"]
    err = capsys.readouterr().err
    assert "flags: failed: partition 'flags'" in err and "not synthesized: flags" in err
    headings = [line.strip("─ ") for line in err.splitlines() if line.startswith("─")]
    assert headings == ["aod optimize", "aod report", "aod synthesize", "aod validate"]


def test_every_command_and_option_says_what_it_does() -> None:
    parser = build_parser()
    assert "``" not in parser.description and "aod init --from TABLE" in parser.epilog
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in commands._choices_actions}
    silent = [
        f"aod {name} {action.option_strings[0] if action.option_strings else action.dest}"
        for name, command in commands.choices.items()
        for action in command._actions
        if not action.help
    ]
    assert silent == [] and all(helps[name] for name in commands.choices)
