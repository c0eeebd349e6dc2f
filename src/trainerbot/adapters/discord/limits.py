"""Per-person cooldowns on commands that cost the bot real work; the bot's owners are never held back.

discord.py's own cooldown decorator keeps its counts on the command object, which every bot in
the process shares; these counts belong to one bot, through a bot-wide check that serves both the
prefix and the slash form of a command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from discord.ext import commands

from trainerbot.adapters.discord.render import is_owner

if TYPE_CHECKING:
    from trainerbot.adapters.discord.bot import TrainerBot

F = TypeVar("F", bound=Callable[..., Any])
_LIMIT = "__trainerbot_per_person__"


def per_person(rate: int, seconds: float) -> Callable[[F], F]:
    """Marks a command callback: at most ``rate`` uses in ``seconds`` by one person, servers and DMs together."""

    def mark(callback: F) -> F:
        setattr(callback, _LIMIT, (rate, seconds))
        return callback

    return mark


class Cooldowns:
    """The bot-wide check that applies ``per_person`` limits; raises CommandOnCooldown when one is reached."""

    def __init__(self) -> None:
        self._mappings: dict[str, commands.CooldownMapping[commands.Context[TrainerBot]]] = {}

    async def __call__(self, ctx: commands.Context[TrainerBot]) -> bool:
        command = ctx.command
        limit = getattr(command.callback, _LIMIT, None) if command is not None else None
        if command is None or limit is None or is_owner(ctx.bot, ctx.author.id):
            return True
        mapping = self._mappings.setdefault(
            command.qualified_name, commands.CooldownMapping.from_cooldown(*limit, commands.BucketType.user)
        )
        bucket = mapping.get_bucket(ctx)
        retry_after = bucket.update_rate_limit() if bucket is not None else None
        if retry_after:
            raise commands.CommandOnCooldown(bucket, retry_after, commands.BucketType.user)  # type: ignore[arg-type]
        return True
