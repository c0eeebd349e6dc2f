"""Text helpers shared by the front ends: Discord's length limit and progress bars.

Long replies are cut into pages of at most 2000 characters. A cut prefers, in order: a
blank line, a line break, the end of a sentence, all outside code blocks; only a code
block too long for one page is cut inside, at a line break, and then the page closes
the block and the next page reopens it with the same language.

``PageSplitter`` does this for a reply that is still being written (a streamed chat
reply): a page is cut as soon as the text after it is known to be long enough, and
cut exactly where ``split_message`` would cut the finished text, so pages already
sent never change.
"""

from __future__ import annotations

import re

DISCORD_LIMIT = 2000
_FENCE = re.compile(r"^[ \t]*```(\S*)")
_SENTENCE_END = re.compile(r"[.!?…][)\]\"'»”’]*(?= )")
_CLOSE = "\n```"

# Cut ranks, best first.
_PARAGRAPH, _LINE, _SENTENCE, _CODE_LINE, _SPACE, _CODE_SPACE, _HARD = range(7)


_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """The text with each lone surrogate (JSON can carry one; UTF-8 and SQLite cannot) made U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def count(n: int, one: str, many: str | None = None) -> str:
    """``n`` and the word for that many: "1 example", "3 examples", "2 people"."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def short(text: str, limit: int = 80) -> str:
    """People's words shown inside inline code: on one line, without backticks, cut to ``limit`` characters."""
    text = " ".join(text.split()).replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def about(seconds: float | None) -> str:
    """A wait in words, as a parenthesis to add to a sentence: " (about 40 seconds)"; nothing for None."""
    if seconds is None:
        return ""
    if seconds < 10:
        return " (a few seconds)"
    if seconds < 90:
        return f" (about {round(seconds / 10) * 10} seconds)"
    return f" (about {count(round(seconds / 60), 'minute')})"


def progress_bar(fraction: float, width: int = 20) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    return f"[{'█' * filled}{'░' * (width - filled)}] {fraction:.0%}"


def _toggles(line: str) -> str | None:
    """The language if this line opens or closes a code block, else None."""
    match = _FENCE.match(line)
    return match.group(1) if match and line.strip().count("```") % 2 == 1 else None


def _fence_at_end(text: str, fence: str | None) -> str | None:
    """Which code block (its language, "" for none given) is open after ``text``, or None."""
    for line in text.split("\n"):
        language = _toggles(line)
        if language is not None:
            fence = language if fence is None else None
    return fence


def _head(fence: str | None) -> str:
    return f"```{fence}\n" if fence is not None else ""


def _best_cut(window: str, room: int, fence: str | None) -> tuple[int, str | None]:
    """Where to end a page whose text starts with ``window``; returns the cut and the block open there.

    ``room`` is how many characters of the text fit on the page. Only ``window`` (``room`` + 2
    characters) is looked at, which is what makes a streamed cut equal the finished one. A page
    is not cut short (under a quarter of the room outside code, half inside) unless the cut
    keeps a code block from being split that would otherwise not fit on this page.
    """
    lines = window.split("\n")
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    candidates: list[tuple[int, int, str | None, float]] = []  # (rank, position, block open there, least share)
    for number, (line, start) in enumerate(zip(lines, starts, strict=True)):
        end = start + len(line)
        inside = fence is not None
        for space in (m.start() for m in re.finditer(" ", line)):
            position = start + space
            if position + (len(_CLOSE) if inside else 0) <= room:
                candidates.append((_CODE_SPACE if inside else _SPACE, position, fence, 0.5))
        if not inside:
            for match in _SENTENCE_END.finditer(line):
                if start + match.end() <= room:
                    candidates.append((_SENTENCE, start + match.end(), None, 0.25))
        language = _toggles(line)
        if language is not None and fence is None and start > 0:
            closing = next((n for n in range(number + 1, len(lines)) if _toggles(lines[n]) is not None), None)
            if closing is None or starts[closing] + len(lines[closing]) > room:  # the block won't fit here
                candidates.append((_PARAGRAPH, start - 1, None, 0.0))
        if language is not None:
            fence = language if fence is None else None
        if end < len(window):  # a line break follows this line
            if fence is None:
                blank_next = window[end + 1 : end + 2] == "\n" or line.strip() == ""
                if end <= room:
                    candidates.append((_PARAGRAPH if blank_next else _LINE, end, None, 0.25))
            elif end + len(_CLOSE) <= room:
                candidates.append((_CODE_LINE, end, fence, 0.5))
    good = [
        (rank, position, open_fence)
        for rank, position, open_fence, share in candidates
        if window[:position].strip() and position >= room * share
    ]
    if good:
        rank = min(c[0] for c in good)
        _, position, open_fence = max(c for c in good if c[0] == rank)
        return position, open_fence
    # One word longer than a page: cut it where the page ends, leaving room to close a code block.
    hard = room
    if _fence_at_end(window[:hard], fence) is not None:
        hard -= len(_CLOSE)
    return hard, _fence_at_end(window[:hard], fence)


def _take_page(rest: str, limit: int, fence: str | None) -> tuple[str, int, str | None]:
    """Cuts the first page off ``rest``: its text, how much of ``rest`` it used, the block left open."""
    head = _head(fence)
    room = limit - len(head)
    position, open_fence = _best_cut(rest[: room + 2], room, fence)
    body = rest[:position]
    body = body.rstrip("\n") if open_fence is not None else body.rstrip()
    page = head + body + (_CLOSE if open_fence is not None else "")
    # Whitespace at the cut is dropped, but inside a code block only the line break: indentation counts.
    skip = position
    if open_fence is not None:
        skip += 1 if rest[skip : skip + 1] in ("\n", " ") else 0
    else:
        while skip < len(rest) and rest[skip] in " \n":
            skip += 1
    return page, skip, open_fence


def _fits(rest: str, limit: int, fence: str | None) -> bool:
    tail = _CLOSE if _fence_at_end(rest, fence) is not None else ""
    return len(_head(fence)) + len(rest) + len(tail) <= limit


class PageSplitter:
    """Pages of a reply that grows; ``pages`` holds the full ones, which never change."""

    def __init__(self, limit: int = DISCORD_LIMIT) -> None:
        self.limit = limit
        self.pages: list[str] = []
        self._text = ""
        self._used = 0  # how much of the text the full pages took
        self._fence: str | None = None  # the code block open where the unfinished page starts

    def feed(self, text: str) -> None:
        """Takes the whole reply so far (each call extends the previous text)."""
        self._text = text
        # Cut only with two characters beyond the page known: the cut then cannot depend on what comes next.
        while len(_head(self._fence)) + len(text) - self._used > self.limit + 2:
            self._cut()

    def _cut(self) -> None:
        page, used, self._fence = _take_page(self._text[self._used :], self.limit, self._fence)
        self.pages.append(page)
        self._used += used

    @property
    def current(self) -> str:
        """The unfinished page as it can be shown now: an open code block is closed for display."""
        rest = self._text[self._used :]
        tail = _CLOSE if _fence_at_end(rest, self._fence) is not None else ""
        return (_head(self._fence) + rest.rstrip() + tail)[: self.limit] if rest.strip() else ""

    def finish(self) -> list[str]:
        """Every page of the finished text."""
        while not _fits(self._text[self._used :], self.limit, self._fence):
            self._cut()
        last = self.current
        return [*self.pages, last] if last else list(self.pages)


def split_message(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """Splits text into pages of at most ``limit`` characters (see the module's docstring)."""
    splitter = PageSplitter(limit)
    splitter.feed(text)
    return splitter.finish()
