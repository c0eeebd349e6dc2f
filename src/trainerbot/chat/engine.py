"""What every chat engine offers: stream a reply to a list of messages, and count tokens."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from trainerbot.errors import ChatUnavailable

__all__ = ["CUT_SHORT", "MESSAGE_OVERHEAD", "ChatEngine", "ChatMessage", "ChatUnavailable", "CutShort"]


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system", "user" or "assistant"
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


class ChatEngine(Protocol):
    name: str
    context_tokens: int  # the whole window: prompt and reply together
    parallel: int = 1  # replies it writes at once; more callers wait their turn in the bot's queue

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` takes in a prompt (an estimate where the engine cannot say)."""
        ...

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int, cancel: threading.Event) -> Iterator[str]:
        """Yields the reply piece by piece; stops early once ``cancel`` is set. Raises ChatUnavailable."""
        ...

    def load(self) -> None:
        """Does whatever is slow to start (loading a model); called in a thread at start-up."""
        ...

    def close(self) -> None: ...


class CutShort(str):
    """The last piece of a reply that reached the length limit mid-way: its own type, so that a model's own " …"
    is never taken for it. A reader of the raw stream sees an ellipsis; the front ends put a note instead."""


CUT_SHORT = CutShort(" …")

# Tokens a chat template adds around each message (role markers, separators); a safe upper bound.
MESSAGE_OVERHEAD = 8
