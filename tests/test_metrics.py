"""The metrics of docs/architecture.md on small cases whose numbers were worked out by hand (see comments)."""

import random
import time

import numpy as np
import pytest

from aod_ops import metrics
from aod_ops.jsonvalues import (
    canonical_json,
    escape_token,
    first_json_value,
    is_number,
    json_pointer,
    pointer_tokens,
    unescape_token,
)
from aod_ops.metrics import (
    ReferenceIndex,
    compute_metrics,
    distances_to_closest_record,
    diversity,
    exact_match_rate,
    field_overlap,
    leaves,
    percentile,
    reference_self_distances,
    task_success_rate,
    validity,
)


def test_canonical_json_sorts_keys_drops_spaces_and_treats_integral_floats_as_ints() -> None:
    assert canonical_json({"b": 1, "a": [1.0, True, 2.5], "é": None}) == '{"a":[1,true,2.5],"b":1,"é":null}'
    assert metrics.canonical_json is canonical_json  # still importable from here


def test_a_boolean_is_no_number() -> None:
    assert [is_number(v) for v in (1, 2.5, float("inf"), True, "1", None)] == [True] * 3 + [False] * 3


def test_json_pointers_escape_tilde_then_slash() -> None:
    assert escape_token("a/b~c") == "a~1b~0c" and unescape_token("a~1b~0c") == "a/b~c"
    assert unescape_token("~01") == "~1"  # "~0" then "1": the tilde is undone last
    assert json_pointer(["engine", "a/b", 0]) == "/engine/a~1b/0" and json_pointer([]) == ""
    assert pointer_tokens("/engine/a~1b/0") == ["engine", "a/b", "0"] and pointer_tokens("") == []


@pytest.mark.parametrize(
    ("text", "openers", "expected"),
    [
        ('noise {"a": [1, 2]} trailing {"b": 1}', "{", {"a": [1, 2]}),
        ("[1, 2] {", "{[", [1, 2]),
        ("[1, 2] {", "{", None),  # the object from the first "{" does not parse
        ('{"a": ', "{", None),
        ("no json", "{[", None),
        ("[" * 5000, "{[", None),  # too deep for the parser
        ('{"a": ' + "9" * 5000 + "}", "{", None),  # an integer too long to read
    ],
)
def test_first_json_value_is_none_for_anything_unreadable(text: str, openers: str, expected: object) -> None:
    assert first_json_value(text, openers) == expected


def test_leaves_are_addressed_by_escaped_json_pointers() -> None:
    value = {"a": {"b/c": 1, "d~": [True, {}]}, "e": []}
    # "/" is escaped as ~1 and "~" as ~0 (RFC 6901); empty containers are leaves themselves.
    assert leaves(value) == {"/a/b~1c": 1, "/a/d~0/0": True, "/a/d~0/1": {}, "/e": []}
    assert leaves(5) == {"": 5}


def test_validity_is_the_share_of_valid_candidates() -> None:
    assert validity([True, False, True, True]) == 0.75  # 3 of 4
    assert validity([]) == 0.0


def test_task_success_rate_needs_valid_novel_unique_and_critic_approved() -> None:
    reference = [{"a": 1, "b": "x"}]
    records = [
        {"a": 1, "b": "x"},  # valid, but a copy of the reference: not novel
        {"a": 2, "b": "y"},  # valid and novel: success
        {"b": "y", "a": 2.0},  # the same record as the previous one after canonical JSON: duplicate
        {"a": 3, "b": "z"},  # invalid
        {"a": 4, "b": "w"},  # valid and novel: success
    ]
    flags = [True, True, True, False, True]
    # 2 successes of 5 candidates.
    assert task_success_rate(records, flags, reference) == pytest.approx(0.4)
    # The critic rejects the last one: 1 of 5.
    assert task_success_rate(records, flags, reference, [True] * 4 + [False]) == pytest.approx(0.2)
    assert task_success_rate([], [], reference) == 0.0
    with pytest.raises(ValueError, match="critic_passed has 1 entries for 5 records"):
        task_success_rate(records, flags, reference, [True])


def test_field_overlap_counts_leaves_found_at_the_same_pointer_in_any_reference_row() -> None:
    reference = [{"name": "ann", "age": 30, "kind": "a"}, {"name": "bob", "age": 40, "kind": "b"}]
    records = [
        {"name": "ann", "age": 40, "kind": "a"},  # name and age both seen (in different rows): 2/2
        {"name": "cat", "age": 30.0, "kind": "b"},  # age 30.0 == 30: 1/2
        {"name": "dan", "age": 50, "kind": "a"},  # 0/2
        {"kind": "b"},  # only a skipped (enum) leaf: left out of the mean
    ]
    # (1 + 0.5 + 0) / 3 = 0.5
    assert field_overlap(records, reference, skip_leaf=lambda p: p == "/kind") == pytest.approx(0.5)
    # Without skipping, "kind" counts: (3/3 + 2/3 + 1/3 + 1/1) / 4 = 0.75
    assert field_overlap(records, reference) == pytest.approx(0.75)
    assert field_overlap([], reference) == 0.0


def test_field_overlap_keeps_booleans_apart_from_numbers() -> None:
    assert field_overlap([{"v": True}], [{"v": 1}]) == 0.0
    assert field_overlap([{"v": 1.0}], [{"v": 1}]) == 1.0


def test_skip_leaf_is_asked_once_per_pointer() -> None:
    asked: list[str] = []

    def skip(pointer: str) -> bool:
        asked.append(pointer)
        return False

    field_overlap([{"a": 1, "b": 2}] * 10, [{"a": 1}], skip_leaf=skip)
    assert sorted(asked) == ["/a", "/b"]


def test_exact_match_rate_compares_canonical_json() -> None:
    reference = [{"a": 1, "b": [1, 2]}]
    records = [{"b": [1, 2], "a": 1.0}, {"a": 1, "b": [2, 1]}]  # the first is a copy; order in arrays counts
    assert exact_match_rate(records, reference) == 0.5
    assert exact_match_rate([], reference) == 0.0


def test_diversity_of_records_and_fields() -> None:
    records = [{"c": "r", "t": [1, 2]}, {"c": "r", "t": [1, 2]}, {"c": "g", "t": [3]}]
    result = diversity(records)
    assert result.ratio == pytest.approx(2 / 3)  # 2 distinct records of 3
    # /c: {r, g} over 3 values; /t/*: {1, 2, 3} over the 5 values 1, 2, 1, 2, 3.
    assert result.per_field == pytest.approx({"/c": 2 / 3, "/t/*": 3 / 5})
    assert diversity([]).ratio == 0.0


DCR_REFERENCE = [{"x": 0, "c": "a"}, {"x": 10, "c": "b"}]  # /x ranges over 10


def test_dcr_range_normalises_numbers_and_counts_other_leaves_zero_or_one() -> None:
    records = [
        # vs row 0: |2-0|/10 = 0.2 and c equal -> (0.2 + 0) / 2 = 0.1; vs row 1: (0.8 + 1) / 2 = 0.9
        {"x": 2, "c": "a"},
        # vs row 0: min(20/10, 1) = 1, c 1, extra (one side only) 1 -> 3/3; vs row 1: (1 + 0 + 1) / 3
        {"x": 20, "c": "b", "extra": True},
        # a string is not a number: "10" vs 10 differs (1); vs row 1: (1 + 0) / 2 = 0.5
        {"x": "10", "c": "b"},
        # a copy of row 1: 0
        {"x": 10, "c": "b"},
    ]
    distances = distances_to_closest_record(records, DCR_REFERENCE)
    assert distances == pytest.approx([0.1, 2 / 3, 0.5, 0.0])
    # Sorted: 0, 0.1, 0.5, 0.667. Median (0.1 + 0.5) / 2 = 0.3; p5 at rank 0.05 * 3 = 0.15: 0.015.
    assert percentile(distances, 50) == pytest.approx(0.3)
    assert percentile(distances, 5) == pytest.approx(0.015)
    assert percentile(np.zeros(0), 5) is None


def test_dcr_on_a_given_scale_uses_that_range() -> None:
    # Row 0 (x 0) is the nearest; on the reference's own range 10: |2 - 0| / 10 = 0.2 on x, c
    # equal -> 0.1. On a scale whose x spans 0..40, |2 - 0| / 40 = 0.05 -> 0.025.
    record = [{"x": 2, "c": "a"}]
    assert distances_to_closest_record(record, DCR_REFERENCE) == pytest.approx([0.1])
    scale = [*DCR_REFERENCE, {"x": 40, "c": "z"}]
    assert distances_to_closest_record(record, DCR_REFERENCE, scale=scale) == pytest.approx([0.025])


def test_dcr_compares_numbers_zero_or_one_where_the_reference_range_is_zero() -> None:
    assert distances_to_closest_record([{"x": 6}, {"x": 5}], [{"x": 5}, {"x": 5}]) == pytest.approx([1, 0])


def test_reference_self_distances_leave_each_row_out() -> None:
    # /x ranges over 10: 0 and 1 are 0.1 apart, 10 is 0.9 from 1.
    assert reference_self_distances([{"x": 0}, {"x": 1}, {"x": 10}]) == pytest.approx([0.1, 0.1, 0.9])
    assert len(reference_self_distances([{"x": 0}])) == 0


def test_dcr_blocks_and_reference_sampling() -> None:
    rng = random.Random(3)
    reference = [{"x": rng.random(), "c": rng.choice("abc")} for _ in range(50)]
    records = [{"x": rng.random(), "c": rng.choice("abcd")} for _ in range(30)]
    whole = distances_to_closest_record(records, reference)
    # Small blocks of the distance matrix give the same answer as one block.
    saved = metrics._DCR_BLOCK_CELLS
    metrics._DCR_BLOCK_CELLS = 60  # 60 // 50 rows = blocks of one record
    try:
        assert distances_to_closest_record(records, reference) == pytest.approx(whole)
    finally:
        metrics._DCR_BLOCK_CELLS = saved
    # A sample of the reference can only leave records as far or farther from it; it is repeatable.
    sampled = distances_to_closest_record(records, reference, max_reference=10)
    assert np.all(sampled >= whole - 1e-6)
    assert np.any(sampled > whole + 1e-6)
    assert distances_to_closest_record(records, reference, max_reference=10) == pytest.approx(sampled)


def test_compute_metrics_reports_every_design_metric() -> None:
    reference = [{"name": "ann", "age": 30}, {"name": "bob", "age": 40}]
    records = [
        {"name": "ann", "age": 30},  # exact copy
        {"name": "cid", "age": 35},  # novel
        {"name": "cid", "age": 35},  # duplicate of the previous
        None,  # did not parse
        {"name": "dee", "age": 40},  # novel; age copied
    ]
    flags = [True, True, True, False, True]
    result = compute_metrics(records, flags, reference, forwards=32, seconds=2.5)
    values = result.as_dict()
    assert values["candidates"] == 5
    assert values["valid"] == 4
    assert values["validity"] == pytest.approx(0.8)  # 4 / 5
    assert values["tsr"] == pytest.approx(0.4)  # cid (first) and dee: 2 / 5
    # Valid records: ann/30 2/2, cid/35 0/2, cid/35 0/2, dee/40 1/2 -> (1 + 0 + 0 + 0.5) / 4
    assert values["field_overlap"] == pytest.approx(0.375)
    assert values["exact_match_rate"] == pytest.approx(0.25)  # 1 of 4 valid
    assert values["diversity"] == pytest.approx(0.75)  # 3 distinct of 4 valid
    assert values["field_diversity"] == pytest.approx({"/age": 0.75, "/name": 0.75})
    # DCR (age range 10): ann 0; cid vs ann (1 + 0.5) / 2 = 0.75, vs bob 0.75 -> 0.75 twice;
    # dee vs bob (1 + 0) / 2 = 0.5. Sorted 0, 0.5, 0.75, 0.75: median 0.625, p5 at rank 0.15 -> 0.075.
    assert values["dcr_median"] == pytest.approx(0.625)
    assert values["dcr_p5"] == pytest.approx(0.075)
    assert values["records_per_s"] == pytest.approx(2.0)  # 5 candidates in 2.5 s
    assert values["forwards_per_valid_record"] == pytest.approx(8.0)  # 32 / 4


def test_compute_metrics_leaves_undefined_figures_empty() -> None:
    result = compute_metrics([None], [False], [{"a": 1}])
    assert (result.validity, result.tsr, result.field_overlap, result.diversity) == (0.0, 0.0, 0.0, 0.0)
    assert (result.dcr_p5, result.dcr_median, result.records_per_s) == (None, None, None)
    assert result.forwards_per_valid_record is None
    assert ReferenceIndex.of(ReferenceIndex.of([{"a": 1}])).canonical == frozenset({'{"a":1}'})


def test_a_reference_index_is_made_once_and_completed_with_sensitive_columns() -> None:
    reference = [{"ssn": "123 45", "age": 30.0, "tags": ["a"]}, {"ssn": None, "age": 130}, "not a record"]
    index = ReferenceIndex.of(reference)
    assert ReferenceIndex.of(index) is index and ReferenceIndex.of(index, ["ssn"]) is not index
    assert index.has_leaf("/age", 30) and index.has_leaf("/tags/0", "a")
    assert not index.has_leaf("/age", True) and not index.has_leaf("/tags", "a")
    both = ReferenceIndex.of(ReferenceIndex.of(index, ["ssn"]), ["ssn", "age"])
    assert both.values_by_pointer is index.values_by_pointer  # the rows are not indexed again
    assert ReferenceIndex.of(both, ["age"]) is both
    # Equal: canonical JSON of the whole value (the privacy gates, the judge); null never counts.
    assert both.copies_sensitive({"ssn": "123 45"}, "ssn") and both.copies_sensitive({"age": 30}, "age")
    assert not both.copies_sensitive({"ssn": " 123  45"}, "ssn") and not both.copies_sensitive(
        {"ssn": None}, "ssn"
    )
    # Near (the scorecard): folded text, numbers within 1e-6 of the range (100); "" never counts.
    assert both.copies_sensitive({"ssn": " 123  45"}, "ssn", near=True)
    assert both.copies_sensitive({"age": 30.00005}, "age", near=True)
    assert not both.copies_sensitive({"age": 30.001}, "age", near=True)
    assert not both.copies_sensitive({"ssn": ""}, "ssn", near=True) and not both.copies_sensitive(5, "ssn")
    with pytest.raises(KeyError):
        index.copies_sensitive({"ssn": "123 45"}, "ssn")  # not indexed as sensitive


def test_compute_metrics_is_fast_for_ten_thousand_records_against_a_thousand() -> None:
    rng = random.Random(1)

    def car() -> dict[str, object]:
        return {
            "name": f"{rng.choice(['ford', 'vw', 'fiat'])} {rng.randint(0, 500)}",
            "mpg": round(rng.uniform(9, 46), 1),
            "cylinders": rng.choice([4, 6, 8]),
            "weight": rng.randint(1600, 5100),
            "origin": rng.choice(["US", "EU", "JP"]),
            "tags": [rng.choice("abc") for _ in range(rng.randint(0, 3))],
        }

    reference = [car() for _ in range(1000)]
    records = [car() for _ in range(10_000)]
    started = time.perf_counter()
    result = compute_metrics(records, [True] * len(records), reference)
    assert time.perf_counter() - started < 20  # about 2 s on two shared cores
    assert result.valid == 10_000
    assert result.dcr_p5 is not None and result.dcr_median is not None
    assert 0 < result.dcr_p5 < result.dcr_median
