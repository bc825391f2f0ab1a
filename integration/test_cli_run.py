"""``aod run``: the DAG's steps without Airflow (optimize, report, synthesize, validate) in one command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tiny_specs import write_tiny_spec

from aod_ops.cli import main

pytestmark = pytest.mark.integration


def test_run_with_fewer_rows_than_the_spec_writes_and_validates_that_many(tmp_path: Path) -> None:
    spec = write_tiny_spec(tmp_path / "spec", ["seattle-weather"], rows=1000)
    out = tmp_path / "out"
    quick = ["--rounds", "1", "--candidates", "4", "--rows", "8"]
    args = ["run", "--spec", str(spec), "--out", str(out), *quick]
    assert main(args) == 0
    table = out / "tables" / "seattle-weather"
    assert pq.read_table(table / "data").num_rows == 8
    validation = json.loads((table / "validation_result.json").read_text())
    row_count = [r for r in validation["results"] if "row_count" in r["expectation_config"]["type"]]
    assert validation["success"] and row_count and row_count[0]["result"]["observed_value"] == 8
    assert (out / "prompts" / "seattle-weather" / "prompt.json").is_file()
    assert (out / "prompts" / "report.html").is_file()


def test_a_successful_run_is_quiet(tmp_path: Path) -> None:
    """What a user sees of a run that succeeds: its own lines, no library noise, paths whole."""
    # Two partitions: a stream that ends while the next one starts is when Ray Data kills actors.
    spec = write_tiny_spec(tmp_path / "spec", ["seattle-weather", "weather-b"], rows=1000)
    out = tmp_path / "out"
    aod = Path(sys.executable).parent / "aod"
    quick = ["--rounds", "1", "--candidates", "4", "--rows", "8"]
    run = subprocess.run(
        [str(aod), "run", "--spec", str(spec), "--out", str(out), *quick],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        timeout=900,
        check=False,
    )
    lines = (run.stdout + run.stderr).splitlines()
    assert run.returncode == 0, "\n".join(lines[-20:])
    noise = [
        line
        for line in lines
        if any(word in line for word in ("WARNING", "ERROR", "Traceback", "core_worker", "(raylet)", "\x1b["))
    ]
    assert noise == []
    assert len(lines) <= 40
    assert any(str(out / "tables") in line for line in lines)  # printed whole, never wrapped
