"""Bringing a reply that a chat engine writes in a worker thread to the event loop, piece by piece."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import cast

from trainerbot.errors import ChatUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_DONE = object()


async def pieces_from_thread(
    write: Callable[[threading.Event], Iterator[str]], *, stall_timeout: float
) -> AsyncIterator[str]:
    """Runs ``write(cancel)`` in its own thread and yields what it writes.

    Raises ChatUnavailable when nothing arrives for ``stall_timeout`` seconds. Leaving the
    loop early (an error, a timeout, the task cancelled) sets ``cancel``, and the engine
    stops at its next token instead of writing on for nobody.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    cancel = threading.Event()

    def put(item: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed while the engine was still writing
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def produce() -> None:
        try:
            with contextlib.closing(write(cancel)) as pieces:  # type: ignore[type-var]
                for piece in pieces:
                    put(piece)
                    if cancel.is_set():
                        break
        except BaseException as exc:
            put(_Failed(exc))
        else:
            put(_DONE)

    threading.Thread(target=produce, name="chat-reply", daemon=True).start()
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), stall_timeout)
            except TimeoutError:
                log.warning("the chat engine wrote nothing for %.0f s; giving up on this reply", stall_timeout)
                raise ChatUnavailable("The chat engine took too long to answer. Try again in a moment.") from None
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                if isinstance(item.error, ChatUnavailable):
                    raise item.error
                log.error("the chat engine failed", exc_info=item.error)
                raise ChatUnavailable("The chat engine failed while writing; the owners can find why in the log.")
            yield cast(str, item)  # as the engine wrote it: not str(item), which would lose ``CutShort``
    finally:
        cancel.set()
