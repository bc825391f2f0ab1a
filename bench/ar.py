"""The autoregressive baselines of the quality benchmark: SmolLM2-135M-Instruct asked for a record.

Two systems share one code path, ``transformers``' ``generate`` on the same chat prompt with the
same sampling settings; they differ only in the constraint:

- ``ar``: unconstrained sampling (the paper's autoregressive baseline);
- ``ar-constrained``: grammar-constrained JSON through Outlines (its ``outlines_core`` backend),
  the tool a user would pick instead. Outlines compiles the JSON Schema to a regular expression
  over tokens: structure, keys, types, enums and string lengths are enforced. Numeric
  ``minimum``/``maximum`` are not (outlines_core 0.2 ignores them), nor are ``pattern`` and
  ``format`` on a string that also has ``minLength``/``maxLength`` (the length rule wins), as
  every string of the example schemas has: such records can still fail validation.

This is the one module that calls Outlines (a fast-moving API).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import torch

from aod_ops.dlm.generate import Candidate, parse_free_text
from aod_ops.dlm.prompting import RECORD_MARKER
from aod_ops.hf import load_smollm2
from aod_ops.schema import LoadedSchema

OUTLINES_BACKEND = "outlines_core"
ANSWER_RULE = "Reply with the JSON object only."


@dataclass(frozen=True)
class ARBatch:
    """A batch of autoregressive candidates and its cost: ``forwards`` batched forward passes
    (one per generated position, the prompt's prefill included) and ``seconds`` of sampling."""

    candidates: list[Candidate]
    forwards: int
    seconds: float


def chat_message(rendered_prompt: str) -> str:
    """The user message for the chat model: the DLM's free-mode prompt (instruction, schema,
    exemplars) without the DLM's record marker, and a rule to answer with JSON only."""
    return rendered_prompt.removesuffix(RECORD_MARKER).rstrip() + "\n" + ANSWER_RULE


class ARSampler:
    """SmolLM2-135M-Instruct writing records of one schema, unconstrained or through Outlines.

    :param schema: the partition's loaded schema (for validation and the constraint).
    :param constrained: True for grammar-constrained JSON decoding.
    """

    def __init__(self, schema: LoadedSchema, constrained: bool) -> None:
        self.schema = schema
        self.constrained = constrained
        self.model, self.tokenizer = load_smollm2()
        self.tokenizer.padding_side = "left"  # a batch of prompts ends where generation starts
        self.processor: Any = None
        self.compile_s = 0.0
        if constrained:
            import outlines
            from outlines.backends import get_json_schema_logits_processor

            started = time.perf_counter()
            self.processor = get_json_schema_logits_processor(
                OUTLINES_BACKEND,
                outlines.from_transformers(self.model, self.tokenizer),
                json.dumps(schema.contents),
            )
            self.compile_s = time.perf_counter() - started

    @torch.no_grad()
    def generate(self, message: str, seeds: list[int], max_new_tokens: int, temperature: float) -> ARBatch:
        """One candidate per seed, sampled as one batch (torch seeded with the batch's first
        seed: a batch is reproducible as a whole)."""
        from transformers import LogitsProcessorList

        started = time.perf_counter()
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
        inputs = self.tokenizer([text] * len(seeds), return_tensors="pt", padding=True)
        processors = None
        if self.processor is not None:
            self.processor.reset()  # its state is per batch of sequences
            processors = LogitsProcessorList([self.processor])
        torch.manual_seed(seeds[0])
        output = self.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            logits_processor=processors,
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        )
        generated = output[:, inputs["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        candidates = [self._check(t, s) for t, s in zip(texts, seeds, strict=True)]
        return ARBatch(candidates, int(generated.shape[1]), time.perf_counter() - started)

    def _check(self, text: str, seed: int) -> Candidate:
        record = parse_free_text(text)
        if record is None:
            return Candidate(text, None, ("parse error: the output is not a JSON document",), seed)
        errors = tuple(f"{e.pointer or '/'}: {e.message}" for e in self.schema.errors(record))
        return Candidate(text, record, errors, seed)
