"""``CandidateJudge``: the judge agent as a ``map_batches`` stage after the generator pool.

It runs the judge's deterministic evaluators on every candidate (parse and schema errors,
exact copies of reference records, values of sensitive columns copied from the reference,
repeats within the batch, degenerate values) and, when the partition asks for one, the LLM
critic, with the judge of the partition each candidate belongs to. The reference sample reaches
the actor through the object store (one ``put`` per partition), not inside every batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby

import pyarrow as pa

from aod_ops.agents.chat import chat_model_from_spec
from aod_ops.agents.judge import Judge
from aod_ops.dlm.generate import Candidate
from aod_ops.ray import adapter
from aod_ops.schema import LoadedSchema
from aod_ops.spec import AgentSetting

VERDICTS = pa.schema(
    [
        pa.field("ok", pa.bool_(), nullable=False),
        pa.field("kinds", pa.list_(pa.string()), nullable=False),
        pa.field("reasons", pa.list_(pa.string()), nullable=False),
    ]
)
"""The columns the judge adds to a generated batch: accepted or not, the kinds of the problems
found (``aod_ops.agents.judge.KINDS``) and one sentence per problem."""


@dataclass(frozen=True)
class PartitionJudging:
    """What the judge needs of one partition (``CandidateJudge``'s parameters)."""

    schema: LoadedSchema
    reference: object
    sensitive: Sequence[str] = ()
    notes: str = ""
    critic: AgentSetting | None = None
    seed: int = 0


class CandidateJudge:
    """Judges batches of candidates (``aod_ops.ray.generator.CANDIDATES``) for a partition and
    for the further partitions of the run, each candidate by its ``partition``'s judge.
    Candidates of a partition the ``board`` says is finished are dropped.

    :param schema: the partition's loaded JSON Schema.
    :param reference: the object-store reference of the reference sample (from ``adapter.put``).
    :param sensitive: top-level columns whose reference values must never reappear.
    :param notes: the partition's domain notes, for the critic.
    :param critic: the agent setting of the LLM critic, or None for the deterministic judge.
    :param seed: the critic's sampling seed.
    :param partition: the name of the partition the parameters above describe.
    :param partitions: further partitions by name.
    :param board: the run's ``adapter.Board``, or None.
    """

    def __init__(
        self,
        schema: LoadedSchema,
        reference: object,
        sensitive: Sequence[str] = (),
        notes: str = "",
        critic: AgentSetting | None = None,
        seed: int = 0,
        *,
        partition: str = "",
        partitions: Mapping[str, PartitionJudging] | None = None,
        board: adapter.Board | None = None,
    ) -> None:
        settings = {
            partition: PartitionJudging(schema, reference, sensitive, notes, critic, seed),
            **(partitions or {}),
        }
        self.judges = {
            name: Judge(
                s.schema,
                adapter.get(s.reference),
                sensitive=s.sensitive,
                notes=s.notes,
                critic=None if s.critic is None else chat_model_from_spec(s.critic, s.seed),
            )
            for name, s in settings.items()
        }
        self.board = board

    def __call__(self, batch: pa.Table) -> pa.Table:
        """The batch with the ``VERDICTS`` columns appended, less its finished partitions' rows."""
        names = batch.column("partition").to_pylist()
        finished = self.board.closed() if self.board is not None else frozenset()
        kept: list[int] = []
        columns: dict[str, list[object]] = {field.name: [] for field in VERDICTS}
        for name, rows in groupby(range(batch.num_rows), key=names.__getitem__):
            if name in finished:
                continue
            run = list(rows)
            for verdict in self.judges[name].verdicts(self._candidates(batch.take(run))):
                columns["ok"].append(verdict.ok)
                columns["kinds"].append(list(dict.fromkeys(f.kind for f in verdict.findings)))
                columns["reasons"].append(list(verdict.reasons))
            kept += run
        if len(kept) < batch.num_rows:
            batch = batch.take(pa.array(kept, pa.int64()))
        for field in VERDICTS:
            batch = batch.append_column(field, pa.array(columns[field.name], field.type))
        return batch

    @staticmethod
    def _candidates(batch: pa.Table) -> list[Candidate]:
        return [
            Candidate(text, None if record is None else json.loads(record), tuple(errors), seed)
            for text, record, errors, seed in zip(
                batch.column("text").to_pylist(),
                batch.column("record").to_pylist(),
                batch.column("errors").to_pylist(),
                batch.column("seed").to_pylist(),
                strict=True,
            )
        ]
