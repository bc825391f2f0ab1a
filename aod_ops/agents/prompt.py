"""The DLM's prompt as a versioned value: the artifact the AoD loop optimizes.

A ``Prompt`` holds the instruction text, optional exemplar records (JSON text), the DLM's
decoding settings (``DecodingSettings``: temperature, steps, block length, mode, commit order)
and optional value guides (``Guides``: per-field quantiles, categories and their dependence,
which the sampler applies while the DLM writes every value). It is frozen: the optimizer derives
children with ``revise``, which records the parent's version, so a run's prompts form a tree
that can be inspected and resumed from its JSON form. An artifact written before guides and the
commit order existed still loads, as it was decoded: without guides, confidence first.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from aod_ops.dlm.guides import Guides
from aod_ops.dlm.prompting import render_prompt
from aod_ops.dlm.settings import DecodingSettings
from aod_ops.errors import DataError

if TYPE_CHECKING:
    from aod_ops.spec import Partition

MAX_TEMPERATURE = 2.0


def check_decoding(decoding: DecodingSettings) -> DecodingSettings:
    """``decoding`` if its values are usable, else ``ValueError`` saying which one is not."""
    if not 0.0 <= decoding.temperature <= MAX_TEMPERATURE:
        raise ValueError(f"temperature must be between 0 and {MAX_TEMPERATURE}, got {decoding.temperature}")
    for name in ("steps", "block_length", "max_new_tokens"):
        if getattr(decoding, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(decoding, name)}")
    if decoding.mode not in ("skeleton", "free"):
        raise ValueError(f"mode must be skeleton or free, got {decoding.mode!r}")
    if decoding.order not in ("confidence", "left_to_right"):
        raise ValueError(f"order must be confidence or left_to_right, got {decoding.order!r}")
    return decoding


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

    def revise(
        self,
        version: int,
        *,
        instruction: str | None = None,
        exemplars: Sequence[str] | None = None,
        decoding: DecodingSettings | None = None,
        guides: Guides | None = None,
    ) -> Prompt:
        """A child of this prompt numbered ``version``, with the given parts replaced (the
        guides are kept unless replaced)."""
        return replace(
            self,
            instruction=self.instruction if instruction is None else instruction,
            exemplars=self.exemplars if exemplars is None else tuple(exemplars),
            decoding=self.decoding if decoding is None else decoding,
            guides=self.guides if guides is None else guides,
            version=version,
            parent=self.version,
        )

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
