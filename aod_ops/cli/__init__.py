"""The ``aod`` command: generate, coverage, and the pipeline steps, for people and benchmarks.

The pipeline's inputs and outputs (``--spec``, ``--out``, ``--data``, ``--prompt-dir``...) are
local paths or URIs (``s3://bucket/prefix``, see ``aod_ops.storage``). User errors (``AodError``),
and storage that cannot be read or written (``OSError``: a missing bucket, refused credentials, a
full disk), print one line naming what is wrong and where, and exit with 2; nothing is printed as
a traceback. A command that needs the ``engine`` extra (torch, Ray, GX...) where only the
Airflow provider was installed says how to install it, and exits with 2. Ctrl-C and SIGTERM stop
a command with its cleanup (Ray shut down, a partition's staging folder removed) and exit with
130 and 143.

The parser is built here; each command runs from its own module (``generate``, ``coverage``,
``optimize`` with ``report``, ``synthesize``, ``validate``, ``adapt_dlm``), except ``aod run``,
which runs ``aod_ops.pipeline.run``: the pipeline's commands and ``aod run`` call the same step
functions, shown by the same ``observer.ConsoleObserver``. ``aod init`` and ``aod score``
register from ``aod_ops.infer`` and ``aod_ops.score``. ``args`` has the options several commands
share, ``console`` where they write. A command imports what it runs on (the spec, torch, Ray, GX) inside
its function, when it runs: ``aod --help`` starts fast, and without the engine installed.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

from aod_ops import pipeline, storage
from aod_ops.cli import synthesize
from aod_ops.cli.adapt_dlm import cmd_adapt_dlm
from aod_ops.cli.args import (
    DEFAULT_INSTRUCTION,
    add_decoding_args,
    add_model_args,
    check_trusted_model,
    non_negative_int,
    positive_int,
)
from aod_ops.cli.console import console
from aod_ops.cli.coverage import SchemaTimeout, cmd_coverage, quantile, time_limit
from aod_ops.cli.generate import cmd_generate
from aod_ops.cli.init import add_init_parser
from aod_ops.cli.observer import ConsoleObserver
from aod_ops.cli.optimize import add_optimize_parser, add_report_parser
from aod_ops.cli.validate import cmd_validate, validation_status
from aod_ops.errors import AodError
from aod_ops.score import add_score_parser

__all__ = [
    # What the benchmarks and ``aod init``'s parser use from here.
    "DEFAULT_INSTRUCTION",
    "SchemaTimeout",
    "build_parser",
    "main",
    "non_negative_int",
    "positive_int",
    "quantile",
    "time_limit",
]

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


def cmd_run(args: argparse.Namespace) -> int:
    """``aod run``: optimize, synthesize and validate the partitions (``aod_ops.pipeline.run``),
    the DAG's steps without Airflow, each shown as its own ``aod`` command shows it.

    As in the DAG, a partition that cannot be synthesized fails alone: the others are validated,
    and the run exits with 1.
    """
    check_trusted_model(args)
    result = pipeline.run(
        args.spec,
        args.out,
        partition=args.partition,
        model=args.model,
        trust_remote_code=args.trust_remote_code,
        loop=pipeline.LoopOptions(rounds=args.rounds, candidates=args.candidates),
        rows=args.rows,
        docs=args.docs,
        observer=ConsoleObserver(),
    )
    validation_status(result.validations)
    prompts, tables = result.prompts, result.tables
    # On an object store each partition's committed folder is the one its manifest names.
    committed = "<partition>/<commit in _manifest.json>" if storage.is_remote(tables) else "<partition>"
    failed = sorted(failure.partition for failure in result.failures)
    console.print(
        f"tables: {tables}/{committed}/data (rejects in quarantine/, report.json, validation_result.json, "
        f"privacy_report.json{'; docs/fidelity.html' if args.docs else ''}); loop runs and prompts: "
        f"{prompts}/<partition>; plot: {prompts}/report.html"
        + (f"; not synthesized: {', '.join(failed)}" if failed else ""),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return 0 if result.succeeded else 1


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
    add_decoding_args(p)
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
    add_decoding_args(p)
    # The structure must come from the compiler: coverage runs the tiny random model by default,
    # in LLaDA's order (a random model has no left-to-right reading to keep).
    p.set_defaults(handler=cmd_coverage, model="tiny-random", steps=4, temperature=1.0, order="confidence")

    add_optimize_parser(sub)
    synthesize.add_synthesize_parser(sub)
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
    add_model_args(p)
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
