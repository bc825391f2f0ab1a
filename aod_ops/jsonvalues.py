"""JSON values as the package reads, compares and addresses them, in one place.

- ``canonical_json``: the text two values share exactly when they are the same JSON value (sorted
  keys, no spaces, an integral float written as the integer: ``18.0`` and ``18`` are one value, a
  boolean is never a number). Metrics, record ids and fingerprints compare records by it.
- ``is_number``: a JSON number, which a boolean is not (Python has ``True == 1``).
- JSON pointers (RFC 6901): ``escape_token``/``unescape_token`` for one property name,
  ``json_pointer`` and ``pointer_tokens`` for a whole pointer.
- ``first_json_value``: the first JSON object (or array) in a model's text; model output is
  untrusted, so anything unreadable is None, never an exception.

Nothing here imports beyond the standard library: the engine, the adapters and the DAG files can
all use it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TypeGuard


def canonical_json(value: Any) -> str:
    """Return ``value`` as canonical JSON text: sorted keys, no spaces, integral floats as ints."""
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _normalise(value: Any) -> Any:
    # JSON has one number type: 18.0 and 18 are the same value (a CSV reference often has 18.0).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _normalise(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(item) for item in value]
    return value


def is_number(value: Any) -> TypeGuard[int | float]:
    """Whether a JSON value is a number (a boolean is not; infinities and NaN are)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def escape_token(name: str) -> str:
    """A property name as a JSON pointer token: ``~`` as ``~0``, then ``/`` as ``~1``."""
    return name.replace("~", "~0").replace("/", "~1")


def unescape_token(token: str) -> str:
    """The property name a JSON pointer token stands for (``escape_token`` undone)."""
    return token.replace("~1", "/").replace("~0", "~")


def json_pointer(parts: Iterable[str | int]) -> str:
    """The JSON pointer of a sequence of property names and array indexes; "" for the root."""
    return "".join("/" + escape_token(str(part)) for part in parts)


def pointer_tokens(pointer: str) -> list[str]:
    """The property names and indexes (as text) a JSON pointer is made of; none for the root."""
    return [unescape_token(token) for token in pointer.split("/")[1:]] if pointer else []


def first_json_value(text: str, openers: str = "{") -> Any | None:
    """The JSON value that starts at the first of ``openers`` in ``text`` (``"{"``: an object;
    ``"{["``: an object or an array), or None when there is none or it does not parse (not JSON,
    an integer too long to read, nested too deep for the parser). Text after it is ignored."""
    starts = [at for at in (text.find(opener) for opener in openers) if at >= 0]
    if not starts:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[min(starts) :])
    except (ValueError, RecursionError):
        return None
    return value
