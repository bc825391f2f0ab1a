"""A DLM behind a server: free-mode text from an OpenAI-compatible endpoint (SGLang serving LLaDA2).

The server runs the model and its own diffusion sampler; ``DLMServer`` sends it the rendered
prompt as the user's message, one chat completion per record, and ``Generator`` parses and
validates each reply exactly as a local model's free-mode text. A batch's requests are sent
together, so the server can batch them as a local sampler would. Skeleton mode needs the model's
scores over a record's slots and choices, which a chat API does not return: a server writes free
mode only, and asking it for a skeleton is refused. The HTTP client (retries, timeouts, the API
key) is the agents' ``OpenAIChat``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from aod_ops.agents.chat import OpenAIChat
from aod_ops.dlm.settings import DecodingSettings
from aod_ops.errors import ModelError

if TYPE_CHECKING:
    from aod_ops.spec import DLMSetting


class DLMServer:
    """A DLM served over an OpenAI-compatible chat API, for free-mode generation.

    The decoding settings it sends are ``max_new_tokens`` (as ``max_tokens``), ``temperature`` and
    each record's seed; the sampler's steps, block length and commit order are the server's own
    (SGLang sets them when it starts).

    :param chat: the endpoint's client.
    """

    def __init__(self, chat: OpenAIChat) -> None:
        self.chat = chat

    @classmethod
    def from_setting(cls, setting: DLMSetting) -> DLMServer:
        """The server a ``dlm`` setting with a ``base_url`` names."""
        if setting.base_url is None:
            raise ValueError("a DLM server needs the setting's base_url")
        chat = OpenAIChat(
            setting.base_url,
            setting.model,
            setting.api_key_env,
            setting.timeout,
            setting.retries,
            kind="DLM server",
        )
        return cls(chat)

    @property
    def url(self) -> str:
        """The chat completions URL the requests go to."""
        return self.chat.url

    def texts(self, prompt: str, seeds: Sequence[int], settings: DecodingSettings) -> list[str]:
        """The server's reply to ``prompt`` for each seed, in order.

        :raises ModelError: in skeleton mode, or when a request fails (naming the URL).
        """
        if settings.mode != "free":
            raise ModelError(
                f"DLM server {self.url}: a server writes free mode only (a chat API cannot infill a "
                f"skeleton), and the mode is {settings.mode!r}: use mode: free"
            )
        messages = [{"role": "user", "content": prompt}]

        def reply(seed: int) -> str:
            return self.chat.complete(messages, settings.max_new_tokens, settings.temperature, seed=seed)

        if not seeds:
            return []
        with ThreadPoolExecutor(max_workers=len(seeds), thread_name_prefix="dlm-server") as pool:
            return list(pool.map(reply, seeds))
