"""What the partition operators share: one partition of a spec, and the operators' base classes.

Each partition is read on its own from the spec's YAML: ``partition_names`` lists them,
``partition_sources`` names a partition's schema and samples without loading any engine (quick
enough for the OpenLineage listener), ``partition_spec`` writes a spec holding only that
partition and ``load_partition`` checks it, so a broken partition fails its own tasks and the
others carry on.

``PartitionOperator`` holds the spec, the partition, the run folder (``prompts/`` and
``tables/``) and the storage connection, and turns errors into the provider's types (pushing
each message to XCom under ``error``); ``ModelOperator`` adds the ``aod`` connection's models
and an operator's own DLM. The operators themselves are in ``aod_ops.airflow.operators``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from airflow.sdk import BaseOperator

from aod_ops import storage
from aod_ops.airflow.exceptions import AoDInputError, AoDProviderError, AoDTaskError
from aod_ops.airflow.hooks import AoDHook, ModelEndpoints, storage_environment
from aod_ops.errors import AodError, DataError, SchemaError, SpecError
from aod_ops.pipeline import TABLES
from aod_ops.spec import read_yaml
from aod_ops.sql import SqlQuery
from aod_ops.storage import Location

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

    from aod_ops.airflow.lineage import Source, TableFacts
    from aod_ops.spec import Partition

#: The XCom key of a failed task's message.
ERROR_KEY = "error"
_PATH_FIELDS = ("schema", "reference", "holdout")


def _spec_yaml(path: Location) -> dict[str, Any]:
    """The spec's YAML with a ``partitions`` list, without checking the partitions themselves."""
    raw = read_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("partitions"), list) or not raw["partitions"]:
        raise SpecError(f"{path}: a spec is a mapping with 'defaults' and a non-empty 'partitions' list")
    return raw


def partition_names(spec_path: str | Path, only: Sequence[str] = ()) -> list[str]:
    """The names of a spec's partitions (or of ``only``, each checked to be there), in file order.

    Only the names are read: each partition is checked by the tasks that work on it.
    """
    path = storage.locate(spec_path)
    names = []
    for index, item in enumerate(_spec_yaml(path)["partitions"]):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise SpecError(f"{path}: partitions[{index}]: field 'name': missing")
        names.append(item["name"])
    missing = [name for name in only if name not in names]
    if missing:
        raise SpecError(f"{path}: no partition named {', '.join(map(repr, missing))} (partitions: {names})")
    return [name for name in names if not only or name in only]


def _partition_entry(path: Location, raw: dict[str, Any], name: str) -> dict[str, Any]:
    """Partition ``name``'s entry in the spec ``raw`` read from ``path``, its file paths made
    absolute (or URIs, for a spec read from one)."""
    entries = [p for p in raw["partitions"] if isinstance(p, dict) and p.get("name") == name]
    if not entries:
        raise SpecError(f"{path}: no partition named {name!r}")
    return {
        key: str(storage.locate(value, storage.parent(path)))
        if key in _PATH_FIELDS and isinstance(value, str) and value
        else value
        for key, value in entries[0].items()
    }


@dataclass(frozen=True)
class PartitionSources:
    """Where a partition's schema and real rows are, as its spec names them."""

    schema: Location
    reference: Location | SqlQuery
    holdout: Location | SqlQuery | None

    def samples(self) -> list[Source]:
        """The partition's real rows: its reference, and its holdout when it has one."""
        return [self.reference] if self.holdout is None else [self.reference, self.holdout]


def partition_sources(spec_path: str | Path, name: str) -> PartitionSources:
    """The schema, reference and holdout locations of partition ``name``, from the spec's YAML alone.

    Unlike ``load_partition`` this reads no schema, sample or database and imports no engine: it
    is quick enough for the lineage that the OpenLineage listener asks for around each task.

    :raises SpecError: when the partition, or one of the three fields, is missing or malformed.
    """
    path = storage.locate(spec_path)
    entry = _partition_entry(path, _spec_yaml(path), name)

    def file(key: str, expected: str = "a path") -> Location:
        value = entry.get(key)
        if not isinstance(value, str) or not value:
            raise SpecError(f"{path}: partition {name!r}: field {key!r}: must be {expected}")
        return storage.locate(value)

    def sample(key: str) -> Location | SqlQuery:
        value = entry.get(key)
        if isinstance(value, dict) and all(isinstance(value.get(k), str) for k in ("sql", "conn")):
            return SqlQuery(sql=value["sql"], conn=value["conn"].strip())
        return file(key, "a path or {sql: ..., conn: ...}")

    return PartitionSources(
        schema=file("schema"),
        reference=sample("reference"),
        holdout=None if entry.get("holdout") is None else sample("holdout"),
    )


@contextmanager
def partition_spec(
    spec_path: str | Path, name: str, overrides: Mapping[str, Any] | None = None
) -> Iterator[Path]:
    """A spec holding the defaults and only partition ``name``, in a temporary folder.

    ``load_spec`` checks every partition of a spec, so one broken partition would stop all the
    others; this spec holds one. Its file paths are made absolute (or URIs, for a spec read from
    one), and ``overrides`` (spec fields such as ``dlm`` or ``agent``) replace the partition's own.
    """
    path = storage.locate(spec_path)
    raw = _spec_yaml(path)
    entry = {**_partition_entry(path, raw, name), **(overrides or {})}
    with tempfile.TemporaryDirectory(prefix="aod-spec-") as tmp:
        single = Path(tmp) / storage.name(path)
        single.write_text(yaml.safe_dump({**raw, "partitions": [entry]}, sort_keys=False), encoding="utf-8")
        yield single


def load_partition(spec_path: str | Path, name: str, overrides: Mapping[str, Any] | None = None) -> Partition:
    """One partition of a spec, checked on its own (see ``partition_spec``).

    :raises SpecError: naming the spec file, the partition and the field that is wrong.
    """
    from aod_ops.spec import load_spec  # imports torch: not at DAG parse time

    with partition_spec(spec_path, name, overrides) as single:
        try:
            return load_spec(single).partitions[0]
        except SpecError as exc:
            raise SpecError(str(exc).replace(str(single), str(storage.locate(spec_path)))) from None


def optional_int(value: Any, name: str) -> int | None:
    """A templated count: None (or an empty/"None" rendering) keeps the spec's value."""
    if value is None or value in ("", "None"):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise AoDInputError(f"{name} must be a whole number, got {value!r}") from None
    if number < 1 or str(number) != str(value).strip():
        raise AoDInputError(f"{name} must be a whole number of at least 1, got {value!r}")
    return number


def optional_str(value: Any) -> str | None:
    """A templated name: None (or an empty/"None" rendering) means none given."""
    return None if value is None or value in ("", "None") else str(value)


class PartitionOperator(BaseOperator):
    """What the partition operators share: the spec, the partition, the run folder, the storage
    credentials, error reporting.

    :param spec_path: the partition spec (YAML), a path or a URI.
    :param partition: the partition's name in the spec.
    :param out_dir: the run's output folder or URI (one per logical date in the example DAG).
    :param storage_conn_id: a connection with the object store's credentials (``StorageHook``);
        None uses the worker's own.
    """

    template_fields: Sequence[str] = ("spec_path", "partition", "out_dir", "storage_conn_id")

    def __init__(
        self,
        *,
        spec_path: str,
        partition: str,
        out_dir: str,
        storage_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.spec_path = spec_path
        self.partition = partition
        self.out_dir = out_dir
        self.storage_conn_id = storage_conn_id

    def overrides(self) -> dict[str, Any]:
        """Spec fields that replace the partition's own (none here)."""
        return {}

    def load(self) -> Partition:
        """The partition, checked on its own, with ``overrides`` applied."""
        return load_partition(self.spec_path, self.partition, self.overrides())

    def run_dir(self, step: str) -> Location:
        """The step's folder in the run folder: ``prompts`` or ``tables``."""
        return storage.join(storage.locate(self.out_dir), step)

    def table_dir(self) -> Location:
        """The partition's committed table folder: ``data/``, ``quarantine/`` and ``report.json``.

        :raises DataError: when no table of the partition is committed.
        """
        from aod_ops.output import committed_dir

        folder = committed_dir(self.run_dir(TABLES), self.partition)
        if folder is None:
            raise DataError(
                f"partition {self.partition!r}: no table committed in {self.run_dir(TABLES)}; "
                "a Ray job must write to storage the Airflow worker also sees"
            )
        return folder

    @contextmanager
    def reporting_errors(self, context: Context) -> Iterator[None]:
        """Within the storage connection's credentials, push a failure's message to XCom
        (``error``) and raise it as the provider's type: ``AoDInputError`` for a bad spec, schema
        or data (not retried), else ``AoDTaskError``."""
        try:
            with storage_environment(optional_str(self.storage_conn_id)):
                yield
        except (SpecError, SchemaError, DataError) as exc:
            context["ti"].xcom_push(key=ERROR_KEY, value=str(exc)[:2000])
            raise AoDInputError(str(exc)) from exc
        except AodError as exc:
            context["ti"].xcom_push(key=ERROR_KEY, value=str(exc)[:2000])
            raise AoDTaskError(str(exc)) from exc
        except AoDProviderError as exc:
            context["ti"].xcom_push(key=ERROR_KEY, value=str(exc)[:2000])
            raise

    def get_openlineage_facets_on_start(self) -> OperatorLineage:
        """The task's datasets for OpenLineage: the partition's real rows (reference and holdout)
        in, what the step writes out. The OpenLineage provider's listener calls it as the task
        starts; it needs that provider (``aod_ops.airflow.lineage``)."""
        from aod_ops.airflow.lineage import operator_lineage

        with storage_environment(optional_str(self.storage_conn_id)):
            inputs, outputs = self.lineage_datasets(partition_sources(self.spec_path, self.partition))
            return operator_lineage(inputs, outputs)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """The same datasets, with what this run found where it got that far (rows, fidelity,
        checks). The listener calls it as the task ends, and (there being no ``_on_failure``) as
        it fails: a failed validation's checks show there."""
        return self.get_openlineage_facets_on_start()

    def lineage_datasets(self, sources: PartitionSources) -> tuple[list[Source], list[Location | TableFacts]]:
        """What the step reads and writes, for ``get_openlineage_facets_on_start``."""
        raise NotImplementedError

    def table_facts(self, sources: PartitionSources, **found: Any) -> TableFacts:
        """The partition's table for lineage, its columns from the partition's JSON Schema, with
        what the task ``found`` (``TableFacts`` fields)."""
        from aod_ops.airflow.lineage import TableFacts
        from aod_ops.output import output_schema
        from aod_ops.schema import load_schema

        location = storage.join(self.run_dir(TABLES), self.partition)
        return TableFacts(location, output_schema(load_schema(sources.schema)), **found)


class ModelOperator(PartitionOperator):
    """A partition operator that runs models: an ``aod`` connection or a DLM name may override
    the spec's.

    Trusting a model's own code belongs to that model's setting alone: the spec's trust never
    reaches the connection's DLM or ``model``, nor the connection's trust ``model``.

    :param model: the DLM to use instead of the spec's (e.g. ``tiny-random``).
    :param trust_remote_code: let ``model`` run its own code (LLaDA, Dream).
    :param aod_conn_id: an ``aod`` connection whose DLM and agent endpoint replace the spec's;
        None keeps the spec's models.
    """

    template_fields: Sequence[str] = (
        *PartitionOperator.template_fields,
        "model",
        "trust_remote_code",
        "aod_conn_id",
    )

    def __init__(
        self,
        *,
        model: str | None = None,
        trust_remote_code: bool = False,
        aod_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.trust_remote_code = trust_remote_code
        self.aod_conn_id = aod_conn_id

    @cached_property
    def endpoints(self) -> ModelEndpoints:
        """The ``aod`` connection's models (none when no connection is named)."""
        conn_id = optional_str(self.aod_conn_id)
        return ModelEndpoints() if conn_id is None else AoDHook(conn_id).get_conn()

    def overrides(self) -> dict[str, Any]:
        """The connection's models, then ``model``, in place of the spec's (each a whole ``dlm``
        setting, so no trust carries over from the setting it replaces)."""
        fields = self.endpoints.overrides()
        model = optional_str(self.model)
        if model is not None:
            fields["dlm"] = {"model": model, "trust_remote_code": self.trust_remote_code}
        elif self.trust_remote_code:
            raise AoDInputError("trust_remote_code trusts the operator's model, and none was given")
        return fields
