"""Speech: decoding audio, speech-to-text and text-to-speech engines, chosen in the settings."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from trainerbot.errors import SpeechUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


def load_model(what: str, load: Callable[[], T], failure: str) -> T:
    """Loads a model, logging how long it took; a failure is logged and becomes SpeechUnavailable(failure)."""
    started = time.perf_counter()
    try:
        model = load()
    except Exception as exc:
        log.error("cannot load %s: %s", what, exc)
        raise SpeechUnavailable(failure) from exc
    log.info("loaded %s in %.2f s", what, time.perf_counter() - started)
    return model


class NothingToLoad:
    """For engines whose work is done elsewhere (a web service, a program): nothing to load or let go of."""

    def load(self) -> None:
        pass

    def close(self) -> None:
        pass
