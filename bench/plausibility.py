"""Value plausibility of the DLM's free text: ``bench/dlm_eval.py --plausibility`` (run alone).

Are the free-text values the DLM writes values a person would believe? On the example
partitions (``examples/partitions.yaml``):

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

import os
import random
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from aod_ops.agents.judge import degenerate
from aod_ops.columns import TEXT
from aod_ops.dlm.derive import derive_guides
from aod_ops.dlm.generate import Generator
from aod_ops.dlm.models import load_denoiser
from aod_ops.fidelity import Yardstick
from aod_ops.hf import load_smollm2
from aod_ops.jsonvalues import json_pointer
from aod_ops.schema import compile_schema
from aod_ops.spec import Partition, load_reference, load_spec
from bench import quality

PLAUSIBILITY_OUT = Path("bench/results/dlm_eval_plausibility.json")
EXAMPLE_VALUES = 10
# The floors: nats/token gap, degenerate share, distinct-ratio margin, free-text AUC.
MAX_GAP = 1.0
MAX_DEGENERATE = 0.02
DISTINCT_MARGIN = 0.1
MAX_TEXT_AUC = 0.80


def free_text_fields(schema: dict[str, Any]) -> list[str]:
    """Top-level string properties without enum, const, format or pattern: written freely."""
    return [
        k
        for k, p in schema.get("properties", {}).items()
        if p.get("type") == "string" and not {"enum", "const", "format", "pattern"} & set(p)
    ]


def mean(values: list[float]) -> float | None:
    """The mean of ``values``, None when there are none."""
    return sum(values) / len(values) if values else None


def fmt(value: float | None, digits: int = 2) -> str:
    """A figure for a report: ``digits`` decimals, ``n/a`` when it is missing."""
    return "n/a" if value is None else f"{value:.{digits}f}"


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
    syn_nats = mean(scorer.nats_per_token(context, synthetic))
    held_nats = mean(scorer.nats_per_token(context, heldout))
    random_nats = mean(scorer.nats_per_token(context, random_strings(heldout)))
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
            f"{partition.name} {field}: {fmt(f.synthetic_nats)} vs held-out {fmt(f.heldout_nats)} "
            f"(random {fmt(f.random_nats)}) nats/token, detection AUC {fmt(f.detection_auc)}"
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
    gap = mean(gaps)
    values = [(f.degenerate or 0.0) * f.synthetic_values for _, f in fields]
    counted = sum(f.synthetic_values for _, f in fields)
    share = sum(values) / counted if counted else None
    distinct = [
        (f"{p}/{f.field}", f.distinct, f.heldout_distinct)
        for p, f in fields
        if f.distinct is not None and f.heldout_distinct is not None
    ]
    aucs = [(p.partition, p.detection_auc_text) for p in partitions if p.detection_auc_text is not None]
    auc = mean([a for _, a in aucs])
    return [
        Floor(
            "plausibility gap (synthetic minus held-out nats/token), mean over fields",
            f"<= {MAX_GAP}",
            fmt(gap),
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
            "; ".join(f"{name} {fmt(s)} / {fmt(h)}" for name, s, h in distinct) or "n/a",
            all(s >= h - DISTINCT_MARGIN - 1e-9 for _, s, h in distinct) if distinct else None,
        ),
        Floor(
            "free-text detection AUC, mean over partitions",
            f"<= {MAX_TEXT_AUC}",
            f"{fmt(auc)} ({'; '.join(f'{p} {fmt(a)}' for p, a in aucs)})" if aucs else "n/a",
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
            "spec": str(spec.relative_to(quality.ROOT) if spec.is_relative_to(quality.ROOT) else spec),
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
                fmt(f["synthetic_nats"]),
                fmt(f["heldout_nats"]),
                fmt(f["gap"]),
                fmt(f["random_nats"]),
                fmt(f["detection_auc"]),
                f"{fmt(f['degenerate'])} / {fmt(f['heldout_degenerate'])}",
                f"{fmt(f['distinct'])} / {fmt(f['heldout_distinct'])} ({f['compared']})",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Free-text detection AUC of each table (all its free-text columns, codes included):", ""]
    lines += [
        f"- {p['partition']}: {fmt(p['detection_auc_text'])} "
        f"(held-out rows {fmt(p['heldout_detection_auc_text'])})"
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
