"""Synthesis on Ray Data: a pool of DLM actors, a judge stage, exactly N valid rows as Parquet.

``synthesize`` is the entry point (``aod synthesize`` calls it); ``DLMGenerator`` and
``CandidateJudge`` are the ``map_batches`` stages; every Ray call lives in ``adapter``.
"""

from aod_ops.ray.synthesize import PartitionResult, Progress, SynthesisOptions, synthesize

__all__ = ["PartitionResult", "Progress", "SynthesisOptions", "synthesize"]
