"""``DLMGenerator``: the DLM as a callable class for ``Dataset.map_batches``, one per actor.

Each actor loads the denoiser once, in ``__init__``, and turns each batch of seeds into candidate
records with the partition's prompt. A record depends only on its seed, the prompt and the
model, not on the actor or the batch it landed in, so a retried batch gives the same candidates.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import torch

from aod_ops.dlm.generate import Generator
from aod_ops.dlm.guides import Guides
from aod_ops.dlm.models import load_denoiser
from aod_ops.dlm.settings import DecodingSettings
from aod_ops.hf import fast_dtype
from aod_ops.schema import LoadedSchema

CANDIDATES = pa.schema(
    [
        pa.field("index", pa.int64(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("record", pa.string()),
        pa.field("errors", pa.list_(pa.string()), nullable=False),
        pa.field("valid", pa.bool_(), nullable=False),
        pa.field("forwards", pa.float64(), nullable=False),
        pa.field("slots", pa.int64(), nullable=False),
        pa.field("repaired", pa.int64(), nullable=False),
    ]
)
"""A generated batch: the candidate's position in the run (``index``), its seed, the model's
text, the parsed record as JSON text (null when it did not parse), the parse or schema errors,
whether it is valid, its share of the batch's model forward passes, and its value slots and how
many of them the compiler repaired (the repair rate's counts)."""


class DLMGenerator:
    """Writes candidate records for one partition, one batch of seeds at a time.

    :param schema: the partition's loaded JSON Schema (it travels to the actor by value, so the
        workers need no access to the schema files).
    :param model: a built-in DLM name or a local model folder visible to the workers.
    :param trust_remote_code: allow a local model's own code (LLaDA, Dream).
    :param prompt: the rendered prompt text.
    :param decoding: the sampler settings (from the prompt artifact).
    :param guides: the value guides (from the prompt artifact), or None.
    :param threads: torch CPU threads for this actor (None leaves torch's default).
    :param device: ``"cuda"`` moves the model to the actor's GPU, in bf16.
    """

    def __init__(
        self,
        schema: LoadedSchema,
        model: str,
        trust_remote_code: bool,
        prompt: str,
        decoding: DecodingSettings,
        threads: int | None = None,
        device: str = "cpu",
        guides: Guides | None = None,
    ) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        denoiser = load_denoiser(model, trust_remote_code)
        if device != "cpu":
            denoiser.model.to(device=device, dtype=fast_dtype(device))
        self.generator = Generator(denoiser, schema)
        self.prompt = prompt
        self.decoding = decoding
        self.guides = guides

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Candidates for the batch's ``seed`` column (other input columns: ``index``)."""
        seeds = [int(s) for s in batch.column("seed").to_pylist()]
        before = self.generator.stats.forwards
        candidates = self.generator.generate(self.prompt, seeds, self.decoding, self.guides)
        share = (self.generator.stats.forwards - before) / max(1, len(candidates))
        columns: dict[str, list[Any]] = {
            "index": batch.column("index").to_pylist(),
            "seed": seeds,
            "text": [c.text for c in candidates],
            "record": [
                None if c.record is None else json.dumps(c.record, ensure_ascii=False) for c in candidates
            ],
            "errors": [list(c.errors) for c in candidates],
            "valid": [c.valid for c in candidates],
            "forwards": [share] * len(candidates),
            "slots": [c.slots for c in candidates],
            "repaired": [c.repaired for c in candidates],
        }
        return pa.Table.from_pydict(columns, schema=CANDIDATES)
