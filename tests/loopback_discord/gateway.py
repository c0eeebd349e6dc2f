"""The fake Discord gateway: a websocket speaking Discord's gateway protocol (JSON text frames).

Protocol handled: HELLO (op 10), heartbeat (op 1) -> ACK (op 11), IDENTIFY (op 2) -> READY
and one GUILD_CREATE per guild, RESUME (op 6) -> replay of the missed events then RESUMED, and
REQUEST_GUILD_MEMBERS (op 8) -> one GUILD_MEMBERS_CHUNK for each guild it names.

Each IDENTIFY opens a ``GatewaySession``: it numbers its events (``s``) and keeps all of them,
so a client that reconnects and RESUMEs with its last sequence number gets exactly the events it
missed. Events for a session whose socket is down are kept for that replay.

Faults for reliability tests: ``close`` (a close code), ``abort`` (TCP reset), ``send_reconnect``
(op 7), ``invalidate_session`` (op 9), ``hold_reconnects`` (clients that connect wait before HELLO
until the block exits), ``outage`` (close, and hold) and ``repeat_on_resume`` (the next RESUME
replays events the client already had: Discord's delivery is at least once, not exactly once).
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


class GatewaySession:
    """One IDENTIFYed session: its sequence numbers, event history and current socket (if any)."""

    def __init__(self, session_id: str, intents: int, bot_id: int) -> None:
        self.session_id = session_id
        self.intents = intents
        self.bot_id = bot_id
        self.seq = 0
        self.history: list[tuple[int, str]] = []  # (sequence, serialised frame), for RESUME replays
        self.ready_seq = 0  # the last event of the IDENTIFY (READY, GUILD_CREATEs): never replayed
        self.ws: web.WebSocketResponse | None = None
        self.request: web.Request | None = None
        self.lock = asyncio.Lock()  # keeps sequence numbers in the order frames hit the socket

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed

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
    """Accepts gateway websockets on the fake server and fans dispatches out to all sessions.

    ``ready_payload(session, shard)``, ``guild_payloads(intents)`` (one per guild) and
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
        guild_payloads: Callable[[int], list[dict[str, Any]]],
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
        for session in list(self.sessions.values()):
            await session.dispatch(event, data)

    @property
    def connected(self) -> bool:
        return any(session.connected for session in self.sessions.values())

    # -- faults -------------------------------------------------------------------------------

    async def close(self, code: int = 4000) -> None:
        """Close every live socket with ``code``. Sessions stay resumable."""
        for session in self.sessions.values():
            ws = session.detach()
            if ws is not None:
                await ws.close(code=code, message=b"closed by the loopback test server")

    async def abort(self) -> None:
        """Drop every live connection at the TCP level, without a close frame."""
        for session in self.sessions.values():
            request = session.request
            session.detach()
            if request is not None and request.transport is not None:
                request.transport.abort()

    async def send_reconnect(self) -> None:
        """Send op 7 RECONNECT: the client should close and RESUME."""
        for session in self.sessions.values():
            await session.send_raw(_frame(RECONNECT))

    async def invalidate_session(self, *, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION. Unless ``resumable``, the sessions are forgotten (re-IDENTIFY)."""
        for session_id, session in list(self.sessions.items()):
            await session.send_raw(_frame(INVALID_SESSION, resumable))
            if not resumable:
                del self.sessions[session_id]

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
        # A client that IDENTIFYs again has given up on its old sessions.
        self.sessions = {sid: s for sid, s in self.sessions.items() if s.connected}
        session = GatewaySession(uuid.uuid4().hex, int(data.get("intents", 0)), self.bot_id)
        self.sessions[session.session_id] = session
        self.identify_count += 1
        session.attach(ws, request)
        await session.dispatch("READY", self._ready_payload(session, data.get("shard")))
        for guild in self._guild_payloads(session.intents):
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
