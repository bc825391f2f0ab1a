"""Format patterns, partial/full matching and completion for string slots."""

from __future__ import annotations

import random
import re
import time
from collections import Counter

import jsonschema
import pytest

from aod_ops.schema import patterns
from aod_ops.schema.patterns import (
    FORMAT_PATTERNS,
    GIVE_UP_AFTER,
    UncheckedPattern,
    complete,
    full_match,
    partial_match,
    search,
)

# The nine formats the compiler must generate, and the validator whose checker knows each.
REQUIRED_FORMATS = ["date", "date-time", "time", "email", "uri", "uuid", "ipv4", "ipv6", "hostname"]

# Patterns copied from JSONSchemaBench schemas (Github_* sets), in their full-match form, with the
# length bounds the schemas put beside them.
BENCH_PATTERNS = [
    (r"(?:^[a-z0-9-\.]+$)", 0, None),
    (r"(?:^I[a-z0-f]{40}$)", 0, None),
    (r"(?:^[a-z\d_\.\+-]+@([a-z\d\.-]+\.)+[a-z]+$)", 0, None),
    (r"(?:^sha256:[a-f0-9]{64}$)", 0, None),
    (r"(?:^[a-fA-F0-9]{128}$)", 0, None),
    (r"(?:^AV:[NALP]/AC:[LH]/PR:[NLH]/UI:[NR]/S:[UC]/C:[NLH]/I:[NLH]/A:[NLH]$)", 0, None),
    (r"(?:^pbj:([a-z0-9-]+):([a-z0-9\.-]+):([a-z0-9-]+)?:([a-z0-9-]+):([0-9]+-[0-9]+-[0-9]+)$)", 0, None),
    (r"(?:/api/v1/user_identities/\d+/programs/\d+/applicants_by_cas_id/\d+/designation)", 0, None),
    (r"(?:^[\w\-\./]+\.php+$)", 16, 1024),
    (r".*(?:\.[a-zA-Z]{2,3}$)", 0, None),
    (r"(?:^(https?://)?([\da-z\.-]+)\.([a-z\.]{2,6})([/\w \.-]*)*/?).*", 0, None),
    (
        r"(?:^[A-Za-z0-9\.\-_]{1,100}:([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$)",
        0,
        None,
    ),
    (r"(?:^[0-9]{4}-[0-9]{2}-[0-9]{2}$)", 10, 10),
    (r"(?:[a-zA-Z0-9_-]{162})", 0, None),
    (r"(?:^\+?[1-9]\d{1,14}$)", 0, 16),
]


@pytest.mark.parametrize("name", REQUIRED_FORMATS)
def test_every_required_format_has_a_pattern(name: str) -> None:
    assert name in FORMAT_PATTERNS


@pytest.mark.parametrize("name", sorted(FORMAT_PATTERNS))
def test_format_samples_pass_the_format_checker(name: str) -> None:
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    assert name in checker.checkers, "every pattern is for a format the validator checks"
    for seed in range(40):
        value = complete(FORMAT_PATTERNS[name], "", random.Random(seed))
        assert value is not None
        assert checker.conforms(value, name), f"{name}: {value!r}"
        assert full_match(FORMAT_PATTERNS[name], value)


def test_time_and_date_time_samples_carry_an_offset() -> None:
    for seed in range(20):
        for name in ("time", "date-time"):
            value = complete(FORMAT_PATTERNS[name], "", random.Random(seed))
            assert value is not None
            assert re.search(r"(Z|[+-]\d\d:\d\d)$", value)


def test_partial_and_full_match() -> None:
    date = FORMAT_PATTERNS["date"]
    assert partial_match(date, "")
    assert partial_match(date, "2021-0")
    assert not partial_match(date, "2021-13")
    assert not full_match(date, "2021-0")
    assert full_match(date, "2021-02-03")
    assert not partial_match(date, "2021-02-03x")


def test_bad_pattern_is_no_match() -> None:
    assert not partial_match("(unclosed", "a")
    assert not full_match("(unclosed", "a")
    assert complete("(unclosed", "", random.Random(0)) is None


def test_a_runaway_pattern_is_cut_off_by_the_timeout() -> None:
    started = time.monotonic()
    runaway = r"(a|aa)+b"  # exponential backtracking on a run of a's
    assert not full_match(runaway, "a" * 60)
    assert not partial_match(runaway, "a" * 60 + "c")
    assert complete(runaway + "c", "a" * 60 + "c", random.Random(0)) is None
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(("pattern", "low", "high"), BENCH_PATTERNS)
def test_complete_finds_matches_for_bench_patterns(pattern: str, low: int, high: int | None) -> None:
    started = time.monotonic()
    value = complete(pattern, "", random.Random(1), low, high)
    assert value is not None
    assert full_match(pattern, value)
    assert len(value) >= low and (high is None or len(value) <= high)
    # the full-match form implies JSON Schema's search semantics on the unwrapped pattern
    assert time.monotonic() - started < 2


def test_complete_respects_length_bounds() -> None:
    for seed in range(10):
        value = complete("[a-z]+", "", random.Random(seed), min_length=5, max_length=7)
        assert value is not None and 5 <= len(value) <= 7 and value.isalpha()


def test_complete_gives_none_when_impossible() -> None:
    assert complete("[a-z]{5}", "", random.Random(0), max_length=3) is None
    assert complete("a^b", "", random.Random(0)) is None
    assert complete("[0-9]+", "abc", random.Random(0)) is None  # the prefix is already off


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [
        (".*(?:\\.json)", "report"),
        (FORMAT_PATTERNS["email"], "bob"),
        (FORMAT_PATTERNS["date-time"], "2021-0"),
        (FORMAT_PATTERNS["uuid"], "12ab"),
        ("(?:^[A-Z]{3}-[0-9]{4}$)", "AB"),
    ],
)
def test_complete_extends_a_prefix(pattern: str, prefix: str) -> None:
    value = complete(pattern, prefix, random.Random(0))
    assert value is not None
    assert value.startswith(prefix)
    assert full_match(pattern, value)


def test_complete_keeps_the_tail_short() -> None:
    assert complete(".*(?:\\.json)", "report", random.Random(0)) == "report.json"


def test_complete_is_reproducible_and_varied() -> None:
    pattern = FORMAT_PATTERNS["email"]
    first = [complete(pattern, "", random.Random(seed)) for seed in range(5)]
    again = [complete(pattern, "", random.Random(seed)) for seed in range(5)]
    assert first == again
    assert len(set(first)) > 1


def test_complete_stays_within_its_budget() -> None:
    started = time.monotonic()
    # Every string of up to 10 letters is a partial match and none is a full one: only the
    # budget ends the search.
    assert complete("[a-z]{30}", "", random.Random(0), max_length=10, budget=1500) is None
    assert time.monotonic() - started < 3


def test_search_has_json_schema_pattern_semantics() -> None:
    assert search("[0-9]", "ab7") and search("^ab", "abc") and not search("^ab$", "abc")
    assert search("^(a+)+$", "a" * 200) and not search("^(a+)+$", "a" * 41 + "!")  # re takes minutes


def test_search_fails_a_pattern_that_times_out_and_gives_it_up_after_a_few(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(patterns, "_timeouts", Counter())
    monkeypatch.setattr(patterns, "PATTERN_TIMEOUT_S", 0.01)
    evil = "e" * 40 + "!"
    for _ in range(GIVE_UP_AFTER):
        started = time.monotonic()
        with pytest.raises(
            UncheckedPattern, match=r"^pattern '\^\(e\|e\)\+\$' timed out \(over 0.01 s on a value of 41 "
        ):
            search("^(e|e)+$", evil)
        assert time.monotonic() - started < 1
    # From then on it is not run at all, even on a value it would match at once.
    with pytest.raises(UncheckedPattern, match="timed out 5 times already and is no longer run") as raised:
        search("^(e|e)+$", "e")
    assert raised.value.pattern == "^(e|e)+$"
    assert search("^(f|f)+$", "ff")  # other patterns are unaffected


def test_search_of_a_pattern_the_engine_cannot_compile_is_unchecked() -> None:
    with pytest.raises(UncheckedPattern, match="cannot be compiled"):
        search("(", "x")
