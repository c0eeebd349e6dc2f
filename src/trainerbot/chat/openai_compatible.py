"""Any OpenAI-compatible server as the chat engine: OpenAI, Ollama, vLLM, LM Studio, llama.cpp's server.

It speaks through the official ``openai`` client. Each failure the client can report is
turned into one short sentence for the user; the cause goes to the log, never the API key.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator, Sequence

import openai

from trainerbot.chat.engine import CUT_SHORT, ChatMessage
from trainerbot.errors import ChatUnavailable
from trainerbot.remote import client, trouble

log = logging.getLogger(__name__)

CHARACTERS_PER_TOKEN = 3.0  # a cautious estimate: English runs nearer 4 characters a token


class OpenAIEngine:
    name = "openai"

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        context_tokens: int = 2048,
        timeout: float = 60.0,
        temperature: float = 0.7,
        streaming: bool = True,
        parallel: int = 4,
        extra_body: dict[str, object] | None = None,
    ) -> None:
        self.model = model
        self.extra_body = extra_body  # fields the server understands beyond OpenAI's (llama-server's sampling)
        self.parallel = parallel
        self.context_tokens = context_tokens
        self.temperature = temperature
        self.streaming = streaming
        self._where = base_url or "api.openai.com"
        self._client = client(base_url, api_key, timeout)

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text) / CHARACTERS_PER_TOKEN)

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        cancel: threading.Event,
        extra_body: dict[str, object] | None = None,
    ) -> Iterator[str]:
        """``extra_body``: fields for this request alone, beside the engine's own."""
        payload = [m.as_dict() for m in messages]
        extra_body = {**(self.extra_body or {}), **(extra_body or {})} or None
        try:
            if not self.streaming:
                response = self._client.chat.completions.create(
                    model=self.model,
                    messages=payload,
                    max_tokens=max_tokens,
                    temperature=self.temperature,
                    extra_body=extra_body,
                )
                choice = response.choices[0] if response.choices else None
                if choice is not None and choice.message.content:
                    yield choice.message.content
                if choice is not None and choice.finish_reason == "length":
                    yield CUT_SHORT
                return
            with self._client.chat.completions.create(
                model=self.model,
                messages=payload,
                max_tokens=max_tokens,
                temperature=self.temperature,
                stream=True,
                extra_body=extra_body,
            ) as chunks:
                for chunk in chunks:
                    if cancel.is_set():
                        return
                    choice = chunk.choices[0] if chunk.choices else None
                    if choice is not None and choice.delta.content:
                        yield choice.delta.content
                    if choice is not None and choice.finish_reason == "length":
                        yield CUT_SHORT
        except openai.OpenAIError as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: openai.OpenAIError) -> ChatUnavailable:
        log.warning("chat server %s (model %s) failed: %s: %s", self._where, self.model, type(exc).__name__, exc)
        return ChatUnavailable(trouble(exc, "The chat server", self.model))

    def load(self) -> None:
        """Nothing to load: the server holds the model."""

    def close(self) -> None:
        self._client.close()
