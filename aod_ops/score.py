"""``aod score``: any table's metrics-contract figures beside the same figures of held-out real rows.

The table is read from a JSON Lines, CSV or Parquet file, or a folder of Parquet files (as
``aod synthesize`` writes one), by path or URI (see ``aod_ops.storage``). A Parquet table with a
``_aod_record`` column (JSON text: the output contract's) is read from that column, a row that does not
parse counting as an invalid record; any other table is read from the columns named like the
schema's top-level properties, the others left out (a null in a Parquet column is an absent
property, as the output contract writes one). JSON Lines records are taken as they are.

The table is scored with the partition's ``Yardstick`` (``aod_ops.fidelity``) against its real
rows; the held-out figure beside each of its figures is ``Yardstick.baseline()``, real rows the
table never saw scored the same way. A table that holds none of the schema's columns is a
``DataError``: it would score as a table of empty records.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aod_ops import storage
from aod_ops.errors import DataError
from aod_ops.output import RECORD
from aod_ops.storage import Location

if TYPE_CHECKING:
    from rich.table import Table

    from aod_ops.fidelity import Scorecard, Yardstick
    from aod_ops.fidelity_report import FidelityReport
    from aod_ops.schema import LoadedSchema
    from aod_ops.spec import Partition

_FEEDBACK = 5


@dataclass(frozen=True)
class TableScore:
    """A table scored against a partition's real rows, beside the held-out rows' own score.

    ``valid_records`` are the table's records that the schema accepts (what its fidelity figures
    are over); ``yardstick_rows`` the real rows it was compared with; ``source`` says whether
    those are held-out rows (``holdout``) or, for a partition without any, reference rows.
    """

    partition: str
    data_path: Location
    source: str
    card: Scorecard
    baseline: Scorecard
    reward: float
    baseline_reward: float
    valid_records: list[Any]
    yardstick_rows: list[Any]

    def as_dict(self) -> dict[str, Any]:
        """The figures under their metrics-contract names, each side with its reward, and the yardstick."""
        return {
            "partition": self.partition,
            "data": str(self.data_path),
            "yardstick": self.source,
            "table": {**self.card.as_dict(), "reward": self.reward},
            "holdout": {**self.baseline.as_dict(), "reward": self.baseline_reward},
        }

    @property
    def real(self) -> str:
        """What the real rows are, in words: ``held-out``, or ``reference`` without a holdout."""
        return "held-out" if self.source == "holdout" else "reference"

    def write_report(self, out_dir: str | Path) -> FidelityReport:
        """Write the fidelity report (``fidelity.png``, ``fidelity.html``) into ``out_dir``."""
        from aod_ops.fidelity_report import write_fidelity_report

        return write_fidelity_report(
            self.card,
            self.baseline,
            self.valid_records,
            self.yardstick_rows,
            out_dir,
            f"{self.partition}: {self.data_path} against {self.real} rows",
            (self.reward, self.baseline_reward),
        )


def score_table(partition: Partition, data_path: str | Path) -> TableScore:
    """Score the table at ``data_path`` against ``partition``'s real rows.

    :raises DataError: naming the file (and column or line) when the table cannot be read, is
        empty or holds none of the schema's columns.
    """
    from aod_ops.fidelity import Yardstick

    path = storage.locate(data_path)
    yardstick = Yardstick.for_partition(partition)
    return score_records(partition.name, path, yardstick, read_table(path, yardstick.schema))


def score_records(name: str, data_path: Location, yardstick: Yardstick, records: list[Any]) -> TableScore:
    """Score ``records`` (parsed; anything for a row that did not parse) read from ``data_path``."""
    from aod_ops.fidelity import table_reward

    card, baseline = yardstick.score(records), yardstick.baseline()
    return TableScore(
        partition=name,
        data_path=data_path,
        source=yardstick.source,
        card=card,
        baseline=baseline,
        reward=table_reward(card, baseline),
        baseline_reward=table_reward(baseline, baseline),
        valid_records=[record for record in records if not yardstick.schema.errors(record)],
        yardstick_rows=list(yardstick.yardstick_rows),
    )


def read_table(path: Location, schema: LoadedSchema) -> list[Any]:
    """The records of the table at ``path`` (see the module docstring for how each format is read).

    :raises DataError: naming the file when it is missing, unreadable, empty, or has none of the
        schema's top-level properties.
    """
    from aod_ops.records import read_records
    from aod_ops.schema import arrow_schema

    if not storage.exists(path):
        raise DataError(f"{path}: no such file or folder")
    columns = arrow_schema(schema).names
    parquet = storage.is_dir(path) or storage.suffix(path) == ".parquet"
    files = _parquet_files(path) if parquet else []
    texts = _record_texts(files) if parquet else None
    if texts is not None:
        rows: list[Any] = [_parse(text) for text in texts]
    elif parquet:
        rows = [row for file in files for row in read_records(file, schema.contents)]
    else:
        rows = read_records(path, schema.contents)
    if not rows:
        raise DataError(f"{path}: the table holds no rows")
    if texts is not None:
        return rows
    if columns and not {key for row in rows for key in row} & set(columns):
        found = ", ".join(sorted({key for row in rows for key in row})[:8]) or "none"
        raise DataError(
            f"{path}: none of the schema's columns ({', '.join(columns)}) in the table (its columns: {found})"
        )
    if parquet:
        # The output contract writes an absent property as a null in its typed column.
        return [{k: v for k, v in row.items() if k in columns and v is not None} for row in rows]
    if storage.suffix(path) == ".csv":
        return [{k: v for k, v in row.items() if k in columns} for row in rows]
    return rows


def _parquet_files(path: Location) -> list[Location]:
    files = [path] if storage.is_file(path) else storage.list_files(path, ".parquet")
    if not files:
        # An `aod synthesize` partition folder holds its table in data/.
        data = storage.join(path, "data")
        hint = f" (the table is in {data}?)" if storage.is_dir(data) else ""
        raise DataError(f"{path}: no Parquet files in this folder{hint}")
    return files


def _record_texts(files: list[Location]) -> list[Any] | None:
    """The ``_aod_record`` column's values over ``files``, None when the files have no such column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts: list[Any] = []
    for file in files:
        try:
            with storage.open_file(file) as handle:
                parquet = pq.ParquetFile(handle)
                if RECORD not in parquet.schema_arrow.names:
                    return None
                texts.extend(parquet.read(columns=[RECORD]).column(RECORD).to_pylist())
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{file}: not a readable Parquet file: {exc}") from None
    return texts


def _parse(text: Any) -> Any:
    """A record's JSON text parsed; None (an invalid record) when it is not JSON text."""
    try:
        return json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        return None


def figure_table(score: TableScore) -> Table:
    """The figures as a table: figure, the table's, the held-out rows', and what a good table shows."""
    from rich import box
    from rich.table import Table

    from aod_ops.fidelity_report import FIGURES, format_figure

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("figure")
    table.add_column("table", justify="right")
    table.add_column(score.real, justify="right")
    table.add_column("aim", justify="left")
    table.add_row(
        "reward",
        f"{score.reward:.3f}",
        f"{score.baseline_reward:.3f}",
        "real",
        style="bold",
        end_section=True,
    )
    for index, figure in enumerate(FIGURES):
        last = index + 1 == len(FIGURES) or FIGURES[index + 1].group != figure.group
        table.add_row(
            figure.label,
            format_figure(getattr(score.card, figure.name)),
            format_figure(getattr(score.baseline, figure.name)),
            figure.aim,
            end_section=last,
        )
    return table


def cmd_score(args: argparse.Namespace) -> int:
    """``aod score``: print a table's figures beside the held-out rows', the rewards and the worst
    columns; optionally write them as JSON and a fidelity report."""
    from rich.console import Console

    from aod_ops.fidelity import column_feedback
    from aod_ops.spec import load_spec

    (partition,) = load_spec(args.spec).select(args.partition)
    score = score_table(partition, args.data)
    out = Console()
    real = score.real

    def say(text: str) -> None:
        # Plain and unwrapped, so that paths and values can be copied.
        out.print(text, markup=False, highlight=False, soft_wrap=True)

    say(
        f"{partition.name}: {score.data_path} ({score.card.rows} rows) against "
        f"{len(score.yardstick_rows)} {real} rows; beside it, {score.baseline.rows} other {real} rows "
        "scored the same way"
        + ("" if score.source == "holdout" else " (the partition has no holdout: its reference is split)")
    )
    out.print(figure_table(score))
    feedback = column_feedback(score.card, limit=_FEEDBACK)
    if feedback:
        say("where the table differs most:")
        for line in feedback:
            say(f"  - {line}")
    if args.json:
        path = storage.locate(args.json)
        try:
            storage.write_text(path, json.dumps(score.as_dict(), indent=1) + "\n")
        except OSError as exc:
            raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
        say(f"figures: {path}")
    if args.report:
        folder = storage.locate(args.report)
        with storage.staged(folder) as local:
            report = score.write_report(local)
        html, png = (storage.join(folder, file.name) for file in (report.html, report.png))
        say(f"fidelity report: {html} (image {png})")
    return 0


def add_score_parser(sub: Any) -> None:
    """Register ``aod score`` on the subparsers ``sub``."""
    p = sub.add_parser(
        "score",
        help="score any table against a partition's held-out real rows",
        description="Score a table (JSON Lines, CSV, Parquet, or a folder of Parquet files) with the "
        "figures of the metrics contract (docs/architecture.md), each beside the held-out real rows' "
        "own figure, with both rewards and the columns where the table differs most.",
    )
    p.add_argument("--spec", required=True, help="partition spec (YAML)")
    p.add_argument(
        "--partition", required=True, help="the partition whose real rows the table is scored against"
    )
    p.add_argument(
        "--data",
        required=True,
        help="the table: .jsonl, .csv, .parquet, or a folder of Parquet files (a path or a URI)",
    )
    p.add_argument("--json", help="also write the figures of both sides here (JSON; a path or a URI)")
    p.add_argument(
        "--report", help="also write fidelity.png and fidelity.html into this folder (a path or a URI)"
    )
    p.set_defaults(handler=cmd_score)
