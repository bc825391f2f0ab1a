"""Tests of the value-plausibility measure (bench/plausibility.py, ``bench/dlm_eval.py --plausibility``).

The fast tests check which fields are measured, the context a value is scored after and how the
floors are decided. The slow ones load the real SmolLM2 (the scorer is the causal LM as shipped):
real values of a field score better than random strings of the same lengths, padding a batch
changes no score, and the command line runs end to end with the tiny random DLM writing records.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from aod_ops.fidelity import Yardstick
from aod_ops.spec import Partition, load_spec
from bench import dlm_eval, plausibility
from bench.plausibility import FieldPlausibility, PartitionPlausibility, ValueScorer

SPEC = Path(__file__).resolve().parent.parent / "examples" / "partitions.yaml"


def _partition(name: str) -> Partition:
    return load_spec(SPEC).select(name)[0]


def _field(name: str, **figures: Any) -> FieldPlausibility:
    base = FieldPlausibility(
        field=name, context=f"{name}:", synthetic_values=50, heldout_values=50, synthetic_nats=4.0,
        heldout_nats=3.5, random_nats=5.5, gap=0.5, detection_auc=0.7, degenerate=0.0, heldout_degenerate=0.0,
        compared=50, distinct=0.9, heldout_distinct=0.95, synthetic_examples=(), heldout_examples=(),
    )  # fmt: skip
    return replace(base, **figures)


def _table(name: str, auc: float | None, *fields: FieldPlausibility) -> PartitionPlausibility:
    return PartitionPlausibility(name, 50, 1.0, auc, 0.6, 0.0, 1.0, None, fields)


def test_free_text_fields_leave_out_codes_categories_dates_and_numbers() -> None:
    fields = {name: plausibility.plausibility_fields(Yardstick.for_partition(_partition(name))) for name in
              ("cars", "airports", "la-riots", "seattle-weather")}  # fmt: skip
    # iata and state carry a pattern (codes); dates, enums and numbers are not free text.
    assert fields == {
        "cars": ["Name"],
        "airports": ["name", "city"],
        "la-riots": ["first_name", "last_name", "address", "neighborhood"],
        "seattle-weather": [],
    }


def test_value_context_is_notes_then_field_description_then_field_name() -> None:
    cars = _partition("cars")
    schema = Yardstick.for_partition(cars).schema.contents
    context = plausibility.value_context(cars, schema, "Name")
    notes, description, last = context.split("\n")
    assert notes.startswith("Passenger car models sold in the US")
    assert description == schema["properties"]["Name"]["description"]
    assert last == "Name:"


def test_floors_pass_on_figures_within_them() -> None:
    floors = plausibility.plausibility_floors([_table("cars", 0.7, _field("Name")), _table("weather", None)])
    assert [f.passed for f in floors] == [True, True, True, True]


def test_each_floor_fails_on_the_figure_it_names() -> None:
    cases = {
        0: _field("Name", gap=1.2),
        1: _field("Name", degenerate=0.04),
        2: _field("Name", distinct=0.8, heldout_distinct=0.95),
    }
    for index, field in cases.items():
        passed = [f.passed for f in plausibility.plausibility_floors([_table("cars", 0.7, field)])]
        assert passed == [i != index for i in range(4)], index
    passed = [f.passed for f in plausibility.plausibility_floors([_table("cars", 0.85, _field("Name"))])]
    assert passed == [True, True, True, False]


def test_floors_are_unmeasured_without_free_text() -> None:
    assert [f.passed for f in plausibility.plausibility_floors([_table("weather", None)])] == [None] * 4


@pytest.fixture(scope="module")
def scorer() -> ValueScorer:
    return ValueScorer(batch_size=8)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("partition", "field"), [("cars", "Name"), ("airports", "city"), ("la-riots", "address")]
)
def test_real_values_score_better_than_random_strings_of_their_lengths(
    scorer: ValueScorer, partition: str, field: str
) -> None:
    chosen = _partition(partition)
    yardstick = Yardstick.for_partition(chosen)
    real = [row[field] for row in yardstick.baseline_rows][:20]
    context = plausibility.value_context(chosen, yardstick.schema.contents, field)
    real_nats = scorer.nats_per_token(context, real)
    fake = plausibility.random_strings(real)
    assert [len(v) for v in fake] == [len(v) for v in real] and fake != real
    random_nats = scorer.nats_per_token(context, fake)
    # Lower nats/token is more plausible: by a clear margin on average, and for most values.
    assert sum(real_nats) / len(real) < sum(random_nats) / len(real) - 0.5
    assert sum(r < s for r, s in zip(real_nats, random_nats, strict=True)) >= 0.75 * len(real)


@pytest.mark.slow
def test_a_value_scores_the_same_alone_and_in_a_padded_batch(scorer: ValueScorer) -> None:
    values = ["ford pinto", "chevrolet malibu classic (sw)", "x"]
    together = scorer.nats_per_token("Name:", values)
    alone = [scorer.nats_per_token("Name:", [v])[0] for v in values]
    # In bf16 (the dtype on a CPU with native bf16 kernels) a batch's shape changes the rounding:
    # the one-token "x" moved by 0.06 nats. A padded position scored, or a value read from
    # another row, moves a value by whole nats.
    assert together == pytest.approx(alone, abs=0.15)


@pytest.mark.slow
def test_cli_writes_the_plausibility_report(tmp_path: Path) -> None:
    out = tmp_path / "plausibility.json"
    dlm_eval.main(
        ["--plausibility", "--model", "tiny-random", "--rows", "3", "--partitions", "cars,seattle-weather",
         "--threads", "1", "--out", str(out)]
    )  # fmt: skip
    report = json.loads(out.read_text())
    cars, weather = report["partitions"]
    assert (cars["partition"], cars["rows"], weather["fields"]) == ("cars", 3, [])
    (name,) = cars["fields"]
    assert name["field"] == "Name" and name["synthetic_values"] == 3 and name["heldout_values"] == 50
    assert name["synthetic_nats"] > 0 and name["heldout_nats"] > 0
    assert name["random_nats"] > name["heldout_nats"]
    assert name["gap"] == pytest.approx(name["synthetic_nats"] - name["heldout_nats"])
    assert len(name["synthetic_examples"]) == 3 and len(name["heldout_examples"]) == 10
    assert [f["passed"] is None for f in report["floors"]] == [False] * 4
    markdown = out.with_suffix(".md").read_text()
    assert "| cars | Name |" in markdown and "`cars` `Name`:" in markdown
