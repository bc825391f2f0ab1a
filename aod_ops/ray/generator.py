"""``DLMGenerator``: the DLM as a callable class for ``Dataset.map_batches``, one per actor.

Each actor loads the denoiser once, in ``__init__``, and turns each batch of seeds into candidate
records with the prompt of the partition each seed belongs to: one pool serves every partition
of a run that shares the model. A record depends only on its seed, the prompt and the model,
not on the actor or the batch it landed in, so a retried batch gives the same candidates. With a
DLM server the actor loads nothing: it sends each batch's prompts to the server (free mode).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import pyarrow as pa
import torch

from aod_ops.dlm.generate import Generator
from aod_ops.dlm.guides import Guides
from aod_ops.dlm.models import load_denoiser
from aod_ops.dlm.server import DLMServer
from aod_ops.dlm.settings import DecodingSettings
from aod_ops.hf import fast_dtype
from aod_ops.ray.adapter import Board
from aod_ops.schema import LoadedSchema
from aod_ops.spec import DLMSetting

CANDIDATES = pa.schema(
    [
        pa.field("partition", pa.string(), nullable=False),
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
"""A generated batch: the candidate's partition, its position in the partition's run
(``index``), its seed, the model's text, the parsed record as JSON text (null when it did not
parse), the parse or schema errors, whether it is valid, its share of the batch's model forward
passes, and its value slots and how many of them the compiler repaired (the repair rate's
counts)."""


@dataclass(frozen=True)
class PartitionPrompt:
    """What the generator needs of one partition: its schema, rendered prompt, decoding settings
    and value guides (None: none)."""

    schema: LoadedSchema
    prompt: str
    decoding: DecodingSettings
    guides: Guides | None = None


class DLMGenerator:
    """Writes candidate records, one batch of seeds at a time, for a partition and for the
    further partitions of the run that share its model.

    A batch's ``partition`` column names each seed's partition (without the column, every seed
    is ``partition``'s); seeds of a partition that the ``board`` says is finished are dropped
    unread.

    :param schema: the partition's loaded JSON Schema (it travels to the actor by value, so the
        workers need no access to the schema files).
    :param model: a built-in DLM name or a local model folder visible to the workers.
    :param trust_remote_code: allow a local model's own code (LLaDA, Dream).
    :param prompt: the rendered prompt text.
    :param decoding: the sampler settings (from the prompt artifact).
    :param threads: torch CPU threads for this actor (None leaves torch's default).
    :param device: ``"cuda"`` moves the model to the actor's GPU, in bf16.
    :param guides: the value guides (from the prompt artifact), or None.
    :param partition: the name of the partition that ``schema`` and ``prompt`` describe.
    :param partitions: further partitions by name, written with the same model.
    :param board: the run's ``Board`` (finished partitions; this actor counts its model load
        there), or None.
    :param server: the ``dlm`` setting of a server that serves ``model`` (free mode only): the
        actor writes with it and loads no model (its API key variable must be in the actor's
        environment); None loads ``model``.
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
        *,
        partition: str = "",
        partitions: Mapping[str, PartitionPrompt] | None = None,
        board: Board | None = None,
        server: DLMSetting | None = None,
    ) -> None:
        self.partition = partition
        self.prompts = {partition: PartitionPrompt(schema, prompt, decoding, guides), **(partitions or {})}
        self.board = board
        if server is not None:  # the server runs the model: nothing to load here
            served = DLMServer.from_setting(server)
            self.generators = {
                name: Generator(None, p.schema, server=served) for name, p in self.prompts.items()
            }
        else:
            if threads is not None:
                torch.set_num_threads(threads)
            denoiser = load_denoiser(model, trust_remote_code)
            if device != "cpu":
                denoiser.model.to(device=device, dtype=fast_dtype(device))
            self.generators = {name: Generator(denoiser, p.schema) for name, p in self.prompts.items()}
            if board is not None:
                board.count_load()

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Candidates for the batch's ``seed`` column (other input columns: ``index``, and
        ``partition``), in the batch's order, without the seeds of finished partitions."""
        names = (
            batch.column("partition").to_pylist()
            if "partition" in batch.column_names
            else [self.partition] * batch.num_rows
        )
        indices = batch.column("index").to_pylist()
        seeds = [int(s) for s in batch.column("seed").to_pylist()]
        finished = self.board.closed() if self.board is not None else frozenset()
        tables = []
        for name, rows in groupby(range(batch.num_rows), key=names.__getitem__):
            if name not in finished:
                run = list(rows)  # a batch may hold the end of one partition and the start of the next
                tables.append(self._candidates(name, [indices[i] for i in run], [seeds[i] for i in run]))
        return pa.concat_tables(tables) if tables else CANDIDATES.empty_table()

    def _candidates(self, name: str, indices: list[int], seeds: list[int]) -> pa.Table:
        """One partition's candidates for ``seeds``, as one model batch."""
        task, generator = self.prompts[name], self.generators[name]
        before = generator.stats.forwards
        candidates = generator.generate(task.prompt, seeds, task.decoding, task.guides)
        share = (generator.stats.forwards - before) / max(1, len(candidates))
        columns: dict[str, list[Any]] = {
            "partition": [name] * len(candidates),
            "index": indices,
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
