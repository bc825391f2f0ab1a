"""The ``aod`` command: generate, coverage, and the pipeline steps, for people and benchmarks.

The pipeline's inputs and outputs (``--spec``, ``--out``, ``--data``, ``--prompt-dir``...) are
local paths or URIs (``s3://bucket/prefix``, see ``aod_ops.storage``). User errors (``AodError``),
and storage that cannot be read or written (``OSError``: a missing bucket, refused credentials, a
full disk), print one line naming what is wrong and where, and exit with 2; nothing is printed as
a traceback. A command that needs the ``engine`` extra (torch, Ray, GX...) where only the
Airflow provider was installed says how to install it, and exits with 2. Ctrl-C and SIGTERM stop
a command with its cleanup (Ray shut down, a partition's staging folder removed) and exit with
130 and 143.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aod_ops import storage
from aod_ops.commands_loop import add_optimize_parser, add_report_parser
from aod_ops.errors import AodError, ModelError
from aod_ops.infer import add_init_parser
from aod_ops.ray.command import add_synthesize_parser
from aod_ops.score import add_score_parser

if TYPE_CHECKING:
    from aod_ops.spec import DLMSetting

console = Console(stderr=True, soft_wrap=True)  # a line is never wrapped: paths stay whole
#: The modules that ``pip install 'aod-ops[engine]'`` brings (its packages and what they need):
#: a command that misses one needs the engine. The commands import them only when they run.
ENGINE_MODULES = frozenset(
    {
        "accelerate",
        "genson",
        "gguf",
        "great_expectations",
        "matplotlib",
        "pandas",
        "psutil",
        "ray",
        "s3fs",
        "safetensors",
        "scipy",
        "sdmetrics",
        "sklearn",
        "sqlalchemy",
        "tokenizers",
        "torch",
        "transformers",
    }
)
DEFAULT_DLM = "aod-smol-dlm"
DEFAULT_INSTRUCTION = "Write one realistic record as JSON."


def positive_int(text: str) -> int:
    """An argparse type for counts: a whole number of at least 1."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type for counts where 0 means none: a whole number of at least 0."""
    return _whole_number(text, 0)


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def check_trusted_model(args: argparse.Namespace) -> None:
    """Refuse ``--trust-remote-code`` without ``--model``: the flag trusts that model alone and
    never reaches a spec's models (each trusts its own in its ``dlm`` setting)."""
    if args.trust_remote_code and args.model is None:
        raise ModelError("--trust-remote-code trusts the model given with --model, and none was given")


def progress_bar() -> Progress:
    """The progress bar every long command shows."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    )


def _decoding_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mode",
        choices=["skeleton", "free"],
        default="skeleton",
        help="skeleton: the schema's structure written by the compiler, the model fills the values; "
        "free: the model writes the whole JSON text (default: skeleton)",
    )
    p.add_argument("--model", default=DEFAULT_DLM, help="built-in DLM name or local model folder")
    p.add_argument("--trust-remote-code", action="store_true", help="allow LLaDA/Dream model code")
    p.add_argument("--steps", type=positive_int, default=16, help="denoising steps per block (default 16)")
    p.add_argument(
        "--block-length",
        type=positive_int,
        default=32,
        help="tokens denoised together, left to right (default 32)",
    )
    p.add_argument(
        "--temperature", type=float, default=0.8, help="sampling temperature; 0 is greedy (default 0.8)"
    )
    p.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        help="recompute the whole record on every step instead of only the current block",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed: the same seed gives the same records (default 0)"
    )


def _settings(args: argparse.Namespace) -> Any:
    from aod_ops.dlm.settings import DecodingSettings

    return DecodingSettings(
        steps=args.steps,
        block_length=args.block_length,
        temperature=args.temperature,
        cache=args.cache,
        mode=args.mode,
    )


def _dlm_setting(args: argparse.Namespace) -> DLMSetting:
    """The ``DLMSetting`` of ``aod generate``'s options: a local model, or with ``--dlm-base-url``
    a DLM server, which writes free mode only (``ModelError`` for options that do not fit)."""
    from aod_ops.spec import DLMSetting

    if args.dlm_base_url is None:
        if args.dlm_api_key_env is not None:
            raise ModelError("--dlm-api-key-env is the DLM server's key, and no --dlm-base-url was given")
        return DLMSetting(model=args.model or DEFAULT_DLM, trust_remote_code=args.trust_remote_code)
    if args.mode != "free":
        raise ModelError(
            "--dlm-base-url: a DLM server writes free mode only (a chat API cannot infill a skeleton): "
            "add --mode free"
        )
    if args.model is None:
        raise ModelError("--dlm-base-url needs --model: the name of the model the server serves")
    try:
        return DLMSetting(
            model=args.model,
            trust_remote_code=args.trust_remote_code,
            base_url=args.dlm_base_url,
            api_key_env=args.dlm_api_key_env,
        )
    except ValueError as exc:
        raise ModelError(f"--dlm-base-url: {exc}") from exc


def cmd_generate(args: argparse.Namespace) -> int:
    """``aod generate``: N records for a schema as JSON Lines, then a summary."""
    from aod_ops.dlm.generate import Generator
    from aod_ops.dlm.models import load_denoiser
    from aod_ops.dlm.prompting import render_prompt
    from aod_ops.dlm.server import DLMServer
    from aod_ops.metrics import diversity
    from aod_ops.schema import load_schema

    dlm = _dlm_setting(args)
    schema = load_schema(args.schema)
    settings = _settings(args)
    if dlm.base_url is not None:
        generator = Generator(None, schema, server=DLMServer.from_setting(dlm))
    else:
        generator = Generator(load_denoiser(dlm.model, dlm.trust_remote_code), schema)
    assert generator.compiled is not None
    for u in generator.compiled.unsupported:
        console.print(
            f"[yellow]not honoured[/]: {u.keyword} at #{u.pointer} ({u.reason}); records are validated"
        )
    prompt = render_prompt(args.instruction, schema.contents if settings.mode == "free" else None)
    out = storage.locate(args.out) if args.out else None
    candidates = []
    with progress_bar() as bar:
        task = bar.add_task("generating", total=args.n, status="")

        def advance(batch: list[Any]) -> None:
            candidates.extend(batch)
            valid = sum(c.valid for c in candidates)
            bar.update(task, advance=len(batch), status=f"valid {valid}/{len(candidates)}")

        generator.sample(prompt, args.n, settings, args.seed, args.batch_size, advance)
    # One JSON document a line: a free-mode reply spans lines, so its parsed record is written (the
    # text of one that does not parse, as a JSON string).
    lines = [json.dumps(c.text if c.record is None else c.record, ensure_ascii=False) for c in candidates]
    if out is not None:
        storage.write_text(out, "".join(line + "\n" for line in lines))
    else:
        sys.stdout.write("".join(line + "\n" for line in lines))
    valid = [c.record for c in candidates if c.valid]
    stats = generator.stats
    summary = {
        "records": len(candidates),
        "validity": len(valid) / max(1, len(candidates)),
        "diversity": diversity(valid).ratio if valid else 0.0,
        "records_per_s": stats.records / max(stats.seconds, 1e-9),
        "forwards_per_record": stats.forwards / max(1, stats.records),
    }
    for c in candidates:
        for e in c.errors[:1]:
            console.print(f"[red]invalid[/] seed {c.seed}: {e}")
    # A server's forward passes are its own: not counted here, so not shown as 0.
    forwards = f"{summary['forwards_per_record']:.1f}" if generator.server is None else "n/a (DLM server)"
    console.print(
        "validity {validity:.3f}  diversity {diversity:.3f}  records/s {records_per_s:.2f}  "
        "forward passes/record {forwards}".format(**summary, forwards=forwards)
        + (f"  -> {out}" if out else "")
    )
    return 0


class SchemaTimeout(Exception):
    """One schema ran past its time limit."""


@contextmanager
def time_limit(seconds: float, error: type[BaseException] = SchemaTimeout) -> Iterator[None]:
    """Raise ``error`` (its message: the limit) in this thread after ``seconds`` (Unix alarm)."""

    def fire(signum: int, frame: Any) -> None:
        raise error(f"over {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def cover_one(path: Path, generator_model: Any, settings: Any, attempts: int) -> tuple[bool, str]:
    """Try to produce one valid instance of the schema at ``path``; returns (ok, reason). The
    model's forward passes are counted on ``generator_model`` (``Denoiser.forwards``)."""
    from aod_ops.dlm.generate import Generator
    from aod_ops.dlm.prompting import render_prompt
    from aod_ops.schema import load_schema

    schema = load_schema(path)
    generator = Generator(generator_model, schema)
    assert generator.compiled is not None
    reason = ""
    for seed in range(attempts):
        (candidate,) = generator.generate(render_prompt(DEFAULT_INSTRUCTION), [seed], settings)
        if candidate.valid:
            return True, ""
        issues = schema.errors(candidate.record) if candidate.record is not None else []
        unsupported = generator.compiled.unsupported
        if not issues and unsupported:  # nothing could be built: the compiler says why
            return False, f"unsupported {unsupported[0].keyword}: {unsupported[0].reason}"
        keyword = issues[0].keyword if issues else "parse"
        if keyword in {u.keyword for u in unsupported}:
            keyword = f"unsupported {keyword}"
        reason = f"{keyword}: {candidate.errors[0]}"
    return False, reason


def cmd_coverage(args: argparse.Namespace) -> int:
    """``aod coverage``: one instance per schema, validated; coverage and reasons by keyword."""
    from aod_ops.dlm.models import load_denoiser

    files = sorted(p for d in args.schemas for p in Path(d).rglob("*.json"))
    if not files:
        raise AodError(f"no *.json schemas under {', '.join(args.schemas)}")
    denoiser = load_denoiser(args.model, args.trust_remote_code)
    settings = _settings(args)
    rows: list[dict[str, Any]] = []
    with progress_bar() as bar:
        task = bar.add_task("coverage", total=len(files), status="")
        for path in files:
            started, forwards = time.perf_counter(), denoiser.forwards
            try:
                with time_limit(args.timeout_per_schema):
                    ok, reason = cover_one(path, denoiser, settings, args.attempts)
            except SchemaTimeout:
                ok, reason = False, f"timeout: over {args.timeout_per_schema:g} s"
            except AodError as e:
                ok, reason = False, f"schema: {e}"
            except Exception as e:  # a crash on one schema is a finding, not the end of the run
                ok, reason = False, f"crash: {type(e).__name__}: {e}"
            rows.append(
                {
                    "file": str(path),
                    "ok": ok,
                    "reason": reason,
                    "seconds": round(time.perf_counter() - started, 3),
                    "forward_passes": denoiser.forwards - forwards,
                }
            )
            done = sum(r["ok"] for r in rows)
            bar.update(task, advance=1, status=f"covered {done}/{len(rows)}")
    coverage = sum(r["ok"] for r in rows) / len(rows)
    summary = {
        f"{name}_{q}": quantile([r[name] for r in rows], level)
        for name in ("seconds", "forward_passes")
        for q, level in (("median", 0.5), ("p95", 0.95))
    }
    if args.json:
        storage.write_text(
            storage.locate(args.json),
            json.dumps({"coverage": coverage, "summary": summary, "schemas": rows}, indent=1),
        )
    reasons = Counter(r["reason"].split(":")[0] for r in rows if not r["ok"])
    table = Table(title=f"coverage {coverage:.3f} over {len(rows)} schemas")
    table.add_column("failure reason (keyword)")
    table.add_column("schemas", justify="right")
    for reason, count in reasons.most_common(15):
        table.add_row(reason, str(count))
    Console().print(table)
    Console().print(
        "per schema: {seconds_median:.2f} s median, {seconds_p95:.2f} s p95; forward passes "
        "{forward_passes_median:g} median, {forward_passes_p95:g} p95".format(**summary)
    )
    return 0


def quantile(values: list[float], level: float) -> float:
    """The ``level`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(level * len(ordered)) - 1))]


def cmd_validate(args: argparse.Namespace) -> int:
    """``aod validate``: the GX suite and privacy gates on each synthesized partition."""
    from aod_ops.errors import DataError
    from aod_ops.output import MANIFEST, committed_dir
    from aod_ops.quality import validate_partition
    from aod_ops.spec import load_reference, load_spec

    spec = load_spec(args.spec)
    root = storage.locate(args.data)
    failed = []
    for p in spec.select(args.partition):
        # On an object store the manifest names the committed folder: never a run that died.
        folder = committed_dir(root, p.name)
        if folder is None or not storage.is_dir(storage.join(folder, "data")):
            where = storage.join(root, p.name)
            expected = storage.join(where, MANIFEST if storage.is_remote(root) else "data")
            raise DataError(f"{where}: no synthesized partition here (expected {expected})")
        summary = validate_partition(
            storage.join(folder, "data"),
            p.schema_path,
            load_reference(p),
            args.rows or p.rows,
            partition=p.name,
            sensitive=p.sensitive,
            thresholds=p.thresholds,
            holdout=load_reference(p, holdout=True) if p.holdout_path else None,
            rules=p.rules,
            docs_dir=storage.join(folder, "docs") if args.docs else None,
            out_dir=folder,
        )
        if args.verbose:
            table = Table(
                title=f"{p.name}: {'passed' if summary.success else 'FAILED'} ({summary.rows} rows)"
            )
            for column in ("expectation", "column", "observed", "result"):
                table.add_column(column, overflow="fold")
            for o in summary.outcomes:
                table.add_row(
                    o.expectation, o.column or "", o.observed, "pass" if o.success else "[red]FAIL[/]"
                )
            Console().print(table)
        passed = sum(o.success for o in summary.outcomes)
        console.print(
            f"{p.name}: {'passed' if summary.success else 'FAILED'}: {passed} of {len(summary.outcomes)} "
            f"checks pass on {summary.rows} rows (GX expectations and privacy gates)",
            markup=False,
            soft_wrap=True,
        )
        for o in summary.failed:
            console.print(
                f"{p.name}: failed {o.expectation} on column {o.column}: {o.observed}",
                markup=False,
                soft_wrap=True,
            )
        console.print(
            f"{p.name}: results in {summary.result_path} and {summary.privacy_report_path}",
            markup=False,
            soft_wrap=True,
        )
        if summary.docs_path:
            console.print(f"{p.name}: data docs at {summary.docs_path}", markup=False, soft_wrap=True)
        if summary.fidelity_report_path:
            console.print(
                f"{p.name}: fidelity report at {summary.fidelity_report_path}", markup=False, soft_wrap=True
            )
        if not summary.success:
            failed.append(p.name)
    if failed:
        console.print(f"validation failed for: {', '.join(failed)}")
        return 1
    return 0


def cmd_adapt_dlm(args: argparse.Namespace) -> int:
    """``aod adapt-dlm``: train the masked-diffusion adapter on a corpus (resumable)."""
    from aod_ops.dlm.adapt import adapt

    result = adapt(Path(args.corpus), Path(args.out), args.minutes, args.device, max_steps=args.max_steps)
    console.print(
        f"{result.steps} steps in {result.minutes:.1f} min; held-out masked CE "
        f"{result.heldout_ce_initial} -> {result.heldout_ce}; the model is {result.out_dir}: "
        f"use it as --model {result.out_dir} (or dlm: {result.out_dir} in a spec)",
        markup=False,
        highlight=False,
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``aod run``: optimize, synthesize and validate the partitions, the DAG's steps without
    Airflow, each step exactly as its own ``aod`` command runs it.

    As in the DAG, a partition that cannot be synthesized fails alone: the others are validated,
    and the run exits with 1.
    """
    from aod_ops.ray.command import synthesize_partitions

    check_trusted_model(args)
    out = storage.locate(args.out)
    prompts, tables = storage.join(out, "prompts"), storage.join(out, "tables")
    common = ["--spec", args.spec] + (["--partition", args.partition] if args.partition else [])
    model = []
    if args.model:  # the run's --model, and the trust given with it, reach the steps that load it
        model = ["--model", args.model] + (["--trust-remote-code"] if args.trust_remote_code else [])
    counts = [f"--{k}={v}" for k, v in (("rounds", args.rounds), ("candidates", args.candidates)) if v]
    rows = [f"--rows={args.rows}"] if args.rows else []
    for argv in (["optimize", *common, *model, *counts, "--out", str(prompts)], ["report", str(prompts)]):
        step = _step(argv)
        code = int(step.handler(step))
        if code:
            return code
    synthesize = ["synthesize", *common, *model, "--prompt-dir", str(prompts), "--out", str(tables), *rows]
    failed = {f.partition for f in synthesize_partitions(_step(synthesize))}
    docs = ["--docs"] if args.docs else []
    validate = ["validate", "--spec", args.spec, "--data", str(tables), *rows, *docs]
    if failed:
        from aod_ops.spec import load_spec

        names = [p.name for p in load_spec(args.spec).select(args.partition) if p.name not in failed]
        validations = [[*validate, "--partition", name] for name in names]
    else:
        validations = [[*validate, *(["--partition", args.partition] if args.partition else [])]]
    code = 1 if failed else 0
    for argv in validations:
        step = _step(argv)
        code = max(code, int(step.handler(step)))
    # On an object store each partition's committed folder is the one its manifest names.
    committed = "<partition>/<commit in _manifest.json>" if storage.is_remote(out) else "<partition>"
    console.print(
        f"tables: {tables}/{committed}/data (rejects in quarantine/, report.json, validation_result.json, "
        f"privacy_report.json{'; docs/fidelity.html' if args.docs else ''}); loop runs and prompts: "
        f"{prompts}/<partition>; plot: {prompts}/report.html"
        + (f"; not synthesized: {', '.join(sorted(failed))}" if failed else ""),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return code


def _step(argv: list[str]) -> argparse.Namespace:
    """One step of ``aod run``: its heading, and its arguments parsed as its command parses them."""
    console.rule(f"aod {argv[0]}")
    return build_parser().parse_args(argv)


DESCRIPTION = (
    "Privacy-safe synthetic tables from a JSON Schema and a sample of real rows: a diffusion language "
    "model writes the records, a judge and a prompt optimizer improve them (the Agents of Diffusion loop), "
    "and every table is checked against held-out real rows."
)
EPILOG = (
    "Start with 'aod init --from TABLE --out DIR' for a schema and a spec, then "
    "'aod run --spec DIR/partitions.yaml --out OUT'. Paths may be URIs (s3://bucket/prefix). "
    "'aod COMMAND --help' for a command's options. Exit status: 0 done, 1 a partition failed "
    "(synthesis or validation), 2 bad input (one line says what and where), 130/143 interrupted."
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``aod`` and its subcommands."""
    parser = argparse.ArgumentParser(prog="aod", description=DESCRIPTION, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="generate records for a JSON Schema")
    p.add_argument("--schema", required=True, help="JSON Schema file (a path or a URI)")
    p.add_argument("-n", type=positive_int, default=16, help="records to write (default 16)")
    p.add_argument("--out", help="JSON Lines file, a path or a URI (default: stdout)")
    p.add_argument("--instruction", default=DEFAULT_INSTRUCTION, help="the prompt's instruction to the model")
    p.add_argument(
        "--batch-size", type=positive_int, default=16, help="records denoised together (default 16)"
    )
    _decoding_args(p)
    p.add_argument(
        "--dlm-base-url",
        help="an OpenAI-compatible DLM server (e.g. SGLang serving LLaDA2) instead of a local model, "
        "with --model naming the model it serves; free mode only (--mode free). --temperature and the "
        "seed are sent, the sampler's steps and blocks are the server's own",
    )
    p.add_argument(
        "--dlm-api-key-env",
        help="with --dlm-base-url: the environment variable holding the server's API key, sent as a "
        "Bearer token (default: no key)",
    )
    # No default here: with --dlm-base-url, --model names the served model and must be given.
    p.set_defaults(handler=cmd_generate, model=None)

    p = sub.add_parser("coverage", help="share of schemas for which a valid instance is produced")
    p.add_argument("--schemas", required=True, action="append", help="folder of *.json (repeatable)")
    p.add_argument("--json", help="write per-schema results here")
    p.add_argument(
        "--timeout-per-schema", type=float, default=10.0, help="seconds a schema may take (default 10)"
    )
    p.add_argument("--attempts", type=positive_int, default=3, help="seeds tried per schema")
    _decoding_args(p)
    # The structure must come from the compiler: coverage runs the tiny random model by default.
    p.set_defaults(handler=cmd_coverage, model="tiny-random", steps=4, temperature=1.0)

    add_optimize_parser(sub)
    add_synthesize_parser(sub)
    add_report_parser(sub)
    add_score_parser(sub)
    add_init_parser(sub)

    p = sub.add_parser("validate", help="GX suite and privacy gates on synthesized partitions")
    p.add_argument("--spec", required=True, help="partition spec (YAML; a path or a URI)")
    p.add_argument("--data", required=True, help="output folder (or URI) of aod synthesize")
    p.add_argument("--partition", help="only this partition (default: all)")
    p.add_argument(
        "--rows", type=positive_int, help="the row count to expect (default: each partition's rows)"
    )
    p.add_argument(
        "--docs", action="store_true", help="write GX Data Docs HTML and a fidelity report (PNG + HTML)"
    )
    p.add_argument(
        "-v", "--verbose", action="store_true", help="show every check and its result, not only the failures"
    )
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("adapt-dlm", help="adapt SmolLM2 into a masked-diffusion LM on a corpus")
    p.add_argument("--corpus", required=True, help="folder with train.jsonl and heldout.jsonl")
    p.add_argument("--out", required=True, help="checkpoints and the adapter; an existing run resumes")
    p.add_argument("--minutes", type=float, default=60.0, help="training time over all resumed runs")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--max-steps", type=positive_int, help="stop after this many optimizer steps (default: none)"
    )
    p.set_defaults(handler=cmd_adapt_dlm)

    p = sub.add_parser("run", help="optimize, synthesize and validate: the whole pipeline without Airflow")
    p.add_argument("--spec", required=True, help="partition spec (YAML; a path or a URI)")
    p.add_argument(
        "--out", required=True, help="output folder or URI (s3://bucket/prefix): prompts/ and tables/ in it"
    )
    p.add_argument("--partition", help="only this partition (default: all, one after another)")
    p.add_argument("--model", help="DLM for every partition (default: the spec's)")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="with --model: allow its own code (LLaDA/Dream); a spec's trust never applies to --model",
    )
    p.add_argument("--rounds", type=positive_int, help="most loop rounds (default: the spec's loop.rounds)")
    p.add_argument(
        "--candidates", type=positive_int, help="candidates sampled per prompt (default: the spec's)"
    )
    p.add_argument("--rows", type=positive_int, help="target rows per partition (default: the spec's rows)")
    p.add_argument(
        "--docs", action="store_true", help="write GX Data Docs HTML and a fidelity report (PNG + HTML)"
    )
    p.set_defaults(handler=cmd_run)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` runs (Ray is shut down, a
    partition's staging folder removed) before the command exits."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``aod``."""
    args = build_parser().parse_args(argv)
    # Our own bars show progress; Hugging Face's per-model "Loading weights" bar would interleave
    # with them (read when transformers is imported, here and in Ray's workers).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    main_thread = threading.current_thread() is threading.main_thread()  # signals need it
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return int(args.handler(args))
    except (AodError, OSError) as e:
        console.print(f"aod {args.command}: error: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except ModuleNotFoundError as e:
        if e.name not in ENGINE_MODULES:
            raise
        console.print(
            f"aod {args.command}: error: this command needs the engine: pip install 'aod-ops[engine]' "
            f"(no module named {e.name})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return 2
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        console.print(f"aod {args.command}: {'terminated' if terminated else 'interrupted'}")
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


if __name__ == "__main__":
    sys.exit(main())
