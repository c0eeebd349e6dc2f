"""Slash-command interactions: building the options Discord would send, and tracking the bot's answers.

``build_options`` turns a test's ``{"name": value}`` into Discord's typed option list. When the bot
has synced its commands the types come from the synced definition (and unknown or missing required
options are rejected like the Discord client would); otherwise they are inferred from the Python
values: str -> 3, bool -> 5, int -> 4, float -> 10, (filename, bytes) -> 11 attachment,
FakeUser -> 6 user.

``InteractionHandle`` is what ``FakeDiscord.invoke_slash`` returns: it records the callback the bot
made (``POST /interactions/{id}/{token}/callback``), the original response message and the
follow-ups, and lets the test await them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .payloads import FLAG_LOADING, FakeUser

if TYPE_CHECKING:
    from .server import FakeDiscord

OPTION_SUB_COMMAND, OPTION_SUB_COMMAND_GROUP = 1, 2
OPTION_STRING, OPTION_INTEGER, OPTION_BOOLEAN, OPTION_USER = 3, 4, 5, 6
OPTION_NUMBER, OPTION_ATTACHMENT = 10, 11

# Interaction callback types
CALLBACK_MESSAGE = 4
CALLBACK_DEFERRED_MESSAGE = 5
CALLBACK_DEFERRED_UPDATE = 6
CALLBACK_UPDATE_MESSAGE = 7


def infer_option_type(value: Any) -> int:
    if isinstance(value, bool):
        return OPTION_BOOLEAN
    if isinstance(value, int):
        return OPTION_INTEGER
    if isinstance(value, float):
        return OPTION_NUMBER
    if isinstance(value, str):
        return OPTION_STRING
    if isinstance(value, FakeUser):
        return OPTION_USER
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], bytes | bytearray):
        return OPTION_ATTACHMENT
    raise TypeError(f"cannot infer a slash option type for {value!r}")


def build_options(
    path: list[str],
    definition: dict[str, Any] | None,
    values: dict[str, Any],
    *,
    resolve: Callable[[int, Any], str],
) -> list[dict[str, Any]]:
    """Options for invoking ``path`` (subcommand names below the command) with ``values``.

    ``definition`` is the synced command (or None). ``resolve(type, value)`` stores an attachment
    or user in the interaction's ``resolved`` data and returns the snowflake to put in the option.
    """
    if path:
        sub_name, rest = path[0], path[1:]
        sub_def = None
        if definition is not None:
            sub_def = _find_option(definition, sub_name)
            if sub_def is None or sub_def["type"] not in (OPTION_SUB_COMMAND, OPTION_SUB_COMMAND_GROUP):
                raise ValueError(f"{definition['name']!r} has no subcommand {sub_name!r}")
        kind = OPTION_SUB_COMMAND_GROUP if rest else OPTION_SUB_COMMAND
        inner = build_options(rest, sub_def, values, resolve=resolve)
        return [{"name": sub_name, "type": kind, "options": inner}]

    declared = {option["name"]: option for option in (definition or {}).get("options", [])}
    if definition is not None:
        unknown = set(values) - set(declared)
        if unknown:
            raise ValueError(f"{definition['name']!r} has no option(s) {sorted(unknown)}; it has {sorted(declared)}")
        missing = [name for name, option in declared.items() if option.get("required") and name not in values]
        if missing:
            raise ValueError(f"{definition['name']!r} needs option(s) {missing}")

    options = []
    for name, value in values.items():
        kind = declared[name]["type"] if name in declared else infer_option_type(value)
        if kind in (OPTION_ATTACHMENT, OPTION_USER):
            value = resolve(kind, value)
        elif kind == OPTION_NUMBER:
            value = float(value)
        options.append({"name": name, "type": kind, "value": value})
    return options


def _find_option(definition: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((option for option in definition.get("options", []) if option["name"] == name), None)


@dataclass
class InteractionHandle:
    """One INTERACTION_CREATE the test sent, and everything the bot answered to it."""

    server: FakeDiscord
    id: int
    token: str
    payload: dict[str, Any]
    channel_id: int
    callbacks: list[dict[str, Any]] = field(default_factory=list)  # request bodies, normally one
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)

    @property
    def response_type(self) -> int | None:
        """Type of the initial callback: 4 message, 5 deferred, 6 deferred update, 7 update."""
        return self.callbacks[0]["type"] if self.callbacks else None

    @property
    def original(self) -> dict[str, Any] | None:
        """Latest state of the original response message, if there is one."""
        return self.server.messages.get(self.original_id) if self.original_id else None

    @property
    def followups(self) -> list[dict[str, Any]]:
        return [self.server.messages[mid] for mid in self.followup_ids if mid in self.server.messages]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Original response (once it is no longer a 'thinking...' placeholder) plus follow-ups."""
        original = self.original
        done = [original] if original is not None and not original["flags"] & FLAG_LOADING else []
        return done + self.followups

    async def wait_response(self, timeout: float = 10.0) -> dict[str, Any]:
        """The body of the bot's initial callback, ``{"type": ..., "data": {...}}``."""
        await self.server.wait_until(lambda: self.callbacks, timeout, what=f"a response to {self._describe()}")
        return self.callbacks[0]

    async def wait_original(self, timeout: float = 10.0) -> dict[str, Any]:
        """The original response message, after a deferral has been resolved by an edit."""

        def ready() -> dict[str, Any] | None:
            original = self.original
            return original if original is not None and not original["flags"] & FLAG_LOADING else None

        return await self.server.wait_until(ready, timeout, what=f"the original response to {self._describe()}")

    async def wait_messages(self, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """At least ``count`` finished response messages (see ``messages``), oldest first."""
        await self.server.wait_until(
            lambda: len(self.messages) >= count,
            timeout,
            what=f"{count} message(s) answering {self._describe()}",
        )
        return self.messages

    def _describe(self) -> str:
        name = self.payload["data"]["name"]
        return f"/{name} (interaction {self.id}; callbacks so far: {[c['type'] for c in self.callbacks]})"
