"""The quality benchmark's report: the means over partitions, the floors, the markdown and the plot.

``bench/quality.py`` measures the rows (a scorecard per system and partition, and the held-out
baseline of each partition); this module turns them into what ``quality.json`` holds beside the
rows (``means``, ``floors``) and writes ``quality.json``, ``quality.md`` and
``quality_rewards.png`` (``write_outputs``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

AOD = "aod-skeleton"  # the system the floors are about
HELDOUT = "held-out"
# The per-partition table's columns, after the system.
COLUMNS = (
    "reward",
    "quality",
    "column_shapes",
    "pair_trends",
    "detection_auc",
    "detection_auc_text",
    "detection_auc_other",
    "rule_violations",
    "exact_match_rate",
    "sensitive_copies",
    "dcr_protection",
    "field_overlap",
    "repair_rate",
    "validity",
    "wall_s",
)
# Averaged over partitions per system (a figure a partition lacks, e.g. free-text AUC, is skipped).
FIGURES = (
    *COLUMNS[:-1],
    "tsr",
    "dcr_p5",
    "dcr_median",
    "diversity",
    "wall_s",
    "records_per_s",
)
EXAMPLES = 10  # records per system and partition shown in the report


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def means(rows: Sequence[dict[str, Any]], systems: Sequence[str]) -> list[dict[str, Any]]:
    """Per system (the held-out baseline first when its rows are given), the mean of each figure
    over the partitions that have it (None where none has)."""
    out = []
    for system in (HELDOUT, *systems):
        mine = [r for r in rows if r["system"] == system]
        if mine:
            mean = {name: _mean([r.get(name) for r in mine]) for name in FIGURES}
            out.append({"system": system, "partitions": len(mine), **mean})
    return out


def floors(rows: Sequence[dict[str, Any]], heldout: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's floors, each with the figures it is decided on (per partition, and overall) and
    ``passed`` computed from them: for ``aod-skeleton`` (against ``sdv-gc`` and the held-out rows),
    and for the reward (the held-out rows above every system). A floor whose systems did not run
    is left out."""
    by = {(r["system"], r["partition"]): r for r in rows}
    aod = {p: r for (s, p), r in by.items() if s == AOD}
    out: list[dict[str, Any]] = []

    def add(name: str, wanted: str, values: dict[str, Any], passed: bool, overall: Any = None) -> None:
        out.append({"floor": name, "wanted": wanted, "values": values, "overall": overall, "passed": passed})

    def each(name: str, wanted: str, figure: str, ok: Callable[[Any], bool]) -> None:
        values = {p: r[figure] for p, r in aod.items()}
        add(name, wanted, values, all(ok(v) for v in values.values()))

    gc = {p: by[("sdv-gc", p)]["quality"] for p in aod if ("sdv-gc", p) in by}
    if gc:
        versus = {p: {AOD: aod[p]["quality"], "sdv-gc": q} for p, q in gc.items()}
        ours, theirs = _mean([v[AOD] for v in versus.values()]), _mean(list(gc.values()))
        overall = {AOD: ours, "sdv-gc": theirs}
        add("mean quality at least sdv-gc's", ">= sdv-gc", versus, (ours or 0) >= (theirs or 0), overall)
        need = math.ceil(0.75 * len(gc))
        wins = sum(v[AOD] >= v["sdv-gc"] for v in versus.values())
        name = f"quality at least sdv-gc's on {need} of {len(gc)} partitions"
        add(name, f">= sdv-gc on {need}", versus, wins >= need, f"{wins} of {len(gc)}")
    for figure, limit in (("detection_auc_other", 0.70), ("detection_auc", 0.75)):
        values = {p: r[figure] for p, r in aod.items()}
        mean = _mean(list(values.values()))
        if values:
            passed = mean is not None and mean <= limit
            add(f"{figure} at most {limit} on average", f"mean <= {limit}", values, passed, mean)
    if aod:
        each("no exact copies", "= 0", "exact_match_rate", lambda v: v == 0)
        each("no sensitive copies", "= 0", "sensitive_copies", lambda v: v == 0)
        each("DCR protection at least 0.9", ">= 0.9", "dcr_protection", lambda v: v >= 0.9)
        rules = {
            p: {AOD: r["rule_violations"], HELDOUT: heldout[p]["rule_violations"]} for p, r in aod.items()
        }
        passed = all(v[AOD] <= v[HELDOUT] for v in rules.values())
        add("rule violations at most the held-out rows'", f"<= {HELDOUT}", rules, passed)
        each("repair rate reported", "reported", "repair_rate", lambda v: v is not None)
        each("validity 1.0", "= 1", "validity", lambda v: v == 1.0)
    best: dict[str, Any] = {}
    for p, base in heldout.items():
        mine = [r for r in rows if r["partition"] == p]
        if mine:
            top = max(mine, key=lambda r: r["reward"])
            best[p] = {HELDOUT: base["reward"], top["system"]: top["reward"]}
    if best:
        passed = all(v[HELDOUT] > max(x for k, x in v.items() if k != HELDOUT) for v in best.values())
        add("held-out reward above every system's", "> the best system's", best, passed)
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


def _table(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["| system | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['system']} | " + " | ".join(_fmt(r.get(n)) for n in COLUMNS) + " |")
    return lines


def _figures(value: Any) -> str:
    """A floor's figure: ``x``, or ``name x / name y`` for figures side by side."""
    if isinstance(value, dict):
        return " / ".join(f"{k} {_fmt(x)}" for k, x in value.items())
    return _fmt(value)


def render_markdown(results: dict[str, Any]) -> str:
    """The report: a table per partition (held-out row first), the means, the floors, examples."""
    s = results["settings"]
    sizes = ", ".join(f"{p} {n}" for p, n in s["rows_per_system_and_partition"].items())
    out = [
        "## Quality benchmark",
        "",
        f"Rows per system and partition: {sizes}; seed {s['seed']}; DLM `{s['dlm']}`; AoD loops of at most "
        f"{s['loop_rounds']} rounds x {s['loop_proposals']} proposals; CTGAN {s['ctgan_epochs']} epochs; "
        f"{s['torch_threads']} torch threads on {s['cpus']} CPUs, load average "
        f"{s['load_average_before'][0]} before and {s['load_average_after'][0]} after; "
        f"{s['total_s'] / 60:.1f} min in all. Each table is scored against the held-out yardstick rows; "
        "`held-out` is the held-out baseline rows scored as a table (the ceiling); `reward` is "
        "`table_reward` against it; `wall_s` includes training and optimization.",
        "",
    ]
    if not s["complete"]:
        out += ["**Partial run**: the rows below are those measured before the run stopped.", ""]
    for name in [p for p in s["partitions"] if p in results["heldout"]]:  # a partial run has fewer
        out += [f"### {name}", ""]
        out += _table([results["heldout"][name], *(r for r in results["rows"] if r["partition"] == name)])
        out.append("")
    out += ["### Mean over partitions", "", *_table(results["means"]), ""]
    out += [
        f"### Floors ({AOD})",
        "",
        "| floor | wanted | per partition | overall | passed |",
        "|---|---|---|---|---|",
    ]
    for f in results["floors"]:
        per = "; ".join(f"{p}: {_figures(v)}" for p, v in f["values"].items())
        passed = "pass" if f["passed"] else "**fail**"
        out.append(f"| {f['floor']} | {f['wanted']} | {per} | {_figures(f['overall'])} | {passed} |")
    out += ["", f"### Example records (first {EXAMPLES} per system and partition)", ""]
    for name in [p for p in s["partitions"] if p in results["heldout"]]:
        for r in (r for r in results["rows"] if r["partition"] == name):
            out += [f"{name}, `{r['system']}`:", "", "```json", *r["examples"], "```", ""]
    return "\n".join(out)


def plot_rewards(results: dict[str, Any], path: Path) -> None:
    """Reward per round of the AoD runs (round 0: the initial prompt), one panel per AoD system,
    the partition's held-out reward dashed in the same colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    systems = [s for s in ("aod-skeleton", "aod-free") if any(r["system"] == s for r in results["rewards"])]
    fig, axes = plt.subplots(
        1, max(1, len(systems)), figsize=(5.5 * max(1, len(systems)), 3.8), squeeze=False
    )
    for ax, system in zip(axes[0], systems, strict=False):
        runs = [r for r in results["rewards"] if r["system"] == system]
        for color, run in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], runs, strict=False):
            ax.plot(
                range(len(run["rewards"])), run["rewards"], marker="o", color=color, label=run["partition"]
            )
            ax.axhline(run["heldout_reward"], color=color, linestyle="--", linewidth=1)
        ax.set_title(f"{system} (dashed: held-out rows)")
        ax.set_xlabel("round (0: initial prompt)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("judge reward of the prompt in force")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write the JSON, the markdown (``<out>.md``) and the reward plot (``<stem>_rewards.png``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    markdown = out.with_suffix(".md")
    plot = out.with_name(out.stem + "_rewards.png")
    plot_rewards(results, plot)
    markdown.write_text(render_markdown(results), encoding="utf-8")
    return markdown, plot
