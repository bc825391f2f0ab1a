"""Regular expressions of schemas: checking a value, format patterns, partial matching, completion.

A schema's regular expressions come from whoever wrote the schema, and a backtracking engine
can take exponential time on them (``^(a+)+$`` against ``aaaa...!``). So every check of a schema
pattern in aod_ops runs here, on the ``regex`` package (Python's ``re`` dialect in its default
mode) under a time limit: ``search`` for JSON Schema's ``pattern`` and ``patternProperties``
(validation, the GX expectations, the compiler), ``full_match`` and ``partial_match`` for the
sampler, whose partial matching keeps a half-written value on a path to a match. No translation
from ECMA-262 syntax is done, on purpose: a pattern that Python cannot compile fails the
meta-schema's ``format: regex`` check when the schema is loaded.
"""

from __future__ import annotations

import importlib
import random
import re
import string
import time
from collections import Counter
from functools import lru_cache
from typing import Any

import regex

# Python's own regex parser gives the parse tree that random samples are drawn from (its module
# names are private but stable since Python 3.11).
sre: Any = importlib.import_module("re._constants")
sre_parse: Any = importlib.import_module("re._parser")

# Regex calls and completions are bounded so that a pathological pattern cannot hang a run.
_TIMEOUT_S = 0.05
_COMPLETE_S = 0.5

PATTERN_TIMEOUT_S = 0.2
"""How long one check of a schema pattern against one value may run; past it the check fails.

Far above what a sane pattern needs (microseconds), and more than the sampler's own limit:
a valid record must not fail validation on a busy machine."""

GIVE_UP_AFTER = 5
"""Timeouts of one pattern after which this process stops running it: every later check of it
fails at once, so that a table of hostile values costs seconds, not rows times the limit."""

_timeouts: Counter[str] = Counter()

_DATE = r"(?:19[7-9][0-9]|20[0-3][0-9])-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,3})?(?:Z|[+-](?:0[0-9]|1[0-2]):[0-5][0-9])"
_LABEL = r"[a-z][a-z0-9]{1,12}(?:-[a-z0-9]{2,8})?"
_HOST = rf"{_LABEL}(?:\.{_LABEL}){{0,2}}\.[a-z]{{2,6}}"
_URI = rf"https?://{_HOST}(?:/[A-Za-z0-9._~-]{{1,16}}){{0,4}}"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_HEX4 = r"[0-9a-f]{1,4}"
_EMAIL = r"[a-z0-9](?:[a-z0-9._-]{0,20}[a-z0-9])?@" + _HOST
_POINTER = r"(?:/[A-Za-z0-9_]{1,12}){0,4}"

FORMAT_PATTERNS: dict[str, str] = {
    "date": _DATE,
    "date-time": rf"{_DATE}T{_TIME}",
    "time": _TIME,
    "email": _EMAIL,
    "idn-email": _EMAIL,
    "uri": _URI,
    "uri-reference": _URI,
    "iri": _URI,
    "iri-reference": _URI,
    "uri-template": _URI,
    "uuid": r"[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
    "ipv4": rf"{_OCTET}(?:\.{_OCTET}){{3}}",
    "ipv6": rf"{_HEX4}(?::{_HEX4}){{7}}",
    "hostname": _HOST,
    "idn-hostname": _HOST,
    "json-pointer": _POINTER,
    "relative-json-pointer": r"(?:0|[1-9][0-9]?)" + _POINTER,
    "regex": r"[A-Za-z0-9_ ]{1,20}",
    "duration": r"P[1-9][0-9]?[DWMY]|PT[1-9][0-9]?[HMS]",
}
"""Full-match regexes whose matches pass ``jsonschema``'s ``FORMAT_CHECKER`` for each format.

The character classes are ASCII on purpose (``[0-9]``, not ``\\d``), and day-of-month stops at
28, so that every match is a real date."""

# Candidate characters for completion: printable ASCII without the control-like whitespace.
_ALPHABET = string.ascii_letters + string.digits + string.punctuation + " "
# Depth limit for completion when a slot has no maxLength.
_OPEN_LENGTH = 64


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> regex.Pattern[str] | None:
    try:
        return regex.compile(pattern)
    except (regex.error, ValueError, OverflowError, RecursionError):
        return None


def _match(pattern: str, text: str, partial: bool) -> bool:
    compiled = _compiled(pattern)
    if compiled is None:
        return False
    try:
        return compiled.fullmatch(text, partial=partial, timeout=_TIMEOUT_S) is not None
    except TimeoutError:
        return False


def compiles(pattern: str) -> bool:
    """Whether ``pattern`` is a regular expression this module can match with."""
    return _compiled(pattern) is not None


def partial_match(pattern: str, text: str) -> bool:
    """Whether ``text`` is a prefix of some full match of ``pattern`` (or a full match itself).

    A pattern that does not compile, or a match that exceeds the time limit, gives ``False``.
    """
    return _match(pattern, text, partial=True)


def full_match(pattern: str, text: str) -> bool:
    """Whether the whole of ``text`` matches ``pattern`` (``False`` on a bad pattern or timeout)."""
    return _match(pattern, text, partial=False)


class UncheckedPattern(Exception):
    """A schema pattern that could not be checked against a value: it ran past
    ``PATTERN_TIMEOUT_S``, has done so ``GIVE_UP_AFTER`` times, or does not compile. The message
    names the pattern; the value counts as not matching."""

    def __init__(self, pattern: str, problem: str) -> None:
        super().__init__(f"pattern {pattern!r} {problem}")
        self.pattern, self.problem = pattern, problem


def search(pattern: str, text: str) -> bool:
    """JSON Schema's ``pattern``: whether ``pattern`` matches somewhere in ``text`` (``re.search``).

    :raises UncheckedPattern: when the match runs past ``PATTERN_TIMEOUT_S``, when the pattern
        has already timed out ``GIVE_UP_AFTER`` times in this process, or when it does not compile.
    """
    if _timeouts[pattern] >= GIVE_UP_AFTER:
        raise UncheckedPattern(pattern, f"timed out {GIVE_UP_AFTER} times already and is no longer run")
    compiled = _compiled(pattern)
    if compiled is None:
        raise UncheckedPattern(pattern, "cannot be compiled")
    try:
        return compiled.search(text, timeout=PATTERN_TIMEOUT_S) is not None
    except TimeoutError:
        _timeouts[pattern] += 1
        raise UncheckedPattern(
            pattern, f"timed out (over {PATTERN_TIMEOUT_S} s on a value of {len(text)} characters)"
        ) from None


_WORD = string.ascii_letters + string.digits + "_"
_CATEGORIES: dict[Any, str] = {
    sre.CATEGORY_DIGIT: string.digits,
    sre.CATEGORY_NOT_DIGIT: "".join(c for c in _ALPHABET if not c.isdigit()),
    sre.CATEGORY_WORD: _WORD,
    sre.CATEGORY_NOT_WORD: "".join(c for c in _ALPHABET if c not in _WORD),
    sre.CATEGORY_SPACE: " ",
    sre.CATEGORY_NOT_SPACE: _ALPHABET.replace(" ", ""),
}
_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)


@lru_cache(maxsize=4096)
def _parsed(pattern: str) -> Any:
    try:
        return sre_parse.parse(pattern)
    except (re.error, ValueError, OverflowError, RecursionError):
        return None


def _in_class(items: list[tuple[Any, Any]], char: str) -> bool:
    code = ord(char)
    for op, av in items:
        if (
            (op is sre.LITERAL and av == code)
            or (op is sre.RANGE and av[0] <= code <= av[1])
            or (op is sre.CATEGORY and char in _CATEGORIES.get(av, ""))
        ):
            return True
    return False


def _pick_in(items: list[tuple[Any, Any]], rng: random.Random) -> str:
    if items and items[0][0] is sre.NEGATE:
        allowed = [c for c in _ALPHABET if not _in_class(items[1:], c)]
        return rng.choice(allowed) if allowed else ""
    op, av = rng.choice(items)
    if op is sre.LITERAL:
        return chr(av)
    if op is sre.RANGE:
        ascii_part = [c for c in _ALPHABET if av[0] <= ord(c) <= av[1]]
        return rng.choice(ascii_part) if ascii_part else chr(rng.randint(av[0], av[1]))
    return rng.choice(_CATEGORIES.get(av, _ALPHABET))


def _generate(items: Any, rng: random.Random, stretch: int, groups: dict[int, str]) -> str:
    """One random string from a parse tree; lookarounds are left to the final full-match check."""
    out: list[str] = []
    for op, av in items:
        if op is sre.LITERAL:
            out.append(chr(av))
        elif op is sre.NOT_LITERAL:
            out.append(rng.choice([c for c in _ALPHABET if ord(c) != av]))
        elif op is sre.ANY:
            out.append(rng.choice(_ALPHABET))
        elif op is sre.IN:
            out.append(_pick_in(av, rng))
        elif op is sre.BRANCH:
            out.append(_generate(rng.choice(av[1]), rng, stretch, groups))
        elif op is sre.SUBPATTERN:
            text = _generate(av[3], rng, stretch, groups)
            if av[0] is not None:
                groups[av[0]] = text
            out.append(text)
        elif op in _REPEATS:
            low, high, body = av
            top = low + stretch if high is sre.MAXREPEAT else min(high, low + stretch)
            out.extend(_generate(body, rng, stretch, groups) for _ in range(rng.randint(low, top)))
        elif op is sre.ATOMIC_GROUP:
            out.append(_generate(av, rng, stretch, groups))
        elif op is sre.GROUPREF:
            out.append(groups.get(av, ""))
        elif op is sre.GROUPREF_EXISTS:
            branch = av[1] if av[0] in groups else av[2]
            out.append(_generate(branch or [], rng, stretch, groups))
    return "".join(out)


def _sample(
    pattern: str, rng: random.Random, min_length: int, max_length: int | None, tries: int, deadline: float
) -> str | None:
    """A random full match drawn from the pattern's parse tree, within the length bounds."""
    tree = _parsed(pattern)
    if tree is None:
        return None
    for attempt in range(tries):
        if time.monotonic() > deadline:
            return None
        # Alternate short and long repetitions; long enough ones can reach a large minLength.
        stretch = rng.choice((0, 1, 2, 4, 8)) + (min_length if attempt % 2 else 0)
        try:
            text = _generate(tree, rng, stretch, {})
        except (IndexError, ValueError, RecursionError):
            return None
        in_bounds = len(text) >= min_length and (max_length is None or len(text) <= max_length)
        if in_bounds and full_match(pattern, text):
            return text
    return None


def _splice(
    pattern: str,
    prefix: str,
    rng: random.Random,
    min_length: int,
    max_length: int | None,
    budget: int,
    deadline: float,
) -> tuple[str | None, int]:
    """The prefix followed by the shortest tail of a random full match that completes it.

    Also returns the number of regex calls spent.
    """
    calls = 0
    for _ in range(8):
        sample = _sample(pattern, rng, 0, None, 4, deadline)
        calls += 4
        if sample is None:
            break
        for cut in range(len(sample), -1, -1):
            text = prefix + sample[cut:]
            if len(text) < min_length:
                continue
            if (max_length is not None and len(text) > max_length) or calls >= budget:
                break
            if time.monotonic() > deadline:
                return None, calls
            calls += 1
            if full_match(pattern, text):
                return text, calls
    return None, calls


def complete(
    pattern: str,
    prefix: str,
    rng: random.Random,
    min_length: int = 0,
    max_length: int | None = None,
    budget: int = 2000,
) -> str | None:
    """Extend ``prefix`` into a full match of ``pattern`` within the length bounds.

    First, a few random full matches are drawn from the pattern's parse tree (fast for long
    literals and counted repetitions): with an empty prefix one of them is the answer; with a
    prefix, the prefix followed by the tail of a sample often is (``report`` + ``.json``).
    When that fails, a depth-first search extends the text one character at a time: the
    candidate characters are tried in an order drawn from ``rng`` (characters written in the
    pattern first, most of the time, since literals are the usual bottleneck), and a branch is
    pruned as soon as the text stops being a partial match. Returns the first full match whose
    length is within ``[min_length, max_length]``, or ``None`` when there is none or ``budget``
    regex calls (or half a second) were spent looking for it.
    """
    if _compiled(pattern) is None:
        return None
    deadline = time.monotonic() + _COMPLETE_S
    if not prefix:
        calls = min(budget // 4, 50)
        sample = _sample(pattern, rng, min_length, max_length, calls, deadline)
        if sample is not None:
            return sample
    else:
        spliced, calls = _splice(pattern, prefix, rng, min_length, max_length, budget // 4, deadline)
        if spliced is not None:
            return spliced
    limit = max_length if max_length is not None else max(min_length, len(prefix)) + _OPEN_LENGTH
    literal = sorted({c for c in pattern if c.isprintable()})

    def candidates() -> list[str]:
        first, rest = list(literal), [c for c in _ALPHABET if c not in literal]
        rng.shuffle(first)
        rng.shuffle(rest)
        return first + rest if rng.random() < 0.7 else rest + first

    # Each stack entry is a text known to be a partial match and the characters left to try
    # after it (None until the text has been checked for a full match).
    if not partial_match(pattern, prefix):
        return None
    stack: list[tuple[str, list[str] | None]] = [(prefix, None)]
    while stack and calls < budget and time.monotonic() < deadline:
        text, options = stack[-1]
        if options is None:
            if min_length <= len(text) <= limit:
                calls += 1
                if full_match(pattern, text):
                    return text
            options = candidates() if len(text) < limit else []
            stack[-1] = (text, options)
        if not options:
            stack.pop()
            continue
        child = text + options.pop()
        calls += 1
        if partial_match(pattern, child):
            stack.append((child, None))
    return None
