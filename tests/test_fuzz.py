"""The fuzz campaign of bench/fuzz.py, short: hostile inputs end in a result or one error line.

Each target runs drawn inputs through the real entry point (``aod generate``, spec and reference
loading, ``aod validate``) under a time limit; the full campaign's counts are in bench/RESULTS.md.
"""

from __future__ import annotations

import pytest

from bench import fuzz


@pytest.mark.parametrize(
    ("target", "examples"), [("schema", 40), ("spec", 60), ("reference", 60), ("validate", 4)]
)
def test_hostile_inputs_end_in_a_result_or_one_error_line_in_time(target: str, examples: int) -> None:
    tally = fuzz.run_target(target, examples, limit=30.0)
    assert tally.finding is None, tally.finding
    assert tally.inputs == examples
    assert tally.outcomes.total() == examples


def test_a_hang_and_a_traceback_are_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(data: object, work: object) -> str:
        while True:
            pass

    def crash(data: object, work: object) -> str:
        raise RecursionError("deep")

    monkeypatch.setitem(fuzz.TARGETS, "hang", hang)
    monkeypatch.setitem(fuzz.TARGETS, "crash", crash)
    assert "hang: over 0.2 s" in (fuzz.run_target("hang", 1, limit=0.2).finding or "")
    assert "RecursionError: deep" in (fuzz.run_target("crash", 1, limit=5.0).finding or "")
