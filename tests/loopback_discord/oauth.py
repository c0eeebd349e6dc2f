"""Discord's OAuth2 authorization code flow, as a web dashboard signs people in through it.

Routes, where real Discord has them:

* ``GET /oauth2/authorize`` (discord.com/oauth2/authorize, not under ``/api``): the consent page
  "Authorize <application>?" for the user signed in to the fake Discord in the browser
  (``FakeDiscord.sign_in_browser``), with the scopes asked for, a real ``<form method=post>`` and
  its "Authorize" and "Cancel" buttons. ``POST /oauth2/authorize`` is that form: 302 to
  ``redirect_uri?code=...&state=...``, or ``?error=access_denied&error_description=...&state=...``.
  A request Discord would refuse (unknown client_id, response_type other than ``code``, no or an
  unknown scope, a redirect_uri the application did not register) gets an HTML error page, 400.
* ``POST /api/v10/oauth2/token`` (and ``/api/oauth2/token``), form-encoded, client credentials by
  HTTP Basic auth or ``client_id``/``client_secret`` fields: ``grant_type=authorization_code``
  (a code is single use, expires after ``CODE_LIFETIME_SECONDS``, and is bound to its client and
  redirect_uri) or ``refresh_token``. Errors as Discord words them: 400 ``{"error":
  "invalid_grant", "error_description": ...}``, 401 ``{"error": "invalid_client"}``.
* ``POST /api/v10/oauth2/token/revoke``: revokes an access or refresh token (and its pair).
* With ``Authorization: Bearer <access token>``: ``GET /users/@me`` (scope ``identify``),
  ``GET /users/@me/guilds`` (scope ``guilds``; handled in ``rest.py``, which serves the bot the
  same routes) and ``GET /oauth2/@me``. A bearer token opens nothing else, and the bot token does
  not open ``/oauth2/@me`` (``rest.BEARER_ROUTES``; ``rest.RestApi.middleware`` decides who may call what).
"""

from __future__ import annotations

import base64
import html
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from aiohttp import web
from yarl import URL

from . import payloads
from .payloads import FakeUser
from .rest import RECORD_KEY, bearer_of, json_response

if TYPE_CHECKING:
    from .server import FakeDiscord

CODE_LIFETIME_SECONDS = 600  # Discord's authorization codes last 10 minutes
TOKEN_LIFETIME_SECONDS = 604_800  # and its access tokens a week
# The scopes the fake can grant, with the words Discord's consent page uses for them.
SCOPES = {"identify": "Access your username, avatar, and banner", "guilds": "Know what servers you're in"}
DENIED = "The resource owner or authorization server denied the request"


@dataclass
class OAuthCode:
    """An authorization code the consent page issued (``FakeDiscord.oauth_codes_issued``)."""

    code: str
    client_id: str
    user: FakeUser
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    expires_at: float  # time.monotonic(); set it to 0 to expire the code
    used: bool = False


@dataclass
class OAuthToken:
    """An access token and its refresh token (``FakeDiscord.oauth_tokens``)."""

    access_token: str
    refresh_token: str
    client_id: str
    user: FakeUser
    scopes: tuple[str, ...]
    expires_at: float  # time.monotonic(); set it to 0 to expire the token
    revoked: bool = False  # by /oauth2/token/revoke, or its refresh token was spent

    @property
    def valid(self) -> bool:
        return not self.revoked and time.monotonic() < self.expires_at

    def response(self) -> dict[str, Any]:
        """The token endpoint's answer."""
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECONDS,
            "refresh_token": self.refresh_token,
            "scope": " ".join(self.scopes),
        }


class AuthorizeRefused(Exception):
    """A request to /oauth2/authorize that Discord would show an error page for."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


class OAuthError(Exception):
    """An error of the token endpoint, answered as OAuth2 JSON."""

    def __init__(self, status: int, error: str, description: str | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.description = status, error, description


@dataclass(frozen=True)
class AuthorizeRequest:
    """The validated parameters of /oauth2/authorize (query of the page, fields of its form)."""

    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    prompt: str | None

    def redirect(self, **params: str) -> web.Response:
        """302 back to the redirect_uri with ``params`` and the state, as given."""
        state = {"state": self.state} if self.state is not None else {}
        location = URL(self.redirect_uri).extend_query({**params, **state})
        return web.Response(status=302, headers={"Location": str(location)})


class OAuth2:
    """The handlers; the state (codes, tokens, who is signed in) lives on the ``FakeDiscord``."""

    def __init__(self, server: FakeDiscord) -> None:
        self.server = server

    def routes(self) -> list[web.RouteDef]:
        found = [web.get("/oauth2/authorize", self.authorize_page), web.post("/oauth2/authorize", self.authorize)]
        for prefix in ("/api/v10", "/api"):
            found += [
                web.post(f"{prefix}/oauth2/token", self.token),
                web.post(f"{prefix}/oauth2/token/revoke", self.revoke),
                web.get(f"{prefix}/oauth2/@me", self.current_authorization),
            ]
        return found

    # -- the consent page -----------------------------------------------------------------------

    def _authorize_request(self, params: Any) -> AuthorizeRequest:
        server = self.server
        if params.get("client_id") != server.client_id:
            raise AuthorizeRefused("Unknown Application: no application has this client_id.")
        if params.get("response_type") != "code":
            raise AuthorizeRefused(f"Unsupported response_type {params.get('response_type')!r}: use code.")
        scopes = tuple(params.get("scope", "").split())
        if not scopes:
            raise AuthorizeRefused("Invalid scope: scope is required.")
        unknown = [scope for scope in scopes if scope not in SCOPES]
        if unknown:
            raise AuthorizeRefused(f"Invalid scope {unknown[0]!r} (the loopback Discord grants {sorted(SCOPES)}).")
        redirect_uri = params.get("redirect_uri", "")
        registered = server.oauth_redirect_uris
        if URL(redirect_uri).scheme not in ("http", "https") or (registered and redirect_uri not in registered):
            raise AuthorizeRefused(f"Invalid OAuth2 redirect_uri {redirect_uri!r}.")
        return AuthorizeRequest(server.client_id, redirect_uri, scopes, params.get("state"), params.get("prompt"))

    async def authorize_page(self, request: web.Request) -> web.Response:
        """The consent page, or straight back with a code for ``prompt=none`` once the user consented."""
        try:
            asked = self._authorize_request(request.query)
            user = self._signed_in()
        except AuthorizeRefused as refused:
            return self._error_page(refused)
        consented = {(asked.client_id, user.id, scope) for scope in asked.scopes}
        if asked.prompt == "none" and consented <= self.server.oauth_consents:
            return asked.redirect(code=self._issue_code(asked, user).code)
        return html_page(f"Authorize {self._app_name()}?", self._consent_html(asked, user))

    async def authorize(self, request: web.Request) -> web.Response:
        """The consent form: Authorize gives a code, Cancel access_denied, both back at the redirect_uri."""
        form = await request.post()
        try:
            asked = self._authorize_request(form)
            user = self._signed_in()
        except AuthorizeRefused as refused:
            return self._error_page(refused)
        if form.get("action") != "authorize":
            return asked.redirect(error="access_denied", error_description=DENIED)
        self.server.oauth_consents |= {(asked.client_id, user.id, scope) for scope in asked.scopes}
        return asked.redirect(code=self._issue_code(asked, user).code)

    def _signed_in(self) -> FakeUser:
        user = self.server.browser_user
        if user is None:
            raise AuthorizeRefused(
                "You are not signed in to Discord (the test signs someone in with server.sign_in_browser(user)).", 401
            )
        return user

    def _issue_code(self, asked: AuthorizeRequest, user: FakeUser) -> OAuthCode:
        code = OAuthCode(
            code=secrets.token_hex(15),
            client_id=asked.client_id,
            user=user,
            redirect_uri=asked.redirect_uri,
            scopes=asked.scopes,
            state=asked.state,
            expires_at=time.monotonic() + CODE_LIFETIME_SECONDS,
        )
        self.server.oauth_codes_issued.append(code)
        self.server.notify_changed()
        return code

    def _app_name(self) -> str:
        return payloads.application_payload(self.server.setup)["name"]

    def _consent_html(self, asked: AuthorizeRequest, user: FakeUser) -> str:
        app, name = html.escape(self._app_name()), html.escape(user.global_name or user.username)
        scopes = "".join(f'<li data-scope="{scope}">{html.escape(SCOPES[scope])}</li>' for scope in asked.scopes)
        fields = {"client_id": asked.client_id, "redirect_uri": asked.redirect_uri, "scope": " ".join(asked.scopes)}
        fields |= {"response_type": "code"} | ({"state": asked.state} if asked.state is not None else {})
        hidden = "".join(
            f'<input type="hidden" name="{key}" value="{html.escape(value)}">' for key, value in fields.items()
        )
        return (
            f"<h1>Authorize {app}?</h1>"
            f'<p class="signed-in">Signed in to Discord as <strong id="user">{name}</strong> '
            f'(<span id="user-id">{user.id}</span>)</p>'
            f"<p>{app} wants to access your account. This will allow the developer of {app} to:</p>"
            f'<ul id="scopes">{scopes}</ul>'
            f'<p>Once you authorize, you will be redirected to <code id="redirect">'
            f"{html.escape(asked.redirect_uri)}</code></p>"
            f'<form method="post" action="/oauth2/authorize">{hidden}'
            '<button type="submit" name="action" value="cancel">Cancel</button> '
            '<button type="submit" name="action" value="authorize">Authorize</button></form>'
        )

    @staticmethod
    def _error_page(refused: AuthorizeRefused) -> web.Response:
        body = f'<h1>Error</h1><p id="error">{html.escape(refused.message)}</p>'
        return html_page("Discord | Error", body, status=refused.status)

    # -- the token endpoint ---------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        try:
            form = await self._client_form(request)
            grant_type = form.get("grant_type")
            if grant_type == "authorization_code":
                token = self._exchange_code(form)
            elif grant_type == "refresh_token":
                token = self._refresh(form)
            else:
                raise OAuthError(400, "unsupported_grant_type", f"Unsupported grant type {grant_type!r}")
        except OAuthError as error:
            return oauth_error(error)
        return json_response(token.response())

    async def revoke(self, request: web.Request) -> web.Response:
        """Revokes an access or refresh token, and its pair; an unknown token is no error (RFC 7009)."""
        try:
            form = await self._client_form(request)
        except OAuthError as error:
            return oauth_error(error)
        for token in self.server.oauth_tokens:
            if form.get("token") in (token.access_token, token.refresh_token) and token.client_id == form["client_id"]:
                token.revoked = True
        return json_response({})

    async def _client_form(self, request: web.Request) -> dict[str, str]:
        """The form fields, once the client's credentials (Basic auth or form fields) are right."""
        form = {key: str(value) for key, value in (await request.post()).items()}
        record = request.get(RECORD_KEY)
        if record is not None:
            record.json = form
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                decoded = base64.b64decode(header.removeprefix("Basic "), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                raise OAuthError(401, "invalid_client") from None
            # RFC 6749 2.3.1: both are form-encoded before they are joined by ":" (aiohttp's BasicAuth is deprecated).
            client_id, secret = (unquote_plus(part) for part in decoded.partition(":")[::2])
        if client_id != self.server.client_id or not secrets.compare_digest(secret or "", self.server.client_secret):
            raise OAuthError(401, "invalid_client")
        return {**form, "client_id": client_id}

    def _exchange_code(self, form: dict[str, str]) -> OAuthToken:
        code = next((c for c in self.server.oauth_codes_issued if c.code == form.get("code")), None)
        if code is None or code.used or time.monotonic() >= code.expires_at or code.client_id != form["client_id"]:
            raise OAuthError(400, "invalid_grant", 'Invalid "code" in request.')
        if form.get("redirect_uri") != code.redirect_uri:
            raise OAuthError(400, "invalid_grant", 'Invalid "redirect_uri" in request.')
        code.used = True
        return self._issue_token(code.client_id, code.user, code.scopes)

    def _refresh(self, form: dict[str, str]) -> OAuthToken:
        """A new token pair for a refresh token, which is spent (and its access token revoked)."""
        old = next((t for t in self.server.oauth_tokens if t.refresh_token == form.get("refresh_token")), None)
        if old is None or old.revoked or old.client_id != form["client_id"]:
            raise OAuthError(400, "invalid_grant", 'Invalid "refresh_token" in request.')
        old.revoked = True
        return self._issue_token(old.client_id, old.user, old.scopes)

    def _issue_token(self, client_id: str, user: FakeUser, scopes: tuple[str, ...]) -> OAuthToken:
        token = OAuthToken(
            access_token=secrets.token_hex(15),
            refresh_token=secrets.token_hex(15),
            client_id=client_id,
            user=user,
            scopes=scopes,
            expires_at=time.monotonic() + TOKEN_LIFETIME_SECONDS,
        )
        self.server.oauth_tokens.append(token)
        return token

    # -- bearer routes --------------------------------------------------------------------------

    async def current_authorization(self, request: web.Request) -> web.Response:
        """GET /oauth2/@me: the application, the scopes, when the token expires and (identify) the user."""
        token = bearer_of(request)
        if token is None:  # the middleware lets only bearer tokens through; this guards direct calls
            return json_response({"message": "401: Unauthorized", "code": 0}, status=401)
        expires = time.time() + token.expires_at - time.monotonic()
        found: dict[str, Any] = {
            "application": payloads.application_payload(self.server.setup),
            "scopes": list(token.scopes),
            "expires": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(expires)),
        }
        if "identify" in token.scopes:
            found["user"] = payloads.user_payload(token.user)
        return json_response(found)


def oauth_error(error: OAuthError) -> web.Response:
    body = {"error": error.error}
    if error.description is not None:
        body["error_description"] = error.description
    return json_response(body, status=error.status)


def html_page(title: str, body: str, *, status: int = 200) -> web.Response:
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;background:#313338;color:#dbdee1;display:flex;justify-content:center}"
        "main{background:#2b2d31;margin-top:4em;padding:2em;border-radius:8px;max-width:28em}"
        "button{padding:.6em 1.4em;border:0;border-radius:4px;margin-right:.5em}"
        "button[value=authorize]{background:#5865f2;color:#fff}</style>"
        f"</head><body><main>{body}</main></body></html>"
    )
    return web.Response(text=page, status=status, content_type="text/html")
