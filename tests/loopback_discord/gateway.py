"""The fake Discord gateway: a websocket speaking Discord's gateway protocol (JSON text frames).

Protocol handled: HELLO (op 10), heartbeat (op 1) -> ACK (op 11), IDENTIFY (op 2) -> READY
and one GUILD_CREATE per guild, RESUME (op 6) -> replay of the missed events then RESUMED, and
REQUEST_GUILD_MEMBERS (op 8) -> one GUILD_MEMBERS_CHUNK for each guild it names.

Sharding, as Discord does it: an IDENTIFY may carry ``shard: [id, count]``; a guild belongs to
shard ``(guild_id >> 22) % count``. Such a session's READY lists only its shard's guilds, and it
gets only their GUILD_CREATEs, member chunks and events; DMs (events without a guild) go to
shard 0 alone. A session without ``shard`` gets everything, as one unsharded bot does. An
IDENTIFY whose shard is not one of its count is closed with 4010 (Invalid shard).

Each IDENTIFY opens a ``GatewaySession``: it numbers its events (``s``) and keeps all of them,
so a client that reconnects and RESUMEs with its last sequence number gets exactly the events it
missed. Events for a session whose socket is down are kept for that replay.

Faults for reliability tests: ``close`` (a close code), ``abort`` (TCP reset), ``send_reconnect``
(op 7), ``invalidate_session`` (op 9), each to every session or to one shard's only,
``hold_reconnects`` (clients that connect wait before HELLO until the block exits), ``outage``
(close, and hold) and ``repeat_on_resume`` (the next RESUME replays events the client already
had: Discord's delivery is at least once, not exactly once).
As on Discord, a session invalidated without being resumable is gone with every event it held,
and events dispatched before the client IDENTIFYs again reach no session: they are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from .payloads import shard_of

log = logging.getLogger(__name__)

# Opcodes
DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE_UPDATE, VOICE_STATE_UPDATE = 0, 1, 2, 3, 4
RESUME, RECONNECT, REQUEST_GUILD_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 6, 7, 8, 9, 10, 11

# Intent bits that decide which events a session receives
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_VOICE_STATES = 1 << 7
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_GUILD_MESSAGE_REACTIONS = 1 << 10
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_DIRECT_MESSAGE_REACTIONS = 1 << 13
INTENT_MESSAGE_CONTENT = 1 << 15

_MESSAGE_EVENTS = {"MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE"}
_REACTION_EVENTS = {"MESSAGE_REACTION_ADD", "MESSAGE_REACTION_REMOVE"}
_GUILD_EVENTS = {"GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE"}  # the guild's id is the event's ``id``

CLOSE_INVALID_SHARD = 4010


def _frame(op: int, data: Any = None, *, event: str | None = None, seq: int | None = None) -> dict[str, Any]:
    return {"op": op, "d": data, "s": seq, "t": event}


def _as_seen_with(intents: int, event: str, data: dict[str, Any], bot_id: int) -> dict[str, Any] | None:
    """The event as Discord would deliver it to a client with ``intents``, or None if not at all."""
    in_guild = "guild_id" in data
    if event in _MESSAGE_EVENTS:
        needed = INTENT_GUILD_MESSAGES if in_guild else INTENT_DIRECT_MESSAGES
    elif event in _REACTION_EVENTS:
        needed = INTENT_GUILD_MESSAGE_REACTIONS if in_guild else INTENT_DIRECT_MESSAGE_REACTIONS
    elif event == "VOICE_STATE_UPDATE":
        needed = INTENT_GUILD_VOICE_STATES
    else:
        needed = 0
    if intents & needed != needed:
        return None

    # Without the privileged message content intent, guild messages arrive with their content
    # blanked unless they are the bot's own or mention it.
    if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE") and in_guild and not intents & INTENT_MESSAGE_CONTENT:
        own = data.get("author", {}).get("id") == str(bot_id)
        mentioned = any(user["id"] == str(bot_id) for user in data.get("mentions", []))
        if not own and not mentioned:
            return {**data, "content": "", "embeds": [], "attachments": [], "components": []}
    return data


def guild_of_event(event: str, data: dict[str, Any]) -> int | None:
    """The guild an event is about, which decides its shard; None for a DM or a bot-wide event."""
    guild_id = data.get("id") if event in _GUILD_EVENTS else data.get("guild_id")
    return int(guild_id) if guild_id is not None else None


def parse_shard(shard: Any) -> tuple[int, int] | None:
    """An IDENTIFY's ``shard`` as ``(id, count)``, None without one; ValueError for a shard Discord refuses."""
    if shard is None:
        return None
    try:
        shard_id, shard_count = (int(part) for part in shard)
    except (TypeError, ValueError):
        raise ValueError(f"shard {shard!r} is not [shard id, shard count]") from None
    if not 0 <= shard_id < shard_count:
        raise ValueError(f"shard {shard_id} is not one of {shard_count} shards")
    return shard_id, shard_count


class GatewaySession:
    """One IDENTIFYed session: its shard, sequence numbers, event history and current socket (if any)."""

    def __init__(self, session_id: str, intents: int, bot_id: int, shard: tuple[int, int] | None = None) -> None:
        self.session_id = session_id
        self.intents = intents
        self.bot_id = bot_id
        self.shard = shard  # (shard id, shard count), or None: unsharded, every guild
        self.seq = 0
        self.history: list[tuple[int, str]] = []  # (sequence, serialised frame), for RESUME replays
        self.ready_seq = 0  # the last event of the IDENTIFY (READY, GUILD_CREATEs): never replayed
        self.ws: web.WebSocketResponse | None = None
        self.request: web.Request | None = None
        self.lock = asyncio.Lock()  # keeps sequence numbers in the order frames hit the socket

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed

    @property
    def shard_id(self) -> int:
        return self.shard[0] if self.shard is not None else 0

    def owns(self, guild_id: int | None) -> bool:
        """Whether this session receives the events of ``guild_id`` (None: a DM, shard 0's)."""
        if self.shard is None:
            return True
        if guild_id is None:
            return self.shard_id == 0
        return shard_of(guild_id, self.shard[1]) == self.shard_id

    def sent(self) -> list[tuple[str, dict[str, Any]]]:
        """Every event this session was sent (READY and GUILD_CREATEs too), oldest first: ``(name, data)``."""
        frames = [json.loads(frame) for _, frame in self.history]
        return [(frame["t"], frame["d"]) for frame in frames]

    def attach(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws, self.request = ws, request

    def detach(self) -> web.WebSocketResponse | None:
        ws, self.ws, self.request = self.ws, None, None
        return ws

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        seen = _as_seen_with(self.intents, event, data, self.bot_id)
        if seen is None:
            return
        async with self.lock:
            await self._dispatch_locked(event, seen)

    async def _dispatch_locked(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        # Serialised now: the server keeps mutating its message dicts, a replay must not show that.
        frame = json.dumps(_frame(DISPATCH, data, event=event, seq=self.seq))
        self.history.append((self.seq, frame))
        await self._send(frame)

    async def resume(self, ws: web.WebSocketResponse, request: web.Request, last_seq: int) -> int:
        """Attach a new socket, replay what the client missed, then send RESUMED. Returns #replayed."""
        async with self.lock:
            self.attach(ws, request)
            missed = [frame for seq, frame in self.history if seq > last_seq]
            for frame in missed:
                await self._send(frame)
            await self._dispatch_locked("RESUMED", {})
            return len(missed)

    async def send_raw(self, frame: dict[str, Any]) -> None:
        async with self.lock:
            await self._send(json.dumps(frame))

    async def _send(self, frame: str) -> None:
        ws = self.ws
        if ws is None or ws.closed:
            return  # kept in history; a RESUME replays it
        try:
            await ws.send_str(frame)
        except (ConnectionError, RuntimeError) as exc:
            log.info("gateway: send failed (%s); session %s now disconnected", exc, self.session_id)
            if self.ws is ws:
                self.detach()


class Gateway:
    """Accepts gateway websockets on the fake server and fans dispatches out to the sessions of each guild's shard.

    ``ready_payload(session, shard)``, ``guild_payloads(session)`` (one per guild of its shard) and
    ``members_chunks(op 8 data)`` come from the server, which owns the guilds' state;
    ``on_change`` is called whenever something test-visible changes.
    """

    def __init__(
        self,
        *,
        token: str,
        bot_id: int,
        heartbeat_interval_ms: int,
        ready_payload: Callable[[GatewaySession, list[int] | None], dict[str, Any]],
        guild_payloads: Callable[[GatewaySession], list[dict[str, Any]]],
        members_chunks: Callable[[dict[str, Any]], list[dict[str, Any]]],
        on_change: Callable[[], None],
        on_voice_state: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.on_voice_state = on_voice_state
        self.token = token
        self.bot_id = bot_id
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self._ready_payload = ready_payload
        self._guild_payloads = guild_payloads
        self._members_chunks = members_chunks
        self._on_change = on_change
        self.sessions: dict[str, GatewaySession] = {}
        self.sockets: set[web.WebSocketResponse] = set()
        self.identify_count = 0
        self.resumes: list[dict[str, Any]] = []  # {"session_id", "seq", "replayed"} per successful RESUME
        self.received: list[dict[str, Any]] = []  # every frame clients sent, for assertions
        self.repeat_on_next_resume = 0  # events the next RESUME replays although the client had them
        self._open = asyncio.Event()
        self._open.set()

    # -- events -------------------------------------------------------------------------------

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        guild_id = guild_of_event(event, data)
        for session in list(self.sessions.values()):
            if session.owns(guild_id):
                await session.dispatch(event, data)

    def sessions_of_shard(self, shard_id: int) -> list[GatewaySession]:
        """The sessions IDENTIFYed as ``shard_id`` (an unsharded one counts as shard 0), oldest first."""
        return [session for session in self.sessions.values() if session.shard_id == shard_id]

    def misrouted(self) -> list[tuple[tuple[int, int] | None, str, int | None]]:
        """``(shard, event, guild id)`` for each event a live session was sent about a guild (None: a DM)
        that is not its shard's, READY's guild list included: a test of the routing, empty when it holds."""
        found = []
        for session in self.sessions.values():
            for event, data in session.sent():
                guilds = [int(g["id"]) for g in data["guilds"]] if event == "READY" else [guild_of_event(event, data)]
                found += [(session.shard, event, guild) for guild in guilds if not session.owns(guild)]
        return found

    @property
    def connected(self) -> bool:
        return any(session.connected for session in self.sessions.values())

    # -- faults -------------------------------------------------------------------------------

    def _sessions(self, shard: int | None) -> list[GatewaySession]:
        """The sessions a fault hits: all of them, or those of one shard."""
        return list(self.sessions.values()) if shard is None else self.sessions_of_shard(shard)

    async def close(self, code: int = 4000, *, shard: int | None = None) -> None:
        """Close every live socket (of ``shard``) with ``code``. Sessions stay resumable."""
        for session in self._sessions(shard):
            ws = session.detach()
            if ws is not None:
                await ws.close(code=code, message=b"closed by the loopback test server")

    async def abort(self, *, shard: int | None = None) -> None:
        """Drop every live connection (of ``shard``) at the TCP level, without a close frame."""
        for session in self._sessions(shard):
            request = session.request
            session.detach()
            if request is not None and request.transport is not None:
                request.transport.abort()

    async def send_reconnect(self, *, shard: int | None = None) -> None:
        """Send op 7 RECONNECT (to ``shard``'s sessions): the client should close and RESUME."""
        for session in self._sessions(shard):
            await session.send_raw(_frame(RECONNECT))

    async def invalidate_session(self, *, resumable: bool = False, shard: int | None = None) -> None:
        """Send op 9 INVALID_SESSION (to ``shard``'s). Unless ``resumable``, the sessions are gone (re-IDENTIFY)."""
        for session in self._sessions(shard):
            await session.send_raw(_frame(INVALID_SESSION, resumable))
            if not resumable:
                del self.sessions[session.session_id]

    def repeat_on_resume(self, events: int) -> None:
        """Make the next RESUME replay from ``events`` events before the client's last sequence.

        Never from before the session's READY and GUILD_CREATEs, which Discord does not resend.
        """
        self.repeat_on_next_resume = events

    @contextlib.asynccontextmanager
    async def hold_reconnects(self) -> AsyncIterator[None]:
        """Clients that connect inside the block wait for HELLO until it exits."""
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    @contextlib.asynccontextmanager
    async def outage(self, close_code: int = 4000) -> AsyncIterator[None]:
        """Close the sockets; clients that reconnect meanwhile wait for HELLO until the block exits."""
        async with self.hold_reconnects():
            await self.close(close_code)
            yield

    async def shutdown(self) -> None:
        self._open.set()
        for ws in list(self.sockets):
            await ws.close(code=1001, message=b"server shutdown")

    # -- the websocket endpoint -----------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self.sockets.add(ws)
        session: GatewaySession | None = None
        try:
            await self._open.wait()
            await ws.send_str(json.dumps(_frame(HELLO, {"heartbeat_interval": self.heartbeat_interval_ms})))
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    log.warning("gateway: ignoring non-text frame %s", message.type)
                    continue
                frame = json.loads(message.data)
                self.received.append(frame)
                session = await self._handle_frame(ws, request, frame, session) or session
        except ConnectionError:
            log.info("gateway: client went away")  # e.g. it gave up while held by an outage
        finally:
            self.sockets.discard(ws)
            if session is not None and session.ws is ws:
                session.detach()
            self._on_change()
        return ws

    async def _handle_frame(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        frame: dict[str, Any],
        session: GatewaySession | None,
    ) -> GatewaySession | None:
        op, data = frame.get("op"), frame.get("d")
        if op == HEARTBEAT:
            await ws.send_str(json.dumps(_frame(HEARTBEAT_ACK)))
        elif op == IDENTIFY:
            return await self._identify(ws, request, data)
        elif op == RESUME:
            return await self._resume(ws, request, data)
        elif op == REQUEST_GUILD_MEMBERS and session is not None:
            for chunk in self._members_chunks(data):
                if session.owns(int(chunk["guild_id"])):  # another shard's guild: Discord sends nothing
                    await session.dispatch("GUILD_MEMBERS_CHUNK", chunk)
        elif op == VOICE_STATE_UPDATE and self.on_voice_state is not None:
            await self.on_voice_state(data)
        elif op in (PRESENCE_UPDATE, VOICE_STATE_UPDATE):
            log.info("gateway: op %s received and ignored: %s", op, data)
        else:
            log.error("gateway: unexpected frame from client: %s", frame)
        return None

    async def _identify(
        self, ws: web.WebSocketResponse, request: web.Request, data: dict[str, Any]
    ) -> GatewaySession | None:
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return None
        try:
            shard = parse_shard(data.get("shard"))
        except ValueError as exc:
            log.info("gateway: IDENTIFY refused: %s", exc)
            await ws.close(code=CLOSE_INVALID_SHARD, message=b"Invalid shard.")
            return None
        # A client that IDENTIFYs a shard again has given up on that shard's old sessions; other
        # shards' sessions (perhaps another process's, reconnecting) stay resumable.
        self.sessions = {
            sid: s for sid, s in self.sessions.items() if s.connected or (s.shard or (0, 1)) != (shard or (0, 1))
        }
        session = GatewaySession(uuid.uuid4().hex, int(data.get("intents", 0)), self.bot_id, shard)
        self.sessions[session.session_id] = session
        self.identify_count += 1
        session.attach(ws, request)
        await session.dispatch("READY", self._ready_payload(session, data.get("shard")))
        for guild in self._guild_payloads(session):
            await session.dispatch("GUILD_CREATE", guild)
        session.ready_seq = session.seq
        self._on_change()
        return session

    async def _resume(
        self, ws: web.WebSocketResponse, request: web.Request, data: dict[str, Any]
    ) -> GatewaySession | None:
        session = self.sessions.get(data.get("session_id", ""))
        if session is None or data.get("token") != self.token:
            log.info("gateway: RESUME of unknown session %s refused", data.get("session_id"))
            await ws.send_str(json.dumps(_frame(INVALID_SESSION, False)))
            return None
        last_seq = data.get("seq") or 0
        replay_from = last_seq
        if self.repeat_on_next_resume:
            replay_from = max(session.ready_seq, last_seq - self.repeat_on_next_resume)
            self.repeat_on_next_resume = 0
        replayed = await session.resume(ws, request, replay_from)
        self.resumes.append({"session_id": session.session_id, "seq": last_seq, "replayed": replayed})
        self._on_change()
        return session
