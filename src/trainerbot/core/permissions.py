"""Who may do what: commands that read server files or change the model are for admins."""

from __future__ import annotations

from trainerbot.core.errors import PermissionDenied
from trainerbot.core.messages import Caller


def require_admin(caller: Caller, action: str) -> None:
    if not caller.is_admin:
        # Front ends make nobody an admin in direct messages (guild_id None): admin rights come with a server.
        where = "" if caller.guild_id is not None else ", and only in a server"
        raise PermissionDenied(f"Sorry, only the bot's owners and members with an admin role can {action}{where}.")
