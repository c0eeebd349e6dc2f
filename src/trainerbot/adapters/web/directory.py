"""Who the signed-in person is in each server, as the bot's own rules need it (owner, Administrator, roles).

With the bot connected (the dashboard in its process) the gateway's cache answers: the member's
current roles and permissions, exactly what a command of theirs would carry. `trainerbot web` with
the bot's token asks Discord's REST API the same, through discord.py, remembering answers a minute.
Without a token (the console's process) what Discord said at sign-in answers: the servers they are
in, whether they own each or hold Administrator there; roles are then unknown, so admin roles grant
nothing there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import discord

from trainerbot.storage.sessions import GuildSeen

if TYPE_CHECKING:
    from trainerbot.adapters.discord.bot import TrainerBot


@dataclass(frozen=True)
class Server:
    id: int
    name: str


@dataclass(frozen=True)
class Membership:
    manages_server: bool  # owns it, or holds the Administrator permission
    roles: frozenset[str]  # names of their roles there


class Directory(Protocol):
    async def servers(self) -> list[Server]:
        """The servers the bot is in (or, knowing nothing of Discord, those with anything stored)."""
        ...

    def is_owner(self, user_id: int) -> bool: ...

    async def membership(self, server_id: int, user_id: int, seen: Collection[GuildSeen]) -> Membership | None:
        """Their standing in a server; None when they are not a member of it (it then does not exist for them)."""
        ...


class GatewayDirectory:
    """The running bot's view: its servers and their members, kept current by the gateway.

    A process that runs some of the bot's shards sees only their servers; the others' are asked of Discord's
    REST API with the same login (``RestDirectory``), so its dashboard shows a person every server they share
    with the bot, as one process's does.
    """

    def __init__(self, bot: TrainerBot, forget_after: float = 60.0) -> None:
        self.bot = bot
        self.forget_after = forget_after
        # (server, person) Discord said is not a member, and when: asked again only after ``forget_after``
        self._not_members: dict[tuple[int, int], float] = {}
        self._elsewhere = RestDirectory(bot, owner_ids=(), remember=forget_after)

    def _all_shards(self) -> bool:
        ids, count = self.bot.shard_ids, self.bot.shard_count
        return ids is None or count is None or len(set(ids)) >= count

    async def servers(self) -> list[Server]:
        if not self._all_shards():
            return await self._elsewhere.servers()
        return [Server(g.id, g.name) for g in self.bot.guilds]

    def is_owner(self, user_id: int) -> bool:
        from trainerbot.adapters.discord.render import is_owner

        return is_owner(self.bot, user_id)

    async def membership(self, server_id: int, user_id: int, seen: Collection[GuildSeen]) -> Membership | None:
        guild = self.bot.get_guild(server_id)
        if guild is None:
            return None if self._all_shards() else await self._elsewhere.membership(server_id, user_id, seen)
        member = guild.get_member(user_id)
        if member is None and guild.chunked:  # the cache holds every member: not one
            return None
        if member is None:  # not in the cache (a large server not chunked): ask Discord, once a minute at most
            asked = self._not_members.get((server_id, user_id))
            if asked is not None and time.monotonic() - asked < self.forget_after:
                return None
            try:
                member = await guild.fetch_member(user_id)
            except (discord.NotFound, discord.Forbidden):
                if len(self._not_members) > 10_000:
                    self._not_members.clear()
                self._not_members[(server_id, user_id)] = time.monotonic()
                return None
        return Membership(
            manages_server=guild.owner_id == user_id or member.guild_permissions.administrator,
            roles=frozenset(role.name for role in member.roles if not role.is_default()),
        )


class RestDirectory:
    """The bot's view through Discord's REST API, for a dashboard whose bot runs in another process.

    discord.py logs in without a gateway connection; servers, their roles and members are fetched
    when asked and remembered for ``remember`` seconds (Discord rate-limits these routes).
    """

    def __init__(self, client: discord.Client, owner_ids: Collection[int], remember: float = 60.0) -> None:
        self.client = client
        self.owner_ids = set(owner_ids)
        self.remember = remember
        self._servers: tuple[float, list[Server]] | None = None
        self._guilds: dict[int, tuple[float, discord.Guild | None]] = {}
        self._members: dict[tuple[int, int], tuple[float, Membership | None]] = {}

    @classmethod
    async def connect(cls, token: str, owner_ids: Collection[int]) -> RestDirectory:
        """Logs in with the bot's token (no gateway); the application's owners join the configured ones."""
        client = discord.Client(intents=discord.Intents.none())
        await client.login(token)
        owners = set(owner_ids)
        if not owners:  # as the bot does: no owners configured, the application's owner (or its team) is one
            info = await client.application_info()
            owners = {m.id for m in info.team.members} if info.team is not None else {info.owner.id}
        return cls(client, owners)

    async def close(self) -> None:
        await self.client.close()

    def _fresh(self, stamp: float) -> bool:
        return time.monotonic() - stamp < self.remember

    async def servers(self) -> list[Server]:
        if self._servers is None or not self._fresh(self._servers[0]):
            found = [Server(g.id, g.name) async for g in self.client.fetch_guilds(limit=None)]
            self._servers = (time.monotonic(), found)
        return self._servers[1]

    def is_owner(self, user_id: int) -> bool:
        return user_id in self.owner_ids

    async def membership(self, server_id: int, user_id: int, seen: Collection[GuildSeen]) -> Membership | None:
        held = self._members.get((server_id, user_id))
        if held is not None and self._fresh(held[0]):
            return held[1]
        guild = await self._guild(server_id)
        found = None
        if guild is not None:
            try:
                member = await guild.fetch_member(user_id)
            except (discord.NotFound, discord.Forbidden):
                member = None
            if member is not None:
                found = Membership(
                    manages_server=guild.owner_id == user_id or member.guild_permissions.administrator,
                    roles=frozenset(role.name for role in member.roles if not role.is_default()),
                )
        if len(self._members) > 10_000:
            self._members.clear()
        self._members[(server_id, user_id)] = (time.monotonic(), found)
        return found

    async def _guild(self, server_id: int) -> discord.Guild | None:
        held = self._guilds.get(server_id)
        if held is not None and self._fresh(held[0]):
            return held[1]
        try:
            guild: discord.Guild | None = await self.client.fetch_guild(server_id)
        except (discord.NotFound, discord.Forbidden):  # not the bot's server
            guild = None
        self._guilds[server_id] = (time.monotonic(), guild)
        return guild


class StoredDirectory:
    """Without the bot: the servers that have anything stored, and what Discord said at sign-in."""

    def __init__(self, bases: Callable[[], list[int]], owner_ids: Collection[int]) -> None:
        self._bases = bases
        self.owner_ids = frozenset(owner_ids)

    async def servers(self) -> list[Server]:
        bases = await asyncio.to_thread(self._bases)
        return [Server(base, "") for base in bases if base != 0]  # names: what Discord said at sign-in

    def is_owner(self, user_id: int) -> bool:
        return user_id in self.owner_ids

    async def membership(self, server_id: int, user_id: int, seen: Collection[GuildSeen]) -> Membership | None:
        for guild in seen:
            if guild.id == server_id:
                return Membership(manages_server=guild.owner or guild.administrator, roles=frozenset())
        return None
