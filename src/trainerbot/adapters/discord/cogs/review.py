"""The review inbox on Discord: `!review`, `!answer` and `!dismiss`, for a server's admins (in DMs, the owners).

What the inbox shows quotes other people's words, so its replies ping nobody.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from discord import app_commands
from discord.ext import commands

from trainerbot.adapters.discord.limits import per_person
from trainerbot.adapters.discord.render import NO_MENTIONS, caller_of, for_admins, in_thread, owners_in_dms, send_reply

if TYPE_CHECKING:
    from trainerbot.adapters.discord.bot import TrainerBot


class Review(commands.Cog):
    def __init__(self, bot: TrainerBot) -> None:
        self.bot = bot

    @property
    def review_service(self):
        return self.bot.services.review

    @commands.hybrid_command()
    @per_person(5, 60)
    @owners_in_dms
    @for_admins
    async def review(self, ctx: commands.Context[TrainerBot]) -> None:
        """What I couldn't answer, by topic (admins).

        Messages I wasn't confident about, replies rated 👎 and members' corrections, grouped by
        meaning, most asked first, with a chart. In direct messages: the bot-wide knowledge's (owners).
        """
        await ctx.defer()
        await send_reply(ctx, await in_thread(self.review_service.review, caller_of(ctx)), NO_MENTIONS)

    @commands.hybrid_command(usage="<topic> <answer> | <topic> like <an answer I give> | <topic> (a suggestion)")
    @app_commands.describe(
        topic="The topic's number, as the review lists it.",
        answer="The answer for all its questions, or `like <an answer I give>`; none accepts a suggestion.",
    )
    @owners_in_dms
    @for_admins
    async def answer(self, ctx: commands.Context[TrainerBot], topic: str, *, answer: str = "") -> None:
        """Answer a review topic (admins).

        Every question of the topic gets the answer from the next message on; `like <an answer I give>`
        adds them to one already taught. On a member's suggestion, no answer accepts it.
        """
        reply = await in_thread(self.review_service.answer, caller_of(ctx), topic, answer)
        await send_reply(ctx, reply, NO_MENTIONS)

    @commands.hybrid_command()
    @app_commands.describe(topic="The topic's number, as the review lists it.")
    @owners_in_dms
    @for_admins
    async def dismiss(self, ctx: commands.Context[TrainerBot], topic: str) -> None:
        """Hide a review topic (admins).

        On a member's suggestion, this rejects it.
        """
        await send_reply(ctx, await in_thread(self.review_service.dismiss, caller_of(ctx), topic), NO_MENTIONS)
