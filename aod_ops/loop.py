"""The AoD loop: optimize one partition's DLM prompt over rounds of sample, judge, propose, accept.

Round r of a partition's run:

1. The current prompt's judgement. In round 1 the initial prompt is sampled (K candidates) and
   judged. Later rounds reuse the judgement made when the current prompt was evaluated (in the
   round that accepted it, or in an earlier round that kept it): the current prompt is never
   sampled twice, which saves K of every (M + 1) K records (a quarter with the default M = 3),
   and keeps each prompt's reward one fixed number, so the accepted reward cannot go down. That
   reward is the best of M noisy estimates, so it is optimistic: acceptance is conservative.
2. The optimizer proposes M revised prompts; each is sampled on fresh seeds and judged.
3. The best proposal (the first of equals) is accepted if its reward is not lower than the
   current prompt's. A round *improves* when the accepted reward is strictly higher.
4. The run stops when the reward reaches the target, after ``patience`` rounds in a row without
   improvement, or after ``rounds`` rounds (checked in that order). When the initial prompt
   already reaches the target, round 1 proposes nothing.

Every round is written to the run directory (a local folder or an object-store URI, see
``aod_ops.storage``; each file is written whole) before the next starts, so an interrupted run
resumes where it stopped; seeds depend only on the partition's seed, the round and the slot, so
a resumed run samples what an uninterrupted one would have. A run directory holds::

    <out_dir>/<partition>/
        run.json            the settings the rounds depend on; a resume must match them
        rounds/round_NN.json  each round: the prompt in force after it, its reward, metrics and
                            feedback, the starting prompt's evaluation, every proposal with its
                            reward, whether it was accepted, the candidates, timings
        history.json        one summary line per round, the best prompt and why the run stopped
        prompt.json         the best prompt (``Prompt.to_json``): what synthesis reads

The rounds' stopping settings (``rounds``, ``target_reward``, ``patience``) may change between
runs: a finished run asked for more rounds goes on; one that is done is not redone.

A configured agent (or critic) that fails, after its client's bounded retries, fails the round
with a ``ModelError`` naming the endpoint and what happened: the loop never quietly goes on
without the model it was told to use. With ``agent_fallback: editor`` in the spec it does go on
(the deterministic editor writes the proposals, the deterministic judge's word stands), and the
round says so in ``RoundRecord.fallbacks``. A DLM server (``dlm: {base_url}``, free mode only)
that fails after its retries fails the round the same way, with no fallback: its ``ModelError``
names the partition and the server's URL.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from aod_ops import storage
from aod_ops.agents.chat import ChatModel, chat_model_from_spec
from aod_ops.agents.judge import Judge, Judgement
from aod_ops.agents.optimizer import Optimizer, Trial
from aod_ops.agents.prompt import Prompt, initial_prompt
from aod_ops.dlm.derive import derive_guides
from aod_ops.dlm.generate import Candidate, Generator
from aod_ops.errors import DataError, ModelError, SpecError
from aod_ops.metrics import Metrics
from aod_ops.spec import LoopSettings, Partition, load_reference
from aod_ops.sql import SqlQuery
from aod_ops.storage import Location

PROMPT_FILE = "prompt.json"
HISTORY_FILE = "history.json"
RUN_FILE = "run.json"
ROUNDS_DIR = "rounds"
STOP_REASONS = ("target", "patience", "rounds")
# The fidelity figures history.json shows per round, beside the held-out rows'.
HEADLINE = ("quality", "detection_auc", "dcr_protection", "rule_violations", "repair_rate")
_FALLBACK_HINT = "set agent_fallback: editor in the spec to go on without it"


@dataclass(frozen=True)
class Evaluation:
    """A prompt sampled once (K candidates on its own seeds) and judged.

    ``source`` is ``"initial"``, ``"editor"`` or ``"agent"``; ``note`` says what the optimizer
    changed; ``scores`` the fidelity and privacy figures of the batch (``"table"``) beside the
    held-out rows' (``"holdout"``); ``seed`` is the run seed its candidates were drawn from;
    ``sampling_s`` and ``judging_s`` are wall-clock seconds, ``forwards`` the DLM's forward passes.
    """

    prompt: Prompt
    source: str
    note: str
    reward: float
    metrics: Metrics
    scores: dict[str, Any]
    feedback: str
    seed: int
    sampling_s: float
    judging_s: float
    forwards: int
    candidates: tuple[Candidate, ...]

    def to_dict(self) -> dict[str, Any]:
        """The evaluation as JSON-ready data (the prompt as its artifact's object)."""
        data = asdict(self)
        data["prompt"] = json.loads(self.prompt.to_json())
        data["metrics"] = self.metrics.as_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        """Read back ``to_dict``'s data (``KeyError``/``TypeError``/``DataError`` when malformed)."""
        return cls(
            prompt=Prompt.from_json(json.dumps(data["prompt"])),
            source=str(data["source"]),
            note=str(data["note"]),
            reward=float(data["reward"]),
            metrics=Metrics(**data["metrics"]),
            scores=dict(data["scores"]),
            feedback=str(data["feedback"]),
            seed=int(data["seed"]),
            sampling_s=float(data["sampling_s"]),
            judging_s=float(data["judging_s"]),
            forwards=int(data["forwards"]),
            candidates=tuple(
                Candidate(
                    c["text"],
                    c["record"],
                    tuple(c["errors"]),
                    int(c["seed"]),
                    slots=int(c["slots"]),
                    repaired=int(c["repaired"]),
                )
                for c in data["candidates"]
            ),
        )


@dataclass(frozen=True)
class RoundRecord:
    """One round: the prompt it started from, the proposals, and which one (if any) was accepted.

    ``sampled_start`` is True when the starting prompt was sampled in this round (round 1);
    ``accepted`` is the accepted proposal's version; ``proposing_s`` is the optimizer's time;
    ``agent_failures`` counts the agent's malformed or missing answers in this round;
    ``fallbacks`` says what went on without a failed model under ``agent_fallback: editor``
    (``"agent down: editor used (...)"``, ``"critic down: judged without it (...)"``).
    """

    number: int
    start: Evaluation
    sampled_start: bool
    proposals: tuple[Evaluation, ...]
    accepted: int | None
    proposing_s: float
    agent_failures: int = 0
    fallbacks: tuple[str, ...] = ()

    @property
    def best(self) -> Evaluation:
        """The evaluation of the prompt in force after the round."""
        return next((p for p in self.proposals if p.prompt.version == self.accepted), self.start)

    @property
    def improved(self) -> bool:
        """Whether the round raised the reward (an accepted equal reward is no improvement)."""
        return self.best.reward > self.start.reward

    @property
    def seconds(self) -> float:
        """The round's wall-clock time: sampling and judging what it sampled, and proposing."""
        sampled = [*([self.start] if self.sampled_start else []), *self.proposals]
        return sum(e.sampling_s + e.judging_s for e in sampled) + self.proposing_s

    @property
    def forwards(self) -> int:
        """DLM forward passes spent in the round."""
        sampled = [*([self.start] if self.sampled_start else []), *self.proposals]
        return sum(e.forwards for e in sampled)

    def to_dict(self) -> dict[str, Any]:
        """The round file's content: the prompt in force after the round with its reward, metrics
        and feedback first, then how the round got there."""
        best = self.best
        sampled = [*([self.start] if self.sampled_start else []), *self.proposals]
        return {
            "round": self.number,
            "prompt": json.loads(best.prompt.to_json()),
            "reward": best.reward,
            "metrics": best.metrics.as_dict(),
            "scores": best.scores,
            "feedback": best.feedback,
            "accepted": self.accepted,
            "improved": self.improved,
            "start": {**self.start.to_dict(), "sampled": self.sampled_start},
            "proposals": [
                {**p.to_dict(), "accepted": p.prompt.version == self.accepted} for p in self.proposals
            ],
            "timings": {
                "seconds": self.seconds,
                "sampling_s": sum(e.sampling_s for e in sampled),
                "judging_s": sum(e.judging_s for e in sampled),
                "proposing_s": self.proposing_s,
            },
            "forwards": self.forwards,
            "agent_failures": self.agent_failures,
            "fallbacks": list(self.fallbacks),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundRecord:
        """Read back ``to_dict``'s data (``KeyError``/``TypeError``/``DataError`` when malformed)."""
        return cls(
            number=int(data["round"]),
            start=Evaluation.from_dict(data["start"]),
            sampled_start=bool(data["start"]["sampled"]),
            proposals=tuple(Evaluation.from_dict(p) for p in data["proposals"]),
            accepted=None if data["accepted"] is None else int(data["accepted"]),
            proposing_s=float(data["timings"]["proposing_s"]),
            agent_failures=int(data["agent_failures"]),
            # Round files written before fallbacks were recorded have none.
            fallbacks=tuple(str(note) for note in data.get("fallbacks", ())),
        )


@dataclass(frozen=True)
class LoopResult:
    """A partition's optimized prompt and how the loop got there.

    ``stop`` is why the run ended (one of ``STOP_REASONS``); ``resumed`` is how many rounds were
    read back from the run directory instead of run.
    """

    partition: str
    run_dir: Location
    rounds: tuple[RoundRecord, ...]
    stop: str
    resumed: int

    @property
    def best(self) -> Evaluation:
        """The best prompt's evaluation."""
        return self.rounds[-1].best

    @property
    def best_prompt(self) -> Prompt:
        """The best prompt."""
        return self.best.prompt

    @property
    def best_reward(self) -> float:
        """The best prompt's reward."""
        return self.best.reward

    @property
    def prompt_path(self) -> Location:
        """The best prompt's artifact, ``<run_dir>/prompt.json``."""
        return storage.join(self.run_dir, PROMPT_FILE)

    @property
    def history_path(self) -> Location:
        """The run's summary, ``<run_dir>/history.json``."""
        return storage.join(self.run_dir, HISTORY_FILE)


def stop_reason(rounds: Sequence[RoundRecord], settings: LoopSettings) -> str | None:
    """Why a run with these rounds is over under ``settings``, or None when it goes on."""
    if not rounds:
        return None
    if rounds[-1].best.reward >= settings.target_reward:
        return "target"
    stale = 0
    for record in reversed(rounds):
        if record.improved:
            break
        stale += 1
    if stale >= settings.patience:
        return "patience"
    if len(rounds) >= settings.rounds:
        return "rounds"
    return None


def evaluation_seed(seed: int, round_number: int, slot: int) -> int:
    """The run seed of one evaluation: slot 0 is the round's starting prompt, 1..M its proposals.
    Every (partition seed, round, slot) draws fresh candidates."""
    digest = hashlib.sha256(f"aod-loop:{seed}:{round_number}:{slot}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


def _file_digest(path: Location | SqlQuery) -> str:
    if isinstance(path, SqlQuery):  # the rows it returned in this process: no second query
        return path.digest()
    return hashlib.sha256(storage.read_bytes(path)).hexdigest()


def run_settings(partition: Partition, settings: LoopSettings, agent_calls: int | None) -> dict[str, Any]:
    """What the rounds' content depends on (the stopping rules aside): a resume must match it."""
    return {
        "partition": partition.name,
        "schema_sha256": _file_digest(partition.schema_path),
        "reference_sha256": _file_digest(partition.reference_path),
        "holdout_sha256": None if partition.holdout_path is None else _file_digest(partition.holdout_path),
        "rules": [rule.text for rule in partition.rules],
        "notes": partition.notes,
        "sensitive": list(partition.sensitive),
        # What decides the records: not the server's timeout, retries or key.
        "dlm": {k: getattr(partition.dlm, k) for k in ("model", "trust_remote_code", "base_url")},
        "agent": {"base_url": partition.agent.base_url, "model": partition.agent.model},
        "critic": partition.critic,
        "seed": partition.seed,
        "decoding": asdict(partition.decoding),
        "candidates": settings.candidates,
        "proposals": settings.proposals,
        "agent_calls": agent_calls,
    }


def _write_json(path: Location, data: Any) -> None:
    # Written whole: a reader (synthesis, a resume) never sees a half-written file.
    storage.write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def _read_json(path: Location) -> Any:
    try:
        return json.loads(storage.read_text(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read the loop's record: {exc}") from exc


def read_rounds(run_dir: Location) -> list[RoundRecord]:
    """The rounds recorded in a run directory, in order (round files must be 1, 2, ... n).

    :raises DataError: naming the round file that is missing or malformed.
    """
    folder = storage.join(run_dir, ROUNDS_DIR)
    files = [f for f in storage.list_files(folder, ".json") if storage.name(f).startswith("round_")]
    rounds = []
    for number, path in enumerate(files, start=1):
        expected = storage.name(round_file(run_dir, number))
        if storage.name(path) != expected:
            raise DataError(f"{path}: expected {expected} (rounds are numbered in order)")
        try:
            record = RoundRecord.from_dict(_read_json(path))
        except (KeyError, TypeError, ValueError, DataError) as exc:
            raise DataError(f"{path}: not a round record: {exc}") from exc
        if record.number != number:
            raise DataError(f"{path}: holds round {record.number}, expected {number}")
        rounds.append(record)
    return rounds


def round_file(run_dir: Location, number: int) -> Location:
    """The file of round ``number``."""
    return storage.join(run_dir, ROUNDS_DIR, f"round_{number:02d}.json")


def _summary(evaluation: Evaluation) -> dict[str, Any]:
    """The headline figures of an evaluation (the round files keep them all): the metrics without
    per-field diversity, and the fidelity figures beside the held-out rows'."""
    table, holdout = evaluation.scores["table"], evaluation.scores["holdout"]
    return {
        **{k: v for k, v in evaluation.metrics.as_dict().items() if k != "field_diversity"},
        **{k: table[k] for k in HEADLINE},
        "holdout": {k: holdout[k] for k in HEADLINE},
    }


def history(partition: str, rounds: Sequence[RoundRecord], stop: str | None) -> dict[str, Any]:
    """The run's summary (``history.json``): the initial prompt's figures, one line per round (the
    prompt in force after it, the proposals' rewards), the best prompt, and the stop reason (None
    while the run goes on)."""
    lines = []
    for record in rounds:
        best = record.best
        lines.append(
            {
                "round": record.number,
                "reward": best.reward,
                "version": best.prompt.version,
                "start_version": record.start.prompt.version,
                "start_reward": record.start.reward,
                "accepted": record.accepted,
                "improved": record.improved,
                "metrics": _summary(best),
                "proposals": [
                    {
                        "version": p.prompt.version,
                        "source": p.source,
                        "note": p.note,
                        "reward": p.reward,
                        "validity": p.metrics.validity,
                        "tsr": p.metrics.tsr,
                        "quality": p.scores["table"]["quality"],
                        "detection_auc": p.scores["table"]["detection_auc"],
                        "field_overlap": p.metrics.field_overlap,
                    }
                    for p in record.proposals
                ],
                "seconds": record.seconds,
                "forwards": record.forwards,
                "fallbacks": list(record.fallbacks),
            }
        )
    final = rounds[-1].best if rounds else None
    initial = rounds[0].start if rounds else None
    return {
        "partition": partition,
        "initial": None
        if initial is None
        else {
            "version": initial.prompt.version,
            "reward": initial.reward,
            "metrics": _summary(initial),
        },
        "rounds": lines,
        "best": None
        if final is None
        else {
            "version": final.prompt.version,
            "reward": final.reward,
            "metrics": final.metrics.as_dict(),
            "scores": final.scores,
        },
        "stop": stop,
    }


class _Parts:
    """The loop's working parts for one partition, built once per run; the chat model (``chat``,
    else the one the partition's ``agent`` names) is loaded only when the critic or the agent will
    be asked."""

    def __init__(
        self,
        partition: Partition,
        settings: LoopSettings,
        agent_calls: int | None,
        chat: ChatModel | None = None,
    ) -> None:
        from aod_ops.dlm.models import load_denoiser
        from aod_ops.dlm.server import DLMServer
        from aod_ops.schema import compile_schema, load_schema

        self.partition = partition
        self.settings = settings
        self.schema = load_schema(partition.schema_path)
        self.reference = load_reference(partition)
        holdout = load_reference(partition, holdout=True) if partition.holdout_path is not None else None
        # The local SmolLM2 agent is too weak and slow to write proposals by default: the editor
        # does, unless the agent is an endpoint or ``agent_calls`` asks for it.
        use_agent = agent_calls != 0 and (partition.agent.base_url is not None or agent_calls is not None)
        if not (use_agent or partition.critic):
            chat = None
        elif chat is None:
            chat = chat_model_from_spec(partition.agent, partition.seed)
        fallback = partition.agent_fallback == "editor"
        self.judge = Judge(
            self.schema,
            self.reference,
            partition.sensitive,
            partition.notes,
            critic=chat if partition.critic else None,
            critic_fallback=fallback,
            holdout=holdout,
            rules=partition.rules,
        )
        # The optimizer's fidelity levers: guides from the reference, and exemplars to rotate
        # (none for personal data: its records are never put in front of the model).
        guides = derive_guides(
            compile_schema(self.schema).root,
            self.reference,
            partition.rules,
            seed=partition.seed,
            sensitive=partition.sensitive,
        )
        pool = (
            []
            if partition.sensitive
            else [json.dumps(row, separators=(",", ":"), ensure_ascii=False) for row in self.reference]
        )
        self.optimizer = Optimizer(
            agent=chat if use_agent else None,
            guides=guides,
            exemplar_pool=pool,
            agent_calls=agent_calls,
            fallback=fallback,
        )
        dlm = partition.dlm
        if dlm.base_url is not None:  # free mode only: load_spec refuses a server in skeleton mode
            self.generator = Generator(None, self.schema, server=DLMServer.from_setting(dlm))
        else:
            self.generator = Generator(load_denoiser(dlm.model, dlm.trust_remote_code), self.schema)

    def evaluate(
        self, prompt: Prompt, source: str, note: str, seed: int, on_batch: Callable[[int], None] | None
    ) -> tuple[Evaluation, Judgement]:
        """Sample K candidates with ``prompt`` on run seed ``seed`` and judge them."""
        started, forwards = time.perf_counter(), self.generator.stats.forwards
        try:
            candidates = self.generator.sample(
                prompt.render(self.schema.contents),
                self.settings.candidates,
                prompt.decoding,
                seed=seed,
                on_batch=None if on_batch is None else lambda batch: on_batch(len(batch)),
                guides=prompt.guides,
            )
        except ModelError as exc:  # a DLM server down, a record outgrowing the model: which partition
            raise ModelError(f"partition {self.partition.name!r}: {exc}") from exc
        sampling_s = time.perf_counter() - started
        spent = self.generator.stats.forwards - forwards
        judgement = self._judge(candidates, sampling_s, spent)
        evaluation = Evaluation(
            prompt=prompt,
            source=source,
            note=note,
            reward=judgement.reward,
            metrics=judgement.metrics,
            scores={"table": judgement.scorecard.as_dict(), "holdout": judgement.baseline.as_dict()},
            feedback=judgement.feedback,
            seed=seed,
            sampling_s=sampling_s,
            judging_s=time.perf_counter() - started - sampling_s,
            forwards=spent,
            candidates=tuple(candidates),
        )
        return evaluation, judgement

    def rejudge(self, evaluation: Evaluation) -> Judgement:
        """The judgement of recorded candidates: a resume needs its problems for the optimizer. The
        recorded reward stands (a critic, when configured, is asked again and may differ)."""
        return self._judge(evaluation.candidates, evaluation.sampling_s, evaluation.forwards)

    def _judge(self, candidates: Sequence[Candidate], sampling_s: float, forwards: int) -> Judgement:
        """The judge's judgement; a failed critic's ``ModelError`` says which partition it failed.
        A DLM server's forward passes are not counted: its cost figure is left unknown, not 0."""
        counted = forwards if self.generator.server is None else None
        try:
            return self.judge.judge(candidates, sampling_s, counted)
        except ModelError as exc:
            raise ModelError(
                f"partition {self.partition.name!r}: the critic failed: {exc}; {_FALLBACK_HINT}"
            ) from exc

    def run_round(
        self,
        number: int,
        start: Evaluation,
        judgement: Judgement,
        trials: list[Trial],
        next_version: int,
        on_batch: Callable[[int], None] | None,
    ) -> tuple[RoundRecord, Judgement]:
        """Propose, evaluate and accept for one round; returns the round and the judgement of the
        prompt in force after it."""
        proposals: list[Evaluation] = []
        judgements: list[Judgement] = []
        proposing_s = 0.0
        failures = 0
        fallbacks: list[str] = []
        if start.reward < self.settings.target_reward:
            malformed = self.optimizer.malformed
            started = time.perf_counter()
            try:
                revised = self.optimizer.propose(
                    start.prompt, judgement, trials, self.settings.proposals, next_version
                )
            except ModelError as exc:
                raise ModelError(
                    f"partition {self.partition.name!r} round {number}: the agent failed: {exc}; "
                    f"{_FALLBACK_HINT}"
                ) from exc
            proposing_s = time.perf_counter() - started
            failures = self.optimizer.malformed - malformed + (self.optimizer.down is not None)
            if self.optimizer.down is not None:
                fallbacks.append(f"agent down: editor used ({self.optimizer.down})")
            for slot, proposal in enumerate(revised, start=1):
                seed = evaluation_seed(self.partition.seed, number, slot)
                evaluation, judged = self.evaluate(
                    proposal.prompt, proposal.source, proposal.note, seed, on_batch
                )
                proposals.append(evaluation)
                judgements.append(judged)
                trials.append(Trial(evaluation.prompt, evaluation.reward, evaluation.metrics))
        accepted, after = None, judgement
        if proposals:
            index = max(range(len(proposals)), key=lambda i: (proposals[i].reward, -i))
            if proposals[index].reward >= start.reward:
                accepted, after = proposals[index].prompt.version, judgements[index]
        # The critic judged this round's samples: the starting prompt's in round 1, the proposals'.
        this_round = [judgement, *judgements] if number == 1 else judgements
        for reason in dict.fromkeys(j.critic_down for j in this_round):
            if reason is not None:
                fallbacks.append(f"critic down: judged without it ({reason})")
        record = RoundRecord(
            number, start, number == 1, tuple(proposals), accepted, proposing_s, failures, tuple(fallbacks)
        )
        return record, after


def optimize_partition(
    partition: Partition,
    out_dir: str | Path,
    rounds: int | None = None,
    candidates: int | None = None,
    *,
    proposals: int | None = None,
    agent_calls: int | None = None,
    restart: bool = False,
    on_round: Callable[[RoundRecord], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    chat: ChatModel | None = None,
) -> LoopResult:
    """Run (or resume) the AoD loop for one partition; write its run directory
    ``<out_dir>/<partition>/`` and return the best prompt and the rounds.

    :param rounds: the most rounds (default: the spec's ``loop.rounds``).
    :param candidates: K, candidates per evaluation (default: the spec's).
    :param proposals: M, revised prompts per round (default: the spec's).
    :param agent_calls: chat calls per round the agent may spend writing proposals. None: all
        the optimizer asks for when the agent is an endpoint, none for the local SmolLM2 (the
        deterministic editor writes them); 0: never.
    :param restart: discard a recorded run of this partition instead of resuming it.
    :param on_round: told each round once it is written (raising there stops the run; it
        resumes from the next round).
    :param on_batch: told how many candidates each finished DLM batch held (for progress).
    :param chat: the agent's and critic's chat model, such as an Airflow connection's
        (``AoDHook.get_chat_model``, its API key passed in); None: the one the partition's
        ``agent`` setting names.
    :raises SpecError: for a loop setting out of range.
    :raises DataError: when the run directory was made with other settings, or is unreadable.
    """
    overrides = {"rounds": rounds, "candidates": candidates, "proposals": proposals}
    try:
        settings = replace(partition.loop, **{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        raise SpecError(f"partition {partition.name!r}: loop: {exc}") from exc
    if agent_calls is not None and agent_calls < 0:
        raise SpecError(f"partition {partition.name!r}: agent_calls must be at least 0, got {agent_calls}")
    run_dir = storage.join(storage.locate(out_dir), partition.name)
    wanted = run_settings(partition, settings, agent_calls)
    if restart:
        for name in (RUN_FILE, HISTORY_FILE, PROMPT_FILE, ROUNDS_DIR):
            storage.remove(storage.join(run_dir, name))
    records = read_rounds(run_dir)
    if records:
        recorded = _read_json(storage.join(run_dir, RUN_FILE))
        changed = sorted(k for k in wanted.keys() | recorded.keys() if wanted.get(k) != recorded.get(k))
        if changed:
            raise DataError(
                f"{run_dir}: a run of other settings is recorded here ({', '.join(changed)} differ); "
                "use another output folder, or restart it"
            )
    _write_json(storage.join(run_dir, RUN_FILE), wanted)  # with no round recorded, there is nothing to keep
    resumed = len(records)

    def finish(stop: str) -> LoopResult:
        _write_json(storage.join(run_dir, HISTORY_FILE), history(partition.name, records, stop))
        return LoopResult(partition.name, run_dir, tuple(records), stop, resumed)

    stop = stop_reason(records, settings)
    if stop is not None:
        return finish(stop)
    parts = _Parts(partition, settings, agent_calls, chat)
    if records:
        trials = [
            Trial(e.prompt, e.reward, e.metrics)
            for r in records
            for e in ([r.start] if r.sampled_start else []) + list(r.proposals)
        ]
        current = records[-1].best
        judgement = parts.rejudge(current)
    else:
        first = initial_prompt(partition, parts.schema.contents, parts.reference)
        seed = evaluation_seed(partition.seed, 1, 0)
        current, judgement = parts.evaluate(
            first, "initial", "the spec's notes and exemplars", seed, on_batch
        )
        trials = [Trial(current.prompt, current.reward, current.metrics)]
    while stop is None:
        number = len(records) + 1
        next_version = max(t.prompt.version for t in trials) + 1
        record, judgement = parts.run_round(number, current, judgement, trials, next_version, on_batch)
        records.append(record)
        current = record.best
        stop = stop_reason(records, settings)
        _write_json(round_file(run_dir, number), record.to_dict())
        storage.write_text(storage.join(run_dir, PROMPT_FILE), current.prompt.to_json() + "\n")
        _write_json(storage.join(run_dir, HISTORY_FILE), history(partition.name, records, stop))
        if on_round is not None:
            on_round(record)
    return finish(stop)
