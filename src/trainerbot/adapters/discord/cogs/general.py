"""Greeting, help and instructions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from discord import app_commands
from discord.ext import commands

from trainerbot.adapters.discord.limits import per_person
from trainerbot.adapters.discord.render import (
    audience,
    caller_of,
    in_thread,
    is_owner,
    send_reply,
    shown_prefix,
    works_in_dms,
)
from trainerbot.types import Reply

if TYPE_CHECKING:
    from trainerbot.adapters.discord.bot import TrainerBot


RANKS = {"everyone": 0, "admins": 1, "owners": 2}  # who sees a command explained in `!help`


class General(commands.Cog):
    def __init__(self, bot: TrainerBot) -> None:
        self.bot = bot

    @commands.hybrid_command()
    async def hi(self, ctx: commands.Context[TrainerBot]) -> None:
        """Say hello."""
        await send_reply(ctx, self.bot.services.conversation.greet(caller_of(ctx)))

    @commands.hybrid_command()
    @per_person(2, 60)
    async def instruction(self, ctx: commands.Context[TrainerBot]) -> None:
        """Send the instructions: every command and how to teach the bot."""
        await send_reply(ctx, await in_thread(self.bot.services.conversation.instructions))

    @commands.hybrid_command(name="help")
    @app_commands.describe(command="A command to explain, e.g. train; leave out for the list")
    async def help_command(self, ctx: commands.Context[TrainerBot], command: str | None = None) -> None:
        """List the commands, or explain one."""
        prefix = shown_prefix(ctx)
        if command:
            found = self.bot.get_command(command.strip().lstrip(prefix))
            if found is None or found.hidden:
                raise commands.BadArgument(f"There is no command `{command}`.")
            text = f"`{prefix}{found.qualified_name} {found.signature}".rstrip() + f"`\n{found.help}"
            if not works_in_dms(found, for_owner=True):
                text += "\nIt works in a server, not in direct messages."
            await send_reply(ctx, Reply(text))
            return
        in_dm = ctx.guild is None
        owner = is_owner(self.bot, ctx.author.id)
        admin = not in_dm and await in_thread(self.bot.services.access.is_admin, caller_of(ctx))  # reads settings
        rank = 2 if owner else 1 if admin else 0
        offered = [
            c
            for c in sorted(self.bot.commands, key=lambda c: c.name)
            if not c.hidden and (not in_dm or works_in_dms(c, for_owner=owner))
        ]
        theirs = [c for c in offered if RANKS[audience(c)] <= rank]
        lines = [f"`{prefix}{c.name}` {c.short_doc}" for c in theirs]
        for level in ("admins", "owners"):  # named, so nobody wonders where they are, but not explained
            others = [f"`{prefix}{c.name}`" for c in offered if c not in theirs and audience(c) == level]
            if others:
                lines.append(f"For {level}: {', '.join(others)}.")
        if in_dm:
            lines.append("These work here; in a server, its admins have more to teach and run its bot.")
        lines.append(
            f"Every command is also a slash command. `{prefix}help <command>` explains one; "
            f"`{prefix}instruction` sends the full guide."
        )
        await send_reply(ctx, Reply("\n".join(lines)))
