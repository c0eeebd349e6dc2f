"""A server's own settings (`!config`): its admin roles, whether the bot-wide base answers there,
its default persona, and how much of its quotas it uses."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from trainerbot.core.conversation import MAX_PERSONA, Conversation
from trainerbot.core.files import Folders
from trainerbot.core.permissions import Access
from trainerbot.core.teaching import Quotas
from trainerbot.core.text import short, valid_text
from trainerbot.errors import InvalidInput, NotReady
from trainerbot.storage.audit import Change
from trainerbot.storage.store import Store
from trainerbot.types import Caller, Reply, human_size

CONFIG_USAGE = (
    "`!config` shows this server's settings; admins change them with `!config admin-roles <role>, <role>` "
    "(or `default`), `!config bot-wide on|off`, `!config persona <text>` (or `reset`)."
)
MAX_ROLES = 20
SWITCH = {"on": True, "yes": True, "true": True, "off": False, "no": False, "false": False}


@dataclass(frozen=True)
class ServerSummary:
    admin_roles: tuple[str, ...]
    roles_set_here: bool  # else the bot's default (TRAINERBOT_ADMIN_ROLES)
    use_global: bool
    persona: str  # the server's default persona, or the bot's
    persona_set_here: bool
    examples: int
    max_examples: int
    stored_bytes: int  # examples' text and the server folder's files
    max_bytes: int
    jobs_last_hour: int
    jobs_per_hour: int


class ServerConfig:
    def __init__(self, store: Store, access: Access, folders: Folders, quotas: Quotas, conversation: Conversation):
        self.store = store
        self.access = access
        self.folders = folders
        self.quotas = quotas
        self.conversation = conversation

    def config(self, caller: Caller, text: str, server_roles: Collection[str] | None = None) -> Reply:
        """Shows the settings (anyone in the server), or changes one (its admins).

        ``server_roles``: the names of the server's roles, where the front end knows them: an admin role
        that is none of them is pointed out.
        """
        if caller.guild_id is None:
            raise NotReady("`!config` is about a server's settings: use it in your server.")
        name, _, value = text.strip().partition(" ")
        name, value = name.lower().replace("_", "-"), value.strip()
        if not name:
            return self.show(caller)
        changes = {
            "admin-roles": partial(self._admin_roles, server_roles=server_roles),
            "bot-wide": self._bot_wide,
            "persona": self._persona,
        }
        change = changes.get(name)
        if change is None:
            raise InvalidInput(f"There is no setting `{name[:40]}`. {CONFIG_USAGE}")
        self.access.require_admin(caller, "change this server's settings")
        return change(caller, value)

    def summary(self, caller: Caller) -> ServerSummary:
        """The server's settings and how much of its quotas it uses (anyone in the server may see them)."""
        if caller.guild_id is None:
            raise NotReady("`!config` is about a server's settings: use it in your server.")
        base = caller.guild_id
        settings = self.store.knowledge.settings(base)
        examples, text_bytes = self.store.knowledge.stored(base)
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="milliseconds")
        return ServerSummary(
            admin_roles=self.access.admin_roles(base),
            roles_set_here=settings.admin_roles is not None,
            use_global=settings.use_global,
            persona=settings.persona or self.conversation.options.persona,
            persona_set_here=settings.persona is not None,
            examples=examples,
            max_examples=self.quotas.examples,
            stored_bytes=text_bytes + self.folders.size(base),
            max_bytes=self.quotas.stored_bytes,
            jobs_last_hour=self.store.jobs.started_since(base, since),
            jobs_per_hour=self.quotas.jobs_per_hour,
        )

    def show(self, caller: Caller) -> Reply:
        now = self.summary(caller)
        roles_text = ", ".join(f"`{role}`" for role in now.admin_roles) or "none"
        origin = "set here" if now.roles_set_here else "the bot's default"
        lines = [
            "This server's settings:",
            f"• admin roles ({origin}): {roles_text}; the server's owner and members with the Administrator "
            "permission are admins too",
            f"• bot-wide knowledge: {'on' if now.use_global else 'off'} (what the bot's owners taught "
            "answers here after this server's own)",
            f"• default persona ({'set here' if now.persona_set_here else 'the bot default'}): {now.persona[:300]}",
            f"• quotas: {now.examples:,} of {now.max_examples:,} examples, {human_size(now.stored_bytes)} of "
            f"{human_size(now.max_bytes)} stored, {now.jobs_last_hour} of {now.jobs_per_hour} training jobs "
            "in the last hour",
            CONFIG_USAGE,
        ]
        return Reply("\n".join(lines))

    def _admin_roles(self, caller: Caller, value: str, server_roles: Collection[str] | None = None) -> Reply:
        assert caller.guild_id is not None
        if not value:
            raise InvalidInput("Name the roles: `!config admin-roles Moderators, Trainers` (or `default`).")
        roles = None if value.lower() == "default" else [valid_text(r.strip()) for r in value.split(",") if r.strip()]
        if roles is not None and (len(roles) > MAX_ROLES or any(len(role) > 100 for role in roles)):
            raise InvalidInput(f"Give at most {MAX_ROLES} role names of at most 100 characters each.")
        wanted = self.access.default_admin_roles if roles is None else tuple(roles)
        held = {role.casefold() for role in caller.roles}
        if not (caller.is_owner or caller.manages_server or any(role.casefold() in held for role in wanted)):
            raise InvalidInput(
                "That would take your own admin rights away: you hold none of those roles. Include one of yours, "
                "or ask the server's owner or an Administrator to change it. Nothing changed."
            )
        said = "admin roles: the bot's default" if roles is None else f"admin roles: {', '.join(roles) or 'none'}"
        self.store.knowledge.change_settings(
            caller.guild_id, caller.user_id, admin_roles=roles, change=Change.by(caller, "settings", said)
        )
        now = self.access.admin_roles(caller.guild_id)
        shown = ", ".join(f"`{role}`" for role in now) or "none"
        reply = f"Admin roles here are now: {shown} (with the server's owner and its Administrators)."
        if server_roles is not None:  # a typo, or a role still to be made: said, since it makes nobody an admin
            existing = {role.casefold() for role in server_roles}
            if missing := [role for role in now if role.casefold() not in existing]:
                named = ", ".join(f"`{short(role, 40)}`" for role in missing)
                listed = ", ".join(f"`{short(role, 40)}`" for role in sorted(server_roles)[:20]) or "none"
                reply += f"\nNo role here is called {named} yet (this server's roles: {listed})."
        return Reply(reply)

    def _bot_wide(self, caller: Caller, value: str) -> Reply:
        assert caller.guild_id is not None
        on = SWITCH.get(value.lower())
        if on is None:
            raise InvalidInput("Say `!config bot-wide on` or `!config bot-wide off`.")
        said = f"bot-wide knowledge: {'on' if on else 'off'}"
        self.store.knowledge.change_settings(
            caller.guild_id, caller.user_id, use_global=on, change=Change.by(caller, "settings", said)
        )
        if on:
            return Reply("The bot-wide knowledge answers here again, after this server's own.")
        return Reply("Only what this server taught answers here now; the bot-wide knowledge is off.")

    def _persona(self, caller: Caller, value: str) -> Reply:
        assert caller.guild_id is not None
        if not value:
            raise InvalidInput("Give the persona's text, or `reset`: `!config persona You are a pirate.`")
        value = valid_text(value)
        if len(value) > MAX_PERSONA:
            raise InvalidInput(f"A persona must be at most {MAX_PERSONA} characters; this one has {len(value)}.")
        reset = value.lower() == "reset"
        said = "default persona: the bot's" if reset else f"default persona: {value}"
        self.store.knowledge.change_settings(
            caller.guild_id,
            caller.user_id,
            persona=None if reset else value,
            change=Change.by(caller, "settings", said),
        )
        if reset:
            return Reply("This server's channels use the bot's default persona again (unless a channel set its own).")
        return Reply(f"This server's default persona (channels with their own keep theirs):\n> {value}")
