"""The prompt value and the optimizer: JSON round trip, the deterministic editor, the agent's
strictly parsed answers, retries, and the fallback."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from aod_ops.agents.judge import Judge, Judgement
from aod_ops.agents.optimizer import (
    MAX_RULES,
    Optimizer,
    Trial,
    join_instruction,
    parse_agent_answer,
    split_instruction,
)
from aod_ops.agents.prompt import Prompt, initial_prompt
from aod_ops.dlm.derive import derive_guides
from aod_ops.dlm.generate import Candidate, DecodingSettings
from aod_ops.errors import DataError, ModelError
from aod_ops.schema import compile_schema, load_schema
from aod_ops.spec import load_reference, load_spec

if TYPE_CHECKING:
    from tests.fakes import ScriptedChat

SCHEMA = load_schema(
    {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "kind": {"enum": ["a", "b"]},
        },
        "required": ["name", "age", "kind"],
    }
)
REFERENCE = [{"name": "Ann Lee", "age": 34, "kind": "a"}, {"name": "Bo Chan", "age": 51, "kind": "b"}]
EXEMPLARS = (json.dumps(REFERENCE[0]), json.dumps(REFERENCE[1]))
PROMPT = Prompt("Write one person record as JSON.", EXEMPLARS, DecodingSettings(temperature=0.8), version=3)


def judged(records: list[Any]) -> Judgement:
    return Judge(SCHEMA, REFERENCE).judge([Candidate(json.dumps(r), r) for r in records])


def person(i: int, **changes: Any) -> dict[str, Any]:
    return {"name": f"Person {i}", "age": 60 + i, "kind": "a", **changes}


def child_of(prompt: Prompt, version: int, **changes: Any) -> Prompt:
    """A revision of ``prompt`` numbered ``version``, as the optimizer derives one."""
    return replace(prompt, version=version, parent=prompt.version, **changes)


def test_prompt_json_round_trip_and_revision() -> None:
    decoding = DecodingSettings(temperature=0.5, mode="free")
    child = child_of(PROMPT, 7, instruction="Better.", decoding=decoding)
    assert (child.version, child.parent, child.exemplars) == (7, 3, EXEMPLARS)
    assert Prompt.from_json(child.to_json()) == child
    assert json.loads(child.to_json())["decoding"]["mode"] == "free"


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"instruction": "x", "version": 1}',
        '{"instruction": "x", "version": 1, "decoding": {"temperature": 9}}',
        '{"instruction": "x", "version": 1, "decoding": {}, "colour": 1}',
        '{"instruction": "x", "version": 1, "decoding": {}, "exemplars": [1]}',
    ],
)
def test_malformed_prompt_artifact_is_a_data_error(text: str) -> None:
    with pytest.raises(DataError, match="not a prompt artifact"):
        Prompt.from_json(text)


def test_render_shows_the_schema_in_free_mode_only() -> None:
    skeleton = PROMPT.render(SCHEMA.contents)
    free = replace(PROMPT, decoding=DecodingSettings(mode="free")).render(SCHEMA.contents)
    assert "Schema:" not in skeleton and "Schema:" in free
    assert skeleton.startswith("Write one person record as JSON.\nExample: ")


def test_initial_prompt_from_partitions() -> None:
    spec = load_spec(Path(__file__).resolve().parent.parent / "examples" / "partitions.yaml")
    cars, *_, riots, weather = spec.partitions
    prompt = initial_prompt(cars, load_schema(cars.schema_path).contents, load_reference(cars))
    assert prompt.version == 1 and prompt.parent is None
    assert "Car model" in prompt.instruction and "1970-1982" in prompt.instruction
    assert len(prompt.exemplars) == 2 and all(json.loads(e) in load_reference(cars) for e in prompt.exemplars)
    personal = initial_prompt(riots, load_schema(riots.schema_path).contents, load_reference(riots))
    assert personal.exemplars == ()  # no personal data in front of the model
    weather_prompt = initial_prompt(
        weather, load_schema(weather.schema_path).contents, load_reference(weather)
    )
    assert weather_prompt.decoding.temperature == 0.9


def test_instruction_rules_are_split_joined_and_bounded() -> None:
    text = join_instruction("Core text.", [f"Rule {i}." for i in range(12)] + ["Rule 0."])
    core, rules = split_instruction(text)
    assert core == "Core text." and rules == [f"Rule {i}." for i in range(MAX_RULES)]
    assert split_instruction("Only core.") == ("Only core.", [])


def test_editor_turns_recurring_problems_into_rules_and_drops_copied_exemplars() -> None:
    judgement = judged([person(1, age=-5), person(2, age=-6), person(3, name="Ann Lee"), person(4)])
    (proposal, *_) = Optimizer().propose(PROMPT, judgement, [], count=3, next_version=10)
    core, rules = split_instruction(proposal.prompt.instruction)
    assert core == PROMPT.instruction
    assert rules[0] == "Keep age within its allowed range."  # the most frequent problem first
    assert "Invent new values for name instead of reusing values from real records." in rules
    # "Ann Lee" was copied: the exemplar holding it goes, the other stays.
    assert proposal.prompt.exemplars == (EXEMPLARS[1],)
    assert proposal.source == "editor" and "1 exemplar(s) dropped" in proposal.note


def test_copied_fields_share_one_rule_and_personal_data_always_gets_one() -> None:
    schema = load_schema({"type": "object", "properties": {"a": {}, "b": {}, "c": {}, "d": {}}})
    reference = [{"a": 1, "b": 2, "c": 3, "d": 4}]
    records = [{"a": 1, "b": 2, "c": 9 + i, "d": 4 + i} for i in range(7)]
    judgement = Judge(schema, reference, sensitive=["d"]).judge(
        [Candidate(json.dumps(r), r) for r in records]
    )
    (proposal, *_) = Optimizer().propose(PROMPT, judgement, [], count=1, next_version=4)
    _, rules = split_instruction(proposal.prompt.instruction)
    assert rules == [
        "Invent new values for a and b instead of reusing values from real records.",
        "d is personal data: invent a fictitious value, never a real one.",  # 1 of 7, but personal data
    ]


def test_editor_raises_temperature_when_records_repeat() -> None:
    judgement = judged([person(1), person(1), person(1), person(2)])
    proposals = Optimizer().propose(PROMPT, judgement, [], count=3, next_version=4)
    assert proposals[0].prompt.decoding.temperature == pytest.approx(0.95)
    bolder = next(p for p in proposals if p.note.startswith("bolder temperature"))
    assert bolder.prompt.decoding.temperature == pytest.approx(1.1)
    assert "Make every record different from all the others." in proposals[0].prompt.instruction


def test_editor_lowers_temperature_when_validity_fell_from_the_parent() -> None:
    parent = child_of(PROMPT, 2)
    child = child_of(parent, 3, instruction="Child.")
    parent_trial = Trial(parent, 0.9, judged([person(1), person(2)]).metrics)
    judgement = judged([person(1, age=500), person(2)])
    (proposal, *_) = Optimizer().propose(child, judgement, [parent_trial], count=1, next_version=5)
    assert proposal.prompt.decoding.temperature == pytest.approx(0.65)


def test_proposals_are_distinct_numbered_and_new() -> None:
    judgement = judged([person(1), person(2)])  # nothing to fix: only the temperature can move
    parent = child_of(PROMPT, 2, decoding=DecodingSettings(temperature=0.85))
    history = [Trial(parent, 0.5, judgement.metrics)]
    proposals = Optimizer().propose(PROMPT, judgement, history, count=5, next_version=20)
    prompts = [p.prompt for p in proposals]
    assert [p.version for p in prompts] == [20, 21, 22, 23, 24]
    assert all(p.parent == PROMPT.version for p in prompts)
    contents = {(p.instruction, p.exemplars, p.decoding) for p in prompts}
    assert len(contents) == 5
    tried = {(t.prompt.instruction, t.prompt.exemplars, t.prompt.decoding) for t in history}
    assert not contents & (tried | {(PROMPT.instruction, PROMPT.exemplars, PROMPT.decoding)})


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            '{"instruction": "Write one realistic person record as JSON."}',
            "Write one realistic person record as JSON.",
        ),
        (
            'Here you go:\n{"instruction": "  Write one realistic person record.  "} done',
            "Write one realistic person record.",
        ),
        ('{"instruction": "too short"}', None),
        ('{"text": "Write one realistic person record as JSON."}', None),
        ('{"instruction": ["Write one realistic person record as JSON."]}', None),
        ("Write one realistic person record as JSON.", None),
        ('{"instruction": "unterminated', None),
    ],
)
def test_parse_agent_answer(answer: str, expected: str | None) -> None:
    assert parse_agent_answer(answer) == expected


def test_agent_answers_are_retried_and_used(scripted_chat: type[ScriptedChat]) -> None:
    chat = scripted_chat(
        [
            "I would suggest making it better.",  # malformed: retried
            '{"instruction": "Write one invented person with a new name and an age under 100."}',
            '{"instruction": "Write one invented person whose age is a whole number."}',
        ]
    )
    optimizer = Optimizer(chat, retries=2)
    judgement = judged([person(1, age=-5), person(2, age=-6)])
    proposals = optimizer.propose(PROMPT, judgement, [], count=3, next_version=4)
    assert [p.source for p in proposals] == ["editor", "agent", "agent"]
    assert (
        proposals[1].prompt.instruction == "Write one invented person with a new name and an age under 100."
    )
    # The agent's instruction comes with the editor's exemplar and temperature choices.
    assert proposals[1].prompt.decoding == proposals[0].prompt.decoding
    assert optimizer.malformed == 1 and chat.calls == 3


def test_malformed_agent_output_is_skipped_and_the_editor_fills_in(scripted_chat: type[ScriptedChat]) -> None:
    chat = scripted_chat(["nope"] * 6)
    optimizer = Optimizer(chat, retries=2)
    proposals = optimizer.propose(PROMPT, judged([person(1), person(1)]), [], count=3, next_version=4)
    assert [p.source for p in proposals] == ["editor"] * 3
    assert len({(p.prompt.exemplars, p.prompt.decoding) for p in proposals}) == 3
    assert optimizer.malformed == 6 and chat.calls == 6  # two proposals asked, three attempts each


def test_unreachable_agent_fails_the_proposals(scripted_chat: type[ScriptedChat]) -> None:
    chat = scripted_chat([], down=True)
    optimizer = Optimizer(chat)
    with pytest.raises(ModelError, match=r"http://127.0.0.1:9: cannot connect"):
        optimizer.propose(PROMPT, judged([person(1)]), [], count=3, next_version=4)
    assert chat.calls == 1


def test_unreachable_agent_with_fallback_leaves_the_proposals_to_the_editor_and_says_why(
    scripted_chat: type[ScriptedChat],
) -> None:
    chat = scripted_chat([], down=True)
    optimizer = Optimizer(chat, fallback=True)
    proposals = optimizer.propose(PROMPT, judged([person(1)]), [], count=3, next_version=4)
    assert len(proposals) == 3 and {p.source for p in proposals} == {"editor"}
    assert chat.calls == 1 and optimizer.malformed == 0
    assert optimizer.down == "agent endpoint http://127.0.0.1:9: cannot connect"
    # The next round asks again, and a working agent clears the reason.
    chat.down, chat.answers = (
        False,
        ['{"instruction": "Write one invented person record with a new name."}'] * 3,
    )
    optimizer.propose(PROMPT, judged([person(1)]), [], count=2, next_version=7)
    assert optimizer.down is None


def test_agent_calls_cap_the_agent_per_proposal_round(scripted_chat: type[ScriptedChat]) -> None:
    answers = [f'{{"instruction": "Write one invented person record, variant {i}."}}' for i in range(6)]
    chat = scripted_chat(["malformed", *answers])
    optimizer = Optimizer(chat, agent_calls=2)
    judgement = judged([person(1, age=-5), person(2, age=-6)])
    proposals = optimizer.propose(PROMPT, judgement, [], count=4, next_version=4)
    # Two calls: a malformed answer, then its retry; the editor writes the rest.
    assert chat.calls == 2 and [p.source for p in proposals] == ["editor", "agent", "editor", "editor"]
    proposals = optimizer.propose(PROMPT, judgement, [], count=4, next_version=8)
    assert chat.calls == 4 and [p.source for p in proposals] == ["editor", "agent", "agent", "editor"]


@pytest.mark.parametrize("answer", ["[" * 100_000 + "]" * 100_000, '{"instruction": ' + "9" * 5000 + "}"])
def test_hostile_agent_answers_are_malformed(answer: str) -> None:
    assert parse_agent_answer(answer) is None


def test_agent_prompt_carries_feedback_and_bounded_history(scripted_chat: type[ScriptedChat]) -> None:
    chat = scripted_chat(['{"instruction": "Write one invented person record with a fresh name."}'])
    judgement = judged([person(1, age=-5)])
    history = [
        Trial(child_of(PROMPT, v, instruction=f"Try {v}."), v / 10, judgement.metrics) for v in range(1, 9)
    ]
    Optimizer(chat, max_history=3).propose(PROMPT, judgement, history, count=2, next_version=9)
    user = chat.sent[0][1]["content"]
    assert judgement.feedback in user and PROMPT.instruction in user
    assert "Try 8." in user and "Try 6." in user and "Try 5." not in user


def test_editor_switches_value_guides_on_then_retunes_their_windows() -> None:
    guides = derive_guides(compile_schema(SCHEMA).root, [person(i, age=20 + 3 * i) for i in range(12)])
    judgement = judged([person(1), person(2)])
    first = Optimizer(guides=guides).propose(PROMPT, judgement, [], count=3, next_version=4)
    assert first[0].prompt.guides == guides and "value guides on" in first[0].note
    later = Optimizer(guides=guides).propose(first[0].prompt, judgement, [], count=4, next_version=8)
    windows = [p for p in later if p.note.startswith("guide windows")]
    assert windows and all(p.prompt.guides is not None for p in later)
    assert {p.prompt.guides.bins for p in windows if p.prompt.guides} <= {5, 20}


def test_editor_offers_the_other_commit_order_and_rotated_exemplars() -> None:
    pool = [json.dumps(person(i)) for i in range(10)]
    proposals = Optimizer(exemplar_pool=pool).propose(
        PROMPT, judged([person(1)]), [], count=4, next_version=4
    )
    order = next(p for p in proposals if p.note.startswith("commit order"))
    assert order.prompt.decoding.order != PROMPT.decoding.order
    rotated = next(p for p in proposals if p.note.startswith("exemplars"))
    assert set(rotated.prompt.exemplars) <= set(pool) and len(rotated.prompt.exemplars) == 2
