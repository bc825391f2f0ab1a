"""The synthesized output of a partition, written so that a retry never duplicates or loses rows.

A committed partition is one folder, ``committed_dir(out, partition)``::

    <folder>/data/part-00000.parquet        accepted records (exactly the target count)
    <folder>/quarantine/part-00000.parquet  rejected candidates with their reasons
    <folder>/report.json                    counts, metrics, privacy figures, settings

``out`` is a local folder or an object-store URI (``s3://bucket/prefix``, see ``aod_ops.storage``);
the commit differs, the guarantee does not: a reader sees either the previous complete output or
the new complete output, never a mix, and never the rows of a run that died.

In a local folder the partition's folder is ``out/<partition>``. A ``PartitionWriter`` writes
everything into a staging folder (``out/.staging/<partition>/<token>``) and ``commit`` moves it into
place with a rename. A run that dies leaves only its staging folder, which ``recover`` removes
before the partition is written again; a rename that replaced an earlier output and was cut off
between its two steps is finished by ``recover``.

An object store has no rename, so there the commit is a manifest written last. Each run writes
its own folder ``out/<partition>/<token>/`` (the layout above), then ``commit`` writes
``out/<partition>/_manifest.json``, which names that folder and lists its files and their rows.
Writing one object is atomic, so whoever finds the partition through the manifest
(``committed_dir``, ``read_report``, ``aod validate``, the asset the Airflow DAG publishes, which
names the committed folder) sees one whole commit. The previous commit's folder is deleted once
the manifest is written; ``recover`` deletes every folder the manifest does not name: the runs that
died, and a previous commit whose deletion was cut off. A manifest rather than an open table
format (Delta Lake, Iceberg): a commit replaces a partition's whole output, with no appends,
updates or concurrent writers for a table log to reconcile, the data stays plain Parquet that any
reader opens, and it needs no further dependency.

Only one run may write a partition of one output at a time.

A row's ``_aod_record_id`` is a hash of the partition name and the record's canonical JSON: the same
record always gets the same id, whichever seed, actor or attempt produced it, and two rows of one
partition never share an id (duplicates are rejected before they are written).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aod_ops import storage
from aod_ops.errors import DataError, SchemaError
from aod_ops.jsonvalues import canonical_json
from aod_ops.schema import LoadedSchema, arrow_schema, to_arrow_row
from aod_ops.storage import Location

STAGING = ".staging"
REPORT = "report.json"
MANIFEST = "_manifest.json"
_TIMESTAMP = pa.timestamp("us", tz="UTC")

PREFIX = "_aod_"
"""The namespace of the output's own columns: a schema property may have any other name."""

RECORD_ID = PREFIX + "record_id"
RECORD = PREFIX + "record"

PROVENANCE = pa.schema(
    [
        pa.field(RECORD_ID, pa.string(), nullable=False),
        pa.field(PREFIX + "partition", pa.string(), nullable=False),
        pa.field(RECORD, pa.string(), nullable=False),
    ]
)
"""The columns before the schema's typed columns."""

TRAILER = pa.schema(
    [
        pa.field(PREFIX + "prompt_version", pa.int64(), nullable=False),
        pa.field(PREFIX + "model", pa.string(), nullable=False),
        pa.field(PREFIX + "seed", pa.int64(), nullable=False),
        pa.field(PREFIX + "created_at", _TIMESTAMP, nullable=False),
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
kinds (the judge's ``KINDS``) and one sentence per problem. A table of its own columns only, so
they need no namespace."""

CONTRACT_COLUMNS = tuple(PROVENANCE.names + TRAILER.names)
"""The output contract's own columns, all named with ``PREFIX``."""


def record_id(partition: str, record: Any) -> str:
    """The stable id of ``record`` in ``partition``: 32 hex digits of a BLAKE2b hash of both."""
    text = partition + "\x00" + canonical_json(record)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def output_schema(schema: LoadedSchema) -> pa.Schema:
    """The Arrow schema of a partition's data: provenance, the typed columns, then the trailer.

    :raises SchemaError: when a top-level property's name starts with the provenance columns'
        prefix ``_aod_``.
    """
    typed = arrow_schema(schema)
    clashes = [name for name in typed.names if name.startswith(PREFIX)]
    if clashes:
        raise SchemaError(
            f"{schema.source}: top-level properties {', '.join(map(repr, clashes))} start with {PREFIX!r}, "
            "the prefix of the output's provenance columns; rename them in the schema"
        )
    return pa.schema([*PROVENANCE, *typed, *TRAILER])


def committed_dir(out: str | Path, partition: str) -> Location | None:
    """The folder of ``partition``'s committed output in ``out``, None when there is none."""
    out = storage.locate(out)
    if isinstance(out, Path):
        folder = out / partition
        return folder if folder.is_dir() else None
    manifest = read_manifest(out, partition)
    return None if manifest is None else storage.join(out, partition, manifest["commit"])


def read_manifest(out: Location, partition: str) -> dict[str, Any] | None:
    """The manifest of ``partition``'s commit on an object store, None when none is written.

    :raises DataError: when the manifest is not one (it is written whole, so this is a user's edit).
    :raises OSError: when the store cannot be read: that is not the same as no commit.
    """
    path = storage.join(out, partition, MANIFEST)
    try:
        manifest = json.loads(storage.read_text(path))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a commit manifest: {exc}") from None
    commit = manifest.get("commit") if isinstance(manifest, dict) else None
    if not isinstance(commit, str) or not re.fullmatch(r"[0-9A-Za-z_-]+", commit):
        raise DataError(f"{path}: not a commit manifest (no 'commit' folder named)")
    return manifest


def read_report(out: str | Path, partition: str) -> dict[str, Any] | None:
    """The committed ``report.json`` of ``partition`` when its data is intact, else None.

    Intact means the data files hold exactly the rows the report counts: a folder a user
    truncated or half-deleted is treated as absent, so it is written again.
    """
    try:
        folder = committed_dir(out, partition)
        if folder is None:
            return None
        report = json.loads(storage.read_text(storage.join(folder, REPORT)))
        rows = sum(_num_rows(file) for file in storage.list_files(storage.join(folder, "data"), ".parquet"))
    except (OSError, ValueError, DataError, pa.ArrowException):
        return None
    if not isinstance(report, dict) or report.get("counts", {}).get("rows") != rows:
        return None
    return report


def _num_rows(file: Location) -> int:
    with storage.open_file(file) as handle:
        return int(pq.ParquetFile(handle).metadata.num_rows)


def recover(out: str | Path, partition: str) -> None:
    """Clean up after a run of ``partition`` that died, before the partition is written again.

    Locally: finish a commit that was cut off between moving the old output away and moving the
    new one in, and remove abandoned staging folders. On an object store: delete the folders the
    manifest does not name. Only one run may write a partition of one output at a time.
    """
    out = storage.locate(out)
    if not isinstance(out, Path):
        manifest = read_manifest(out, partition)
        for folder in storage.list_folders(storage.join(out, partition)):
            if manifest is None or storage.name(folder) != manifest["commit"]:
                storage.remove(folder)
        return
    staging = out / STAGING / partition
    if not staging.is_dir():
        return
    final = out / partition
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
    """Writes one partition's accepted rows and rejected candidates into a folder of their own,
    then commits them, with ``report.json``, in place of the partition's previous output.

    :param out: the output folder or URI (one subfolder per partition).
    :param schema: the partition's JSON Schema: the typed columns come from it.
    :param provenance: the partition name, prompt version and model written on every row.
    :param rows_per_file: rows per Parquet file; more rows go to further files.
    """

    def __init__(
        self, out: str | Path, schema: LoadedSchema, provenance: Provenance, rows_per_file: int = 100_000
    ) -> None:
        self.out = storage.locate(out)
        self.provenance = provenance
        self.schema = output_schema(schema)
        self._typed = arrow_schema(schema)
        self.rows_per_file = rows_per_file
        token = uuid.uuid4().hex[:12]
        # A local run stages beside the outputs and renames; a remote one writes its own folder.
        self.staging: Location = (
            self.out / STAGING / provenance.partition / token
            if isinstance(self.out, Path)
            else storage.join(self.out, provenance.partition, token)
        )
        self._rows: list[dict[str, Any]] = []
        self._rejects: list[dict[str, Any]] = []
        self._files: dict[str, list[dict[str, Any]]] = {"data": [], "quarantine": []}
        self.ids: list[str] = []
        self.records: list[Any] = []

    def add(self, record: Any, seed: int, created_at: dt.datetime | None = None) -> str:
        """Buffer an accepted record (valid against the schema) and return its id."""
        rid = record_id(self.provenance.partition, record)
        try:
            typed = to_arrow_row(self._typed, record)
        except DataError as exc:
            raise DataError(f"partition {self.provenance.partition!r}: {exc}") from exc
        self._rows.append(
            {
                RECORD_ID: rid,
                PREFIX + "partition": self.provenance.partition,
                RECORD: json.dumps(record, ensure_ascii=False),
                **typed,
                PREFIX + "prompt_version": self.provenance.prompt_version,
                PREFIX + "model": self.provenance.model,
                PREFIX + "seed": seed,
                PREFIX + "created_at": created_at or _now(),
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

    def commit(self, report: dict[str, Any]) -> Location:
        """Write the remaining rows and ``report.json``, then make them the partition's output
        (replacing an earlier one) and return the partition's committed folder."""
        self._flush("data", always=not self._files["data"])
        self._flush("quarantine", always=not self._files["quarantine"])
        # Written last: locally, its presence marks a complete staging folder for `recover`.
        storage.write_text(
            storage.join(self.staging, REPORT), json.dumps(report, indent=2, default=str) + "\n"
        )
        if not isinstance(self.out, Path) or not isinstance(self.staging, Path):
            return self._publish()
        final = self.out / self.provenance.partition
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
        storage.remove(self.staging)
        self._tidy()

    def _publish(self) -> Location:
        """The commit on an object store: the manifest naming this run's folder, written in one
        piece, then the previous commit's folder deleted."""
        partition = self.provenance.partition
        previous = read_manifest(self.out, partition)
        token = storage.name(self.staging)
        manifest = {
            "partition": partition,
            "commit": token,
            "rows": sum(file["rows"] for file in self._files["data"]),
            "report": f"{token}/{REPORT}",
            **self._files,
            "committed_at": _now().isoformat(),
        }
        storage.write_text(storage.join(self.out, partition, MANIFEST), json.dumps(manifest, indent=2) + "\n")
        if previous is not None and previous["commit"] != token:
            storage.remove(storage.join(self.out, partition, previous["commit"]))
        return self.staging

    def _tidy(self) -> None:
        """Remove the staging folders left empty (other partitions may be staging beside this one)."""
        if not isinstance(self.staging, Path):
            return
        for folder in (self.staging.parent, self.staging.parent.parent):
            with contextlib.suppress(OSError):
                folder.rmdir()

    def _flush(self, kind: str, always: bool = False) -> None:
        rows = self._rows if kind == "data" else self._rejects
        if not rows and not always:
            return
        table = pa.Table.from_pylist(rows, schema=self.schema if kind == "data" else QUARANTINE)
        name = f"part-{len(self._files[kind]):05d}.parquet"
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        storage.write_bytes(storage.join(self.staging, kind, name), sink.getvalue().to_pybytes())
        # Paths relative to the partition's folder, as the manifest lists them.
        self._files[kind].append({"path": f"{storage.name(self.staging)}/{kind}/{name}", "rows": len(rows)})
        rows.clear()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
