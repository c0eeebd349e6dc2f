"""Greeting, help and instructions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from discord import app_commands
from discord.ext import commands

from trainerbot.adapters.discord.limits import per_person
from trainerbot.adapters.discord.render import caller_of, in_thread, send_reply
from trainerbot.types import Reply

if TYPE_CHECKING:
    from trainerbot.adapters.discord.bot import TrainerBot


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
        prefix = ctx.clean_prefix
        if command:
            found = self.bot.get_command(command.strip().lstrip(prefix))
            if found is None or found.hidden:
                raise commands.BadArgument(f"There is no command `{command}`.")
            text = f"`{prefix}{found.qualified_name} {found.signature}".rstrip() + f"`\n{found.help}"
            await send_reply(ctx, Reply(text))
            return
        lines = [
            f"`{prefix}{c.name}` {c.short_doc}" for c in sorted(self.bot.commands, key=lambda c: c.name) if not c.hidden
        ]
        lines.append(
            f"Every command is also a slash command. `{prefix}help <command>` explains one; "
            f"`{prefix}instruction` sends the full guide."
        )
        await send_reply(ctx, Reply("\n".join(lines)))
