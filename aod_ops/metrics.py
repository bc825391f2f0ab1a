"""The metrics of ``docs/architecture.md``, computed the same way everywhere (loop, judge, CLI, benchmarks).

Inputs are plain JSON values: ``records`` are the parsed candidates (anything for a candidate that
did not parse; its ``valid_flags`` entry is False), ``reference`` is the partition's real sample.

Choices the design leaves open, fixed here:

- Leaves are addressed by JSON pointer (RFC 6901); a scalar, or an *empty* object or array, is a
  leaf. Values compare after canonical JSON, where an integral float equals the integer
  (``18.0 == 18``) and a boolean never equals a number.
- TSR counts the first valid occurrence of a record as novel and later copies of it as
  duplicates, so k identical valid records add at most one success.
- Field overlap averages over valid records that have at least one counted leaf; a record whose
  leaves are all enum/const/boolean has nothing it could copy and is left out (counting it as 0
  would reward such records). With no such record the overlap is 0.0.
- Diversity is over valid records; a field is a leaf pointer with array indices written ``*``
  (``/tags/*``), and its ratio is distinct values / values seen there.
- DCR: the distance between two records is the mean, over the union of their leaf pointers, of
  ``min(|x - y| / range, 1)`` for two numbers (``range`` = max - min of the reference's numbers
  at that pointer) and 0/1 (equal or not) otherwise, a pointer present on one side only
  counting 1. A pointer whose reference range is 0 (or has no numbers) compares numbers 0/1.
  Percentiles use numpy's linear interpolation. References longer than ``max_reference`` rows
  are sampled (fixed seed) for DCR only; exact match and field overlap always use all rows.
- Rates over an empty set are 0.0; DCR and the cost figures are ``None`` when undefined (no
  valid record or no reference; no timing or forward count given).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from aod_ops.jsonvalues import canonical_json, escape_token, is_number

Pointer = str
"""A JSON pointer (RFC 6901) into a record, e.g. ``/engine/cylinders`` or ``/tags/0``."""

DEFAULT_MAX_DCR_REFERENCE = 1000
"""Reference rows DCR compares against at most (a fixed-seed sample beyond that)."""

# Records per block of the DCR distance matrix: bounds memory to block x reference floats.
_DCR_BLOCK_CELLS = 2_000_000
# A number within this share of a sensitive column's range of a reference number is a near copy.
_NEAR_NUMBER = 1e-6


def _walk(value: Any, pointer: str = "", field_path: str = "") -> Iterator[tuple[Pointer, str, Any]]:
    """Yield ``(pointer, field, leaf)`` for every leaf; ``field`` writes array indices as ``*``."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            name = escape_token(str(key))
            yield from _walk(item, f"{pointer}/{name}", f"{field_path}/{name}")
    elif isinstance(value, list | tuple) and value:
        for index, item in enumerate(value):
            yield from _walk(item, f"{pointer}/{index}", f"{field_path}/*")
    else:
        yield pointer, field_path, value


def leaves(value: Any) -> dict[Pointer, Any]:
    """Return the leaves of a JSON value by JSON pointer (a scalar or an empty container is a leaf)."""
    return {pointer: leaf for pointer, _, leaf in _walk(value)}


def _leaf_key(leaf: Any) -> Any:
    """A hashable key under which two leaves are equal exactly when their canonical JSON is.

    Python has ``1 == 1.0 == True``; the flag keeps booleans apart from numbers.
    """
    if isinstance(leaf, dict | list | tuple):
        return (None, canonical_json(leaf))
    return (isinstance(leaf, bool), leaf)


@dataclass(frozen=True, eq=False)
class SensitiveValues:
    """The reference values of one sensitive top-level column, indexed for its two copy checks.

    ``equal``, the privacy gate's and the judge's check: the value is one of the reference's after
    canonical JSON (null never is). ``near``, what the scorecard's ``sensitive_copies`` counts:
    numbers within 1e-6 of the column's range (exact when the range is 0), strings casefolded with
    whitespace collapsed, other values by canonical JSON; null and empty strings are never copies.
    """

    canonical: frozenset[str]
    numbers: np.ndarray
    tolerance: float
    texts: frozenset[str]

    @classmethod
    def of(cls, rows: Sequence[Any], column: str) -> SensitiveValues:
        """Index the values of top-level ``column`` in ``rows`` (rows that are not objects have none)."""
        values = [row.get(column) for row in rows if isinstance(row, Mapping)]
        numbers = np.sort([float(v) for v in values if is_number(v)])
        spread = float(numbers[-1] - numbers[0]) if len(numbers) else 0.0
        return cls(
            canonical=frozenset(canonical_json(v) for v in values if v is not None),
            numbers=numbers,
            tolerance=_NEAR_NUMBER * spread,
            texts=frozenset(key for v in values if (key := _folded(v)) is not None),
        )

    def equal(self, value: Any) -> bool:
        """Whether ``value`` is one of the column's reference values (canonical JSON)."""
        return value is not None and canonical_json(value) in self.canonical

    def near(self, value: Any) -> bool:
        """Whether ``value`` is one of the column's reference values, or close to one (see above)."""
        if is_number(value):
            at = int(np.searchsorted(self.numbers, value))
            close = self.numbers[max(0, at - 1) : at + 1]
            return bool(len(close)) and bool(np.any(np.abs(close - value) <= self.tolerance))
        key = _folded(value)
        return key is not None and key in self.texts


def _folded(value: Any) -> str | None:
    """The key a non-number value is compared under by ``near``: folded text, canonical JSON, or None."""
    if value is None or is_number(value):
        return None
    if isinstance(value, str):
        folded = " ".join(value.casefold().split())
        return folded or None
    return canonical_json(value)


@dataclass(frozen=True)
class ReferenceIndex:
    """A reference sample indexed once, for the metrics, the judge and the privacy gates: its
    rows, their canonical JSON, the leaf values by pointer, and the values of the sensitive
    top-level columns (``sensitive``, by column)."""

    rows: tuple[Any, ...]
    canonical: frozenset[str]
    values_by_pointer: dict[Pointer, frozenset[Any]]
    sensitive: Mapping[str, SensitiveValues] = field(default_factory=dict)

    @classmethod
    def of(cls, reference: Sequence[Any] | ReferenceIndex, sensitive: Sequence[str] = ()) -> ReferenceIndex:
        """Index ``reference`` and its ``sensitive`` columns. An index is returned as it is, or, when
        it lacks some of ``sensitive``, as a copy that has them too (its rows are not indexed again)."""
        if isinstance(reference, ReferenceIndex):
            missing = [column for column in sensitive if column not in reference.sensitive]
            if not missing:
                return reference
            added = {column: SensitiveValues.of(reference.rows, column) for column in missing}
            return replace(reference, sensitive={**reference.sensitive, **added})
        by_pointer: dict[Pointer, set[Any]] = {}
        for row in reference:
            for pointer, _, leaf in _walk(row):
                by_pointer.setdefault(pointer, set()).add(_leaf_key(leaf))
        return cls(
            rows=tuple(reference),
            canonical=frozenset(canonical_json(row) for row in reference),
            values_by_pointer={pointer: frozenset(keys) for pointer, keys in by_pointer.items()},
            sensitive={column: SensitiveValues.of(reference, column) for column in sensitive},
        )

    def has_leaf(self, pointer: Pointer, leaf: Any) -> bool:
        """Whether some reference record holds ``leaf`` at ``pointer`` (equal as canonical JSON)."""
        return _leaf_key(leaf) in self.values_by_pointer.get(pointer, ())

    def copies_sensitive(self, record: Any, column: str, near: bool = False) -> bool:
        """Whether ``record``'s value of the sensitive ``column`` is a reference value:
        ``SensitiveValues.equal``, or with ``near`` ``SensitiveValues.near``.

        :raises KeyError: when the index was not made with ``column`` among its sensitive ones.
        """
        values = self.sensitive[column]
        value = record.get(column) if isinstance(record, Mapping) else None
        return values.near(value) if near else values.equal(value)


def validity(valid_flags: Sequence[bool]) -> float:
    """Share of candidates that parse and validate against the schema."""
    return sum(map(bool, valid_flags)) / len(valid_flags) if valid_flags else 0.0


def task_success_rate(
    records: Sequence[Any],
    valid_flags: Sequence[bool],
    reference: Sequence[Any] | ReferenceIndex,
    critic_passed: Sequence[bool] | None = None,
) -> float:
    """Share of candidates that are valid, novel (not a reference record, not an earlier output
    record) and, when critic verdicts are given, pass the critic."""
    _check_lengths(records, valid_flags=valid_flags, critic_passed=critic_passed)
    if not records:
        return 0.0
    index = ReferenceIndex.of(reference)
    seen: set[str] = set()
    successes = 0
    for position, (record, valid) in enumerate(zip(records, valid_flags, strict=True)):
        if not valid:
            continue
        text = canonical_json(record)
        novel = text not in index.canonical and text not in seen
        seen.add(text)
        if novel and (critic_passed is None or critic_passed[position]):
            successes += 1
    return successes / len(records)


def field_overlap(
    records: Sequence[Any],
    reference: Sequence[Any] | ReferenceIndex,
    skip_leaf: Callable[[Pointer], bool] | None = None,
) -> float:
    """Mean share of a record's leaves equal to the value at the same pointer in some reference
    record, over ``records`` (pass the valid ones). Leaves where ``skip_leaf(pointer)`` is True
    (enum, const, boolean) are left out, and so are records with no leaf left."""
    index = ReferenceIndex.of(reference)
    skipped = _cached(skip_leaf)
    shares: list[float] = []
    for record in records:
        counted = copied = 0
        for pointer, _, leaf in _walk(record):
            if skipped(pointer):
                continue
            counted += 1
            copied += index.has_leaf(pointer, leaf)
        if counted:
            shares.append(copied / counted)
    return sum(shares) / len(shares) if shares else 0.0


def _cached(skip_leaf: Callable[[Pointer], bool] | None) -> Callable[[Pointer], bool]:
    # The schema lookup behind skip_leaf is asked once per distinct pointer.
    if skip_leaf is None:
        return lambda _pointer: False
    answers: dict[Pointer, bool] = {}

    def skipped(pointer: Pointer) -> bool:
        if pointer not in answers:
            answers[pointer] = bool(skip_leaf(pointer))
        return answers[pointer]

    return skipped


def exact_match_rate(records: Sequence[Any], reference: Sequence[Any] | ReferenceIndex) -> float:
    """Share of ``records`` (pass the valid ones) equal to a reference record after canonical JSON."""
    if not records:
        return 0.0
    index = ReferenceIndex.of(reference)
    return sum(canonical_json(record) in index.canonical for record in records) / len(records)


@dataclass(frozen=True)
class Diversity:
    """Distinct records / records, and per field (``/tags/*``) distinct values / values."""

    ratio: float
    per_field: dict[str, float]


def diversity(records: Sequence[Any]) -> Diversity:
    """Diversity of ``records`` (pass the valid ones)."""
    if not records:
        return Diversity(ratio=0.0, per_field={})
    distinct: dict[str, set[Any]] = {}
    seen: dict[str, int] = {}
    for record in records:
        for _, field_path, leaf in _walk(record):
            distinct.setdefault(field_path, set()).add(_leaf_key(leaf))
            seen[field_path] = seen.get(field_path, 0) + 1
    return Diversity(
        ratio=len({canonical_json(record) for record in records}) / len(records),
        per_field={name: len(distinct[name]) / seen[name] for name in sorted(distinct)},
    )


def distances_to_closest_record(
    records: Sequence[Any],
    reference: Sequence[Any] | ReferenceIndex,
    max_reference: int = DEFAULT_MAX_DCR_REFERENCE,
    scale: Sequence[Any] | None = None,
) -> np.ndarray:
    """Each record's distance to its closest reference record (see the module docstring).

    :param scale: rows whose numbers set each pointer's range instead of the reference's: two
        sets of distances are comparable only on one scale (DCR protection compares distances to
        the reference with distances to held-out rows).
    """
    return _closest(list(records), _dcr_rows(reference, max_reference), exclude_self=False, scale=scale)


def reference_self_distances(
    reference: Sequence[Any] | ReferenceIndex, max_reference: int = DEFAULT_MAX_DCR_REFERENCE
) -> np.ndarray:
    """Each reference record's distance to the closest *other* reference record (leave-one-out).

    The real-to-real baseline a synthetic DCR is compared with: real rows are this far apart.
    """
    rows = _dcr_rows(reference, max_reference)
    return _closest(rows, rows, exclude_self=True)


def _dcr_rows(reference: Sequence[Any] | ReferenceIndex, max_reference: int) -> list[Any]:
    rows = list(ReferenceIndex.of(reference).rows)
    return random.Random(0).sample(rows, max_reference) if len(rows) > max_reference else rows


def _closest(
    records: list[Any], rows: list[Any], exclude_self: bool, scale: Sequence[Any] | None = None
) -> np.ndarray:
    if not records or len(rows) < (2 if exclude_self else 1):
        return np.zeros(0)
    extra = list(scale or ())
    codes, numbers = _encode([*records, *rows, *extra])
    end = len(records) + len(rows)
    rec_codes, ref_codes = codes[: len(records)], codes[len(records) : end]
    rec_nums, ref_nums = numbers[: len(records)], numbers[len(records) : end]
    # A pointer's numeric range comes from the reference only (the records are what is judged),
    # or from the given scale rows; a pointer with no such number gets a range of -inf and
    # compares 0/1.
    scale_nums = numbers[end:] if extra else ref_nums
    has_number = ~np.isnan(scale_nums)
    spread = np.where(has_number, scale_nums, -np.inf).max(axis=0) - np.where(
        has_number, scale_nums, np.inf
    ).min(axis=0)
    block = max(1, _DCR_BLOCK_CELLS // len(rows))
    closest = np.empty(len(records))
    for start in range(0, len(records), block):
        stop = min(start + block, len(records))
        total = np.zeros((stop - start, len(rows)), dtype=np.float32)
        union = np.zeros((stop - start, len(rows)), dtype=np.int32)
        for column in range(codes.shape[1]):
            a_code = rec_codes[start:stop, column, None]
            b_code = ref_codes[None, :, column]
            # Absent is code -1: present on one side only differs (1), absent on both is 0.
            distance = (a_code != b_code).astype(np.float32)
            if spread[column] > 0:
                scaled = np.abs(rec_nums[start:stop, column, None] - ref_nums[None, :, column])
                scaled = np.minimum(scaled / spread[column], 1.0)
                distance = np.where(np.isnan(scaled), distance, scaled).astype(np.float32)
            total += distance
            union += (a_code >= 0) | (b_code >= 0)
        # Every record has at least one leaf (the root itself when empty), so union >= 1.
        matrix = total / union
        if exclude_self:
            here = np.arange(start, stop)
            matrix[here - start, here] = np.inf
        closest[start:stop] = matrix.min(axis=1)
    return closest


def _encode(rows: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Rows as (rows, pointers) arrays: an int32 code per leaf value (-1 where the pointer is
    absent; equal codes mean equal leaves) and the float value where the leaf is a number."""
    pointers: dict[Pointer, int] = {}
    values: dict[Any, int] = {}
    flat = [leaves(row) for row in rows]
    for row_leaves in flat:
        for pointer in row_leaves:
            pointers.setdefault(pointer, len(pointers))
    codes = np.full((len(rows), len(pointers)), -1, dtype=np.int32)
    numbers = np.full((len(rows), len(pointers)), np.nan)
    for position, row_leaves in enumerate(flat):
        for pointer, leaf in row_leaves.items():
            column = pointers[pointer]
            codes[position, column] = values.setdefault(_leaf_key(leaf), len(values))
            if is_number(leaf):
                numbers[position, column] = float(leaf)
    return codes, numbers


def percentile(distances: np.ndarray, q: float) -> float | None:
    """The ``q``-th percentile of ``distances`` (numpy's linear interpolation); None when empty."""
    return float(np.percentile(distances, q)) if len(distances) else None


@dataclass(frozen=True)
class Metrics:
    """All metrics of one batch of candidates, named as in ``docs/architecture.md``."""

    candidates: int
    valid: int
    validity: float
    tsr: float
    field_overlap: float
    exact_match_rate: float
    diversity: float
    field_diversity: dict[str, float] = field(default_factory=dict)
    dcr_p5: float | None = None
    dcr_median: float | None = None
    records_per_s: float | None = None
    forwards_per_valid_record: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The metrics as a JSON-ready dict under their design names."""
        return asdict(self)


def compute_metrics(
    records: Sequence[Any],
    valid_flags: Sequence[bool],
    reference: Sequence[Any] | ReferenceIndex,
    *,
    skip_leaf: Callable[[Pointer], bool] | None = None,
    critic_passed: Sequence[bool] | None = None,
    forwards: int | None = None,
    seconds: float | None = None,
    max_dcr_reference: int = DEFAULT_MAX_DCR_REFERENCE,
) -> Metrics:
    """Compute every metric for one batch of candidates against a reference sample.

    :param records: parsed candidates, in order (any value for one that did not parse).
    :param valid_flags: whether each candidate parsed and validated against the schema.
    :param reference: the real sample the output must not copy.
    :param skip_leaf: True for pointers whose schema is an enum, const or boolean.
    :param critic_passed: the judge's critic verdict per candidate, when a critic is configured.
    :param forwards: model forward passes spent on the batch.
    :param seconds: wall-clock seconds spent producing the batch.
    :param max_dcr_reference: reference rows DCR compares against at most.
    """
    _check_lengths(records, valid_flags=valid_flags, critic_passed=critic_passed)
    index = ReferenceIndex.of(reference)
    valid = [record for record, ok in zip(records, valid_flags, strict=True) if ok]
    spread = diversity(valid)
    distances = distances_to_closest_record(valid, index, max_reference=max_dcr_reference)
    return Metrics(
        candidates=len(records),
        valid=len(valid),
        validity=validity(valid_flags),
        tsr=task_success_rate(records, valid_flags, index, critic_passed),
        field_overlap=field_overlap(valid, index, skip_leaf),
        exact_match_rate=exact_match_rate(valid, index),
        diversity=spread.ratio,
        field_diversity=spread.per_field,
        dcr_p5=percentile(distances, 5),
        dcr_median=percentile(distances, 50),
        records_per_s=len(records) / seconds if seconds else None,
        forwards_per_valid_record=forwards / len(valid) if forwards is not None and valid else None,
    )


def _check_lengths(records: Sequence[Any], **per_record: Sequence[bool] | None) -> None:
    for name, values in per_record.items():
        if values is not None and len(values) != len(records):
            raise ValueError(f"{name} has {len(values)} entries for {len(records)} records")
