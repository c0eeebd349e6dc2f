"""Signing in: with Discord (OAuth2, authorization code), or with the operator's one-time link.

The session cookie carries a random token signed with the dashboard's secret (itsdangerous), so a
forged or altered cookie is refused before the database is asked; the database keeps only the
token's digest, with the session's expiry and its CSRF token.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from itsdangerous import BadSignature, URLSafeTimedSerializer

from trainerbot.storage.sessions import GuildSeen, WebSessions

log = logging.getLogger(__name__)

ADMINISTRATOR = 0x8  # Discord's permission bit
SCOPES = "identify guilds"
TIMEOUT = aiohttp.ClientTimeout(total=15)


def dashboard_secret(configured: str | None, data_dir: Path) -> str:
    """The key that signs cookies: the setting, else one made once and kept beside the database."""
    if configured:
        return configured
    path = data_dir / "web-secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        secret = secrets.token_urlsafe(48)
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)  # readable by the bot's user only, before the secret is in it
        path.write_text(secret)
        return secret


class CookieSigner:
    def __init__(self, secret: str, max_age: float) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="trainerbot-dashboard")
        self.max_age = max_age

    def sign(self, value: str) -> str:
        return self._serializer.dumps(value)

    def unsign(self, signed: str, max_age: float | None = None) -> str | None:
        try:
            value = self._serializer.loads(signed, max_age=self.max_age if max_age is None else max_age)
        except BadSignature:  # also an expired one: SignatureExpired is a BadSignature
            return None
        return value if isinstance(value, str) else None


class OperatorLink:
    """The one-time link printed at start (as Jupyter does): it signs in whoever runs the bot, as an owner."""

    def __init__(self, lifetime: float = 24 * 3600) -> None:
        self._token: str | None = secrets.token_urlsafe(32)
        self._expires = time.monotonic() + lifetime

    @property
    def token(self) -> str | None:
        return self._token

    def take(self, token: str) -> bool:
        """Whether ``token`` is the link's; it works once."""
        if self._token is None or time.monotonic() > self._expires:
            return False
        if not hmac.compare_digest(token.encode(), self._token.encode()):
            return False
        self._token = None
        return True


class SignInLimits:
    """At most ``attempts`` sign-in attempts per address in ``window`` seconds (guessing links, replaying codes),
    counted in the database: several dashboards behind one address count together."""

    def __init__(self, sessions: WebSessions, attempts: int = 10, window: float = 600.0) -> None:
        self.sessions = sessions
        self.attempts = attempts
        self.window = window

    async def allow(self, address: str) -> bool:
        return await asyncio.to_thread(
            self.sessions.attempt_sign_in, address, attempts=self.attempts, window=self.window
        )


@dataclass(frozen=True)
class DiscordUser:
    id: int
    name: str
    guilds: list[GuildSeen]


class SignInFailed(Exception):
    """Discord refused or answered something unexpected; the message is safe to show."""


class DiscordOAuth:
    """The authorization-code flow against Discord (or, in tests, the loopback Discord)."""

    def __init__(self, discord_url: str, client_id: int, client_secret: str, redirect_uri: str) -> None:
        self.discord_url = discord_url
        self.api = f"{discord_url}/api/v10"
        self.client_id = client_id
        self._client_secret = client_secret
        self.redirect_uri = redirect_uri

    def authorize_url(self, state: str) -> str:
        query = {
            "client_id": str(self.client_id),
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "scope": SCOPES,
            "state": state,
            "prompt": "none",
        }
        return f"{self.discord_url}/oauth2/authorize?{urlencode(query)}"

    async def user(self, code: str) -> DiscordUser:
        """Trades the code for a token, then asks who it is and which servers they are in."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri}
        credentials = base64.b64encode(f"{self.client_id}:{self._client_secret}".encode()).decode()
        auth = {"Authorization": f"Basic {credentials}"}  # the client's id and secret, as OAuth2 asks
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
                async with http.post(f"{self.api}/oauth2/token", data=form, headers=auth) as response:
                    if response.status != 200:
                        log.warning("Discord refused the sign-in code (HTTP %d)", response.status)
                        raise SignInFailed("Discord did not accept this sign-in. Please try again.")
                    token = (await response.json())["access_token"]
                bearer = {"Authorization": f"Bearer {token}"}
                async with http.get(f"{self.api}/users/@me", headers=bearer) as response:
                    response.raise_for_status()
                    me = await response.json()
                async with http.get(f"{self.api}/users/@me/guilds", headers=bearer) as response:
                    response.raise_for_status()
                    guilds = await response.json()
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as error:
            log.warning("signing in with Discord failed: %r", error)
            raise SignInFailed("Discord could not be reached to sign you in. Please try again.") from None
        seen = [
            GuildSeen(
                int(g["id"]),
                str(g.get("name", "")),
                bool(g.get("owner")),
                bool(int(g.get("permissions", "0")) & ADMINISTRATOR),
            )
            for g in guilds
        ]
        return DiscordUser(int(me["id"]), me.get("global_name") or me["username"], seen)
