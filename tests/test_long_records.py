"""bench/long_records.py, short: a long record's cost grows with its value tokens.

The full run (the 50 dev-set schemas with the longest records) is in bench/RESULTS.md.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench import long_records

FIXTURES = Path(__file__).parent / "fixtures" / "schemas"


def test_a_long_record_costs_about_a_pass_per_four_value_tokens(tmp_path: Path) -> None:
    schemas = tmp_path / "set"
    schemas.mkdir()
    for name in ("github_medium_o83286.json", "github_trivial_o26956.json"):
        shutil.copy(FIXTURES / name, schemas / name)
    out = tmp_path / "long.json"
    assert long_records.main(["--sets", str(schemas), "--top", "1", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    # The longer of the two: a record of about 2,300 tokens, a few hundred of them value tokens.
    assert row["schema"].endswith("o83286.json") and row["valid"]
    assert row["tokens"] > 1500 and row["value_tokens"] > 200
    # Structure in a few rounds, values a block at a time: within value tokens / 4 + blocks (it
    # took 406 passes when every structural choice was a pass and blocks were 32 columns wide).
    assert row["forwards"] <= row["passes_floor"]
    assert result["summary"]["within_passes_floor"] == 1
    assert out.with_suffix(".png").is_file()
