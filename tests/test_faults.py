"""The fault check, small: three kills (the driver, its DLM actor, the driver mid-commit) while
``aod synthesize`` writes to a real S3 API on loopback, each resumed; nothing lost, duplicated or
torn. ``bench/faults.py`` runs the same with 20 and more kills."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import faults


@pytest.mark.integration  # eight runs of `aod synthesize` with real Ray: minutes
def test_kills_while_writing_to_s3_lose_and_duplicate_no_row(s3_bucket: str, tmp_path: Path) -> None:
    summary = faults.check(s3_bucket, kills=3, rows=6, seed=1, kinds=faults.KINDS, logs=tmp_path)
    assert summary.by_kind == {"driver": 1, "actor": 1, "commit": 1}, summary.trials
    assert (summary.rows_lost, summary.rows_duplicated, summary.rows_extra) == (0, 0, 0), summary.trials
    assert summary.concurrent_reads > 0 and summary.torn_reads == 0, summary
    assert summary.failed_resumes == 0, summary.trials
    assert summary.stray_folders == 0, summary.trials
    assert all(trial.rows == trial.target for trial in summary.trials)
