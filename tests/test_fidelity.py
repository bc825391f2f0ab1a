"""Fidelity, privacy and reward (``aod_ops.fidelity``) on the example partitions' real rows.

Nothing is mocked: every table is scored against real held-out rows, and the calibration tests
check the contract of docs/architecture.md: held-out real rows score best, copies of the reference fail the
privacy gate, and uniform random values in the schema's ranges score low.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import string
from pathlib import Path
from typing import Any

import pytest

from aod_ops.fidelity import Scorecard, Yardstick, column_feedback, table_reward
from aod_ops.metrics import ReferenceIndex
from aod_ops.rules import parse_rules
from aod_ops.schema import LoadedSchema, load_schema
from aod_ops.spec import Partition, load_reference, load_spec

SPEC = Path(__file__).resolve().parent.parent / "examples" / "partitions.yaml"
NAMES = ("cars", "airports", "la-riots", "seattle-weather")


@pytest.fixture(scope="module")
def partitions() -> dict[str, Partition]:
    return {p.name: p for p in load_spec(SPEC).partitions}


@pytest.fixture(scope="module")
def yardsticks(partitions: dict[str, Partition]) -> dict[str, Yardstick]:
    return {name: Yardstick.for_partition(partitions[name]) for name in NAMES}


def random_table(schema: LoadedSchema, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` valid records of uniform random values: numbers within the schema's bounds, enum
    options, dates in 1900-2100, random letters for strings (upper case and digits where a
    pattern asks for codes); a record that misses a pattern is drawn again."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    while len(records) < n:
        record: dict[str, Any] = {}
        for name, prop in schema.contents["properties"].items():
            if "enum" in prop:
                record[name] = rng.choice(prop["enum"])
            elif prop.get("type") == "integer":
                record[name] = rng.randint(int(prop["minimum"]), int(prop["maximum"]))
            elif prop.get("type") == "number":
                record[name] = round(rng.uniform(prop["minimum"], prop["maximum"]), 3)
            elif prop.get("format") == "date":
                day = dt.date(1900, 1, 1) + dt.timedelta(days=rng.randrange(365 * 200))
                record[name] = day.isoformat()
            else:
                letters = (
                    string.ascii_uppercase + string.digits if "pattern" in prop else string.ascii_letters
                )
                length = rng.randint(prop.get("minLength", 1), min(prop.get("maxLength", 20), 20))
                record[name] = "".join(rng.choice(letters) for _ in range(length))
        if not schema.errors(record):
            records.append(record)
    return records


def shuffled_text(records: list[dict[str, Any]], columns: list[str], seed: int) -> list[dict[str, Any]]:
    """The records with the characters of each named column's value shuffled (valid garbage)."""
    rng = random.Random(seed)
    out = []
    for record in records:
        record = dict(record)
        for column in columns:
            chars = list(record[column])
            rng.shuffle(chars)
            record[column] = "".join(chars)
        out.append(record)
    return out


# -- calibration on every example partition ------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_held_out_rows_beat_random_values_and_reference_copies(
    name: str, yardsticks: dict[str, Yardstick], partitions: dict[str, Partition]
) -> None:
    yardstick = yardsticks[name]
    baseline = yardstick.baseline()
    assert baseline.rows == len(yardstick.baseline_rows)
    assert table_reward(baseline, baseline) >= 0.9
    # Real rows against real rows: the detector does no better than chance, nothing is copied.
    assert baseline.detection_auc < 0.7
    assert baseline.exact_match_rate == 0.0
    # Distances to the reference and to the yardstick on one scale, over ten halvings of the
    # held-out rows: unseen real rows are no closer to the reference (each side on its own
    # range, cars scored 0.78 and la-riots 0.62; on one halving only, airports 0.86).
    assert baseline.dcr_protection >= 0.9

    reference = yardstick.score(load_reference(partitions[name]))
    assert reference.exact_match_rate == 1.0
    assert table_reward(reference, baseline) <= 0.1

    noise = yardstick.score(random_table(yardstick.schema, 200, seed=1))
    assert noise.validity == 1.0
    assert table_reward(noise, baseline) < 0.4
    assert table_reward(baseline, baseline) > table_reward(noise, baseline)
    assert baseline.quality > noise.quality
    assert baseline.detection_auc < noise.detection_auc


@pytest.mark.parametrize("name", ["cars", "seattle-weather"])
def test_a_small_batch_is_read_against_as_many_real_rows(name: str, yardsticks: dict[str, Yardstick]) -> None:
    yardstick = yardsticks[name]
    small = yardstick.baseline(16)
    assert small.rows == 16
    assert yardstick.baseline(16) is small  # cached per size
    assert yardstick.baseline(10_000).rows == len(yardstick.baseline_rows)
    batch = yardstick.score(random_table(yardstick.schema, 16, seed=2))
    assert table_reward(small, small) >= 0.9
    assert table_reward(batch, small) < 0.4


# -- column kinds and shapes -------------------------------------------------------------------

KINDS_SCHEMA = {
    "type": "object",
    "properties": {
        "flag": {"type": "boolean"},
        "color": {"enum": ["red", "green", "blue"]},
        "size": {"type": "number"},
        "maybe": {"type": ["number", "null"]},
        "day": {"type": "string", "format": "date"},
        "seen": {"type": "string", "format": "date-time"},
        "grade": {"type": "string"},
        "comment": {"type": "string"},
        "owner": {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1},
    },
    "required": ["flag", "color", "size", "maybe", "day", "seen", "grade", "comment", "owner", "tags"],
}


def kinds_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "flag": rng.random() < 0.5,
            "color": rng.choice(["red", "green", "blue"]),
            "size": round(rng.gauss(10, 2), 2),
            "maybe": None if rng.random() < 0.2 else rng.random(),
            "day": (dt.date(2020, 1, 1) + dt.timedelta(days=rng.randrange(300))).isoformat(),
            "seen": f"2021-03-{rng.randint(10, 28)}T{rng.randint(10, 23)}:00:00Z",
            "grade": rng.choice("ABCD"),
            "comment": " ".join(rng.choice(["good", "bad", "fine", "late", "early"]) for _ in range(4))
            + f" #{rng.randrange(10_000)}",
            "owner": {"age": rng.randint(20, 70)},
            "tags": [rng.choice(["x", "y"])],
        }
        for _ in range(n)
    ]


def test_column_kinds_come_from_the_schema_then_the_values() -> None:
    yardstick = Yardstick(load_schema(KINDS_SCHEMA), kinds_rows(40, 0), kinds_rows(40, 1))
    card = yardstick.baseline()
    kinds = {c.pointer: (c.kind, c.metric) for c in card.columns}
    assert kinds == {
        "/flag": ("categorical", "TVComplement"),
        "/color": ("categorical", "TVComplement"),
        "/size": ("numerical", "KSComplement"),
        "/maybe": ("numerical", "KSComplement"),
        "/day": ("datetime", "KSComplement"),
        "/seen": ("datetime", "KSComplement"),
        "/grade": ("categorical", "TVComplement"),  # a free string, but four repeating values
        "/comment": ("text", "text"),
        "/owner/age": ("numerical", "KSComplement"),
        "/tags/0": ("categorical", "TVComplement"),
    }
    text = next(c for c in card.columns if c.kind == "text")
    assert text.score is None and text.auc is not None
    assert all(0.0 <= c.score <= 1.0 for c in card.columns if c.score is not None)
    assert card.detection_auc_text is not None and card.detection_auc_other is not None
    json.dumps(card.as_dict())


def test_a_schema_without_free_text_has_no_text_detection(yardsticks: dict[str, Yardstick]) -> None:
    card = yardsticks["seattle-weather"].baseline()
    assert card.detection_auc_text is None
    assert card.detection_auc_other == card.detection_auc


# -- detection -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cars", "la-riots"])
def test_detection_tells_garbage_text_from_real_text(name: str, yardsticks: dict[str, Yardstick]) -> None:
    yardstick = yardsticks[name]
    baseline = yardstick.baseline()
    texts = [c.pointer.lstrip("/") for c in baseline.columns if c.kind == "text"]
    garbage = yardstick.score(shuffled_text(yardstick.baseline_rows, texts, seed=0))
    assert garbage.validity == 1.0
    assert garbage.detection_auc_text is not None and baseline.detection_auc_text is not None
    assert baseline.detection_auc_text < 0.7
    assert garbage.detection_auc_text > 0.9
    # The same rows otherwise: the reward drops with the text alone.
    assert table_reward(garbage, baseline) < 0.75 * table_reward(baseline, baseline)


# -- privacy ---------------------------------------------------------------------------------


def test_dcr_protection_is_high_for_real_rows_and_low_for_noisy_copies(
    partitions: dict[str, Partition],
) -> None:
    cars = partitions["cars"]
    reference = load_reference(cars)[:50]
    # A reference as large as the yardstick: every draw holds every copied row.
    yardstick = Yardstick(load_schema(cars.schema_path), reference, load_reference(cars, holdout=True))
    rng = random.Random(0)
    noisy = [dict(r, Acceleration=round(r["Acceleration"] + rng.uniform(-0.05, 0.05), 3)) for r in reference]
    card = yardstick.score(noisy)
    assert card.validity == 1.0
    assert card.dcr_protection < 0.5
    assert yardstick.baseline().dcr_protection > 0.7
    assert card.dcr_p5 is not None and card.dcr_p5 < 0.01


@pytest.mark.parametrize("name", NAMES)
def test_real_rows_the_reference_does_not_hold_are_private(
    name: str, partitions: dict[str, Partition]
) -> None:
    # Real rows of the same table that neither the reference nor the held-out rows hold: the
    # ideal generator's output. Against one fixed halving of the held-out rows, airports' scored
    # 0.83 (below the 0.9 a private table must reach); pooled over ten halvings, cars and
    # airports score 1.0, la-riots 0.96, seattle-weather 0.94.
    partition = partitions[name]
    reference, holdout = load_reference(partition), load_reference(partition, holdout=True)
    unseen = len(holdout) // 2
    yardstick = Yardstick(load_schema(partition.schema_path), reference[:-unseen], holdout)
    assert yardstick.score(reference[-unseen:]).dcr_protection >= 0.9


def test_sensitive_copies_ignore_case_spaces_and_tiny_numeric_differences(
    partitions: dict[str, Partition],
) -> None:
    riots = partitions["la-riots"]
    reference = load_reference(riots)
    yardstick = Yardstick(
        load_schema(riots.schema_path),
        reference,
        load_reference(riots, holdout=True),
        sensitive=["first_name", "longitude"],
    )
    longitudes = [r["longitude"] for r in reference]
    spread = max(longitudes) - min(longitudes)
    fresh = {"first_name": "Zebulon", "longitude": -117.6}
    assert yardstick.score([dict(reference[0], **fresh)]).sensitive_copies == 0.0
    copies = [
        dict(reference[0], **{**fresh, "first_name": "  " + reference[1]["first_name"].upper() + " "}),
        dict(reference[0], **{**fresh, "longitude": reference[2]["longitude"] + 1e-8 * spread}),
        dict(reference[0], **{**fresh, "longitude": reference[2]["longitude"] + 1e-3 * spread}),
    ]
    card = yardstick.score(copies)
    assert card.validity == 1.0
    assert card.sensitive_copies == pytest.approx(2 / 3)
    # The same reference, indexed beforehand (as the judge's), is not indexed again.
    index = ReferenceIndex.of(reference, ["first_name", "longitude"])
    shared = Yardstick(load_schema(riots.schema_path), index, None, sensitive=["first_name", "longitude"])
    assert shared.reference_index is index and shared.reference == reference


def test_rule_violations_are_counted_and_named(yardsticks: dict[str, Yardstick]) -> None:
    yardstick = yardsticks["seattle-weather"]
    rows = [dict(r) for r in yardstick.baseline_rows]
    swapped = [r for r in rows if r["temp_min"] < r["temp_max"]][:5]
    for row in swapped:
        row["temp_min"], row["temp_max"] = row["temp_max"], row["temp_min"]
    card = yardstick.score(rows)
    assert card.rule_violations == pytest.approx(5 / len(rows))
    assert card.broken_rules[0].startswith(f"temp_min above temp_max in 5 of {len(rows)} records")
    feedback = column_feedback(card)
    assert feedback[-1] == card.broken_rules[0]
    assert table_reward(card, yardstick.baseline()) < table_reward(yardstick.baseline(), yardstick.baseline())


def test_a_table_without_a_valid_record_still_gets_a_scorecard(yardsticks: dict[str, Yardstick]) -> None:
    yardstick = yardsticks["cars"]
    card = yardstick.score([{"Name": 3}, "not a record", None], repair_rate=0.5)
    assert isinstance(card, Scorecard)
    assert (card.rows, card.validity, card.tsr, card.quality, card.column_shapes) == (3, 0.0, 0.0, 0.0, 0.0)
    assert card.detection_auc == card.detection_auc_text == card.detection_auc_other == 1.0
    assert card.dcr_p5 is None and card.dcr_median is None and card.columns == ()
    assert table_reward(card, yardstick.baseline()) == 0.0
    assert column_feedback(card) == []
    assert json.loads(json.dumps(card.as_dict()))["repair_rate"] == 0.5


def test_without_a_holdout_the_reference_is_split(partitions: dict[str, Partition]) -> None:
    cars = partitions["cars"]
    reference = load_reference(cars)
    yardstick = Yardstick(
        load_schema(cars.schema_path), reference, None, parse_rules(["Displacement >= 15 * Cylinders"])
    )
    assert yardstick.source == "reference"
    assert len(yardstick.baseline_rows) + len(yardstick.yardstick_rows) == len(reference)
    baseline = yardstick.baseline()
    # The baseline rows are measured against the half they were not drawn from.
    assert baseline.exact_match_rate == 0.0
    assert table_reward(baseline, baseline) >= 0.9
    assert table_reward(yardstick.score(reference), baseline) <= 0.1


# -- feedback --------------------------------------------------------------------------------


def test_column_feedback_names_the_worst_numeric_column_with_numbers(
    yardsticks: dict[str, Yardstick],
) -> None:
    yardstick = yardsticks["cars"]
    rng = random.Random(0)
    rows = [dict(r, Horsepower=rng.randint(230, 250)) for r in yardstick.baseline_rows]
    card = yardstick.score(rows)
    worst = min((c for c in card.columns if c.score is not None), key=lambda c: c.score or 0.0)
    assert worst.pointer == "/Horsepower"
    assert worst.score is not None and worst.score < 0.2
    feedback = column_feedback(card, limit=3)
    assert feedback[0] == worst.detail
    assert feedback[0].startswith("Horsepower: table median 2")
    assert re.search(r"\d+ of \d+ values above \d+", feedback[0])
    assert len(feedback) <= 3
    assert table_reward(card, yardstick.baseline()) < table_reward(yardstick.baseline(), yardstick.baseline())
