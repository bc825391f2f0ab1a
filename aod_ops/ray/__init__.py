"""Synthesis on Ray Data: a pool of DLM actors, a judge stage, exactly N valid rows as Parquet.

``synthesize.synthesize`` is the entry point (``aod synthesize`` is ``aod_ops.cli.synthesize``);
``generator.DLMGenerator`` and ``judging.CandidateJudge`` are the ``map_batches`` stages; every
Ray call lives in ``adapter``. Nothing here is imported with the package, so the CLI's other
commands do not load Ray.
"""
