"""The loop's report: reward and metrics per round as a PNG plot and a small HTML page.

``write_report(folder)`` reads the ``history.json`` of one run directory (``<out>/<partition>``)
or of every partition under an ``aod optimize --out`` folder, and writes ``report.png`` (one row
per partition: the accepted reward with every proposal's reward beside it; quality and detection
AUC with the held-out real rows' as dashed lines, validity and field overlap) and ``report.html``
(the plot, a table of rounds per partition and the best prompt) into ``folder`` (a local folder or
a URI, see ``aod_ops.storage``). Round 0 is the
initial prompt. A round that went on without a failed agent or critic (``agent_fallback: editor``)
says so in its row.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aod_ops import storage
from aod_ops.errors import DataError
from aod_ops.loop import HISTORY_FILE, PROMPT_FILE
from aod_ops.storage import Location

PNG_FILE = "report.png"
HTML_FILE = "report.html"
# Metrics plotted per round: design name, label, line style (lines at 1.0 often coincide, so the
# markers differ in shape and size to stay visible).
METRICS = (
    ("quality", "quality", "o-"),
    ("detection_auc", "detection AUC", "s-"),
    ("validity", "validity", "^--"),
    ("field_overlap", "field overlap", "D:"),
)
# Figures the held-out real rows also have: drawn as a dashed line of the same colour.
HOLDOUT_LINES = ("quality", "detection_auc")


@dataclass(frozen=True)
class Point:
    """The prompt in force after a round (round 0: the initial prompt), with the held-out real
    rows' own figures (``holdout``) beside its metrics, and what stood in for a failed agent or
    critic in the round (``fallbacks``)."""

    round: int
    version: int
    reward: float
    metrics: dict[str, float | None]
    accepted: int | None = None
    seconds: float | None = None
    holdout: dict[str, float | None] = field(default_factory=dict)
    fallbacks: tuple[str, ...] = ()

    @classmethod
    def of(cls, line: dict[str, Any], round_number: int) -> Point:
        """A point from a ``history.json`` line (the initial prompt's has no round fields)."""
        metrics = dict(line["metrics"])
        holdout = metrics.pop("holdout", {})
        return cls(
            round_number,
            int(line["version"]),
            float(line["reward"]),
            metrics,
            line.get("accepted"),
            None if "seconds" not in line else float(line["seconds"]),
            dict(holdout),
            tuple(str(note) for note in line.get("fallbacks", ())),
        )


@dataclass(frozen=True)
class RunSummary:
    """One partition's run as the report shows it, read from its ``history.json``.

    ``tried`` holds ``(round, reward)`` of every proposal; ``instruction`` is the best prompt's.
    """

    partition: str
    points: tuple[Point, ...]
    tried: tuple[tuple[int, float], ...]
    stop: str | None
    instruction: str


@dataclass(frozen=True)
class Report:
    """The files a report wrote."""

    png: Location
    html: Location
    partitions: tuple[str, ...]


def find_runs(folder: Location) -> list[Location]:
    """The run directories in ``folder``: itself when it is one, else its subfolders that are.

    :raises DataError: when there is none.
    """
    if storage.is_file(storage.join(folder, HISTORY_FILE)):
        return [folder]
    runs = [run for run in storage.list_folders(folder) if storage.is_file(storage.join(run, HISTORY_FILE))]
    if not runs:
        raise DataError(
            f"{folder}: no loop runs here (no {HISTORY_FILE}, nor */{HISTORY_FILE}); run aod optimize"
        )
    return runs


def read_run(run_dir: Location) -> RunSummary:
    """A run directory's history and best instruction.

    :raises DataError: naming the file that is unreadable or holds no round.
    """
    path = storage.join(run_dir, HISTORY_FILE)
    try:
        history = json.loads(storage.read_text(path))
        initial = history["initial"]
        if not history["rounds"] or initial is None:
            raise DataError(f"{path}: no round recorded yet")
        points = [Point.of(initial, 0)] + [Point.of(line, int(line["round"])) for line in history["rounds"]]
        tried = [
            (int(line["round"]), float(p["reward"])) for line in history["rounds"] for p in line["proposals"]
        ]
        stop = history["stop"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not a loop history: {exc}") from exc
    prompt = storage.join(run_dir, PROMPT_FILE)
    try:
        instruction = str(json.loads(storage.read_text(prompt))["instruction"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{prompt}: not a prompt artifact: {exc}") from exc
    return RunSummary(
        str(history.get("partition", storage.name(run_dir))), tuple(points), tuple(tried), stop, instruction
    )


def plot(runs: list[RunSummary], path: Path) -> None:
    """Write the PNG: per partition, reward per round (left) and the metrics per round (right)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A Figure with its own Agg canvas: no pyplot state, no GUI backend, safe in workers.
    figure = Figure(figsize=(11, 3.4 * len(runs)), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(runs), 2, squeeze=False)
    for (left, right), run in zip(axes, runs, strict=True):
        rounds = [p.round for p in run.points]
        left.plot(rounds, [p.reward for p in run.points], "o-", color="tab:blue", label="accepted reward")
        if run.tried:
            xs, ys = zip(*run.tried, strict=True)
            left.scatter(xs, ys, marker="x", color="tab:gray", label="proposals")
        left.set_title(f"{run.partition}: reward per round")
        left.set_xlabel("round (0 = initial prompt)")
        left.set_ylim(-0.02, 1.02)
        left.set_xticks(rounds)
        left.grid(alpha=0.3)
        left.legend(loc="lower right", fontsize="small")
        for size, (key, label, style) in zip((9, 7, 6, 4), METRICS, strict=True):
            values = [p.metrics.get(key) for p in run.points]
            (line,) = right.plot(
                rounds,
                [float("nan") if v is None else v for v in values],
                style,
                markersize=size,
                label=label,
            )
            real = run.points[-1].holdout.get(key) if key in HOLDOUT_LINES else None
            if real is not None:
                right.axhline(
                    real, color=line.get_color(), linestyle="--", linewidth=1, label=f"{label}, held-out"
                )
        right.set_title(f"{run.partition}: metrics of the prompt in force")
        right.set_xlabel("round (0 = initial prompt)")
        right.set_ylim(-0.02, 1.02)
        right.set_xticks(rounds)
        right.grid(alpha=0.3)
        right.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    figure.savefig(path)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape("" if value is None else str(value))


def _beside(value: float | None, real: float | None) -> str:
    """A figure with the held-out rows' own in brackets."""
    if value is None:
        return ""
    return f"{value:.3f}" if real is None else f"{value:.3f} ({real:.3f})"


def page(runs: list[RunSummary]) -> str:
    """The HTML page: the plot, then per partition a table of rounds and the best instruction."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8"><title>AoD loop report</title>',
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "pre{white-space:pre-wrap;background:#f6f6f6;padding:1em}</style></head><body>",
        "<h1>AoD loop report</h1>",
        f'<img src="{PNG_FILE}" alt="reward and metrics per round" style="max-width:100%">',
    ]
    headers = (
        "round",
        "prompt",
        "reward",
        "quality (held-out)",
        "detection AUC (held-out)",
        "validity",
        "field overlap",
        "accepted",
        "seconds",
        "notes",
    )
    for run in runs:
        best = run.points[-1]  # the accepted reward never decreases
        parts.append(f"<h2>{html.escape(run.partition)}</h2>")
        parts.append(
            f"<p>Best reward {best.reward:.3f} (prompt v{best.version}) after {len(run.points) - 1} "
            f"round(s); stopped: {_cell(run.stop or 'not yet')}.</p>"
        )
        parts.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in headers) + "</tr>")
        for point in run.points:
            accepted = (
                "" if point.round == 0 else ("kept" if point.accepted is None else f"v{point.accepted}")
            )
            real = point.holdout
            cells = [
                point.round or "0 (initial)",
                f"v{point.version}",
                point.reward,
                *(_beside(point.metrics.get(key), real.get(key)) for key in HOLDOUT_LINES),
                *(point.metrics.get(key) for key, _, _ in METRICS if key not in HOLDOUT_LINES),
                accepted,
                "" if point.seconds is None else f"{point.seconds:.1f}",
                "; ".join(point.fallbacks),
            ]
            parts.append("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
        parts.append(f"<h3>Best instruction</h3><pre>{html.escape(run.instruction)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(folder: str | Path) -> Report:
    """Write ``report.png`` and ``report.html`` into ``folder`` (a run directory, or the output
    folder of ``aod optimize`` holding one per partition).

    :raises DataError: when there is no readable run in ``folder``.
    """
    folder = storage.locate(folder)
    if not storage.is_dir(folder):
        raise DataError(f"{folder}: not a folder")
    runs = [read_run(run_dir) for run_dir in find_runs(folder)]
    with storage.staged(folder) as local:
        plot(runs, local / PNG_FILE)
        (local / HTML_FILE).write_text(page(runs), encoding="utf-8")
    return Report(
        storage.join(folder, PNG_FILE), storage.join(folder, HTML_FILE), tuple(r.partition for r in runs)
    )
