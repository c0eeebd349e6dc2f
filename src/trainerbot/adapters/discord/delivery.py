"""Every user message answered exactly once, through dropped connections and failing requests.

Discord delivers gateway events at least once: a RESUME can replay what the bot already had,
and a session that cannot be resumed loses whatever happened before the new IDENTIFY. REST
calls can fail after Discord carried them out (a 500 or 502 whose answer was lost), and a 429
without a ``Via`` header reaches the bot as an error, which discord.py does not retry.
This module owns the policy for both directions:

* In: ``Inbox.claim`` records each message the bot takes on (SQLite, so it holds across a
  restart); a message claimed before is not handled again. After every new session (READY
  that is not a RESUME) ``Inbox.catch_up`` reads the recent history of the channels the bot
  can read and handles, oldest first, the user messages it never claimed, and takes up again
  those whose handling a restart cut off (claimed, never finished). Each gateway shard has
  sessions of its own: its catch-up reads only the servers on that shard (and the DMs, which
  Discord sends shard 0), so processes that run other shards never answer the same messages.
* Out: every message posted in answer to a user message carries a nonce made from that
  message's id, with ``enforce_nonce``, so sending it again returns the message made the first
  time instead of a second one; sends and edits are retried on 429 and 5xx and on dropped
  connections, a bounded number of times, after discord.py's own retries have given up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import TypeVar

import aiohttp
import discord
from discord.utils import time_snowflake, utcnow

from trainerbot.storage.inbox import HandledMessages

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_NONCE = 25  # Discord's limit on a nonce's length


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a request that failed in a way that may pass."""

    attempts: int = 6
    first_delay: float = 0.5  # doubled after each failure
    max_delay: float = 30.0  # also caps a Retry-After the server asks for

    def delay(self, failures: int, error: BaseException) -> float:
        asked = _retry_after(error)
        wanted = asked if asked is not None else self.first_delay * 2 ** (failures - 1)
        return min(wanted, self.max_delay)


RETRY = RetryPolicy()


def _retry_after(error: BaseException) -> float | None:
    if not isinstance(error, discord.HTTPException):
        return None
    headers = getattr(error.response, "headers", None) or {}
    try:
        return float(headers["Retry-After"])
    except (KeyError, TypeError, ValueError):
        return None


def may_pass(error: BaseException) -> bool:
    """A failure worth retrying: rate limited, Discord's side failing, or the connection dropped."""
    if isinstance(error, discord.HTTPException):
        return error.status == 429 or error.status >= 500
    return isinstance(error, aiohttp.ClientConnectionError | ConnectionError | TimeoutError)


async def deliver(request: Callable[[], Awaitable[T]], what: str, policy: RetryPolicy = RETRY) -> T:
    """``request()``, retried while it fails in a way that may pass; the last failure is raised.

    ``request`` must be safe to repeat: an edit, or a send that carries a nonce.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return await request()
        except Exception as error:
            if attempt == policy.attempts or not may_pass(error):
                raise
            pause = policy.delay(attempt, error)
            log.warning("%s failed (%s); trying again in %.2f s (%d/%d)", what, error, pause, attempt, policy.attempts)
            await asyncio.sleep(pause)
    raise AssertionError("unreachable: the last attempt returns or raises")


def answer_nonce(question_id: int, kind: str, part: int) -> str:
    """The nonce of part ``part`` of an answer to message ``question_id``.

    ``kind`` (one letter) keeps apart the different messages one question gets: "a" the answer,
    "h" what was heard in a voice message, "c" a command's reply, "e" an error, "b" a refusal for a
    full queue, "r" the note on a command a restart cut off, "d" what is sent to its author by DM,
    "j" how a training job ended when its message could not be edited (``question_id``: that message).
    """
    nonce = f"{question_id}{kind}{part}"
    if len(kind) != 1 or len(nonce) > MAX_NONCE:
        raise ValueError(f"nonce {nonce!r} is not one letter of kind and at most {MAX_NONCE} characters")
    return nonce


async def send_once(
    channel: discord.abc.Messageable,
    content: str,
    *,
    nonce: str,
    allowed_mentions: discord.AllowedMentions,
    reference: discord.Message | None = None,
    files: Callable[[], list[discord.File]] | None = None,
) -> discord.Message:
    """Posts a message that appears once however often it has to be sent.

    ``files`` makes fresh ``discord.File`` objects for each attempt: a sent one is used up.
    """
    return await deliver(
        lambda: channel.send(
            content,
            nonce=nonce,
            reference=reference,
            mention_author=False if reference is not None else None,
            allowed_mentions=allowed_mentions,
            files=files() if files is not None else None,
        ),
        f"sending message {nonce}",
    )


async def edit_until_done(
    message: discord.Message, content: str, *, allowed_mentions: discord.AllowedMentions
) -> discord.Message:
    """Edits a message, retrying as ``deliver`` does: an edit is safe to repeat."""
    return await deliver(
        lambda: message.edit(content=content, allowed_mentions=allowed_mentions), f"editing message {message.id}"
    )


TAKEN_HERE_PRUNED_AT = 10_000  # message ids remembered before the older ones are forgotten
CLAIM_LANES = 4  # threads claiming messages side by side, each for its share of the channels


class Inbox:
    """The messages the bot took on, so each is handled once and none is missed across a new session."""

    def __init__(
        self,
        store: HandledMessages,
        *,
        keep: timedelta = timedelta(days=2),
        window: timedelta = timedelta(minutes=15),
        per_channel: int = 50,
        reading_at_once: int = 4,
    ) -> None:
        self.store = store
        self.keep = keep  # how long a claim is remembered: far longer than any replay or catch-up reaches
        self.window = window  # how far back a catch-up looks
        self.per_channel = per_channel  # the newest messages a catch-up reads in each channel
        self.reading_at_once = reading_at_once  # channel histories read at once: Discord limits the bot's requests
        # Shared by the catch-ups of all shards, which start together.
        self._reading = asyncio.Semaphore(reading_at_once)
        # A channel's claims go through one thread: they finish in the order its messages arrived, so the
        # handlers that wait on them go on in that order too (a conversation's turns must not swap places).
        # Several channels' claims go side by side, on CLAIM_LANES threads: on PostgreSQL a claim is a round
        # trip to the server, and 50 people writing at once would otherwise wait for each other's.
        self._lanes = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"inbox-{lane}") for lane in range(CLAIM_LANES)
        ]
        # Taken on by this process, finished or not: a restart cut none of these off. Kept past their
        # finish, since a catch-up's snapshot of unfinished messages may predate it; forgotten once older
        # than a catch-up looks back.
        self._taken_here: set[int] = set()

    async def claim(self, message: discord.Message) -> bool:
        """True the first time a message is seen; False when it was already taken on."""
        forget_before = time_snowflake(utcnow() - self.keep)
        claimed = await asyncio.get_running_loop().run_in_executor(
            self._lane(message),
            partial(
                self.store.claim_message,
                message.id,
                message.channel.id,
                forget_before=forget_before,
                direct=message.guild is None,
            ),
        )
        if claimed:
            self._taken_here.add(message.id)
            if len(self._taken_here) > TAKEN_HERE_PRUNED_AT:
                oldest = time_snowflake(utcnow() - self.window)
                self._taken_here = {taken for taken in self._taken_here if taken > oldest}
        return claimed

    async def finish(self, message: discord.Message) -> None:
        """The message was handled to the end; a restart from now on leaves it alone."""
        await asyncio.get_running_loop().run_in_executor(self._lane(message), self.store.finish_message, message.id)

    def _lane(self, message: discord.Message) -> ThreadPoolExecutor:
        return self._lanes[message.channel.id % len(self._lanes)]

    def close(self) -> None:
        for lane in self._lanes:
            lane.shutdown(wait=False)

    async def catch_up(
        self,
        client: discord.Client,
        handle: Callable[[discord.Message], Awaitable[None]],
        take_up: Callable[[discord.Message], Awaitable[None]],
        *,
        shard_id: int | None = None,
    ) -> int:
        """Handles the recent user messages that never reached the bot; returns how many there were.

        Messages taken on but never finished, by a process that is gone (a restart cut them
        off), go to ``take_up`` instead. Run after every READY that is not a RESUME, for the
        shard whose READY it was (None: every server the client has). It looks back ``window``,
        but never past the first message the bot ever handled: a fresh install does not answer
        what came before it.
        """
        first = await asyncio.to_thread(self.store.first_handled_message)
        if first is None:
            return 0
        since = max(first, time_snowflake(utcnow() - self.window))
        channels: list[discord.abc.Messageable] = [*self._readable_channels(client, since, shard_id)]
        if shard_id in (None, 0):  # Discord sends every DM to shard 0, so its process answers them
            channels += await self._direct_channels(client, since)

        async def catch_up_channel(channel: discord.abc.Messageable) -> int:
            async with self._reading:
                return await self._catch_up_channel(channel, since, handle, take_up)

        missed = await asyncio.gather(*(catch_up_channel(channel) for channel in channels))
        if sum(missed):
            log.info("caught up with %d message(s) sent while the bot was not connected", sum(missed))
        return sum(missed)

    def _readable_channels(
        self, client: discord.Client, since: int, shard_id: int | None
    ) -> Iterable[discord.abc.Messageable]:
        """The servers' channels and threads with a message newer than ``since`` that the bot may read.

        Discord says which message is each channel's last (in GUILD_CREATE, kept up to date by
        the events after it), so a quiet channel costs no request: across many servers, most are.
        Only the servers of ``shard_id`` when one is named (the client has only its own shards').
        """
        for guild in client.guilds:
            if shard_id is not None and guild.shard_id != shard_id:
                continue
            for channel in [*guild.text_channels, *guild.threads]:
                if channel.last_message_id is None or channel.last_message_id <= since:
                    continue
                allowed = channel.permissions_for(guild.me)
                if allowed.view_channel and allowed.read_message_history:
                    yield channel

    async def _direct_channels(self, client: discord.Client, since: int) -> list[discord.DMChannel]:
        """DMs cannot be listed; the ones where the bot answered someone lately are looked at."""
        found = []
        for channel_id in await asyncio.to_thread(self.store.channels_handled_since, since):
            channel = client.get_channel(channel_id)
            if channel is None:
                try:
                    channel = await client.fetch_channel(channel_id)
                except discord.HTTPException as exc:
                    log.info("catch-up: channel %s cannot be read (%s)", channel_id, exc)
                    continue
            if isinstance(channel, discord.DMChannel):
                found.append(channel)
        return found

    async def _catch_up_channel(
        self,
        channel: discord.abc.Messageable,
        since: int,
        handle: Callable[[discord.Message], Awaitable[None]],
        take_up: Callable[[discord.Message], Awaitable[None]],
    ) -> int:
        async def recent() -> list[discord.Message]:
            return [m async for m in channel.history(limit=self.per_channel) if m.id > since and not m.author.bot]

        try:
            messages = await deliver(recent, f"reading the history of channel {getattr(channel, 'id', '?')}")
        except discord.HTTPException as exc:
            log.warning("catch-up: cannot read channel %s (%s)", getattr(channel, "id", "?"), exc)
            return 0
        ids = [m.id for m in messages]
        handled = await asyncio.to_thread(self.store.handled_among, ids)
        cut_off = await asyncio.to_thread(self.store.unfinished_among, ids)
        count = 0
        for message in sorted(messages, key=lambda m: m.id):  # oldest first, one at a time: order is kept
            if message.id not in handled:
                await handle(message)
            elif message.id in cut_off and message.id not in self._taken_here:  # not one this process took on
                self._taken_here.add(message.id)
                log.info("taking up message %s again: a restart cut off its handling", message.id)
                await take_up(message)
            else:
                continue
            count += 1
        return count


Posted = Callable[[Iterable["discord.Message | None"]], None]  # told of a reply's messages as they appear


class RepliesInWriting:
    """Bot messages of replies not yet stored: what refers to one waits until it is.

    A reply is posted at its first words and stored when it is finished, seconds later. A 👍,
    a correction or a piece of feedback about it in between would find nothing to attach to,
    so each first waits for the reply it names (at most ``patience`` seconds).
    """

    def __init__(self, patience: float = 120.0) -> None:
        self.patience = patience
        self._stored: dict[int, asyncio.Event] = {}

    @contextlib.contextmanager
    def track(self) -> Iterator[Posted]:
        """Yields ``posted(messages)``, to call as a reply's messages appear; all are released at the end."""
        mine: set[int] = set()

        def posted(messages: Iterable[discord.Message | None]) -> None:
            for message in messages:
                if message is not None and message.id not in mine:
                    mine.add(message.id)
                    self._stored.setdefault(message.id, asyncio.Event())

        try:
            yield posted
        finally:
            for message_id in mine:
                if (stored := self._stored.pop(message_id, None)) is not None:
                    stored.set()

    async def stored(self, message_id: int | None) -> None:
        """Returns once the reply carried by ``message_id`` is stored, or it is not one being written."""
        stored = self._stored.get(message_id) if message_id is not None else None
        if stored is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stored.wait(), self.patience)
