"""Value guides: legal numbers, deriving and drawing guides, rules, and guided generation."""

from __future__ import annotations

import json
import math
import random
import statistics
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aod_ops.agents.prompt import Prompt
from aod_ops.dlm.denoiser import Denoiser
from aod_ops.dlm.derive import derive_guides
from aod_ops.dlm.field_guides import CategoryGuide, DateGuide, NumberGuide, SeasonGuide
from aod_ops.dlm.generate import Candidate, DecodingSettings, Generator
from aod_ops.dlm.guides import Guides
from aod_ops.dlm.legal import WordPrior
from aod_ops.dlm.models import load_denoiser, tiny_random_denoiser
from aod_ops.dlm.numbers import NumberRange, grid_bounds, number_complete_ok, number_prefix_ok
from aod_ops.dlm.prompting import render_prompt
from aod_ops.dlm.text import TextGuide, text_shape
from aod_ops.errors import DataError
from aod_ops.rules import parse_rules
from aod_ops.schema import compile_schema, load_schema
from aod_ops.schema.nodes import NumberNode
from aod_ops.schema.patterns import full_match, partial_match
from aod_ops.spec import load_reference, load_spec

EXAMPLES = Path(__file__).parent.parent / "examples"
FAST = DecodingSettings(steps=4, temperature=1.0)


@pytest.fixture(scope="module")
def den() -> Denoiser:
    return tiny_random_denoiser()


def _partition(name: str) -> tuple[Any, Any, list[dict[str, Any]]]:
    part = load_spec(EXAMPLES / "partitions.yaml").select(name)[0]
    return part, load_schema(part.schema_path), load_reference(part)


def _guides(name: str) -> Guides:
    part, schema, reference = _partition(name)
    return derive_guides(compile_schema(schema).root, reference, part.rules)


# -- legal numbers ------------------------------------------------------------------------------


def _legal(low: int, high: int, decimals: int) -> set[str]:
    """Every JSON text of every number of units in [low, high], by brute force."""
    scale = 10**decimals
    out = set()
    for v in range(low, high + 1):
        whole, frac = divmod(abs(v), scale)
        sign = "-" if v < 0 else ""
        for digits in range(decimals + 1):
            if frac % 10 ** (decimals - digits):
                continue
            text = sign + str(whole)
            if digits:
                text += "." + str(frac // 10 ** (decimals - digits)).rjust(digits, "0")
            out.add(text)
    return out


WINDOWS = st.tuples(st.integers(-300, 300), st.integers(0, 400), st.integers(0, 2)).map(
    lambda t: (t[0], t[0] + t[1], t[2])
)


@settings(max_examples=150, deadline=None)
@given(window=WINDOWS, probes=st.lists(st.text("-0123456789.", max_size=6), max_size=30))
def test_number_prefix_and_complete_checks_agree_with_brute_force(
    window: tuple[int, int, int], probes: list[str]
) -> None:
    low, high, decimals = window
    scale = 10**decimals
    lo, hi = low / scale, high / scale
    integer = decimals == 0
    legal = _legal(low, high, decimals)
    prefixes = {s[:n] for s in legal for n in range(len(s) + 1)}
    for text in {*probes, *list(prefixes)[:200], "", "-", "0", "-0", "00", "1.", "-.5"}:
        assert number_prefix_ok(text, lo, hi, integer, decimals) == (text in prefixes), text
        assert number_complete_ok(text, lo, hi, integer, decimals) == (text in legal), text
    assert NumberRange.of(lo, hi, integer, decimals).width == max(len(s) for s in legal)


def test_number_range_completes_a_legal_prefix_and_refuses_bad_syntax() -> None:
    weight = NumberRange.of(2700, 2900, True, 0)
    assert weight.complete("2") == "2700" and weight.complete("29") == "2900"
    assert weight.complete("") == "2700"
    assert not number_prefix_ok("29", 2700, 2899, True, 0)
    assert not number_prefix_ok("2.", 0, 5, True, 0)  # an integer has no fraction
    assert number_prefix_ok("2.", 0, 5, False, 1) and not number_complete_ok("2.", 0, 5, False, 1)
    assert not number_complete_ok("2.25", 0, 5, False, 1)  # too many decimals
    assert not number_prefix_ok("-0", 0, 5, False, 1)  # only a negative fraction starts with -0
    assert number_prefix_ok("-0", -0.5, 5, False, 1) and not number_complete_ok("-0", -1, 5, True, 0)
    assert not number_prefix_ok("1e5", 0, 10**6, True, 0)


# -- deriving and drawing -----------------------------------------------------------------------


def test_cars_guides_hold_quantiles_categories_and_a_positive_definite_copula() -> None:
    guides = _guides("cars")
    weight = guides.field("/Weight_in_lbs")
    assert isinstance(weight, NumberGuide) and weight.integer and weight.decimals == 0
    assert (weight.minimum, weight.maximum) == (1500, 5500)
    assert 1500 <= weight.quantiles[0] < 2200 and 4500 < weight.quantiles[-1] <= 5500
    mpg = guides.field("/Miles_per_Gallon")
    assert isinstance(mpg, NumberGuide) and not mpg.integer and mpg.decimals == 1
    cylinders = guides.field("/Cylinders")
    assert isinstance(cylinders, CategoryGuide) and cylinders.choice
    assert cylinders.categories == (3, 4, 5, 6, 8)  # numeric options in value order
    assert (
        abs(sum(cylinders.frequencies) - 1) < 1e-9 and max(cylinders.frequencies) == cylinders.frequencies[1]
    )
    name = guides.field("/Name")  # a free string with as many values as rows: free text
    real = _partition("cars")[2][0]["Name"]
    assert isinstance(name, TextGuide) and real not in name.shapes  # shapes, not values
    assert text_shape(real, name.slack) in name.shapes and abs(sum(name.frequencies) - 1) < 1e-9
    first = {w: n for w, n, _ in name.words}
    assert max(first, key=first.__getitem__) == "ford"  # the commonest make, a first word
    names = [f.pointer for f in guides.fields]
    corr = {(a, b): guides.correlation[i][j] for i, a in enumerate(names) for j, b in enumerate(names)}
    assert corr[("/Weight_in_lbs", "/Horsepower")] > 0.7
    assert corr[("/Weight_in_lbs", "/Cylinders")] > 0.6
    assert corr[("/Weight_in_lbs", "/Miles_per_Gallon")] < -0.7
    assert [b.left for b in guides.bounds] == ["/Displacement"]


def test_seattle_dates_are_guided_as_ordinal_days() -> None:
    guides = _guides("seattle-weather")
    when = guides.field("/date")
    assert isinstance(when, DateGuide)
    assert date.fromordinal(int(when.quantiles[0])).year == 2012
    assert date.fromordinal(int(when.quantiles[-1])).year == 2015


def test_category_shares_add_a_pseudo_count_to_the_categories_the_reference_holds_only() -> None:
    schema = load_schema(
        {
            "type": "object",
            "properties": {
                "state": {"type": "string"},
                "tier": {"enum": ["gold", "silver", "bronze"]},
            },
        }
    )
    rows = [{"state": "WA" if i < 57 else "OR", "tier": "gold" if i % 2 else "silver"} for i in range(60)]
    guides = derive_guides(compile_schema(schema).root, rows)
    state, tier = guides.field("/state"), guides.field("/tier")
    assert isinstance(state, CategoryGuide) and isinstance(tier, CategoryGuide)
    # 57 and 3 of 60 rows: a rare category weighs a little more than its raw share (3/60).
    assert state.categories == ("WA", "OR")
    assert state.frequencies == pytest.approx((59 / 64, 5 / 64))
    # The option no row holds is never drawn.
    assert dict(zip(tier.categories, tier.frequencies, strict=True)) == pytest.approx(
        {"gold": 0.5, "silver": 0.5, "bronze": 0.0}
    )


def test_low_cardinality_strings_are_categories_unless_sensitive() -> None:
    schema = load_schema(
        {
            "type": "object",
            "properties": {
                "state": {"type": "string", "pattern": "^[A-Z]{2}$"},
                "city": {"type": "string"},
            },
        }
    )
    rows = [{"state": ["WA", "OR", "CA"][i % 3], "city": f"town {i}"} for i in range(60)]
    root = compile_schema(schema).root
    guides = derive_guides(root, rows)
    state = guides.field("/state")
    assert (
        isinstance(state, CategoryGuide) and not state.choice and set(state.categories) == {"WA", "OR", "CA"}
    )
    city = guides.field("/city")  # 60 distinct values: free text, with its words
    assert isinstance(city, TextGuide) and ("town", 60, 0) in city.words
    hidden = derive_guides(root, rows, sensitive=["state", "city"])
    assert hidden.field("/state") is None  # never a category (and its pattern says its shape)
    city = hidden.field("/city")
    assert isinstance(city, TextGuide) and not city.words  # its shapes only: its words stay unseen


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.sampled_from("abcXYZ019 -.()'&é"), min_size=1, max_size=30), st.sampled_from([1, 6])
)
def test_a_value_has_the_shape_it_gives(value: str, slack: int) -> None:
    assert full_match(text_shape(value, slack), value)


def test_a_shape_keeps_kinds_and_short_runs_and_frees_long_words() -> None:
    assert text_shape("fiat 124 tc") == "[a-z]{3,5} [0-9]{2,4} [a-z]{2}"
    assert text_shape("dodge colt (sw)", 6) == r"[a-z]{2,11} [a-z]{2,10} \([a-z]{2}\)"
    assert full_match(text_shape("Cesar A."), "Abcde B.") and not full_match(
        text_shape("Cesar A."), "abcde B."
    )


def test_the_word_prior_leads_to_unused_reference_words_by_position() -> None:
    by_text = {t: [i] for i, t in enumerate(["f", "fo", "ford", " f", " ford", " pinto", "p", " p", "pinto"])}
    ids = {t: i for i, t in enumerate(["f", "fo", "ford", " f", " ford", " pinto", "p", " p", "pinto"])}
    prior = WordPrior([("ford", 3, 1), ("pinto", 1, 3)], by_text)
    start = prior.scores("")
    assert start[ids["ford"]] == pytest.approx(math.log(3 / 4))  # first words: ford 3 of 4
    assert start[ids["pinto"]] == pytest.approx(math.log(1 / 4)) and ids[" ford"] not in start
    after = prior.scores("ford")  # ford may end (3 of its 3 first uses); then a later word, not ford again
    assert after[ids[" pinto"]] == pytest.approx(0.0) and ids[" ford"] not in after
    assert prior.scores("zeta") == {}  # no reference word starts so: every token is novel


def test_guides_round_trip_through_json() -> None:
    for name in ("cars", "seattle-weather", "la-riots", "airports"):
        guides = _guides(name)
        again = Guides.from_dict(json.loads(json.dumps(guides.to_dict())))
        assert again == guides
        assert again.draw(random.Random(4)) == guides.draw(random.Random(4))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format=9), "format must be 1"),
        (lambda d: d.update(extra=1), "unknown keys"),
        (lambda d: d["fields"][1].update(kind="word"), "kind must be one of number, date, season, category"),
        (lambda d: d["fields"][1].update(quantiles=[3, 2]), "non-decreasing"),
        (lambda d: d["fields"][1].update(decimals=9), "decimals must be an integer"),
        (lambda d: d["fields"][1].pop("integer"), "expected the keys"),
        (lambda d: d["fields"][2].update(frequencies=[0.5] * 5), "sum to 1"),
        (
            lambda d: d["fields"][0]["shapes"].__setitem__(0, "[a-"),
            "every shape must be a regular expression",
        ),
        (lambda d: d["fields"][0].update(words=[["ford", 1]]), "words must be"),
        (lambda d: d["fields"][0].update(chars='" '), "chars must be printable"),
        (lambda d: d["fields"][0].update(frequencies=[1.0]), "one per frequency"),
        (lambda d: d["fields"][0].update(taken=["ford pinto"]), "taken must be a list of value digests"),
        (lambda d: d.update(correlation=d["correlation"][:-1]), "correlation must be"),
        (lambda d: d["correlation"][0].__setitem__(1, 0.3), "symmetric"),
        (lambda d: d["bounds"][0].update(op="=="), "one of"),
        (lambda d: d["bounds"][0].update(right="/nowhere"), "two guided fields"),
        (lambda d: d.update(prior=1.5), "prior must be between"),
        (lambda d: d.update(bins=0), "bins must be at least 1"),
    ],
)
def test_malformed_guides_are_refused_naming_the_problem(change: Any, message: str) -> None:
    data = _guides("cars").to_dict()
    change(data)
    with pytest.raises(DataError, match=message):
        Guides.from_dict(data)


def test_a_singular_correlation_is_refused() -> None:
    data = _guides("seattle-weather").to_dict()
    n = len(data["correlation"])
    data["correlation"] = [[1.0] * n for _ in range(n)]
    with pytest.raises(DataError, match="not positive definite"):
        Guides.from_dict(data)


def test_draws_are_windows_inside_the_bounds_that_follow_the_quantiles() -> None:
    guides = _guides("cars")
    weight = guides.field("/Weight_in_lbs")
    assert isinstance(weight, NumberGuide)
    mids = []
    for seed in range(400):
        lo, hi = guides.draw(random.Random(seed)).windows["/Weight_in_lbs"]
        assert 1500 <= lo <= hi <= 5500 and lo == int(lo) and hi == int(hi)
        assert hi - lo < 1200
        mids.append((lo + hi) / 2)
    q25, q50, q75 = statistics.quantiles(weight.quantiles, n=4)
    assert abs(statistics.median(mids) - q50) < (q75 - q25) / 4
    assert guides.draw(random.Random(7)) == guides.draw(random.Random(7))


def test_settled_windows_keep_the_rules() -> None:
    seattle = _guides("seattle-weather")
    for seed in range(300):
        windows = seattle.draw(random.Random(seed)).settle({})
        assert windows["/temp_min"][1] <= windows["/temp_max"][0], seed
        assert windows["/temp_min"][0] <= windows["/temp_min"][1]
        assert windows["/temp_max"][0] <= windows["/temp_max"][1]
    cars = _guides("cars")
    for seed in range(100):
        draw = cars.draw(random.Random(seed))
        for cylinders in (4, 8):
            lo, hi = draw.settle({"/Cylinders": cylinders})["/Displacement"]
            assert 15 * cylinders <= lo <= hi <= 500


def test_a_strict_rule_between_integers_leaves_a_gap() -> None:
    schema = load_schema(
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        }
    )
    rows = [{"a": i % 10, "b": (i * 7) % 10} for i in range(50)]
    guides = derive_guides(compile_schema(schema).root, rows, parse_rules(["a < b - 2"]))
    for seed in range(200):
        windows = guides.draw(random.Random(seed)).settle({})
        assert windows["/a"][1] < windows["/b"][0] - 2


# -- guided generation --------------------------------------------------------------------------


def _in_window(guides: Guides, candidate: Candidate, decided: dict[str, Any]) -> dict[str, bool]:
    windows = guides.draw(random.Random(candidate.seed)).settle(decided)
    record = candidate.record
    assert isinstance(record, dict)
    out = {}
    for pointer, (lo, hi) in windows.items():
        value = record[pointer[1:]]
        if isinstance(value, str):
            value = date.fromisoformat(value).toordinal()
        out[pointer] = lo <= value <= hi
    return out


def _guided(den: Denoiser, name: str) -> tuple[Generator, Guides, list[dict[str, Any]], list[Candidate]]:
    """A partition's generator, guides and reference, and 64 guided candidates (seeds 0-63)."""
    part, schema, reference = _partition(name)
    generator = Generator(den, schema)
    assert generator.compiled is not None
    guides = derive_guides(generator.compiled.root, reference, part.rules)
    return generator, guides, reference, generator.generate(render_prompt("x"), list(range(64)), FAST, guides)


def test_guided_cars_fall_in_their_windows_and_spread_like_the_reference(den: Denoiser) -> None:
    generator, guides, reference, candidates = _guided(den, "cars")
    assert all(c.valid and c.slots == 7 for c in candidates)
    # Guided numbers are decoded legally; only the free Name may need a pad (the model's end of
    # text first) from a random model.
    assert all(c.repaired <= 1 for c in candidates)
    for c in candidates:
        assert isinstance(c.record, dict)
        assert all(
            _in_window(
                guides, c, {"/Cylinders": c.record["Cylinders"], "/Origin": c.record["Origin"]}
            ).values()
        )
        assert c.record["Displacement"] >= 15 * c.record["Cylinders"]
    # The free-text Name is written in its field's characters as a prefix of the shape drawn for
    # it, and mostly the whole shape (a random model writing a letter a token may run out of
    # tokens first).
    name = guides.field("/Name")
    assert isinstance(name, TextGuide)
    names = [c.record["Name"] for c in candidates if isinstance(c.record, dict)]
    shapes = [guides.draw(random.Random(c.seed)).categories["/Name"] for c in candidates]
    assert all(set(n) <= set(name.chars) and partial_match(p, n) for n, p in zip(names, shapes, strict=True))
    assert sum(full_match(p, n) for n, p in zip(names, shapes, strict=True)) >= len(names) / 2
    # No name is a reference value: the guide holds their digests, not the values.
    real = {" ".join(r["Name"].casefold().split()) for r in reference}
    assert not real & {" ".join(n.casefold().split()) for n in names}
    assert all(r["Name"] not in json.dumps(guides.to_dict()) for r in reference if " " in r["Name"])
    weights = [c.record["Weight_in_lbs"] for c in candidates if isinstance(c.record, dict)]
    q25, _, q75 = statistics.quantiles([r["Weight_in_lbs"] for r in reference], n=4)
    assert q25 <= statistics.median(weights) <= q75
    assert max(weights) - min(weights) > 1000
    # The same seed alone: the same record (a record's draws come from its own seed).
    (alone,) = generator.generate(render_prompt("x"), [5], FAST, guides)
    assert alone.text == candidates[5].text


def test_guided_seattle_keeps_its_rule_and_its_years(den: Denoiser) -> None:
    generator, guides, _, candidates = _guided(den, "seattle-weather")
    assert all(c.valid and c.repaired == 0 for c in candidates)
    for c in candidates:
        assert isinstance(c.record, dict)
        assert c.record["temp_min"] <= c.record["temp_max"]
        assert 2012 <= date.fromisoformat(c.record["date"]).year <= 2015
        assert all(_in_window(guides, c, {}).values())
    unguided = generator.generate(render_prompt("x"), list(range(8)), FAST)
    # A random model cannot write a date: the compiler completes the pattern, and says so.
    assert all(c.valid for c in unguided) and sum(c.repaired for c in unguided) >= 8


def test_guided_categorical_strings_take_reference_values(den: Denoiser) -> None:
    schema = load_schema(
        {
            "type": "object",
            "properties": {"state": {"type": "string", "pattern": "^[A-Z]{2}$"}, "n": {"type": "integer"}},
            "required": ["state", "n"],
            "additionalProperties": False,
        }
    )
    rows = [{"state": ["WA", "WA", "OR", "CA"][i % 4], "n": i} for i in range(80)]
    generator = Generator(den, schema)
    assert generator.compiled is not None
    guides = derive_guides(generator.compiled.root, rows)
    candidates = generator.generate(render_prompt("x"), list(range(32)), FAST, guides)
    states = [c.record["state"] for c in candidates if isinstance(c.record, dict)]
    assert len(states) == 32 and set(states) <= {"WA", "OR", "CA"} and len(set(states)) == 3
    assert all(c.repaired == 0 for c in candidates)
    # A guide for another schema's fields, or of the wrong kind, is ignored.
    state, n = guides.fields
    swapped = replace(guides, fields=(replace(state, pointer="/n"), replace(n, pointer="/state")))
    assert all(c.valid for c in generator.generate(render_prompt("x"), [1, 2], FAST, swapped))


# -- the prompt artifact ------------------------------------------------------------------------


def test_a_prompt_with_guides_round_trips_and_an_old_artifact_loads() -> None:
    guides = _guides("seattle-weather")
    prompt = Prompt("Write a day.", ("{}",), DecodingSettings(order="left_to_right"), guides=guides)
    again = Prompt.from_json(prompt.to_json())
    assert again == prompt and again.guides == guides
    old = {
        "instruction": "Write a car.",
        "exemplars": [],
        "decoding": {"steps": 16, "block_length": 32, "temperature": 0.8, "cache": True, "mode": "skeleton",
                     "max_new_tokens": 160},
        "version": 4,
        "parent": 3,
    }  # fmt: skip
    loaded = Prompt.from_json(json.dumps(old))
    assert loaded.guides is None and loaded.version == 4 and loaded.decoding.order == "confidence"
    assert hash(loaded) != hash(prompt)  # prompts stay hashable with their guides
    broken = json.loads(prompt.to_json())
    broken["guides"]["bins"] = "ten"
    with pytest.raises(DataError, match="not a prompt artifact: guides: bins"):
        Prompt.from_json(json.dumps(broken))
    bad_order = json.loads(prompt.to_json())
    bad_order["decoding"]["order"] = "random"
    with pytest.raises(DataError, match="order must be confidence or left_to_right"):
        Prompt.from_json(json.dumps(bad_order))


@pytest.mark.slow
def test_the_real_model_writes_guided_cars_without_repairs() -> None:
    part, schema, reference = _partition("cars")
    generator = Generator(load_denoiser("aod-smol-dlm"), schema)
    assert generator.compiled is not None
    guides = derive_guides(generator.compiled.root, reference, part.rules)
    prompt = render_prompt("Write one realistic car model record as JSON.")
    candidates = generator.generate(prompt, [0, 1, 2, 3], DecodingSettings(), guides)
    for c in candidates:
        assert c.valid and c.slots == 7 and c.repaired == 0
        assert isinstance(c.record, dict) and c.record["Name"].strip()
        decided = {"/Cylinders": c.record["Cylinders"], "/Origin": c.record["Origin"]}
        assert all(_in_window(guides, c, decided).values())


def test_a_guided_date_keeps_its_season_with_the_temperature() -> None:
    guides = _guides("seattle-weather")
    hot: list[set[int]] = []
    cold: list[set[int]] = []
    for seed in range(300):
        record = guides.draw(random.Random(seed))
        lo, hi = record.windows["/date"]
        days = [d for d in range(int(lo), int(hi) + 1) if record.in_season("/date", d)]
        months = {date.fromordinal(d).month for d in days}
        t_lo, t_hi = record.windows["/temp_max"]
        if t_lo >= 20:
            hot.append(months)
        elif t_hi <= 8:
            cold.append(months)
    assert len(hot) >= 10 and len(cold) >= 10
    # In the reference, 89% of the days at 20 C or more fall between May and September and 97% of
    # those at 8 C or less between November and March; a date guided without its season would
    # land there about 5 times in 12.
    assert sum(m <= {5, 6, 7, 8, 9} for m in hot) >= 0.7 * len(hot)
    assert sum(m <= {11, 12, 1, 2, 3} for m in cold) >= 0.8 * len(cold)


def test_a_date_that_spans_less_than_a_year_has_no_season() -> None:
    guides = _guides("la-riots")
    assert not any(isinstance(f, SeasonGuide) for f in guides.fields)
    assert guides.draw(random.Random(0)).seasons == {}


def test_a_guided_category_stays_with_the_number_it_explains_best() -> None:
    # Airports' state codes explain longitude best: ordered by their mean longitude, a state is
    # drawn with a longitude window near its own (in frequency order the two were unrelated).
    _, _, reference = _partition("airports")
    by_state: dict[str, list[float]] = {}
    for row in reference:
        by_state.setdefault(row["state"], []).append(row["longitude"])
    guides = _guides("airports")
    states, drawn = [], []
    for seed in range(300):
        record = guides.draw(random.Random(seed))
        lo, hi = record.windows["/longitude"]
        states.append(statistics.mean(by_state[record.categories["/state"]]))
        drawn.append((lo + hi) / 2)
    assert statistics.correlation(states, drawn) > 0.8


def test_a_category_that_explains_a_number_places_it_around_the_category_center() -> None:
    # Airports' state explains 0.96 of latitude and 0.97 of longitude: each coordinate's window
    # lies around its own state's mean, so an airport is drawn inside its state, in both
    # coordinates at once (the copula's one ordering of the states could hold only one).
    _, _, reference = _partition("airports")
    guides = _guides("airports")
    for axis in ("latitude", "longitude"):
        guide = guides.field(f"/{axis}")
        assert isinstance(guide, NumberGuide) and guide.placement is not None
        assert guide.placement.on == "/state"
        means = {
            s: statistics.mean(r[axis] for r in reference if r["state"] == s)
            for s in {r["state"] for r in reference}
        }
        offsets = []
        for seed in range(300):
            record = guides.draw(random.Random(seed))
            lo, hi = record.windows[f"/{axis}"]
            assert hi - lo <= guide.placement.spread / 2 + guide.step
            offsets.append((lo + hi) / 2 - means[record.categories["/state"]])
        # Around the center by a normal draw of half the pooled spread.
        assert max(abs(o) for o in offsets) < 2.5 * guide.placement.spread
        assert statistics.pstdev(offsets) == pytest.approx(guide.placement.spread / 2, rel=0.25)
    # A category that explains less leaves the number to the copula (cars' Origin: 0.45 at most).
    assert all(f.placement is None for f in _guides("cars").fields if isinstance(f, NumberGuide))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(on="/city"), "placement must name a guided category field"),
        (lambda p: p.update(centers=p["centers"][:-1]), "one center per category"),
        (lambda p: p.update(spread=0), "spread must be positive"),
        (lambda p: p.pop("spread"), "must be an object with on, centers and spread"),
        (lambda p: p.update(centers=["x"]), "centers must be a list of finite numbers"),
    ],
)
def test_a_malformed_placement_is_refused_naming_its_field(change: Any, message: str) -> None:
    data = _guides("airports").to_dict()
    latitude = next(f for f in data["fields"] if f["pointer"] == "/latitude")
    change(latitude["placement"])
    with pytest.raises(DataError, match=f"field /latitude.*{message}"):
        Guides.from_dict(data)


def test_bounds_near_the_float_limit_stay_themselves_on_any_grid() -> None:
    # 1e308 on a grid of 0.001 would be 1e311 units: past float, where rounding means nothing.
    assert grid_bounds(NumberNode(minimum=-1e308, maximum=1e308), False, 3) == (-1e308, 1e308)
    assert grid_bounds(NumberNode(minimum=0.0004, maximum=2.5), False, 3) == (0.001, 2.5)
