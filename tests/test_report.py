"""``aod optimize`` and ``aod report``: a real loop run through the command (tiny random DLM), its
per-round lines, and the PNG and HTML written from it; errors."""

from __future__ import annotations

import importlib
import io
import json
import re
from pathlib import Path

import matplotlib
import pytest
import yaml
from rich.console import Console

from aod_ops.cli import main, observer
from aod_ops.errors import DataError
from aod_ops.loop import LoopResult, optimize_partition
from aod_ops.report import write_report
from aod_ops.spec import load_spec

matplotlib.use("Agg")

SCHEMA = {
    "type": "object",
    "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 12}, "color": {"enum": ["red", "blue"]}},
    "required": ["x", "color"],
}


@pytest.fixture(scope="module")
def optimized(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoopResult, str]:
    """A two-round ``aod optimize`` run with the tiny random DLM, and what it printed."""
    folder = tmp_path_factory.mktemp("report")
    (folder / "dots.json").write_text(json.dumps(SCHEMA))
    (folder / "dots.jsonl").write_text("".join(json.dumps({"x": x, "color": "red"}) + "\n" for x in range(8)))
    spec = {
        "defaults": {
            "dlm": "tiny-random",
            "loop": {"rounds": 2, "candidates": 3, "proposals": 2, "target_reward": 1.0},
            "decoding": {"steps": 2, "block_length": 8},
        },
        "partitions": [{"name": "dots", "schema": "dots.json", "reference": "dots.jsonl", "rows": 10}],
    }
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        printer = Console(file=printed, width=200)
        patch.setattr(observer, "console", printer)  # the command's own lines
        # Its progress bar's, where each round is told (the package re-exports the object, not the module).
        patch.setattr(importlib.import_module("aod_ops.cli.console"), "console", printer)
        assert main(["optimize", "--spec", str(folder / "spec.yaml"), "--out", str(folder / "out")]) == 0
    # The run is finished: asking again reads it back without sampling.
    result = optimize_partition(load_spec(folder / "spec.yaml").select("dots")[0], folder / "out")
    assert result.resumed == len(result.rounds)
    return result, printed.getvalue()


@pytest.fixture(scope="module")
def run(optimized: tuple[LoopResult, str]) -> LoopResult:
    return optimized[0]


def test_optimize_command_prints_a_line_per_round(optimized: tuple[LoopResult, str]) -> None:
    result, printed = optimized
    lines = re.findall(
        r"^dots round (\d): reward ([\d.]+)  quality [\d.]+ \(real [\d.]+\)  "
        r"detection AUC [\d.]+ \(real [\d.]+\)  validity [\d.]+  TSR [\d.]+  "
        r"field overlap [\d.]+ \(real [\d.]+\)  (accepted v\d+ \(editor\)|kept v\d+)  [\d.]+ s$",
        printed,
        re.MULTILINE,
    )
    assert [(n, float(r)) for n, r, _ in lines] == [
        (str(r.number), round(r.best.reward, 3)) for r in result.rounds
    ]
    assert (
        f"dots: best reward {result.best_reward:.3f} (prompt v{result.best_prompt.version}) "
        f"after {len(result.rounds)} round(s)" in printed
    )


def test_report_of_an_optimize_folder_writes_png_and_html(run: LoopResult) -> None:
    from matplotlib import image

    out = run.run_dir.parent
    assert main(["report", str(out)]) == 0
    pixels = image.imread(out / "report.png")
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 600
    page = (out / "report.html").read_text()
    assert '<img src="report.png"' in page and "<h2>dots</h2>" in page
    # One row for the initial prompt and one per round, with the round's reward.
    assert page.count("<tr>") == 1 + 1 + len(run.rounds)
    assert f"<td>{run.rounds[-1].best.reward:.3f}</td>" in page
    assert f"stopped: {run.stop}" in page
    assert run.best_prompt.instruction.split("\n")[0] in page


def test_report_of_one_run_directory(run: LoopResult) -> None:
    report = write_report(run.run_dir)
    assert report.partitions == ("dots",)
    assert report.png == run.run_dir / "report.png" and report.png.stat().st_size > 1000


def test_report_escapes_text_from_the_run(run: LoopResult, tmp_path: Path) -> None:
    copy = tmp_path / "dots"
    copy.mkdir()
    history = json.loads(run.history_path.read_text())
    history["partition"] = "<b>dots</b>"
    (copy / "history.json").write_text(json.dumps(history))
    prompt = json.loads(run.prompt_path.read_text())
    prompt["instruction"] = "Use <script>alert(1)</script> & more."
    (copy / "prompt.json").write_text(json.dumps(prompt))
    page = write_report(copy).html.read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;dots&lt;/b&gt;" in page


def test_report_names_what_stood_in_for_a_failed_agent(run: LoopResult, tmp_path: Path) -> None:
    copy = tmp_path / "dots"
    copy.mkdir()
    history = json.loads(run.history_path.read_text())
    note = "agent down: editor used (agent endpoint http://127.0.0.1:9/v1/chat/completions: cannot connect)"
    history["rounds"][0]["fallbacks"] = [note]
    del history["rounds"][-1]["fallbacks"]  # a history written before fallbacks were recorded
    (copy / "history.json").write_text(json.dumps(history))
    (copy / "prompt.json").write_text(run.prompt_path.read_text())
    page = write_report(copy).html.read_text()
    assert "<th>notes</th>" in page and f"<td>{note}</td>" in page


def test_folder_without_runs_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no loop runs here"):
        write_report(tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "history.json").write_text("{not json")
    with pytest.raises(DataError, match=r"broken/history.json: not a loop history"):
        write_report(tmp_path)
    assert main(["report", str(tmp_path / "missing")]) == 2
