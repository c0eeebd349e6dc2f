"""Heavy work in turns: a few tasks at once, the rest waiting in arrival order, a few per person.

The engines already do one thing at a time behind their own locks, but a caller blocked on such
a lock holds a worker thread and says nothing. A ``WorkQueue`` makes callers wait on the event
loop instead, tells each one its place in line when it has to wait, and keeps one person from
filling the line.
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from trainerbot.errors import UserError

log = logging.getLogger(__name__)

RECENT = 20  # turns whose length the wait estimate is the median of
OnWait = Callable[[int], Awaitable[None]]


class Busy(UserError):
    """The caller already has as many requests in this queue as one person may."""


class WorkQueue:
    """At most ``capacity`` turns at once; others wait first come, first served.

    ``per_user`` bounds the requests one person may have in the queue, running or waiting.
    ``what`` names the work for the messages users see ("a written reply").
    """

    def __init__(self, what: str, *, capacity: int = 1, per_user: int = 2) -> None:
        if capacity < 1 or per_user < 1:
            raise ValueError("a work queue needs a capacity and a per-user allowance of at least 1")
        self.what = what
        self.capacity = capacity
        self.per_user = per_user
        self._running = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._per_user: Counter[int] = Counter()
        self.served = 0
        self.longest_line = 0  # the most callers ever waiting at once, for benchmarks and the log
        self._recent: deque[float] = deque(maxlen=RECENT)  # seconds the last turns took

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @asynccontextmanager
    async def turn(self, user_id: int, on_wait: OnWait | None = None) -> AsyncIterator[None]:
        """Holds one of the ``capacity`` places for the block; ``on_wait(place)`` runs if the caller must wait.

        Raises Busy, before waiting, when ``user_id`` already has ``per_user`` requests here.
        """
        if self._per_user[user_id] >= self.per_user:
            raise Busy(
                f"You already have {self._per_user[user_id]} requests waiting for {self.what}; "
                "I'll finish those first, then send this one again."
            )
        self._per_user[user_id] += 1
        try:
            await self._acquire(on_wait)
            started = time.monotonic()
            try:
                yield
            finally:
                self._recent.append(time.monotonic() - started)
                self._release()
        finally:
            self._per_user[user_id] -= 1
            if not self._per_user[user_id]:
                del self._per_user[user_id]

    async def _acquire(self, on_wait: OnWait | None) -> None:
        if self._running < self.capacity and not self._waiting:
            self._running += 1
            return
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(ticket)
        self.longest_line = max(self.longest_line, len(self._waiting))
        try:
            if on_wait is not None:
                await on_wait(len(self._waiting))
            await ticket
        except BaseException:
            if ticket.done() and not ticket.cancelled():
                self._release()  # the place was handed over just as the caller gave up: pass it on
            else:
                ticket.cancel()
                if ticket in self._waiting:  # a release may already have passed over it
                    self._waiting.remove(ticket)
            raise

    def _release(self) -> None:
        self.served += 1
        while self._waiting:
            ticket = self._waiting.popleft()
            if not ticket.done():
                ticket.set_result(None)  # the place passes straight to the next in line
                return
        self._running -= 1

    def expected_wait(self, place: int) -> float | None:
        """Seconds a caller at ``place`` may wait: the median of the last turns, for each round ahead of it.

        None until a few turns have been timed (a guess from nothing would mislead).
        """
        if len(self._recent) < 3:
            return None
        return statistics.median(self._recent) * math.ceil(place / self.capacity)

    def place(self) -> int:
        """Where a caller arriving now would wait: 0 when it would start at once."""
        if self._running < self.capacity and not self._waiting:
            return 0
        return len(self._waiting) + 1
