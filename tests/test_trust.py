"""A model folder that ships its own code (``auto_map``) is refused wherever a model is loaded:
the command line, the Ray actors and the Airflow operators, unless that folder itself is trusted.

A spec's ``trust_remote_code`` belongs to the spec's model: it never reaches a model given with
``--model``, by an operator or by an ``aod`` connection. The folders' code would write a marker
file when imported; the tests check that it never is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
import ray
import yaml

from aod_ops import pipeline, report
from aod_ops.airflow.exceptions import AoDConnectionError, AoDInputError, AoDTaskError
from aod_ops.airflow.operators import AoDOptimizeOperator, AoDSynthesizeOperator
from aod_ops.cli import main
from aod_ops.dlm.models import check_model, load_denoiser
from aod_ops.dlm.settings import DecodingSettings
from aod_ops.errors import ModelError
from aod_ops.ray import adapter
from aod_ops.ray.generator import DLMGenerator
from aod_ops.ray.jobs import SynthesisJob
from aod_ops.ray.plan import SynthesisOptions, plan_partition, pool_shape
from aod_ops.ray.synthesize import _stages
from aod_ops.report import Report
from aod_ops.schema import load_schema
from aod_ops.spec import DLMSetting, Partition, load_spec

if TYPE_CHECKING:
    from tests.fakes import FakeTaskInstance

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"color": {"enum": ["red", "green", "blue"]}, "size": {"type": "integer"}},
    "required": ["color", "size"],
    "additionalProperties": False,
}
CARS = Path(__file__).resolve().parents[1] / "examples" / "schemas" / "cars.json"


def code_folder(folder: Path, marker: Path, config: str = "config.json") -> Path:
    """A model folder whose ``config`` maps to its own module, which writes ``marker`` on import."""
    folder.mkdir()
    base = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
    mapping = {"AutoConfig": "own.OwnConfig", "AutoModelForCausalLM": "own.OwnModel"}
    (folder / "config.json").write_text(
        json.dumps({**base, "auto_map": mapping} if config == "config.json" else base)
    )
    if config != "config.json":
        (folder / config).write_text(json.dumps({"auto_map": {"AutoTokenizer": ["own.OwnTokenizer", None]}}))
    (folder / "own.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n")
    return folder


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "remote-code-ran"
    yield path
    assert not path.exists(), "the folder's own code ran"


@pytest.fixture
def foreign(tmp_path: Path, marker: Path) -> Path:
    """The folder nobody trusted."""
    return code_folder(tmp_path / "foreign-model", marker)


@pytest.fixture
def spec(tmp_path: Path, marker: Path) -> Path:
    """A spec whose own model ships code and is trusted there."""
    own = code_folder(tmp_path / "own-llada", marker)
    (tmp_path / "shirts.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "shirts.jsonl").write_text('{"color": "red", "size": 1}\n{"color": "blue", "size": 2}\n')
    doc = {
        "defaults": {"dlm": {"model": str(own), "trust_remote_code": True}},
        "partitions": [{"name": "shirts", "schema": "shirts.json", "reference": "shirts.jsonl", "rows": 4}],
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _one_line_naming(text: str, folder: Path) -> str:
    (line,) = [line for line in text.strip().splitlines() if "error" in line]
    assert f"model folder {folder} ships its own Python code (auto_map in " in line
    assert "Traceback" not in text
    return line


@pytest.mark.parametrize("config", ["config.json", "tokenizer_config.json"])
def test_the_loader_refuses_a_folder_with_its_own_code_unless_trusted(
    tmp_path: Path, marker: Path, config: str
) -> None:
    folder = code_folder(tmp_path / "m", marker, config)
    with pytest.raises(ModelError, match=rf"model folder {folder} ships its own Python code") as caught:
        load_denoiser(str(folder))
    assert "\n" not in str(caught.value) and config in str(caught.value)
    check_model(str(folder), trust_remote_code=True)  # trusted: past the refusal, nothing loaded


def test_generate_refuses_the_folder_without_its_flag(
    foreign: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "--schema", str(CARS), "-n", "1", "--model", str(foreign)]) == 2
    _one_line_naming(capsys.readouterr().err, foreign)


def test_synthesize_does_not_lend_the_specs_trust_to_its_model_flag(
    spec: Path, foreign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not ray.is_initialized()
    args = ["synthesize", "--spec", str(spec), "--out", str(tmp_path / "out"), "--model", str(foreign)]
    assert main(args) == 2
    _one_line_naming(capsys.readouterr().err, foreign)
    assert not ray.is_initialized() and not adapter.embedded_dir().exists()  # refused before Ray


@pytest.mark.parametrize("command", ["optimize", "run"])
def test_optimize_and_run_do_not_lend_the_specs_trust_to_their_model_flag(
    spec: Path, foreign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    args = [command, "--spec", str(spec), "--out", str(tmp_path / "out"), "--model", str(foreign)]
    assert main([*args, "--rounds", "1", "--candidates", "1"]) == 2
    _one_line_naming(capsys.readouterr().err, foreign)


@pytest.mark.parametrize("command", ["optimize", "synthesize", "run"])
def test_the_trust_flag_without_a_model_is_refused(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    assert main([command, "--spec", str(spec), "--out", str(tmp_path / "o"), "--trust-remote-code"]) == 2
    assert "--trust-remote-code trusts the model given with --model" in capsys.readouterr().err


def test_run_passes_the_model_and_its_trust_to_each_step(
    spec: Path, foreign: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def optimize_prompt(partition: Partition, prompts: Any, loop: Any, **kwargs: Any) -> None:
        seen["optimize"] = partition.dlm

    def synthesize_tables(spec: Any, tables: Any, *, options: SynthesisOptions, **kwargs: Any) -> list[Any]:
        seen["synthesize"] = (options.model, options.trust_remote_code)
        return []

    monkeypatch.setattr(pipeline, "optimize_prompt", optimize_prompt)
    monkeypatch.setattr(
        report, "write_report", lambda folder: Report(folder / "r.png", folder / "r.html", ())
    )
    monkeypatch.setattr(pipeline, "synthesize_tables", synthesize_tables)
    monkeypatch.setattr(
        pipeline, "validate_table", lambda partition, tables, **kwargs: SimpleNamespace(success=True)
    )
    out = str(tmp_path / "out")
    assert (
        main(["run", "--spec", str(spec), "--out", out, "--model", str(foreign), "--trust-remote-code"]) == 0
    )
    assert seen == {
        "optimize": DLMSetting(model=str(foreign), trust_remote_code=True),
        "synthesize": (str(foreign), True),
    }


def test_synthesis_gives_the_actors_the_trust_of_the_model_they_load(
    spec: Path, foreign: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adapter, "put", lambda value: value)  # no object store: Ray stays down
    (partition,) = load_spec(spec).partitions
    pool = pool_shape(adapter.Cluster(cpus=2, gpus=0), SynthesisOptions())

    def actor_model(options: SynthesisOptions) -> tuple[str, bool]:
        job = plan_partition(partition, options)
        kwargs = _stages(job, pool, 4)[0].kwargs
        return kwargs["model"], kwargs["trust_remote_code"]

    assert actor_model(SynthesisOptions()) == (partition.dlm.model, True)  # the spec's own, trusted there
    assert actor_model(SynthesisOptions(model=str(foreign), trust_remote_code=True)) == (str(foreign), True)
    with pytest.raises(ModelError, match=rf"model folder {foreign} ships its own Python code"):
        plan_partition(partition, SynthesisOptions(model=str(foreign)))


def test_a_ray_actor_refuses_the_folder_it_was_not_trusted_with(foreign: Path) -> None:
    with pytest.raises(ModelError, match=rf"model folder {foreign} ships its own Python code"):
        DLMGenerator(load_schema(SCHEMA), str(foreign), False, "A shirt.\n", DecodingSettings(steps=4))


def test_a_ray_job_carries_the_trust_flag_only_for_a_trusted_model(spec: Path, foreign: Path) -> None:
    trusted = SynthesisJob(spec, "/out", model=str(foreign), trust_remote_code=True).entrypoint()
    assert trusted.endswith(f"--model {foreign} --trust-remote-code")
    assert "--trust-remote-code" not in SynthesisJob(spec, "/out", model=str(foreign)).entrypoint()


def _connection(monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any]) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_AOD_MODELS", json.dumps({"conn_type": "aod", "extra": extra}))
    return "aod_models"


@pytest.mark.parametrize("operator", [AoDSynthesizeOperator, AoDOptimizeOperator])
@pytest.mark.parametrize("given_by", ["connection", "operator"])
def test_airflow_operators_refuse_a_folder_nobody_trusted(
    spec: Path,
    foreign: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    operator: type[AoDSynthesizeOperator] | type[AoDOptimizeOperator],
    given_by: str,
    task_instance: FakeTaskInstance,
) -> None:
    if given_by == "connection":  # the spec trusts its own model, the connection names another
        models: dict[str, Any] = {"aod_conn_id": _connection(monkeypatch, {"dlm": str(foreign)})}
    else:  # the connection trusts its own model, the operator names another
        trusted = {"dlm": load_spec(spec).partitions[0].dlm.model, "trust_remote_code": True}
        models = {"aod_conn_id": _connection(monkeypatch, trusted), "model": str(foreign)}
    op = operator(
        task_id="t", spec_path=str(spec), partition="shirts", out_dir=str(tmp_path / "run"), **models
    )
    with pytest.raises(AoDTaskError, match=rf"model folder {foreign} ships its own Python code"):
        op.execute({"ti": task_instance})  # type: ignore[arg-type]
    assert "ships its own Python code" in task_instance.xcoms["error"]
    assert not ray.is_initialized()


def test_airflow_trust_applies_to_the_model_it_comes_with(
    spec: Path, foreign: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def synthesize_op(**models: Any) -> AoDSynthesizeOperator:
        return AoDSynthesizeOperator(
            task_id="s", spec_path=str(spec), partition="shirts", out_dir="o", **models
        )

    conn = _connection(monkeypatch, {"dlm": str(foreign), "trust_remote_code": True})
    assert synthesize_op(aod_conn_id=conn).load().dlm == DLMSetting(str(foreign), trust_remote_code=True)
    own = load_spec(spec).partitions[0].dlm
    assert synthesize_op().load().dlm == own  # the spec's own model keeps the spec's trust
    assert synthesize_op(model=str(foreign)).load().dlm == DLMSetting(str(foreign))
    trusted = synthesize_op(model=str(foreign), trust_remote_code=True)
    assert trusted.load().dlm == DLMSetting(str(foreign), trust_remote_code=True)
    with pytest.raises(AoDInputError, match="trusts the operator's model, and none was given"):
        synthesize_op(trust_remote_code=True).load()


def test_an_aod_connection_trusts_only_its_own_dlm(monkeypatch: pytest.MonkeyPatch) -> None:
    from aod_ops.airflow.hooks import AoDHook

    _connection(monkeypatch, {"trust_remote_code": True})
    with pytest.raises(AoDConnectionError, match="'trust_remote_code' trusts the connection's 'dlm'"):
        AoDHook("aod_models").get_conn()
