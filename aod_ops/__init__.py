"""aod_ops: Agents of Diffusion as a data pipeline.

A frozen diffusion language model writes JSON records for a JSON Schema, a judge agent turns what
is wrong with them into feedback and a reward, and a prompt-optimizer agent rewrites the prompt.
The engine (``aod_ops.schema``, ``aod_ops.dlm``, ``aod_ops.agents``, ``aod_ops.loop``) imports
neither Ray nor Airflow; ``aod_ops.ray`` and ``aod_ops.airflow`` are the adapters.
"""

__version__ = "0.1.0"
