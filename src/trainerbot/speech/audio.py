"""Decoding audio of any common format (through PyAV, FFmpeg's libraries) within a length limit."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import av
import numpy as np

from trainerbot.errors import InvalidInput, TooLarge

SPEECH_RATE = 16_000  # what speech recognisers read: 16 kHz mono
AUDIO_EXTENSIONS = (".ogg", ".oga", ".opus", ".mp3", ".wav", ".m4a", ".webm", ".flac", ".aac", ".mp4")


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32 in [-1, 1], mono
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate

    def pcm16(self) -> bytes:
        return (np.clip(self.samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def is_audio(name: str, content_type: str | None = None) -> bool:
    return bool(content_type and content_type.startswith("audio/")) or name.lower().endswith(AUDIO_EXTENSIONS)


def decode(data: bytes, name: str, *, max_seconds: float, rate: int = SPEECH_RATE) -> Audio:
    """Decodes a file to mono float samples at ``rate``; stops as soon as it is longer than allowed.

    The declared duration is not trusted (a file can lie, or have none): samples are
    counted as they are decoded, so a file that decodes to hours costs only the limit.
    """
    limit = int(max_seconds * rate)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise InvalidInput(f"{name} has no sound in it.")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    total += len(chunk)
                    if total > limit:
                        raise TooLarge(f"{name} is longer than {_minutes(max_seconds)}, the limit for audio.")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except (av.FFmpegError, ValueError, IndexError) as exc:
        raise InvalidInput(f"{name} could not be read as audio ({type(exc).__name__}).") from None
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, dtype=np.float32)
    if len(samples) == 0:
        raise InvalidInput(f"{name} has no sound in it.")
    return Audio(samples, rate)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 60 else f"{seconds:g} seconds"


DISCORD_RATE = 48_000  # Discord plays 48 kHz stereo 16-bit PCM in 20 ms frames
FRAME_BYTES = DISCORD_RATE // 50 * 2 * 2  # 960 samples x 2 channels x 2 bytes = 3840


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """A WAV file of 16-bit mono samples."""
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(pcm)
    return out.getvalue()


def discord_frames(pieces: Iterable[tuple[bytes, int]]) -> Iterator[bytes]:
    """16-bit mono speech pieces, (samples, rate), as Discord's 20 ms frames; the last is padded with silence."""
    pending = b""
    for pcm, rate in pieces:
        frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono")
        frame.rate = rate
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=DISCORD_RATE)  # flushed for each piece
        for out in [*resampler.resample(frame), *resampler.resample(None)]:
            pending += out.to_ndarray().tobytes()
        while len(pending) >= FRAME_BYTES:
            yield pending[:FRAME_BYTES]
            pending = pending[FRAME_BYTES:]
    if pending:
        yield pending.ljust(FRAME_BYTES, b"\0")
