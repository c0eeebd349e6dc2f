"""Running a real, unmodified discord.py bot against ``FakeDiscord`` inside a test.

``run_bot`` points discord.py at the fake server, starts the bot, waits for ``on_ready``, and on
exit closes it and checks that ``bot.start()`` ended cleanly. The only things it changes on the
library are the documented endpoints and two timing knobs:

* ``discord.http.Route.BASE`` and ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` (restored
  afterwards). A non-sharded client never asks ``GET /gateway/bot``, and neither does an
  ``AutoShardedClient`` given a ``shard_count``: both connect to ``DEFAULT_GATEWAY``. One without
  a count asks, and connects to the ``url`` the fake answers (itself). RESUMEs go to the
  ``resume_gateway_url`` from READY, which the fake sets to itself.
* ``bot.before_identify_hook`` (sleeps 5 s before every re-IDENTIFY by default, and before the
  IDENTIFY of every shard but the first) -> no delay.
* the connection's ``guild_ready_timeout`` (2 s wait for more GUILD_CREATEs) -> 0.05 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

import discord
import yarl

from .server import FakeDiscord

log = logging.getLogger(__name__)

ClientT = TypeVar("ClientT", bound=discord.Client)

GUILD_READY_TIMEOUT = 0.05


@contextlib.contextmanager
def discord_endpoints(server: FakeDiscord) -> Iterator[None]:
    """Point discord.py's REST base URL and gateway URL at ``server`` for the duration."""
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = server.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(server.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


async def _identify_now(shard_id: int | None, *, initial: bool = False) -> None:
    """Replacement for ``Client.before_identify_hook``, which sleeps 5 s before a re-IDENTIFY."""


@contextlib.asynccontextmanager
async def run_bot(
    bot: ClientT,
    server: FakeDiscord,
    *,
    ready_timeout: float = 10.0,
    shutdown_timeout: float = 10.0,
    allow_unknown_routes: bool = False,
) -> AsyncIterator[ClientT]:
    """Run ``bot`` against ``server`` until the block exits; yields the bot once it is ready.

    Raises if the bot does not become ready in ``ready_timeout`` seconds, if ``bot.start()``
    ends with an exception, or (unless ``allow_unknown_routes``) if the bot called a REST route
    the fake server does not implement.
    """
    with discord_endpoints(server):
        bot.before_identify_hook = _identify_now  # type: ignore[method-assign]
        state = bot._connection
        state.guild_ready_timeout = min(state.guild_ready_timeout, GUILD_READY_TIMEOUT)
        task = asyncio.create_task(bot.start(server.token), name=f"discord bot on port {server.port}")
        try:
            await _wait_until_ready(bot, task, server, ready_timeout)
            yield bot
        except BaseException:
            await _stop(bot, task, shutdown_timeout, raise_errors=False)
            raise
        await _stop(bot, task, shutdown_timeout, raise_errors=True)
    if server.unknown_routes and not allow_unknown_routes:
        raise AssertionError(
            f"the bot called REST routes the loopback server does not implement: {server.unknown_routes}"
        )


async def _wait_until_ready(bot: discord.Client, task: asyncio.Task[None], server: FakeDiscord, timeout: float) -> None:
    # Polled: bot.wait_until_ready() raises until bot.start() has set up its internals.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not bot.is_ready():
        if task.done():
            error = task.exception()
            raise RuntimeError(f"bot.start() ended before the bot was ready: {error!r}") from error
        if loop.time() > deadline:
            raise TimeoutError(
                f"bot not ready after {timeout}s (identifies: {server.gateway.identify_count}, "
                f"unknown routes: {server.unknown_routes})"
            )
        await asyncio.sleep(0.01)


async def _stop(bot: discord.Client, task: asyncio.Task[None], timeout: float, *, raise_errors: bool) -> None:
    await bot.close()
    try:
        await asyncio.wait_for(task, timeout)
    except Exception as error:
        if raise_errors:
            raise RuntimeError(f"bot.start() did not end cleanly: {error!r}") from error
        log.warning("bot.start() ended with %r while the test was already failing", error)
