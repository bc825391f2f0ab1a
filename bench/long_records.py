"""Sampler cost against record length: forward passes and seconds per valid record.

Picks the ``--top`` schemas of the dev sets with the longest records (a walk of the compiled
schema that takes every choice at random, measured in the tiny random model's tokens), then
writes one valid record of each with the tiny random model, as
``aod coverage`` does (its decoding settings, up to ``--attempts`` seeds). Per schema: seconds
and forward passes per valid record, the record's tokens after the prompt, its value tokens (the
slots' masks) and the floor on passes, value tokens / 4 plus the blocks that hold masks (counted
as the fewest blocks of ``block_length`` masks that hold them).

    python bench/long_records.py [--sets DIR ...] [--top 50] [--threads 2] [--order left_to_right]
        [--out bench/results/long_records.json]

Writes ``--out`` and a plot beside it (``long_records.png``): passes and seconds per record
against record tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aod_ops import cli  # noqa: E402
from aod_ops.dlm.generate import Generator  # noqa: E402
from aod_ops.dlm.models import load_denoiser  # noqa: E402
from aod_ops.dlm.prompting import render_prompt  # noqa: E402
from aod_ops.dlm.settings import DecodingSettings  # noqa: E402
from aod_ops.dlm.skeleton import plan_ids, walk  # noqa: E402
from aod_ops.dlm.vocab import Vocab  # noqa: E402
from aod_ops.errors import AodError  # noqa: E402
from aod_ops.schema import compile_schema, load_schema  # noqa: E402

SETS = ROOT.parent / "shared" / "bench-data" / "jsonschemabench"
DEV_SETS = ("Github_trivial", "Github_easy", "Glaiveai2K", "Github_medium")
# aod coverage's decoding: the tiny random model writes the values, the compiler the structure.
SETTINGS = DecodingSettings(steps=4, temperature=1.0, order="confidence")  # aod coverage's


def walk_tokens(vocab: Vocab, path: Path) -> int:
    """Tokens of a record the compiled schema lays out when every choice (an optional property,
    one more item, a union branch) takes an option at random, as the tiny random model does."""
    root = compile_schema(load_schema(path)).root
    plan: list[Any] = []
    walker, rng = walk(root, plan), random.Random(0)
    try:
        ask = next(walker)
        while True:
            ask = walker.send(rng.randrange(len(ask.options)))
    except StopIteration:
        pass
    return len(plan_ids(vocab, plan))


def rank(vocab: Vocab, sets: list[Path]) -> list[tuple[str, int]]:
    """Every schema with its random walk's tokens, longest first."""
    ranked = []
    files = sorted(p for d in sets for p in d.glob("*.json"))
    for n, path in enumerate(files):
        try:
            with cli.time_limit(5.0):
                ranked.append((str(path), walk_tokens(vocab, path)))
        except (cli.SchemaTimeout, AodError, RecursionError):
            continue  # not compilable in time: coverage counts it, the cost curve cannot
        if n % 500 == 0:
            print(f"ranked {n}/{len(files)}", file=sys.stderr)
    ranked.sort(key=lambda r: -r[1])
    return ranked


def measure(generator: Generator, attempts: int, settings: DecodingSettings) -> dict[str, Any]:
    """One valid record (up to ``attempts`` seeds): its cost and size."""
    prompt = render_prompt(cli.DEFAULT_INSTRUCTION)
    started = time.perf_counter()
    valid = False
    reason = ""
    for seed in range(attempts):
        before = (generator.stats.forwards, generator.stats.tokens, generator.stats.value_tokens)
        try:
            (candidate,) = generator.generate(prompt, [seed], settings)
        except AodError as e:  # e.g. a record longer than the model's context
            reason = str(e)
            break
        if candidate.valid:
            valid = True
            break
        reason = candidate.errors[0]
    forwards = generator.stats.forwards - before[0]
    tokens = generator.stats.tokens - before[1]
    value_tokens = generator.stats.value_tokens - before[2]
    blocks = -(-value_tokens // settings.block_length)
    return {
        "valid": valid,
        "reason": "" if valid else reason,
        "seconds": round(time.perf_counter() - started, 3),
        "attempts": seed + 1,
        "forwards": forwards,  # of the last attempt (the valid one)
        "tokens": tokens,
        "value_tokens": value_tokens,
        "passes_floor": value_tokens / 4 + blocks,
    }


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    x = [r["tokens"] for r in rows]
    left.scatter(x, [r["forwards"] for r in rows], label="forward passes")
    left.scatter(x, [r["passes_floor"] for r in rows], marker="_", label="floor: value tokens/4 + blocks")
    left.set_xlabel("record tokens")
    left.set_ylabel("forward passes per record")
    left.legend()
    right.scatter(x, [r["seconds"] for r in rows])
    right.set_xlabel("record tokens")
    right.set_ylabel("seconds per valid record")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", type=Path, default=[SETS / s for s in DEV_SETS])
    parser.add_argument("--top", type=int, default=50)
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--order",
        choices=("left_to_right", "confidence"),
        default=SETTINGS.order,
        help="commit order inside a free-text slot (default: aod coverage's, %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "long_records.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    denoiser = load_denoiser("tiny-random")
    vocab = Vocab(denoiser)
    ranked = rank(vocab, args.sets)[: args.top]
    load_before, started = os.getloadavg(), time.perf_counter()
    rows = []
    for n, (path, walked) in enumerate(ranked):
        generator = Generator(denoiser, load_schema(Path(path)))
        row = {"schema": str(Path(path).relative_to(args.sets[0].parent)), "walk_tokens": walked}
        row |= measure(generator, args.attempts, replace(SETTINGS, order=args.order))
        rows.append(row)
        print(
            f"{n + 1}/{len(ranked)} {row['schema']}: {row['seconds']:.2f} s, {row['forwards']} passes "
            f"(floor {row['passes_floor']:.0f}), {row['tokens']} tokens, valid {row['valid']}",
            file=sys.stderr,
        )
    valid = [r for r in rows if r["valid"]]
    summary = {
        "schemas": len(rows),
        "valid": len(valid),
        "seconds_median": cli.quantile([r["seconds"] for r in valid], 0.5),
        "seconds_p95": cli.quantile([r["seconds"] for r in valid], 0.95),
        "passes_median": cli.quantile([r["forwards"] for r in valid], 0.5),
        "passes_p95": cli.quantile([r["forwards"] for r in valid], 0.95),
        "within_passes_floor": sum(r["forwards"] <= r["passes_floor"] for r in valid),
        "order": args.order,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "minutes": round((time.perf_counter() - started) / 60, 1),
    }
    args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    plot(valid, args.out.with_suffix(".png"))
    print(json.dumps(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
