"""The synthesized output of a partition on disk, written so that a retry never duplicates or loses rows.

Layout under the output folder ``out``::

    out/<partition>/data/part-00000.parquet        accepted records (exactly the target count)
    out/<partition>/quarantine/part-00000.parquet  rejected candidates with their reasons
    out/<partition>/report.json                    counts, metrics, privacy figures, settings

A ``PartitionWriter`` writes everything into a staging folder (``out/.staging/<partition>/<token>``)
and ``commit`` moves it into place with a rename, so a reader sees either the previous complete
output or the new complete output, never a mix. A run that dies leaves only its staging folder,
which ``recover`` removes before the partition is written again; a rename that replaced an
earlier output and was cut off between its two steps is finished by ``recover``.

A row's ``record_id`` is a hash of the partition name and the record's canonical JSON: the same
record always gets the same id, whichever seed, actor or attempt produced it, and two rows of one
partition never share an id (duplicates are rejected before they are written).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aod_ops.errors import DataError, SchemaError
from aod_ops.metrics import canonical_json
from aod_ops.schema import LoadedSchema, arrow_schema, to_arrow_row

STAGING = ".staging"
REPORT = "report.json"
_TIMESTAMP = pa.timestamp("us", tz="UTC")

PROVENANCE = pa.schema(
    [
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("partition", pa.string(), nullable=False),
        pa.field("record", pa.string(), nullable=False),
    ]
)
"""The columns before the schema's typed columns."""

TRAILER = pa.schema(
    [
        pa.field("prompt_version", pa.int64(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("created_at", _TIMESTAMP, nullable=False),
    ]
)
"""The provenance columns after the schema's typed columns."""

QUARANTINE = pa.schema(
    [
        pa.field("partition", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("record", pa.string()),
        pa.field("kinds", pa.list_(pa.string()), nullable=False),
        pa.field("reasons", pa.list_(pa.string()), nullable=False),
        pa.field("prompt_version", pa.int64(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("created_at", _TIMESTAMP, nullable=False),
    ]
)
"""Rejected candidates: the raw text, the parsed record (null when it did not parse), the problem
kinds (the judge's ``KINDS``) and one sentence per problem."""

RESERVED_COLUMNS = tuple(PROVENANCE.names + TRAILER.names)


def record_id(partition: str, record: Any) -> str:
    """The stable id of ``record`` in ``partition``: 32 hex digits of a BLAKE2b hash of both."""
    text = partition + "\x00" + canonical_json(record)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def output_schema(schema: LoadedSchema) -> pa.Schema:
    """The Arrow schema of a partition's data: provenance, the typed columns, then the trailer.

    :raises SchemaError: when a top-level property has the name of a provenance column.
    """
    typed = arrow_schema(schema)
    clashes = [name for name in typed.names if name in RESERVED_COLUMNS]
    if clashes:
        raise SchemaError(
            f"{schema.source}: top-level properties {', '.join(map(repr, clashes))} clash with the output's "
            f"provenance columns ({', '.join(RESERVED_COLUMNS)}); rename them in the schema"
        )
    return pa.schema([*PROVENANCE, *typed, *TRAILER])


def partition_dir(out: str | Path, partition: str) -> Path:
    """The committed output folder of ``partition``."""
    return Path(out) / partition


def read_report(out: str | Path, partition: str) -> dict[str, Any] | None:
    """The committed ``report.json`` of ``partition`` when its data is intact, else None.

    Intact means the data files hold exactly the rows the report counts: a folder a user
    truncated or half-deleted is treated as absent, so it is written again.
    """
    folder = partition_dir(out, partition)
    try:
        report = json.loads((folder / REPORT).read_text(encoding="utf-8"))
        rows = sum(
            pq.ParquetFile(path).metadata.num_rows for path in sorted((folder / "data").glob("*.parquet"))
        )
    except (OSError, ValueError, pa.ArrowException):
        return None
    if not isinstance(report, dict) or report.get("counts", {}).get("rows") != rows:
        return None
    return report


def recover(out: str | Path, partition: str) -> None:
    """Clean up after a run of ``partition`` that died: finish a commit that was cut off between
    moving the old output away and moving the new one in, and remove abandoned staging folders.

    Only one run may write a partition of one output folder at a time.
    """
    staging = Path(out) / STAGING / partition
    if not staging.is_dir():
        return
    final = partition_dir(out, partition)
    if not final.exists():
        for old in staging.glob("*.old"):
            ready = old.with_suffix("")
            if (ready / REPORT).is_file():  # the report is written last: the new output is complete
                os.rename(ready, final)
                break
    shutil.rmtree(staging)


@dataclass(frozen=True)
class Provenance:
    """What every row of one partition's run shares: where it comes from."""

    partition: str
    prompt_version: int
    model: str


class PartitionWriter:
    """Writes one partition's accepted rows and rejected candidates into a staging folder, then
    commits them, with ``report.json``, in place of the partition's previous output.

    :param out: the output folder (one subfolder per partition).
    :param schema: the partition's JSON Schema: the typed columns come from it.
    :param provenance: the partition name, prompt version and model written on every row.
    :param rows_per_file: rows per Parquet file; more rows go to further files.
    """

    def __init__(
        self, out: str | Path, schema: LoadedSchema, provenance: Provenance, rows_per_file: int = 100_000
    ) -> None:
        self.out = Path(out)
        self.provenance = provenance
        self.schema = output_schema(schema)
        self._typed = arrow_schema(schema)
        self.rows_per_file = rows_per_file
        self.staging = self.out / STAGING / provenance.partition / uuid.uuid4().hex[:12]
        (self.staging / "data").mkdir(parents=True)
        (self.staging / "quarantine").mkdir()
        self._rows: list[dict[str, Any]] = []
        self._rejects: list[dict[str, Any]] = []
        self._files = {"data": 0, "quarantine": 0}
        self.ids: list[str] = []
        self.records: list[Any] = []

    def add(self, record: Any, seed: int, created_at: dt.datetime | None = None) -> str:
        """Buffer an accepted record (valid against the schema) and return its ``record_id``."""
        rid = record_id(self.provenance.partition, record)
        try:
            typed = to_arrow_row(self._typed, record)
        except DataError as exc:
            raise DataError(f"partition {self.provenance.partition!r}: {exc}") from exc
        self._rows.append(
            {
                "record_id": rid,
                "partition": self.provenance.partition,
                "record": json.dumps(record, ensure_ascii=False),
                **typed,
                "prompt_version": self.provenance.prompt_version,
                "model": self.provenance.model,
                "seed": seed,
                "created_at": created_at or _now(),
            }
        )
        self.ids.append(rid)
        self.records.append(record)
        if len(self._rows) >= self.rows_per_file:
            self._flush("data")
        return rid

    def reject(
        self,
        seed: int,
        text: str,
        record: Any | None,
        kinds: Sequence[str],
        reasons: Sequence[str],
        created_at: dt.datetime | None = None,
    ) -> None:
        """Buffer a rejected candidate for the quarantine dataset, with why it was rejected."""
        self._rejects.append(
            {
                "partition": self.provenance.partition,
                "seed": seed,
                "text": text,
                "record": None if record is None else json.dumps(record, ensure_ascii=False),
                "kinds": list(kinds),
                "reasons": list(reasons),
                "prompt_version": self.provenance.prompt_version,
                "model": self.provenance.model,
                "created_at": created_at or _now(),
            }
        )
        if len(self._rejects) >= self.rows_per_file:
            self._flush("quarantine")

    def commit(self, report: dict[str, Any]) -> Path:
        """Write the remaining rows and ``report.json``, then move the staging folder into place
        (replacing an earlier output of the partition) and return the partition's folder."""
        self._flush("data", always=self._files["data"] == 0)
        self._flush("quarantine", always=self._files["quarantine"] == 0)
        # Written last: its presence marks a complete staging folder for `recover`.
        (self.staging / REPORT).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        final = partition_dir(self.out, self.provenance.partition)
        if final.exists():
            old = self.staging.with_name(self.staging.name + ".old")
            os.rename(final, old)
            os.rename(self.staging, final)
            shutil.rmtree(old)
        else:
            os.rename(self.staging, final)
        self._tidy()
        return final

    def abort(self) -> None:
        """Drop everything written so far (the committed output, if any, is left as it was)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self._tidy()

    def _tidy(self) -> None:
        """Remove the staging folders left empty (other partitions may be staging beside this one)."""
        for folder in (self.staging.parent, self.staging.parent.parent):
            with contextlib.suppress(OSError):
                folder.rmdir()

    def _flush(self, kind: str, always: bool = False) -> None:
        rows = self._rows if kind == "data" else self._rejects
        if not rows and not always:
            return
        table = pa.Table.from_pylist(rows, schema=self.schema if kind == "data" else QUARANTINE)
        pq.write_table(table, self.staging / kind / f"part-{self._files[kind]:05d}.parquet")
        self._files[kind] += 1
        rows.clear()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
