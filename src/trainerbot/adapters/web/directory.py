"""Who the signed-in person is in each server, as the bot's own rules need it (owner, Administrator, roles).

With the bot connected (the dashboard in its process) the gateway's cache answers: the member's
current roles and permissions, exactly what a command of theirs would carry. Without it (the
console's process, or `trainerbot web` with no bot beside it) what Discord said at sign-in answers:
the servers they are in, whether they own each or hold Administrator there; roles are then unknown,
so admin roles grant nothing on the dashboard until the bot runs beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

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
    def servers(self) -> list[Server]:
        """The servers the bot is in (or, without the bot, those with anything stored)."""
        ...

    def is_owner(self, user_id: int) -> bool: ...

    async def membership(self, server_id: int, user_id: int, seen: Collection[GuildSeen]) -> Membership | None:
        """Their standing in a server; None when they are not a member of it (it then does not exist for them)."""
        ...


class GatewayDirectory:
    """The running bot's view: its servers and their members, kept current by the gateway."""

    def __init__(self, bot: TrainerBot, forget_after: float = 60.0) -> None:
        self.bot = bot
        self.forget_after = forget_after
        # (server, person) Discord said is not a member, and when: asked again only after ``forget_after``
        self._not_members: dict[tuple[int, int], float] = {}

    def servers(self) -> list[Server]:
        return sorted((Server(g.id, g.name) for g in self.bot.guilds), key=lambda s: s.name.casefold())

    def is_owner(self, user_id: int) -> bool:
        from trainerbot.adapters.discord.render import is_owner

        return is_owner(self.bot, user_id)

    async def membership(self, server_id: int, user_id: int, seen: Collection[GuildSeen]) -> Membership | None:
        import discord

        guild = self.bot.get_guild(server_id)
        if guild is None:
            return None
        member = guild.get_member(user_id)
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


class StoredDirectory:
    """Without the bot: the servers that have anything stored, and what Discord said at sign-in."""

    def __init__(self, bases: Callable[[], list[int]], owner_ids: Collection[int]) -> None:
        self._bases = bases
        self.owner_ids = frozenset(owner_ids)

    def servers(self) -> list[Server]:
        return [Server(base, "") for base in self._bases() if base != 0]  # names: what Discord said at sign-in

    def is_owner(self, user_id: int) -> bool:
        return user_id in self.owner_ids

    async def membership(self, server_id: int, user_id: int, seen: Collection[GuildSeen]) -> Membership | None:
        for guild in seen:
            if guild.id == server_id:
                return Membership(manages_server=guild.owner or guild.administrator, roles=frozenset())
        return None
