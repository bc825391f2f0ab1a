"""Candidate records from a denoiser: skeleton infilling (default) or free mode (the baseline).

``Generator.generate`` is the batch primitive: one candidate per seed, reproducible from the
seed (the record's random draws come from its own streams, its value guides' draw included).
Every candidate counts its value slots and how many of them the compiler had to repair (the
repair rate). Every candidate is parsed and
validated against the schema; model output is untrusted, so a record that does not parse or
does not validate comes back as a candidate with its errors, never as an exception. In free mode
the text may come from a DLM server instead of a local denoiser (``aod_ops.dlm.server``); it is
parsed and validated the same way.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from aod_ops.dlm.denoiser import Denoiser, PromptState
from aod_ops.dlm.guides import Guides
from aod_ops.dlm.infill import infill
from aod_ops.dlm.sampler import denoise
from aod_ops.dlm.server import DLMServer
from aod_ops.dlm.settings import DecodingSettings
from aod_ops.dlm.skeleton import Slot, fill, plan_ids, plan_records
from aod_ops.dlm.vocab import ANY, Vocab
from aod_ops.jsonvalues import first_json_value
from aod_ops.schema import CompiledSchema, LoadedSchema, compile_schema


@dataclass(frozen=True)
class Candidate:
    """One generated record: its text, the parsed value (None when it did not parse), errors.

    ``slots`` counts the record's string and number value slots (the text the model writes; a
    choice is decided among legal options and is never repaired), ``repaired`` those whose text
    the compiler had to change to make it legal. Free mode has no slots.
    """

    text: str
    record: Any | None
    errors: tuple[str, ...] = ()
    seed: int = 0
    slots: int = 0
    repaired: int = 0

    @property
    def valid(self) -> bool:
        """Parsed and valid against the schema."""
        return self.record is not None and not self.errors


@dataclass
class GenerationStats:
    """Cost counters of a generator: model forward passes, records, seconds, and (skeleton mode)
    the records' tokens after the prompt and how many of them were value slots' masks."""

    forwards: int = 0
    records: int = 0
    seconds: float = 0.0
    tokens: int = 0
    value_tokens: int = 0


def record_seed(seed: int, index: int) -> int:
    """The seed of record ``index`` of a run seeded with ``seed`` (runs do not overlap)."""
    return (seed * 1_000_003 + index) % (2**63 - 1)


def parse_free_text(text: str) -> Any | None:
    """The first JSON object or array in a free-mode response, or None (model output is untrusted:
    text nested too deep for the parser, or an integer too long to read, is no record either)."""
    return first_json_value(text, "{[")


@dataclass
class Generator:
    """Writes candidate records for one schema with one denoiser, or, in free mode only, with a
    DLM server (``server``, and no denoiser: the server's forward passes are not counted)."""

    denoiser: Denoiser | None
    schema: LoadedSchema
    compiled: CompiledSchema | None = None
    stats: GenerationStats = field(default_factory=GenerationStats)
    server: DLMServer | None = None

    def __post_init__(self) -> None:
        if (self.denoiser is None) == (self.server is None):
            raise ValueError("a Generator writes with a denoiser or a DLM server: give exactly one")
        if self.compiled is None:
            self.compiled = compile_schema(self.schema)
        if self.denoiser is not None:
            self.vocab = Vocab(self.denoiser)
        self._last_prompt: tuple[str, PromptState] | None = None

    def generate(
        self, prompt: str, seeds: Sequence[int], settings: DecodingSettings, guides: Guides | None = None
    ) -> list[Candidate]:
        """One candidate per seed, generated as one batch; ``guides`` (skeleton mode) steers each
        record's values toward its own draw from the reference's distribution."""
        if self.server is not None:
            return self._served(prompt, seeds, settings)
        assert self.denoiser is not None  # __post_init__: a denoiser when there is no server
        started, forwards = time.perf_counter(), self.denoiser.forwards
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        state = self._prompt_state(prompt)
        if settings.mode == "free":
            texts = self._free(state, settings, generators)
            candidates = [self._check(t, parse_free_text(t), s) for t, s in zip(texts, seeds, strict=True)]
        else:
            assert self.compiled is not None
            rngs = [random.Random(s) for s in seeds]
            drawn = [guides.draw(rng) for rng in rngs] if guides is not None else None
            planned = plan_records(
                self.vocab, state, self.compiled.root, settings.temperature, generators, guides, drawn
            )
            plans = [p for p, _ in planned]
            infill(self.vocab, state, plans, settings, generators, rngs, drawn)
            candidates = []
            for (plan, value), seed in zip(planned, seeds, strict=True):
                record = fill(value)
                slots = [p for p in plan if isinstance(p, Slot)]
                self.stats.tokens += len(plan_ids(self.vocab, plan))
                self.stats.value_tokens += sum(s.length for s in slots)
                candidates.append(
                    self._check(
                        json.dumps(record, ensure_ascii=False),
                        record,
                        seed,
                        len(slots),
                        sum(s.repaired for s in slots),
                    )
                )
        self.stats.forwards += self.denoiser.forwards - forwards
        self.stats.records += len(candidates)
        self.stats.seconds += time.perf_counter() - started
        return candidates

    def sample(
        self,
        prompt: str,
        n: int,
        settings: DecodingSettings,
        seed: int = 0,
        batch_size: int = 16,
        on_batch: Callable[[list[Candidate]], None] | None = None,
        guides: Guides | None = None,
    ) -> list[Candidate]:
        """``n`` candidates in batches of ``batch_size``; ``on_batch`` is told after each batch."""
        out: list[Candidate] = []
        for lo in range(0, n, batch_size):
            seeds = [record_seed(seed, i) for i in range(lo, min(n, lo + batch_size))]
            batch = self.generate(prompt, seeds, settings, guides)
            out += batch
            if on_batch is not None:
                on_batch(batch)
        return out

    def _served(self, prompt: str, seeds: Sequence[int], settings: DecodingSettings) -> list[Candidate]:
        """Free-mode candidates from the DLM server: its replies, parsed and validated."""
        assert self.server is not None
        started = time.perf_counter()
        texts = self.server.texts(prompt, seeds, settings)
        candidates = [self._check(t, parse_free_text(t), s) for t, s in zip(texts, seeds, strict=True)]
        self.stats.records += len(candidates)
        self.stats.seconds += time.perf_counter() - started
        return candidates

    def _free(
        self, prompt: PromptState, settings: DecodingSettings, generators: list[torch.Generator]
    ) -> list[str]:
        den = self.denoiser
        assert den is not None
        row = [den.mask_id] * settings.max_new_tokens
        ids = torch.tensor([row] * len(generators), device=den.device)
        attention = torch.ones_like(ids, dtype=torch.bool)
        vocab_class = torch.full_like(ids, ANY)
        filled = denoise(
            den, prompt, ids, attention, settings, generators, vocab_class, self.vocab.class_masks
        )
        texts = []
        for tokens in filled.tolist():
            if den.eos_id in tokens:
                tokens = tokens[: tokens.index(den.eos_id)]
            texts.append(den.decode(tokens))
        return texts

    def _prompt_state(self, prompt: str) -> PromptState:
        """The encoded prompt; a loop samples one prompt in many batches, so the last is kept."""
        den = self.denoiser
        assert den is not None
        if self._last_prompt is None or self._last_prompt[0] != prompt:
            self._last_prompt = (prompt, den.encode_prompt(den.encode(prompt)))
        return self._last_prompt[1]

    def _check(
        self, text: str, record: Any | None, seed: int, slots: int = 0, repaired: int = 0
    ) -> Candidate:
        if record is None:
            return Candidate(text, None, ("parse error: the output is not a JSON document",), seed)
        errors = tuple(f"{e.pointer or '/'}: {e.message}" for e in self.schema.errors(record))
        return Candidate(text, record, errors, seed, slots, repaired)
