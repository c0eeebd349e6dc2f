"""Audio that users send: checked against the limits, decoded, and turned into text."""

from __future__ import annotations

import logging

from trainerbot.core.teaching import check_upload
from trainerbot.errors import NotReady
from trainerbot.speech.audio import decode
from trainerbot.speech.stt import SpeechToText, check_transcript
from trainerbot.types import Upload

log = logging.getLogger(__name__)


class Listening:
    def __init__(self, recogniser: SpeechToText | None, *, upload_limit: int, max_seconds: float) -> None:
        self.recogniser = recogniser
        self.upload_limit = upload_limit
        self.max_seconds = max_seconds

    def transcribe(self, upload: Upload) -> str:
        """The words in an audio file; a UserError says what is wrong with the file or the engine."""
        if self.recogniser is None:
            raise NotReady("I don't listen to audio here: speech recognition is turned off in my settings.")
        check_upload(upload, self.upload_limit)
        audio = decode(upload.data, upload.name, max_seconds=self.max_seconds)
        log.info("transcribing %.1f s of audio (%s)", audio.seconds, self.recogniser.name)
        transcript = self.recogniser.transcribe(audio)
        log.info("transcribed %.1f s of audio in %.2f s (%s)", audio.seconds, transcript.seconds, self.recogniser.name)
        return check_transcript(transcript, upload.name)


def quoted(transcript: str) -> str:
    """The transcript as the user sees it first: a quote, so they see what was understood."""
    return "\n".join(f"> {line}" for line in transcript.splitlines() or [""])
