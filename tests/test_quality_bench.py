"""Smoke tests of the quality benchmark (bench/quality.py) at tiny sizes, so that it cannot rot.

The default systems run end to end on one partition: the DLM and AoD systems on the tiny random
DLM, SDV's synthesizers for real (CTGAN for 2 epochs). The autoregressive systems run on the real
SmolLM2 weights with a few tokens (marked slow: they load SmolLM2).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from aod_ops.fidelity import Scorecard, Yardstick
from aod_ops.schema import load_schema
from aod_ops.spec import load_reference, load_spec
from bench import quality, quality_report

SPEC = Path(__file__).resolve().parent.parent / "examples" / "partitions.yaml"
SCORECARD = {f.name for f in dataclasses.fields(Scorecard)}
ROW = SCORECARD | {"system", "partition", "reward", "wall_s", "sampling_s", "records_per_s", "examples"}


def test_cli_runs_every_default_system_and_writes_json_markdown_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "results" / "quality.json"
    code = quality.main(
        ["--model", "tiny-random", "--partitions", "seattle-weather", "--rows", "4", "--rounds", "1",
         "--proposals", "1", "--loop-candidates", "4", "--epochs", "2", "--out", str(out),
         "--work", str(tmp_path / "work")]
    )  # fmt: skip
    assert code == 0
    results = json.loads(out.read_text())
    assert results.keys() == {"rows", "means", "heldout", "rewards", "floors", "settings"}
    rows = results["rows"]
    assert [r["system"] for r in rows] == list(quality.DEFAULT_SYSTEMS)
    by = {r["system"]: r for r in rows}
    for r in rows:
        assert r.keys() >= ROW and r["partition"] == "seattle-weather"
        assert r["rows"] == 4 and len(r["examples"]) == 4
        assert 0.0 <= r["reward"] <= 1.0 and r["wall_s"] >= 0
        assert all(json.loads(e) for e in r["examples"])  # compact JSON lines
    # The real reference rows: the fidelity ceiling, every one a copy, so they fail privacy.
    heldout = results["heldout"]["seattle-weather"]
    assert heldout["rows"] == 4 and heldout["source"] == "holdout" and heldout.keys() >= SCORECARD
    assert by["reference"]["exact_match_rate"] == 1.0
    assert by["reference"]["reward"] < heldout["reward"]
    assert by["reference"]["records_per_s"] is None  # nothing was written
    # The DLM's skeleton makes the structure; its repairs are counted, an outside table has none.
    for system in ("dlm-skeleton", "aod-skeleton"):
        assert by[system]["validity"] == 1.0 and by[system]["repair_rate"] is not None
    for system in ("reference", "sdv-gc", "sdv-ctgan"):
        assert by[system]["repair_rate"] is None
    assert by["sdv-gc"]["validity"] == 1.0  # schema-typed metadata: dates as dates, numbers in range
    assert by["aod-skeleton"]["wall_s"] > by["aod-skeleton"]["sampling_s"]  # the loop is included
    (run,) = results["rewards"]
    assert run["system"] == "aod-skeleton" and len(run["rewards"]) == 2  # initial prompt and one round
    assert run["rewards"][1] >= run["rewards"][0] and run["heldout_reward"] == heldout["reward"]
    assert (tmp_path / "work" / "aod-skeleton" / "seattle-weather" / "history.json").is_file()
    assert [m["system"] for m in results["means"]] == [quality_report.HELDOUT, *quality.DEFAULT_SYSTEMS]
    assert {f["floor"] for f in results["floors"]} == {
        "mean quality at least sdv-gc's",
        "quality at least sdv-gc's on 1 of 1 partitions",
        "detection_auc_other at most 0.7 on average",
        "detection_auc at most 0.75 on average",
        "no exact copies",
        "no sensitive copies",
        "DCR protection at least 0.9",
        "rule violations at most the held-out rows'",
        "repair rate reported",
        "validity 1.0",
        "held-out reward above every system's",
    }
    settings = results["settings"]
    assert settings["rows_per_system_and_partition"] == {"seattle-weather": 4}
    assert settings["ctgan_epochs"] == 2 and settings["dlm"] == "tiny-random" and settings["complete"]
    assert settings["versions"]["sdv"] != "not installed"
    markdown = out.with_suffix(".md").read_text()
    table = markdown.split("### seattle-weather")[1]
    assert table.index("| held-out |") < table.index("| reference |") < table.index("| aod-skeleton |")
    assert "### Floors (aod-skeleton)" in markdown and "| repair rate reported | reported |" in markdown
    assert "seattle-weather, `sdv-ctgan`:" in markdown
    assert (out.parent / "quality_rewards.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _row(system: str, partition: str, **values: float | None) -> dict[str, Any]:
    base = {"reward": 0.5, "quality": 0.8, "detection_auc": 0.6, "detection_auc_other": 0.6,
            "exact_match_rate": 0.0, "sensitive_copies": 0.0, "dcr_protection": 1.0,
            "rule_violations": 0.0, "repair_rate": 0.1, "validity": 1.0, "examples": ['{"x":1}']}  # fmt: skip
    return {"system": system, "partition": partition, **base, **values}


def test_floors_are_decided_from_the_figures() -> None:
    heldout = {p: _row(quality_report.HELDOUT, p, reward=0.9, rule_violations=0.05) for p in "abcd"}
    rows = [
        _row("aod-skeleton", "a", quality=0.85, sensitive_copies=0.1),
        _row("aod-skeleton", "b", quality=0.85, detection_auc=0.9, rule_violations=0.1),
        _row("aod-skeleton", "c", quality=0.70, detection_auc_other=0.95, dcr_protection=0.8),
        _row("aod-skeleton", "d", quality=0.85, detection_auc_other=0.8, repair_rate=None),
        *(_row("sdv-gc", p) for p in "abcd"),
        _row("reference", "a", reward=0.95),
    ]
    checks = {f["floor"]: f for f in quality_report.floors(rows, heldout)}
    mean = checks["mean quality at least sdv-gc's"]
    assert mean["passed"] and mean["overall"] == {"aod-skeleton": 0.8125, "sdv-gc": 0.8}
    three = checks["quality at least sdv-gc's on 3 of 4 partitions"]
    assert three["passed"] and three["overall"] == "3 of 4"  # c loses
    assert three["values"]["c"] == {"aod-skeleton": 0.70, "sdv-gc": 0.8}
    other = checks["detection_auc_other at most 0.7 on average"]
    assert not other["passed"] and other["overall"] == pytest.approx(0.7375)
    assert checks["detection_auc at most 0.75 on average"]["passed"]  # mean 0.675: b's 0.9 is averaged
    assert not checks["DCR protection at least 0.9"]["passed"]
    assert not checks["no sensitive copies"]["passed"] and checks["no exact copies"]["passed"]
    rules = checks["rule violations at most the held-out rows'"]
    assert not rules["passed"] and rules["values"]["b"] == {"aod-skeleton": 0.1, "held-out": 0.05}
    assert not checks["repair rate reported"]["passed"] and checks["validity 1.0"]["passed"]
    above = checks["held-out reward above every system's"]
    assert not above["passed"] and above["values"]["a"] == {"held-out": 0.9, "reference": 0.95}
    markdown = quality_report.render_markdown(
        {"rows": rows, "means": quality_report.means([*heldout.values(), *rows], quality.DEFAULT_SYSTEMS),
         "heldout": heldout, "rewards": [], "floors": list(checks.values()),
         "settings": {"complete": False, "partitions": ["a", "b", "c", "d", "e"], "seed": 0,
                      "rows_per_system_and_partition": {"a": 50}, "dlm": "aod-smol-dlm", "loop_rounds": 5,
                      "loop_proposals": 2, "ctgan_epochs": 200, "torch_threads": 2, "cpus": 2,
                      "load_average_before": [1.0], "load_average_after": [2.0], "total_s": 60.0}}
    )  # fmt: skip
    assert "**Partial run**" in markdown and "### d" in markdown and "### e" not in markdown
    assert "| held-out | 0.90 |" in markdown and 'a, `reference`:\n\n```json\n{"x":1}\n```' in markdown
    dcr = "| DCR protection at least 0.9 | >= 0.9 | a: 1.00; b: 1.00; c: 0.80; d: 1.00 | – | **fail** |"
    assert dcr in markdown


def test_sdv_metadata_is_fixed_from_the_json_schema() -> None:
    partition = load_spec(SPEC).select("la-riots")[0]
    schema = load_schema(partition.schema_path)
    ctx = quality.Context(partition, schema, load_reference(partition), [])
    meta = quality.sdv_metadata(ctx, pd.DataFrame(ctx.reference))
    columns = meta.to_dict()["tables"]["la-riots"]["columns"]
    # Detection alone makes names Faker's first_name/last_name and coordinates latitude/longitude.
    assert columns["first_name"] == columns["address"] == {"sdtype": "categorical"}
    assert columns["latitude"]["sdtype"] == "numerical" and columns["age"]["sdtype"] == "numerical"
    assert columns["death_date"] == {"sdtype": "datetime", "datetime_format": "%Y-%m-%d"}
    assert columns["race"] == {"sdtype": "categorical"}


def test_bad_settings_and_unknown_systems_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="candidates must be at least 1"):
        quality.BenchSettings(candidates=0)
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        quality.BenchSettings(epochs=0)
    with pytest.raises(ValueError, match="unknown systems \\['llm'\\]"):
        quality.run_benchmark(SPEC, ["cars"], ["llm"], quality.BenchSettings(), tmp_path)


@pytest.mark.slow
def test_ar_systems_sample_smollm2_with_and_without_the_json_grammar() -> None:
    partition = load_spec(SPEC).select("cars")[0]
    schema = load_schema(partition.schema_path)
    ctx = quality.Context(partition, schema, load_reference(partition), [])
    yardstick = Yardstick.for_partition(partition)
    settings = quality.BenchSettings(candidates=2, max_new_tokens=4)
    for constrained in (False, True):
        run = quality.run_ar(ctx, constrained, settings)
        assert run.system == ("ar-constrained" if constrained else "ar")
        assert len(run.candidates) == 2 and run.wall_s >= run.sampling_s > 0
        if constrained:  # the grammar allows nothing but the start of a JSON object
            assert all(c.text.lstrip().startswith("{") for c in run.candidates)
        r = quality.row(run, yardstick)
        # Four tokens cannot hold a whole record: every candidate is counted invalid, none crashes.
        assert r.keys() >= ROW and r["rows"] == 2 and r["validity"] == 0.0 and r["repair_rate"] is None


def test_dual_cache_bench_pairs_full_passes_with_the_dual_cache(tmp_path: Path) -> None:
    from bench import dual_cache

    out = tmp_path / "dual_cache.json"
    code = dual_cache.main(
        ["--model", "tiny-random", "--partitions", "seattle-weather", "--modes", "skeleton",
         "--candidates", "2", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    results = json.loads(out.read_text())
    assert [(r["mode"], r["cache"]) for r in results["rows"]] == [("skeleton", False), ("skeleton", True)]
    assert all(r["validity"] == 1.0 and r["rows"] == 2 for r in results["rows"])
    assert (
        list(results["speedup"]) == ["seattle-weather/skeleton"]
        and results["speedup"]["seattle-weather/skeleton"] > 0
    )
    assert "| seattle-weather | skeleton | dual |" in out.with_suffix(".md").read_text()


def test_dtype_bench_times_a_full_pass_in_both_dtypes(tmp_path: Path) -> None:
    from bench import dtype

    out = tmp_path / "dtype.json"
    code = dtype.main(["--model", "tiny-random", "--batch-size", "2", "--repeats", "1", "--out", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    assert [r["dtype"] for r in results["rows"]] == ["fp32", "bf16"]
    assert all(r["full_pass_s"] > 0 and r["matmul_gflops"] > 0 for r in results["rows"])
    assert results["settings"]["batch_size"] == 2 and results["fast_dtype"] in ("float32", "bfloat16")
