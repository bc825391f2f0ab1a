"""The Helm chart charts/aod, rendered and linted by Helm's own engine.

Helm v4 runs in-process through ``helm-python-sdk`` (Helm's Go SDK behind a C ABI), so these
tests need no ``helm`` binary, cluster or network. Every rendered manifest is validated the way
an API server would take it: core kinds against the Kubernetes OpenAPI schemas that
``kubernetes-validate`` ships (strict: unknown fields are errors), the RayJob and its cluster
spec against the openAPIV3Schema of the KubeRay CRDs in fixtures/kuberay-crds/ (made strict the
same way), and the Ray pod templates once more as core PodTemplates. The job's entrypoint is
parsed by ``aod``'s own argument parser, so the chart passes only what the command takes.
"""

from __future__ import annotations

import copy
import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from aod_ops.cli import build_parser

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[1] / "charts" / "aod"
CRD_DIR = Path(__file__).resolve().parent / "fixtures" / "kuberay-crds"
KUBE_VERSION = "1.33"
RELEASE = "synth"
FULLNAME = "synth-aod"
SPEC_PATH = "/etc/aod/spec/partitions.yaml"
# A value shaped like an API key: it must never reach a rendered manifest.
SENTINEL = "sk-aod-SENTINEL-7f3a9c-never-render-me"

# What every partition needs besides its name and schema.
REF = {"reference": "/data/reference/sample.jsonl", "rows": 10}
# The chart's example of a large run (eight GPUs per worker pod, autoscaling, a remote agent, an
# existing claim, S3 output), which the chart also ships for chart-testing.
GPU_HEAVY: dict[str, Any] = yaml.safe_load((CHART / "ci" / "gpu-values.yaml").read_text())


def _strict(schema: Any) -> None:
    """Close every object schema that lists its properties, as the API server's strict field
    validation does (it rejects unknown fields), unless it preserves unknown fields."""
    if not isinstance(schema, dict):
        return
    open_ended = "additionalProperties" in schema or schema.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in schema and not open_ended:
        schema["additionalProperties"] = False
    for sub in schema.get("properties", {}).values():
        _strict(sub)
    for key in ("items", "additionalProperties", "not"):
        _strict(schema.get(key))
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key, []):
            _strict(sub)


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, jsonschema.Draft7Validator]:
    """Validators by kind for ray.io/v1, from the KubeRay CRDs' openAPIV3Schema."""
    validators = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
        _strict(schema)
        validators[crd["spec"]["names"]["kind"]] = jsonschema.Draft7Validator(schema)
    assert set(validators) == {"RayCluster", "RayJob"}
    return validators


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    """The chart, loaded once by Helm's engine."""
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """Render like `helm install synth charts/aod -n synth` (schema checks included), keyed by
    (kind, name)."""
    manifests = chart.render(values, name=RELEASE, namespace=RELEASE, is_install=True)
    docs = {}
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def rendered_text(chart: helm.Chart, values: dict[str, Any] | None = None) -> str:
    """Everything `helm install` would print or apply, NOTES included."""
    return "\n".join(chart.render(values, name=RELEASE, namespace=RELEASE, is_install=True).values())


def ray_pod_templates(rayjob: dict[str, Any]) -> list[dict[str, Any]]:
    """The head's and every worker group's pod template."""
    spec = rayjob["spec"]["rayClusterSpec"]
    return [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]


def validate(doc: dict[str, Any], crd_validators: dict[str, jsonschema.Draft7Validator]) -> None:
    """Validate one manifest as the API server would (strict field validation)."""
    if doc["apiVersion"] != "ray.io/v1":
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        return
    crd_validators[doc["kind"]].validate(doc)
    if doc["kind"] == "RayJob":
        # KubeRay creates a RayCluster from rayClusterSpec; it must be one.
        cluster = {
            "apiVersion": "ray.io/v1",
            "kind": "RayCluster",
            "metadata": {"name": doc["metadata"]["name"]},
            "spec": doc["spec"]["rayClusterSpec"],
        }
        crd_validators["RayCluster"].validate(cluster)
        for template in ray_pod_templates(doc):
            pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}}
            kubernetes_validate.validate({**pod_template, "template": template}, KUBE_VERSION, strict=True)


def containers(rayjob: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container of the Ray head and workers."""
    return [c for t in ray_pod_templates(rayjob) for c in t["spec"]["containers"]]


def test_chart_lints_clean_with_defaults_and_gpu_values() -> None:
    for values in (None, GPU_HEAVY):
        report = helm.lint(CHART, values, strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert report["total_charts_linted"] == 1
        assert problems == [] and report["errors"] == []


def test_chart_lint_reports_schema_violations() -> None:
    report = helm.lint(CHART, {"worker": {"maxReplicas": -3}}, strict=True)
    assert any("/worker/maxReplicas" in e and "minimum: got -3, want 0" in e for e in report["errors"])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            None,
            {
                ("ConfigMap", f"{FULLNAME}-spec"),
                ("ConfigMap", f"{FULLNAME}-schemas"),
                ("PersistentVolumeClaim", f"{FULLNAME}-data"),
                ("RayJob", FULLNAME),
            },
        ),
        (
            GPU_HEAVY,
            {
                ("ConfigMap", f"{FULLNAME}-spec"),
                ("ConfigMap", f"{FULLNAME}-schemas"),
                ("ConfigMap", f"{FULLNAME}-suites"),
                ("RayJob", FULLNAME),
            },
        ),
    ],
    ids=["defaults", "gpu-heavy"],
)
def test_chart_renders_manifests_that_validate(
    chart: helm.Chart,
    crd_validators: dict[str, jsonschema.Draft7Validator],
    values: dict[str, Any] | None,
    expected: set[tuple[str, str]],
) -> None:
    docs = render(chart, values)
    assert set(docs) == expected
    for doc in docs.values():
        validate(doc, crd_validators)


def test_chart_validation_catches_a_broken_rayjob(
    crd_validators: dict[str, jsonschema.Draft7Validator],
) -> None:
    """The validators used above do reject what the API server would: a misspelled field in the
    worker group and a pod template field that Kubernetes does not know."""
    worker: dict[str, Any] = {
        "groupName": "gpu",
        "minReplicas": 0,
        "maxReplica": 4,
        "template": {"spec": {"containers": [{"name": "w", "image": "i"}]}},
    }
    rayjob = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": "x"},
        "spec": {
            "entrypoint": "aod synthesize",
            "rayClusterSpec": {
                "headGroupSpec": {"template": {"spec": {"containers": [{"name": "h", "image": "i"}]}}},
                "workerGroupSpecs": [worker],
            },
        },
    }
    with pytest.raises(jsonschema.ValidationError, match="maxReplica"):
        validate(rayjob, crd_validators)
    worker["maxReplicas"] = worker.pop("maxReplica")
    worker["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(jsonschema.ValidationError, match="gpus"):
        validate(rayjob, crd_validators)


def test_chart_default_gpu_worker_group(chart: helm.Chart) -> None:
    rayjob = render(chart)[("RayJob", FULLNAME)]
    cluster = rayjob["spec"]["rayClusterSpec"]
    (group,) = cluster["workerGroupSpecs"]
    assert (group["groupName"], group["replicas"], group["minReplicas"], group["maxReplicas"]) == (
        "gpu",
        1,
        0,
        4,
    )
    pod = group["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert cluster["enableInTreeAutoscaling"] is False
    # The head runs the driver and takes no GPU.
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in head["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in head and "tolerations" not in head


def test_chart_gpu_heavy_worker_group(chart: helm.Chart) -> None:
    rayjob = render(chart, GPU_HEAVY)[("RayJob", FULLNAME)]
    cluster = rayjob["spec"]["rayClusterSpec"]
    (group,) = cluster["workerGroupSpecs"]
    assert (group["groupName"], group["replicas"], group["minReplicas"], group["maxReplicas"]) == (
        "h100",
        2,
        2,
        8,
    )
    pod = group["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "64", "memory": "512Gi"},
        "limits": {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": 8},
    }
    assert container["image"] == "registry.example.com/ml/aod-ops:0.1.0-cuda12"
    # Helm merges maps with the defaults (a default label is dropped by setting it to null)
    # and replaces lists.
    assert pod["nodeSelector"] == {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    }
    assert pod["tolerations"] == GPU_HEAVY["worker"]["tolerations"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert cluster["enableInTreeAutoscaling"] is True
    assert rayjob["spec"]["activeDeadlineSeconds"] == 86400


def test_chart_cpu_only_worker_group_has_no_gpu_limit(
    chart: helm.Chart, crd_validators: dict[str, jsonschema.Draft7Validator]
) -> None:
    docs = render(chart, {"worker": {"gpus": 0, "nodeSelector": None, "tolerations": []}})
    rayjob = docs[("RayJob", FULLNAME)]
    (group,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert "nvidia.com/gpu" not in group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in group["template"]["spec"]
    validate(rayjob, crd_validators)


def test_chart_entrypoint_runs_aod_synthesize_on_the_mounted_spec(chart: helm.Chart) -> None:
    rayjob = render(chart)[("RayJob", FULLNAME)]
    # One worker pod of one GPU, no autoscaling: one actor, which asks for its GPU.
    assert rayjob["spec"]["entrypoint"] == (
        f"aod synthesize --spec {SPEC_PATH} --out /data/out --min-actors 1 --max-actors 1 --gpus-per-actor 1"
    )
    assert rayjob["spec"]["submissionMode"] == "K8sJobMode"
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True
    heavy = render(chart, GPU_HEAVY)[("RayJob", FULLNAME)]
    # Eight GPUs per pod, autoscaling from 2 to 8 pods: the pool grows with them, 16 to 64 actors.
    assert heavy["spec"]["entrypoint"] == (
        f"aod synthesize --spec {SPEC_PATH} --out s3://aod-bucket/synthetic --partition orders"
        " --rows 200000 --min-actors 16 --max-actors 64 --gpus-per-actor 1 --prompt-dir /data/prompts"
    )
    # The file that --spec names is there on the head (where the driver runs) and the workers.
    for template in ray_pod_templates(heavy):
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        (mount,) = [m for m in template["spec"]["containers"][0]["volumeMounts"] if m["name"] == "aod-spec"]
        sources = volumes["aod-spec"]["projected"]["sources"]
        projected = {
            f"{mount['mountPath']}/{item['path']}": (s["configMap"]["name"], item["key"])
            for s in sources
            for item in s["configMap"]["items"]
        }
        assert projected == {
            SPEC_PATH: (f"{FULLNAME}-spec", "partitions.yaml"),
            "/etc/aod/spec/schemas/cars.json": (f"{FULLNAME}-schemas", "cars.json"),
            "/etc/aod/spec/schemas/orders.json": (f"{FULLNAME}-schemas", "orders.json"),
            "/etc/aod/spec/suites/orders.json": (f"{FULLNAME}-suites", "orders.json"),
        }
        assert volumes["aod-data"] == {
            "name": "aod-data",
            "persistentVolumeClaim": {"claimName": "llm-weights"},
        }


def _synthesize_args(chart: helm.Chart, values: dict[str, Any] | None) -> Any:
    """The rendered entrypoint as ``aod``'s own parser reads it."""
    entrypoint = render(chart, values)[("RayJob", FULLNAME)]["spec"]["entrypoint"]
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["aod", "synthesize"]
    return build_parser().parse_args(argv[1:])


@pytest.mark.parametrize(
    ("values", "pool"),
    [
        (None, (None, 1, 1, 1.0, None)),
        (GPU_HEAVY, (None, 16, 64, 1.0, None)),
        ({"autoscaling": {"enabled": True}}, (None, 1, 4, 1.0, None)),  # 0 to 4 pods: at least one actor
        (
            {"worker": {"gpus": 4}, "job": {"gpusPerActor": 0.5, "gpuWaitSeconds": 1200}},
            (None, 1, 8, 0.5, 1200.0),
        ),
        ({"job": {"actors": 3}}, (3, None, None, 1.0, None)),
        ({"job": {"minActors": 2, "maxActors": 6}}, (None, 2, 6, 1.0, None)),
        ({"worker": {"gpus": 0, "nodeSelector": None, "tolerations": []}}, (None, None, None, None, None)),
        (
            {"worker": {"gpus": 0, "nodeSelector": None}, "job": {"minActors": 2, "maxActors": 4}},
            (None, 2, 4, None, None),
        ),
    ],
    ids=["defaults", "gpu-heavy", "autoscaling", "half-gpu", "fixed", "set", "cpu-workers", "cpu-set"],
)
def test_chart_sizes_the_dlm_pool_from_the_worker_group(
    chart: helm.Chart, values: dict[str, Any] | None, pool: tuple[Any, ...]
) -> None:
    """``aod synthesize`` gets a pool that follows the GPU worker group (one actor per GPU from
    its fewest to its most pods) and asks for GPUs when the workers have them; a CPU-only group
    leaves both to the command."""
    args = _synthesize_args(chart, values)
    assert (args.actors, args.min_actors, args.max_actors, args.gpus_per_actor, args.gpu_wait) == pool


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"job": {"actors": 4, "maxActors": 8}},
            "job.actors sets a fixed pool: leave job.minActors and job.maxActors null",
        ),
        (
            {"job": {"minActors": 8}},
            "the DLM pool's fewest actors (8) exceed its most (1): check job.minActors and job.maxActors",
        ),
    ],
    ids=["fixed-and-autoscaling", "min-above-max"],
)
def test_chart_rejects_an_inconsistent_pool(chart: helm.Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError) as caught:
        render(chart, values)
    assert message in str(caught.value)


def test_chart_gpu_example_trusts_the_remote_code_of_its_llada_model(chart: helm.Chart) -> None:
    """LLaDA (like Dream) ships its own modelling code, which loads only with the model's own
    trust_remote_code: every DLM setting of the rendered spec that names one has it."""
    heavy = render(chart, GPU_HEAVY)
    spec = yaml.safe_load(heavy[("ConfigMap", f"{FULLNAME}-spec")]["data"]["partitions.yaml"])
    settings = [spec["defaults"], *spec["partitions"]]
    dlms = [s["dlm"] for s in settings if "dlm" in s]
    remote_code = [
        d for d in dlms if isinstance(d, dict) and any(f in d["model"] for f in ("LLaDA", "Dream"))
    ]
    assert remote_code == [{"model": "/data/models/LLaDA-8B-Instruct", "trust_remote_code": True}]
    assert not [d for d in dlms if isinstance(d, str) and any(f in d for f in ("LLaDA", "Dream"))]
    # And its workers get the GPUs the actors ask for: 8 per pod, up to 8 pods.
    (group,) = heavy[("RayJob", FULLNAME)]["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert _synthesize_args(chart, GPU_HEAVY).gpus_per_actor == 1.0


def test_chart_configmaps_hold_the_spec_schemas_and_suites(chart: helm.Chart) -> None:
    docs = render(chart)
    spec = yaml.safe_load(docs[("ConfigMap", f"{FULLNAME}-spec")]["data"]["partitions.yaml"])
    assert spec == chart.values["partitionSpec"]
    assert [p["name"] for p in spec["partitions"]] == ["cars"]
    assert spec["partitions"][0]["schema"] == "schemas/cars.json"
    schemas = docs[("ConfigMap", f"{FULLNAME}-schemas")]["data"]
    assert json.loads(schemas["cars.json"]) == json.loads((CHART / "files/schemas/cars.json").read_text())

    heavy = render(chart, GPU_HEAVY)
    spec = yaml.safe_load(heavy[("ConfigMap", f"{FULLNAME}-spec")]["data"]["partitions.yaml"])
    assert spec["partitions"] == GPU_HEAVY["partitionSpec"]["partitions"]
    assert spec["defaults"]["agent"] == GPU_HEAVY["partitionSpec"]["defaults"]["agent"]
    # Defaults the user did not override stay from the chart.
    assert spec["defaults"]["loop"]["rounds"] == 5
    schemas = heavy[("ConfigMap", f"{FULLNAME}-schemas")]["data"]
    assert json.loads(schemas["orders.json"]) == GPU_HEAVY["schemas"]["orders.json"]
    assert "cars.json" in schemas
    suites = heavy[("ConfigMap", f"{FULLNAME}-suites")]["data"]
    assert json.loads(suites["orders.json"]) == json.loads(GPU_HEAVY["suites"]["orders.json"])


def test_chart_files_can_be_switched_off(chart: helm.Chart) -> None:
    values = {
        "chartFiles": {"schemas": ""},
        "schemas": {"cars.json": '{"type": "object"}'},
    }
    schemas = render(chart, values)[("ConfigMap", f"{FULLNAME}-schemas")]["data"]
    assert schemas == {"cars.json": '{"type": "object"}\n'}


def test_chart_agent_key_comes_from_a_secret_reference(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The key is in the environment of whoever runs helm; it must stay there.
    monkeypatch.setenv("AOD_AGENT_KEY", SENTINEL)
    rayjob = render(chart, GPU_HEAVY)[("RayJob", FULLNAME)]
    for container in containers(rayjob):
        assert container["env"] == [
            {"name": "AOD_AGENT_KEY", "valueFrom": {"secretKeyRef": {"name": "aod-agent", "key": "token"}}}
        ]
    text = rendered_text(chart, GPU_HEAVY)
    assert SENTINEL not in text
    assert "secretKeyRef" in text
    # Without a Secret the containers get no key at all.
    for container in containers(render(chart)[("RayJob", FULLNAME)]):
        assert "env" not in container


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"agentKeySecret": {"name": "aod-agent", "value": SENTINEL}},
            "at '/agentKeySecret': additional properties 'value' not allowed",
        ),
        ({"agent": {"apiKey": SENTINEL}}, "at '': additional properties 'agent' not allowed"),
        (
            {
                "partitionSpec": {
                    "defaults": {
                        "agent": {"base_url": "https://x.example/v1", "model": "m", "api_key": SENTINEL}
                    }
                }
            },
            "at '/partitionSpec/defaults/agent': additional properties 'api_key' not allowed",
        ),
        (
            {
                "partitionSpec": {
                    "defaults": {"agent": {"base_url": f"https://u:{SENTINEL}@x.example/v1", "model": "m"}}
                }
            },
            "at '/partitionSpec/defaults/agent/base_url'",
        ),
        (
            {
                "partitionSpec": {
                    "partitions": [
                        {
                            "name": "cars",
                            "schema": "schemas/cars.json",
                            **REF,
                            "agent": {"base_url": "https://x.example/v1", "model": "m", "token": SENTINEL},
                        }
                    ]
                }
            },
            "at '/partitionSpec/partitions/0/agent': additional properties 'token' not allowed",
        ),
    ],
    ids=["secret-value", "top-level-api-key", "spec-api-key", "key-in-url", "partition-token"],
)
def test_chart_rejects_an_inline_agent_key(chart: helm.Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        render(chart, values)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"worker": {"replicas": -1}}, "at '/worker/replicas': minimum: got -1, want 0"),
        ({"worker": {"minReplicas": -2}}, "at '/worker/minReplicas': minimum: got -2, want 0"),
        ({"worker": {"gpus": -1}}, "at '/worker/gpus': minimum: got -1, want 0"),
        ({"worker": {"replicas": 1.5}}, "at '/worker/replicas': got number, want integer"),
        ({"partitionSpec": None}, "at '': missing property 'partitionSpec'"),
        ({"partitionSpec": {"partitions": []}}, "at '/partitionSpec/partitions': minItems: got 0, want 1"),
        (
            {"partitionSpec": {"partitions": [{"name": "cars", "reference": "/data/r.csv", "rows": 5}]}},
            "at '/partitionSpec/partitions/0': missing property 'schema'",
        ),
        ({"image": {"repository": ""}}, "at '/image/repository': minLength: got 0, want 1"),
        ({"job": {"output": "/data/out; rm -rf /"}}, "at '/job/output'"),
        ({"storage": {"type": "existingClaim"}}, "at '/storage/existingClaim': minLength: got 0, want 1"),
        ({"storage": {"type": "s3"}}, "at '/storage/type'"),
        ({"job": {"gpusPerActor": -1}}, "at '/job/gpusPerActor': minimum: got -1, want 0"),
        ({"job": {"minActors": 0}}, "at '/job/minActors': minimum: got 0, want 1"),
    ],
    ids=[
        "negative-replicas",
        "negative-min-replicas",
        "negative-gpus",
        "fractional-replicas",
        "missing-partition-spec",
        "no-partitions",
        "partition-without-schema",
        "empty-image",
        "shell-in-output",
        "claim-without-name",
        "unknown-storage",
        "negative-gpus-per-actor",
        "no-actors",
    ],
)
def test_chart_schema_rejects_bad_values(chart: helm.Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        render(chart, values)
    assert "values don't meet the specifications of the schema" in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"worker": {"minReplicas": 5}}, "worker.minReplicas (5) must not exceed worker.maxReplicas (4)"),
        (
            {"worker": {"replicas": 9}},
            "worker.replicas (9) must lie between worker.minReplicas (0) and worker.maxReplicas (4)",
        ),
        (
            {"job": {"partition": "orders"}},
            'job.partition "orders" is not a partition of partitionSpec.partitions (cars)',
        ),
        (
            {"partitionSpec": {"partitions": [{"name": "o", "schema": "schemas/orders.json", **REF}]}},
            'partition "o" names schema "schemas/orders.json", which is neither in `schemas`',
        ),
        (
            {"partitionSpec": {"partitions": [{"name": "o", "schema": "orders.json", **REF}]}},
            'partition "o": schema "orders.json" must be schemas/<file>',
        ),
        (
            {
                "partitionSpec": {
                    "partitions": [
                        {"name": "a", "schema": "/s.json", **REF},
                        {"name": "a", "schema": "/s.json", **REF},
                    ]
                }
            },
            'partitionSpec.partitions: the name "a" is used twice',
        ),
    ],
    ids=[
        "min-above-max",
        "replicas-out-of-range",
        "unknown-partition",
        "unmounted-schema",
        "bare-schema-path",
        "duplicate-partition",
    ],
)
def test_chart_rejects_inconsistent_values(chart: helm.Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError) as caught:
        render(chart, values)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("storage", "volume"),
    [
        (
            {"type": "hostPath", "hostPath": {"path": "/mnt/aod"}},
            {"hostPath": {"path": "/mnt/aod", "type": "DirectoryOrCreate"}},
        ),
        ({"type": "none"}, None),
    ],
    ids=["host-path", "none"],
)
def test_chart_storage_variants(
    chart: helm.Chart,
    crd_validators: dict[str, jsonschema.Draft7Validator],
    storage: dict[str, Any],
    volume: dict[str, Any] | None,
) -> None:
    docs = render(chart, {"storage": storage, "job": {"output": "gs://bucket/out"}})
    assert not any(kind == "PersistentVolumeClaim" for kind, _ in docs)
    rayjob = docs[("RayJob", FULLNAME)]
    validate(rayjob, crd_validators)
    for template in ray_pod_templates(rayjob):
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in template["spec"]["containers"][0]["volumeMounts"]}
        if volume is None:
            assert "aod-data" not in volumes and "aod-data" not in mounts
        else:
            assert volumes["aod-data"] == {"name": "aod-data", **volume}
            assert mounts["aod-data"] == "/data"


def test_chart_default_storage_is_a_kept_claim(chart: helm.Chart) -> None:
    pvc = render(chart)[("PersistentVolumeClaim", f"{FULLNAME}-data")]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["spec"] == {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "100Gi"}}}


def test_chart_airflow_values_mount_what_the_release_renders(chart: helm.Chart) -> None:
    """airflow-values.yaml (for the official Airflow chart) mounts the spec folder and the
    storage of a release named `synth` exactly as its Ray pods see them, and takes its
    secrets by reference."""
    airflow = yaml.safe_load((CHART / "airflow-values.yaml").read_text())
    rayjob = render(chart)[("RayJob", FULLNAME)]
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert airflow["volumes"] == head["volumes"]
    assert airflow["volumeMounts"] == head["containers"][0]["volumeMounts"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "airflow-worker"},
        "spec": {
            "containers": [
                {"name": "base", "image": "aod-ops-airflow", "volumeMounts": airflow["volumeMounts"]}
            ],
            "volumes": airflow["volumes"],
        },
    }
    kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)
    assert {s["envName"] for s in airflow["secret"]} == {"AOD_AGENT_KEY", "AIRFLOW_CONN_AOD_RAY_DEFAULT"}
    assert all(set(s) == {"envName", "secretName", "secretKey"} for s in airflow["secret"])
