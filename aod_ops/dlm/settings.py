"""Decoding settings: plain values with no torch import, so specs and DAGs parse fast."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class SamplerSettings:
    """Decoding settings of the masked-diffusion sampler.

    ``cache``: within a block, recompute only the block's columns and what changed since the
    block's first pass, reusing every other position's keys and values from that pass
    (Fast-dLLM's dual cache); False recomputes the whole record on every step.
    """

    steps: int = 16
    block_length: int = 32
    temperature: float = 0.8
    cache: bool = True


@dataclass(frozen=True)
class DecodingSettings(SamplerSettings):
    """Sampler settings plus the mode and, for free mode, the response length in tokens."""

    mode: Literal["skeleton", "free"] = "skeleton"
    max_new_tokens: int = 160
