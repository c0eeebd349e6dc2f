"""Speech to text on an OpenAI-compatible server (TRAINERBOT_STT_ENGINE=openai).

The server is real: faster-whisper-server (PyPI, MIT), which `make test` installs in an environment
of its own, started here on 127.0.0.1 with the Whisper model the bot bundles. The failures are
real servers too: a closed port, and small aiohttp servers that answer an error or too slowly.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.loopback_discord.server import one_route_on_loopback
from trainerbot.config import load_settings
from trainerbot.errors import SpeechUnavailable
from trainerbot.speech.audio import decode
from trainerbot.speech.stt import OpenAISpeechEngine, build_recogniser, bundled_whisper_path

ROOT = Path(__file__).resolve().parents[1]
SPEECH_SERVER = ROOT / ".venv" / "opt" / "faster-whisper-server" / "bin" / "faster-whisper-server"
AUDIO = Path(__file__).parent / "data" / "audio"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def speech_server() -> Iterator[str]:
    """faster-whisper-server on a free loopback port with the bundled tiny.en; yields its /v1 base URL."""
    if not SPEECH_SERVER.exists():
        pytest.fail(f"{SPEECH_SERVER} is missing: `make test` installs it (make speech-server)", pytrace=False)
    model = bundled_whisper_path()
    assert model is not None, "the bundled Whisper model is not installed"
    port = free_port()
    process = subprocess.Popen(
        [str(SPEECH_SERVER), str(model), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the speech server exited at start"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the speech server did not listen within 60 s"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)


def clip(name: str) -> tuple[bytes, str]:
    transcripts = [json.loads(line) for line in (AUDIO / "transcripts.jsonl").read_text().splitlines() if line]
    [said] = [t["transcript"] for t in transcripts if t["file"] == name]
    return (AUDIO / name).read_bytes(), said


def test_a_recording_is_transcribed_by_the_speech_server(speech_server: str) -> None:
    data, said = clip("jfk.wav")
    settings = load_settings(_env_file=None, stt_engine="openai", stt_base_url=speech_server, stt_model="tiny.en")
    engine = build_recogniser(settings)
    assert isinstance(engine, OpenAISpeechEngine)
    try:
        transcript = engine.transcribe(decode(data, "jfk.wav", max_seconds=60))
    finally:
        engine.close()
    heard = transcript.text.lower()
    for word in ("ask not what your country can do for you", "what you can do for your country"):
        assert word in heard.replace(",", ""), (heard, said)


def test_a_speech_server_that_is_down_is_said_plainly() -> None:
    engine = OpenAISpeechEngine(model="whisper-1", base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=5)
    data, _ = clip("cards_001.wav")
    with pytest.raises(SpeechUnavailable, match="The speech server can't be reached right now"):
        engine.transcribe(decode(data, "cards_001.wav", max_seconds=60))


async def test_a_failing_or_slow_speech_server_is_said_plainly() -> None:
    async def broken(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"error": {"message": "model crashed"}}, status=500)

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(5)
        return web.json_response({"text": "too late"})

    data, _ = clip("cards_001.wav")
    audio = decode(data, "cards_001.wav", max_seconds=60)
    for handler, said in (
        (broken, "The speech server answered with an error (HTTP 500)"),
        (slow, "The speech server took too long to answer"),
    ):
        async for base_url in one_route_on_loopback("/v1/audio/transcriptions", handler):
            engine = OpenAISpeechEngine(model="whisper-1", base_url=base_url, timeout=1)
            with pytest.raises(SpeechUnavailable, match=re.escape(said)):
                await asyncio.to_thread(engine.transcribe, audio)
            engine.close()


def test_openai_itself_needs_a_key() -> None:
    from trainerbot.config import SettingsError

    with pytest.raises(SettingsError, match="TRAINERBOT_STT_API_KEY"):
        load_settings(_env_file=None, stt_engine="openai")
