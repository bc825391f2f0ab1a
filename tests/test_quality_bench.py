"""Smoke tests of the quality benchmark (bench/quality.py) at tiny sizes, so that it cannot rot.

The DLM and AoD systems run end to end on the tiny random DLM; the autoregressive systems run on
the real SmolLM2 weights with a few tokens (marked slow: they load SmolLM2).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aod_ops.agents.judge import Judge
from aod_ops.schema import load_schema
from aod_ops.spec import load_reference, load_spec
from bench import quality

SPEC = Path(__file__).resolve().parent.parent / "examples" / "partitions.yaml"
KEYS = {
    "system",
    "partition",
    "validity",
    "tsr",
    "field_overlap",
    "exact_match_rate",
    "diversity",
    "dcr_p5",
    "records_per_s",
    "forwards_per_valid_record",
    "wall_s",
}


def test_cli_runs_dlm_and_aod_systems_and_writes_json_markdown_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "results" / "quality.json"
    systems = ["dlm-free", "dlm-skeleton", "aod-skeleton", "aod-free"]
    code = quality.main(
        ["--model", "tiny-random", "--partitions", "seattle-weather", "--systems", ",".join(systems),
         "--candidates", "2", "--rounds", "1", "--proposals", "1", "--max-new-tokens", "8",
         "--out", str(out), "--work", str(tmp_path / "work")]
    )  # fmt: skip
    assert code == 0
    results = json.loads(out.read_text())
    rows = results["rows"]
    assert [r["system"] for r in rows] == systems
    for r in rows:
        assert r.keys() >= KEYS
        assert r["partition"] == "seattle-weather"
        assert r["candidates"] == 2
        assert 0.0 <= r["validity"] <= 1.0 and 0.0 <= r["tsr"] <= r["validity"]
        assert r["records_per_s"] > 0 and r["wall_s"] > 0
    by = {r["system"]: r for r in rows}
    # Skeleton infilling makes the structure: even a random model's records validate.
    assert by["dlm-skeleton"]["validity"] == 1.0 and by["aod-skeleton"]["validity"] == 1.0
    # An AoD system's time includes its loop: more than sampling its records alone.
    assert by["aod-skeleton"]["wall_s"] > 2 / by["aod-skeleton"]["records_per_s"]
    runs = {r["system"]: r for r in results["rewards"]}
    assert set(runs) == {"aod-skeleton", "aod-free"}
    for run in runs.values():
        assert len(run["rewards"]) == 2  # the initial prompt and one round
        assert all(0.0 <= x <= 1.0 for x in run["rewards"])
        assert run["rewards"][1] >= run["rewards"][0]  # a prompt is accepted only if not worse
        assert run["stop"] in ("target", "patience", "rounds")
    assert (tmp_path / "work" / "aod-skeleton" / "seattle-weather" / "history.json").is_file()
    assert [m["system"] for m in results["means"]] == systems
    baseline = results["holdout_baseline"]["seattle-weather"]
    assert baseline["holdout_records"] > 0 and 0.0 <= baseline["dcr_p5"] <= baseline["dcr_median"]
    assert 0.0 < baseline["field_overlap"] < 1.0  # real days repeat some real values, not all
    settings = results["settings"]
    assert settings["candidates_per_system_and_partition"] == 2 and settings["loop_rounds"] == 1
    assert settings["dlm"] == "tiny-random" and len(settings["load_average_before"]) == 3
    markdown = out.with_suffix(".md").read_text()
    for system in systems:
        assert f"| {system} |" in markdown
    assert "paper (LLaDA-8B, 8-9B agents) | – | 0.79 | 0.29" in markdown
    assert "### Targets (aod-skeleton)" in markdown
    assert (out.parent / "quality_rewards.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _row(system: str, partition: str, **values: float) -> dict[str, float | str]:
    base = {"validity": 1.0, "tsr": 0.95, "field_overlap": 0.1, "exact_match_rate": 0.0, "records_per_s": 1.0}
    return {"system": system, "partition": partition, **base, **values}


def test_targets_mark_each_partition_and_say_met_or_missed() -> None:
    rows = [
        _row("aod-skeleton", "a"),
        _row("aod-skeleton", "b", field_overlap=0.3, exact_match_rate=0.05),
        _row("ar", "a", tsr=0.5),
        _row("ar", "b", tsr=0.97),
        _row("dlm-skeleton", "a", records_per_s=9.0),
        _row("dlm-skeleton", "b", records_per_s=9.0, validity=0.5),
        _row("ar-constrained", "a", records_per_s=2.0, validity=0.9),
        _row("ar-constrained", "b", records_per_s=2.0, validity=0.9),
    ]
    checks = {t["target"]: t for t in quality.targets(rows)}
    assert checks["validity"]["met"] and checks["tsr"]["met"]
    assert not checks["field_overlap"]["met"] and checks["field_overlap"]["values"] == {"a": 0.1, "b": 0.3}
    assert not checks["exact_match_rate"]["met"]
    above = checks["tsr above every baseline"]
    assert not above["met"] and above["values"]["b"] == {"aod": 0.95, "best_baseline": 0.97}
    speed = checks["dlm-skeleton records/s >= 3x ar-constrained at equal validity"]
    assert speed["values"]["a"]["ratio"] == 4.5
    assert not speed["met"]  # partition b is fast enough, but at lower validity


def test_bad_settings_and_unknown_systems_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="candidates must be at least 1"):
        quality.BenchSettings(candidates=0)
    with pytest.raises(ValueError, match="unknown systems \\['llm'\\]"):
        quality.run_benchmark(SPEC, ["cars"], ["llm"], quality.BenchSettings(), tmp_path)


@pytest.mark.slow
def test_ar_systems_sample_smollm2_with_and_without_the_json_grammar() -> None:
    partition = load_spec(SPEC).select("cars")[0]
    schema = load_schema(partition.schema_path)
    ctx = quality.Context(partition, schema, load_reference(partition), [])
    settings = quality.BenchSettings(candidates=2, max_new_tokens=4)
    judge = Judge(schema, ctx.reference)
    for constrained in (False, True):
        run = quality.run_ar(ctx, constrained, settings)
        assert run.system == ("ar-constrained" if constrained else "ar")
        assert len(run.candidates) == 2 and 1 <= run.forwards <= 4
        assert run.wall_s >= run.sampling_s > 0
        if constrained:  # the grammar allows nothing but the start of a JSON object
            assert all(c.text.lstrip().startswith("{") for c in run.candidates)
        r = quality.row(run, judge)
        assert r.keys() >= KEYS and r["candidates"] == 2
        # Four tokens cannot hold a whole record: every candidate is counted invalid, none crashes.
        assert r["validity"] == 0.0 and r["forwards_per_valid_record"] is None


def test_markdown_of_a_partial_run_shows_the_partitions_measured_so_far() -> None:
    rows = [
        {**_row(system, "cars"), "diversity": 1.0, "dcr_p5": 0.3, "forwards_per_valid_record": 2.0,
         "wall_s": 5.0, "reward": 0.5}
        for system in ("dlm-skeleton", "aod-skeleton")
    ]  # fmt: skip
    settings = {
        "complete": False, "partitions": ["cars", "airports"], "candidates_per_system_and_partition": 8,
        "dlm": "smollm2-bidir", "loop_rounds": 2, "loop_proposals": 2, "ar_model": "SmolLM2",
        "constrained_decoding": "outlines", "torch_threads": 1, "cpus": 2,
        "load_average_before": [9.0, 9.0, 9.0], "load_average_after": [8.0, 8.0, 8.0], "total_s": 600.0,
        "dlm_decoding": {name: {"steps": 16, "block_length": 32, "temperature": 0.8, "cache": True}
                         for name in ("cars", "airports")},
    }  # fmt: skip
    results = {
        "rows": rows,
        "means": quality.means(rows, quality.SYSTEMS),
        "holdout_baseline": {"cars": {"dcr_p5": 0.1, "dcr_median": 0.2, "holdout_records": 100,
                                      "reference_records": 200, "field_overlap": 0.69}},
        "rewards": [],
        "targets": quality.targets(rows),
        "settings": settings,
    }  # fmt: skip
    markdown = quality.render_markdown(results)
    assert "**Partial run**" in markdown
    assert "DLM `smollm2-bidir` (16 steps, blocks of 32, temperature 0.8, dual cache)" in markdown
    assert "### cars" in markdown and "### airports" not in markdown
    assert "(100 held-out, 200 reference records): DCR p5 0.10, median 0.20; field overlap 0.69" in markdown
    assert "| tsr above every baseline | > max(a-d) | cars: 0.95/0.95 | **missed** |" in markdown


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
    assert all(r["validity"] == 1.0 and r["candidates"] == 2 for r in results["rows"])
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
