"""The plan of a synthesis run: its options, each partition checked before Ray starts, the pool's shape.

``SynthesisOptions`` holds how to run (rows, actors, GPUs, the model, the candidate budget).
``plan_partition`` loads and checks everything a partition needs, with no Ray involved: its
schema, reference and holdout samples, its prompt (the AoD loop's artifact, else the initial
one), its DLM (the run's model or the partition's own; a local model's name, or a server's free
mode and key variable), its critic's key, and its target and budget, as a ``PartitionJob``,
whose ``fingerprint`` says whether a committed output was made with the same settings.
``by_model`` groups the jobs that share a pool; ``with_gpus`` waits for the GPUs a run asks
for, and ``pool_shape`` sizes the generator pool for the cluster at hand (``PoolShape``).
``aod_ops.ray.synthesize`` runs the plan.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aod_ops import storage
from aod_ops.agents.prompt import Prompt, initial_prompt
from aod_ops.dlm.models import check_model
from aod_ops.dlm.server import DLMServer
from aod_ops.errors import AodError, DataError, ModelError
from aod_ops.loop import PROMPT_FILE
from aod_ops.metrics import canonical_json
from aod_ops.ray import adapter
from aod_ops.schema import LoadedSchema, load_schema
from aod_ops.spec import DLMSetting, Partition, load_reference

CANDIDATE_FACTOR = 10
"""The default candidate budget is this many candidates per target row."""
MAX_DEFAULT_ACTORS = 8
"""Generator actors started by default at most (one per CPU, or one per GPU)."""
GPU_WAIT_S = 600.0
"""Seconds a run that asks for GPUs waits, on a cluster that has none, for the autoscaler to add
some (a GPU node: provisioning, the image pull and Ray's start take minutes)."""


@dataclass(frozen=True)
class SynthesisOptions:
    """How to run a synthesis; None means the spec's value or the default.

    :param rows: target rows per partition (default: the partition's ``rows``).
    :param actors: a fixed pool of this many generator actors (default: an autoscaling pool
        between ``min_actors`` and ``max_actors``).
    :param min_actors: the fewest generator actors (default: as many as the cluster holds now,
        one per GPU or per ``threads_per_actor`` CPUs, at least 1 and at most 8).
    :param max_actors: the most generator actors, which the pool grows to while work waits and
        the cluster (or its autoscaler) has room (default: ``min_actors``'s default, or
        ``min_actors``).
    :param batch_size: candidates per model batch (one ``map_batches`` batch).
    :param threads_per_actor: torch CPU threads per actor, and the CPUs it reserves (default:
        the cluster's CPUs shared among the actors when ``actors`` is given, else 1).
    :param gpus_per_actor: GPUs per actor of a local model (a DLM server's actors ask for
        none): above 0 asks for GPUs, and a cluster without any that cannot get them is an
        error; 0 runs on CPUs (default: 1 when the cluster has GPUs now, else 0).
    :param gpu_wait_s: seconds to wait for the autoscaler's first GPU node when
        ``gpus_per_actor`` asks for GPUs and a cluster that may grow has none.
    :param prompt_dir: folder (or URI) holding ``<partition>/prompt.json`` from the AoD loop; a
        partition without one uses its initial prompt.
    :param model: the DLM for every partition (default: each partition's ``dlm``).
    :param trust_remote_code: let ``model`` run its own code (LLaDA, Dream). It belongs to
        ``model`` alone: a spec's ``trust_remote_code`` never carries over to it.
    :param dlm_base_url: an OpenAI-compatible server that serves ``model`` (free mode only),
        instead of loading it in the actors.
    :param dlm_api_key_env: the environment variable holding that server's API key; it reaches
        the actors in their ``runtime_env``, and no other variable does.
    :param max_candidates: candidate budget per partition (default: 10 per target row).
    :param allow_partial: keep the rows made when the budget runs out instead of failing.
    :param ray_address: a Ray cluster to join (default: ``RAY_ADDRESS``, else embedded Ray).
    :param critic_api_key: the API key of an LLM critic whose endpoint names an ``api_key_env``
        (an Airflow connection's), given here instead of in that variable of this process:
        see ``PartitionJob.critic_env``. Left out of the options' repr.
    """

    rows: int | None = None
    actors: int | None = None
    batch_size: int = 16
    threads_per_actor: int | None = None
    gpus_per_actor: float | None = None
    min_actors: int | None = None
    max_actors: int | None = None
    gpu_wait_s: float = GPU_WAIT_S
    prompt_dir: str | Path | None = None
    model: str | None = None
    trust_remote_code: bool = False
    dlm_base_url: str | None = None
    dlm_api_key_env: str | None = None
    max_candidates: int | None = None
    allow_partial: bool = False
    ray_address: str | None = None
    critic_api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        counts = ("rows", "actors", "min_actors", "max_actors", "batch_size", "threads_per_actor")
        for name in (*counts, "max_candidates"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise AodError(f"{name.replace('_', '-')} must be at least 1, got {value}")
        if self.gpus_per_actor is not None and self.gpus_per_actor < 0:
            raise AodError(f"gpus-per-actor must not be negative, got {self.gpus_per_actor}")
        if self.gpu_wait_s < 0:
            raise AodError(f"gpu-wait must not be negative, got {self.gpu_wait_s:g}")
        if self.actors is not None and (self.min_actors is not None or self.max_actors is not None):
            raise AodError("actors sets a fixed pool: give it or min-actors/max-actors, not both")
        if self.min_actors is not None and self.max_actors is not None and self.min_actors > self.max_actors:
            raise AodError(f"min-actors ({self.min_actors}) must not exceed max-actors ({self.max_actors})")
        if self.model is None and (self.dlm_base_url is not None or self.dlm_api_key_env is not None):
            raise AodError("dlm-base-url and dlm-api-key-env need model: the model the server serves")


@dataclass(frozen=True)
class PartitionJob:
    """One partition with everything loaded and checked before Ray starts; ``dlm`` is its DLM
    (the run's ``model`` or the partition's own): a local model, or a server.

    ``critic_env`` is what its judge actors get in their ``runtime_env`` for an LLM critic whose
    endpoint names an ``api_key_env``: that variable with the key (``SynthesisOptions``'
    ``critic_api_key``, else the variable's value here), and nothing is written into this
    process's environment. Empty without such a critic, or when neither has a key: the actors
    then read their own environment, as on a cluster that sets the variable on its nodes.
    """

    partition: Partition
    schema: LoadedSchema
    reference: list[Any]
    holdout: list[Any] | None
    prompt: Prompt
    prompt_source: str
    dlm: DLMSetting
    target: int
    budget: int
    critic_env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        """The partition's name."""
        return self.partition.name

    def fingerprint(self, allow_partial: bool) -> str:
        """A hash of every setting that decides which rows the partition gets."""
        p = self.partition
        settings = {
            "partition": p.name,
            "schema": canonical_json(self.schema.contents),
            "reference": canonical_json(self.reference),
            "target": self.target,
            "budget": self.budget,
            "allow_partial": allow_partial,
            "model": self.dlm.model,
            "trust_remote_code": self.dlm.trust_remote_code,
            "prompt": self.prompt.to_json(),
            "seed": p.seed,
            "sensitive": list(p.sensitive),
            "critic": p.critic and asdict(p.agent),
        }
        if self.dlm.base_url is not None:  # absent for a local model: its fingerprints stay as they were
            settings["dlm_base_url"] = self.dlm.base_url
        return hashlib.sha256(canonical_json(settings).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PoolShape:
    """The generator pool's shape on the cluster at hand: ``actors`` to ``max_actors`` actors
    (equal for a fixed pool), each with ``threads`` torch threads, ``cpus`` and ``gpus``."""

    actors: int
    max_actors: int
    threads: int
    cpus: float
    gpus: float

    @property
    def device(self) -> str:
        """Where each actor runs its model: ``cuda`` with a GPU, else ``cpu``."""
        return "cuda" if self.gpus > 0 else "cpu"


def plan_partition(partition: Partition, options: SynthesisOptions) -> PartitionJob:
    """Load and check everything a partition needs (no Ray involved)."""
    schema = load_schema(partition.schema_path)
    reference = load_reference(partition)
    prompt, source = _prompt(partition, schema, reference, options.prompt_dir)
    dlm = partition.dlm
    if options.model is not None:
        # A model given for the run is trusted only by the run's own flag, never by the spec's.
        try:
            dlm = DLMSetting(
                options.model, options.trust_remote_code, options.dlm_base_url, options.dlm_api_key_env
            )
        except ValueError as exc:
            raise ModelError(f"model {options.model}: {exc}") from exc
    if dlm.base_url is None:
        check_model(dlm.model, dlm.trust_remote_code)  # now, not in every actor
    else:
        _check_server(partition.name, dlm, prompt)
    target = options.rows or partition.rows
    return PartitionJob(
        partition=partition,
        schema=schema,
        reference=reference,
        holdout=load_reference(partition, holdout=True) if partition.holdout_path else None,
        prompt=prompt,
        prompt_source=source,
        dlm=dlm,
        target=target,
        budget=options.max_candidates or CANDIDATE_FACTOR * target,
        critic_env=_critic_env(partition, options.critic_api_key),
    )


def _critic_env(partition: Partition, api_key: str | None) -> dict[str, str]:
    """The judge actors' environment for the partition's critic (``PartitionJob.critic_env``)."""
    name = partition.agent.api_key_env
    if not partition.critic or name is None:
        return {}
    key = api_key if api_key is not None else os.environ.get(name)
    return {} if key is None else {name: key}


def _check_server(name: str, dlm: DLMSetting, prompt: Prompt) -> None:
    """Check, before Ray starts, that a DLM server can write the partition: the prompt asks for
    free mode, and the server's API key variable (if any) is set here, to go to the actors.

    :raises ModelError: naming the partition and the server.
    """
    if prompt.decoding.mode != "free":
        raise ModelError(
            f"partition {name!r}: a DLM server ({dlm.base_url}) writes free mode only, and the prompt's "
            f"mode is {prompt.decoding.mode!r}: use decoding: {{mode: free}}"
        )
    try:
        DLMServer.from_setting(dlm)
    except ModelError as exc:
        raise ModelError(f"partition {name!r}: {exc}") from exc


def _prompt(
    partition: Partition, schema: LoadedSchema, reference: list[Any], prompt_dir: str | Path | None
) -> tuple[Prompt, str]:
    """The partition's optimized prompt from ``prompt_dir``, else its initial prompt."""
    if prompt_dir is not None:
        path = storage.join(storage.locate(prompt_dir), partition.name, PROMPT_FILE)
        if storage.is_file(path):
            try:
                return Prompt.from_json(storage.read_text(path)), str(path)
            except (DataError, OSError, UnicodeDecodeError) as exc:
                raise DataError(f"{path}: {exc}") from exc
    return initial_prompt(partition, schema.contents, reference), "initial"


def with_gpus(cluster: adapter.Cluster, options: SynthesisOptions) -> adapter.Cluster:
    """``cluster``, once it has the GPUs of one actor when the run asks for GPUs.

    :raises AodError: (one line naming the setting) when it has none and cannot get them: a
        cluster this process started has no autoscaler; another gets ``gpu_wait_s`` seconds.
    """
    gpus = options.gpus_per_actor
    if not gpus or cluster.gpus >= gpus:
        return cluster
    have = f"the Ray cluster has {cluster.gpus:g} GPUs"
    cpus = "or set gpus-per-actor 0 to run on CPUs"
    if not cluster.may_grow:
        raise AodError(
            f"gpus-per-actor {gpus:g} asks for GPUs, but {have} and no autoscaler to add any (this "
            f"process started it); join a cluster with GPU workers (--ray-address) {cpus}"
        )
    cluster = adapter.wait_for_gpus(gpus, options.gpu_wait_s)
    if cluster.gpus < gpus:
        raise AodError(
            f"gpus-per-actor {gpus:g} asks for GPUs, but {have} and none joined within "
            f"{options.gpu_wait_s:g} s (gpu-wait); check its GPU worker group (nodes, quota, the "
            f"autoscaler's maximum) {cpus}"
        )
    return cluster


def pool_shape(cluster: adapter.Cluster, options: SynthesisOptions) -> PoolShape:
    """The generator pool for ``cluster``: one GPU per actor when there are GPUs, else CPU threads."""
    gpus = options.gpus_per_actor if options.gpus_per_actor is not None else float(cluster.gpus >= 1)
    if gpus > 0:
        threads = options.threads_per_actor or 1
        actors, most = _sizes(options, int(cluster.gpus // gpus))
        # A cluster that may grow gets the missing GPUs from its autoscaler (the actors' demand).
        if actors * gpus > cluster.gpus and not cluster.may_grow:
            raise AodError(
                f"{actors} actors with {gpus:g} GPU each need more GPUs than the cluster's {cluster.gpus:g}"
            )
        return PoolShape(actors, most, threads, cpus=1.0, gpus=gpus)
    if options.actors is not None:
        actors = most = options.actors
        threads = options.threads_per_actor or max(1, int(cluster.cpus // actors))
    else:
        threads = options.threads_per_actor or 1
        actors, most = _sizes(options, int(cluster.cpus // threads))
    if actors * threads > cluster.cpus:
        raise AodError(
            f"{actors} actors x {threads} threads need {actors * threads} CPUs; the Ray cluster has "
            f"{cluster.cpus:g} (lower --actors)"
        )
    return PoolShape(actors, most, threads, cpus=float(threads), gpus=0.0)


def _sizes(options: SynthesisOptions, room: int) -> tuple[int, int]:
    """The pool's fewest and most actors: ``actors`` for both, else ``min_actors`` and
    ``max_actors``, each by default the ``room`` the cluster has now (at least 1, at most 8)."""
    if options.actors is not None:
        return options.actors, options.actors
    fit = max(1, min(MAX_DEFAULT_ACTORS, room))
    most = options.max_actors or max(fit, options.min_actors or 1)
    return options.min_actors or min(fit, most), most


def by_model(jobs: Sequence[PartitionJob]) -> list[list[PartitionJob]]:
    """The jobs grouped by their DLM setting (a model and its trust, or a server: its URL and
    model), in order of first appearance: one pool each, so two servers never share one."""
    groups: dict[DLMSetting, list[PartitionJob]] = {}
    for job in jobs:
        groups.setdefault(job.dlm, []).append(job)
    return list(groups.values())
