"""The Airflow 3 provider of aod_ops: hooks, operators and a trigger for AoD synthesis.

Airflow finds it through the ``apache_airflow_provider`` entry point, which names
``get_provider_info``. Two connection types come with it: ``aod`` (the model endpoints: the DLM
backend, the agent's OpenAI-compatible endpoint and model, its API key in the password field) and
``aod_ray`` (a Ray cluster's Jobs API address; named ``ray`` before, which the official Ray
provider also registers). Their form fields are declared here, the way Airflow 3.2+ reads them,
and the hooks return the same declarations from ``get_ui_field_behaviour``.
"""

from __future__ import annotations

from typing import Any

from aod_ops import __version__

#: The ``aod`` connection's form: standard fields shown, hidden and relabelled.
AOD_UI_FIELDS: dict[str, Any] = {
    "hidden-fields": ["schema", "login"],
    "relabeling": {"host": "Agent base URL", "port": "Agent port", "password": "Agent API key"},
    "placeholders": {
        "host": "http://vllm:8000/v1 (empty: the local SmolLM2 agent)",
        "password": "sent as a Bearer token to the agent endpoint",
    },
}
#: The ``aod`` connection's own fields, stored in its extra JSON.
AOD_EXTRA_FIELDS: dict[str, Any] = {
    "agent_model": {
        "label": "Agent model",
        "description": "The model the agent endpoint serves (needed with an agent base URL).",
        "schema": {"type": ["string", "null"]},
    },
    "dlm": {
        "label": "DLM",
        "description": "A built-in DLM (aod-smol-dlm, tiny-random) or a local model folder; with a DLM "
        "server URL, the model the server serves. Empty keeps the spec's.",
        "schema": {"type": ["string", "null"]},
    },
    "dlm_base_url": {
        "label": "DLM server URL",
        "description": "An OpenAI-compatible DLM server (e.g. SGLang serving LLaDA2) instead of a local "
        "model, with DLM naming the model it serves. Free mode only (the spec's decoding mode must be "
        "free); the optimize and synthesize tasks both use it (synthesis actors call the server).",
        "schema": {"type": ["string", "null"], "format": "url"},
    },
    "trust_remote_code": {
        "label": "Trust remote code",
        "description": "Allow a local LLaDA/Dream folder to run its own model code.",
        "schema": {"type": "boolean", "default": False},
    },
}
#: The ``aod_ray`` connection's form.
RAY_UI_FIELDS: dict[str, Any] = {
    "hidden-fields": ["schema", "login"],
    "relabeling": {"host": "Dashboard address", "port": "Dashboard port", "password": "Auth token"},
    "placeholders": {
        "host": "http://ray-head:8265",
        "password": "the cluster's RAY_AUTH_TOKEN (token auth), or a proxy's bearer token",
    },
}
RAY_EXTRA_FIELDS: dict[str, Any] = {
    "verify": {
        "label": "Verify TLS",
        "description": "Check the dashboard's TLS certificate.",
        "schema": {"type": "boolean", "default": True},
    },
}


def get_provider_info() -> dict[str, Any]:
    """The provider's description for Airflow's providers manager."""
    return {
        "package-name": "aod-ops",
        "name": "Agents of Diffusion (aod_ops)",
        "description": "Privacy-safe synthetic tables from JSON Schemas with diffusion language models: "
        "prompt optimization, Ray synthesis and Great Expectations validation per schema partition.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": "Agents of Diffusion", "tags": ["ai", "synthetic-data"]},
            {"integration-name": "Ray", "tags": ["compute"]},
        ],
        "hooks": [
            {"integration-name": "Agents of Diffusion", "python-modules": ["aod_ops.airflow.hooks"]},
        ],
        "operators": [
            {"integration-name": "Agents of Diffusion", "python-modules": ["aod_ops.airflow.operators"]},
        ],
        "triggers": [
            {"integration-name": "Ray", "python-modules": ["aod_ops.airflow.triggers"]},
        ],
        "connection-types": [
            {
                "connection-type": "aod",
                "hook-class-name": "aod_ops.airflow.hooks.AoDHook",
                "hook-name": "Agents of Diffusion model endpoints",
                "ui-field-behaviour": AOD_UI_FIELDS,
                "conn-fields": AOD_EXTRA_FIELDS,
            },
            {
                "connection-type": "aod_ray",
                "hook-class-name": "aod_ops.airflow.hooks.RayHook",
                "hook-name": "Ray cluster (Jobs API)",
                "ui-field-behaviour": RAY_UI_FIELDS,
                "conn-fields": RAY_EXTRA_FIELDS,
            },
        ],
    }
