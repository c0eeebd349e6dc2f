"""Who may do what, and where.

Owners (the settings' owner ids and the application's owner) may do everything, everywhere. A
server's admins (its owner, members with the Administrator permission, and members holding one
of the admin roles that server configured, else ``TRAINERBOT_ADMIN_ROLES``) act on their
server's knowledge base and files only. Everyone else talks to the bot and gives feedback. In
direct messages nobody is an admin; what the bot knows there is the bot-wide base, which only
owners may see and change.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainerbot.errors import PermissionDenied
from trainerbot.storage.knowledge import Knowledge
from trainerbot.types import GLOBAL_BASE, Caller

BOT_WIDE = "the bot-wide knowledge (what I answer in direct messages and in every server that keeps it on)"


class Access:
    def __init__(self, knowledge: Knowledge, default_admin_roles: Sequence[str]) -> None:
        self._knowledge = knowledge
        self.default_admin_roles = tuple(default_admin_roles)

    def admin_roles(self, guild_id: int) -> tuple[str, ...]:
        roles = self._knowledge.settings(guild_id).admin_roles
        return self.default_admin_roles if roles is None else roles

    def is_admin(self, caller: Caller) -> bool:
        """An owner anywhere; in a server, its owner, its Administrators and holders of its admin roles."""
        if caller.is_owner:
            return True
        if caller.guild_id is None:
            return False
        if caller.manages_server:
            return True
        wanted = {role.casefold() for role in self.admin_roles(caller.guild_id)}
        return any(role.casefold() in wanted for role in caller.roles)

    def require_admin(self, caller: Caller, action: str) -> None:
        if not self.is_admin(caller):
            # Admin rights come with a server: nobody is an admin in a DM.
            where = "" if caller.guild_id is not None else ", and only in a server"
            raise PermissionDenied(f"Sorry, only the bot's owners and members with an admin role can {action}{where}.")

    def require_owner(self, caller: Caller, action: str) -> None:
        if not caller.is_owner:
            raise PermissionDenied(f"Sorry, only the bot's owners can {action}.")

    def require_admin_of(self, caller: Caller, base: int, action: str) -> None:
        """For a base named outright (the dashboard's pages name one) rather than the one the caller is in:
        the bot-wide base is its owners', a server's is its admins', and the caller speaks from that server."""
        if base == GLOBAL_BASE:
            self.require_owner(caller, f"{action} in {BOT_WIDE}")
        elif caller.guild_id != base and not caller.is_owner:
            raise PermissionDenied("Sorry, that belongs to another server.")
        self.require_admin(caller, action)

    def require_view(self, caller: Caller, base: int) -> None:
        """Jobs, models, test runs and failures of a base are shown to its server's members only;
        the bot-wide base's to owners only (in a DM, that is the base the commands would show)."""
        if base == GLOBAL_BASE and not caller.is_owner:
            raise PermissionDenied(
                f"In direct messages this would show {BOT_WIDE}, which only the bot's owners can see. "
                "Use it in your server to see that server's."
            )
        if base != GLOBAL_BASE and caller.guild_id != base and not caller.is_owner:
            raise PermissionDenied("Sorry, that belongs to another server.")
