"""Per-person cooldowns on commands that cost the bot real work; the bot's owners are never held back.

discord.py's own cooldown decorator keeps its counts on the command object, which every bot in
the process shares; these counts belong to one bot, through a bot-wide check that serves both the
prefix and the slash form of a command.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from discord.ext import commands

from trainerbot.adapters.discord.render import is_owner

if TYPE_CHECKING:
    from trainerbot.adapters.discord.bot import TrainerBot

F = TypeVar("F", bound=Callable[..., Any])
_LIMIT = "__trainerbot_per_person__"
FORGET_AFTER = 10_000  # people remembered before those whose window has passed are forgotten


def per_person(rate: int, seconds: float) -> Callable[[F], F]:
    """Marks a command callback: at most ``rate`` uses in ``seconds`` by one person, servers and DMs together."""

    def mark(callback: F) -> F:
        setattr(callback, _LIMIT, (rate, seconds))
        return callback

    return mark


class Cooldowns:
    """The bot-wide check that applies ``per_person`` limits; raises CommandOnCooldown when one is reached.

    A use is counted when the command starts, and given back when it ends in the person's own
    mistake (a typo, a missing argument, a broken file, a refusal): only an attempt that did the
    real work counts against the allowance.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # (command, person, window): when each use in the window began
        self._uses: dict[tuple[str, int, float], deque[float]] = {}
        self._taken: weakref.WeakKeyDictionary[commands.Context[TrainerBot], tuple[tuple[str, int, float], float]] = (
            weakref.WeakKeyDictionary()
        )

    async def __call__(self, ctx: commands.Context[TrainerBot]) -> bool:
        command = ctx.command
        limit = getattr(command.callback, _LIMIT, None) if command is not None else None
        if command is None or limit is None or is_owner(ctx.bot, ctx.author.id):
            return True
        rate, seconds = limit
        now = self._clock()
        if len(self._uses) > FORGET_AFTER:  # people who have not used a command lately: nothing to remember
            self._forget_idle(now)
        key = (command.qualified_name, ctx.author.id, seconds)
        uses = self._uses.setdefault(key, deque())
        while uses and uses[0] <= now - seconds:
            uses.popleft()
        if len(uses) >= rate:
            retry_after = uses[0] + seconds - now
            raise commands.CommandOnCooldown(commands.Cooldown(rate, seconds), retry_after, commands.BucketType.user)
        uses.append(now)
        self._taken[ctx] = (key, now)
        return True

    def _forget_idle(self, now: float) -> None:
        for key in [key for key, uses in self._uses.items() if not uses or uses[-1] <= now - key[2]]:
            del self._uses[key]

    def give_back(self, ctx: commands.Context[TrainerBot]) -> None:
        """The use ``ctx`` counted no longer counts: the command did not do its work."""
        taken = self._taken.pop(ctx, None)
        if taken is None:
            return
        key, started = taken
        uses = self._uses.get(key)
        if uses is not None and started in uses:
            uses.remove(started)
