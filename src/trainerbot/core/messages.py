"""Plain data passed between the front ends and the core: who asks, what they send, what comes back."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Caller:
    """Who sent a command, as the front end established it."""

    user_id: int
    name: str
    is_admin: bool = False  # an owner, the server's owner, or a member with an admin role
    guild_id: int | None = None
    channel_id: int | None = None
    message_id: int | None = None


@dataclass(frozen=True)
class Upload:
    """A file the user attached; ``size`` is what the sender declared, checked before reading."""

    name: str
    data: bytes
    size: int


@dataclass(frozen=True)
class OutFile:
    name: str
    data: bytes


@dataclass
class Reply:
    text: str
    files: list[OutFile] = field(default_factory=list)
