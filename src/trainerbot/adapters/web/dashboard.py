"""The dashboard: a third front end over the same core services as Discord and the console.

Pages are rendered on the server (Starlette and Jinja2) and work without JavaScript; one small
script adds live job progress. Every page and API answer is about one base, reached as
``/servers/<id>/...`` (``/servers/global/...`` for the bot-wide one): a base the signed-in person
may not see answers 404, exactly like one that does not exist. What they may do there is the
core's to decide, with a ``Caller`` built as the Discord adapter builds one.

This module holds what every page shares: sessions, where the person stands (``Place``), rendering,
and running a change (``act``). The pages are in pages.py, signing in and out in signin.py.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from trainerbot.adapters.web.auth import (
    CookieSigner,
    DiscordOAuth,
    OperatorLink,
    SignInLimits,
    dashboard_secret,
)
from trainerbot.adapters.web.directory import Directory, Membership
from trainerbot.app import Services
from trainerbot.errors import PermissionDenied, TooLarge, UserError
from trainerbot.storage.sessions import WebSession
from trainerbot.types import GLOBAL_BASE, Caller, Upload, human_size

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SESSION_COOKIE = "trainerbot_session"
FORM_SLACK = 64 * 1024  # a form's fields and multipart framing, beside its file
FLASH_COOKIE = "trainerbot_said"
PAGES = [  # (page, title, who sees it in the navigation: "members" or "admins")
    ("knowledge", "Knowledge", "admins"),
    ("review", "Review", "admins"),
    ("training", "Training", "members"),
    ("tests", "Tests", "members"),
    ("feedback", "Feedback", "admins"),
    ("settings", "Settings", "members"),
    ("audit", "Changes", "admins"),
]


class NotFound(HTTPException):
    """A base that does not exist for this person (or at all): the same answer either way."""

    def __init__(self) -> None:
        super().__init__(404, "Not found")


@dataclass(frozen=True)
class Place:
    """One base as the signed-in person stands in it."""

    base: int
    slug: str  # in URLs: the server's id, or "global"
    name: str
    caller: Caller
    admin: bool


class Dashboard:
    def __init__(
        self,
        services: Services,
        directory: Directory,
        *,
        public_url: str,
        link: OperatorLink | None = None,
    ) -> None:
        settings = services.settings
        self.services = services
        self.directory = directory
        self.public_url = public_url.rstrip("/")
        self.secure = self.public_url.startswith("https://")
        self.link = link if link is not None else OperatorLink()
        self.limits = SignInLimits(services.store.web_sessions)
        self.session_seconds = settings.web_session_hours * 3600
        secret = dashboard_secret(
            settings.web_secret.get_secret_value() if settings.web_secret else None, settings.data_dir
        )
        self.signer = CookieSigner(secret, self.session_seconds)
        self.oauth: DiscordOAuth | None = None
        if settings.discord_client_id is not None and settings.discord_client_secret is not None:
            self.oauth = DiscordOAuth(
                settings.discord_url,
                settings.discord_client_id,
                settings.discord_client_secret.get_secret_value(),
                f"{self.public_url}/signin/discord/callback",
            )
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.templates.env.globals.update(pages=PAGES, size=human_size)
        self.templates.env.filters["when"] = lambda iso: (iso or "")[:16].replace("T", " ")
        self.templates.env.filters["chat"] = chat_markup

    @property
    def link_url(self) -> str | None:
        """The operator's one-time sign-in link, while it is unused."""
        token = self.link.token
        return f"{self.public_url}/signin/link/{token}" if token else None

    # --- the application ------------------------------------------------------------------------------

    def app(self) -> Starlette:
        # The pages and the sign-in build on this module's Place, Form and NotFound.
        from trainerbot.adapters.web.pages import Pages
        from trainerbot.adapters.web.signin import SignIn

        signin, pages = SignIn(self), Pages(self)
        routes = [
            Route("/", pages.home),
            Route("/signin/discord", signin.sign_in_discord),
            Route("/signin/discord/callback", signin.discord_callback),
            Route("/signin/link/{token}", signin.sign_in_link),
            Route("/signout", signin.sign_out, methods=["POST"]),
            Route("/status", pages.status),
            Route("/servers/{where}", pages.server_home),
            Route("/servers/{where}/knowledge", pages.knowledge),
            Route("/servers/{where}/knowledge/add", pages.add_example, methods=["POST"]),
            Route("/servers/{where}/knowledge/import", pages.import_examples, methods=["POST"]),
            Route("/servers/{where}/knowledge/export", pages.export_examples),
            Route("/servers/{where}/examples/{example:int}", pages.example),
            Route("/servers/{where}/examples/{example:int}/edit", pages.edit_example, methods=["POST"]),
            Route("/servers/{where}/examples/{example:int}/delete", pages.delete_example, methods=["POST"]),
            Route("/servers/{where}/answers/rename", pages.rename_answer, methods=["POST"]),
            Route("/servers/{where}/answers/delete", pages.delete_answer, methods=["POST"]),
            Route("/servers/{where}/review", pages.review),
            Route("/servers/{where}/review/{topic:int}/answer", pages.answer_topic, methods=["POST"]),
            Route("/servers/{where}/review/{topic:int}/dismiss", pages.dismiss_topic, methods=["POST"]),
            Route("/servers/{where}/training", pages.training),
            Route("/servers/{where}/training/start", pages.start_training, methods=["POST"]),
            Route("/servers/{where}/training/activate", pages.activate_version, methods=["POST"]),
            Route("/servers/{where}/tests", pages.tests, methods=["GET", "POST"]),
            Route("/servers/{where}/feedback", pages.feedback),
            Route("/servers/{where}/settings", pages.settings_page, methods=["GET", "POST"]),
            Route("/servers/{where}/audit", pages.audit),
            Route("/api/servers", pages.api_servers),
            Route("/api/servers/{where}/jobs", pages.api_jobs),
            Route("/api/servers/{where}/answers", pages.api_answers),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        return Starlette(routes=routes, exception_handlers={HTTPException: self.http_error})

    # --- sessions, places and rules ------------------------------------------------------------------

    async def session(self, request: Request) -> WebSession | None:
        signed = request.cookies.get(SESSION_COOKIE)
        token = self.signer.unsign(signed) if signed else None
        if token is None:
            return None
        return await asyncio.to_thread(self.services.store.web_sessions.get, token)

    def is_owner(self, session: WebSession) -> bool:
        return session.operator or self.directory.is_owner(session.user_id)

    async def place(self, session: WebSession, where: str) -> Place:
        """The base named in the URL as this person stands there; NotFound if it does not exist for them."""
        owner = self.is_owner(session)
        person = Caller(user_id=session.user_id, name=session.name, is_owner=owner, via="web")
        if where == "global":
            if not owner:
                raise NotFound()
            return Place(GLOBAL_BASE, "global", "Bot-wide knowledge", person, True)
        if not where.isdigit() or len(where) > 20 or int(where) == GLOBAL_BASE:
            raise NotFound()
        server_id = int(where)
        servers = {server.id: server.name for server in await self.directory.servers()}
        membership = await self._membership(session, server_id)
        if membership is None and not (owner and server_id in await self._all_bases(servers)):
            raise NotFound()
        caller = replace(
            person,
            guild_id=server_id,
            manages_server=membership.manages_server if membership else False,
            roles=membership.roles if membership else frozenset(),
        )
        name = servers.get(server_id) or next((g.name for g in session.guilds if g.id == server_id), f"Server {where}")
        admin = await asyncio.to_thread(self.services.access.is_admin, caller)
        return Place(server_id, where, name, caller, admin)

    async def _membership(self, session: WebSession, server_id: int) -> Membership | None:
        if session.operator:  # whoever runs the bot: an owner, and nobody on Discord
            return None
        return await self.directory.membership(server_id, session.user_id, session.guilds)

    async def _all_bases(self, servers: dict[int, str]) -> set[int]:
        stored = await asyncio.to_thread(self.services.store.knowledge.bases)
        return set(servers) | set(stored)

    async def visible_servers(self, session: WebSession) -> list[tuple[str, str, str]]:
        """(slug, name, standing) of every base this person may open.

        Owners: every server the bot is in or has anything of. Anyone else: the servers Discord listed for
        them at sign-in that the bot is in, each checked with the directory (a few, not all the bot's).
        """
        servers = {server.id: server.name for server in await self.directory.servers()}
        seen = {g.id: g.name for g in session.guilds}
        if self.is_owner(session):
            ids = await self._all_bases(servers) - {GLOBAL_BASE}
            found = [(str(i), servers.get(i) or seen.get(i) or f"Server {i}", "owner of the bot") for i in ids]
            found.sort(key=lambda s: s[1].casefold())
            return [("global", "Bot-wide knowledge", "owner of the bot"), *found]
        found = []
        for server_id in sorted(seen.keys() & servers.keys()):
            membership = await self._membership(session, server_id)
            if membership is None:
                continue
            caller = Caller(
                user_id=session.user_id,
                name=session.name,
                manages_server=membership.manages_server,
                roles=membership.roles,
                guild_id=server_id,
            )
            admin = await asyncio.to_thread(self.services.access.is_admin, caller)
            found.append((str(server_id), servers[server_id] or seen[server_id], "admin" if admin else "member"))
        return sorted(found, key=lambda s: s[1].casefold())

    async def signed_in(self, request: Request) -> WebSession:
        session = await self.session(request)
        if session is None:
            raise HTTPException(303, headers={"Location": "/"})
        return session

    async def check_change(self, request: Request, session: WebSession) -> dict[str, Any]:
        """A change must come from this site's own pages: the session's CSRF token, and no foreign Origin."""
        origin = request.headers.get("origin")
        if origin and origin != self._origin(request):
            raise HTTPException(
                403,
                f"This change came from another site and was refused. (If you opened the dashboard at another "
                f"address than {self.public_url}, its operator sets TRAINERBOT_WEB_PUBLIC_URL to that address.)",
            )
        # Starlette keeps a form's files on disk while it parses them: what is over the upload limit is refused
        # before a byte is read (browsers always say how long a form is; one that does not is refused too).
        limit = self.services.settings.upload_limit_bytes + FORM_SLACK
        declared = request.headers.get("content-length", "")
        if not declared.isdigit() or int(declared) > limit:
            raise HTTPException(413, f"That is more than the upload limit, {human_size(limit - FORM_SLACK)}.")
        form = await request.form(max_files=4, max_fields=50)
        token = str(form.get("csrf") or request.headers.get("x-csrf-token") or "")
        if not hmac.compare_digest(token.encode(), session.csrf.encode()):
            raise HTTPException(403, "This form has expired. Reload the page and try again.")
        return dict(form)

    def _origin(self, request: Request) -> str:
        parts = urlsplit(self.public_url)
        if request.url.hostname in ("127.0.0.1", "localhost") and parts.hostname in ("127.0.0.1", "localhost"):
            return f"{request.url.scheme}://{request.url.netloc}"  # 127.0.0.1 and localhost are one machine
        return f"{parts.scheme}://{parts.netloc}"

    # --- rendering ---------------------------------------------------------------------------------

    def render(
        self, request: Request, template: str, context: dict[str, Any], *, status: int = 200, session: Any = None
    ) -> Response:
        said = self._take_flash(request)
        context = {"request": request, "me": session, "said": said, **context}
        response = self.templates.TemplateResponse(request, template, context, status_code=status)
        if said is not None:
            response.delete_cookie(FLASH_COOKIE, path="/")
        response.headers.update(SECURITY_HEADERS)
        return response

    def _take_flash(self, request: Request) -> dict[str, str] | None:
        signed = request.cookies.get(FLASH_COOKIE)
        value = self.signer.unsign(signed, max_age=300) if signed else None
        if value is None:
            return None
        try:
            said = json.loads(value)
        except ValueError:
            return None
        return said if isinstance(said, dict) else None

    def back(self, url: str, text: str, kind: str = "ok") -> Response:
        """After a change: back to the page, saying what happened (a signed cookie read once)."""
        response = RedirectResponse(url, status_code=303)
        flash = self.signer.sign(json.dumps({"kind": kind, "text": text[:1500]}))
        response.set_cookie(FLASH_COOKIE, flash, max_age=300, httponly=True, samesite="lax", secure=self.secure)
        return response

    async def http_error(self, request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        if error.status_code in (301, 302, 303, 307) and error.headers:
            return RedirectResponse(error.headers["Location"], status_code=error.status_code)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": error.detail}, status_code=error.status_code)
        session = await self.session(request)
        context = {"status": error.status_code, "detail": error.detail}
        return self.render(request, "error.html", context, status=error.status_code, session=session)

    async def show(
        self, request: Request, page: str, build: Callable[[Place], dict[str, Any]], template: str | None = None
    ) -> Response:
        """A page of one base: ``build`` asks the core for what it shows (in a thread), with the core's rules."""
        session = await self.signed_in(request)
        place = await self.place(session, request.path_params["where"])
        try:
            context = await asyncio.to_thread(build, place)
        except PermissionDenied as refused:
            raise HTTPException(403, str(refused)) from None
        except UserError as error:  # e.g. an example that is not (or no longer) here
            raise HTTPException(400, str(error)) from None
        context = {"place": place, "page": page, **context}
        return self.render(request, template or f"{page}.html", context, session=session)

    async def act(self, request: Request, page: str, change: Callable[[Place, Form], str]) -> Response:
        """Runs one change for the signed-in person (CSRF checked, in a thread) and goes back to ``page``
        saying how it went: the core's own words, as in chat."""
        session = await self.signed_in(request)
        place = await self.place(session, request.path_params["where"])
        form = Form(await self.check_change(request, session), self.services.settings.upload_limit_bytes)
        url = f"/servers/{place.slug}/{page}"
        try:
            await form.read_files()
            text = await asyncio.to_thread(change, place, form)
        except PermissionDenied as refused:
            raise HTTPException(403, str(refused)) from None
        except UserError as error:
            return self.back(url, str(error), "error")
        return self.back(url, on_the_page(text))


SECURITY_HEADERS = {
    # Pages come from this server alone; nothing else may frame or script them.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


# What the core says for a chat, where the bot edits its message as a job goes, said for a page.
CHAT_ONLY = {"I will update this message as it goes.": "The training page shows how it goes."}


def on_the_page(text: str) -> str:
    for said, meant in CHAT_ONLY.items():
        text = text.replace(said, meant)
    return text


def chat_markup(text: str) -> Markup:
    """The core's replies are written for chat: `code` spans become <code>, the rest is escaped."""
    parts = str(escape(text)).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: shown as it is
        return Markup("`".join(parts))
    return Markup("".join(f"<code>{part}</code>" if index % 2 else part for index, part in enumerate(parts)))


class Form:
    """A submitted form: its text fields, and its files read within the upload limit."""

    def __init__(self, fields: dict[str, Any], limit: int) -> None:
        self.fields = fields
        self.limit = limit
        self.files: list[Upload] = []

    def text(self, name: str) -> str:
        value = self.fields.get(name)
        return value.strip() if isinstance(value, str) else ""

    @property
    def positive(self) -> bool:
        return self.text("kind") != "negative"

    async def read_files(self) -> None:
        for value in self.fields.values():
            if isinstance(value, UploadFile) and value.filename:
                if value.size is not None and value.size > self.limit:
                    raise TooLarge(
                        f"{value.filename} is {human_size(value.size)}; the limit is {human_size(self.limit)}."
                    )
                data = await value.read(self.limit + 1)  # never more than the limit in memory
                self.files.append(Upload(value.filename, data, max(value.size or 0, len(data))))
