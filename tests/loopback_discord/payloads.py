"""Builders for the JSON payloads Discord sends: users, members, roles, channels, guilds, messages.

Everything here returns plain dicts shaped like Discord API v10 objects (ids as strings,
ISO-8601 timestamps). The fake server never imports discord.py to build them, so a
payload the library cannot parse shows up as a test failure instead of being papered over.

``GuildSetup`` describes one guild the fake server hosts: its ids, roles, channels and the
users in it (the bot, the owner, an admin and a plain member by default). A fake may host several;
``GuildSetup.nth(n)`` builds the n-th with ids and names of its own. Every payload about a guild
takes that guild's setup, so a member's roles and permissions are always those of the guild the
event happens in.

Sharding: a guild belongs to shard ``shard_of(guild_id, shard_count)``, Discord's rule.
``GuildSetup.on_shard(n, shard, shard_count)`` is the n-th guild with an id on that shard, and
``spread_over_shards(guilds, shard_count)`` makes guilds that take the shards in turn.
"""

from __future__ import annotations

import dataclasses
import datetime
import mimetypes
import string
import time
from dataclasses import dataclass, field
from typing import Any

DISCORD_EPOCH_MS = 1_420_070_400_000

# Permission bits, see https://discord.com/developers/docs/topics/permissions
ADD_REACTIONS = 1 << 6
ADMINISTRATOR = 1 << 3
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_EXTERNAL_EMOJIS = 1 << 18
CONNECT = 1 << 20
SPEAK = 1 << 21
USE_APPLICATION_COMMANDS = 1 << 31
SEND_MESSAGES_IN_THREADS = 1 << 38
ALL_PERMISSIONS = (1 << 51) - 1

EVERYONE_PERMISSIONS = (
    ADD_REACTIONS
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | CONNECT
    | SPEAK
    | USE_APPLICATION_COMMANDS
    | SEND_MESSAGES_IN_THREADS
)
BOT_PERMISSIONS = EVERYONE_PERMISSIONS | MANAGE_MESSAGES

# Message flags
FLAG_VOICE_MESSAGE = 1 << 13
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7

# Message types
MESSAGE_DEFAULT = 0
MESSAGE_REPLY = 19
MESSAGE_CHAT_INPUT_COMMAND = 20

# Channel types
CHANNEL_TEXT = 0
CHANNEL_DM = 1
CHANNEL_VOICE = 2
CHANNEL_PUBLIC_THREAD = 11

JOINED_AT = "2024-01-01T00:00:00.000000+00:00"

# GuildSetup.nth(n) adds n * GUILD_ID_STRIDE to every id of the default guild: guild B's ids are
# 900_000_001_000_000_xxx, guild C's 900_000_002_000_000_xxx ..., far from the default guild's
# 900_000_000_000_xxx_xxx range, where tests pick the ids of the users and channels they add.
GUILD_ID_STRIDE = 1_000_000_000
# A guild's shard comes from its id's timestamp bits, above these: adding multiples of 1 << 22 to
# a guild id walks it across the shards while its other bits (and every other id) stay put.
SHARD_ID_SHIFT = 22


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard that receives a guild's events, by Discord's rule; DMs go to shard 0."""
    return (guild_id >> SHARD_ID_SHIFT) % shard_count


class Snowflakes:
    """Issues Discord-style snowflakes: the creation time in the top bits, strictly increasing.

    The time part matters: discord.py derives ``created_at`` from it, and treats an
    interaction whose id is older than 15 minutes as expired.
    """

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(candidate, self._last + 1)
        return self._last


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


@dataclass(frozen=True)
class FakeUser:
    """A Discord user, as listed by one guild's ``GuildSetup``.

    The identity (id, username, global_name, bot) is global; ``role_names`` are the user's roles
    in the guild whose setup lists this FakeUser (names of that setup's ``roles``). A person in
    several guilds is listed in each with the same id and username and that guild's roles, e.g.
    ``GuildSetup.nth(1, extra_users=[admin.with_roles()])``: an admin of the first guild who is a
    plain member of the second.
    """

    id: int
    username: str
    bot: bool = False
    role_names: tuple[str, ...] = ()
    global_name: str | None = None

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def with_roles(self, *role_names: str) -> FakeUser:
        """The same user with other roles: how to list them in another guild."""
        return dataclasses.replace(self, role_names=role_names)

    def same_person(self, other: FakeUser) -> bool:
        """Whether ``other`` is this user, perhaps as listed by another guild (other roles)."""
        return self.with_roles() == other.with_roles()


@dataclass
class GuildSetup:
    """A guild the fake server hosts (the first one given to ``FakeDiscord`` is its default guild).

    Every id can be overridden; ``nth(n)`` makes guilds whose ids do not collide. Members are
    ``users``: the bot (the same bot in every guild), the owner, an admin, a plain member and
    ``extra_users``; their roles here are the ``role_names`` of the FakeUser this setup lists.
    """

    guild_id: int = 900_000_000_000_000_001
    guild_name: str = "Loopback Guild"
    application_id: int = 900_000_000_000_000_100
    bot: FakeUser = field(
        default_factory=lambda: FakeUser(900_000_000_000_000_100, "trainerbot", bot=True, role_names=("Bot",))
    )
    owner: FakeUser = field(default_factory=lambda: FakeUser(900_000_000_000_000_201, "owner"))
    admin: FakeUser = field(default_factory=lambda: FakeUser(900_000_000_000_000_202, "admin", role_names=("Admin",)))
    member: FakeUser = field(default_factory=lambda: FakeUser(900_000_000_000_000_203, "member"))
    extra_users: list[FakeUser] = field(default_factory=list)
    everyone_permissions: int = EVERYONE_PERMISSIONS
    # role name -> (role id, permission bits); @everyone (id == guild_id) is implicit
    roles: dict[str, tuple[int, int]] = field(
        default_factory=lambda: {
            "Admin": (900_000_000_000_000_301, ADMINISTRATOR),
            "Bot": (900_000_000_000_000_302, BOT_PERMISSIONS),
        }
    )
    # channel name -> channel id; the first text channel is the default one in the test API
    text_channels: dict[str, int] = field(
        default_factory=lambda: {"general": 900_000_000_000_000_401, "bot-commands": 900_000_000_000_000_402}
    )
    voice_channels: dict[str, int] = field(default_factory=lambda: {"Voice": 900_000_000_000_000_451})
    # thread name -> (thread id, parent text channel name); public threads, active and joined
    threads: dict[str, tuple[int, str]] = field(
        default_factory=lambda: {"questions": (900_000_000_000_000_461, "general")}
    )

    @classmethod
    def nth(cls, n: int, **overrides: Any) -> GuildSetup:
        """The n-th guild of a fake hosting several (0: the default guild, 1: "Guild B", ...).

        Every id of the default setup except the bot's and the application's (shared by all
        guilds) is moved up by ``n * GUILD_ID_STRIDE``: guild, roles, channels, threads and its
        own owner, admin and member (``owner-b``, ``admin-b``, ``member-b``). ``overrides`` are
        GuildSetup fields, e.g. ``extra_users`` to add people of other guilds.
        """
        if n == 0:
            return cls(**overrides)
        base = cls()
        shift = n * GUILD_ID_STRIDE
        letter = string.ascii_uppercase[n] if n < len(string.ascii_uppercase) else str(n)

        def moved(user: FakeUser) -> FakeUser:
            return dataclasses.replace(user, id=user.id + shift, username=f"{user.username}-{letter.lower()}")

        numbered: dict[str, Any] = {
            "guild_id": base.guild_id + shift,
            "guild_name": f"Guild {letter}",
            "owner": moved(base.owner),
            "admin": moved(base.admin),
            "member": moved(base.member),
            "roles": {name: (role_id + shift, bits) for name, (role_id, bits) in base.roles.items()},
            "text_channels": {name: channel_id + shift for name, channel_id in base.text_channels.items()},
            "voice_channels": {name: channel_id + shift for name, channel_id in base.voice_channels.items()},
            "threads": {name: (thread_id + shift, parent) for name, (thread_id, parent) in base.threads.items()},
        }
        return dataclasses.replace(base, **{**numbered, **overrides})

    @classmethod
    def on_shard(cls, n: int, shard: int, shard_count: int, **overrides: Any) -> GuildSetup:
        """``nth(n)`` with a guild id on ``shard`` of ``shard_count`` (the rest of its ids as ``nth`` makes them).

        The id moves up by less than ``shard_count << 22``: within its own ``GUILD_ID_STRIDE``
        range for up to 238 shards, so it clashes with no other guild's ids.
        """
        if not 0 <= shard < shard_count:
            raise ValueError(f"shard {shard} is not one of {shard_count} shards (0 to {shard_count - 1})")
        guild = cls.nth(n, **overrides)
        moves = (shard - shard_of(guild.guild_id, shard_count)) % shard_count
        guild.guild_id += moves << SHARD_ID_SHIFT
        return guild

    @property
    def users(self) -> list[FakeUser]:
        """The guild's members, as this guild lists them (with their roles here)."""
        return [self.bot, self.owner, self.admin, self.member, *self.extra_users]

    @property
    def channel_id(self) -> int:
        """The guild's default text channel (the first in ``text_channels``)."""
        return next(iter(self.text_channels.values()))

    def channel_named(self, name: str) -> int:
        """The id of the guild's text channel, voice channel or thread called ``name``."""
        threads = {thread: thread_id for thread, (thread_id, _) in self.threads.items()}
        return {**self.text_channels, **self.voice_channels, **threads}[name]

    def listed(self, user_id: int) -> FakeUser | None:
        """The member with ``user_id`` as this guild lists them, or None if they are not in it."""
        return next((user for user in self.users if user.id == user_id), None)

    def has_member(self, user_id: int) -> bool:
        return self.listed(user_id) is not None

    def role_names_of(self, user: FakeUser) -> tuple[str, ...]:
        """The user's roles in this guild: those of the FakeUser this guild lists with their id.

        A FakeUser listed elsewhere (another guild's, with that guild's roles) gets this guild's
        roles; someone this guild does not list keeps their own ``role_names``.
        """
        return (self.listed(user.id) or user).role_names

    def role_ids(self, user: FakeUser) -> list[int]:
        return [self.roles[name][0] for name in self.role_names_of(user)]

    def permissions(self, user: FakeUser) -> int:
        """Guild-level permissions of a member, the way Discord computes them (no overwrites)."""
        if user.id == self.owner.id:
            return ALL_PERMISSIONS
        bits = self.everyone_permissions
        for name in self.role_names_of(user):
            bits |= self.roles[name][1]
        return ALL_PERMISSIONS if bits & ADMINISTRATOR else bits

    def own_ids(self) -> dict[int, str]:
        """Every id this guild owns (guild, roles, channels, threads) -> what it is, for clash checks."""
        ids = {self.guild_id: f"guild {self.guild_name!r}"}
        ids |= {role_id: f"role {name!r}" for name, (role_id, _) in self.roles.items()}
        ids |= {channel_id: f"channel {name!r}" for name, channel_id in self.text_channels.items()}
        ids |= {channel_id: f"voice channel {name!r}" for name, channel_id in self.voice_channels.items()}
        ids |= {thread_id: f"thread {name!r}" for name, (thread_id, _) in self.threads.items()}
        return ids


def spread_over_shards(guilds: int, shard_count: int) -> list[GuildSetup]:
    """``guilds`` guilds for a fake whose bot runs ``shard_count`` shards: guild n is on shard n % shard_count.

    The first is the default guild (its id moved onto shard 0), the others ``nth(1)``, ``nth(2)``...
    """
    return [GuildSetup.on_shard(n, n % shard_count, shard_count) for n in range(guilds)]


def check_guilds(setups: list[GuildSetup]) -> None:
    """Refuse guilds Discord could not have, with a clear message, before any payload is built.

    At least one guild; one bot and application for all; no id of one guild reused by another;
    a user listed by several guilds is the same person in each (only roles differ); nobody listed
    twice in a guild; every role name a member has is a role of that guild.
    """
    if not setups:
        raise ValueError("the fake Discord needs at least one guild")
    first = setups[0]
    taken: dict[int, str] = {}
    people: dict[int, FakeUser] = {}
    for setup in setups:
        where = f"guild {setup.guild_name!r} ({setup.guild_id})"
        if setup.bot.id != first.bot.id or setup.application_id != first.application_id:
            raise ValueError(
                f"{where}: the bot and the application are shared by all guilds; use the first guild's "
                f"(bot {first.bot.id}, application {first.application_id})"
            )
        own = setup.own_ids()
        clashes = sorted(own.keys() & taken.keys())
        if clashes:
            raise ValueError(f"id {clashes[0]} is {own[clashes[0]]} of {where} and also {taken[clashes[0]]}")
        taken |= {some_id: f"{what} of {where}" for some_id, what in own.items()}
        listed: set[int] = set()
        for user in setup.users:
            if user.id in listed:
                raise ValueError(f"{where} lists user {user.id} twice")
            listed.add(user.id)
            known = people.setdefault(user.id, user)
            if not known.same_person(user):
                raise ValueError(
                    f"user {user.id} is {known.username!r} in one guild and {user.username!r} in {where}: "
                    "a user's identity is global, only their roles differ per guild"
                )
            missing = [name for name in user.role_names if name not in setup.roles]
            if missing:
                raise ValueError(f"{user.username!r} has role(s) {missing} that {where} does not have")


def user_payload(user: FakeUser) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "username": user.username,
        "discriminator": "0",
        "global_name": user.global_name,
        "avatar": None,
        "bot": user.bot,
        "public_flags": 0,
    }


def client_user_payload(user: FakeUser) -> dict[str, Any]:
    """The bot's own user as returned by GET /users/@me and in READY."""
    return {**user_payload(user), "verified": True, "mfa_enabled": False, "flags": 0, "locale": "en-US"}


def oauth_user_payload(user: FakeUser) -> dict[str, Any]:
    """A person's own user as GET /users/@me returns it for their OAuth2 token (scope identify).

    No ``email`` nor ``verified``: those need the email scope, which the fake does not grant.
    """
    own = {"mfa_enabled": False, "flags": 0, "locale": "en-US", "premium_type": 0, "banner": None}
    return {**user_payload(user), **own, "accent_color": None}


def member_payload(setup: GuildSetup, user: FakeUser, *, with_user: bool = True) -> dict[str, Any]:
    """A member of ``setup``'s guild, with their roles there. Messages carry it without ``user``."""
    member: dict[str, Any] = {
        "roles": [str(role_id) for role_id in setup.role_ids(user)],
        "nick": None,
        "avatar": None,
        "joined_at": JOINED_AT,
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
        "communication_disabled_until": None,
    }
    if with_user:
        member["user"] = user_payload(user)
    return member


def role_payloads(setup: GuildSetup) -> list[dict[str, Any]]:
    everyone = ("@everyone", setup.guild_id, setup.everyone_permissions)
    others = [(name, role_id, bits) for name, (role_id, bits) in setup.roles.items()]
    result = []
    for position, (name, role_id, bits) in enumerate([everyone, *others]):
        role: dict[str, Any] = {
            "id": str(role_id),
            "name": name,
            "permissions": str(bits),
            "position": position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }
        if name in setup.role_names_of(setup.bot):
            role["managed"] = True
            role["tags"] = {"bot_id": str(setup.bot.id)}
        result.append(role)
    return result


def _guild_channel_base(guild_id: int, channel_id: int, name: str, position: int, kind: int) -> dict[str, Any]:
    return {
        "id": str(channel_id),
        "type": kind,
        "guild_id": str(guild_id),
        "name": name,
        "position": position,
        "permission_overwrites": [],
        "parent_id": None,
        "nsfw": False,
        "rate_limit_per_user": 0,
        "last_message_id": None,
        "flags": 0,
    }


def channel_payloads(setup: GuildSetup) -> list[dict[str, Any]]:
    channels = []
    for position, (name, channel_id) in enumerate(setup.text_channels.items()):
        channel = _guild_channel_base(setup.guild_id, channel_id, name, position, CHANNEL_TEXT)
        channel["topic"] = None
        channels.append(channel)
    for position, (name, channel_id) in enumerate(setup.voice_channels.items()):
        channel = _guild_channel_base(setup.guild_id, channel_id, name, position, CHANNEL_VOICE)
        channel.update(bitrate=64000, user_limit=0, rtc_region=None)
        channels.append(channel)
    return channels


def thread_payloads(setup: GuildSetup) -> list[dict[str, Any]]:
    """Active public threads, as GUILD_CREATE lists them (discord.py caches them on the guild)."""
    threads = []
    for name, (thread_id, parent) in setup.threads.items():
        thread = _guild_channel_base(setup.guild_id, thread_id, name, 0, CHANNEL_PUBLIC_THREAD)
        del thread["position"], thread["permission_overwrites"]
        thread.update(
            parent_id=str(setup.text_channels[parent]),
            owner_id=str(setup.owner.id),
            message_count=0,
            member_count=1,
            thread_metadata={
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": JOINED_AT,
                "locked": False,
            },
        )
        threads.append(thread)
    return threads


def dm_channel_payload(channel_id: int, recipient: FakeUser) -> dict[str, Any]:
    return {
        "id": str(channel_id),
        "type": CHANNEL_DM,
        "last_message_id": None,
        "recipients": [user_payload(recipient)],
        "flags": 0,
    }


def guild_payload(
    setup: GuildSetup, *, include_members: bool, voice_states: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """GUILD_CREATE data. Without the members intent Discord only sends the bot's own member.

    ``voice_states``: who is in which of the guild's voice channels now (without ``guild_id``).
    """
    members = setup.users if include_members else [setup.bot]
    return {
        "id": str(setup.guild_id),
        "name": setup.guild_name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(setup.owner.id),
        "region": None,
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "premium_progress_bar_enabled": False,
        "system_channel_id": str(next(iter(setup.text_channels.values()))),
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "preferred_locale": "en-US",
        "vanity_url_code": None,
        "features": [],
        "emojis": [],
        "stickers": [],
        "roles": role_payloads(setup),
        "joined_at": JOINED_AT,
        "large": False,
        "unavailable": False,
        # With the members intent, discord.py compares member_count with the members sent: if
        # they differ it asks for the rest (op 8) and delays on_ready by seconds.
        "member_count": len(setup.users),
        "members": [member_payload(setup, user) for user in members],
        "channels": channel_payloads(setup),
        "threads": thread_payloads(setup),
        "voice_states": voice_states or [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


def application_payload(setup: GuildSetup) -> dict[str, Any]:
    """GET /oauth2/applications/@me."""
    return {
        "id": str(setup.application_id),
        "name": setup.bot.username,
        "description": "",
        "icon": None,
        "bot_public": False,
        "bot_require_code_grant": False,
        "owner": user_payload(setup.owner),
        "verify_key": "0" * 64,
        "flags": 0,
        "team": None,
        "summary": "",
    }


def attachment_payload(
    attachment_id: int, filename: str, data: bytes, url: str, *, description: str | None = None
) -> dict[str, Any]:
    content_type, _ = mimetypes.guess_type(filename)
    attachment: dict[str, Any] = {
        "id": str(attachment_id),
        "filename": filename,
        "size": len(data),
        "url": url,
        "proxy_url": url,
        "content_type": content_type or "application/octet-stream",
    }
    if description is not None:
        attachment["description"] = description
    return attachment


def message_payload(
    *,
    message_id: int,
    channel_id: int,
    author: FakeUser,
    content: str,
    setup: GuildSetup | None = None,
    attachments: list[dict[str, Any]] | None = None,
    embeds: list[dict[str, Any]] | None = None,
    mentions: list[FakeUser] | None = None,
    mention_roles: list[int] | None = None,
    mention_everyone: bool = False,
    flags: int = 0,
    message_type: int = MESSAGE_DEFAULT,
) -> dict[str, Any]:
    """A message. Pass ``setup`` for guild channels: it adds guild_id and the author's member.

    Mentioned users who are members of that guild get their member object too, as on Discord.
    """
    message: dict[str, Any] = {
        "id": str(message_id),
        "channel_id": str(channel_id),
        "author": user_payload(author),
        "content": content,
        "timestamp": now_iso(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": mention_everyone,
        "mentions": [user_payload(user) for user in mentions or []],
        "mention_roles": [str(role_id) for role_id in mention_roles or []],
        "attachments": attachments or [],
        "embeds": embeds or [],
        "pinned": False,
        "type": message_type,
        "flags": flags,
        "components": [],
    }
    if setup is not None:
        message["guild_id"] = str(setup.guild_id)
        message["member"] = member_payload(setup, author, with_user=False)
        for mention, user in zip(message["mentions"], mentions or [], strict=True):
            if setup.has_member(user.id):
                mention["member"] = member_payload(setup, user, with_user=False)
    return message
