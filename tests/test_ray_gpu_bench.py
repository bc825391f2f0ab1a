"""bench/gpu.py, without a GPU: it refuses in one line, and its CPU part runs (tiny, no Ray).

The GPU figures come only from a run on a GPU machine; none is claimed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")
def test_without_a_gpu_it_refuses_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gpu.json"
    assert gpu.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == "bench/gpu.py: no CUDA device here (pass --cpu-only for the CPU part alone)\n"
    assert not out.exists()


def test_its_cpu_part_runs_as_a_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    small = ["--model", "tiny-random", "--cpu-batch", "2", "--long-cpu-batch", "1", "--min-seconds", "0"]
    assert gpu.main(["--cpu-only", "--out", str(out), *small, "--gemma-layers", "1", "--skip-ray"]) == 0
    result = json.loads(out.read_text())
    assert result["machine"]["gpu"] is None and result["workload"]["long_schema"].endswith("o83286.json")
    smol = result["smol"]
    assert (smol["cpu"]["batch"], smol["long_cpu"]["batch"]) == (2, 1)
    assert smol["cpu"]["records_per_s"] > 0 and smol["cpu"]["validity"] == 1.0
    assert "gpu" not in smol and "ray" not in result
    gemma = result["diffusion_gemma"]
    assert gemma["config"]["layer_types"] == ["full_attention"] and gemma["cpu"]["validity"] == 1.0
    assert result["floor"]["ratio"] is None and result["floor"]["met"] is None
