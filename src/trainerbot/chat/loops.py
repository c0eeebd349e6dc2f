"""Stops a reply that starts going round in circles, and ends it cleanly.

Small models fall into loops: the same line again and again, a phrase repeated, forty of one
emoji. Sampling penalties make loops rarer but not impossible, so the reply is also watched as
it streams. Whatever the reply is writing that repeats something it wrote before is held back
(usually a few characters: prose repeats short pieces all the time); as soon as it differs, it
is let through. When the repeat grows into a loop (``LOOP_CHARS`` characters copied from
earlier in the reply, a line written ``LONG_TIMES`` times in a row, or one short piece
``LOOP_TIMES`` times) the held text
is dropped, the model is stopped, and the reply ends before the loop began. List numbers do not
count, so "1. Be kind" and "2. Be kind" are the same line.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterator

from trainerbot.chat.engine import CutShort

log = logging.getLogger(__name__)

LOOP_CHARS = 100  # characters repeated verbatim from earlier in the reply: a loop of lines or sentences
LOOP_TIMES = 5  # a short piece (up to SHORT characters) written this many times in a row: a loop of words or emoji
SHORT = 16
LONG_TIMES = 3  # a longer piece (a line, a sentence) written this many times in a row
_LIST_NUMBER = re.compile(r"(?m)^([ \t]*)(\d+)(?=[.)]|\Z)")  # at the very end: perhaps one


def _shape(text: str) -> str:
    """The text with each list line's number as zeros, the same length: "1. Be kind" and "2. Be kind" match."""
    return _LIST_NUMBER.sub(lambda m: m.group(1) + "0" * len(m.group(2)), text)


def _meaningful(piece: str) -> bool:
    """Whether a piece has a letter or a symbol such as an emoji: runs of `-`, `=` or `.` are layout, not loops."""
    return any(ch.isalpha() or unicodedata.category(ch) == "So" for ch in piece)


def _period(held: str) -> int:
    """The shortest p such that ``held`` is one piece of p characters over and over, else 0."""
    for p in range(1, len(held) // 2 + 1):
        if held[p:] == held[:-p]:
            return p
    return 0


class LoopWatch:
    """Follows a reply piece by piece: ``feed`` returns what may be shown now, or None once it loops.

    The part held back is the longest ending of the reply that also starts earlier in it; for a
    loop that is every copy after the first, so what was shown ends where the loop began.
    """

    def __init__(self) -> None:
        self.text = ""  # the reply so far, shown and held
        self._shape = ""
        self.held_from = 0  # text[held_from:] repeats something earlier in the reply: not shown yet
        self._shown = 0  # text[:_shown] was given out

    def feed(self, piece: str) -> str | None:
        """Takes the next piece; returns the text that may be shown now, or None once the reply loops."""
        self.text += piece
        self._shape = _shape(self.text)  # a whole line's start decides its shape
        while self.held_from < len(self.text) and self._shape.find(self._shape[self.held_from :]) >= self.held_from:
            self.held_from += 1
        if self.looping():
            return None
        return self._release(self.held_from)

    def _release(self, end: int) -> str:
        released, self._shown = self.text[self._shown : end], max(self._shown, end)
        return released

    def looping(self) -> bool:
        held = self._shape[self.held_from :]
        if len(held) >= LOOP_CHARS:
            return True
        p = _period(held)
        times = LOOP_TIMES if p <= SHORT else LONG_TIMES
        return bool(p) and len(held) + p >= p * times and _meaningful(held[:p])

    def rest(self) -> str:
        """What is left to show when the reply ends without a loop: everything."""
        return self._release(len(self.text))

    def before_loop(self) -> str:
        """What is left to show of the reply before its loop began."""
        return self._release(self.held_from)


def stop_loops(pieces: Iterator[str]) -> Iterator[str]:
    """``pieces`` with any loop cut off: the model is stopped and the reply ends before the loop began."""
    watch = LoopWatch()
    for piece in pieces:
        if isinstance(piece, CutShort):  # the length limit: whatever was held is no loop
            if rest := watch.rest():
                yield rest
            yield piece
            return
        shown = watch.feed(piece)
        if shown is None:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
            if last := watch.before_loop():
                yield last
            kept = watch.text[: watch.held_from]
            if kept.count("```") % 2:
                yield "```" if kept.endswith("\n") else "\n```"  # the loop was inside a code block: close it
            log.info("a reply went into a loop after %d characters; it ends there", len(kept))
            return
        yield shown  # even when empty: the reply is still on its way (the stall timeout counts pieces)
    if rest := watch.rest():
        yield rest
