"""Text helpers shared by the front ends: Discord's length limit and progress bars."""

from __future__ import annotations

import re

DISCORD_LIMIT = 2000
_FENCE = re.compile(r"^\s*```(\S*)")


def progress_bar(fraction: float, width: int = 20) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    return f"[{'█' * filled}{'░' * (width - filled)}] {fraction:.0%}"


def _hard_wrap(line: str, limit: int) -> list[str]:
    """Breaks one over-long line at spaces where it can, anywhere where it cannot."""
    pieces = []
    while len(line) > limit:
        cut = line.rfind(" ", 0, limit)
        cut = cut if cut > limit // 2 else limit
        pieces.append(line[:cut])
        line = line[cut:].lstrip(" ") if cut < limit else line[cut:]
    pieces.append(line)
    return pieces


def split_message(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """Splits text into chunks of at most ``limit`` characters, at line breaks where possible.

    A chunk that ends inside a code block closes it, and the next chunk reopens it
    with the same language, so every chunk renders on its own.
    """
    if len(text) <= limit:
        return [text] if text else []
    reserve = 8 + 20  # room for a closing fence and a reopening one with a language
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    fence: str | None = None  # the language of the open code block, "" for none given

    def flush() -> None:
        nonlocal current, size
        body = "\n".join(current)
        if fence is not None:
            body += "\n```"
        if body.strip():
            chunks.append(body)
        current = [f"```{fence}"] if fence is not None else []
        size = len(current[0]) + 1 if current else 0

    for raw in text.split("\n"):
        for line in _hard_wrap(raw, limit - reserve):
            if size + len(line) + 1 > limit - reserve and current:
                flush()
            current.append(line)
            size += len(line) + 1
            match = _FENCE.match(line)
            if match and line.strip().count("```") % 2 == 1:
                fence = None if fence is not None else match.group(1)
    if current:
        body = "\n".join(current)
        if body.strip() and body.strip() != f"```{fence}":
            chunks.append(body)
    return chunks
