"""The AoD loop end to end with the tiny random DLM: the run directory, acceptance, stop rules,
resume after an interruption, the agent's call budget (against a loopback endpoint), and an agent
that fails: the round fails, or with ``agent_fallback: editor`` says the editor stood in."""

from __future__ import annotations

import itertools
import json
import random
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from aod_ops.agents.prompt import Prompt
from aod_ops.cli import main
from aod_ops.cli.observer import round_line
from aod_ops.dlm.generate import Candidate
from aod_ops.errors import DataError, ModelError, SpecError
from aod_ops.loop import (
    Evaluation,
    LoopResult,
    RoundRecord,
    optimize_partition,
    read_rounds,
    round_file,
    stop_reason,
)
from aod_ops.metrics import Metrics
from aod_ops.spec import LoopSettings, Partition, load_spec

if TYPE_CHECKING:
    from tests.fakes import ChatRequest, ChatServer

# Small integers copy the reference and repeat often, and two candidates make a noisy sample, so
# rewards differ from sample to sample and proposals are both accepted and rejected; no string
# field, so the random model's garbled text does not zero every reward.
SCHEMA = {
    "title": "Dot",
    "type": "object",
    "properties": {
        "x": {"type": "integer", "minimum": 0, "maximum": 12},
        "y": {"type": "integer", "minimum": 0, "maximum": 12},
        "color": {"enum": ["red", "blue"]},
    },
    "required": ["x", "y", "color"],
    "additionalProperties": False,
}
LOOP = {"rounds": 3, "candidates": 2, "proposals": 2, "target_reward": 1.0, "patience": 5}


def make_spec(
    folder: Path, loop: dict[str, Any] | None = None, agent: Any = "local", **defaults: Any
) -> Partition:
    """A one-partition spec in ``folder`` running the tiny random DLM (``defaults``: more settings)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dots.json").write_text(json.dumps(SCHEMA))
    rng = random.Random(1)
    rows = [
        {"x": rng.randint(0, 12), "y": rng.randint(0, 12), "color": rng.choice(["red", "blue"])}
        for _ in range(12)
    ]
    (folder / "dots.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {
        "defaults": {
            "dlm": "tiny-random",
            "agent": agent,
            "loop": {**LOOP, **(loop or {})},
            "decoding": {"steps": 2, "block_length": 8, "temperature": 1.0},
            **defaults,
        },
        "partitions": [{"name": "dots", "schema": "dots.json", "reference": "dots.jsonl", "rows": 10}],
    }
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return load_spec(folder / "spec.yaml").select("dots")[0]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> LoopResult:
    """A three-round run, uninterrupted."""
    folder = tmp_path_factory.mktemp("full")
    return optimize_partition(make_spec(folder), folder / "out")


def test_run_directory_holds_rounds_history_and_best_prompt(full_run: LoopResult) -> None:
    run_dir = full_run.run_dir
    assert run_dir.name == "dots" and full_run.stop == "rounds" and len(full_run.rounds) == 3
    assert [p.name for p in sorted((run_dir / "rounds").iterdir())] == [
        "round_01.json",
        "round_02.json",
        "round_03.json",
    ]
    assert Prompt.from_json(full_run.prompt_path.read_text()) == full_run.best_prompt
    history = json.loads(full_run.history_path.read_text())
    assert history["stop"] == "rounds"
    assert history["best"]["version"] == full_run.best_prompt.version
    assert [line["reward"] for line in history["rounds"]] == [r.best.reward for r in full_run.rounds]
    round_two = json.loads((run_dir / "rounds" / "round_02.json").read_text())
    for key in ("prompt", "reward", "metrics", "feedback", "proposals", "accepted", "timings", "start"):
        assert key in round_two
    assert {"validity", "tsr", "field_overlap", "exact_match_rate", "diversity"} <= set(round_two["metrics"])
    assert round_two["start"]["sampled"] is False  # only round 1 samples its starting prompt
    assert len(round_two["proposals"]) == 2 and all(len(p["candidates"]) == 2 for p in round_two["proposals"])
    assert sum(p["accepted"] for p in round_two["proposals"]) == (round_two["accepted"] is not None)


def test_each_evaluation_samples_fresh_seeds_and_versions_grow(full_run: LoopResult) -> None:
    evaluations = [full_run.rounds[0].start, *(p for r in full_run.rounds for p in r.proposals)]
    assert len(evaluations) == 1 + 3 * 2
    seeds = [c.seed for e in evaluations for c in e.candidates]
    assert len(set(seeds)) == len(seeds)
    versions = [e.prompt.version for e in evaluations]
    assert versions == list(range(1, len(evaluations) + 1))
    for record in full_run.rounds:
        assert all(p.prompt.parent == record.start.prompt.version for p in record.proposals)
        assert all(p.source == "editor" for p in record.proposals)  # the local agent writes none


def test_accepted_reward_never_decreases(full_run: LoopResult) -> None:
    rewards = [r.start.reward for r in full_run.rounds] + [full_run.best_reward]
    assert rewards == sorted(rewards)
    for before, after in zip(full_run.rounds, full_run.rounds[1:], strict=False):
        assert after.start == before.best  # the next round starts from the prompt in force
    for record in full_run.rounds:
        best_proposal = max(p.reward for p in record.proposals)
        assert (record.accepted is not None) == (best_proposal >= record.start.reward)
        assert record.best.reward == max(record.start.reward, best_proposal)
    # The run must have met both outcomes for this to test anything.
    assert any(r.accepted is not None for r in full_run.rounds)
    assert any(p.reward < r.start.reward for r in full_run.rounds for p in r.proposals)


def test_interrupted_run_resumes_from_the_next_round(tmp_path: Path, full_run: LoopResult) -> None:
    partition = make_spec(tmp_path)
    out = tmp_path / "out"

    def interrupt(record: RoundRecord) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        optimize_partition(partition, out, on_round=interrupt)
    round_one = (out / "dots" / "rounds" / "round_01.json").read_bytes()
    assert [r.number for r in read_rounds(out / "dots")] == [1]

    seen: list[int] = []
    resumed = optimize_partition(partition, out, on_round=lambda r: seen.append(r.number))
    assert seen == [2, 3] and resumed.resumed == 1
    assert (out / "dots" / "rounds" / "round_01.json").read_bytes() == round_one
    # Seeds depend on the round, not on the process: the resumed run is the uninterrupted one.
    assert [r.best.reward for r in resumed.rounds] == [r.best.reward for r in full_run.rounds]
    assert resumed.best_prompt == full_run.best_prompt

    batches: list[int] = []
    again = optimize_partition(
        partition, out, on_round=lambda r: seen.append(r.number), on_batch=batches.append
    )
    assert again.resumed == 3 and seen == [2, 3] and batches == []  # a finished run is not redone
    assert again.best_prompt == full_run.best_prompt


def test_more_rounds_continue_a_finished_run_and_other_settings_are_refused(tmp_path: Path) -> None:
    partition = make_spec(tmp_path)
    out = tmp_path / "out"
    assert len(optimize_partition(partition, out, rounds=1).rounds) == 1
    more = optimize_partition(partition, out, rounds=2)
    assert (more.resumed, len(more.rounds), more.stop) == (1, 2, "rounds")
    with pytest.raises(DataError, match="candidates"):
        optimize_partition(partition, out, rounds=2, candidates=3)
    fresh = optimize_partition(partition, out, rounds=1, candidates=3, restart=True)
    assert fresh.resumed == 0 and len(fresh.rounds) == 1
    assert (
        len(fresh.rounds[0].start.candidates) == 3
        and not (out / "dots" / "rounds" / "round_02.json").exists()
    )


def test_stops_at_the_target_without_proposing(tmp_path: Path) -> None:
    result = optimize_partition(make_spec(tmp_path, {"target_reward": 0.0}), tmp_path / "out")
    assert result.stop == "target" and len(result.rounds) == 1
    assert result.rounds[0].proposals == () and result.best_prompt.version == 1


def test_stops_after_patience_rounds_without_improvement(tmp_path: Path) -> None:
    result = optimize_partition(make_spec(tmp_path, {"patience": 1, "rounds": 5}), tmp_path / "out")
    assert result.stop == "patience"
    assert not result.rounds[-1].improved and all(r.improved for r in result.rounds[:-1])


def test_loop_settings_out_of_range_are_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"'dots'.*candidates must be at least 1"):
        optimize_partition(make_spec(tmp_path), tmp_path / "out", candidates=0)


def evaluation(version: int, reward: float) -> Evaluation:
    metrics = Metrics(
        candidates=1,
        valid=1,
        validity=1.0,
        tsr=reward,
        field_overlap=0.0,
        exact_match_rate=0.0,
        diversity=1.0,
    )
    prompt = Prompt("Write a record.", version=version)
    return Evaluation(prompt, "editor", "", reward, metrics, {}, "", 0, 0.0, 0.0, 0, (Candidate("{}", {}),))


def rounds_of(*steps: tuple[float, float | None]) -> list[RoundRecord]:
    """Rounds from (start reward, accepted reward or None) pairs."""
    out: list[RoundRecord] = []
    for number, (start, accepted) in enumerate(steps, start=1):
        proposals = () if accepted is None else (evaluation(number + 100, accepted),)
        out.append(
            RoundRecord(
                number,
                evaluation(number, start),
                number == 1,
                proposals,
                None if accepted is None else number + 100,
                0.0,
            )
        )
    return out


def test_stop_rules_in_order_target_patience_rounds() -> None:
    settings = LoopSettings(rounds=3, target_reward=0.9, patience=2)
    assert stop_reason([], settings) is None
    assert stop_reason(rounds_of((0.5, 0.6)), settings) is None
    assert stop_reason(rounds_of((0.5, 0.95)), settings) == "target"
    assert stop_reason(rounds_of((0.5, 0.6), (0.6, 0.6)), settings) is None  # equal: accepted, not improved
    assert stop_reason(rounds_of((0.5, None), (0.5, 0.5)), settings) == "patience"
    assert stop_reason(rounds_of((0.5, 0.6), (0.6, 0.7), (0.7, 0.8)), settings) == "rounds"
    assert stop_reason(rounds_of((0.5, 0.6), (0.6, 0.7), (0.7, 0.8)), replace(settings, rounds=4)) is None


@pytest.fixture
def agent(chat_server: type[ChatServer]) -> Iterator[ChatServer]:
    """A loopback OpenAI-compatible endpoint that answers each call with a new valid instruction
    (or, under ``/garbage``, with a page that is no chat completion)."""
    calls = itertools.count(1)

    def answer(request: ChatRequest) -> str | tuple[int, bytes]:
        if request.mode == "garbage":
            return 200, b"<html><body>It works!</body></html>"
        return json.dumps({"instruction": f"Write one new dot record, answer {next(calls)}."})

    with chat_server(answer) as server:
        yield server


def test_endpoint_agent_writes_proposals_within_its_call_budget(tmp_path: Path, agent: ChatServer) -> None:
    partition = make_spec(
        tmp_path, {"proposals": 3, "rounds": 1}, agent={"base_url": agent.url, "model": "m"}
    )
    result = optimize_partition(partition, tmp_path / "out", agent_calls=1)
    (record,) = result.rounds
    assert len(agent.requests) == 1  # the optimizer asked twice; the budget let one call through
    assert [p.source for p in record.proposals] == ["editor", "agent", "editor"]
    assert record.proposals[1].prompt.instruction == "Write one new dot record, answer 1."
    assert record.agent_failures == 0  # the spent budget is not the agent failing


def _closed_port() -> int:
    """A localhost port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_down_agent_fails_optimize_with_one_line_naming_the_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    make_spec(tmp_path, {"rounds": 1}, agent={"base_url": url, "model": "m", "retries": 1})
    code = main(["optimize", "--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("aod optimize: error: ")]
    assert f"partition 'dots' round 1: the agent failed: agent endpoint {url}/v1/chat/completions: " in line
    assert "cannot connect" in line and "(after 2 attempts)" in line
    assert line.endswith("set agent_fallback: editor in the spec to go on without it")
    assert not (tmp_path / "out" / "dots" / "rounds").exists()  # the failed round is not recorded


def test_an_endpoint_answering_no_chat_completion_fails_the_round(tmp_path: Path, agent: ChatServer) -> None:
    url = f"{agent.url}/garbage"
    partition = make_spec(tmp_path, {"rounds": 1}, agent={"base_url": url, "model": "m"})
    with pytest.raises(
        ModelError, match=rf"round 1: the agent failed: agent endpoint {url}/v1/.*not an OpenAI"
    ):
        optimize_partition(partition, tmp_path / "out")
    assert len(agent.requests) == 1  # an answer that is not a completion is not retried


def test_with_agent_fallback_the_editor_and_the_judge_go_on_and_the_round_says_so(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    agent = {"base_url": url, "model": "m", "retries": 0}
    partition = make_spec(tmp_path, {"rounds": 1}, agent=agent, agent_fallback="editor", critic=True)
    result = optimize_partition(partition, tmp_path / "out")
    (record,) = result.rounds
    assert [p.source for p in record.proposals] == ["editor", "editor"]
    assert record.agent_failures == 1
    reason = f"agent endpoint {url}/v1/chat/completions: cannot connect"
    agent_note, critic_note = record.fallbacks
    assert agent_note.startswith(f"agent down: editor used ({reason}") and "(after 1 attempts))" in agent_note
    assert critic_note.startswith(f"critic down: judged without it ({reason}")
    saved = json.loads((result.run_dir / "rounds" / "round_01.json").read_text())
    assert saved["fallbacks"] == list(record.fallbacks)
    assert json.loads(result.history_path.read_text())["rounds"][0]["fallbacks"] == list(record.fallbacks)
    assert read_rounds(result.run_dir)[0].fallbacks == record.fallbacks
    assert round_line("dots", record).endswith(f"  {agent_note}  {critic_note}")  # the printed line


def test_a_down_critic_without_fallback_fails_the_first_judgement(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    partition = make_spec(
        tmp_path, {"rounds": 1}, agent={"base_url": url, "model": "m", "retries": 0}, critic=True
    )
    with pytest.raises(ModelError, match=rf"partition 'dots': the critic failed: agent endpoint {url}/v1/"):
        optimize_partition(partition, tmp_path / "out")


def test_round_files_from_before_fallbacks_were_recorded_read_back(
    tmp_path: Path, full_run: LoopResult
) -> None:
    copy = tmp_path / "dots"
    (copy / "rounds").mkdir(parents=True)
    data = json.loads(round_file(full_run.run_dir, 1).read_text())
    del data["fallbacks"]
    (copy / "rounds" / "round_01.json").write_text(json.dumps(data))
    (record,) = read_rounds(copy)
    assert record.fallbacks == () and record == full_run.rounds[0]
