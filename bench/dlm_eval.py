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

Value plausibility (``--plausibility``, run alone): are the free-text values the DLM writes values
a person would believe? On the example partitions (``examples/partitions.yaml``):

- *Free-text fields* are the top-level string properties without enum, const, format or pattern
  (``free_text_fields``) that the fidelity yardstick also treats as free text (``aod_ops.columns``:
  not a few repeating values in the held-out rows). Patterned codes (an airport's ``iata``, a
  state) are left out: they are scored by shape, not by how a person reads them. seattle-weather
  has none.
- *Synthetic values* come from the ``dlm-skeleton`` system of ``bench/quality.py`` (the loop's
  first prompt, ``initial_prompt``, skeleton mode, the partition's decoding settings, no value
  guides), ``--rows`` records per partition (default: as many as the held-out baseline rows) on
  the same seeds. *Held-out values* are the same field's values in the yardstick's held-out
  baseline rows (``Yardstick.baseline_rows``: the rows quality.py scores as ``held-out``).
- *Plausibility* of a value is its negative mean log-probability per token, in nats/token (lower
  is more plausible), under SmolLM2-135M-Instruct run autoregressively as shipped
  (``aod_ops.hf.load_smollm2``, no adapter, no chat template) after the field's context::

      <partition notes (else the schema's description)>
      <the field's description>
      <field name>: <value>

  The scored tokens are those of ``" <value>\n"`` (tokenized apart from the context): the value
  and the line break that ends it, so that a value cut off mid-word costs what its missing end
  would. A field's figure is the mean over its values; the *gap* is synthetic minus held-out.
  For scale, strings of random letters, digits and spaces as long as the held-out values
  (``random_strings``) are scored the same way: the mean per token favours values cut into many
  short tokens, and the model adapts to randomness in context, so random text is only one to two
  nats/token above real names and places.
- Beside it, per field: the free-text detection AUC of that column (``Yardstick.score``,
  ``ColumnScore.auc``), the degenerate share (``judge.degenerate``), the distinct-value ratio on
  both sides over the same number of values (the first k of each, k the smaller count), and ten
  example values of each side. Per partition: ``detection_auc_text`` of the whole table (all its
  free-text columns by the yardstick's rule, codes included) beside the held-out rows' own.
- The floors of issue 18: the gap at most 1.0 nat/token on average over all fields; degenerate
  values at most 2% of all synthetic free-text values; each field's distinct ratio at least the
  held-out's minus 0.1; ``detection_auc_text`` at most 0.80 on average over the partitions that
  have free text.

    python bench/dlm_eval.py --plausibility [--rows 40] [--partitions cars,airports] \\
        [--model aod-smol-dlm] [--threads 2] [--out bench/results/dlm_eval_plausibility.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the package and bench/ import
    sys.path.insert(0, str(ROOT))

from aod_ops.agents.judge import degenerate  # noqa: E402
from aod_ops.columns import TEXT  # noqa: E402
from aod_ops.dlm.adapt import (  # noqa: E402
    AdapterConfig,
    DiffusionModel,
    Example,
    HeldoutSet,
    TrainConfig,
    read_corpus,
)
from aod_ops.dlm.denoiser import Denoiser  # noqa: E402
from aod_ops.dlm.derive import derive_guides  # noqa: E402
from aod_ops.dlm.generate import DecodingSettings, Generator  # noqa: E402
from aod_ops.dlm.models import ADAPTER_DIR, load_denoiser, smollm2_denoiser  # noqa: E402
from aod_ops.dlm.prompting import render_prompt  # noqa: E402
from aod_ops.fidelity import Yardstick  # noqa: E402
from aod_ops.hf import load_smollm2  # noqa: E402
from aod_ops.jsonvalues import json_pointer  # noqa: E402
from aod_ops.metrics import diversity  # noqa: E402
from aod_ops.schema import compile_schema, load_schema  # noqa: E402
from aod_ops.spec import Partition, load_reference, load_spec  # noqa: E402
from bench import quality  # noqa: E402

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


# -- value plausibility (issue 18) ------------------------------------------------------------

PLAUSIBILITY_OUT = Path("bench/results/dlm_eval_plausibility.json")
EXAMPLE_VALUES = 10
# The floors: nats/token gap, degenerate share, distinct-ratio margin, free-text AUC.
MAX_GAP = 1.0
MAX_DEGENERATE = 0.02
DISTINCT_MARGIN = 0.1
MAX_TEXT_AUC = 0.80


def value_context(partition: Partition, schema: dict[str, Any], field: str) -> str:
    """The text a value of ``field`` is scored after (see the module docstring), ending in ``:``."""
    about = partition.notes or str(schema.get("description") or "")
    description = str(schema.get("properties", {}).get(field, {}).get("description") or "")
    return "\n".join(line.strip() for line in (about, description, f"{field}:") if line.strip())


class ValueScorer:
    """SmolLM2-135M-Instruct as shipped, a causal LM, scoring values in their field's context.

    :param batch_size: values per forward pass.
    """

    def __init__(self, batch_size: int = 16) -> None:
        self.model, self.tokenizer = load_smollm2()
        self.batch_size = batch_size

    @torch.no_grad()
    def nats_per_token(self, context: str, values: Sequence[str]) -> list[float]:
        """Each value's negative mean log-probability per token after ``context``: the tokens of
        ``" <value>\\n"``, each predicted from the context and the value's tokens before it."""
        head = list(self.tokenizer.encode(context, add_special_tokens=False))
        body, lm_head = self.model.model, self.model.get_output_embeddings()
        out: list[float] = []
        for start in range(0, len(values), self.batch_size):
            tails = [
                list(self.tokenizer.encode(f" {v}\n", add_special_tokens=False))
                for v in values[start : start + self.batch_size]
            ]
            length = len(head) + max(map(len, tails))
            ids = torch.zeros((len(tails), length), dtype=torch.long)
            attention = torch.zeros((len(tails), length), dtype=torch.long)
            # where[i, p]: position p predicts a scored token (the one at p + 1).
            where = torch.zeros((len(tails), length), dtype=torch.bool)
            for i, tail in enumerate(tails):
                end = len(head) + len(tail)
                ids[i, :end] = torch.tensor(head + tail)
                attention[i, :end] = 1
                where[i, len(head) - 1 : end - 1] = True
            hidden = body(input_ids=ids, attention_mask=attention).last_hidden_state
            rows, cols = where.nonzero(as_tuple=True)
            # Only the scored positions go through the output layer (49k columns).
            logp = torch.log_softmax(lm_head(hidden[rows, cols]).float(), -1)
            picked = logp.gather(1, ids[rows, cols + 1][:, None])[:, 0]
            total = torch.zeros(len(tails)).index_add_(0, rows, picked)
            out += (-total / where.sum(1)).tolist()
        return out


@dataclass(frozen=True)
class FieldPlausibility:
    """One free-text field: synthetic values beside the held-out rows' (see the module docstring).

    ``*_nats`` are mean nats/token (lower is more plausible; ``random_nats`` of random strings as
    long as the held-out values), ``gap`` synthetic minus held-out;
    ``distinct`` ratios are over ``compared`` values on each side; ``detection_auc`` is the
    column's own free-text detection AUC (None when no synthetic record was valid).
    """

    field: str
    context: str
    synthetic_values: int
    heldout_values: int
    synthetic_nats: float | None
    heldout_nats: float | None
    random_nats: float | None
    gap: float | None
    detection_auc: float | None
    degenerate: float | None
    heldout_degenerate: float | None
    compared: int
    distinct: float | None
    heldout_distinct: float | None
    synthetic_examples: tuple[str, ...]
    heldout_examples: tuple[str, ...]


@dataclass(frozen=True)
class PartitionPlausibility:
    """One partition: its free-text fields and the whole table's free-text detection AUC."""

    partition: str
    rows: int
    validity: float | None
    detection_auc_text: float | None
    heldout_detection_auc_text: float | None
    sensitive_copies: float | None
    generation_s: float
    decoding: dict[str, Any] | None
    fields: tuple[FieldPlausibility, ...]


@dataclass(frozen=True)
class Floor:
    """One of the issue's floors: what it asks, what was measured, and whether it holds (None:
    nothing to measure)."""

    floor: str
    wanted: str
    measured: str
    passed: bool | None


def plausibility_fields(yardstick: Yardstick) -> list[str]:
    """The partition's free-text fields: ``free_text_fields`` that the yardstick scores as text."""
    kinds = {c.pointer: c.kind for c in yardstick.baseline().columns}
    fields = free_text_fields(yardstick.schema.contents)
    return [f for f in fields if kinds.get(json_pointer([f])) == TEXT]


def random_strings(values: Sequence[str], seed: int = 0) -> list[str]:
    """Strings of random letters, digits and spaces, each as long as the value in its place."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + " "
    return ["".join(rng.choice(alphabet) for _ in value) for value in values]


def _strings(records: Sequence[Any], field: str) -> list[str]:
    return [r[field] for r in records if isinstance(r, dict) and isinstance(r.get(field), str)]


def _distinct(values: Sequence[str], k: int) -> float | None:
    return len(set(values[:k])) / k if k else None


def _degenerate_share(values: Sequence[str], field: str) -> float | None:
    return sum(degenerate(v, field) is not None for v in values) / len(values) if values else None


def field_plausibility(
    scorer: ValueScorer,
    context: str,
    field: str,
    synthetic: Sequence[str],
    heldout: Sequence[str],
    auc: float | None,
) -> FieldPlausibility:
    """The figures of one field from its synthetic and held-out values."""
    syn_nats = _mean(scorer.nats_per_token(context, synthetic))
    held_nats = _mean(scorer.nats_per_token(context, heldout))
    random_nats = _mean(scorer.nats_per_token(context, random_strings(heldout)))
    k = min(len(synthetic), len(heldout))
    return FieldPlausibility(
        field=field,
        context=context,
        synthetic_values=len(synthetic),
        heldout_values=len(heldout),
        synthetic_nats=syn_nats,
        heldout_nats=held_nats,
        random_nats=random_nats,
        gap=syn_nats - held_nats if syn_nats is not None and held_nats is not None else None,
        detection_auc=auc,
        degenerate=_degenerate_share(synthetic, field),
        heldout_degenerate=_degenerate_share(heldout, field),
        compared=k,
        distinct=_distinct(synthetic, k),
        heldout_distinct=_distinct(heldout, k),
        synthetic_examples=tuple(synthetic[:EXAMPLE_VALUES]),
        heldout_examples=tuple(heldout[:EXAMPLE_VALUES]),
    )


def partition_plausibility(
    partition: Partition,
    scorer: ValueScorer,
    settings: quality.BenchSettings,
    say: Callable[[str], None],
    guided: bool = False,
) -> PartitionPlausibility:
    """Generate a partition's ``dlm-skeleton`` records (``guided``: with the value guides of its
    reference, free-text shapes and words included) and measure each free-text field; nothing is
    generated for a partition without free text."""
    yardstick = Yardstick.for_partition(partition)
    fields = plausibility_fields(yardstick)
    if not fields:
        say(f"{partition.name}: no free-text field")
        return PartitionPlausibility(partition.name, 0, None, None, None, None, 0.0, None, ())
    n = settings.candidates or len(yardstick.baseline_rows)
    holdout = load_reference(partition, holdout=True) if partition.holdout_path is not None else []
    ctx = quality.Context(partition, yardstick.schema, yardstick.reference, holdout)
    settings = replace(settings, candidates=n)
    if guided:
        prompt = quality.static_prompt(ctx, "skeleton", settings)
        root = compile_schema(ctx.schema).root
        guides = derive_guides(
            root, ctx.reference, partition.rules, seed=partition.seed, sensitive=partition.sensitive
        )
        generator = Generator(load_denoiser(settings.model), ctx.schema)
        run = quality.sample_dlm(generator, replace(prompt, guides=guides), ctx, settings)
    else:
        run = quality.run_dlm(ctx, "skeleton", settings)
    card = yardstick.score(
        [c.record for c in run.candidates], repair_rate=quality.repair_rate(run.candidates)
    )
    aucs = {c.pointer: c.auc for c in card.columns}
    valid = [c.record for c in run.candidates if c.valid]
    figures = []
    for field in fields:
        context = value_context(partition, yardstick.schema.contents, field)
        figures.append(
            field_plausibility(
                scorer,
                context,
                field,
                _strings(valid, field),
                _strings(yardstick.baseline_rows, field),
                aucs.get("/" + field),
            )
        )
        f = figures[-1]
        say(
            f"{partition.name} {field}: {_fmt(f.synthetic_nats)} vs held-out {_fmt(f.heldout_nats)} "
            f"(random {_fmt(f.random_nats)}) nats/token, detection AUC {_fmt(f.detection_auc)}"
        )
    return PartitionPlausibility(
        partition=partition.name,
        rows=n,
        validity=card.validity,
        detection_auc_text=card.detection_auc_text,
        heldout_detection_auc_text=yardstick.baseline(n).detection_auc_text,
        sensitive_copies=card.sensitive_copies,
        generation_s=run.wall_s,
        decoding=asdict(quality.static_prompt(ctx, "skeleton", settings).decoding),
        fields=tuple(figures),
    )


def plausibility_floors(partitions: Sequence[PartitionPlausibility]) -> list[Floor]:
    """The issue's four floors on free text, each decided on the figures it names."""
    fields = [(p.partition, f) for p in partitions for f in p.fields]
    gaps = [f.gap for _, f in fields if f.gap is not None]
    gap = _mean(gaps)
    values = [(f.degenerate or 0.0) * f.synthetic_values for _, f in fields]
    counted = sum(f.synthetic_values for _, f in fields)
    share = sum(values) / counted if counted else None
    distinct = [
        (f"{p}/{f.field}", f.distinct, f.heldout_distinct)
        for p, f in fields
        if f.distinct is not None and f.heldout_distinct is not None
    ]
    aucs = [(p.partition, p.detection_auc_text) for p in partitions if p.detection_auc_text is not None]
    auc = _mean([a for _, a in aucs])
    return [
        Floor(
            "plausibility gap (synthetic minus held-out nats/token), mean over fields",
            f"<= {MAX_GAP}",
            _fmt(gap),
            None if gap is None else gap <= MAX_GAP,
        ),
        Floor(
            "degenerate free-text values",
            f"<= {MAX_DEGENERATE:.0%}",
            "n/a" if share is None else f"{share:.1%} of {counted}",
            None if share is None else share <= MAX_DEGENERATE,
        ),
        Floor(
            "distinct-value ratio of each field at least the held-out's minus 0.1",
            f">= held-out - {DISTINCT_MARGIN}",
            "; ".join(f"{name} {_fmt(s)} / {_fmt(h)}" for name, s, h in distinct) or "n/a",
            all(s >= h - DISTINCT_MARGIN - 1e-9 for _, s, h in distinct) if distinct else None,
        ),
        Floor(
            "free-text detection AUC, mean over partitions",
            f"<= {MAX_TEXT_AUC}",
            f"{_fmt(auc)} ({'; '.join(f'{p} {_fmt(a)}' for p, a in aucs)})" if aucs else "n/a",
            None if auc is None else auc <= MAX_TEXT_AUC,
        ),
    ]


def run_plausibility(
    spec: Path,
    partitions: Sequence[str] | None,
    settings: quality.BenchSettings,
    say: Callable[[str], None],
    guided: bool = False,
) -> dict[str, Any]:
    """Value plausibility on the chosen partitions (all by default): the report as JSON data."""
    started = time.perf_counter()
    load_before = os.getloadavg()
    chosen = [p for name in partitions for p in load_spec(spec).select(name)] if partitions else None
    chosen = chosen or list(load_spec(spec).partitions)
    scorer = ValueScorer()
    measured = [partition_plausibility(p, scorer, settings, say, guided) for p in chosen]
    return {
        "setup": {
            "spec": str(spec.relative_to(ROOT) if spec.is_relative_to(ROOT) else spec),
            "model": settings.model,
            "guided": guided,
            "scorer": "SmolLM2-135M-Instruct (causal, as shipped)",
            "rows": {p.partition: p.rows for p in measured},
            "seed": settings.seed,
            "batch_size": settings.batch_size,
            "torch_threads": torch.get_num_threads(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "total_s": round(time.perf_counter() - started, 1),
        },
        "partitions": [asdict(p) for p in measured],
        "floors": [asdict(f) for f in plausibility_floors(measured)],
    }


def _cell(value: str) -> str:
    """A value as a markdown table cell: visible edges, pipes escaped."""
    return "`" + value.replace("|", "\\|").replace("`", "'") + "`" if value else "(empty)"


def plausibility_markdown(report: dict[str, Any]) -> str:
    """The RESULTS.md figures of a plausibility report: floors, per-field table, examples."""
    setup = report["setup"]
    rows = ", ".join(f"{p} {n}" for p, n in setup["rows"].items())
    lines = [
        "### Value plausibility of free text (`--plausibility`)",
        "",
        f"`{setup['model']}`, `dlm-skeleton` records (the loop's first prompt, "
        f"{'with the value guides of the reference' if setup.get('guided') else 'no guides'}), rows: {rows}; "
        f"seed {setup['seed']}; scored by {setup['scorer']}; {setup['torch_threads']} torch threads; "
        f"{setup['total_s']:.0f} s. nats/token: lower is more plausible.",
        "",
        "| floor | wanted | measured | passed |",
        "|---|---|---|---|",
    ]
    for f in report["floors"]:
        passed = "n/a" if f["passed"] is None else "pass" if f["passed"] else "**fail**"
        lines.append(f"| {f['floor']} | {f['wanted']} | {f['measured']} | {passed} |")
    lines += [
        "",
        "| partition | field | nats/token synthetic | held-out | gap | random strings | detection AUC "
        "| degenerate synthetic / held-out | distinct synthetic / held-out (k) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in report["partitions"]:
        if not p["fields"]:
            lines.append(f"| {p['partition']} | (no free-text field) | | | | | | | |")
        for f in p["fields"]:
            cells = [
                p["partition"],
                f["field"],
                _fmt(f["synthetic_nats"]),
                _fmt(f["heldout_nats"]),
                _fmt(f["gap"]),
                _fmt(f["random_nats"]),
                _fmt(f["detection_auc"]),
                f"{_fmt(f['degenerate'])} / {_fmt(f['heldout_degenerate'])}",
                f"{_fmt(f['distinct'])} / {_fmt(f['heldout_distinct'])} ({f['compared']})",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Free-text detection AUC of each table (all its free-text columns, codes included):", ""]
    lines += [
        f"- {p['partition']}: {_fmt(p['detection_auc_text'])} "
        f"(held-out rows {_fmt(p['heldout_detection_auc_text'])})"
        for p in report["partitions"]
        if p["fields"]
    ]
    lines += ["", "Example values (first ten; synthetic beside held-out):", ""]
    for p in report["partitions"]:
        for f in p["fields"]:
            lines += [f"`{p['partition']}` `{f['field']}`:", "", "| synthetic | held-out |", "|---|---|"]
            syn, held = f["synthetic_examples"], f["heldout_examples"]
            for i in range(max(len(syn), len(held))):
                left = _cell(syn[i]) if i < len(syn) else ""
                right = _cell(held[i]) if i < len(held) else ""
                lines.append(f"| {left} | {right} |")
            lines.append("")
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
