"""The fidelity report of a table: a picture of how close it is to real data, and a page around it.

``write_fidelity_report`` writes two files into a folder:

- ``fidelity.png``: one panel per column of the scorecard with the real rows' and the table's
  distributions overlaid (histograms on shared bins for numbers and dates, bar pairs of the most
  common values for categories, histograms of the text length for free text), each titled with
  its column score; a heatmap of the pair-trend gaps between the non-text columns; and a panel of
  the privacy figures, the table's beside the held-out rows'.
- ``fidelity.html``: the image, every figure of the scorecard beside the held-out rows' figure,
  the per-column scores, and ten example rows of each side.

A heatmap cell is 1 - the pair's pair-trend score, computed by SDMetrics as ``aod_ops.columns``
computes it: |corr(real) - corr(table)| / 2 for two continuous columns (numbers, dates), and the
total variation distance of the two contingency tables otherwise (a continuous column binned on
the real values' histogram edges). The report shows every valid record it is given; the
scorecard's fidelity figures may be over a sample of them.
"""

from __future__ import annotations

import html
import json
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aod_ops.columns import CATEGORICAL, DATETIME, NUMERICAL, TEXT, ColumnScore
from aod_ops.errors import DataError
from aod_ops.fidelity import Scorecard
from aod_ops.metrics import canonical_json, leaves

PNG_FILE = "fidelity.png"
HTML_FILE = "fidelity.html"
REAL_COLOR, TABLE_COLOR = "tab:blue", "tab:orange"
_PANELS_PER_ROW = 4
_CATEGORIES_SHOWN = 8
_EXAMPLES = 10
_ABSENT = "(absent)"
_CONTINUOUS = (NUMERICAL, DATETIME)


@dataclass(frozen=True)
class Figure:
    """One figure of a scorecard as reports show it: its ``Scorecard`` field, label and group, and
    ``aim``, what a good table shows (``real``: the held-out rows' figure, the ceiling)."""

    name: str
    label: str
    group: str
    aim: str


FIGURES = (
    Figure("rows", "rows", "structure", ""),
    Figure("validity", "validity", "structure", "1"),
    Figure("repair_rate", "repair rate", "structure", "0"),
    Figure("tsr", "TSR", "structure", "1"),
    Figure("quality", "quality", "fidelity", "real"),
    Figure("column_shapes", "column shapes", "fidelity", "real"),
    Figure("pair_trends", "pair trends", "fidelity", "real"),
    Figure("detection_auc", "detection AUC", "fidelity", "0.5"),
    Figure("detection_auc_text", "detection AUC, free text", "fidelity", "0.5"),
    Figure("detection_auc_other", "detection AUC, other columns", "fidelity", "0.5"),
    Figure("rule_violations", "rule violations", "fidelity", "0"),
    Figure("exact_match_rate", "exact-match rate", "privacy", "0"),
    Figure("sensitive_copies", "sensitive copies", "privacy", "0"),
    Figure("dcr_p5", "DCR p5", "privacy", ">= real"),
    Figure("dcr_median", "DCR median", "privacy", ">= real"),
    Figure("dcr_protection", "DCR protection", "privacy", "1"),
    Figure("field_overlap", "field overlap", "privacy", "<= real"),
    Figure("diversity", "diversity", "diversity", "real"),
)
"""The scorecard's figures in the order reports list them (docs/architecture.md's names)."""

# The privacy panel: figure name and label.
_PRIVACY = (
    ("exact_match_rate", "exact match"),
    ("sensitive_copies", "sensitive copies"),
    ("dcr_protection", "DCR protection"),
    ("field_overlap", "field overlap"),
)


@dataclass(frozen=True)
class FidelityReport:
    """The files a fidelity report wrote, and how many panels its image has."""

    png: Path
    html: Path
    panels: int


def format_figure(value: Any) -> str:
    """A figure as reports print it: counts as integers, rates to three decimals, '-' for none."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}"


def write_fidelity_report(
    card: Scorecard,
    baseline: Scorecard,
    table_records: Sequence[Any],
    yardstick_rows: Sequence[Any],
    out_dir: str | Path,
    title: str,
    rewards: tuple[float, float] | None = None,
) -> FidelityReport:
    """Write ``fidelity.png`` and ``fidelity.html`` into ``out_dir`` (created if needed).

    :param card: the table's scorecard (``Yardstick.score``).
    :param baseline: the held-out rows' scorecard (``Yardstick.baseline``).
    :param table_records: the table's valid records (those its fidelity figures are over).
    :param yardstick_rows: the real rows the table was compared with (``Yardstick.yardstick_rows``).
    :param title: the report's heading, e.g. the partition and the table's file.
    :param rewards: the table's and the held-out rows' reward, listed with the figures when given.
    :raises DataError: when ``out_dir`` cannot be written.
    """
    out = Path(out_dir)
    png, page_path = out / PNG_FILE, out / HTML_FILE
    try:
        out.mkdir(parents=True, exist_ok=True)
        panels = plot_fidelity(card, baseline, table_records, yardstick_rows, png, title)
        page_path.write_text(
            page(card, baseline, table_records, yardstick_rows, title, rewards), encoding="utf-8"
        )
    except OSError as exc:
        raise DataError(f"cannot write the fidelity report into {out}: {exc.strerror or exc}") from None
    return FidelityReport(png, page_path, panels)


def plot_fidelity(
    card: Scorecard,
    baseline: Scorecard,
    table_records: Sequence[Any],
    yardstick_rows: Sequence[Any],
    path: Path,
    title: str,
) -> int:
    """Draw the report's image into ``path``; returns its number of panels (columns + 2)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as PlotFigure
    from matplotlib.patches import Patch

    table = [leaves(record) for record in table_records]
    real = [leaves(record) for record in yardstick_rows]
    columns = card.columns
    rows = max(1, math.ceil(len(columns) / _PANELS_PER_ROW))
    # A Figure with its own Agg canvas: no pyplot state, no GUI backend, safe in workers.
    figure = PlotFigure(figsize=(16, 2.9 * rows + 5.0), dpi=90, layout="constrained")
    FigureCanvasAgg(figure)
    # Two sub-figures lay out apart: the bottom row's wide labels do not shift the column grid.
    top, bottom = figure.subfigures(2, 1, squeeze=False, height_ratios=[2.9 * rows, 5.0])[:, 0]
    with warnings.catch_warnings():
        # SDMetrics and numpy warn about constant or tiny samples; the panels show them as they are.
        warnings.simplefilter("ignore")
        grid = top.subplots(rows, _PANELS_PER_ROW, squeeze=False).ravel()
        for axes, column in zip(grid, columns, strict=False):
            _column_panel(
                axes,
                column,
                [r.get(column.pointer, _ABSENT) for r in real],
                [t.get(column.pointer, _ABSENT) for t in table],
            )
        for axes in grid[len(columns) :]:
            axes.set_visible(False)
        heat, privacy = bottom.subplots(1, 2, width_ratios=[1.1, 1.0])
        _pair_panel(bottom, heat, [c for c in columns if c.kind != TEXT], real, table)
        _privacy_panel(privacy, card, baseline)
    figure.suptitle(title, fontsize="x-large")
    figure.legend(
        handles=[
            Patch(color=REAL_COLOR, alpha=0.5, label=f"real ({len(yardstick_rows)} rows)"),
            Patch(color=TABLE_COLOR, alpha=0.8, label=f"table ({len(table_records)} valid rows)"),
        ],
        loc="outside upper right",
        ncols=2,
    )
    figure.savefig(path)
    return len(columns) + 2


def _label(pointer: str) -> str:
    return pointer.lstrip("/") or "(record)"


def _continuous(kind: str, values: list[Any]) -> np.ndarray:
    """A number or date column's values as floats (dates as days since 1970), NaN where absent or unfit."""
    if kind == DATETIME:
        texts = pd.Series([v if isinstance(v, str) else None for v in values], dtype=object)
        moments = pd.to_datetime(texts, errors="coerce", utc=True, format="ISO8601")
        return ((moments - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(days=1)).to_numpy(dtype=float)
    return np.array(
        [float(v) if isinstance(v, int | float) and not isinstance(v, bool) else np.nan for v in values]
    )


def _present(values: np.ndarray) -> np.ndarray:
    return values[~np.isnan(values)]


def _key(value: Any) -> str:
    return _ABSENT if value is _ABSENT else canonical_json(value)


def _shown(key: str) -> str:
    """A category key as a short label: a string without its quotes, at most 18 characters."""
    text = key if key == _ABSENT else str(json.loads(key)) if key.startswith('"') else key
    return text if len(text) <= 18 else text[:17] + "…"


def _column_panel(axes: Any, column: ColumnScore, real: list[Any], table: list[Any]) -> None:
    label = _label(column.pointer)
    if column.kind in _CONTINUOUS:
        _histograms(axes, _present(_continuous(column.kind, real)), _present(_continuous(column.kind, table)))
        if column.kind == DATETIME:
            import matplotlib.dates as mdates

            # Days since 1970 are matplotlib's own date numbers.
            locator = mdates.AutoDateLocator()
            axes.xaxis.set_major_locator(locator)
            axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    elif column.kind == CATEGORICAL:
        _bar_pairs(axes, [_key(v) for v in real], [_key(v) for v in table])
    else:
        lengths = [
            np.array([len(v) for v in side if isinstance(v, str)], dtype=float) for side in (real, table)
        ]
        _histograms(axes, *lengths)
        label += " (text length)"
    if column.score is not None:
        score = f"{column.metric} {column.score:.2f}"
    elif column.auc is not None:
        score = f"detection AUC {column.auc:.2f}"
    else:
        score = column.metric
    # A panel that needs a look stands out.
    bad = (column.score is not None and column.score < 0.7) or (column.auc is not None and column.auc > 0.8)
    axes.set_title(f"{label}\n{score}", fontsize="medium", color="tab:red" if bad else "black")
    axes.tick_params(labelsize="small")


def _histograms(axes: Any, real: np.ndarray, table: np.ndarray) -> None:
    both = np.r_[real, table]
    if not len(both):
        axes.text(0.5, 0.5, "no values", ha="center", va="center", transform=axes.transAxes)
        return
    edges = np.histogram_bin_edges(both, bins=int(np.clip(math.sqrt(len(both)), 5, 30)))
    # Shares of each side's rows, so that 50 real rows and 1000 table rows read alike.
    if len(real):
        axes.hist(real, bins=edges, weights=np.full(len(real), 1 / len(real)), color=REAL_COLOR, alpha=0.5)
    if len(table):
        axes.hist(
            table,
            bins=edges,
            weights=np.full(len(table), 1 / len(table)),
            color=TABLE_COLOR,
            histtype="step",
            linewidth=2,
        )
    axes.set_ylabel("share of rows", fontsize="small")


def _bar_pairs(axes: Any, real: list[str], table: list[str]) -> None:
    shares = [Counter(side) for side in (real, table)]
    sizes = [max(1, len(real)), max(1, len(table))]
    keys = sorted(
        set(shares[0]) | set(shares[1]), key=lambda k: -(shares[0][k] / sizes[0] + shares[1][k] / sizes[1])
    )
    shown, rest = keys[:_CATEGORIES_SHOWN], keys[_CATEGORIES_SHOWN:]
    values = [[count[k] / size for k in shown] for count, size in zip(shares, sizes, strict=True)]
    names = [_shown(k) for k in shown]
    if rest:
        for side, (count, size) in enumerate(zip(shares, sizes, strict=True)):
            values[side].append(sum(count[k] for k in rest) / size)
        names.append(f"{len(rest)} others")
    positions = np.arange(len(names))
    axes.barh(positions - 0.2, values[0], height=0.4, color=REAL_COLOR, alpha=0.5)
    axes.barh(positions + 0.2, values[1], height=0.4, color=TABLE_COLOR, alpha=0.8)
    axes.set_yticks(positions, names, fontsize="small")
    axes.invert_yaxis()
    axes.set_xlabel("share of rows", fontsize="small")


def _pair_panel(
    figure: Any,
    axes: Any,
    columns: list[ColumnScore],
    real: list[dict[str, Any]],
    table: list[dict[str, Any]],
) -> None:
    present = [
        c for c in columns if any(c.pointer in row for row in real) and any(c.pointer in row for row in table)
    ]
    axes.set_title("pair trends: 1 - score per column pair (0 = same trend)", fontsize="medium")
    if len(present) < 2:
        axes.text(
            0.5,
            0.5,
            "fewer than two non-text columns\non both sides: no pairs",
            ha="center",
            va="center",
            transform=axes.transAxes,
        )
        axes.set_axis_off()
        return
    gaps = pair_gaps(present, real, table)
    names = [_label(c.pointer) for c in present]
    top = max(0.2, float(np.nanmax(gaps)))
    image = axes.imshow(gaps, cmap="Reds", vmin=0.0, vmax=top)
    axes.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize="small")
    axes.set_yticks(range(len(names)), names, fontsize="small")
    if len(names) <= 12:
        for (i, j), gap in np.ndenumerate(gaps):
            if not np.isnan(gap):
                color = "white" if gap > 0.6 * top else "black"  # readable on the dark cells
                axes.text(j, i, f"{gap:.2f}", ha="center", va="center", fontsize="x-small", color=color)
    figure.colorbar(image, ax=axes, shrink=0.8)


def pair_gaps(
    columns: Sequence[ColumnScore], real: Sequence[dict[str, Any]], table: Sequence[dict[str, Any]]
) -> np.ndarray:
    """The symmetric matrix of 1 - pair-trend score between ``columns`` (NaN on the diagonal),
    ``real`` and ``table`` being records' leaves by pointer."""
    from sdmetrics.column_pairs import ContingencySimilarity, CorrelationSimilarity
    from sdmetrics.utils import discretize_column

    def encoded(column: ColumnScore, rows: Sequence[dict[str, Any]]) -> Any:
        values = [row.get(column.pointer, _ABSENT) for row in rows]
        return _continuous(column.kind, values) if column.kind in _CONTINUOUS else [_key(v) for v in values]

    sides = [{c.pointer: encoded(c, rows) for c in columns} for rows in (real, table)]

    def discrete(column: ColumnScore) -> tuple[Any, Any]:
        r, t = sides[0][column.pointer], sides[1][column.pointer]
        if column.kind in _CONTINUOUS:
            return discretize_column(pd.Series(r), pd.Series(t))
        return r, t

    gaps = np.full((len(columns), len(columns)), np.nan)
    for i, a in enumerate(columns):
        for j in range(i + 1, len(columns)):
            b = columns[j]
            score = None
            if a.kind in _CONTINUOUS and b.kind in _CONTINUOUS:
                frames = []
                for side in sides:
                    x, y = side[a.pointer], side[b.pointer]
                    keep = ~(np.isnan(x) | np.isnan(y))
                    if keep.sum() >= 3 and np.ptp(x[keep]) > 0 and np.ptp(y[keep]) > 0:
                        frames.append(pd.DataFrame({"a": x[keep], "b": y[keep]}))
                if len(frames) == 2:
                    score = CorrelationSimilarity.compute(frames[0], frames[1])
            if score is None or np.isnan(score):
                (real_a, table_a), (real_b, table_b) = discrete(a), discrete(b)
                score = ContingencySimilarity.compute(
                    pd.DataFrame({"a": list(real_a), "b": list(real_b)}),
                    pd.DataFrame({"a": list(table_a), "b": list(table_b)}),
                )
            gaps[i, j] = gaps[j, i] = 1.0 - float(score)
    return gaps


def _privacy_panel(axes: Any, card: Scorecard, baseline: Scorecard) -> None:
    positions = np.arange(len(_PRIVACY))
    for offset, (scores, color, alpha) in zip(
        (-0.2, 0.2), ((baseline, REAL_COLOR, 0.5), (card, TABLE_COLOR, 0.8)), strict=True
    ):
        values = [float(getattr(scores, name)) for name, _ in _PRIVACY]
        bars = axes.barh(positions + offset, values, height=0.4, color=color, alpha=alpha)
        axes.bar_label(bars, labels=[f"{v:.2f}" for v in values], padding=3, fontsize="small")
    axes.set_yticks(positions, [label for _, label in _PRIVACY])
    axes.invert_yaxis()
    axes.set_xlim(0, 1.15)
    axes.set_title(
        "privacy against the reference (aim: copies 0, DCR protection 1, overlap <= real)",
        fontsize="medium",
    )


_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:90em}"
    "table{border-collapse:collapse;margin-bottom:1.5em}"
    "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right;vertical-align:top}"
    "td.text,th.text{text-align:left}.section td{background:#f3f3f3;font-weight:bold;text-align:left}"
    ".examples td{text-align:left;font-family:monospace;font-size:90%}"
)


def page(
    card: Scorecard,
    baseline: Scorecard,
    table_records: Sequence[Any],
    yardstick_rows: Sequence[Any],
    title: str,
    rewards: tuple[float, float] | None = None,
) -> str:
    """The HTML page: the image, the figures beside the held-out rows', columns, example rows."""
    esc = html.escape
    parts = [
        "<!doctype html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<img src="{PNG_FILE}" alt="distributions per column, pair trends, privacy" style="max-width:100%">',
        "<h2>Figures</h2>",
        '<table><tr><th class="text">figure</th><th>table</th><th>held-out real</th><th>aim</th></tr>',
    ]
    if rewards is not None:
        parts.append(
            f'<tr><td class="text"><b>reward</b></td><td><b>{rewards[0]:.3f}</b></td>'
            f"<td><b>{rewards[1]:.3f}</b></td><td>real</td></tr>"
        )
    group = ""
    for figure in FIGURES:
        if figure.group != group:
            group = figure.group
            parts.append(f'<tr class="section"><td colspan="4">{group}</td></tr>')
        table, real = (format_figure(getattr(scores, figure.name)) for scores in (card, baseline))
        parts.append(
            f'<tr><td class="text">{esc(figure.label)}</td><td>{table}</td><td>{real}</td>'
            f"<td>{esc(figure.aim)}</td></tr>"
        )
    parts.append("</table>")
    if card.broken_rules:
        parts.append("<h2>Broken rules</h2><ul>")
        parts.extend(f"<li>{esc(sentence)}</li>" for sentence in card.broken_rules)
        parts.append("</ul>")
    parts.append("<h2>Columns</h2>")
    headers = ("column", "kind", "metric", "score", "table", "held-out real", "what differs")
    parts.append("<table><tr>" + "".join(f'<th class="text">{h}</th>' for h in headers) + "</tr>")
    for column in card.columns:
        score = column.score if column.score is not None else column.auc
        cells = (
            _label(column.pointer),
            column.kind,
            column.metric if column.score is not None else "detection AUC",
            format_figure(score),
            column.synthetic,
            column.real,
            column.detail,
        )
        parts.append("<tr>" + "".join(f'<td class="text">{esc(str(c))}</td>' for c in cells) + "</tr>")
    parts.append("</table>")
    for heading, records in (
        ("Example rows of the table", table_records),
        ("Example rows of the held-out real data", yardstick_rows),
    ):
        parts.append(f"<h2>{heading}</h2>")
        parts.append(_examples(records[:_EXAMPLES]))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _examples(records: Sequence[Any]) -> str:
    if not records:
        return "<p>none</p>"
    rows = [record if isinstance(record, dict) else {"(value)": record} for record in records]
    names = list(dict.fromkeys(key for row in rows for key in row))
    lines = ['<table class="examples"><tr>' + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"]
    for row in rows:
        cells = [
            "" if name not in row else row[name] if isinstance(row[name], str) else canonical_json(row[name])
            for name in names
        ]
        lines.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)
