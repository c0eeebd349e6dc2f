"""The one error handler: every command error ends here, in a documented order.

1. Unknown command: "did you mean" with the closest command names.
2. UserError from the core (bad file, refused path, no permission, ...): its message as is.
3. Bad or missing arguments: what was wrong and the command's usage line.
4. A cooldown: when the command can be used again (attempts that ended in 2. or 3. do not count).
   Failed checks (owner-only commands, DMs): a polite refusal.
5. Anything else: a short apology with a reference code that is also in the log,
   next to the traceback. The bot keeps running.
"""

from __future__ import annotations

import difflib
import logging
import math
import uuid
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from trainerbot.adapters.discord.delivery import answer_nonce, send_once
from trainerbot.adapters.discord.render import ALLOWED_MENTIONS, in_their_form, is_owner, shown_prefix
from trainerbot.errors import UserError

if TYPE_CHECKING:
    from trainerbot.adapters.discord.bot import TrainerBot

log = logging.getLogger(__name__)


def unwrap(error: BaseException) -> BaseException:
    """The exception under discord.py's wrappers (CommandInvokeError, HybridCommandError, ...)."""
    while (
        isinstance(error, commands.CommandInvokeError | commands.HybridCommandError | app_commands.CommandInvokeError)
        and getattr(error, "original", None) is not None
    ):
        error = error.original
    return error


# Errors that mean the command did not do its work: they do not count against a cooldown.
MISTAKES = (UserError, commands.UserInputError, app_commands.TransformerError, commands.CheckFailure)
# An owner who tries `!train` in a DM wants the bot-wide knowledge, which DMs answer from.
BOT_WIDE_TEACHING = (
    " What I answer in direct messages is the bot-wide knowledge: teach it in a server with "
    "`!train --global question => answer`."
)
MAX_MESSAGE = 2000  # Discord refuses longer messages, and the user would then hear nothing at all
MAX_ECHO = 80  # of what the user typed, quoted back in an error


def _echo(typed: str) -> str:
    """What the user typed, as an error quotes it: short, and without backticks that would end the quote."""
    typed = typed.replace("`", "'")
    return typed if len(typed) <= MAX_ECHO else typed[: MAX_ECHO - 1] + "…"


def fit(text: str) -> str:
    """An error message cut to Discord's limit; messages quote input, and input can be 4000 characters."""
    if len(text) <= MAX_MESSAGE:
        return text
    cut = text[: MAX_MESSAGE - 5]
    return cut + ("\n```…" if cut.count("```") % 2 else "…")


def usage(ctx: commands.Context[TrainerBot]) -> str:
    command = ctx.command
    if not isinstance(command, commands.Command):  # none, or a slash-only command: Discord shows its options
        return ""
    return f"Usage: `{shown_prefix(ctx)}{command.qualified_name} {command.signature}".rstrip() + "`"


def argument_problem(ctx: commands.Context[TrainerBot], error: BaseException) -> str:
    """One plain sentence on what is wrong with a command's arguments, in place of the library's wording."""
    name = f"`{shown_prefix(ctx)}{ctx.command.qualified_name}`" if ctx.command else "That command"
    if isinstance(error, commands.MissingRequiredArgument):
        return f"{name} needs {_words(error.param.name)}."
    if isinstance(error, commands.TooManyArguments):
        return f"{name} got more than it takes."
    if isinstance(error, commands.ArgumentParsingError):  # quotes that do not close, or close mid-word
        return f'{name} could not read its words: a quote mark (") is not closed, or is in the middle of a word.'
    library = isinstance(error, commands.BadBoolArgument) or str(error).startswith("Converting to")
    if isinstance(error, commands.BadArgument) and not library:
        return str(error)  # this bot's own converters word their errors themselves
    parameter = ctx.current_parameter
    typed = _echo(ctx.current_argument or "")
    if isinstance(error, commands.BadLiteralArgument):
        choices = ", ".join(f"`{value}`" for value in error.literals)
        return f"`{typed}` is not one of {choices} (for {_words(error.param.name)})."
    if parameter is not None:
        if isinstance(error, commands.BadBoolArgument) or parameter.annotation is bool:
            return f"`{typed}` is not yes or no (for {_words(parameter.name)})."
        if parameter.annotation is int:
            return f"`{typed}` is not a number, and {_words(parameter.name)} is one."
        return f"`{typed}` is not a valid {_words(parameter.name)}."
    return f"{name} did not understand its arguments."


def _words(parameter: str) -> str:
    """A parameter's name as words: ``job_id`` is "job id", ``message_id`` "message id"."""
    return parameter.replace("_", " ")


class ErrorHandler(commands.Cog):
    def __init__(self, bot: TrainerBot) -> None:
        self.bot = bot

    def message_for(self, ctx: commands.Context[TrainerBot], error: BaseException) -> str:
        error = unwrap(error)
        if isinstance(error, commands.CommandNotFound):
            typed = _echo(ctx.invoked_with or "")
            names = [c.name for c in self.bot.commands if not c.hidden]
            close = difflib.get_close_matches(typed[:MAX_ECHO], names, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(f'`{shown_prefix(ctx)}{n}`' for n in close)}?" if close else ""
            return f"I don't know `{shown_prefix(ctx)}{typed}`.{hint} `{shown_prefix(ctx)}help` lists the commands."
        if isinstance(error, UserError):
            return str(error)
        if isinstance(error, commands.UserInputError | app_commands.TransformerError):
            return f"{argument_problem(ctx, error)}\n{usage(ctx)}"
        if isinstance(error, app_commands.CommandSignatureMismatch):  # Discord still shows an older version
            return (
                "This slash command changed since Discord last heard of it: use the `!` form for now, "
                "and ask the bot's owners to run `!sync`."
            )
        if isinstance(error, commands.CommandOnCooldown):
            name = ctx.command.qualified_name if ctx.command else "this command"
            wait = math.ceil(error.retry_after)
            return f"Slow down a little: you can use `{shown_prefix(ctx)}{name}` again in {wait} s."
        if isinstance(error, commands.NotOwner):
            return "Sorry, only the bot's owners can use this command."
        if isinstance(error, commands.NoPrivateMessage):
            name = ctx.command.qualified_name if ctx.command else "this command"
            hint = BOT_WIDE_TEACHING if name == "train" and is_owner(self.bot, ctx.author.id) else ""
            return f"`{shown_prefix(ctx)}{name}` only works in a server, not in direct messages.{hint}"
        if isinstance(error, commands.CheckFailure):
            return "Sorry, you can't use this command here."
        reference = uuid.uuid4().hex[:8].upper()
        log.error(
            "unexpected error in %s (reference %s)",
            ctx.command and ctx.command.qualified_name,
            reference,
            exc_info=error,
        )
        return f"Sorry, something went wrong on my side (reference `{reference}`). The owners can find it in the log."

    async def cog_load(self) -> None:
        self.bot.tree.on_error = self.on_app_command_error  # slash-only commands: the same handler

    async def on_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await self.on_command_error(await commands.Context.from_interaction(interaction), error)  # type: ignore[arg-type]

    @commands.Cog.listener()
    async def on_command_error(self, ctx: commands.Context[TrainerBot], error: commands.CommandError) -> None:
        if isinstance(unwrap(error), MISTAKES):
            self.bot.cooldowns.give_back(ctx)  # the person's mistake or a refusal: no real work was done
        text = fit(in_their_form(ctx, self.message_for(ctx, error)))
        try:
            if ctx.interaction is not None:  # seen only by whoever used the command
                await self._ephemeral(ctx.interaction, text)
            else:
                nonce = answer_nonce(ctx.message.id, "e", 0)
                await send_once(ctx, text, nonce=nonce, allowed_mentions=ALLOWED_MENTIONS)
        except discord.HTTPException:
            log.warning("could not send an error message in channel %s", ctx.channel.id)

    @staticmethod
    async def _ephemeral(interaction: discord.Interaction, text: str) -> None:
        """An error only its person sees, also after a public deferral ("thinking..." for everyone).

        Discord turns the first follow-up after a deferral into the deferred message, public like it:
        that placeholder is deleted first, so the error comes as a message of its own, ephemeral.
        """
        if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
            try:
                original = await interaction.original_response()
                if original.flags.loading and not original.flags.ephemeral:
                    await original.delete()
            except discord.HTTPException:
                pass  # the error is sent all the same
        if interaction.response.is_done():
            await interaction.followup.send(text, allowed_mentions=ALLOWED_MENTIONS, ephemeral=True)
        else:
            await interaction.response.send_message(text, allowed_mentions=ALLOWED_MENTIONS, ephemeral=True)
