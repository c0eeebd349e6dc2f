"""A loopback Discord: a test double for Discord's servers, for end-to-end tests of discord.py bots.

``FakeDiscord`` is an aiohttp web server on 127.0.0.1 (random free port) that implements the
parts of Discord's REST API (v10) and gateway websocket a bot uses, with all state in memory.
The real, unmodified discord.py library connects to it - real gateway handshake, RESUME, REST
calls, multipart uploads, JSON (de)serialisation - so tests exercise the same code paths as
production, without network access or dpytest-style mocks.

Typical test::

    async with FakeDiscord() as server, run_bot(make_bot(), server):
        sent = await server.send_message("!ping")
        [reply] = await server.wait_for_bot_messages(after=sent["id"])
        assert reply["content"] == "pong"

Modules: ``payloads`` (JSON builders, ``GuildSetup``, ``FakeUser``), ``gateway`` (websocket
protocol, sessions, fault injection), ``rest`` (REST routes), ``interactions`` (slash commands),
``server`` (``FakeDiscord``: state and the test-side API), ``harness`` (``run_bot``).
"""

from .harness import discord_endpoints, run_bot
from .interactions import InteractionHandle
from .payloads import FakeUser, GuildSetup
from .server import FakeDiscord

__all__ = ["FakeDiscord", "FakeUser", "GuildSetup", "InteractionHandle", "discord_endpoints", "run_bot"]
