"""What several ``aod`` commands parse alike: counts, numbers, the decoding options and the trust
given with ``--model``."""

from __future__ import annotations

import argparse
import math

from aod_ops.dlm.settings import DecodingSettings
from aod_ops.errors import ModelError

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


def non_negative_number(text: str) -> float:
    """An argparse type for a number of at least 0 (GPUs, seconds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of at least 0, got {text}")
    return value


def check_trusted_model(args: argparse.Namespace) -> None:
    """Refuse ``--trust-remote-code`` without ``--model``: the flag trusts that model alone and
    never reaches a spec's models (each trusts its own in its ``dlm`` setting)."""
    if args.trust_remote_code and args.model is None:
        raise ModelError("--trust-remote-code trusts the model given with --model, and none was given")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--model`` and the trust given with it, for the pipeline's commands (``optimize``,
    ``synthesize``, ``run``), which otherwise take each partition's DLM from the spec."""
    p.add_argument("--model", help="DLM for every partition (default: the spec's dlm)")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="with --model: allow its own code (LLaDA/Dream); a spec's trust never applies to --model",
    )


def add_decoding_args(p: argparse.ArgumentParser) -> None:
    """The sampler's options of ``aod generate`` and ``aod coverage``."""
    p.add_argument(
        "--mode",
        choices=["skeleton", "free"],
        default="skeleton",
        help="skeleton: the schema's structure written by the compiler, the model fills the values; "
        "free: the model writes the whole JSON text (default: skeleton)",
    )
    p.add_argument("--model", default=DEFAULT_DLM, help="built-in DLM name or local model folder")
    p.add_argument("--trust-remote-code", action="store_true", help="allow LLaDA/Dream model code")
    p.add_argument(
        "--steps", type=positive_int, default=16, help="denoising steps per block (default %(default)s)"
    )
    p.add_argument(
        "--block-length",
        type=positive_int,
        default=32,
        help="tokens denoised together, left to right (default %(default)s)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="sampling temperature; 0 is greedy (default %(default)s)",
    )
    p.add_argument(
        "--order",
        choices=["left_to_right", "confidence"],
        default="left_to_right",
        help="commit order inside a free-text slot: left_to_right, a token a step, as an "
        "autoregressive model's adapter reads text; confidence, LLaDA's, several tokens a step "
        "(default %(default)s)",
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


def decoding_settings(args: argparse.Namespace) -> DecodingSettings:
    """The ``DecodingSettings`` of the options ``add_decoding_args`` added."""
    return DecodingSettings(
        steps=args.steps,
        block_length=args.block_length,
        temperature=args.temperature,
        cache=args.cache,
        order=args.order,
        mode=args.mode,
    )
