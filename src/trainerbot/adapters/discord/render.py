"""Between discord.py and the core: who is asking, what they attached, and sending replies."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from trainerbot.adapters.discord.delivery import answer_nonce, send_once
from trainerbot.core.text import split_message
from trainerbot.errors import TooLarge, UserError
from trainerbot.types import Caller, Reply, Upload, human_size

if TYPE_CHECKING:
    from trainerbot.adapters.discord.bot import TrainerBot

P = ParamSpec("P")
T = TypeVar("T")

DOWNLOAD_CHUNK = 64 * 1024
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_read=60)  # Discord's CDN is fast; a stall is a failure
# Replies may mention the people they answer, never @everyone, @here or a role.
ALLOWED_MENTIONS = discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=False)
NO_MENTIONS = discord.AllowedMentions.none()  # for text that quotes what others wrote


async def in_thread(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Core calls touch the disk, the database or the model: never on the event loop."""
    return await asyncio.to_thread(function, *args, **kwargs)


def is_owner(bot: TrainerBot, user_id: int) -> bool:
    """A configured owner, or the application's owner (or a member of its team)."""
    return user_id in bot.settings.owner_ids or user_id == bot.owner_id or user_id in (bot.owner_ids or ())


def person(
    bot: TrainerBot,
    user: discord.abc.User,
    guild: discord.Guild | None,
    *,
    channel_id: int,
    message_id: int | None,
) -> Caller:
    """What the core needs to know of someone: owner or not, and in a server, whether they run it and their roles.

    Whether their roles make them an admin there is the core's to decide, with the roles that
    server configured. In a direct message there is no server: only the bot's owners have rights.
    """
    member = user if isinstance(user, discord.Member) and guild is not None else None
    return Caller(
        user_id=user.id,
        name=user.display_name,
        is_owner=is_owner(bot, user.id),
        manages_server=member is not None and (guild.owner_id == user.id or member.guild_permissions.administrator),
        roles=frozenset(role.name for role in member.roles if not role.is_default()) if member else frozenset(),
        guild_id=guild.id if guild is not None else None,
        channel_id=channel_id,
        message_id=message_id,
        via="discord",
    )


def server_only() -> Callable[[T], T]:
    """A hybrid command that works in servers only: refused in DMs in both forms, and not offered there.

    ``commands.guild_only`` is the check (run for the slash form too); ``app_commands.guild_only``
    also registers the command for server contexts only, so Discord does not list it in DMs.
    """

    def decorate(func: T) -> T:
        return commands.guild_only()(app_commands.guild_only()(func))  # type: ignore[arg-type,return-value]

    return decorate


_OWNERS_IN_DMS = "__trainerbot_owners_in_dms__"
_AUDIENCE = "__trainerbot_audience__"


def for_admins(callback: T) -> T:
    """Marks a command that only the bot's owners and a server's admins may use (the core enforces it;
    `!help` lists it to them, and names it to everyone else as theirs)."""
    setattr(callback, _AUDIENCE, "admins")
    return callback


def for_owners(callback: T) -> T:
    """Marks a command for the bot's owners alone (its check enforces it)."""
    setattr(callback, _AUDIENCE, "owners")
    return callback


def audience(command: commands.Command) -> str:
    """Who may use ``command``: "everyone", "admins" (and owners) or "owners"."""
    return getattr(command.callback, _AUDIENCE, "everyone")


def owners_in_dms(callback: T) -> T:
    """Marks a command that in direct messages is about the bot-wide knowledge, so for the bot's owners:
    the core refuses everyone else there; `!help` in a DM leaves it out for them."""
    setattr(callback, _OWNERS_IN_DMS, True)
    return callback


def works_in_dms(command: commands.Command, *, for_owner: bool) -> bool:
    """Whether ``command`` does its work in a direct message, for an owner or for anyone else."""
    app_command = getattr(command, "app_command", None)
    if app_command is not None and app_command.guild_only:  # `server_only`, whose mark discord.py keeps here
        return False
    return for_owner or not getattr(command.callback, _OWNERS_IN_DMS, False)


def caller_of(ctx: commands.Context[TrainerBot]) -> Caller:
    message_id = ctx.message.id if ctx.interaction is None else None
    return person(ctx.bot, ctx.author, ctx.guild, channel_id=ctx.channel.id, message_id=message_id)


async def read_uploads(attachments: list[discord.Attachment], limit: int) -> list[Upload]:
    """Downloads attachments within the limit: the declared size is checked first, the bytes as they arrive."""
    uploads = []
    for attachment in attachments:
        if attachment.size > limit:
            raise TooLarge(f"{attachment.filename} is {human_size(attachment.size)}; the limit is {human_size(limit)}.")
        data = await download(attachment.url, attachment.filename, limit)
        uploads.append(Upload(attachment.filename, data, attachment.size))
    return uploads


async def download(url: str, name: str, limit: int) -> bytes:
    """A file from Discord's CDN, given up as soon as more than ``limit`` bytes arrive.

    The size an attachment declares is not trusted: the bytes are counted as they come, so a
    file that is bigger than it said costs the limit in memory, never its own size.
    """
    received = bytearray()
    try:
        async with aiohttp.ClientSession(timeout=DOWNLOAD_TIMEOUT) as session, session.get(url) as response:
            if response.status != 200:
                raise UserError(f"I couldn't download {name} from Discord (HTTP {response.status}); send it again.")
            async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
                received += chunk
                if len(received) > limit:
                    raise TooLarge(
                        f"{name} is larger than it said it was, and over the limit of {human_size(limit)}; "
                        "nothing of it was kept."
                    )
    except (aiohttp.ClientError, TimeoutError):
        raise UserError(f"I couldn't download {name} from Discord; send it again.") from None
    return bytes(received)


def attachments_of(ctx: commands.Context[TrainerBot], given: discord.Attachment | None) -> list[discord.Attachment]:
    """Every file on a prefix command's message, or the attachment option of a slash command.

    In the prefix form discord.py fills the ``file`` parameter with the message's first attachment
    only: the message itself is read, so a second file is never dropped without a word.
    """
    if ctx.interaction is None:
        return list(ctx.message.attachments)
    return [given] if given is not None else []


# A command named in a reply: the core writes `!name`, or the configured prefix where it knows it.
_NAMED_COMMAND = re.compile(r"`(?P<prefix>[^\s`\w]{1,5})(?P<name>[a-z_]+)(?=[\s`])")


def leading_mention(bot: commands.Bot, text: str) -> str | None:
    """The mention of the bot that ``text`` starts with (`<@id>` or the older `<@!id>`), if it does."""
    if bot.user is None:
        return None
    return next((m for m in (f"<@{bot.user.id}>", f"<@!{bot.user.id}>") if text.startswith(m)), None)


def shown_prefix(ctx: commands.Context[TrainerBot]) -> str:
    """The prefix to show someone: `/` after a slash command, else the server's, also when they typed a mention."""
    return "/" if ctx.interaction is not None else ctx.bot.settings.command_prefix


def in_their_form(ctx: commands.Context[TrainerBot], text: str) -> str:
    """``text`` with every command it names in the form the person used: `/train` when they used a
    slash command, `?train` where the server's prefix is `?`. The core writes one form, `!train`."""
    prefix = ctx.bot.settings.command_prefix
    wanted = "/" if ctx.interaction is not None else prefix
    if wanted == "!":
        return text

    def swap(match: re.Match[str]) -> str:
        known = match["prefix"] in ("!", prefix) and match["name"] in ctx.bot.all_commands
        return f"`{wanted}{match['name']}" if known else match.group(0)

    return _NAMED_COMMAND.sub(swap, text)


# "Copy Message Link" in any Discord client: https://discord.com/channels/<server or @me>/<channel>/<message>
_MESSAGE_LINK = re.compile(
    r"<?https://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/(?:@me|\d+)/\d+/(\d+)>?", re.IGNORECASE
)


def message_id_in(typed: str) -> int | None:
    """The message a person points at: its id, or its link; None when ``typed`` is neither."""
    typed = typed.strip()
    if found := _MESSAGE_LINK.fullmatch(typed):
        return int(found[1])
    return int(typed) if typed.isdigit() else None


async def send_reply(
    ctx: commands.Context[TrainerBot], reply: Reply, mentions: discord.AllowedMentions = ALLOWED_MENTIONS
) -> discord.Message:
    """Sends a reply in as many messages as Discord's limit needs; files go with the last one.

    ``mentions``: whom the text may ping (``NO_MENTIONS`` where it quotes what other people wrote).
    Commands it names are in the form the person used (``in_their_form``).
    """
    chunks = split_message(in_their_form(ctx, reply.text)) or ["\u200b"]
    message = None
    for index, chunk in enumerate(chunks):
        last = index == len(chunks) - 1

        def files(last: bool = last) -> list[discord.File]:
            return [discord.File(io.BytesIO(f.data), filename=f.name) for f in reply.files] if last else []

        if ctx.interaction is None:  # answers a message: sent once, whatever fails on the way
            nonce = answer_nonce(ctx.message.id, "c", index)
            message = await send_once(ctx, chunk, nonce=nonce, allowed_mentions=mentions, files=files)
        else:  # an interaction's response cannot be repeated safely; discord.py's own retries only
            message = await ctx.send(chunk, files=files(), allowed_mentions=mentions)
    assert message is not None
    return message
