"""``aod generate``: N records for one schema as JSON Lines, then a summary."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from aod_ops import storage
from aod_ops.cli.args import DEFAULT_DLM, decoding_settings
from aod_ops.cli.console import console, progress_bar
from aod_ops.errors import ModelError

if TYPE_CHECKING:
    from aod_ops.spec import DLMSetting


def dlm_setting(args: argparse.Namespace) -> DLMSetting:
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

    dlm = dlm_setting(args)
    schema = load_schema(args.schema)
    settings = decoding_settings(args)
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
