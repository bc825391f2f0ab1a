"""Free-text guides: the shapes, characters and words of a free string's reference values.

``text_shape`` turns a value into the pattern of the strings shaped like it (runs of letters or
digits of about its lengths, every other character itself); ``text_guide`` gathers a field's
shapes with their shares, the characters its values use, the longest value and, unless the field
is sensitive, its repeated words into a ``TextGuide`` (``derive_guides`` asks it for free strings).
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class TextGuide:
    """A free-text string field (too many distinct values to be a category): the *shapes* of its
    reference values (``text_shape``: "fiat 124 tc" is three words of some 4, 2 to 4 and
    exactly 2 characters of those kinds), shortest first, with their shares, as a categorical
    copula dimension, so that a record draws a shape (and its length) as it draws a category;
    the characters the values are written in (``chars``: every ASCII letter of a case they use,
    every digit if they use one, and the other characters as seen); the longest value; and,
    unless the field is sensitive, the values' words that occur at least ``MIN_WORD_ROWS`` times,
    each with how often it is a value's first word and how often a later one, which the sampler
    turns into a prior over the model's tokens (``legal.WordPrior``); and the digests of the
    reference values (``value_digest``, ``taken``), so that no value is written as the
    reference holds it while the values themselves stay out of the guide. The model still
    writes every character."""

    pointer: str
    shapes: tuple[str, ...]
    frequencies: tuple[float, ...]
    chars: str
    longest: int
    words: tuple[tuple[str, int, int], ...] = ()
    taken: tuple[str, ...] = ()

    @cached_property
    def taken_set(self) -> frozenset[str]:
        """``taken`` as a set."""
        return frozenset(self.taken)

    @property
    def slack(self) -> int:
        """How much longer or shorter a run of letters of a shape may be than the reference's:
        ``WORD_SLACK`` where the reference's words guide the words, else 1."""
        return WORD_SLACK if self.words else 1


MIN_WORD_ROWS = 2  # a word only one reference value holds is too telling to put before the model
WORD_SLACK = 6  # a run of letters may be this much longer than the reference's, words guiding
_SPECIAL = frozenset(".^$*+?{}[]\\|()")  # characters a pattern writes escaped
_RUNS = re.compile(r"[a-z]+|[A-Z]+|[0-9]+|.", re.DOTALL)
_RUN_CLASSES = (
    ("[a-z]", string.ascii_lowercase),
    ("[A-Z]", string.ascii_uppercase),
    ("[0-9]", string.digits),
)


def text_shape(value: str, slack: int = 1) -> str:
    """The pattern of the strings shaped like ``value``: each run of ASCII lowercase, uppercase
    or digits a run of its kind, as long for runs under three characters, and from three up one
    digit, or ``slack`` letters, shorter or longer (two at the least); every other character
    itself."""
    out = []
    for run in _RUNS.finditer(value):
        text = run.group()
        kind = next((k for k, alphabet in _RUN_CLASSES if text[0] in alphabet), None)
        if kind is None:
            out.append("\\" + text if text in _SPECIAL else text)
        else:
            n = len(text)
            if n < 3:
                out.append(kind + ("" if n == 1 else f"{{{n}}}"))
            else:
                k = 1 if kind == "[0-9]" else slack
                out.append(f"{kind}{{{max(2, n - k)},{n + k}}}")
    return "".join(out)


def value_digest(text: str) -> str:
    """A short digest of a text value, casefolded with its whitespace collapsed (as sensitive
    copies are matched): how a guide knows the reference's values without holding them."""
    return hashlib.blake2b(" ".join(text.casefold().split()).encode(), digest_size=8).hexdigest()


def text_guide(pointer: str, strings: list[str], sensitive: bool) -> TextGuide | None:
    """The guide of the free string at ``pointer`` from its reference ``strings`` (no words when
    ``sensitive``); None when there is nothing to guide by (nothing but blanks)."""
    seen = set("".join(strings))
    chars = {c for c in seen if not (c.isascii() and c.isalnum()) and c.isprintable() and c not in '"\\'}
    for _, alphabet in _RUN_CLASSES:
        if seen & set(alphabet):
            chars |= set(alphabet)
    if not chars - {" "}:  # nothing but blanks: nothing to guide by
        return None
    counts: dict[str, list[int]] = {}
    if not sensitive:
        for s in strings:
            for i, w in enumerate(s.split()):
                counts.setdefault(w, [0, 0])[i > 0] += 1
    words = tuple(
        (w, first, later) for w, (first, later) in sorted(counts.items()) if first + later >= MIN_WORD_ROWS
    )
    slack = WORD_SLACK if words else 1
    by_shape: dict[str, list[int]] = {}
    for s in strings:
        by_shape.setdefault(text_shape(s, slack), []).append(len(s))
    shapes = sorted(by_shape, key=lambda k: (float(np.mean(by_shape[k])), k))
    return TextGuide(
        pointer,
        tuple(shapes),
        tuple(len(by_shape[k]) / len(strings) for k in shapes),
        "".join(sorted(chars)),
        max(len(s) for s in strings),
        words,
        tuple(sorted({value_digest(s) for s in strings})),
    )
