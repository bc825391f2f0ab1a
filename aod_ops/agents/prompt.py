"""The DLM's prompt as a versioned value: the artifact the AoD loop optimizes.

A ``Prompt`` holds the instruction text, optional exemplar records (JSON text), the DLM's
decoding settings (``DecodingSettings``: temperature, steps, block length, mode, commit order)
and optional value guides (``Guides``: per-field quantiles, categories and their dependence,
which the sampler applies while the DLM writes every value). It is frozen: the optimizer derives
each child with ``dataclasses.replace``, numbering it and recording its parent's version, so a
run's prompts form a tree that can be inspected and resumed from its JSON form. An artifact
written before guides and the commit order existed still loads, as it was decoded: without
guides, confidence first.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from aod_ops.dlm.guides import Guides
from aod_ops.dlm.prompting import render_prompt
from aod_ops.dlm.settings import DecodingSettings, check_decoding
from aod_ops.errors import DataError

if TYPE_CHECKING:
    from aod_ops.spec import Partition


@dataclass(frozen=True)
class Prompt:
    """One version of the DLM's prompt.

    ``exemplars`` are example records as compact JSON text; ``version`` numbers prompts within a
    run and ``parent`` is the version this one was revised from (``None`` for the first);
    ``guides`` are the value guides the sampler applies (``None``: the DLM writes values freely
    within the schema).
    """

    instruction: str
    exemplars: tuple[str, ...] = ()
    decoding: DecodingSettings = field(default_factory=DecodingSettings)
    version: int = 1
    parent: int | None = None
    guides: Guides | None = None

    def render(self, schema: dict[str, Any]) -> str:
        """The DLM's conditioning text for one record of ``schema`` (the schema is spelled out in
        free mode only: in skeleton mode the structure is literal text around the slots)."""
        shown = schema if self.decoding.mode == "free" else None
        return render_prompt(self.instruction, shown, self.exemplars)

    def to_json(self) -> str:
        """The prompt artifact: indented JSON that ``from_json`` reads back."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["decoding"] = asdict(self.decoding)
        data["guides"] = None if self.guides is None else self.guides.to_dict()
        return json.dumps(data, indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Prompt:
        """Read a prompt artifact written by ``to_json``; a malformed one raises ``DataError``."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("decoding"), dict):
                raise TypeError("expected an object with a 'decoding' object")
            exemplars = data.pop("exemplars", [])
            if not isinstance(exemplars, list) or not all(isinstance(e, str) for e in exemplars):
                raise TypeError("'exemplars' must be a list of JSON strings")
            guides = data.pop("guides", None)  # absent from artifacts written before guides
            # An artifact written before the commit order was a setting was decoded confidence first.
            data["decoding"].setdefault("order", "confidence")
            prompt = cls(
                **{
                    **data,
                    "exemplars": tuple(exemplars),
                    "decoding": check_decoding(DecodingSettings(**data["decoding"])),
                    "guides": None if guides is None else Guides.from_dict(guides),
                }
            )
            if not isinstance(prompt.instruction, str) or not isinstance(prompt.version, int):
                raise TypeError("'instruction' must be a string and 'version' an integer")
        except (ValueError, TypeError, DataError) as exc:
            raise DataError(f"not a prompt artifact: {exc}") from exc
        return prompt


def initial_prompt(
    partition: Partition, schema: dict[str, Any], reference: Sequence[dict[str, Any]], exemplars: int = 2
) -> Prompt:
    """Version 1 of a partition's prompt: the schema's title and description, the notes, and a few
    reference records as exemplars (none when the partition has sensitive columns, so personal data
    is never put in front of the model), with the partition's decoding settings.
    """
    title = str(schema.get("title") or partition.name)
    parts = [f"Write one realistic, newly invented {title} record as JSON that matches the schema."]
    if schema.get("description"):
        parts.append(str(schema["description"]).strip())
    if partition.notes:
        parts.append(partition.notes.strip())
    parts.append("Do not copy records or values from real data.")
    chosen: list[str] = []
    if not partition.sensitive and reference:
        picks = random.Random(partition.seed).sample(range(len(reference)), min(exemplars, len(reference)))
        chosen = [json.dumps(reference[i], separators=(",", ":"), ensure_ascii=False) for i in picks]
    return Prompt(instruction=" ".join(parts), exemplars=tuple(chosen), decoding=partition.decoding)
