"""``FakeDiscord``: a test double for Discord's servers, on 127.0.0.1 at a random free port.

It serves the REST API under ``/api/v10`` (see ``rest.py``), the gateway websocket at ``/``
(see ``gateway.py``), uploaded files under ``/attachments/...`` and the OAuth2 consent page at
``/oauth2/authorize`` with its token endpoint (see ``oauth.py``), and keeps all state in memory:
the guilds (one ``GuildSetup`` each; the first is the default guild of the test-side API), their
channels, users and voice states, DM channels, every message with its attachments' bytes,
reactions, synced application commands (global and per guild) and interactions.

Every guild event is about one guild: the guild of the channel it happens in. Its guild_id, the
member objects and their roles and permissions come from that guild's setup, so the same user can
be an admin in one guild and a plain member in another, as on Discord.

Sharding: ``FakeDiscord(..., shards=N)`` makes ``GET /gateway/bot`` recommend N shards (what an
``AutoShardedClient`` without ``shard_count`` runs). Each gateway session of a shard hears only
about the guilds on that shard (``payloads.shard_of``) and shard 0 also gets the DMs; see
``gateway.py``. ``GuildSetup.on_shard`` and ``payloads.spread_over_shards`` make guilds on chosen
shards; ``gateway.sessions_of_shard(n)`` and a session's ``sent()`` show what each shard was told.

Tests act as Discord users through the async methods in the "test-side API" section below
(``send_message``, ``invoke_slash``, ``add_reaction`` ...) and observe the bot through
``messages``, ``wait_for_bot_messages`` and the handles returned by ``invoke_slash``.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar
from urllib.parse import urlencode

from aiohttp import web

from . import payloads
from .gateway import INTENT_GUILD_MEMBERS, INTENT_GUILD_VOICE_STATES, Gateway, GatewaySession
from .interactions import OPTION_ATTACHMENT, OPTION_USER, InteractionHandle, build_options
from .oauth import OAuth2, OAuthCode, OAuthToken
from .payloads import FakeUser, GuildSetup, check_guilds
from .rest import InjectedFailure, RecordedRequest, RestApi

T = TypeVar("T")
UserRef = FakeUser | int | None


async def serve_on_loopback(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serves ``app`` on 127.0.0.1 at a free port; returns its runner (to clean up) and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


async def one_route_on_loopback(path: str, handler: Any) -> AsyncIterator[str]:
    """A server with one POST route (a stand-in for a failing or odd API); yields its base URL ``.../v1``.

    Used as ``async for base_url in one_route_on_loopback("/v1/audio/speech", handler):``.
    """
    app = web.Application()
    app.router.add_post(path, handler)
    runner, port = await serve_on_loopback(app)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


class FakeDiscord:
    """The fake Discord: REST + gateway + in-memory state + the test-side API.

    Use as ``async with FakeDiscord() as server:``; ``run_bot`` (harness.py) connects a bot.
    ``setup`` is the guild the bot is in (default: ``GuildSetup()``), or a list of guilds, e.g.
    ``FakeDiscord([GuildSetup(), GuildSetup.nth(1), GuildSetup.nth(2)])``. The first is the default
    guild: ``guild_id``, ``owner``, ``admin``, ``member``, ``channel_id``, ``channel_named`` and the
    defaults of the test-side API are about it. The bot user and the application are the first
    setup's, shared by all guilds. ``guilds`` lists the setups; ``guild_of(channel_id)`` finds one.
    ``shards`` is the shard count ``GET /gateway/bot`` recommends.
    """

    def __init__(
        self,
        setup: GuildSetup | Sequence[GuildSetup] | None = None,
        *,
        token: str = "fake-token",
        heartbeat_interval_ms: int = 41_250,
        shards: int = 1,
    ) -> None:
        if shards < 1:
            raise ValueError(f"a bot runs at least one shard, not {shards}")
        self.guilds: list[GuildSetup] = [setup] if isinstance(setup, GuildSetup) else list(setup or [GuildSetup()])
        check_guilds(self.guilds)
        self.setup = self.guilds[0]
        self.token = token
        self.shards = shards  # the shard count GET /gateway/bot recommends
        self.ids = payloads.Snowflakes()
        # Everyone Discord knows, as first listed (identity only: roles are per guild). A user in
        # no guild becomes known when their DM channel is made.
        self.users: dict[int, FakeUser] = {}
        for guild in self.guilds:
            for user in guild.users:
                self.users.setdefault(user.id, user)
        self.channels: dict[int, dict[str, Any]] = {
            int(channel["id"]): channel
            for guild in self.guilds
            for channel in [*payloads.channel_payloads(guild), *payloads.thread_payloads(guild)]
        }
        self.dm_channels: dict[int, int] = {}  # user id -> DM channel id
        # guild id -> user id -> their VOICE_STATE_UPDATE (while in a voice channel), for GUILD_CREATE
        self.voice_states: dict[int, dict[int, dict[str, Any]]] = {guild.guild_id: {} for guild in self.guilds}
        self.messages: dict[int, dict[str, Any]] = {}  # latest state of every message, by id
        self.deleted_messages: dict[int, dict[str, Any]] = {}
        self.message_bodies: dict[int, list[Any]] = {}  # bot's request bodies per message (create, edits)
        self.blobs: dict[int, bytes] = {}  # attachment id -> uploaded bytes
        self.nonces: dict[tuple[int, str], tuple[int, float]] = {}  # (channel, nonce) -> (message id, when)
        self.nonce_repeats: list[int] = []  # ids of messages returned again for a repeated nonce
        self.reactions: dict[int, dict[str, list[int]]] = {}  # message id -> emoji -> user ids
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.interactions: dict[int, InteractionHandle] = {}
        self._unsynced_command_ids: dict[str, int] = {}  # stable ids for commands invoked without a sync
        self.requests: list[RecordedRequest] = []
        self.unknown_routes: list[str] = []
        self.failures: list[InjectedFailure] = []
        # OAuth2 (oauth.py): the application's client secret, who is signed in to Discord in the
        # browser (nobody until sign_in_browser), and every code and token issued, for assertions.
        self.client_secret = secrets.token_urlsafe(24)
        self.browser_user: FakeUser | None = None
        self.oauth_redirect_uris: list[str] = []  # registered redirect URIs; while empty any http(s) URI goes
        self.oauth_codes_issued: list[OAuthCode] = []
        self.oauth_tokens: list[OAuthToken] = []
        self.oauth_consents: set[tuple[str, int, str]] = set()  # (client id, user id, scope) consented to
        self.oauth = OAuth2(self)
        self.gateway = Gateway(
            token=token,
            bot_id=self.setup.bot.id,
            heartbeat_interval_ms=heartbeat_interval_ms,
            ready_payload=self._ready_payload,
            guild_payloads=self._guild_payloads,
            members_chunks=self._members_chunks,
            on_change=self.notify_changed,
            on_voice_state=self._bot_voice_state,
        )
        self.rest = RestApi(self)
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        app = web.Application(middlewares=[self.rest.middleware], client_max_size=100 * 1024 * 1024)
        app.router.add_get("/", self.gateway.handle)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self.rest.get_attachment)
        app.router.add_routes(self.rest.routes("/api/v10"))
        app.router.add_routes(self.oauth.routes())
        app.router.add_route("*", "/{tail:.*}", self.rest.unknown_route)
        self._runner, self.port = await serve_on_loopback(app)
        return self

    async def stop(self) -> None:
        await self.gateway.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        """What ``discord.http.Route.BASE`` must be set to."""
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """What ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` must be set to."""
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def authorize_endpoint(self) -> str:
        """Discord's https://discord.com/oauth2/authorize, here: the consent page."""
        return f"{self.base_url}/oauth2/authorize"

    @property
    def token_endpoint(self) -> str:
        """Discord's https://discord.com/api/v10/oauth2/token, here (``/api/oauth2/token`` works too)."""
        return f"{self.api_base}/oauth2/token"

    # -- who and where --------------------------------------------------------------------------

    @property
    def guild_id(self) -> int:
        return self.setup.guild_id

    @property
    def application_id(self) -> int:
        return self.setup.application_id

    @property
    def client_id(self) -> str:
        """The application's OAuth2 client id: its id, as a string (the secret is ``client_secret``)."""
        return str(self.application_id)

    @property
    def bot_user(self) -> FakeUser:
        return self.setup.bot

    @property
    def owner(self) -> FakeUser:
        return self.setup.owner

    @property
    def admin(self) -> FakeUser:
        return self.setup.admin

    @property
    def member(self) -> FakeUser:
        return self.setup.member

    @property
    def channel_id(self) -> int:
        """The default text channel (the first in the default guild's ``text_channels``)."""
        return self.setup.channel_id

    def channel_named(self, name: str) -> int:
        """A channel or thread of the default guild (``guilds[n].channel_named`` for the others)."""
        return self.setup.channel_named(name)

    def guild_by_id(self, guild_id: int | str) -> GuildSetup:
        for guild in self.guilds:
            if guild.guild_id == int(guild_id):
                return guild
        raise KeyError(f"unknown guild {guild_id}")

    def guild_of(self, channel_id: int) -> GuildSetup | None:
        """The guild a channel or thread belongs to; None for a DM channel."""
        guild_id = self.channels[channel_id].get("guild_id")
        return self.guild_by_id(guild_id) if guild_id is not None else None

    def add_members(self, *people: FakeUser, guild: GuildSetup | None = None) -> None:
        """People who join the guild (the first one unless named) after the bot connected."""
        for person in people:
            (guild or self.setup).extra_users.append(person)
            self.users[person.id] = person

    def user(self, ref: UserRef, default: FakeUser | None = None) -> FakeUser:
        if ref is None:
            return default or self.member
        if isinstance(ref, FakeUser):
            return ref
        return self.users[int(ref)]

    def author_in(self, guild: GuildSetup | None, ref: UserRef) -> FakeUser:
        """The user acting in ``guild`` (its plain member by default); they must be a member of it."""
        user = self.user(ref, guild.member if guild is not None else None)
        if guild is not None and not guild.has_member(user.id):
            raise ValueError(
                f"{user.username} ({user.id}) is not a member of guild {guild.guild_name!r} ({guild.guild_id}); "
                "list them in that guild's GuildSetup (extra_users) to act there"
            )
        return user

    def dm_channel_id(self, user: UserRef) -> int:
        """The DM channel between ``user`` and the bot, created on first use (for anyone, in a guild or not)."""
        recipient = self.user(user)
        self.users.setdefault(recipient.id, recipient)
        if recipient.id not in self.dm_channels:
            channel_id = self.ids.next()
            self.channels[channel_id] = payloads.dm_channel_payload(channel_id, recipient)
            self.dm_channels[recipient.id] = channel_id
        return self.dm_channels[recipient.id]

    def is_guild_channel(self, channel_id: int) -> bool:
        return "guild_id" in self.channels.get(channel_id, {})

    # -- test-side API: acting as Discord users -------------------------------------------------

    async def send_message(
        self,
        content: str = "",
        *,
        author: UserRef = None,
        channel_id: int | None = None,
        attachments: list[tuple[str, bytes]] | None = None,
        reply_to: int | str | None = None,
        voice_seconds: float | None = None,
    ) -> dict[str, Any]:
        """A user posts a message (default: the default channel, by the plain member of its guild).

        In a guild channel the author must be a member of that guild (ValueError otherwise); the
        message carries that guild's id and the author's member object there (their roles in it).
        Dispatches MESSAGE_CREATE and returns the message dict. Mentions (``<@id>``, ``<@&id>``,
        ``@everyone``) in ``content`` are filled in like Discord does. ``voice_seconds`` makes it a
        voice message, as the Discord client sends one: the IS_VOICE_MESSAGE flag, and the first
        attachment (its OGG/Opus recording) with its duration and a waveform.
        """
        channel_id = channel_id or self.channel_id
        if channel_id not in self.channels:
            raise KeyError(f"unknown channel {channel_id}")
        guild = self.guild_of(channel_id)
        user = self.author_in(guild, author)
        message_id = self.ids.next()
        in_guild = guild is not None
        message = payloads.message_payload(
            message_id=message_id,
            channel_id=channel_id,
            author=user,
            content=content,
            setup=guild,
            attachments=[self.store_attachment(channel_id, name, data) for name, data in attachments or []],
            mentions=[self.users[int(uid)] for uid in re.findall(r"<@!?(\d+)>", content) if int(uid) in self.users],
            mention_roles=[int(rid) for rid in re.findall(r"<@&(\d+)>", content)] if in_guild else [],
            mention_everyone="@everyone" in content and in_guild,
        )
        if reply_to is not None:
            self.add_reference(message, int(reply_to))
        if voice_seconds is not None:
            message["flags"] |= payloads.FLAG_VOICE_MESSAGE
            message["attachments"][0].update(duration_secs=voice_seconds, waveform="AAAAAAAAAAAA")
        self.record_message(message)
        await self.dispatch("MESSAGE_CREATE", message)
        return message

    def record_message(self, message: dict[str, Any]) -> None:
        """Keeps a new message, and makes it its channel's last, as a later GUILD_CREATE tells."""
        self.messages[int(message["id"])] = message
        channel = self.channels.get(int(message["channel_id"]))
        if channel is not None:
            channel["last_message_id"] = message["id"]

    async def send_dm(self, content: str = "", *, author: UserRef = None, **kwargs: Any) -> dict[str, Any]:
        """``send_message`` in the DM channel between ``author`` and the bot."""
        return await self.send_message(content, author=author, channel_id=self.dm_channel_id(author), **kwargs)

    async def edit_message(self, message_id: int | str, content: str) -> dict[str, Any]:
        """A user edits their message: dispatches MESSAGE_UPDATE."""
        message = self.messages[int(message_id)]
        message.update(content=content, edited_timestamp=payloads.now_iso())
        await self.dispatch("MESSAGE_UPDATE", message)
        return message

    async def add_reaction(self, message_id: int | str, emoji: str, *, user: UserRef = None) -> None:
        """A user reacts to a message: dispatches MESSAGE_REACTION_ADD.

        ``emoji`` is a unicode emoji or ``"name:id"`` for a custom one. In a guild channel the user
        (default: its guild's plain member) must be a member of that guild.
        """
        await self.react(int(message_id), emoji, self._reactor(message_id, user), add=True)

    async def remove_reaction(self, message_id: int | str, emoji: str, *, user: UserRef = None) -> None:
        await self.react(int(message_id), emoji, self._reactor(message_id, user), add=False)

    def _reactor(self, message_id: int | str, ref: UserRef) -> FakeUser:
        return self.author_in(self.guild_of(int(self.messages[int(message_id)]["channel_id"])), ref)

    async def invoke_slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user: UserRef = None,
        channel_id: int | None = None,
        dm: bool = False,
        attachments: dict[str, tuple[str, bytes]] | None = None,
    ) -> InteractionHandle:
        """A user runs ``/name`` (``"group sub"`` for subcommands): dispatches INTERACTION_CREATE.

        In a guild channel (default: the default channel) the user (default: that guild's plain
        member) must be a member of its guild: the interaction carries that guild and the user's
        member object there, and the command found is that guild's own before the global one.
        ``dm``: in the user's DM with the bot, with the user and no guild (global commands only).
        ``attachments`` maps attachment option names to ``(filename, bytes)`` (such tuples may
        also be given in ``options``). Option types come from the synced definition when the bot
        synced one, otherwise they are inferred from the values. Returns an ``InteractionHandle``.
        """
        parts = name.split()
        channel_id = self.dm_channel_id(user) if dm else channel_id or self.channel_id
        guild = self.guild_of(channel_id)
        invoker = self.author_in(guild, user)
        definition, command_guild_id = self._find_command(parts[0], guild)
        interaction_id = self.ids.next()
        resolved: dict[str, dict[str, Any]] = {}

        def resolve(kind: int, value: Any) -> str:
            if kind == OPTION_ATTACHMENT:
                filename, data = value
                attachment = self.store_attachment(channel_id, filename, bytes(data))
                resolved.setdefault("attachments", {})[attachment["id"]] = {**attachment, "ephemeral": True}
                return attachment["id"]
            if kind == OPTION_USER:
                target = self.user(value)
                resolved.setdefault("users", {})[str(target.id)] = payloads.user_payload(target)
                if guild is not None and guild.has_member(target.id):
                    member = payloads.member_payload(guild, target, with_user=False)
                    member["permissions"] = str(guild.permissions(target))
                    resolved.setdefault("members", {})[str(target.id)] = member
                return str(target.id)
            raise ValueError(f"option type {kind} is not supported by the loopback server yet")

        values = {**(options or {}), **(attachments or {})}
        data: dict[str, Any] = {
            "id": str(definition["id"]) if definition else str(self._unsynced_command_id(parts[0])),
            "name": parts[0],
            "type": 1,
            "options": build_options(parts[1:], definition, values, resolve=resolve),
            "resolved": resolved,
        }
        if command_guild_id is not None:
            data["guild_id"] = str(command_guild_id)

        handle = InteractionHandle(
            server=self,
            id=interaction_id,
            token=f"loopback-{secrets.token_urlsafe(24)}",
            payload=self._interaction_payload(interaction_id, invoker, channel_id, data),
            channel_id=channel_id,
        )
        handle.payload["token"] = handle.token
        self.interactions[interaction_id] = handle
        await self.dispatch("INTERACTION_CREATE", handle.payload)
        return handle

    async def _bot_voice_state(self, data: dict[str, Any]) -> None:
        """The bot joined or left voice (op 4): Discord confirms with the bot's own VOICE_STATE_UPDATE.

        Discord would then send VOICE_SERVER_UPDATE with a voice server to connect to; this fake
        has none, so tests use a voice client double that stops at the gateway.
        """
        channel = data.get("channel_id")
        guild_id = data.get("guild_id")
        await self.set_voice_state(
            self.bot_user, int(channel) if channel else None, guild_id=int(guild_id) if guild_id else None
        )

    async def set_voice_state(self, user: UserRef, channel_id: int | None, *, guild_id: int | None = None) -> None:
        """A user joins (``channel_id``) or leaves (None) voice: dispatches VOICE_STATE_UPDATE.

        The guild is the voice channel's; on leaving, ``guild_id``, else the guild where the user
        is in voice, else the default guild. The user must be a member of it. The fake remembers
        who is in voice, and a later GUILD_CREATE (a new IDENTIFY) lists them, as Discord does.
        """
        if channel_id is not None:
            guild = self.guild_of(channel_id)
            if guild is None:
                raise ValueError(f"channel {channel_id} is not a guild's voice channel")
        elif guild_id is not None:
            guild = self.guild_by_id(guild_id)
        else:
            user = self.user(user)
            guild = next((g for g in self.guilds if user.id in self.voice_states[g.guild_id]), self.setup)
        member = self.author_in(guild, user)
        state: dict[str, Any] = {
            "guild_id": str(guild.guild_id),
            "channel_id": str(channel_id) if channel_id else None,
            "user_id": str(member.id),
            "member": payloads.member_payload(guild, member),
            "session_id": secrets.token_hex(16),
            "deaf": False,
            "mute": False,
            "self_deaf": False,
            "self_mute": False,
            "self_stream": False,
            "self_video": False,
            "suppress": False,
            "request_to_speak_timestamp": None,
        }
        if channel_id is None:
            self.voice_states[guild.guild_id].pop(member.id, None)
        else:
            self.voice_states[guild.guild_id][member.id] = state
        await self.dispatch("VOICE_STATE_UPDATE", state)

    # -- test-side API: observing the bot -------------------------------------------------------

    def bot_messages(self, channel_id: int | None = None, *, after: int | str | None = None) -> list[dict[str, Any]]:
        """Messages the bot created in a channel (default channel), oldest first, latest state.

        ``after``: only messages with a larger id (e.g. the id of the message the test sent).
        Deferred 'thinking...' placeholders are left out until they are edited.
        """
        channel = str(channel_id or self.channel_id)
        bot_id = str(self.bot_user.id)
        return [
            message
            for message_id, message in self.messages.items()
            if message["channel_id"] == channel
            and message["author"]["id"] == bot_id
            and (after is None or message_id > int(after))
            and not message["flags"] & payloads.FLAG_LOADING
        ]

    async def wait_for_bot_messages(
        self,
        channel_id: int | None = None,
        *,
        count: int = 1,
        after: int | str | None = None,
        timeout: float = 10.0,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Wait until ``bot_messages(channel_id, after=after)`` has ``count`` messages matching
        ``predicate``; returns all matching ones (may be more than ``count``)."""

        def matching() -> list[dict[str, Any]]:
            found = self.bot_messages(channel_id, after=after)
            return [m for m in found if predicate is None or predicate(m)]

        def enough() -> list[dict[str, Any]] | None:
            found = matching()
            return found if len(found) >= count else None

        try:
            return await self.wait_until(enough, timeout, what=f"{count} bot message(s)")
        except TimeoutError as exc:
            seen = [m["content"] for m in self.bot_messages(channel_id, after=after)]
            raise TimeoutError(f"{exc}; bot messages seen there: {seen}") from None

    async def wait_for_message(
        self, message_id: int | str, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Wait until the latest state of a message satisfies ``predicate`` (e.g. after an edit)."""
        message_id = int(message_id)

        def check() -> dict[str, Any] | None:
            message = self.messages.get(message_id)
            return message if message is not None and predicate(message) else None

        return await self.wait_until(check, timeout, what=f"message {message_id} to match")

    def attachment_bytes(self, attachment: dict[str, Any] | int | str) -> bytes:
        """The bytes of an attachment (its dict from a message, or its id)."""
        attachment_id = attachment["id"] if isinstance(attachment, dict) else attachment
        return self.blobs[int(attachment_id)]

    def files_of(self, message: dict[str, Any] | int | str) -> dict[str, bytes]:
        """``{filename: bytes}`` for a message's attachments (message dict or id; latest state)."""
        message_id = int(message["id"] if isinstance(message, dict) else message)
        latest = self.messages.get(message_id) or self.deleted_messages[message_id]
        return {att["filename"]: self.attachment_bytes(att) for att in latest["attachments"]}

    async def wait_until(self, condition: Callable[[], T], timeout: float = 10.0, *, what: str = "condition") -> T:
        """Wait until ``condition()`` is truthy (re-checked on every state change); return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._changed
            result = condition()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                hint = f"; unknown routes hit: {self.unknown_routes}" if self.unknown_routes else ""
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}{hint}")
            with suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    # -- test-side API: OAuth2 (a person signing in to a web app with Discord) ------------------

    def sign_in_browser(self, user: FakeUser | int | None) -> None:
        """Who is signed in to the fake Discord in the browser: the person the consent page asks.

        None signs them out (the page then says nobody is signed in and offers no button). One
        browser at a time: sign someone else in between two flows to switch people.
        """
        self.browser_user = None if user is None else self.user(user)
        if self.browser_user is not None:
            self.users.setdefault(self.browser_user.id, self.browser_user)

    def authorize_url(
        self, redirect_uri: str, *, state: str | None = None, scope: str = "identify guilds", prompt: str | None = None
    ) -> str:
        """The consent page's URL for this application, as a web app sends people to it."""
        params = {"client_id": self.client_id, "redirect_uri": redirect_uri, "response_type": "code", "scope": scope}
        params |= {"state": state} if state is not None else {}
        params |= {"prompt": prompt} if prompt is not None else {}
        return f"{self.authorize_endpoint}?{urlencode(params)}"

    def oauth_token(self, access_token: str) -> OAuthToken | None:
        """The token issued with this access token while it is valid (not expired, not revoked); else None."""
        return next((t for t in self.oauth_tokens if t.access_token == access_token and t.valid), None)

    # -- test-side API: faults ------------------------------------------------------------------

    async def close_gateway(self, code: int = 4000, *, shard: int | None = None) -> None:
        """Close the bot's gateway socket with ``code`` (4000: the client should RESUME).

        ``shard`` here and in the faults below: only the sessions of that shard (default: all).
        """
        await self.gateway.close(code, shard=shard)

    async def abort_gateway(self, *, shard: int | None = None) -> None:
        """Cut the gateway TCP connection without a close frame."""
        await self.gateway.abort(shard=shard)

    async def send_reconnect(self, *, shard: int | None = None) -> None:
        """Send op 7 RECONNECT."""
        await self.gateway.send_reconnect(shard=shard)

    async def invalidate_session(self, *, resumable: bool = False, shard: int | None = None) -> None:
        """Send op 9 INVALID_SESSION; non-resumable makes the bot IDENTIFY again."""
        await self.gateway.invalidate_session(resumable=resumable, shard=shard)

    @asynccontextmanager
    async def hold_reconnects(self) -> AsyncIterator[None]:
        """The bot's reconnects inside the block wait (before HELLO) until it exits.

        Inject a fault inside it to keep the bot disconnected while users go on talking.
        """
        async with self.gateway.hold_reconnects():
            yield

    def repeat_events_on_resume(self, events: int) -> None:
        """Make the next RESUME deliver the last ``events`` events again (at-least-once delivery)."""
        self.gateway.repeat_on_resume(events)

    @asynccontextmanager
    async def gateway_outage(self, close_code: int = 4000) -> AsyncIterator[None]:
        """Close the gateway and keep the bot from reconnecting until the block exits.

        Events dispatched inside the block are delivered when the bot RESUMEs.
        """
        async with self.gateway.outage(close_code):
            yield

    def fail_route(
        self,
        pattern: str,
        *,
        status: int = 429,
        times: int = 1,
        via_header: bool = True,
        retry_after: float = 0.05,
        processed: bool = False,
        disconnect: bool = False,
    ) -> InjectedFailure:
        """Answer the next ``times`` REST requests matching ``pattern`` with ``status``.

        ``pattern`` is a regex searched in ``"METHOD /path"`` (path without /api/v10), e.g.
        ``r"POST /channels/\\d+/messages"``. For 429 the body carries ``retry_after`` and, unless
        ``via_header`` is False, a ``Via`` header (without it discord.py assumes a Cloudflare ban).
        ``processed``: the request is carried out first and only its answer is lost (a message
        sent this way exists although the bot was told 500). ``disconnect``: cut the connection
        instead of answering (with ``processed``, after carrying the request out).
        """
        failure = InjectedFailure(pattern, status, times, via_header, retry_after, processed, disconnect)
        self.failures.append(failure)
        return failure

    # -- shared by the REST handlers ------------------------------------------------------------

    def notify_changed(self) -> None:
        """Wake every ``wait_until`` so it re-checks its condition."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a gateway event to the bot (buffered while it is disconnected)."""
        await self.gateway.dispatch(event, data)
        self.notify_changed()

    def message_with_nonce(self, channel_id: int, nonce: str, window: float) -> dict[str, Any] | None:
        """The message created in ``channel_id`` with ``nonce`` in the last ``window`` seconds, if any."""
        found = self.nonces.get((channel_id, nonce))
        if found is None or time.monotonic() - found[1] > window:
            return None
        return self.messages.get(found[0])

    def store_attachment(
        self, channel_id: int, filename: str, data: bytes, *, description: str | None = None
    ) -> dict[str, Any]:
        attachment_id = self.ids.next()
        self.blobs[attachment_id] = data
        url = f"{self.base_url}/attachments/{channel_id}/{attachment_id}/{filename}"
        return payloads.attachment_payload(attachment_id, filename, data, url, description=description)

    def add_reference(self, message: dict[str, Any], target_id: int) -> None:
        """Make ``message`` a reply to ``target_id`` (message_reference + referenced_message)."""
        target = self.messages.get(target_id)
        reference = {"type": 0, "message_id": str(target_id), "channel_id": message["channel_id"]}
        if "guild_id" in message:
            reference["guild_id"] = message["guild_id"]
        message["message_reference"] = reference
        message["referenced_message"] = target
        message["type"] = payloads.MESSAGE_REPLY

    async def react(self, message_id: int, emoji: str, user: FakeUser, *, add: bool) -> None:
        message = self.messages[message_id]
        users = self.reactions.setdefault(message_id, {}).setdefault(emoji, [])
        if add and user.id not in users:
            users.append(user.id)
        elif not add and user.id in users:
            users.remove(user.id)
        name, _, emoji_id = emoji.partition(":")
        data: dict[str, Any] = {
            "user_id": str(user.id),
            "channel_id": message["channel_id"],
            "message_id": str(message_id),
            "emoji": {"id": emoji_id or None, "name": name},
            "burst": False,
            "type": 0,
        }
        if "guild_id" in message:
            data["guild_id"] = message["guild_id"]
            if add:
                data["member"] = payloads.member_payload(self.guild_by_id(message["guild_id"]), user)
        if add:
            data.update(message_author_id=message["author"]["id"], burst_colors=[])
        await self.dispatch("MESSAGE_REACTION_ADD" if add else "MESSAGE_REACTION_REMOVE", data)

    def _find_command(self, name: str, guild: GuildSetup | None) -> tuple[dict[str, Any] | None, int | None]:
        """The synced definition of a top-level command and its guild id: ``guild``'s own first,
        then the global one (a DM, ``guild`` None, sees only global commands, as on Discord)."""
        if guild is not None:
            for command in self.guild_commands.get(guild.guild_id, []):
                if command["name"] == name:
                    return command, guild.guild_id
        for command in self.global_commands:
            if command["name"] == name:
                return command, None
        return None, None

    def _unsynced_command_id(self, name: str) -> int:
        if name not in self._unsynced_command_ids:
            self._unsynced_command_ids[name] = self.ids.next()
        return self._unsynced_command_ids[name]

    def _interaction_payload(
        self, interaction_id: int, user: FakeUser, channel_id: int, data: dict[str, Any]
    ) -> dict[str, Any]:
        channel = self.channels[channel_id]
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": 2,
            "data": data,
            "channel_id": str(channel_id),
            "channel": channel,
            "version": 1,
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        guild = self.guild_of(channel_id)
        if guild is not None:
            member = payloads.member_payload(guild, user)
            member["permissions"] = str(guild.permissions(user))
            payload["channel"] = {**channel, "permissions": member["permissions"]}
            payload.update(
                guild_id=str(guild.guild_id),
                guild={"id": str(guild.guild_id), "locale": "en-US", "features": []},
                guild_locale="en-US",
                member=member,
                app_permissions=str(guild.permissions(self.bot_user)),
                authorizing_integration_owners={"0": str(guild.guild_id)},
                context=0,
            )
        else:
            payload.update(
                user=payloads.user_payload(user),
                app_permissions=str(payloads.EVERYONE_PERMISSIONS),
                authorizing_integration_owners={"0": str(self.guild_id)},
                context=1,
            )
        return payload

    # -- gateway callbacks ----------------------------------------------------------------------

    def _ready_payload(self, session: GatewaySession, shard: list[int] | None) -> dict[str, Any]:
        """READY: the guilds of the session's shard, unavailable until their GUILD_CREATE."""
        return {
            "v": 10,
            "user": payloads.client_user_payload(self.bot_user),
            "guilds": [
                {"id": str(guild.guild_id), "unavailable": True}
                for guild in self.guilds
                if session.owns(guild.guild_id)
            ],
            "session_id": session.session_id,
            "resume_gateway_url": self.gateway_url,
            "shard": shard or [0, 1],
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "session_type": "normal",
            "geo_ordered_rtc_regions": [],
        }

    def _guild_payloads(self, session: GatewaySession) -> list[dict[str, Any]]:
        """One GUILD_CREATE per guild of the session's shard, in the order given: members and voice
        states as its intents allow."""
        intents = session.intents
        include_members = bool(intents & INTENT_GUILD_MEMBERS)
        found = []
        for setup in self.guilds:
            if not session.owns(setup.guild_id):
                continue
            voice_states = []
            if intents & INTENT_GUILD_VOICE_STATES:
                voice_states = [
                    {key: value for key, value in state.items() if key != "guild_id"}
                    for state in self.voice_states[setup.guild_id].values()
                ]
            guild = payloads.guild_payload(setup, include_members=include_members, voice_states=voice_states)
            # Channels and threads as they are now (their last messages included), each in its own list.
            own = [c for c in self.channels.values() if c.get("guild_id") == str(setup.guild_id)]
            guild["channels"] = [c for c in own if c["type"] != payloads.CHANNEL_PUBLIC_THREAD]
            guild["threads"] = [c for c in own if c["type"] == payloads.CHANNEL_PUBLIC_THREAD]
            found.append(guild)
        return found

    def _members_chunks(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """GUILD_MEMBERS_CHUNKs answering op 8 for the guild(s) it names (unknown guilds: none)."""
        requested = request.get("guild_id")
        guild_ids = {int(g) for g in (requested if isinstance(requested, list) else [requested]) if g is not None}
        query = (request.get("query") or "").lower()
        wanted_ids = {int(uid) for uid in request.get("user_ids") or []}
        chunks = []
        for setup in self.guilds:
            if setup.guild_id not in guild_ids:
                continue
            members = [
                payloads.member_payload(setup, user)
                for user in setup.users
                if (not wanted_ids or user.id in wanted_ids) and user.username.lower().startswith(query)
            ]
            chunk = {"guild_id": str(setup.guild_id), "members": members, "chunk_index": 0, "chunk_count": 1}
            if request.get("nonce") is not None:
                chunk["nonce"] = request["nonce"]
            chunks.append(chunk)
        return chunks
