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
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aod_ops.agents.judge import degenerate
from aod_ops.dlm.adapt import AdapterConfig, DiffusionModel, Example, HeldoutSet, TrainConfig, read_corpus
from aod_ops.dlm.generate import DecodingSettings, Generator
from aod_ops.dlm.models import ADAPTER_DIR, Denoiser, smollm2_denoiser
from aod_ops.dlm.prompting import render_prompt
from aod_ops.metrics import diversity
from aod_ops.schema import load_schema

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


def free_text_fields(schema: dict[str, Any]) -> list[str]:
    """Top-level string properties without enum, const, format or pattern: written freely."""
    return [
        k
        for k, p in schema.get("properties", {}).items()
        if p.get("type") == "string" and not {"enum", "const", "format", "pattern"} & set(p)
    ]


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


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


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
            [_fmt(models[m]["heldout_ce"][mode], 3) for m in names],
        )
    schema_ids = list(models[names[0]]["schemas"])
    for sid in schema_ids:
        row(f"`{sid}` skeleton validity", [_fmt(models[m]["schemas"][sid]["validity"]) for m in names])
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
                    [_fmt(models[m]["schemas"][sid][key]) for m in names],
                )
    for sid in schema_ids:
        fields = models[names[0]]["schemas"][sid]["free_text_fields"]
        if fields:
            row(
                f"`{sid}` distinct-value ratio, free text ({', '.join(fields)})",
                [
                    _fmt(_mean([models[m]["schemas"][sid]["distinct"].get("/" + f, 0.0) for f in fields]))
                    for m in names
                ],
            )
    row(
        "records/s (batch of {n}, mean over schemas)".format(n=report["n"]),
        [_fmt(_mean([s["records_per_s"] for s in models[m]["schemas"].values()])) for m in names],
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


def main() -> None:
    """Command line: evaluate and write JSON + markdown."""
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
    parser.add_argument("--out", type=Path, default=Path("bench/results/dlm_eval.json"))
    parser.add_argument("--markdown", type=Path, default=Path("bench/results/dlm_eval.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, heldout = read_corpus(args.corpus)
    settings = DecodingSettings()
    report: dict[str, Any] = {
        "n": args.n,
        "settings": {k: getattr(settings, k) for k in ("mode", "steps", "block_length", "temperature")},
        "setup": (
            f"Held-out schemas {sorted({ex.schema_id for ex in heldout})} (never trained on); "
            f"{args.n} records per schema in one batch, skeleton mode, default decoding settings "
            f"(steps {settings.steps}, block {settings.block_length}, temperature {settings.temperature}); "
            f"masked CE on {args.n_ce} held-out records per mode; {args.threads} CPU threads."
        ),
        "models": {},
    }
    if args.out.is_file():
        kept = json.loads(args.out.read_text())["models"]
        report["models"] = {m: kept[m] for m in MODELS if m in kept and m not in args.models}
    for name in args.models:
        den = smollm2_denoiser(args.adapter if name == "aod-smol-dlm" else None)
        report["models"][name] = evaluate_model(den, train, heldout, args.n, args.n_ce, settings, print)
        report["models"] = {m: report["models"][m] for m in MODELS if m in report["models"]}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    args.markdown.write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
