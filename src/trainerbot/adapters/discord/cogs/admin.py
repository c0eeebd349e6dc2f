"""Each server's settings (`!config`), and owner-only maintenance: registering slash commands."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from discord import app_commands
from discord.ext import commands

from trainerbot.adapters.discord.render import caller_of, for_owners, in_thread, send_reply, server_only
from trainerbot.types import Reply

if TYPE_CHECKING:
    from trainerbot.adapters.discord.bot import TrainerBot


async def owner_in_a_server(ctx: commands.Context[TrainerBot]) -> bool:
    """The bot's owners, in a server. One check, so that in a DM everyone hears first that it is for servers:
    discord.py does not keep the order of separate checks the same in the prefix and slash forms."""
    if ctx.guild is None:
        raise commands.NoPrivateMessage()
    if not await ctx.bot.is_owner(ctx.author):
        raise commands.NotOwner("Only the bot's owners can use this command.")
    return True


class Admin(commands.Cog):
    def __init__(self, bot: TrainerBot) -> None:
        self.bot = bot

    @commands.hybrid_command()
    @app_commands.describe(scope="`global` (every server, the default) or `here` (this server only, at once)")
    @server_only()
    @commands.check(owner_in_a_server)
    @for_owners
    async def sync(self, ctx: commands.Context[TrainerBot], scope: str = "global") -> None:
        """Register the slash commands with Discord: `global`, or `here` for this server only (owners)."""
        if scope == "here" and ctx.guild is not None:
            self.bot.tree.copy_global_to(guild=ctx.guild)
            synced = await self.bot.tree.sync(guild=ctx.guild)
            where = "this server"
        else:
            synced = await self.bot.tree.sync()
            where = "every server (Discord may take up to an hour to show them)"
        await send_reply(ctx, Reply(f"Synced {len(synced)} slash commands to {where}."))

    @commands.hybrid_command()
    @app_commands.describe(
        setting="`admin-roles <roles>`, `bot-wide on|off` or `persona <text>`; leave out to see them"
    )
    @server_only()
    async def config(self, ctx: commands.Context[TrainerBot], *, setting: str = "") -> None:
        """Show this server's settings, or change one (its admins): admin roles, bot-wide knowledge, persona."""
        roles = None
        if ctx.guild is not None:  # a role mention names the role: `@Mods` arrives as <@&id>
            guild = ctx.guild
            setting = ROLE_MENTION.sub(lambda m: _role_name(guild.get_role(int(m.group(1))), m.group(0)), setting)
            roles = [role.name for role in guild.roles if not role.is_default()]
        await send_reply(ctx, await in_thread(self.bot.services.servers.config, caller_of(ctx), setting, roles))


ROLE_MENTION = re.compile(r"<@&(\d{15,20})>")


def _role_name(role: object, mention: str) -> str:
    return getattr(role, "name", mention)
