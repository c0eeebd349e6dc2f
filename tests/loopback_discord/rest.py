"""The fake Discord REST API (``/api/v10``) the bot talks to, and the bot-side state changes.

Conventions copied from Discord because discord.py depends on them:

* JSON responses carry ``Content-Type: application/json`` exactly. With aiohttp's default
  ``application/json; charset=utf-8`` discord.py treats the body as text and breaks.
* Bodies are JSON, or multipart with a ``payload_json`` field plus ``files[n]`` fields; the
  ``attachments`` list in the payload says which existing attachments to keep and which
  upload index becomes which new attachment.
* Errors are ``{"message": ..., "code": ...}`` with Discord's codes (10003 unknown channel,
  10008 unknown message, 10062 unknown interaction, 40060 already acknowledged, 50006 empty
  message, 50035 invalid form body).
* Everything the bot creates or edits is also dispatched over the gateway (MESSAGE_CREATE /
  MESSAGE_UPDATE / MESSAGE_DELETE / MESSAGE_REACTION_*), except ephemeral messages.
* A message created with a ``nonce`` and ``enforce_nonce: true`` is created once: the same
  nonce in the same channel within ``NONCE_WINDOW_SECONDS`` returns the message made the first
  time (Discord keeps nonces "for the past few minutes"; the bot is the only author here).

* Routes under ``/guilds/{guild_id}`` (and guild-scoped commands) answer for the guild named in
  the URL, and 404 ``Unknown Guild`` (10004) for a guild the fake does not host.
* Every route asks for ``Authorization: Bot <token>`` except the interaction webhooks and the
  OAuth2 token endpoints (``oauth.py``; they check client credentials). A person's OAuth2 access
  token (``Authorization: Bearer ...``) opens only ``BEARER_ROUTES``, each within its scope:
  ``/users/@me`` and ``/users/@me/guilds`` then answer about that person, not the bot.

Requests to routes not implemented here are logged at ERROR level, listed in
``FakeDiscord.unknown_routes`` and answered 404, so gaps in the fake show up immediately.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web

from . import payloads
from .interactions import (
    CALLBACK_DEFERRED_MESSAGE,
    CALLBACK_MESSAGE,
    CALLBACK_UPDATE_MESSAGE,
    InteractionHandle,
)
from .payloads import FLAG_EPHEMERAL, FLAG_LOADING

if TYPE_CHECKING:
    from .oauth import OAuthToken
    from .server import FakeDiscord

log = logging.getLogger(__name__)

Uploads = dict[int, tuple[str, bytes]]  # upload index (files[n]) -> (filename, bytes)

MAX_CONTENT_LENGTH = 2000
NONCE_WINDOW_SECONDS = 300
TOO_LONG = {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}}
GATEWAY_ONLY_GUILD_FIELDS = (
    "members",
    "channels",
    "threads",
    "voice_states",
    "presences",
    "joined_at",
    "large",
)
FLAG_SUPPRESS_EMBEDS = 1 << 2


@dataclass
class RecordedRequest:
    """A REST request. ``json`` is the JSON body (or multipart ``payload_json``, or OAuth2 form fields)."""

    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    json: Any = None
    files: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)  # when it arrived


@dataclass
class InjectedFailure:
    """Makes requests matching ``pattern`` (regex searched in "METHOD /path") fail ``times`` times.

    ``processed``: the request takes effect and only its answer is replaced by the failure, like
    a response lost between Discord and the client. ``disconnect``: instead of any answer, the
    TCP connection is cut (``status`` is then unused).
    """

    pattern: str
    status: int
    times: int
    via_header: bool = True
    retry_after: float = 0.05
    processed: bool = False
    disconnect: bool = False
    hits: int = 0


# Where the middleware keeps the request's record for ``read_body`` (RequestKey: aiohttp >= 3.13).
RECORD_KEY: Any = web.RequestKey("loopback_record", RecordedRequest) if hasattr(web, "RequestKey") else "record"
# ... and the OAuth2 token (oauth.OAuthToken) of a request made with a bearer token.
BEARER_KEY: Any = web.RequestKey("loopback_bearer", object) if hasattr(web, "RequestKey") else "bearer"
# The routes a bearer token opens (path after /api/v10), with the scope each needs. The bot's token opens
# every other route, and not /oauth2/@me, which is about an OAuth2 authorization.
BEARER_ROUTES: dict[str, str | None] = {"/users/@me": "identify", "/users/@me/guilds": "guilds", "/oauth2/@me": None}
# The OAuth2 token endpoints: the client's credentials, checked there, stand for the Authorization header.
CLIENT_ROUTES = ("/oauth2/token", "/oauth2/token/revoke")
API_PREFIX = re.compile(r"^/api(/v\d+)?(?=/)")  # /api/v10/... and the unversioned /api/... (OAuth2's token URL)


class ApiError(Exception):
    """Raised by handlers; becomes a Discord-style JSON error response."""

    def __init__(self, status: int, message: str, code: int = 0, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.errors = status, message, code, errors


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def no_content() -> web.Response:
    return web.Response(status=204)


def bearer_of(request: web.Request) -> OAuthToken | None:
    """The OAuth2 token a request was made with; None when it came with the bot's token."""
    return request.get(BEARER_KEY)


class RestApi:
    """Request handlers. All state lives on the ``FakeDiscord`` passed in."""

    def __init__(self, server: FakeDiscord) -> None:
        self.server = server

    def routes(self, prefix: str) -> list[web.RouteDef]:
        p = prefix
        message = f"{p}/channels/{{channel_id}}/messages/{{message_id}}"
        webhook_message = f"{p}/webhooks/{{application_id}}/{{token}}/messages/{{message_id}}"
        return [
            web.get(f"{p}/users/@me", self.get_me),
            web.get(f"{p}/users/@me/guilds", self.get_my_guilds),
            web.get(f"{p}/oauth2/applications/@me", self.get_application),
            web.get(f"{p}/gateway", self.get_gateway),
            web.get(f"{p}/gateway/bot", self.get_gateway),
            web.post(f"{p}/users/@me/channels", self.create_dm),
            web.get(f"{p}/users/{{user_id}}", self.get_user),
            web.get(f"{p}/guilds/{{guild_id}}", self.get_guild),
            web.get(f"{p}/guilds/{{guild_id}}/channels", self.get_guild_channels),
            web.get(f"{p}/guilds/{{guild_id}}/roles", self.get_roles),
            web.get(f"{p}/guilds/{{guild_id}}/members", self.get_members),
            web.get(f"{p}/guilds/{{guild_id}}/members/{{user_id}}", self.get_member),
            web.get(f"{p}/channels/{{channel_id}}", self.get_channel),
            web.post(f"{p}/channels/{{channel_id}}/typing", self.typing),
            web.get(f"{p}/channels/{{channel_id}}/messages", self.get_history),
            web.post(f"{p}/channels/{{channel_id}}/messages", self.create_message),
            web.get(message, self.get_message),
            web.patch(message, self.edit_message),
            web.delete(message, self.delete_message),
            web.put(f"{message}/reactions/{{emoji}}/@me", self.add_reaction),
            web.delete(f"{message}/reactions/{{emoji}}/{{user_id}}", self.remove_reaction),
            web.get(f"{p}/applications/{{application_id}}/commands", self.get_commands),
            web.put(f"{p}/applications/{{application_id}}/commands", self.put_commands),
            web.get(f"{p}/applications/{{application_id}}/guilds/{{guild_id}}/commands", self.get_commands),
            web.put(f"{p}/applications/{{application_id}}/guilds/{{guild_id}}/commands", self.put_commands),
            web.post(f"{p}/interactions/{{interaction_id}}/{{token}}/callback", self.interaction_callback),
            web.post(f"{p}/webhooks/{{application_id}}/{{token}}", self.create_followup),
            web.get(webhook_message, self.get_webhook_message),
            web.patch(webhook_message, self.edit_webhook_message),
            web.delete(webhook_message, self.delete_webhook_message),
        ]

    # -- plumbing -------------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        api_path = API_PREFIX.sub("", request.path) if request.path.startswith("/api/") else None
        injected = None
        if api_path is not None:
            record = RecordedRequest(request.method, api_path, dict(request.query))
            self.server.requests.append(record)
            request[RECORD_KEY] = record
            injected = self._injected_failure(f"{request.method} {api_path}")
            if injected is not None and not injected.processed:
                return self._failure_response(request, injected)
            if not self._authorized(request, api_path):
                return json_response({"message": "401: Unauthorized", "code": 0}, status=401)
        try:
            response = await handler(request)
        except ApiError as error:
            body: dict[str, Any] = {"message": error.message, "code": error.code}
            if error.errors:
                body["errors"] = error.errors
            response = json_response(body, status=error.status)
        finally:
            self.server.notify_changed()
        return self._failure_response(request, injected) if injected is not None else response

    def _authorized(self, request: web.Request, api_path: str) -> bool:
        """Whether the request's credentials open its route; a valid bearer token is kept on the request."""
        if api_path.startswith(("/webhooks/", "/interactions/")) or api_path in CLIENT_ROUTES:
            return True
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and api_path in BEARER_ROUTES:
            token = self.server.oauth_token(header.removeprefix("Bearer "))
            scope = BEARER_ROUTES[api_path]
            if token is None or (scope is not None and scope not in token.scopes):
                return False
            request[BEARER_KEY] = token
            return True
        return header == f"Bot {self.server.token}" and api_path != "/oauth2/@me"

    def _injected_failure(self, route: str) -> InjectedFailure | None:
        for failure in self.server.failures:
            if failure.hits < failure.times and re.search(failure.pattern, route):
                failure.hits += 1
                after = " after processing it" if failure.processed else ""
                log.info(
                    "injecting HTTP %s into %s%s (%d/%d)", failure.status, route, after, failure.hits, failure.times
                )
                return failure
        return None

    @staticmethod
    def _failure_response(request: web.Request, failure: InjectedFailure) -> web.Response:
        if failure.disconnect and request.transport is not None:
            request.transport.abort()  # the client sees the connection drop; the response goes nowhere
            return web.Response(status=503)
        if failure.status == 429:
            headers = {"Retry-After": str(failure.retry_after)}
            if failure.via_header:
                headers["Via"] = "1.1 google"
            body = {"message": "You are being rate limited.", "retry_after": failure.retry_after}
            return json_response({**body, "global": False}, status=429, headers=headers)
        if failure.status == 500:
            return json_response({"message": "500: Internal Server Error", "code": 0}, status=500)
        return web.Response(status=failure.status, text="<html>error</html>", content_type="text/html")

    async def read_body(self, request: web.Request) -> tuple[Any, Uploads]:
        """The JSON payload (or multipart payload_json) and uploaded files by index."""
        payload: Any = None
        uploads: Uploads = {}
        if request.content_type == "multipart/form-data":
            async for part in await request.multipart():
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                elif part.filename is not None:
                    index = re.fullmatch(r"files\[(\d+)\]", part.name or "")
                    data = bytes(await part.read())
                    uploads[int(index.group(1)) if index else len(uploads)] = (part.filename, data)
        elif request.body_exists:
            raw = await request.read()
            payload = json.loads(raw) if raw else None
        record = request.get(RECORD_KEY)
        if record is not None:
            record.json, record.files = payload, uploads
        return payload, uploads

    async def unknown_route(self, request: web.Request) -> web.Response:
        route = f"{request.method} {request.path}"
        log.error("LOOPBACK DISCORD: no handler for %s (query %s); answering 404", route, dict(request.query))
        self.server.unknown_routes.append(route)
        return json_response({"message": f"loopback Discord has no route for {route}", "code": 0}, status=404)

    def _channel_id(self, request: web.Request) -> int:
        channel_id = int(request.match_info["channel_id"])
        if channel_id not in self.server.channels:
            raise ApiError(404, "Unknown Channel", 10003)
        return channel_id

    def _message(self, request: web.Request) -> dict[str, Any]:
        channel_id = self._channel_id(request)
        message = self.server.messages.get(int(request.match_info["message_id"]))
        if message is None or message["channel_id"] != str(channel_id):
            raise ApiError(404, "Unknown Message", 10008)
        return message

    def _user(self, user_id: Any) -> payloads.FakeUser:
        try:
            return self.server.users[int(user_id)]
        except (KeyError, ValueError):
            raise ApiError(404, "Unknown User", 10013) from None

    def _guild(self, request: web.Request) -> payloads.GuildSetup:
        """The guild named in the URL; 404 Unknown Guild for one the fake does not host."""
        try:
            return self.server.guild_by_id(request.match_info["guild_id"])
        except (KeyError, ValueError):
            raise ApiError(404, "Unknown Guild", 10004) from None

    # -- users, application, guild, channels -----------------------------------------------------

    async def get_me(self, request: web.Request) -> web.Response:
        token = bearer_of(request)
        if token is not None:
            return json_response(payloads.oauth_user_payload(token.user))
        return json_response(payloads.client_user_payload(self.server.bot_user))

    async def get_application(self, request: web.Request) -> web.Response:
        return json_response(payloads.application_payload(self.server.setup))

    async def get_gateway(self, request: web.Request) -> web.Response:
        """Where to connect and the recommended shard count (``FakeDiscord(shards=...)``).

        ``max_concurrency`` 1, as for most bots: discord.py does not read it; it paces IDENTIFYs
        with ``before_identify_hook`` (5 s), which the harness turns off.
        """
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        body = {"url": self.server.gateway_url, "shards": self.server.shards, "session_start_limit": limit}
        return json_response(body)

    async def get_user(self, request: web.Request) -> web.Response:
        return json_response(payloads.user_payload(self._user(request.match_info["user_id"])))

    async def create_dm(self, request: web.Request) -> web.Response:
        body, _ = await self.read_body(request)
        user = self._user(body.get("recipient_id"))
        return json_response(self.server.channels[self.server.dm_channel_id(user)])

    async def get_my_guilds(self, request: web.Request) -> web.Response:
        """The caller's guilds as partial guilds, in id order; ``limit``, ``before`` and ``after`` page them.

        The caller is the bot, or with a bearer token the person it was issued to: the guilds they
        are a member of, their permissions there (the owner has all) and, only when asked for with
        ``with_counts`` as Discord does, the member counts (always for the bot, as before).
        """
        limit = int(request.query.get("limit", 200))
        before = int(request.query.get("before", 0)) or None
        after = int(request.query.get("after", 0))
        token = bearer_of(request)
        user = token.user if token is not None else self.server.bot_user
        counts = token is None or request.query.get("with_counts", "").lower() in ("1", "true")
        found = []
        for setup in sorted(self.server.guilds, key=lambda g: g.guild_id):
            if not setup.has_member(user.id) or setup.guild_id <= after or (before and setup.guild_id >= before):
                continue
            guild: dict[str, Any] = {
                "id": str(setup.guild_id),
                "name": setup.guild_name,
                "icon": None,
                "banner": None,
                "owner": setup.owner.id == user.id,
                "permissions": str(setup.permissions(user)),
                "features": [],
            }
            if counts:
                guild.update(approximate_member_count=len(setup.users), approximate_presence_count=0)
            found.append(guild)
        return json_response(found[-limit:] if before is not None else found[:limit])

    async def get_guild(self, request: web.Request) -> web.Response:
        guild = payloads.guild_payload(self._guild(request), include_members=False)
        for name in GATEWAY_ONLY_GUILD_FIELDS:
            guild.pop(name, None)
        return json_response(guild)

    async def get_guild_channels(self, request: web.Request) -> web.Response:
        guild_id = str(self._guild(request).guild_id)
        return json_response(
            [
                c
                for c in self.server.channels.values()
                if c.get("guild_id") == guild_id and c["type"] != payloads.CHANNEL_PUBLIC_THREAD
            ]
        )

    async def get_roles(self, request: web.Request) -> web.Response:
        return json_response(payloads.role_payloads(self._guild(request)))

    async def get_members(self, request: web.Request) -> web.Response:
        """The guild's members by user id, ``limit`` (default 1) after ``after``, like Discord."""
        setup = self._guild(request)
        limit = int(request.query.get("limit", 1))
        after = int(request.query.get("after", 0))
        members = sorted((user for user in setup.users if user.id > after), key=lambda user: user.id)
        return json_response([payloads.member_payload(setup, user) for user in members[:limit]])

    async def get_member(self, request: web.Request) -> web.Response:
        setup = self._guild(request)
        user = setup.listed(int(request.match_info["user_id"]))
        if user is None:
            raise ApiError(404, "Unknown Member", 10007)
        return json_response(payloads.member_payload(setup, user))

    async def get_channel(self, request: web.Request) -> web.Response:
        return json_response(self.server.channels[self._channel_id(request)])

    async def typing(self, request: web.Request) -> web.Response:
        self._channel_id(request)
        return no_content()

    # -- messages -------------------------------------------------------------------------------

    async def get_history(self, request: web.Request) -> web.Response:
        channel = str(self._channel_id(request))
        limit = int(request.query.get("limit", 50))
        before = int(request.query.get("before", 0)) or None
        after = int(request.query.get("after", 0))
        found = [
            message
            for message_id, message in self.server.messages.items()
            if message["channel_id"] == channel
            and message_id > after
            and (before is None or message_id < before)
            and not message["flags"] & FLAG_EPHEMERAL
        ]
        newest_first = sorted(found, key=lambda m: int(m["id"]), reverse=True)
        if after and before is None:
            return json_response(sorted(found, key=lambda m: int(m["id"]))[:limit][::-1])
        return json_response(newest_first[:limit])

    async def create_message(self, request: web.Request) -> web.Response:
        channel_id = self._channel_id(request)
        body, uploads = await self.read_body(request)
        return json_response(await self.post_bot_message(channel_id, body or {}, uploads))

    async def get_message(self, request: web.Request) -> web.Response:
        return json_response(self._message(request))

    async def edit_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        body, uploads = await self.read_body(request)
        return json_response(await self.apply_edit(message, body or {}, uploads))

    async def delete_message(self, request: web.Request) -> web.Response:
        await self.delete(self._message(request))
        return no_content()

    async def add_reaction(self, request: web.Request) -> web.Response:
        message = self._message(request)
        emoji = unquote(request.match_info["emoji"])
        await self.server.react(int(message["id"]), emoji, self.server.bot_user, add=True)
        return no_content()

    async def remove_reaction(self, request: web.Request) -> web.Response:
        message = self._message(request)
        emoji = unquote(request.match_info["emoji"])
        user_id = request.match_info["user_id"]
        user = self.server.bot_user if user_id == "@me" else self._user(user_id)
        await self.server.react(int(message["id"]), emoji, user, add=False)
        return no_content()

    async def post_bot_message(
        self,
        channel_id: int,
        body: dict[str, Any],
        uploads: Uploads,
        *,
        interaction: InteractionHandle | None = None,
        placeholder: bool = False,
    ) -> dict[str, Any]:
        """Create a message authored by the bot (channel message or interaction response)."""
        if not placeholder:
            self._validate(body, uploads)
        server = self.server
        nonce = body.get("nonce") if body.get("enforce_nonce") and interaction is None else None
        if nonce is not None:
            existing = server.message_with_nonce(channel_id, str(nonce), NONCE_WINDOW_SECONDS)
            if existing is not None:
                server.nonce_repeats.append(int(existing["id"]))
                return existing
        message_id = server.ids.next()
        message = payloads.message_payload(
            message_id=message_id,
            channel_id=channel_id,
            author=server.bot_user,
            content=body.get("content") or "",
            setup=server.guild_of(channel_id),
            attachments=self._attachments(channel_id, body.get("attachments"), uploads, existing=[]),
            embeds=body.get("embeds") or [],
            flags=body.get("flags") or 0,
        )
        if body.get("nonce") is not None:
            message["nonce"] = body["nonce"]
        reference = body.get("message_reference")
        if reference and reference.get("message_id"):
            server.add_reference(message, int(reference["message_id"]))
        if interaction is not None:
            self._mark_as_interaction_response(message, interaction)
        server.record_message(message)
        server.message_bodies[message_id] = [body]
        if nonce is not None:
            server.nonces[(channel_id, str(nonce))] = (message_id, time.monotonic())
        await self._broadcast("MESSAGE_CREATE", message)
        return message

    async def apply_edit(self, message: dict[str, Any], body: dict[str, Any], uploads: Uploads) -> dict[str, Any]:
        """Edit a message the way PATCH does: only the fields present in ``body`` change."""
        edited = dict(message)
        if "content" in body:
            edited["content"] = body["content"] or ""
        if "embeds" in body:
            edited["embeds"] = body["embeds"] or []
        if "attachments" in body or uploads:
            channel_id = int(message["channel_id"])
            wanted = body.get("attachments")
            edited["attachments"] = self._attachments(channel_id, wanted, uploads, existing=message["attachments"])
        if body.get("flags") is not None:
            kept = message["flags"] & ~FLAG_SUPPRESS_EMBEDS
            edited["flags"] = kept | (body["flags"] & FLAG_SUPPRESS_EMBEDS)
        # Filling in a deferred "thinking..." response is not an edit as far as users can see.
        if message["flags"] & FLAG_LOADING:
            edited["flags"] &= ~FLAG_LOADING
        else:
            edited["edited_timestamp"] = payloads.now_iso()
        self._validate(edited, {})
        message.update(edited)  # in place: tests and handles hold this dict
        self.server.message_bodies.setdefault(int(message["id"]), []).append(body)
        await self._broadcast("MESSAGE_UPDATE", message)
        return message

    async def delete(self, message: dict[str, Any]) -> None:
        message_id = int(message["id"])
        self.server.deleted_messages[message_id] = self.server.messages.pop(message_id)
        event = {"id": message["id"], "channel_id": message["channel_id"]}
        if "guild_id" in message:
            event["guild_id"] = message["guild_id"]
        await self._broadcast("MESSAGE_DELETE", event, ephemeral=bool(message["flags"] & FLAG_EPHEMERAL))

    async def _broadcast(self, event: str, data: dict[str, Any], *, ephemeral: bool | None = None) -> None:
        """Dispatch a bot-caused event; ephemeral messages are never sent over the gateway."""
        if ephemeral is None:
            ephemeral = bool(data.get("flags", 0) & FLAG_EPHEMERAL)
        if ephemeral:
            self.server.notify_changed()
        else:
            await self.server.dispatch(event, data)

    def _validate(self, body: dict[str, Any], uploads: Uploads) -> None:
        content = body.get("content") or ""
        if len(content) > MAX_CONTENT_LENGTH:
            raise ApiError(400, "Invalid Form Body", 50035, TOO_LONG)
        fields = ("embeds", "attachments", "sticker_ids", "components", "poll")
        if not content and not uploads and not any(body.get(name) for name in fields):
            raise ApiError(400, "Cannot send an empty message", 50006)

    def _attachments(
        self,
        channel_id: int,
        wanted: list[dict[str, Any]] | None,
        uploads: Uploads,
        *,
        existing: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Resolve the ``attachments`` list of a payload into attachment objects.

        Entries whose id is an existing attachment keep it; entries whose id is an upload index
        become new attachments. Without the list, uploads are appended to ``existing``.
        """
        store = self.server.store_attachment
        if wanted is None:
            new = [store(channel_id, filename, data) for filename, data in uploads.values()]
            return existing + new
        kept = {attachment["id"]: attachment for attachment in existing}
        result = []
        for entry in wanted:
            entry_id = str(entry.get("id"))
            if entry_id in kept:
                result.append(kept[entry_id])
            elif entry_id.isdigit() and int(entry_id) in uploads:
                filename, data = uploads[int(entry_id)]
                name = entry.get("filename") or filename
                result.append(store(channel_id, name, data, description=entry.get("description")))
            else:
                raise ApiError(400, "Invalid Form Body", 50035, {"attachments": {"_errors": [{"code": "UNKNOWN"}]}})
        return result

    # -- application commands -------------------------------------------------------------------

    def _command_list(self, request: web.Request) -> list[dict[str, Any]]:
        """The global commands, or those of the guild in the URL (``guild_commands[guild id]``)."""
        if int(request.match_info["application_id"]) != self.server.application_id:
            raise ApiError(403, "Missing Access", 50001)
        if "guild_id" not in request.match_info:
            return self.server.global_commands
        return self.server.guild_commands.setdefault(self._guild(request).guild_id, [])

    async def get_commands(self, request: web.Request) -> web.Response:
        return json_response(self._command_list(request))

    async def put_commands(self, request: web.Request) -> web.Response:
        """Bulk overwrite (what ``tree.sync()`` does). Ids survive re-syncs of the same name."""
        current = self._command_list(request)
        old_ids = {command["name"]: command["id"] for command in current}
        body, _ = await self.read_body(request)
        synced = []
        for definition in body or []:
            command = {
                "type": 1,
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                **definition,
                "id": old_ids.get(definition["name"]) or str(self.server.ids.next()),
                "application_id": str(self.server.application_id),
                "version": str(self.server.ids.next()),
            }
            if "guild_id" in request.match_info:
                command["guild_id"] = str(self._guild(request).guild_id)
            synced.append(command)
        current[:] = synced
        return json_response(synced)

    # -- interactions ---------------------------------------------------------------------------

    def _interaction(self, interaction_id: int, token: str) -> InteractionHandle:
        handle = self.server.interactions.get(interaction_id)
        if handle is None or handle.token != token:
            raise ApiError(404, "Unknown interaction", 10062)
        return handle

    def _interaction_by_token(self, request: web.Request) -> InteractionHandle:
        token = request.match_info["token"]
        if int(request.match_info["application_id"]) == self.server.application_id:
            for handle in self.server.interactions.values():
                if handle.token == token:
                    return handle
        raise ApiError(404, "Unknown Webhook", 10015)

    def _mark_as_interaction_response(self, message: dict[str, Any], handle: InteractionHandle) -> None:
        invoker = handle.payload.get("member", {}).get("user") or handle.payload["user"]
        message.update(
            webhook_id=str(self.server.application_id),
            application_id=str(self.server.application_id),
            interaction_metadata={
                "id": str(handle.id),
                "type": handle.payload["type"],
                "user": invoker,
                "authorizing_integration_owners": handle.payload["authorizing_integration_owners"],
                "name": handle.payload["data"]["name"],
                "command_type": 1,
            },
        )
        if message["type"] == payloads.MESSAGE_DEFAULT:
            message["type"] = payloads.MESSAGE_CHAT_INPUT_COMMAND

    async def interaction_callback(self, request: web.Request) -> web.Response:
        handle = self._interaction(int(request.match_info["interaction_id"]), request.match_info["token"])
        body, uploads = await self.read_body(request)
        if handle.callbacks:
            raise ApiError(400, "Interaction has already been acknowledged.", 40060)
        kind, data = body["type"], body.get("data") or {}
        message = None
        if kind == CALLBACK_MESSAGE:
            message = await self.post_bot_message(handle.channel_id, data, uploads, interaction=handle)
        elif kind == CALLBACK_DEFERRED_MESSAGE:
            flags = FLAG_LOADING | ((data.get("flags") or 0) & FLAG_EPHEMERAL)
            placeholder = {"content": "", "flags": flags}
            message = await self.post_bot_message(
                handle.channel_id, placeholder, {}, interaction=handle, placeholder=True
            )
        elif kind == CALLBACK_UPDATE_MESSAGE and "message" in handle.payload:
            target = self.server.messages[int(handle.payload["message"]["id"])]
            message = await self.apply_edit(target, data, uploads)
        # Recorded only once handled: a failed callback (e.g. an empty message) is not a response.
        handle.callbacks.append(body)
        if kind in (CALLBACK_MESSAGE, CALLBACK_DEFERRED_MESSAGE) and message is not None:
            handle.original_id = int(message["id"])

        if request.query.get("with_response", "").lower() not in ("1", "true"):
            return no_content()
        callback: dict[str, Any] = {"interaction": {"id": str(handle.id), "type": handle.payload["type"]}}
        if message is not None:
            callback["interaction"].update(
                response_message_id=message["id"],
                response_message_loading=kind == CALLBACK_DEFERRED_MESSAGE,
                response_message_ephemeral=bool(message["flags"] & FLAG_EPHEMERAL),
            )
            callback["resource"] = {"type": kind, "message": message}
        return json_response(callback)

    async def create_followup(self, request: web.Request) -> web.Response:
        handle = self._interaction_by_token(request)
        body, uploads = await self.read_body(request)
        original = handle.original
        if original is not None and original["flags"] & FLAG_LOADING:
            # Like Discord: the first follow-up after a deferral fills in the "thinking..." message.
            message = await self.apply_edit(original, body or {}, uploads)
        else:
            message = await self.post_bot_message(handle.channel_id, body or {}, uploads, interaction=handle)
            handle.followup_ids.append(int(message["id"]))
        if request.query.get("wait", "").lower() in ("1", "true"):
            return json_response(message)
        return no_content()

    def _webhook_message(self, request: web.Request) -> dict[str, Any]:
        handle = self._interaction_by_token(request)
        requested = request.match_info["message_id"]
        if requested == "@original":
            message_id = handle.original_id
        elif int(requested) in (handle.original_id, *handle.followup_ids):
            message_id = int(requested)
        else:
            message_id = None
        if message_id is None or message_id not in self.server.messages:
            raise ApiError(404, "Unknown Message", 10008)
        return self.server.messages[message_id]

    async def get_webhook_message(self, request: web.Request) -> web.Response:
        return json_response(self._webhook_message(request))

    async def edit_webhook_message(self, request: web.Request) -> web.Response:
        message = self._webhook_message(request)
        body, uploads = await self.read_body(request)
        return json_response(await self.apply_edit(message, body or {}, uploads))

    async def delete_webhook_message(self, request: web.Request) -> web.Response:
        await self.delete(self._webhook_message(request))
        return no_content()

    # -- files ----------------------------------------------------------------------------------

    async def get_attachment(self, request: web.Request) -> web.Response:
        data = self.server.blobs.get(int(request.match_info["attachment_id"]))
        if data is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=data, headers={"Content-Type": "application/octet-stream"})
