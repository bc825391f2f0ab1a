"""``CandidateJudge``: the judge agent as a ``map_batches`` stage after the generator pool.

It runs the judge's deterministic evaluators on every candidate (parse and schema errors,
exact copies of reference records, values of sensitive columns copied from the reference,
repeats within the batch, degenerate values) and, when the partition asks for one, the LLM
critic. The reference sample reaches the actor through the object store (one ``put`` per
partition), not inside every batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

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


class CandidateJudge:
    """Judges batches of candidates (``aod_ops.ray.generator.CANDIDATES``) for one partition.

    :param schema: the partition's loaded JSON Schema.
    :param reference: the object-store reference of the reference sample (from ``adapter.put``).
    :param sensitive: top-level columns whose reference values must never reappear.
    :param notes: the partition's domain notes, for the critic.
    :param critic: the agent setting of the LLM critic, or None for the deterministic judge.
    :param seed: the critic's sampling seed.
    """

    def __init__(
        self,
        schema: LoadedSchema,
        reference: object,
        sensitive: Sequence[str] = (),
        notes: str = "",
        critic: AgentSetting | None = None,
        seed: int = 0,
    ) -> None:
        self.judge = Judge(
            schema,
            adapter.get(reference),
            sensitive=sensitive,
            notes=notes,
            critic=None if critic is None else chat_model_from_spec(critic, seed),
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        """The batch with the ``VERDICTS`` columns appended."""
        candidates = [
            Candidate(text, None if record is None else json.loads(record), tuple(errors), seed)
            for text, record, errors, seed in zip(
                batch.column("text").to_pylist(),
                batch.column("record").to_pylist(),
                batch.column("errors").to_pylist(),
                batch.column("seed").to_pylist(),
                strict=True,
            )
        ]
        verdicts = self.judge.verdicts(candidates)
        columns = {
            "ok": [v.ok for v in verdicts],
            "kinds": [list(dict.fromkeys(f.kind for f in v.findings)) for v in verdicts],
            "reasons": [list(v.reasons) for v in verdicts],
        }
        for field in VERDICTS:
            batch = batch.append_column(field, pa.array(columns[field.name], field.type))
        return batch
