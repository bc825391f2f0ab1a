"""The judge agent: what is wrong with a batch of candidates, as verdicts, a reward and feedback.

Deterministic evaluators look at every candidate: parse errors, each JSON Schema error (with its
pointer and offending value), leaves copied from the reference sample, exact copies of reference
records, duplicates within the batch, and degenerate values (empty strings, repeated tokens,
placeholder text, garbled text). An optional LLM critic rates the realism of the remaining
records against the partition's notes; a critic that cannot be reached fails the judgement
(``ModelError``) unless the judge was told to go on without it (``critic_fallback``). Findings
are grouped into problems, most frequent first, and rendered into a feedback text of bounded
length for the optimizer.

A candidate is accepted (``Verdict.ok``) when it is valid, novel (no exact copy, not a repeat of an
earlier record of the batch), has no degenerate value, copies no sensitive reference value, and the
critic (when configured) does not reject it.

The reward ranks a batch as the metrics rank tables (``aod_ops.fidelity``): its fidelity against
the held-out real rows first, privacy as a gate relative to those rows, validity as a
precondition, repairs counted against the model. The feedback names, in numbers, the columns
whose values differ most from the held-out rows' and the cross-field rules broken.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any, Protocol

from aod_ops.agents.chat import ChatModel
from aod_ops.errors import ModelError
from aod_ops.fidelity import Scorecard, Yardstick, column_feedback, table_reward
from aod_ops.jsonvalues import canonical_json, first_json_value, json_pointer, pointer_tokens
from aod_ops.metrics import Metrics, Pointer, ReferenceIndex, compute_metrics, leaves
from aod_ops.rules import Rule
from aod_ops.schema import LoadedSchema, compile_schema, is_choice_leaf

FEEDBACK_CHARS = 1600
# Problem kinds, most severe first: the order breaks ties between equally frequent problems.
KINDS = ("parse", "schema", "exact_copy", "sensitive", "duplicate", "degenerate", "copied", "critic")
PLACEHOLDERS = frozenset(
    {"string", "str", "text", "test", "testing", "example", "sample", "placeholder", "value", "n/a", "na",
     "none", "null", "todo", "tbd", "foo", "bar", "baz", "asdf", "lorem", "lorem ipsum"}
)  # fmt: skip
_PLACEHOLDER_SHAPES = re.compile(r"lorem\b.*|x{3,}|\?+|\.{2,}|-+|_+|<[^>]*>", re.IGNORECASE)
_REPEATED_WORD = re.compile(r"\b(\w+)\b(?:\W+\1\b){2,}", re.IGNORECASE)
_REPEATED_UNIT = re.compile(r"([^\W\d_]{1,4}?)\1{3,}")  # letters only: "1000 Main St" is fine
_CRITIC_SYSTEM = (
    "You check synthetic data for realism. Answer with one JSON object only: "
    '{"realistic": true or false, "reason": "at most 15 words"}'
)


class CandidateLike(Protocol):
    """What the judge reads of a generated candidate (``aod_ops.dlm.generate.Candidate``)."""

    @property
    def text(self) -> str:
        """The generated text."""
        ...

    @property
    def record(self) -> Any | None:
        """The parsed record, or None when the text did not parse."""
        ...

    @property
    def errors(self) -> tuple[str, ...]:
        """The generator's parse or validation errors."""
        ...

    @property
    def slots(self) -> int:
        """Value slots the generator decoded for the record (0 when unknown)."""
        ...

    @property
    def repaired(self) -> int:
        """Slots whose text the compiler had to change to make it legal."""
        ...


@dataclass(frozen=True)
class Finding:
    """One thing wrong with one candidate.

    ``kind`` is one of ``KINDS``; ``field`` is the JSON pointer with array indices written ``*``
    ("" for the whole record); ``detail`` refines the kind (the failed schema keyword, the sort of
    degenerate value); ``message`` says it in one sentence with the pointer and the value.
    """

    kind: str
    field: str
    detail: str
    message: str
    value: Any = None


@dataclass(frozen=True)
class Verdict:
    """The judge's verdict on one candidate: accepted or not, and why not."""

    ok: bool
    findings: tuple[Finding, ...] = ()

    @property
    def reasons(self) -> tuple[str, ...]:
        """The findings as sentences."""
        return tuple(f.message for f in self.findings)


@dataclass(frozen=True)
class Problem:
    """A finding that recurs across the batch: how many candidates have it, one example, and the
    distinct values involved (at most five)."""

    kind: str
    field: str
    detail: str
    count: int
    example: str
    values: tuple[Any, ...] = ()

    def summary(self) -> str:
        """The problem in a few words, without the example."""
        where = self.field or "the record"
        return {
            "parse": "output is not JSON",
            "schema": f"{where} breaks the schema rule '{self.detail}'",
            "exact_copy": "exact copy of a reference record",
            "sensitive": f"{where} copies personal data from the reference",
            "duplicate": "repeats another record of the batch",
            "degenerate": f"{where} is {self.detail}",
            "copied": f"{where} copies reference values",
            "critic": "judged unrealistic",
        }[self.kind]


@dataclass(frozen=True)
class Judgement:
    """The judge's answer for one batch: per-candidate verdicts (in order), the recurring problems
    (most frequent first), the metrics, the fidelity and privacy scorecard beside the held-out
    rows' (``baseline``, the same number of real rows), the reward and the feedback text;
    ``critic_failures`` counts the candidates the critic gave no verdict on, and ``critic_down``
    says why the critic failed when the judge was told to go on without it."""

    verdicts: tuple[Verdict, ...]
    problems: tuple[Problem, ...]
    metrics: Metrics
    scorecard: Scorecard
    baseline: Scorecard
    reward: float
    feedback: str
    critic_failures: int = 0
    critic_down: str | None = None


def reward(card: Scorecard, baseline: Scorecard, accepted: float) -> float:
    """The judge's scalar reward in [0, 1]: ``table_reward`` (fidelity against the held-out rows
    first, privacy as a gate relative to them, validity as a precondition, repairs counted against
    the model), scaled by the share of candidates that also pass the judge's own gates (no
    degenerate value, no sensitive copy) among those that count for TSR."""
    if card.tsr <= 0:
        return 0.0
    return min(1.0, max(0.0, table_reward(card, baseline) * min(1.0, accepted / card.tsr)))


class Judge:
    """Judges batches of candidates for one partition.

    :param schema: the partition's loaded JSON Schema.
    :param reference: the reference sample (the real records the output must not copy).
    :param sensitive: top-level columns whose reference values must never reappear.
    :param notes: the partition's domain notes, shown to the critic.
    :param critic: a chat model that rates realism, or None for the deterministic judge only.
    :param critic_retries: extra attempts when the critic's answer is malformed.
    :param critic_fallback: when the critic fails (unreachable, timed out, not a chat completion),
        judge the batch without it and say why in ``Judgement.critic_down``; False: raise the
        ``ModelError``.
    :param feedback_chars: the feedback text's maximum length.
    :param skip_leaf: True for pointers whose schema is an enum, const or boolean (left out of
        field overlap); by default worked out from the compiled schema.
    :param holdout: real rows no model sees: the fidelity yardstick (without them, half of the
        reference is, and the scorecard says so).
    :param rules: the partition's cross-field rules.
    """

    def __init__(
        self,
        schema: LoadedSchema,
        reference: Sequence[Any],
        sensitive: Sequence[str] = (),
        notes: str = "",
        critic: ChatModel | None = None,
        critic_retries: int = 1,
        critic_fallback: bool = False,
        feedback_chars: int = FEEDBACK_CHARS,
        skip_leaf: Callable[[Pointer], bool] | None = None,
        holdout: Sequence[Any] | None = None,
        rules: Sequence[Rule] = (),
    ) -> None:
        self.schema = schema
        self.holdout = None if holdout is None else list(holdout)
        self.rules = tuple(rules)
        self.sensitive = tuple(sensitive)
        # One index for the judge's checks and its yardstick's figures. Sensitive columns compare
        # whole top-level values, as the privacy gates do.
        self.index = ReferenceIndex.of(list(reference), self.sensitive)
        self.notes = notes
        self.critic = critic
        self.critic_retries = critic_retries
        self.critic_fallback = critic_fallback
        self.feedback_chars = feedback_chars
        if skip_leaf is None:
            root = compile_schema(schema).root
            skip_leaf = cache(lambda pointer: is_choice_leaf(root, pointer))
        self.skip_leaf = skip_leaf

    @cached_property
    def yardstick(self) -> Yardstick:
        """The real rows the batches' fidelity and privacy are measured against (built on first use:
        a synthesis filter that only needs verdicts never pays for it)."""
        return Yardstick(self.schema, self.index, self.holdout, self.rules, self.sensitive)

    def verdicts(self, candidates: Sequence[CandidateLike]) -> tuple[Verdict, ...]:
        """Each candidate's verdict (in order), critic included: what a synthesis filter needs."""
        return tuple(
            Verdict(ok=not any(f.kind != "copied" for f in found), findings=tuple(found))
            for found in self._findings(candidates)[0]
        )

    def judge(
        self, candidates: Sequence[CandidateLike], seconds: float | None = None, forwards: int | None = None
    ) -> Judgement:
        """Verdicts, problems, metrics, scorecard, reward and feedback for one batch (in order).

        :param seconds: wall-clock time spent generating the batch, for the cost metrics.
        :param forwards: model forward passes spent on the batch, for the cost metrics.
        """
        findings, valid_flags, critic_failures, critic_down = self._findings(candidates)
        records = [c.record for c in candidates]
        critic_passed = [not any(f.kind == "critic" for f in found) for found in findings]
        metrics = compute_metrics(
            records,
            valid_flags,
            self.index,
            skip_leaf=self.skip_leaf,
            critic_passed=critic_passed if self.critic is not None else None,
            forwards=forwards,
            seconds=seconds,
        )
        verdicts = tuple(
            Verdict(ok=not any(f.kind != "copied" for f in found), findings=tuple(found))
            for found in findings
        )
        accepted = sum(v.ok for v in verdicts) / len(verdicts) if verdicts else 0.0
        slots = sum(getattr(c, "slots", 0) for c in candidates)
        card = self.yardstick.score(
            [r if ok else None for r, ok in zip(records, valid_flags, strict=True)],
            repair_rate=sum(getattr(c, "repaired", 0) for c in candidates) / slots if slots else None,
            critic_passed=critic_passed if self.critic is not None else None,
        )
        baseline = self.yardstick.baseline(len(candidates))
        score = reward(card, baseline, accepted)
        problems = _problems(findings)
        return Judgement(
            verdicts=verdicts,
            problems=problems,
            metrics=metrics,
            scorecard=card,
            baseline=baseline,
            reward=score,
            feedback=self._feedback(card, baseline, score, problems, len(candidates)),
            critic_failures=critic_failures,
            critic_down=critic_down,
        )

    def _findings(
        self, candidates: Sequence[CandidateLike]
    ) -> tuple[list[list[Finding]], list[bool], int, str | None]:
        """Every candidate's findings (the critic's included), validity flags, how many critic
        answers were missing or malformed, and why the critic failed (None when it did not).

        :raises ModelError: when the critic fails and ``critic_fallback`` is off.
        """
        findings: list[list[Finding]] = []
        valid_flags: list[bool] = []
        seen: dict[str, int] = {}
        for position, candidate in enumerate(candidates):
            found = self._evaluate(position, candidate, seen)
            valid_flags.append(not any(f.kind in ("parse", "schema") for f in found))
            findings.append(found)
        critic_failures, critic_down = 0, None
        if self.critic is not None:
            for position, candidate in enumerate(candidates):
                if any(f.kind != "copied" for f in findings[position]):
                    continue  # a rejected record is not worth the critic's time
                try:
                    verdict = None if critic_down else self._ask_critic(candidate.record)
                except ModelError as exc:
                    if not self.critic_fallback:
                        raise
                    critic_down, verdict = str(exc), None  # a failed critic is not asked again
                if verdict is None:
                    critic_failures += 1  # no verdict: the deterministic judge's word stands
                elif not verdict[0]:
                    message = f"record {position + 1} is unrealistic: {verdict[1] or 'no reason given'}"
                    findings[position].append(Finding("critic", "", "unrealistic", message))
        return findings, valid_flags, critic_failures, critic_down

    def _evaluate(self, position: int, candidate: CandidateLike, seen: dict[str, int]) -> list[Finding]:
        """The deterministic findings of one candidate; ``seen`` maps earlier records to positions."""
        name = f"record {position + 1}"
        record = candidate.record
        if record is None:
            error = candidate.errors[0] if candidate.errors else "not a JSON document"
            text = candidate.text.strip().replace("\n", " ")
            return [Finding("parse", "", "parse", f"{name} did not parse ({error}); it starts {text[:60]!r}")]
        issues = self.schema.errors(record)
        if issues:
            return [
                Finding(
                    "schema",
                    _field(issue.pointer),
                    issue.keyword,
                    f"{name} at {issue.pointer or '/'}: {_short(issue.value)} fails '{issue.keyword}': "
                    f"{issue.message[:120]}",
                    issue.value,
                )
                for issue in issues
            ]
        found: list[Finding] = []
        text = canonical_json(record)
        if text in self.index.canonical:
            found.append(
                Finding("exact_copy", "", "exact_copy", f"{name} is an exact copy of a reference record")
            )
        elif text in seen:
            found.append(Finding("duplicate", "", "duplicate", f"{name} repeats record {seen[text] + 1}"))
        seen.setdefault(text, position)
        for column in self.sensitive:
            if self.index.copies_sensitive(record, column):
                # The value is not repeated in the feedback: it is personal data.
                message = f"{name} at /{column}: the value is personal data copied from the reference"
                value = record[column]
                found.append(Finding("sensitive", json_pointer([column]), "sensitive", message, value))
        for pointer, leaf in leaves(record).items():
            if isinstance(leaf, str) and (kind := degenerate(leaf, pointer.rsplit("/", 1)[-1])):
                message = f"{name} at {pointer}: {_short(leaf)} is {kind}"
                found.append(Finding("degenerate", _field(pointer), kind, message, leaf))
            copied = not self.skip_leaf(pointer) and self.index.has_leaf(pointer, leaf)
            # An exact copy is reported once, as such; a sensitive column is reported above.
            if copied and text not in self.index.canonical and _column(pointer) not in self.sensitive:
                message = f"{name} at {pointer}: {_short(leaf)} is copied from the reference"
                found.append(Finding("copied", _field(pointer), "copied", message, leaf))
        return found

    def _ask_critic(self, record: Any) -> tuple[bool, str] | None:
        """The critic's ``(realistic, reason)`` for one record; None when its answers were malformed.

        :raises ModelError: when the critic cannot be reached.
        """
        assert self.critic is not None
        messages = [
            {"role": "system", "content": _CRITIC_SYSTEM},
            {
                "role": "user",
                "content": f"Domain: {self.notes}\nRecord: {canonical_json(record)}\nIs it realistic?",
            },
        ]
        for _ in range(self.critic_retries + 1):
            verdict = parse_critic(self.critic.complete(messages, max_tokens=60, temperature=0.2))
            if verdict is not None:
                return verdict
        return None

    def _feedback(
        self, card: Scorecard, baseline: Scorecard, score: float, problems: Sequence[Problem], n: int
    ) -> str:
        """The feedback text: the headline figures beside the held-out rows', the columns that
        differ most from real data (in numbers), then the problems, most frequent first, each with
        one example; cut to ``feedback_chars``."""
        repair = "n/a" if card.repair_rate is None else f"{card.repair_rate:.2f}"
        lines = [
            f"Reward {score:.2f} over {n} records. Figures as table (held-out real rows): "
            f"quality {card.quality:.2f} ({baseline.quality:.2f}), detection AUC {card.detection_auc:.2f} "
            f"({baseline.detection_auc:.2f}), field overlap {card.field_overlap:.2f} "
            f"({baseline.field_overlap:.2f}), rule violations {card.rule_violations:.2f} "
            f"({baseline.rule_violations:.2f}); validity {card.validity:.2f}, repair rate {repair}."
        ]
        mismatches = column_feedback(card)
        if mismatches:
            lines.append("Unlike real data, most costly first:")
            lines += [f"- {m}"[:240] for m in mismatches]
        if problems:
            lines.append("Problems, most frequent first:")
        room = self.feedback_chars - 30  # kept for the "(and N more problems)" line
        for shown, problem in enumerate(problems):
            line = f"- {problem.count}/{n}: {problem.summary()}. e.g. {problem.example}"[:240]
            if sum(len(x) + 1 for x in lines) + len(line) > room:
                lines.append(f"(and {len(problems) - shown} more problems)")
                break
            lines.append(line)
        return "\n".join(lines)[: self.feedback_chars]


def degenerate(value: str, key: str = "") -> str | None:
    """What makes a string value degenerate, or None: ``"an empty string"``; ``"garbled text"``
    (a replacement character from broken decoding, or control characters); ``"placeholder text"``
    (a word like "string", "test", "N/A", "lorem ipsum", "xxx", or the property's own name); or
    ``"repeated tokens"`` (a word three times in a row, or 1-4 letters four times: "aaaa")."""
    text = value.strip()
    if not text:
        return "an empty string"
    if any(c == "\ufffd" or unicodedata.category(c) in ("Cc", "Cs", "Co") for c in text):
        return "garbled text"
    lowered = text.lower()
    if lowered in PLACEHOLDERS or _PLACEHOLDER_SHAPES.fullmatch(text) or (key and lowered == key.lower()):
        return "placeholder text"
    if _REPEATED_WORD.search(text) or _REPEATED_UNIT.search(text):
        return "repeated tokens"
    return None


def parse_critic(answer: str) -> tuple[bool, str] | None:
    """The critic's answer as ``(realistic, reason)``: the first JSON object in the text, with a
    boolean ``realistic`` and a string ``reason``; None for anything else."""
    value = first_json_value(answer)
    if not isinstance(value, dict) or not isinstance(value.get("realistic"), bool):
        return None
    reason = value.get("reason", "")
    if not isinstance(reason, str):
        return None
    return value["realistic"], reason.strip()[:160]


def _column(pointer: str) -> str:
    """The top-level property a pointer lies under (unescaped)."""
    tokens = pointer_tokens(pointer)
    return tokens[0] if tokens else ""


def _field(pointer: str) -> str:
    """A pointer with array indices written ``*``: the field a problem is grouped under."""
    return re.sub(r"/\d+(?=/|$)", "/*", pointer)


def _short(value: Any, limit: int = 60) -> str:
    """A value as short JSON text."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _problems(findings: Sequence[Sequence[Finding]]) -> tuple[Problem, ...]:
    """Findings grouped by (kind, field, detail), counted once per candidate, most frequent
    first (ties: the more severe kind, then the field)."""
    groups: dict[tuple[str, str, str], list[Finding]] = {}
    for found in findings:
        for key in dict.fromkeys((f.kind, f.field, f.detail) for f in found):
            first = next(f for f in found if (f.kind, f.field, f.detail) == key)
            groups.setdefault(key, []).append(first)
    problems = []
    for (kind, field_name, detail), group in groups.items():
        values = tuple({canonical_json(f.value): f.value for f in group if f.value is not None}.values())[:5]
        problems.append(Problem(kind, field_name, detail, len(group), group[0].message, values))
    problems.sort(key=lambda p: (-p.count, KINDS.index(p.kind), p.field, p.detail))
    return tuple(problems)
