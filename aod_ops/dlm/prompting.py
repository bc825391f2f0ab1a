"""The text the DLM is conditioned on: one template for generation, training and the agents.

The prompt is plain text (instruction, optional exemplars, and in free mode the compact schema)
ending in ``RECORD_MARKER``; the record's tokens follow it. Skeleton mode leaves the schema out:
the skeleton already spells out every key, and a shorter prompt makes every forward pass
cheaper. Training (``adapt.py``) uses the same function, so an adapted model sees at run time
exactly what it was trained on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

RECORD_MARKER = "\nRecord:\n"
_MAX_SCHEMA_CHARS = 1500


def compact_schema(schema: dict[str, Any]) -> str:
    """The schema as one line of JSON without descriptive keywords, cut to a bounded length."""
    drop = {"description", "$comment", "title", "examples", "$schema", "$id", "id"}

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in drop}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    text = json.dumps(strip(schema), separators=(",", ":"), ensure_ascii=False)
    return text[:_MAX_SCHEMA_CHARS]


def render_prompt(
    instruction: str, schema: dict[str, Any] | None = None, exemplars: Sequence[str] = ()
) -> str:
    """The DLM's conditioning text for one record (``schema`` in free mode only)."""
    parts = [instruction.strip()]
    if schema is not None:
        parts.append("Schema: " + compact_schema(schema))
    parts += [f"Example: {e}" for e in exemplars]
    return "\n".join(parts) + RECORD_MARKER
