"""Evaluate the project's DLM against the unadapted bidirectional SmolLM2 on held-out schemas.

For each model:

- masked cross-entropy on held-out records (skeleton and free mode, the training objective's
  masks at seeded ratios; mean nats per masked token);
- skeleton-mode generation per held-out schema (``Generator``, default decoding settings):
  validity, distinct-value ratio per field, the share of free-text values copied verbatim from the
  training corpus, the share of degenerate values (``judge.degenerate``: empty, placeholder,
  repeated tokens), records per second with a batch, and example records;
- the instruction test: the share of records that satisfy a constraint, with the constraint in the
  instruction and without it.

Writes JSON and a markdown section (for bench/RESULTS.md).

    python bench/dlm_eval.py --corpus out/corpus --adapter aod_ops/dlm/weights/aod-smol-dlm \\
        --out bench/results/dlm_eval.json --markdown bench/results/dlm_eval.md

Value plausibility (``--plausibility``, run alone; ``bench/plausibility.py``): are the free-text
values the DLM writes values a person would believe?

    python bench/dlm_eval.py --plausibility [--rows 40] [--partitions cars,airports] \\
        [--model aod-smol-dlm] [--threads 2] [--out bench/results/dlm_eval_plausibility.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the package and bench/ import
    sys.path.insert(0, str(ROOT))

from aod_ops.agents.judge import degenerate  # noqa: E402
from aod_ops.dlm.adapt import (  # noqa: E402
    AdapterConfig,
    DiffusionModel,
    Example,
    HeldoutSet,
    TrainConfig,
    read_corpus,
)
from aod_ops.dlm.denoiser import Denoiser  # noqa: E402
from aod_ops.dlm.generate import DecodingSettings, Generator  # noqa: E402
from aod_ops.dlm.models import ADAPTER_DIR, smollm2_denoiser  # noqa: E402
from aod_ops.dlm.prompting import render_prompt  # noqa: E402
from aod_ops.metrics import diversity  # noqa: E402
from aod_ops.schema import load_schema  # noqa: E402
from bench import quality  # noqa: E402
from bench.plausibility import (  # noqa: E402
    PLAUSIBILITY_OUT,
    fmt,
    free_text_fields,
    mean,
    plausibility_markdown,
    run_plausibility,
)

MODELS = ("aod-smol-dlm", "smollm2-bidir")


@dataclass(frozen=True)
class Constraint:
    """An instruction-test case: a constraint in words and the test a record must pass."""

    schema_id: str
    text: str
    holds: Callable[[dict[str, Any]], bool]


CONSTRAINTS = (
    Constraint("customer", "country must be Canada", lambda r: r.get("country") == "Canada"),
    Constraint(
        "shop_item", "price below 10", lambda r: isinstance(r.get("price"), int | float) and r["price"] < 10
    ),
    Constraint("shop_item", "category must be Garden", lambda r: r.get("category") == "Garden"),
)


def request(schema_id: str) -> str:
    """The plain instruction for one record of a held-out table."""
    return f"Generate a {schema_id.replace('_', ' ')} record."


def corpus_strings(examples: list[Example]) -> set[str]:
    """Every top-level string value of the training records (what "copied verbatim" checks)."""
    return {
        v for ex in examples if isinstance(ex.record, dict) for v in ex.record.values() if isinstance(v, str)
    }


def heldout_ce(den: Denoiser, heldout: list[Example], n: int) -> dict[str, float]:
    """Masked cross-entropy per mode on ``n`` held-out examples each (same masks for every model)."""
    cfg = TrainConfig(seed=1, max_tokens=512)
    out = {}
    # Scored as in training: the same forward pass (prefix-LM attention, shifted head) with no
    # adapter factors wrapped in; the model's own mask row (merged, for the adapted model).
    scorer = DiffusionModel(den, AdapterConfig(targets=()))
    for name, modes in (("skeleton", (True,)), ("free", (False,))):
        held = HeldoutSet.build(den, heldout, n, cfg, modes)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out[name] = held.cross_entropy(scorer)
    out["mean"] = (out["skeleton"] + out["free"]) / 2
    return out


def generate(
    den: Denoiser, schema: dict[str, Any], instruction: str, n: int, settings: DecodingSettings
) -> tuple[list[Any], float]:
    """``n`` skeleton-mode candidates as one batch, and records per second."""
    gen = Generator(den, load_schema(schema))
    started = time.perf_counter()
    candidates = gen.generate(render_prompt(instruction), list(range(n)), settings)
    return candidates, n / (time.perf_counter() - started)


def evaluate_model(
    den: Denoiser,
    train: list[Example],
    heldout: list[Example],
    n: int,
    n_ce: int,
    settings: DecodingSettings,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """All figures for one model."""
    result: dict[str, Any] = {"heldout_ce": heldout_ce(den, heldout, n_ce), "schemas": {}, "instruction": []}
    say(f"{den.name}: held-out masked CE {result['heldout_ce']}")
    schemas = {ex.schema_id: ex.schema for ex in heldout if ex.schema is not None}
    seen = corpus_strings(train)
    plain: dict[str, list[dict[str, Any]]] = {}
    for sid, schema in schemas.items():
        candidates, rate = generate(den, schema, request(sid), n, settings)
        valid = [c.record for c in candidates if c.valid]
        plain[sid] = valid
        free = [r[k] for r in valid for k in free_text_fields(schema) if isinstance(r.get(k), str)]
        figures = {
            "validity": len(valid) / n,
            "distinct": diversity(valid).per_field,
            "free_text_fields": free_text_fields(schema),
            "copied_from_corpus": sum(v in seen for v in free) / len(free) if free else None,
            "degenerate": sum(degenerate(v) is not None for v in free) / len(free) if free else None,
            # Not degenerate by the judge's rule, but rarely a real name, title or city.
            "shorter_than_3": sum(len(v.strip()) < 3 for v in free) / len(free) if free else None,
            "records_per_s": rate,
            "examples": [c.text for c in candidates[:10]],
            "errors": [e for c in candidates for e in c.errors][:5],
        }
        result["schemas"][sid] = figures
        say(f"{den.name} {sid}: validity {figures['validity']:.2f}, {rate:.2f} records/s")
    for case in CONSTRAINTS:
        if case.schema_id not in schemas:
            continue
        instruction = f"{request(case.schema_id)}\nConstraints: {case.text}."
        candidates, _ = generate(den, schemas[case.schema_id], instruction, n, settings)
        with_ = [c.record for c in candidates if c.valid]
        without = plain[case.schema_id]
        share = {
            "with": sum(map(case.holds, with_)) / len(with_) if with_ else 0.0,
            "without": sum(map(case.holds, without)) / len(without) if without else 0.0,
        }
        result["instruction"].append({"schema": case.schema_id, "constraint": case.text, **share})
        say(f"{den.name} '{case.text}': {share['without']:.2f} -> {share['with']:.2f}")
    return result


def markdown(report: dict[str, Any]) -> str:
    """The RESULTS.md section for a report."""
    models = report["models"]
    names = list(models)
    lines = ["## The project's DLM (`aod-smol-dlm`) against unadapted SmolLM2", ""]
    lines += [report["setup"], ""]
    lines += ["| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def row(label: str, values: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    for mode in ("skeleton", "free", "mean"):
        row(
            f"held-out masked CE, {mode} (nats/token)",
            [fmt(models[m]["heldout_ce"][mode], 3) for m in names],
        )
    schema_ids = list(models[names[0]]["schemas"])
    for sid in schema_ids:
        row(f"`{sid}` skeleton validity", [fmt(models[m]["schemas"][sid]["validity"]) for m in names])
    figures = (
        ("copied from corpus", "copied_from_corpus"),
        ("degenerate", "degenerate"),
        ("shorter than 3 characters", "shorter_than_3"),
    )
    for label, key in figures:
        for sid in schema_ids:
            if models[names[0]]["schemas"][sid][key] is not None:
                row(
                    f"`{sid}` {label} (free-text values)",
                    [fmt(models[m]["schemas"][sid][key]) for m in names],
                )
    for sid in schema_ids:
        fields = models[names[0]]["schemas"][sid]["free_text_fields"]
        if fields:
            row(
                f"`{sid}` distinct-value ratio, free text ({', '.join(fields)})",
                [
                    fmt(mean([models[m]["schemas"][sid]["distinct"].get("/" + f, 0.0) for f in fields]))
                    for m in names
                ],
            )
    row(
        "records/s (batch of {n}, mean over schemas)".format(n=report["n"]),
        [fmt(mean([s["records_per_s"] for s in models[m]["schemas"].values()])) for m in names],
    )
    for i, case in enumerate(models[names[0]]["instruction"]):
        row(
            f'`{case["schema"]}` "{case["constraint"]}": complying without -> with',
            [
                f"{models[m]['instruction'][i]['without']:.2f} -> {models[m]['instruction'][i]['with']:.2f}"
                for m in names
            ],
        )
    ce = [models[m]["heldout_ce"]["mean"] for m in names]
    if len(ce) == 2:
        lines += [
            "",
            f"Masked cross-entropy is {100 * (1 - ce[0] / ce[1]):.0f}% below the unadapted model's.",
        ]
    for m in names:
        lines += ["", f"### Example records, `{m}` (skeleton mode, first ten per schema)", ""]
        for sid in schema_ids:
            lines += [f"`{sid}`:", "", "```json", *models[m]["schemas"][sid]["examples"], "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: evaluate and write JSON + markdown (``--plausibility``: that measure alone)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path("out/corpus"))
    parser.add_argument("--adapter", type=Path, default=ADAPTER_DIR, help="adapter folder of aod-smol-dlm")
    parser.add_argument("--n", type=int, default=16, help="records per schema and per instruction test")
    parser.add_argument("--n-ce", type=int, default=48, help="held-out examples per mode for the CE")
    parser.add_argument(
        "--models",
        nargs="+",
        choices=MODELS,
        default=list(MODELS),
        help="models to (re-)evaluate; the others' figures are kept from --out",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, help=f"default bench/results/dlm_eval.json (--plausibility: {PLAUSIBILITY_OUT})"
    )
    parser.add_argument("--markdown", type=Path, help="default: --out with the suffix .md")
    plausibility = parser.add_argument_group("value plausibility (--plausibility)")
    plausibility.add_argument(
        "--plausibility", action="store_true", help="measure only the value plausibility of free text"
    )
    plausibility.add_argument("--spec", type=Path, default=quality.DEFAULT_SPEC)
    plausibility.add_argument("--partitions", help="comma-separated partition names (default: all)")
    plausibility.add_argument("--rows", type=int, help="records per partition (default: held-out half)")
    defaults = quality.BenchSettings()
    plausibility.add_argument(
        "--model", default=defaults.model, help="the DLM (aod-smol-dlm, tiny-random, ...)"
    )
    plausibility.add_argument(
        "--guided", action="store_true", help="with the reference's value guides (free-text shapes and words)"
    )
    plausibility.add_argument("--seed", type=int, default=defaults.seed)
    plausibility.add_argument("--batch-size", type=int, default=defaults.batch_size)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.plausibility:
        out = args.out or PLAUSIBILITY_OUT
        settings = quality.BenchSettings(
            candidates=args.rows, model=args.model, seed=args.seed, batch_size=args.batch_size
        )
        partitions = args.partitions.split(",") if args.partitions else None
        result = run_plausibility(
            args.spec.resolve(), partitions, settings, lambda line: print(line, flush=True), args.guided
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        (args.markdown or out.with_suffix(".md")).write_text(plausibility_markdown(result), encoding="utf-8")
        print(plausibility_markdown(result))
        return
    out = args.out or Path("bench/results/dlm_eval.json")
    train, heldout = read_corpus(args.corpus)
    decoding = DecodingSettings()
    report: dict[str, Any] = {
        "n": args.n,
        "settings": {k: getattr(decoding, k) for k in ("mode", "steps", "block_length", "temperature")},
        "setup": (
            f"Held-out schemas {sorted({ex.schema_id for ex in heldout})} (never trained on); "
            f"{args.n} records per schema in one batch, skeleton mode, default decoding settings "
            f"(steps {decoding.steps}, block {decoding.block_length}, temperature {decoding.temperature}); "
            f"masked CE on {args.n_ce} held-out records per mode; {args.threads} CPU threads."
        ),
        "models": {},
    }
    if out.is_file():
        kept = json.loads(out.read_text())["models"]
        report["models"] = {m: kept[m] for m in MODELS if m in kept and m not in args.models}
    for name in args.models:
        den = smollm2_denoiser(args.adapter if name == "aod-smol-dlm" else None)
        report["models"][name] = evaluate_model(den, train, heldout, args.n, args.n_ce, decoding, print)
        report["models"] = {m: report["models"][m] for m in MODELS if m in report["models"]}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    (args.markdown or out.with_suffix(".md")).write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
