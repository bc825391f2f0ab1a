"""The prompt-optimizer agent: revised prompts from the judge's feedback.

Two sources of proposals, tried in this order:

1. the deterministic editor (no model needed): it turns each recurring problem into an explicit
   rule of the instruction, drops exemplars whose values were copied, raises the temperature when
   diversity is low and lowers it when validity fell; its first proposal always leads, so a round
   never depends on the agent's output. Its other proposals pull the levers that move fidelity
   with the DLM frozen: value guides derived from the reference (switched on, then their windows
   made finer when the table is less like real data than the held-out rows are, or wider when it
   sits closer to the reference than they do), the commit order inside a free-text slot, and
   exemplars rotated through the reference;
2. the agent (a ``ChatModel``), asked for a rewritten instruction as one JSON object; its answers
   are parsed strictly, a malformed one is retried and then skipped (and counted in
   ``Optimizer.malformed``), never a crash. An agent that cannot be reached (or whose endpoint
   answers something that is no chat completion) fails the proposal with ``ModelError``, unless
   the optimizer was made with ``fallback=True``: then the editor writes the proposals and
   ``Optimizer.down`` says why;

and further editor variants fill whatever is left. Proposals are distinct from each other and from
every prompt already tried.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from aod_ops.agents.chat import ChatModel
from aod_ops.agents.judge import Judgement, Problem
from aod_ops.agents.prompt import Prompt
from aod_ops.dlm.guides import Guides
from aod_ops.dlm.settings import MAX_TEMPERATURE
from aod_ops.errors import ModelError
from aod_ops.fidelity import Scorecard
from aod_ops.jsonvalues import canonical_json, first_json_value
from aod_ops.metrics import Metrics, leaves

RULES_HEADER = "\nRules:"
MAX_RULES = 8
MAX_INSTRUCTION_CHARS = 1500
MIN_TEMPERATURE = 0.1
TEMPERATURE_STEP = 0.15
LOW_DIVERSITY = 0.9
MIN_BINS, MAX_BINS = 2, 40
_AGENT_SYSTEM = (
    "You improve the instruction given to a model that writes synthetic JSON records. "
    'Reply with one JSON object only: {"instruction": "<the full improved instruction>"}'
)


@dataclass(frozen=True)
class Trial:
    """A prompt that was evaluated: its reward and metrics (an entry of the optimizer's history)."""

    prompt: Prompt
    reward: float
    metrics: Metrics


@dataclass(frozen=True)
class Proposal:
    """A revised prompt, where it came from (``"editor"`` or ``"agent"``) and what changed."""

    prompt: Prompt
    source: str
    note: str


def split_instruction(instruction: str) -> tuple[str, list[str]]:
    """An instruction's free text and its rule lines (the ``- ...`` lines after ``Rules:``)."""
    core, _, rules = instruction.partition(RULES_HEADER)
    return core.rstrip(), [line[2:].strip() for line in rules.splitlines() if line.startswith("- ")]


def join_instruction(core: str, rules: Sequence[str]) -> str:
    """The instruction with its rules, at most ``MAX_RULES`` and ``MAX_INSTRUCTION_CHARS`` (the
    first rules are kept: they are the most recent and most frequent)."""
    kept: list[str] = []
    for rule in dict.fromkeys(rules):
        text = core + RULES_HEADER + "".join(f"\n- {r}" for r in [*kept, rule])
        if len(kept) == MAX_RULES or len(text) > MAX_INSTRUCTION_CHARS:
            break
        kept.append(rule)
    if not kept:
        return core[:MAX_INSTRUCTION_CHARS]
    return core + RULES_HEADER + "".join(f"\n- {r}" for r in kept)


def rule_for(problem: Problem) -> str:
    """The explicit instruction that answers a recurring problem."""
    name = problem.field.lstrip("/") or "the record"
    if problem.kind == "schema":
        by_keyword = {
            "required": "Always include every required property.",
            "additionalProperties": "Use only the properties the schema defines.",
            "type": f"Give {name} the JSON type the schema requires.",
            "enum": f"Use only the allowed values for {name}.",
            "const": f"Use only the allowed value for {name}.",
            "pattern": f"Write {name} in exactly the required pattern.",
            "format": f"Write {name} in the required format.",
            "minLength": f"Do not make {name} too short.",
            "maxLength": f"Keep {name} short enough.",
        }
        if problem.detail in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            return f"Keep {name} within its allowed range."
        return by_keyword.get(problem.detail, f"Make {name} satisfy the schema's '{problem.detail}' rule.")
    return {
        "parse": "Write exactly one complete JSON object and nothing else.",
        "exact_copy": "Never reproduce a real record: invent every record.",
        "sensitive": f"{name} is personal data: invent a fictitious value, never a real one.",
        "duplicate": "Make every record different from all the others.",
        "degenerate": f"Give {name} a specific, realistic value: no empty, placeholder or repeated text.",
        "copied": f"Invent new values for {name} instead of reusing values from real records.",
        "critic": "Make every record realistic and internally consistent for the domain.",
    }[problem.kind]


def recurring(problems: Sequence[Problem], candidates: int) -> list[Problem]:
    """The problems worth a rule: those in at least two candidates or a quarter of them, and any
    copy of personal data or of a whole record (the most frequent problem when none is)."""
    found = [
        p
        for p in problems
        if p.count >= 2 or p.count * 4 >= candidates or p.kind in ("sensitive", "exact_copy")
    ]
    return found or list(problems[:1])


def rules_for(problems: Sequence[Problem]) -> list[str]:
    """One rule per problem, in order, except that all copied fields share one rule."""
    copied = [p.field.lstrip("/") for p in problems if p.kind == "copied"]
    rules = []
    for problem in problems:
        if problem.kind != "copied":
            rules.append(rule_for(problem))
        elif problem.field.lstrip("/") == copied[0]:  # the first copied field stands for all
            rules.append(rule_for(replace(problem, field=_and(copied))))
    return list(dict.fromkeys(rules))


def _and(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def copied_exemplars(exemplars: Sequence[str], problems: Sequence[Problem]) -> set[str]:
    """The exemplars holding a value the batch copied (at the field where it was copied)."""
    copied = {
        (p.field, canonical_json(v)) for p in problems if p.kind in ("copied", "sensitive") for v in p.values
    }
    dropped = set()
    for exemplar in exemplars:
        try:
            record = json.loads(exemplar)
        except json.JSONDecodeError:
            dropped.add(exemplar)  # an unreadable exemplar only confuses the model
            continue
        if any((pointer, canonical_json(leaf)) in copied for pointer, leaf in leaves(record).items()):
            dropped.add(exemplar)
    return dropped


def parse_agent_answer(answer: str) -> str | None:
    """The instruction in the agent's answer: the first JSON object in the text, with an
    ``instruction`` string of 20 to ``MAX_INSTRUCTION_CHARS`` characters; None for anything else."""
    value = first_json_value(answer)
    instruction = value.get("instruction") if isinstance(value, dict) else None
    if not isinstance(instruction, str) or not 20 <= len(instruction.strip()) <= MAX_INSTRUCTION_CHARS:
        return None
    return instruction.strip()


class Optimizer:
    """Proposes revised prompts.

    :param agent: the chat model that rewrites instructions, or None for the editor alone.
    :param retries: extra attempts per agent proposal when its answer is malformed.
    :param max_history: how many earlier trials the agent is shown (the most recent).
    :param max_tokens: the longest answer asked of the agent (an instruction is a paragraph).
    :param guides: the partition's value guides (derived from its reference sample), which a
        proposal may switch on and retune; None: the editor has no guides to offer.
    :param exemplar_pool: reference records as JSON text that exemplars rotate through (empty for
        a partition with personal data: its records are never shown to the model).
    :param agent_calls: the most chat calls the agent may spend per ``propose`` (None: as many as
        the proposals need); once they are spent the editor writes the rest.
    :param fallback: when the agent fails (unreachable, timed out, not a chat completion), let the
        editor write the proposals and record why in ``down``; False: raise the ``ModelError``.
    """

    def __init__(
        self,
        agent: ChatModel | None = None,
        retries: int = 1,
        max_history: int = 5,
        max_tokens: int = 300,
        guides: Guides | None = None,
        exemplar_pool: Sequence[str] = (),
        agent_calls: int | None = None,
        fallback: bool = False,
    ) -> None:
        self.agent = agent
        self.guides = guides
        self.exemplar_pool = tuple(exemplar_pool)
        self.retries = retries
        self.max_history = max_history
        self.max_tokens = max_tokens
        self.agent_calls = agent_calls
        self.fallback = fallback
        self.malformed = 0  # agent answers that were malformed, over the optimizer's life
        self.down: str | None = None  # why the agent failed in the last ``propose`` (fallback only)
        self._calls_left: int | None = None

    def propose(
        self, prompt: Prompt, judgement: Judgement, history: Sequence[Trial], count: int, next_version: int
    ) -> list[Proposal]:
        """``count`` distinct revisions of ``prompt`` (the one ``judgement`` is about), numbered
        from ``next_version``.

        :param history: earlier trials, oldest first (the current prompt's parent among them).
        :raises ModelError: when the agent fails and ``fallback`` is off.
        """
        tried = {_content(t.prompt) for t in history} | {_content(prompt)}
        edits = self._edits(prompt, judgement, history)
        proposals: list[Proposal] = []

        def add(candidate: Prompt, source: str, note: str) -> None:
            if len(proposals) < count and _content(candidate) not in tried:
                tried.add(_content(candidate))
                version = next_version + len(proposals)
                proposals.append(
                    Proposal(replace(candidate, version=version, parent=prompt.version), source, note)
                )

        first, *others = edits
        add(*first)
        self.down, self._calls_left = None, self.agent_calls
        if self.agent is not None:
            for _ in range(count - len(proposals)):
                if self._calls_left is not None and self._calls_left <= 0:
                    break  # the budget is spent: the editor writes the rest
                try:
                    instruction = self._ask_agent(prompt, judgement, history)
                except ModelError as exc:
                    if not self.fallback:
                        raise
                    # A failed agent is not asked again this round; the editor fills in.
                    self.down = str(exc)
                    break
                if instruction is not None:
                    add(
                        replace(first[0], instruction=instruction),
                        "agent",
                        "instruction rewritten by the agent",
                    )
        for edit in others:
            add(*edit)
        return proposals

    def _edits(
        self, prompt: Prompt, judgement: Judgement, history: Sequence[Trial]
    ) -> list[tuple[Prompt, str, str]]:
        """The editor's variants, best first: all fixes (with value guides switched on when the
        prompt has none); the fidelity levers the scorecard points to; a bolder temperature step;
        no exemplars; then small temperature moves, enough to make ``count`` distinct proposals."""
        metrics = judgement.metrics
        core, old_rules = split_instruction(prompt.instruction)
        new_rules = rules_for(recurring(judgement.problems, metrics.candidates))
        instruction = join_instruction(core, [*new_rules, *old_rules])
        dropped = copied_exemplars(prompt.exemplars, judgement.problems)
        exemplars = tuple(e for e in prompt.exemplars if e not in dropped)
        direction = _temperature_direction(prompt, metrics, judgement.problems, history)
        base = prompt.decoding.temperature
        guides = prompt.guides if prompt.guides is not None else self.guides

        def variant(
            temperature: float, keep: tuple[str, ...], what: str, **changes: Any
        ) -> tuple[Prompt, str, str]:
            temperature = round(min(MAX_TEMPERATURE, max(MIN_TEMPERATURE, temperature)), 3)
            decoding = replace(prompt.decoding, temperature=temperature, **changes.pop("decoding", {}))
            revised = replace(
                prompt,
                instruction=instruction,
                exemplars=keep,
                decoding=decoding,
                guides=changes.pop("guides"),
            )
            notes = [f"{len(new_rules)} rule(s) from the feedback"] if new_rules else []
            if revised.guides is not None and prompt.guides is None:
                notes.append(
                    f"value guides on ({len(revised.guides.fields)} fields, {revised.guides.bins} bins)"
                )
            elif revised.guides is not None and prompt.guides is not None and revised.guides != prompt.guides:
                notes.append(f"guide windows {prompt.guides.bins} -> {revised.guides.bins} bins")
            if decoding.order != prompt.decoding.order:
                notes.append(f"commit order {prompt.decoding.order} -> {decoding.order}")
            if set(keep) - set(prompt.exemplars):
                notes.append(f"exemplars rotated ({len(keep)})")
            elif len(keep) < len(prompt.exemplars):
                notes.append(f"{len(prompt.exemplars) - len(keep)} exemplar(s) dropped")
            if temperature != base:
                notes.append(f"temperature {base:g} -> {temperature:g}")
            return revised, "editor", f"{what}: " + (", ".join(notes) or "unchanged")

        step = base + direction * TEMPERATURE_STEP
        other_order = "left_to_right" if prompt.decoding.order == "confidence" else "confidence"
        edits = [variant(step, exemplars, "all fixes", guides=guides)]
        if guides is not None:
            for bins in _bins_to_try(guides.bins, judgement.scorecard, judgement.baseline):
                edits.append(variant(step, exemplars, "guide windows", guides=replace(guides, bins=bins)))
        edits.append(variant(step, exemplars, "commit order", guides=guides, decoding={"order": other_order}))
        if self.exemplar_pool:
            rotated = tuple(
                random.Random(prompt.version).sample(
                    self.exemplar_pool, min(max(2, len(exemplars)), len(self.exemplar_pool))
                )
            )
            edits.append(variant(step, rotated, "exemplars", guides=guides))
        edits += [
            variant(
                base + (direction or 1) * 2 * TEMPERATURE_STEP, exemplars, "bolder temperature", guides=guides
            ),
            variant(step, (), "no exemplars", guides=guides),
        ]
        for nudge in range(1, 40):
            sign = 1 if nudge % 2 else -1
            edits.append(variant(step + sign * 0.05 * nudge, exemplars, "nudge", guides=guides))
        return edits

    def _ask_agent(self, prompt: Prompt, judgement: Judgement, history: Sequence[Trial]) -> str | None:
        """One rewritten instruction from the agent, or None after ``retries`` malformed answers
        (or when the call budget runs out).

        :raises ModelError: when the agent cannot be reached.
        """
        assert self.agent is not None
        recent = history[-self.max_history :]
        tried = (
            "\n".join(f"- reward {t.reward:.2f}: {t.prompt.instruction[:200]!r}" for t in recent) or "- none"
        )
        messages = [
            {"role": "system", "content": _AGENT_SYSTEM},
            {
                "role": "user",
                "content": f"Current instruction:\n{prompt.instruction}\n\nFeedback on its records:\n"
                f"{judgement.feedback}\n\nEarlier instructions:\n{tried}\n\n"
                "Write an improved instruction that fixes the problems.",
            },
        ]
        for _ in range(self.retries + 1):
            if self._calls_left is not None:
                if self._calls_left <= 0:
                    return None
                self._calls_left -= 1
            instruction = parse_agent_answer(
                self.agent.complete(messages, max_tokens=self.max_tokens, temperature=0.7)
            )
            if instruction is not None:
                return instruction
            self.malformed += 1
        return None


def _temperature_direction(
    prompt: Prompt, metrics: Metrics, problems: Sequence[Problem], history: Sequence[Trial]
) -> int:
    """-1 when validity fell below the parent prompt's (valid records first), +1 when diversity is
    low (repeated records or values), else 0."""
    parent = next((t for t in reversed(history) if t.prompt.version == prompt.parent), None)
    if parent is not None and metrics.validity < parent.metrics.validity:
        return -1
    if metrics.valid and (metrics.diversity < LOW_DIVERSITY or any(p.kind == "duplicate" for p in problems)):
        return 1
    return 0


def _bins_to_try(bins: int, card: Scorecard, baseline: Scorecard) -> list[int]:
    """Window widths worth a proposal, most promising first: wider windows when the table sits
    closer to the reference than the held-out rows do (DCR protection or field overlap), finer
    ones when it is less like real data than they are."""
    wider, finer = max(MIN_BINS, bins // 2), min(MAX_BINS, bins * 2)
    too_close = (
        card.dcr_protection < 0.9 * baseline.dcr_protection
        or card.field_overlap > baseline.field_overlap + 0.05
    )
    unlike = card.quality < baseline.quality
    order = [wider, finer] if too_close or not unlike else [finer, wider]
    return [b for b in dict.fromkeys(order) if b != bins]


def _content(prompt: Prompt) -> tuple[Any, ...]:
    """What makes two prompts the same proposal (the version numbers aside)."""
    return prompt.instruction, prompt.exemplars, prompt.decoding, prompt.guides
