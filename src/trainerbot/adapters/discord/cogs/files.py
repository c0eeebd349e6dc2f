"""Server files: getfile and archive (owners and admins)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from discord import app_commands
from discord.ext import commands

from trainerbot.adapters.discord.limits import per_person
from trainerbot.adapters.discord.render import caller_of, for_admins, in_thread, send_reply, server_only

if TYPE_CHECKING:
    from trainerbot.adapters.discord.bot import TrainerBot


class Files(commands.Cog):
    def __init__(self, bot: TrainerBot) -> None:
        self.bot = bot

    @commands.hybrid_command()
    @app_commands.describe(path="A file in this server's folder, e.g. archives/faq.zip")
    @per_person(5, 60)
    @server_only()
    @for_admins
    async def getfile(self, ctx: commands.Context[TrainerBot], *, path: str) -> None:
        """Send a file from this server's folder (owners and admins)."""
        await ctx.defer()
        await send_reply(ctx, await in_thread(self.bot.services.files.getfile, caller_of(ctx), path))

    @commands.hybrid_command()
    @app_commands.describe(directory="A directory in this server's folder")
    @per_person(2, 60)
    @server_only()
    @for_admins
    async def archive(self, ctx: commands.Context[TrainerBot], *, directory: str) -> None:
        """Zip a directory of this server's folder (owners and admins)."""
        await ctx.defer()
        await send_reply(ctx, await in_thread(self.bot.services.files.archive, caller_of(ctx), directory))
