"""Quality benchmark: AoD against SDV and diffusion-only baselines, read against real rows.

For every partition of the spec (default ``examples/partitions.yaml``: four vega tables, one of
them personal data), each system writes the same number of records (``--rows``; default
``ROWS``, 200), on the same seeds, and every table is scored the same way (``aod_ops.fidelity``:
``Yardstick.score`` against the held-out yardstick rows, privacy against the reference).
Fidelity is read on a sample of as many rows as the held-out baseline half holds (50, 10 for
la-riots), privacy on every row:

- ``reference``: real reference rows scored as a table: the ceiling for fidelity, and it must
  fail privacy (every row is a copy);
- ``sdv-gc``: SDV's GaussianCopulaSynthesizer fitted on the reference sample;
- ``sdv-ctgan``: SDV's CTGANSynthesizer, ``--epochs`` epochs (default 300, SDV's own);
- ``dlm-skeleton``: the DLM infilling the schema's skeleton with the static prompt (the loop's
  first prompt, ``initial_prompt``: schema title and description, the partition's notes, two
  reference exemplars unless the partition has sensitive columns; no value guides);
- ``aod-skeleton``: the AoD loop (judge + optimizer, ``--rounds`` rounds of ``--proposals``
  prompts) from that prompt; its row is the best prompt sampled afresh on the evaluation seeds
  (the loop's own reward is a best-of-M estimate, optimistic by construction), and its
  ``wall_s`` includes the optimization.

``--systems`` also takes ``dlm-free`` and ``aod-free`` (free mode: the whole response masked),
``ar`` and ``ar-constrained`` (SmolLM2-135M-Instruct asked for the record in a chat, without and
with Outlines' JSON grammar).

SDV's metadata is detected from the reference dataframe, then fixed from the JSON Schema: enums
and consts categorical, ``format: date`` strings datetimes (``%Y-%m-%d``), numbers numerical,
any other string categorical, as SDV models it by default: SDV then samples free text (names,
addresses) from the reference's own values, which is what its privacy figures show.

Each row is a scorecard (the docs/architecture.md figures) plus ``reward`` (``table_reward`` against the
held-out baseline rows of the same size), ``wall_s`` (training and optimization included) and
``records_per_s`` (writing the evaluated rows only). Beside each partition: the held-out
baseline rows scored as a table, and their reward: the ceiling every system is read against.

Writes ``--out`` (``bench/results/quality.json``: rows, per-system means over partitions,
held-out baselines, reward per round of each AoD run, the floors with pass/fail, settings and
versions), ``quality.md`` beside it (a table per partition, the means, the floors, ten example
records per system and partition) and ``quality_rewards.png`` (reward per round of each AoD run,
the held-out reward dashed): ``bench/quality_report.py`` computes the means and floors and
writes the three. The AoD runs' folders go under ``--work``.

    python bench/quality.py [--partitions cars,airports] [--systems reference,sdv-gc,aod-skeleton]
        [--rows 200] [--epochs 300] [--rounds 5] [--proposals 3] [--model aod-smol-dlm] [--threads 2]
        [--out bench/results/quality.json] [--work out/quality]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the package and bench/ import
    sys.path.insert(0, str(ROOT))

from aod_ops.agents.prompt import Prompt, initial_prompt  # noqa: E402
from aod_ops.dlm.generate import Candidate, Generator, record_seed  # noqa: E402
from aod_ops.dlm.models import load_denoiser  # noqa: E402
from aod_ops.fidelity import Yardstick, table_reward  # noqa: E402
from aod_ops.pipeline import LoopOptions, optimize_prompt, with_dlm  # noqa: E402
from aod_ops.schema import LoadedSchema, load_schema  # noqa: E402
from aod_ops.spec import Partition, load_reference, load_spec  # noqa: E402
from bench.quality_report import EXAMPLES, HELDOUT, floors, means, write_outputs  # noqa: E402

SYSTEMS = (
    "reference",
    "sdv-gc",
    "sdv-ctgan",
    "dlm-skeleton",
    "aod-skeleton",
    "dlm-free",
    "aod-free",
    "ar",
    "ar-constrained",
)
DEFAULT_SYSTEMS = SYSTEMS[:5]
DEFAULT_SPEC = ROOT / "examples" / "partitions.yaml"
DEFAULT_OUT = ROOT / "bench" / "results" / "quality.json"
EXAMPLE_CHARS = 400  # of an example that is not a JSON record (free-mode text)
Mode = Literal["skeleton", "free"]
# Records per system and partition. DCR protection on 50 rows is mostly noise: of ten 50-row
# tables of real airports the example files do not hold, four scored below 0.9; of ten 200-row
# tables, none (0.92-1.0).
ROWS = 200
# SDV's loggers, set to WARNING (with a local log registry they write INFO lines to a CSV file).
SDV_LOGGERS = ("SingleTableSynthesizer", "MultiTableSynthesizer", "Metadata", "SingleTableMetadata")


@dataclass(frozen=True)
class BenchSettings:
    """What every system gets.

    ``candidates`` records per system and partition (None: ``ROWS``) on the seeds of ``seed``;
    AoD loops of at most ``rounds`` rounds with ``proposals`` prompts each and
    ``loop_candidates`` records per evaluation (None: the spec's); CTGAN trained ``epochs``
    epochs; the DLM ``model`` with ``batch_size`` records per forward batch and
    ``max_new_tokens`` for free text (None: the partition's decoding setting); ``agent_calls``
    per loop round (None: the loop's default).
    """

    candidates: int | None = None
    rounds: int = 5
    proposals: int = 3
    loop_candidates: int | None = None
    epochs: int = 300
    model: str = "aod-smol-dlm"
    batch_size: int = 16
    seed: int = 0
    max_new_tokens: int | None = None
    agent_calls: int | None = None

    def __post_init__(self) -> None:
        for name in ("rounds", "proposals", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("candidates", "loop_candidates", "max_new_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class SystemRun:
    """One system's records for one partition and what they took.

    ``candidates`` hold what the system wrote (an outside table's records as candidates without
    repair counts); ``sampling_s`` covers writing them, ``wall_s`` the system's whole time on the
    partition (training or the AoD loop included); ``rewards`` is an AoD run's reward per round
    (index 0: the initial prompt), empty for the other systems.
    """

    system: str
    partition: str
    candidates: list[Candidate]
    sampling_s: float
    wall_s: float
    rewards: tuple[float, ...] = ()
    rounds_stop: str | None = None


@dataclass
class Context:
    """One partition's inputs, shared by all systems (``holdout`` empty when it has none)."""

    partition: Partition
    schema: LoadedSchema
    reference: list[dict[str, Any]]
    holdout: list[dict[str, Any]]


def static_prompt(ctx: Context, mode: Mode, settings: BenchSettings) -> Prompt:
    """The static prompt of the DLM baselines: the loop's first prompt in ``mode``, no guides."""
    prompt = initial_prompt(ctx.partition, ctx.schema.contents, ctx.reference)
    return replace(prompt, decoding=_decoding(ctx.partition, mode, settings), guides=None)


def _decoding(partition: Partition, mode: Mode, settings: BenchSettings) -> Any:
    tokens = settings.max_new_tokens or partition.decoding.max_new_tokens
    return replace(partition.decoding, mode=mode, max_new_tokens=tokens)


def _rows(settings: BenchSettings) -> int:
    """The records each system writes (``run_benchmark`` sets them per partition)."""
    if settings.candidates is None:
        raise ValueError("the number of records (settings.candidates) is not set")
    return settings.candidates


def sample_dlm(generator: Generator, prompt: Prompt, ctx: Context, settings: BenchSettings) -> SystemRun:
    """``settings.candidates`` DLM records of ``prompt`` (its guides applied) on the evaluation seeds."""
    started = time.perf_counter()
    out = generator.sample(
        prompt.render(ctx.schema.contents),
        _rows(settings),
        prompt.decoding,
        seed=settings.seed,
        batch_size=settings.batch_size,
        guides=prompt.guides,
    )
    seconds = time.perf_counter() - started
    return SystemRun("", ctx.partition.name, out, seconds, seconds)


def run_dlm(ctx: Context, mode: Mode, settings: BenchSettings) -> SystemRun:
    """``dlm-skeleton`` or ``dlm-free``: the static prompt."""
    started = time.perf_counter()
    generator = Generator(load_denoiser(settings.model), ctx.schema)
    run = sample_dlm(generator, static_prompt(ctx, mode, settings), ctx, settings)
    return replace(run, system=f"dlm-{mode}", wall_s=time.perf_counter() - started)


def run_aod(ctx: Context, mode: Mode, settings: BenchSettings, work: Path) -> SystemRun:
    """``aod-skeleton`` or ``aod-free``: the AoD loop from the static prompt, then its best prompt
    sampled on the evaluation seeds."""
    started = time.perf_counter()
    partition = replace(
        with_dlm(ctx.partition, settings.model), decoding=_decoding(ctx.partition, mode, settings)
    )
    system = f"aod-{mode}"
    loop = LoopOptions(
        rounds=settings.rounds,
        candidates=settings.loop_candidates,
        proposals=settings.proposals,
        agent_calls=settings.agent_calls,
        restart=True,
    )
    result = optimize_prompt(partition, work / system, loop)
    rewards = (result.rounds[0].start.reward, *(r.best.reward for r in result.rounds))
    generator = Generator(load_denoiser(settings.model), ctx.schema)
    run = sample_dlm(generator, result.best_prompt, ctx, settings)
    return replace(
        run, system=system, wall_s=time.perf_counter() - started, rewards=rewards, rounds_stop=result.stop
    )


def run_ar(ctx: Context, constrained: bool, settings: BenchSettings) -> SystemRun:
    """``ar`` or ``ar-constrained``: SmolLM2-135M-Instruct with the free-mode prompt's content
    (instruction, schema, exemplars) as a chat message, batches seeded by their first record."""
    from bench.ar import ARSampler, chat_message

    started = time.perf_counter()
    sampler = ARSampler(ctx.schema, constrained)  # the schema's grammar is compiled here
    prompt = static_prompt(ctx, "free", settings)
    message = chat_message(prompt.render(ctx.schema.contents))
    seeds = [record_seed(settings.seed, i) for i in range(_rows(settings))]
    out: list[Candidate] = []
    sampling_s = 0.0
    for lo in range(0, len(seeds), settings.batch_size):
        batch = sampler.generate(
            message,
            seeds[lo : lo + settings.batch_size],
            prompt.decoding.max_new_tokens,
            prompt.decoding.temperature,
        )
        out += batch.candidates
        sampling_s += batch.seconds
    system = "ar-constrained" if constrained else "ar"
    return SystemRun(system, ctx.partition.name, out, sampling_s, time.perf_counter() - started)


def run_reference(ctx: Context, settings: BenchSettings) -> SystemRun:
    """``reference``: a fixed-seed sample of the real reference rows, scored as if synthetic."""
    chosen = random.Random(settings.seed).sample(ctx.reference, min(_rows(settings), len(ctx.reference)))
    return SystemRun("reference", ctx.partition.name, _as_candidates(chosen), 0.0, 0.0)


def sdv_metadata(ctx: Context, frame: Any) -> Any:
    """SDV metadata of the reference dataframe: detected, then each column's sdtype fixed from
    the JSON Schema (see the module docstring). A nested schema is refused (SDV models one flat
    table)."""
    from sdv.metadata import Metadata

    name = ctx.partition.name
    properties = ctx.schema.contents.get("properties", {})
    detected = Metadata.detect_from_dataframes({name: frame}, infer_keys=None).to_dict()
    columns = detected["tables"][name]["columns"]
    for column in frame.columns:
        node = properties.get(column, {})
        kind = node.get("type")
        if "enum" in node or "const" in node:
            columns[column] = {"sdtype": "categorical"}
        elif kind in ("number", "integer"):
            if columns[column]["sdtype"] != "numerical":  # e.g. detected as latitude: Faker values
                columns[column] = {"sdtype": "numerical"}
        elif kind == "boolean":
            columns[column] = {"sdtype": "boolean"}
        elif kind == "string" and node.get("format") == "date":
            columns[column] = {"sdtype": "datetime", "datetime_format": "%Y-%m-%d"}
        elif kind == "string":
            columns[column] = {"sdtype": "categorical"}
        else:
            raise ValueError(
                f"partition {name!r}: column {column!r} is not a flat scalar ({kind or 'untyped'}); "
                "the SDV baselines model flat tables only"
            )
    return Metadata.load_from_dict(detected)  # loaded, not updated: SDV asks nothing about saving


@contextlib.contextmanager
def _sdv_quiet() -> Iterator[None]:
    """SDV as quiet as the rest: its loggers at WARNING (after its import, which configures them)
    and what it prints (CTGAN's alert about wide tables) swallowed."""
    import sdv.single_table  # noqa: F401

    for name in SDV_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def run_sdv(ctx: Context, kind: Literal["gc", "ctgan"], settings: BenchSettings) -> SystemRun:
    """``sdv-gc`` or ``sdv-ctgan``: an SDV synthesizer fitted on the reference sample (numpy and
    torch seeded with ``seed`` before fitting; SDV samples from its own fixed seed)."""
    import numpy as np
    import pandas as pd
    import torch

    started = time.perf_counter()
    with _sdv_quiet():
        from sdv.single_table import CTGANSynthesizer, GaussianCopulaSynthesizer

        frame = pd.DataFrame(ctx.reference)
        meta = sdv_metadata(ctx, frame)
        synthesizer = (
            GaussianCopulaSynthesizer(meta)
            if kind == "gc"
            else CTGANSynthesizer(meta, epochs=settings.epochs)
        )
        np.random.seed(settings.seed)
        torch.manual_seed(settings.seed)
        # CTGAN's weights drift into denormal floats as it trains, which made airports' 100 epochs
        # 4.5x slower on this CPU; flushed to zero while it fits, restored for the DLM after.
        torch.set_flush_denormal(True)
        try:
            synthesizer.fit({ctx.partition.name: frame})
        finally:
            torch.set_flush_denormal(False)
        sampling = time.perf_counter()
        table = synthesizer.sample(_rows(settings))[ctx.partition.name]
    seconds = time.perf_counter() - sampling
    records = [{k: _native(v) for k, v in r.items()} for r in table.to_dict("records")]
    return SystemRun(
        f"sdv-{kind}", ctx.partition.name, _as_candidates(records), seconds, time.perf_counter() - started
    )


def _native(value: Any) -> Any:
    """A dataframe cell as a JSON value: numpy scalars unwrapped, missing values null."""
    import pandas as pd

    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat()
    if value is not None and not isinstance(value, str) and pd.isna(value):
        return None
    return value


def _as_candidates(records: Sequence[Any]) -> list[Candidate]:
    """An outside table's records as candidates (the yardstick validates them; no repair counts)."""
    return [Candidate(json.dumps(r, ensure_ascii=False), r) for r in records]


def repair_rate(candidates: Sequence[Candidate]) -> float | None:
    """Share of value slots the compiler repaired; None when the system has no slots (an outside
    table, free-mode text)."""
    slots = sum(c.slots for c in candidates)
    return sum(c.repaired for c in candidates) / slots if slots else None


def _example(candidate: Candidate) -> str:
    """A candidate as one line: compact JSON, or its raw text when it did not parse."""
    if candidate.record is not None:
        return json.dumps(candidate.record, separators=(",", ":"), ensure_ascii=False)
    return " ".join(candidate.text.split())[:EXAMPLE_CHARS]


def row(run: SystemRun, yardstick: Yardstick) -> dict[str, Any]:
    """One system's figures on one partition: its scorecard against the yardstick's real rows, its
    reward against as many held-out baseline rows, its times and the first ``EXAMPLES`` records."""
    card = yardstick.score([c.record for c in run.candidates], repair_rate=repair_rate(run.candidates))
    n = len(run.candidates)
    return {
        "system": run.system,
        "partition": run.partition,
        "reward": table_reward(card, yardstick.baseline(n)),
        **card.as_dict(),
        "wall_s": run.wall_s,
        "sampling_s": run.sampling_s,
        "records_per_s": n / run.sampling_s if run.sampling_s > 0 else None,
        "examples": [_example(c) for c in run.candidates[:EXAMPLES]],
    }


def heldout_row(yardstick: Yardstick, partition: str, n: int) -> dict[str, Any]:
    """The held-out baseline of a partition: ``n`` of its baseline rows scored as a table, with
    the reward they get against themselves (the ceiling)."""
    card = yardstick.baseline(n)
    return {
        "system": HELDOUT,
        "partition": partition,
        "source": yardstick.source,
        "reward": table_reward(card, card),
        **card.as_dict(),
        "wall_s": None,
        "records_per_s": None,
    }


def _versions() -> dict[str, str]:
    out = {}
    names = ("torch", "transformers", "sdv", "ctgan", "copulas", "rdt", "sdmetrics", "scikit-learn", "pandas")
    for name in (*names, "outlines", "outlines_core"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def warm_up(systems: Sequence[str], settings: BenchSettings) -> dict[str, float]:
    """Load the models the systems need before any is timed (a model loads once per process);
    returns the seconds each load took."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" bars: noise in the run's log
    seconds: dict[str, float] = {}
    if any(s.startswith(("dlm-", "aod-")) for s in systems):
        started = time.perf_counter()
        _ = load_denoiser(settings.model).token_texts  # the vocabulary every Generator reads
        seconds[settings.model] = time.perf_counter() - started
    if any(s.startswith("ar") for s in systems):
        from aod_ops.hf import load_smollm2

        started = time.perf_counter()
        load_smollm2()
        seconds["smollm2"] = time.perf_counter() - started
    return seconds


def run_system(system: str, ctx: Context, settings: BenchSettings, work: Path) -> SystemRun:
    """One system's records for one partition."""
    mode: Mode = "free" if system.endswith("-free") else "skeleton"
    if system == "reference":
        return run_reference(ctx, settings)
    if system.startswith("sdv-"):
        return run_sdv(ctx, "gc" if system == "sdv-gc" else "ctgan", settings)
    if system.startswith("dlm-"):
        return run_dlm(ctx, mode, settings)
    if system.startswith("aod-"):
        return run_aod(ctx, mode, settings, work)
    return run_ar(ctx, system == "ar-constrained", settings)


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
    spec = load_spec(spec_path)
    chosen = [p for name in partitions for p in spec.select(name)] if partitions else list(spec.partitions)
    load_before = os.getloadavg()
    started = time.perf_counter()
    loads = warm_up(systems, settings)
    rows: list[dict[str, Any]] = []
    heldout: dict[str, dict[str, Any]] = {}
    rewards: list[dict[str, Any]] = []
    sizes: dict[str, int] = {}

    def results(complete: bool) -> dict[str, Any]:
        return {
            "rows": rows,
            "means": means([*heldout.values(), *rows], systems),
            "heldout": heldout,
            "rewards": rewards,
            "floors": floors(rows, heldout),
            "settings": {
                "complete": complete,
                "spec": str(spec_path.relative_to(ROOT) if spec_path.is_relative_to(ROOT) else spec_path),
                "partitions": [p.name for p in chosen],
                "systems": list(systems),
                "rows_per_system_and_partition": sizes,
                "seed": settings.seed,
                "loop_rounds": settings.rounds,
                "loop_proposals": settings.proposals,
                "loop_candidates": settings.loop_candidates or {p.name: p.loop.candidates for p in chosen},
                "loop_agent_calls": settings.agent_calls,
                "ctgan_epochs": settings.epochs,
                "dlm": settings.model,
                "batch_size": settings.batch_size,
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
        yardstick = Yardstick(schema, ctx.reference, holdout or None, partition.rules, partition.sensitive)
        n = settings.candidates or ROWS
        sizes[partition.name] = n
        heldout[partition.name] = base = heldout_row(yardstick, partition.name, n)
        log(f"{partition.name}: {HELDOUT} ({base['rows']} rows): {_progress(base)}")
        for system in systems:
            run = run_system(system, ctx, replace(settings, candidates=n), work)
            if run.rewards:
                rewards.append(
                    {"system": system, "partition": partition.name, "stop": run.rounds_stop,
                     "rewards": list(run.rewards), "heldout_reward": base["reward"]}
                )  # fmt: skip
            rows.append(row(run, yardstick))
            log(f"{partition.name}: {system}: {_progress(rows[-1])} in {run.wall_s:.0f} s")
            if on_row is not None:
                on_row(results(False))
    return results(True)


def _progress(r: dict[str, Any]) -> str:
    return (
        f"reward {r['reward']:.2f}, quality {r['quality']:.2f}, detection AUC {r['detection_auc']:.2f}, "
        f"exact copies {r['exact_match_rate']:.2f}, DCR protection {r['dcr_protection']:.2f}, "
        f"validity {r['validity']:.2f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--partitions", help="comma-separated partition names (default: all)")
    parser.add_argument(
        "--systems",
        default=",".join(DEFAULT_SYSTEMS),
        help=f"comma-separated, from {', '.join(SYSTEMS)} (default: {', '.join(DEFAULT_SYSTEMS)})",
    )
    defaults = BenchSettings()
    parser.add_argument("--rows", type=int, help=f"records per system and partition (default: {ROWS})")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="CTGAN training epochs")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="AoD rounds at most (paper: 5)")
    parser.add_argument("--proposals", type=int, default=defaults.proposals, help="AoD prompts per round")
    parser.add_argument(
        "--loop-candidates", type=int, help="records per AoD evaluation (default: the spec's)"
    )
    parser.add_argument("--model", default=defaults.model, help="the DLM (aod-smol-dlm, tiny-random, ...)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--seed", type=int, default=defaults.seed)
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
        candidates=args.rows,
        rounds=args.rounds,
        proposals=args.proposals,
        loop_candidates=args.loop_candidates,
        epochs=args.epochs,
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
