"""Speaking in a voice channel: one queue of replies per server, spoken a sentence at a time.

discord.py's player thread reads 20 ms of 48 kHz stereo PCM from an ``AudioSource`` every
20 ms. ``SpeechSource`` hands it frames that a worker thread makes from the voice engine's
sentences as they come, so the first sentence plays while the rest is still being made.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time

import discord

from trainerbot.errors import UserError
from trainerbot.speech.audio import FRAME_BYTES, discord_frames
from trainerbot.speech.tts import TextToSpeech, speakable

log = logging.getLogger(__name__)
_END = b""


class SpeechSource(discord.AudioSource):
    """Frames of one reply, filled by a worker thread and read by discord.py's player thread."""

    def __init__(self) -> None:
        self._frames: queue.Queue[bytes] = queue.Queue()
        self.underruns = 0  # reads that found no frame ready: silence was played instead

    def push(self, frame: bytes) -> None:
        self._frames.put(frame)

    def finish(self) -> None:
        self._frames.put(_END)

    def read(self) -> bytes:
        try:
            return self._frames.get(timeout=0.02)
        except queue.Empty:
            self.underruns += 1
            return b"\0" * FRAME_BYTES  # the next sentence is late: a moment of silence, not the end

    def is_opus(self) -> bool:
        return False


class Speaker:
    """Speaks one server's replies in its voice channel, one after another, never over each other."""

    def __init__(self, voice_client: discord.VoiceProtocol, voice: TextToSpeech) -> None:
        self.client = voice_client
        self.voice = voice
        self.last_active = time.monotonic()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._task = asyncio.create_task(self._speak_all(), name="speaker")

    @property
    def channel(self) -> discord.abc.Connectable:
        return self.client.channel

    def say(self, text: str) -> None:
        """Queues text to be spoken; code, links and markdown marks are left out."""
        text = speakable(text)
        if text:
            self.last_active = time.monotonic()
            self._queue.put_nowait(text)

    @property
    def idle(self) -> bool:
        return self._queue.empty() and not self.client.is_playing()  # type: ignore[attr-defined]

    async def _speak_all(self) -> None:
        while True:
            text = await self._queue.get()
            try:
                await self._speak(text)
            except Exception:
                log.exception("could not speak a reply in %s", self.channel)
            self.last_active = time.monotonic()

    async def _speak(self, text: str) -> None:
        loop = asyncio.get_running_loop()
        source = SpeechSource()
        done = asyncio.Event()

        def make_frames() -> None:
            try:
                for frame in discord_frames((piece.pcm, piece.rate) for piece in self.voice.speak(text)):
                    source.push(frame)
            except UserError as exc:
                log.warning("not spoken: %s", exc)
            except Exception:
                log.exception("the voice failed")
            finally:
                source.finish()

        threading.Thread(target=make_frames, name="speech-frames", daemon=True).start()

        def after(error: Exception | None) -> None:
            if error is not None:
                log.error("playing speech failed: %r", error)
            loop.call_soon_threadsafe(done.set)

        self.client.play(source, after=after)  # type: ignore[attr-defined]
        await done.wait()

    async def close(self) -> None:
        self._task.cancel()
        if self.client.is_playing():  # type: ignore[attr-defined]
            self.client.stop()  # type: ignore[attr-defined]
        await self.client.disconnect(force=True)
