"""Test doubles, each standing in for a piece that cannot be made to behave a given way for real."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from trainerbot.chat.engine import ChatEngine, ChatMessage
from trainerbot.core.errors import ChatUnavailable


class ScriptedEngine(ChatEngine):
    """A chat engine that streams a fixed text in fixed pieces at a fixed pace.

    A test double: the real model cannot be made to write a given 5,000-character reply with
    code blocks, or to fail half-way through one. It records the prompts it was given.
    """

    name = "scripted"

    def __init__(self, text: str, *, piece: int = 40, delay: float = 0.0, fail_after: int | None = None) -> None:
        self.text = text
        self.piece = piece
        self.delay = delay
        self.fail_after = fail_after
        self.context_tokens = 4096
        self.prompts: list[list[ChatMessage]] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 1

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int, cancel: threading.Event) -> Iterator[str]:
        self.prompts.append(list(messages))
        for start in range(0, len(self.text), self.piece):
            if cancel.is_set():
                return
            if self.fail_after is not None and start >= self.fail_after:
                raise ChatUnavailable("The chat engine failed while writing; the owners can find why in the log.")
            time.sleep(self.delay)
            yield self.text[start : start + self.piece]

    def load(self) -> None:
        pass

    def close(self) -> None:
        pass
