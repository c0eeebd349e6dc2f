"""Test doubles, each standing in for a piece that cannot be made to behave a given way for real."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import discord

from trainerbot.chat.engine import ChatEngine, ChatMessage
from trainerbot.errors import ChatUnavailable


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


class LoopbackVoiceClient(discord.VoiceProtocol):
    """A test double of discord.py's ``VoiceClient``, which needs a voice server the fake Discord lacks.

    It joins and leaves through the real gateway (op 4, answered by the fake with the bot's
    voice state), and plays an ``AudioSource`` the way discord.py's player thread does: one
    ``read()`` every 20 ms until an empty one. It keeps every frame, in order, with the sources.
    """

    def __init__(self, client: discord.Client, channel: discord.abc.Connectable) -> None:
        super().__init__(client, channel)
        self.plays: list[tuple[discord.AudioSource, list[bytes]]] = []  # each source and the frames read from it
        self.overlaps = 0  # play() called while still playing: replies spoken over each other
        self._playing = threading.Event()
        self._stop = threading.Event()

    async def connect(
        self, *, timeout: float, reconnect: bool, self_deaf: bool = False, self_mute: bool = False
    ) -> None:
        await self.channel.guild.change_voice_state(channel=self.channel, self_deaf=self_deaf, self_mute=self_mute)

    async def disconnect(self, *, force: bool = False) -> None:
        self._stop.set()
        await self.channel.guild.change_voice_state(channel=None)
        self.cleanup()

    async def on_voice_state_update(self, data: dict) -> None:
        pass

    async def on_voice_server_update(self, data: dict) -> None:
        pass

    def is_connected(self) -> bool:
        return True

    def is_playing(self) -> bool:
        return self._playing.is_set()

    def stop(self) -> None:
        self._stop.set()

    def play(self, source: discord.AudioSource, *, after=None) -> None:
        if self._playing.is_set():
            self.overlaps += 1
        frames: list[bytes] = []
        self.plays.append((source, frames))
        self._playing.set()
        self._stop.clear()

        def run() -> None:
            error = None
            due = time.perf_counter()
            try:
                while not self._stop.is_set():
                    frame = source.read()
                    if not frame:
                        break
                    frames.append(frame)
                    due += 0.02
                    time.sleep(max(0.0, due - time.perf_counter()))
            except Exception as exc:
                error = exc
            finally:
                self._playing.clear()
                if after is not None:
                    after(error)

        threading.Thread(target=run, name="voice-double", daemon=True).start()
