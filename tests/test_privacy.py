"""Privacy figures, thresholds and verdicts on small cases worked out by hand."""

import json
from pathlib import Path

import pytest

from aod_ops.metrics import ReferenceIndex
from aod_ops.privacy import PrivacyThresholds, privacy_report, sensitive_columns

# /x ranges over 100. Leave-one-out: each row is (0.5 + 1 + 1) / 3 = 0.8333 from its nearest other
# row (x 50 apart, s and ssn differ), so the default DCR threshold is max(0.02, 0.5 x 0.8333) = 0.4167.
REFERENCE = [
    {"x": 0, "s": "a", "ssn": "111"},
    {"x": 100, "s": "b", "ssn": "222"},
    {"x": 50, "s": "c", "ssn": "333"},
]
# Each is (0.25 + 1 + 1) / 3 = 0.75 from rows 0 and 2 (x 25 off, s and ssn differ): p5 0.75.
GOOD = [{"x": 25, "s": "d", "ssn": "900"}, {"x": 75, "s": "e", "ssn": "901"}]


def test_a_novel_distant_output_passes_every_gate() -> None:
    report = privacy_report(GOOD, REFERENCE, sensitive=["ssn"])
    assert report.passed
    assert report.check("exact_match_rate").value == 0.0
    # No leaf of either record appears at its pointer in the reference.
    assert report.check("field_overlap").value == 0.0
    assert report.dcr_baseline_p5 == pytest.approx(2.5 / 3)
    dcr = report.check("dcr_p5")
    assert dcr.threshold == pytest.approx(1.25 / 3)
    assert dcr.value == pytest.approx(0.75)
    assert report.check("sensitive:ssn").value == 0.0


def test_an_exact_copy_fails_the_exact_match_gate_and_is_named() -> None:
    records = [*GOOD, dict(REFERENCE[1])]
    report = privacy_report(records, REFERENCE, ids=["r1", "r2", "r3"])
    check = report.check("exact_match_rate")
    assert not check.passed
    assert check.value == pytest.approx(1 / 3)
    assert check.examples == ("r3",)
    assert not report.passed
    assert "exact_match_rate" in [failed.name for failed in report.failed]


def test_field_overlap_gate_uses_the_threshold_inclusively_and_skips_choice_leaves() -> None:
    # s copied, x and ssn new: 1/3 of the leaves copied.
    records = [{"x": 30, "s": "a", "ssn": "999"}]
    assert privacy_report(records, REFERENCE).check("field_overlap").value == pytest.approx(1 / 3)
    assert not privacy_report(records, REFERENCE).check("field_overlap").passed  # 0.333 > 0.3
    loose = PrivacyThresholds(max_field_overlap=1 / 3)
    assert privacy_report(records, REFERENCE, thresholds=loose).check("field_overlap").passed
    # With s an enum, copying it is unavoidable and does not count: 0 of 2.
    skipped = privacy_report(records, REFERENCE, skip_leaf=lambda pointer: pointer == "/s")
    assert skipped.check("field_overlap").value == 0.0


def test_the_field_overlap_gate_is_never_tighter_than_held_out_real_rows() -> None:
    records = [{"x": 30, "s": "a", "ssn": "999"}]  # 1/3 copied: over the default 0.3
    # Real unseen rows share s and x with the reference: 2/3 of their leaves.
    holdout = [{"x": 50, "s": "b", "ssn": "444"}]
    check = privacy_report(records, REFERENCE, holdout=holdout).check("field_overlap")
    assert check.passed and check.threshold == pytest.approx(2 / 3)
    assert "held-out real rows: 66.7%" in check.detail
    worse = [{"x": 0, "s": "a", "ssn": "222"}]  # every leaf copied: beyond real data
    assert not privacy_report(worse, REFERENCE, holdout=holdout).check("field_overlap").passed


def test_a_holdout_sample_sets_the_dcr_baseline() -> None:
    # Holdout row: x 10 off row 0 (0.1), s and ssn differ -> (0.1 + 1 + 1) / 3 = 0.7 from row 0.
    report = privacy_report(GOOD, REFERENCE, holdout=[{"x": 10, "s": "z", "ssn": "555"}])
    assert report.dcr_baseline_p5 == pytest.approx(0.7)
    assert report.check("dcr_p5").threshold == pytest.approx(0.35)


def test_near_copies_fail_the_dcr_gate() -> None:
    # 1 of 100 off in x, ssn differs: (0.01 + 0 + 1) / 3 = 0.3367 from row 0, under 0.4167.
    report = privacy_report([{"x": 1, "s": "a", "ssn": "999"}], REFERENCE, ids=["near"])
    check = report.check("dcr_p5")
    assert check.value == pytest.approx(1.01 / 3)
    assert not check.passed
    assert check.examples == ("near",)
    # An absolute threshold replaces the relative one: 0.75 is not above 0.8.
    strict = privacy_report(GOOD, REFERENCE, thresholds=PrivacyThresholds(dcr_p5_min=0.8))
    assert strict.check("dcr_p5").threshold == 0.8
    assert not strict.check("dcr_p5").passed


def test_a_sensitive_value_from_the_reference_fails_without_being_shown(tmp_path: Path) -> None:
    records = [*GOOD, {"x": 60, "s": "f", "ssn": "222"}]
    report = privacy_report(records, REFERENCE, sensitive=["ssn"], ids=["a", "b", "leak"])
    check = report.check("sensitive:ssn")
    assert not check.passed
    assert check.value == 1.0
    assert check.examples == ("leak",)
    written = report.write(tmp_path / "privacy_report.json").read_text()
    assert '"222"' not in written and "222" not in check.detail
    saved = json.loads(written)
    assert saved["passed"] is False
    by_name = {item["name"]: item for item in saved["checks"]}
    assert by_name["sensitive:ssn"]["passed"] is False
    assert by_name["exact_match_rate"] == {
        "name": "exact_match_rate",
        "value": 0.0,
        "comparison": "<=",
        "threshold": 0.0,
        "passed": True,
        "detail": "0 of 3 records are exact copies of a reference record",
        "examples": [],
    }


def test_an_indexed_reference_gives_the_same_report() -> None:
    records = [*GOOD, {"x": 60, "s": "f", "ssn": "222"}, dict(REFERENCE[0])]
    plain = privacy_report(records, REFERENCE, sensitive=["ssn"], holdout=GOOD)
    index = ReferenceIndex.of(REFERENCE)  # the sensitive column is added to it by the report
    assert privacy_report(records, index, sensitive=["ssn"], holdout=GOOD) == plain
    assert plain.reference_rows == 3 and not plain.check("sensitive:ssn").passed


def test_sensitive_columns_come_from_the_schema_annotation() -> None:
    schema = {
        "type": "object",
        "properties": {"ssn": {"type": "string", "x-aod-sensitive": True}, "x": {"type": "number"}},
    }
    assert sensitive_columns(schema) == ("ssn",)
    assert sensitive_columns({"type": "string"}) == ()


def test_an_empty_reference_or_output_passes_and_says_why() -> None:
    report = privacy_report(GOOD, [])
    assert report.passed
    assert "the reference sample is empty" in report.notes[0]
    assert report.check("dcr_p5").value is None
    assert privacy_report([], REFERENCE).passed
    with pytest.raises(ValueError, match="ids has 1 entries for 2 records"):
        privacy_report(GOOD, REFERENCE, ids=["one"])


def test_new_rows_are_counted_whatever_the_column_names_and_texts() -> None:
    # sdmetrics matches rows with a pandas query written from names and values: none may break it.
    odd = {"a`b\nc": "it's `x`\n", "\x18 ": 1.5, "N\x8e": {"nested": [1]}}
    reference = [odd, {**odd, "\x18 ": 2.5}]
    report = privacy_report([odd, {**odd, "a`b\nc": "new"}], reference)
    assert report.new_row_synthesis == pytest.approx(0.5)  # the first row is a copy, the second new


def test_numbers_sdmetrics_cannot_match_leave_new_row_synthesis_out_and_say_why() -> None:
    reference = [{"x": 1.0, "s": "a"}, {"x": -(2**100), "s": "b"}]  # past int64: its query breaks
    report = privacy_report([{"x": -(2**100), "s": "a"}, {"x": 2.0, "s": "c"}], reference)
    assert report.new_row_synthesis is None
    assert any(note.startswith("NewRowSynthesis not computed: sdmetrics failed") for note in report.notes)
    assert report.check("exact_match_rate").value == 0.0  # the gates are still computed
