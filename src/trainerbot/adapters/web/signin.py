"""Signing in and out of the dashboard: with Discord (OAuth2), or with the operator's one-time link."""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from trainerbot.adapters.web.auth import SignInFailed
from trainerbot.adapters.web.dashboard import SESSION_COOKIE, Dashboard, NotFound

log = logging.getLogger(__name__)

STATE_COOKIE = "trainerbot_signin"
OPERATOR_ID = 0  # the console's user id: the operator is whoever runs the bot


class SignIn:
    def __init__(self, web: Dashboard) -> None:
        self.web = web

    async def sign_in_discord(self, request: Request) -> Response:
        if self.web.oauth is None:
            raise NotFound()
        state = secrets.token_urlsafe(24)
        response = RedirectResponse(self.web.oauth.authorize_url(state), status_code=303)
        response.set_cookie(
            STATE_COOKIE,
            self.web.signer.sign(state),
            max_age=600,
            httponly=True,
            samesite="lax",
            secure=self.web.secure,
        )
        return response

    async def discord_callback(self, request: Request) -> Response:
        if self.web.oauth is None:
            raise NotFound()
        if not await self.web.limits.allow(_address(request)):
            raise HTTPException(429, "Too many sign-in attempts from here. Wait a few minutes and try again.")
        signed = request.cookies.get(STATE_COOKIE)
        expected = self.web.signer.unsign(signed, max_age=600) if signed else None
        state = request.query_params.get("state", "")
        if expected is None or not hmac.compare_digest(state.encode(), expected.encode()):
            raise HTTPException(400, "This sign-in link is stale or not yours. Start again from the sign-in page.")
        if "error" in request.query_params:
            return self.web.render(request, "signin.html", {"discord": True, "refused": True}, status=400)
        try:
            user = await self.web.oauth.user(request.query_params.get("code", ""))
        except SignInFailed as failed:
            raise HTTPException(400, str(failed)) from None
        token = await asyncio.to_thread(
            self.web.services.store.web_sessions.create,
            user.id,
            user.name,
            operator=False,
            guilds=user.guilds,
            hours=self.web.session_seconds / 3600,
        )
        log.info("user %s signed in to the dashboard with Discord", user.id)
        response = self._signed_in(token)
        response.delete_cookie(STATE_COOKIE, path="/")
        return response

    async def sign_in_link(self, request: Request) -> Response:
        if not await self.web.limits.allow(_address(request)):
            raise HTTPException(429, "Too many sign-in attempts from here. Wait a few minutes and try again.")
        if not self.web.link.take(request.path_params["token"]):
            raise HTTPException(403, "This sign-in link was used already or is wrong. Restart the bot for a new one.")
        token = await asyncio.to_thread(
            self.web.services.store.web_sessions.create,
            OPERATOR_ID,
            "operator",
            operator=True,
            guilds=[],
            hours=self.web.session_seconds / 3600,
        )
        log.info("the operator signed in to the dashboard with the one-time link")
        return self._signed_in(token)

    def _signed_in(self, token: str) -> Response:
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self.web.signer.sign(token),
            max_age=int(self.web.session_seconds),
            httponly=True,
            samesite="lax",
            secure=self.web.secure,
        )
        return response

    async def sign_out(self, request: Request) -> Response:
        session = await self.web.signed_in(request)
        await self.web.check_change(request, session)
        signed = request.cookies.get(SESSION_COOKIE, "")
        token = self.web.signer.unsign(signed)
        if token:
            await asyncio.to_thread(self.web.services.store.web_sessions.end, token)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response


def _address(request: Request) -> str:
    return request.client.host if request.client else "?"
