"""The judge: evaluators, problem ranking, bounded feedback, reward, and the LLM critic's parsing."""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any

import pytest

from aod_ops.agents.judge import Judge, degenerate, parse_critic
from aod_ops.dlm.generate import Candidate
from aod_ops.errors import ModelError
from aod_ops.fidelity import table_reward
from aod_ops.metrics import task_success_rate
from aod_ops.schema import load_schema

if TYPE_CHECKING:
    from conftest import ScriptedChat

SCHEMA = load_schema(
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "city": {"type": "string"},
            "kind": {"enum": ["a", "b"]},
            "member": {"type": "boolean"},
        },
        "required": ["name", "age", "kind"],
        "additionalProperties": False,
    }
)
REFERENCE = [
    {"name": "Ann Lee", "age": 34, "city": "Boston", "kind": "a", "member": True},
    {"name": "Bo Chan", "age": 51, "city": "Austin", "kind": "b", "member": False},
    {"name": "Cy Diaz", "age": 27, "city": "Denver", "kind": "a", "member": True},
]


def fresh(i: int, **changes: Any) -> dict[str, Any]:
    """A valid, invented record (no leaf equal to a reference leaf but the enum/boolean ones)."""
    return {
        "name": f"Person {chr(65 + i)}",
        "age": 60 + i,
        "city": f"Town {chr(65 + i)}",
        "kind": "a",
        **changes,
    }


def cand(record: Any) -> Candidate:
    return Candidate(json.dumps(record), record)


def judge(records: list[Any], **kwargs: Any) -> Any:
    candidates = [r if isinstance(r, Candidate) else cand(r) for r in records]
    return Judge(SCHEMA, REFERENCE, **kwargs).judge(candidates)


def test_clean_batch_is_accepted_without_problems() -> None:
    result = judge([fresh(i) for i in range(4)])
    assert all(v.ok and not v.reasons for v in result.verdicts)
    assert result.metrics.tsr == 1.0 and result.metrics.field_overlap == 0.0
    assert result.problems == ()
    assert "Problems" not in result.feedback


def test_enum_and_boolean_leaves_are_not_counted_as_copies() -> None:
    result = judge([fresh(0, kind="b", member=True)])
    assert result.metrics.field_overlap == 0.0
    assert result.verdicts[0].findings == ()


def test_parse_error_is_reported_with_the_text() -> None:
    bad = Candidate('{"name": "Zed', None, ("parse error: the output is not a JSON document",))
    result = judge([bad, fresh(0)])
    assert not result.verdicts[0].ok and result.verdicts[1].ok
    (reason,) = result.verdicts[0].reasons
    assert "record 1 did not parse" in reason and '{"name": "Zed' in reason
    assert result.metrics.validity == 0.5


def test_schema_error_names_pointer_keyword_and_value() -> None:
    result = judge([fresh(0, age=300), fresh(1, colour="red")])
    (age,) = result.verdicts[0].reasons
    assert "/age" in age and "300" in age and "maximum" in age
    (extra,) = result.verdicts[1].reasons
    assert "additionalProperties" in extra and "colour" in extra
    assert "record 1 at /age: 300 fails 'maximum'" in result.feedback
    assert result.metrics.validity == 0.0 and result.reward == 0.0


def test_copied_leaves_are_named_with_values_but_do_not_reject() -> None:
    result = judge([fresh(0, name="Ann Lee"), fresh(1, city="Austin")])
    assert all(v.ok for v in result.verdicts)
    assert '/name: "Ann Lee" is copied from the reference' in result.verdicts[0].reasons[0]
    assert '"Austin"' in result.feedback and "/city copies reference values" in result.feedback
    assert result.metrics.field_overlap == pytest.approx(1 / 3)


def test_exact_copy_and_duplicate_are_rejected_once_each() -> None:
    result = judge([dict(REFERENCE[0]), fresh(0), fresh(0), fresh(0)])
    ok = [v.ok for v in result.verdicts]
    assert ok == [False, True, False, False]
    assert result.verdicts[0].reasons == ("record 1 is an exact copy of a reference record",)
    assert result.verdicts[2].reasons == ("record 3 repeats record 2",)
    assert result.metrics.tsr == 0.25
    assert result.feedback.index("repeats another record") < result.feedback.index("exact copy")


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("", "an empty string"),
        ("   ", "an empty string"),
        ("string", "placeholder text"),
        ("Lorem ipsum dolor", "placeholder text"),
        ("XXX", "placeholder text"),
        ("N/A", "placeholder text"),
        ("test", "placeholder text"),
        ("<name>", "placeholder text"),
        ("city", "placeholder text"),  # the property's own name
        ("la la la", "repeated tokens"),
        ("Ann Ann Ann Lee", "repeated tokens"),
        ("aaaa", "repeated tokens"),
        ("abababab", "repeated tokens"),
        ("Ford \ufffd\ufffd", "garbled text"),
        ("line\x07bell", "garbled text"),
    ],
)
def test_degenerate_values(value: str, kind: str) -> None:
    assert degenerate(value, "city") == kind


@pytest.mark.parametrize(
    "value", ["Ann Lee", "1000 Main St.", "Walla Walla", "AAA", "Mississippi", "N. Adams"]
)
def test_real_looking_values_are_not_degenerate(value: str) -> None:
    assert degenerate(value, "city") is None


def test_degenerate_value_rejects_the_record_and_halves_the_reward() -> None:
    clean = judge([fresh(0), fresh(1)])
    result = judge([fresh(0, city="lorem ipsum"), fresh(1)])
    assert [v.ok for v in result.verdicts] == [False, True]
    assert '/city: "lorem ipsum" is placeholder text' in result.verdicts[0].reasons[0]
    assert result.metrics.tsr == 1.0  # the contract's TSR ignores the judge's own gates
    # One of the two TSR successes fails the judge's own gate: half the table's reward.
    assert result.reward == pytest.approx(table_reward(result.scorecard, result.baseline) / 2)
    assert clean.reward > 0


def test_problems_are_ranked_by_frequency_and_feedback_follows() -> None:
    batch = [
        fresh(0, age=-1),
        fresh(1, age=-2),
        fresh(2, age=-3),
        fresh(3, city=""),
        fresh(4, city=""),
        fresh(5, name="Bo Chan"),
    ]
    result = judge(batch)
    assert [(p.kind, p.field, p.count) for p in result.problems] == [
        ("schema", "/age", 3),
        ("degenerate", "/city", 2),
        ("copied", "/name", 1),
    ]
    lines = result.feedback.splitlines()
    assert lines[0].startswith("Reward ")
    start = lines.index("Problems, most frequent first:")
    assert lines[start + 1].startswith(
        "- 3/6: /age breaks the schema rule 'minimum'. e.g. record 1 at /age: -1"
    )
    assert lines[start + 2].startswith("- 2/6: /city is an empty string")
    assert lines[start + 3].startswith("- 1/6: /name copies reference values")
    assert result.problems[0].values == (-1, -2, -3)


def test_feedback_is_bounded_and_says_how_much_was_left_out() -> None:
    schema = load_schema({"type": "object", "additionalProperties": {"type": "integer"}})
    batch = [cand({f"field{i}": "x" * 200}) for i in range(40)]  # 40 distinct problems
    result = Judge(schema, [], feedback_chars=600).judge(batch)
    assert len(result.problems) == 40
    assert len(result.feedback) <= 600
    assert result.feedback.splitlines()[-1].startswith("(and ")
    assert result.feedback.splitlines()[-1].endswith(" more problems)")


# A small "real" table: ages 20-60 rising with income; the reference and the held-out rows are
# two samples of it.
def _person(rng: random.Random) -> dict[str, Any]:
    age = rng.randint(20, 60)
    return {
        "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
        "age": age,
        "city": rng.choice(["Boston", "Austin", "Denver", "Omaha"]),
        "kind": rng.choice(["a", "a", "b"]),
        "member": age > 40,
    }


FIRST = ["Ann", "Bo", "Cy", "Dee", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kim", "Lou", "Max", "Ned"]
LAST = ["Lee", "Chan", "Diaz", "Ford", "Gray", "Hunt", "Ives", "Jain", "Khan", "Lund", "Moss", "Nash"]
REAL = [_person(random.Random(i)) for i in range(120)]


def real_judge() -> Judge:
    return Judge(SCHEMA, REAL[:80], holdout=REAL[80:])


def test_reward_ranks_real_looking_records_above_wrong_ones() -> None:
    like_real = [_person(random.Random(1000 + i)) for i in range(16)]
    too_old = [{**r, "age": 100 + i % 5} for i, r in enumerate(like_real)]
    good, bad = (
        real_judge().judge([cand(r) for r in like_real]),
        real_judge().judge([cand(r) for r in too_old]),
    )
    assert good.reward > bad.reward
    assert good.scorecard.quality > bad.scorecard.quality
    assert 0.0 <= bad.reward <= good.reward <= 1.0


def test_feedback_names_the_costliest_column_in_numbers_beside_the_held_out_rows() -> None:
    too_old = [{**_person(random.Random(2000 + i)), "age": 100 + i % 5} for i in range(16)]
    result = real_judge().judge([cand(r) for r in too_old])
    assert "held-out real rows" in result.feedback
    mismatch = result.feedback.splitlines()[
        result.feedback.splitlines().index("Unlike real data, most costly first:") + 1
    ]
    assert mismatch.startswith("- age: table median 102 vs 40 in the held-out rows")
    assert "16 of 16 values above" in mismatch


def test_reward_is_zero_without_a_valid_record() -> None:
    for batch in ([], [Candidate("?", None, ("parse error",))], [cand(fresh(0, age=300))]):
        assert judge(batch).reward == 0.0


def test_tsr_counts_duplicates_once() -> None:
    records = [fresh(0), fresh(0), fresh(1), fresh(2)]
    result = judge(records)
    assert result.metrics.tsr == task_success_rate(records, [True] * 4, REFERENCE) == 0.75
    assert sum(v.ok for v in result.verdicts) / 4 == result.metrics.tsr


def test_the_judge_and_its_yardstick_share_one_reference_index() -> None:
    judged = Judge(SCHEMA, REFERENCE, sensitive=["name"])
    assert judged.yardstick.reference_index is judged.index
    assert judged.yardstick.reference == REFERENCE


def test_sensitive_column_copy_rejects_without_showing_the_value() -> None:
    result = judge([fresh(0, name="Bo Chan"), fresh(1)], sensitive=["name"])
    assert [v.ok for v in result.verdicts] == [False, True]
    assert result.problems[0].kind == "sensitive" and result.problems[0].field == "/name"
    assert "Bo Chan" not in result.feedback
    assert "/name copies personal data from the reference" in result.feedback


def test_critic_verdicts_are_parsed_strictly_with_retries(scripted_chat: type[ScriptedChat]) -> None:
    chat = scripted_chat(
        [
            "Sure! It looks fine.",  # malformed: retried
            'Verdict: {"realistic": false, "reason": "a 60-year-old cannot be a toddler"} ok?',
            '{"realistic": true, "reason": "plausible"}',
            "{realistic: yes}",  # malformed twice: no verdict
            '{"realistic": "yes"}',
        ]
    )
    result = judge([fresh(0), fresh(1), fresh(2), fresh(3, age=500)], critic=chat, notes="People.")
    assert chat.calls == 5  # the invalid record is not shown to the critic
    assert [v.ok for v in result.verdicts] == [False, True, True, False]
    assert result.verdicts[0].reasons == ("record 1 is unrealistic: a 60-year-old cannot be a toddler",)
    assert result.critic_failures == 1
    assert result.metrics.tsr == 0.5  # the critic's verdicts count in TSR
    assert "judged unrealistic" in result.feedback


def test_unreachable_critic_fails_the_judgement(scripted_chat: type[ScriptedChat]) -> None:
    chat = scripted_chat([], down=True)
    with pytest.raises(ModelError, match=r"http://127.0.0.1:9: cannot connect"):
        judge([fresh(0), fresh(1), fresh(2)], critic=chat)
    assert chat.calls == 1


def test_unreachable_critic_with_fallback_gives_no_verdict_is_asked_once_and_says_why(
    scripted_chat: type[ScriptedChat],
) -> None:
    chat = scripted_chat([], down=True)
    result = judge([fresh(0), fresh(1), fresh(2)], critic=chat, critic_fallback=True)
    assert chat.calls == 1
    assert all(v.ok for v in result.verdicts)
    assert result.critic_failures == 3
    assert result.critic_down == "agent endpoint http://127.0.0.1:9: cannot connect"


def test_malformed_critic_answers_are_no_failure_of_the_critic(scripted_chat: type[ScriptedChat]) -> None:
    result = judge([fresh(0)], critic=scripted_chat(["no idea", "still no idea"]))
    assert result.critic_failures == 1 and result.critic_down is None


@pytest.mark.parametrize("answer", ["[" * 100_000 + "]" * 100_000, '{"realistic": ' + "9" * 5000 + "}"])
def test_hostile_critic_answers_are_no_verdict(answer: str) -> None:
    assert parse_critic(answer) is None


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('{"realistic": true, "reason": "fine"}', (True, "fine")),
        ('noise {"realistic": false} trailing', (False, "")),
        ('{"realistic": 1, "reason": "x"}', None),
        ('{"realistic": true, "reason": 5}', None),
        ("[true]", None),
        ("{", None),
        ("", None),
    ],
)
def test_parse_critic(answer: str, expected: tuple[bool, str] | None) -> None:
    assert parse_critic(answer) == expected
