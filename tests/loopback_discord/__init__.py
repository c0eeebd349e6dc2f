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

Several guilds: ``FakeDiscord([GuildSetup(), GuildSetup.nth(1), GuildSetup.nth(2)])`` hosts three
("Loopback Guild", "Guild B", "Guild C"; ``nth`` moves every id of a guild into a range of its own).
The first is the default guild: ``server.guild_id``, ``owner``, ``admin``, ``member``, ``channel_id``
and the defaults of the test-side API are about it, exactly as with one guild. The bot and the
application are shared. Each guild has its own owner, members, roles, channels, threads and voice
channels, and everything Discord does in a guild (GUILD_CREATE, messages, reactions, interactions,
voice states, member chunks, guild REST routes and command syncs) carries that guild and the
member's roles there. ``server.guilds[n]`` is the n-th setup, ``server.guild_of(channel_id)`` the
guild of a channel (None for a DM). A user's identity is global but membership and roles are per
guild: list the same person in each guild they are in, with that guild's roles::

    first = GuildSetup()
    second = GuildSetup.nth(1, extra_users=[first.admin.with_roles()])  # admin there, plain member here
    async with FakeDiscord([first, second]) as server, run_bot(make_bot(), server):
        await server.send_message("hi", channel_id=second.channel_id, author=first.admin)

Acting in a guild one is not a member of raises ValueError; anyone, in a guild or not, can DM the bot.

Shards: a guild's events go to the gateway sessions of its shard, ``(guild_id >> 22) % count``
(``shard_of``), DMs to shard 0, everything to a session that IDENTIFYed without ``shard``.
``spread_over_shards(6, 4)`` makes six guilds that take four shards in turn (``GuildSetup.on_shard``
makes one), and ``FakeDiscord(guilds, shards=4)`` recommends four shards in ``GET /gateway/bot``::

    async with FakeDiscord(spread_over_shards(6, 4)) as server:
        bot = discord.AutoShardedClient(intents=..., shard_count=4, shard_ids=[0, 1])
        async with run_bot(bot, server):  # hears about guilds 0, 1, 4 and 5 (shards 0 and 1) and DMs
            ...

Signing in with Discord (OAuth2 authorization code flow, for a web dashboard): the application's
client id is ``server.client_id`` (its id, a string) and its secret ``server.client_secret``
(random per server). Point the web app at ``server.authorize_endpoint`` (the consent page, at
``/oauth2/authorize`` as on discord.com), ``server.token_endpoint`` and ``server.api_base``. Who
is signed in to Discord in the browser is ``server.sign_in_browser(user)`` (nobody by default: the
page then only says so); the page's Authorize button sends the browser to
``redirect_uri?code=...&state=...``, Cancel to ``?error=access_denied&...``. The token endpoint
checks the code (single use, 10 minutes, same client and redirect_uri) and the client secret, and
the access token opens ``/users/@me`` and ``/users/@me/guilds`` (the person's guilds among the
fake's, with their permissions there), never a bot route::

    server.sign_in_browser(server.admin)
    url = server.authorize_url("http://127.0.0.1:8080/callback", state="xyz")  # what the web app builds
    ...  # the browser opens url and clicks Authorize; the web app redeems the code
    [code] = server.oauth_codes_issued  # OAuthCode: code, user, redirect_uri, scopes, state, used
    [token] = server.oauth_tokens  # OAuthToken: access_token, refresh_token, user, scopes, revoked

``server.oauth_redirect_uris`` (empty: any http(s) URI) registers the only redirect URIs allowed;
setting a code's or token's ``expires_at`` to 0 expires it; ``fail_route(r"POST /oauth2/token")``
makes the token endpoint fail like any REST route.

Modules: ``payloads`` (JSON builders, ``GuildSetup``, ``FakeUser``), ``gateway`` (websocket
protocol, sessions, fault injection), ``rest`` (REST routes), ``interactions`` (slash commands),
``oauth`` (OAuth2: consent page, token endpoint), ``server`` (``FakeDiscord``: state and the
test-side API), ``harness`` (``run_bot``).
"""

from .harness import discord_endpoints, run_bot
from .interactions import InteractionHandle
from .payloads import FakeUser, GuildSetup, shard_of, spread_over_shards
from .server import FakeDiscord

__all__ = [
    "FakeDiscord",
    "FakeUser",
    "GuildSetup",
    "InteractionHandle",
    "discord_endpoints",
    "run_bot",
    "shard_of",
    "spread_over_shards",
]
