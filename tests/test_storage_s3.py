"""The pipeline on a real S3 API on loopback (moto's server, see ``conftest.py``): a spec whose
schema, reference and holdout are on S3; ``aod synthesize``, ``aod validate``, ``aod score`` and
``aod run`` writing there with real Ray; the Airflow DAG with its credentials from a connection.
None of them makes a local folder named ``s3:``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from aod_ops import storage
from aod_ops.cli import main
from aod_ops.output import MANIFEST, committed_dir

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
WEATHER = "seattle-weather"
QUICK = ["--rounds", "1", "--candidates", "4", "--rows", "8"]


def _spec_on_s3(bucket: str) -> str:
    """The example weather partition (a table the tiny random DLM fills) with every file on S3:
    the schema and holdout named relative to the spec, the reference by its URI."""
    for name in (
        f"schemas/{WEATHER}.json",
        f"data/{WEATHER}_reference.jsonl",
        f"data/{WEATHER}_holdout.jsonl",
    ):
        storage.write_bytes(f"{bucket}/spec/{name}", (EXAMPLES / name).read_bytes())
    spec = {
        "defaults": {"dlm": "tiny-random", "loop": {"rounds": 1, "candidates": 4, "proposals": 1}},
        "partitions": [
            {
                "name": WEATHER,
                "schema": f"schemas/{WEATHER}.json",
                "reference": f"{bucket}/spec/data/{WEATHER}_reference.jsonl",
                "holdout": f"data/{WEATHER}_holdout.jsonl",
                "rows": 8,
                "notes": "Daily weather at Seattle, 2012-2015.",
            }
        ],
    }
    storage.write_text(f"{bucket}/spec/partitions.yaml", yaml.safe_dump(spec, sort_keys=False))
    return f"{bucket}/spec/partitions.yaml"


def _table_rows(folder: storage.Location) -> int:
    return sum(
        pq.ParquetFile(storage.open_file(file)).metadata.num_rows
        for file in storage.list_files(storage.join(folder, "data"), ".parquet")
    )


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory: where ``Path("s3://...")`` would have made an ``s3:`` folder."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_synthesize_validate_and_score_on_s3(s3_bucket: str, workdir: Path) -> None:
    spec, out = _spec_on_s3(s3_bucket), f"{s3_bucket}/tables"
    synthesize = ["synthesize", "--spec", spec, "--out", out, "--rows", "8", "--actors", "1"]
    assert main(synthesize) == 0
    folder = committed_dir(out, WEATHER)
    assert isinstance(folder, str) and _table_rows(folder) == 8
    manifest = json.loads(storage.read_text(f"{out}/{WEATHER}/{MANIFEST}"))
    assert manifest["rows"] == 8 and manifest["commit"] == storage.name(folder)

    assert main(["validate", "--spec", spec, "--data", out]) == 0
    assert json.loads(storage.read_text(f"{folder}/validation_result.json"))["success"] is True
    assert storage.is_file(f"{folder}/privacy_report.json")

    report = f"{s3_bucket}/score"
    score = ["score", "--spec", spec, "--partition", WEATHER, "--data", f"{folder}/data"]
    assert main([*score, "--json", f"{report}/figures.json", "--report", report]) == 0
    assert json.loads(storage.read_text(f"{report}/figures.json"))["table"]["rows"] == 8
    assert storage.is_file(f"{report}/fidelity.html") and storage.is_file(f"{report}/fidelity.png")

    # A rerun with the same settings finds the commit and leaves it as it is: no rows twice.
    assert main(synthesize) == 0
    assert committed_dir(out, WEATHER) == folder and storage.list_folders(f"{out}/{WEATHER}") == [folder]
    assert list(workdir.iterdir()) == []


def test_run_on_s3_end_to_end(s3_bucket: str, workdir: Path) -> None:
    out = f"{s3_bucket}/run"
    assert main(["run", "--spec", _spec_on_s3(s3_bucket), "--out", out, *QUICK]) == 0
    assert storage.is_file(f"{out}/prompts/{WEATHER}/prompt.json")
    assert storage.is_file(f"{out}/prompts/{WEATHER}/rounds/round_01.json")
    assert storage.is_file(f"{out}/prompts/report.html") and storage.is_file(f"{out}/prompts/report.png")
    folder = committed_dir(f"{out}/tables", WEATHER)
    assert folder is not None and _table_rows(folder) == 8
    validation = json.loads(storage.read_text(storage.join(folder, "validation_result.json")))
    assert validation["success"] is True
    assert list(workdir.iterdir()) == []


def test_an_unknown_scheme_for_out_exits_2_naming_it(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = str(EXAMPLES / "partitions.yaml")
    assert main(["synthesize", "--spec", spec, "--out", "s4://bucket/out", "--partition", "cars"]) == 2
    assert "s4://bucket/out: unknown scheme 's4'" in capsys.readouterr().err
    assert list(workdir.iterdir()) == []


@pytest.mark.integration
def test_the_dag_runs_on_s3_with_credentials_from_a_connection(
    s3_bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    """``airflow dags test`` with the spec and the output on S3; the Airflow process has no AWS
    credentials in its environment, only a connection (``storage_conn_id``) holding them."""
    spec, out, date = _spec_on_s3(s3_bucket), f"{s3_bucket}/dag", "2026-11-20"
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = Path(sys.executable).parent
    connection = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
    }
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_"))},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(Path(__file__).resolve().parents[1] / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_AOD_S3": json.dumps(connection),
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance role to look for on a test machine
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }

    def airflow(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(bin_dir / "airflow"), *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200, check=False)

    migrated = airflow("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    conf = {"spec": spec, "out": out, "rounds": 1, "candidates": 4, "rows": 8, "storage_conn_id": "aod_s3"}
    done = airflow("dags", "test", "aod_synthesis", date, "--conf", json.dumps(conf))
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]

    (outcome,) = json.loads(storage.read_text(f"{out}/{date}/summary.json"))
    assert outcome["succeeded"] and outcome["validation"]["rows"] == 8, outcome
    folder = committed_dir(f"{out}/{date}/tables", WEATHER)
    assert folder is not None and _table_rows(folder) == 8
    assert storage.is_file(f"{out}/{date}/prompts/{WEATHER}/prompt.json")
    assert outcome["validation"]["data_path"] == storage.join(folder, "data")
    assert not (home / "s3:").exists() and not Path("s3:").exists()
