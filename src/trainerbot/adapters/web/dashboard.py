"""The dashboard: a third front end over the same core services as Discord and the console.

Pages are rendered on the server (Starlette and Jinja2) and work without JavaScript; one small
script adds live job progress. Every page and API answer is about one base, reached as
``/servers/<id>/...`` (``/servers/global/...`` for the bot-wide one): a base the signed-in person
may not see answers 404, exactly like one that does not exist. What they may do there is the
core's to decide, with a ``Caller`` built as the Discord adapter builds one.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import secrets
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

from trainerbot.adapters.web import charts
from trainerbot.adapters.web.auth import (
    CookieSigner,
    DiscordOAuth,
    OperatorLink,
    SignInFailed,
    SignInLimits,
    dashboard_secret,
)
from trainerbot.adapters.web.directory import Directory, Membership
from trainerbot.app import Services
from trainerbot.errors import InvalidInput, PermissionDenied, TooLarge, UserError
from trainerbot.storage.sessions import WebSession
from trainerbot.types import GLOBAL_BASE, Caller, Upload, human_size

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SESSION_COOKIE = "trainerbot_session"
STATE_COOKIE = "trainerbot_signin"
FLASH_COOKIE = "trainerbot_said"
OPERATOR_ID = 0  # the console's user id: the operator is whoever runs the bot
SHOWN = 10  # examples listed under each answer; searching for the answer's text lists more
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
        self.limits = SignInLimits()
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
        routes = [
            Route("/", self.home),
            Route("/signin/discord", self.sign_in_discord),
            Route("/signin/discord/callback", self.discord_callback),
            Route("/signin/link/{token}", self.sign_in_link),
            Route("/signout", self.sign_out, methods=["POST"]),
            Route("/status", self.status),
            Route("/servers/{where}", self.server_home),
            Route("/servers/{where}/knowledge", self.knowledge),
            Route("/servers/{where}/knowledge/add", self.add_example, methods=["POST"]),
            Route("/servers/{where}/knowledge/import", self.import_examples, methods=["POST"]),
            Route("/servers/{where}/knowledge/export", self.export_examples),
            Route("/servers/{where}/examples/{example:int}", self.example),
            Route("/servers/{where}/examples/{example:int}/edit", self.edit_example, methods=["POST"]),
            Route("/servers/{where}/examples/{example:int}/delete", self.delete_example, methods=["POST"]),
            Route("/servers/{where}/answers/rename", self.rename_answer, methods=["POST"]),
            Route("/servers/{where}/answers/delete", self.delete_answer, methods=["POST"]),
            Route("/servers/{where}/review", self.review),
            Route("/servers/{where}/review/{topic:int}/answer", self.answer_topic, methods=["POST"]),
            Route("/servers/{where}/review/{topic:int}/dismiss", self.dismiss_topic, methods=["POST"]),
            Route("/servers/{where}/training", self.training),
            Route("/servers/{where}/training/start", self.start_training, methods=["POST"]),
            Route("/servers/{where}/training/activate", self.activate_version, methods=["POST"]),
            Route("/servers/{where}/tests", self.tests, methods=["GET", "POST"]),
            Route("/servers/{where}/feedback", self.feedback),
            Route("/servers/{where}/settings", self.settings_page, methods=["GET", "POST"]),
            Route("/servers/{where}/audit", self.audit),
            Route("/api/servers", self.api_servers),
            Route("/api/servers/{where}/jobs", self.api_jobs),
            Route("/api/servers/{where}/answers", self.api_answers),
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
        """(slug, name, standing) of every base this person may open."""
        servers = {server.id: server.name for server in await self.directory.servers()}
        owner = self.is_owner(session)
        found = []
        ids = sorted(await self._all_bases(servers) - {GLOBAL_BASE}) if owner else sorted(servers)
        seen = {g.id: g.name for g in session.guilds}
        for server_id in ids:
            membership = await self._membership(session, server_id)
            if membership is None and not owner:
                continue
            caller = Caller(
                user_id=session.user_id,
                name=session.name,
                is_owner=owner,
                manages_server=bool(membership and membership.manages_server),
                roles=membership.roles if membership else frozenset(),
                guild_id=server_id,
            )
            admin = await asyncio.to_thread(self.services.access.is_admin, caller)
            standing = "owner of the bot" if owner else "admin" if admin else "member"
            name = servers.get(server_id) or seen.get(server_id) or f"Server {server_id}"
            found.append((str(server_id), name, standing))
        found.sort(key=lambda s: s[1].casefold())
        if owner:
            found.insert(0, ("global", "Bot-wide knowledge", "owner of the bot"))
        return found

    async def signed_in(self, request: Request) -> WebSession:
        session = await self.session(request)
        if session is None:
            raise HTTPException(303, headers={"Location": "/"})
        return session

    async def check_change(self, request: Request, session: WebSession) -> dict[str, Any]:
        """A change must come from this site's own pages: the session's CSRF token, and no foreign Origin."""
        origin = request.headers.get("origin")
        if origin and origin != self._origin(request):
            raise HTTPException(403, "This change came from another site and was refused.")
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

    # --- signing in and out --------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.render(request, "signin.html", {"discord": self.oauth is not None})
        servers = await self.visible_servers(session)
        return self.render(
            request, "servers.html", {"servers": servers, "owner": self.is_owner(session)}, session=session
        )

    async def sign_in_discord(self, request: Request) -> Response:
        if self.oauth is None:
            raise NotFound()
        state = secrets.token_urlsafe(24)
        response = RedirectResponse(self.oauth.authorize_url(state), status_code=303)
        response.set_cookie(
            STATE_COOKIE, self.signer.sign(state), max_age=600, httponly=True, samesite="lax", secure=self.secure
        )
        return response

    async def discord_callback(self, request: Request) -> Response:
        if self.oauth is None:
            raise NotFound()
        if not self.limits.allow(_address(request)):
            raise HTTPException(429, "Too many sign-in attempts from here. Wait a few minutes and try again.")
        signed = request.cookies.get(STATE_COOKIE)
        expected = self.signer.unsign(signed, max_age=600) if signed else None
        state = request.query_params.get("state", "")
        if expected is None or not hmac.compare_digest(state.encode(), expected.encode()):
            raise HTTPException(400, "This sign-in link is stale or not yours. Start again from the sign-in page.")
        if "error" in request.query_params:
            return self.render(request, "signin.html", {"discord": True, "refused": True}, status=400)
        try:
            user = await self.oauth.user(request.query_params.get("code", ""))
        except SignInFailed as failed:
            raise HTTPException(400, str(failed)) from None
        token = await asyncio.to_thread(
            self.services.store.web_sessions.create,
            user.id,
            user.name,
            operator=False,
            guilds=user.guilds,
            hours=self.session_seconds / 3600,
        )
        log.info("user %s signed in to the dashboard with Discord", user.id)
        response = self._signed_in(token)
        response.delete_cookie(STATE_COOKIE, path="/")
        return response

    async def sign_in_link(self, request: Request) -> Response:
        if not self.limits.allow(_address(request)):
            raise HTTPException(429, "Too many sign-in attempts from here. Wait a few minutes and try again.")
        if not self.link.take(request.path_params["token"]):
            raise HTTPException(403, "This sign-in link was used already or is wrong. Restart the bot for a new one.")
        token = await asyncio.to_thread(
            self.services.store.web_sessions.create,
            OPERATOR_ID,
            "operator",
            operator=True,
            guilds=[],
            hours=self.session_seconds / 3600,
        )
        log.info("the operator signed in to the dashboard with the one-time link")
        return self._signed_in(token)

    def _signed_in(self, token: str) -> Response:
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self.signer.sign(token),
            max_age=int(self.session_seconds),
            httponly=True,
            samesite="lax",
            secure=self.secure,
        )
        return response

    async def sign_out(self, request: Request) -> Response:
        session = await self.signed_in(request)
        await self.check_change(request, session)
        signed = request.cookies.get(SESSION_COOKIE, "")
        token = self.signer.unsign(signed)
        if token:
            await asyncio.to_thread(self.services.store.web_sessions.end, token)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # --- a base's pages ------------------------------------------------------------------------------

    async def server_home(self, request: Request) -> Response:
        session = await self.signed_in(request)
        place = await self.place(session, request.path_params["where"])
        first = "knowledge" if place.admin else "training"
        return RedirectResponse(f"/servers/{place.slug}/{first}", status_code=303)

    async def knowledge(self, request: Request) -> Response:
        search = request.query_params.get("q", "")[:200]
        number = _page_number(request)

        def build(place: Place) -> dict[str, Any]:
            knowledge = self.services.knowledge
            answers = knowledge.answers(place.caller, place.base, search=search, page=number, shown=SHOWN)
            return {"answers": answers, "search": search}

        return await self.show(request, "knowledge", build)

    async def add_example(self, request: Request) -> Response:
        return await self.act(
            request,
            "knowledge",
            lambda place, form: (
                self.services.knowledge.add_example(
                    place.caller, place.base, form.text("question"), form.text("answer"), positive=form.positive
                ).text
            ),
        )

    async def example(self, request: Request) -> Response:
        number = request.path_params["example"]

        def build(place: Place) -> dict[str, Any]:
            return {"example": self.services.knowledge.example(place.caller, place.base, number)}

        return await self.show(request, "knowledge", build, "example.html")

    async def edit_example(self, request: Request) -> Response:
        example = request.path_params["example"]
        return await self.act(
            request,
            "knowledge",
            lambda place, form: (
                self.services.knowledge.edit_example(
                    place.caller,
                    place.base,
                    example,
                    form.text("question"),
                    form.text("answer"),
                    positive=form.positive,
                ).text
            ),
        )

    async def delete_example(self, request: Request) -> Response:
        example = request.path_params["example"]
        return await self.act(
            request,
            "knowledge",
            lambda place, form: self.services.knowledge.delete_example(place.caller, place.base, example).text,
        )

    async def rename_answer(self, request: Request) -> Response:
        return await self.act(
            request,
            "knowledge",
            lambda place, form: (
                self.services.knowledge.rename_answer(
                    place.caller, place.base, form.text("answer"), form.text("new")
                ).text
            ),
        )

    async def delete_answer(self, request: Request) -> Response:
        return await self.act(
            request,
            "knowledge",
            lambda place, form: (
                self.services.knowledge.delete_answer(place.caller, place.base, form.text("answer")).text
            ),
        )

    async def import_examples(self, request: Request) -> Response:
        def change(place: Place, form: Form) -> str:
            if not form.files:
                raise InvalidInput("Choose a file to import first.")
            return self.services.knowledge.import_file(place.caller, place.base, form.files[0], positive=form.positive)

        return await self.act(request, "knowledge", change)

    async def export_examples(self, request: Request) -> Response:
        session = await self.signed_in(request)
        place = await self.place(session, request.path_params["where"])
        fmt = "jsonl" if request.query_params.get("format") == "jsonl" else "csv"
        try:
            file = await asyncio.to_thread(self.services.knowledge.export, place.caller, place.base, fmt)
        except PermissionDenied as refused:
            raise HTTPException(403, str(refused)) from None
        kind = "text/csv" if fmt == "csv" else "application/x-ndjson"
        disposition = f'attachment; filename="{file.name}"'
        return Response(file.data, media_type=kind, headers={"Content-Disposition": disposition})

    async def review(self, request: Request) -> Response:
        def build(place: Place) -> dict[str, Any]:
            topics = self.services.overview.topics(place.caller, place.base)
            shown = topics[:15]
            chart = charts.bars(
                [f"#{view.topic.id} {view.samples[0] if view.samples else ''}" for view in shown],
                [view.topic.people for view in shown],
                title="People asking, per open topic",
            )
            return {"topics": topics, "chart": chart}

        return await self.show(request, "review", build)

    async def answer_topic(self, request: Request) -> Response:
        topic = request.path_params["topic"]
        return await self.act(
            request,
            "review",
            lambda place, form: self.services.review.answer(place.caller, topic, form.text("answer")).text,
        )

    async def dismiss_topic(self, request: Request) -> Response:
        topic = request.path_params["topic"]
        return await self.act(
            request, "review", lambda place, form: self.services.review.dismiss(place.caller, topic).text
        )

    async def training(self, request: Request) -> Response:
        def build(place: Place) -> dict[str, Any]:
            jobs = self.services.overview.jobs(place.caller, place.base)
            versions, active = self.services.overview.versions(place.caller, place.base)
            chart = charts.versions(list(reversed(versions)))
            return {"jobs": jobs, "versions": versions, "active": active, "chart": chart}

        return await self.show(request, "training", build)

    async def start_training(self, request: Request) -> Response:
        return await self.act(
            request, "training", lambda place, form: self.services.teaching.retrain(place.caller).text
        )

    async def activate_version(self, request: Request) -> Response:
        def change(place: Place, form: Form) -> str:
            version = form.text("version")
            if not version.isdigit() or len(version) > 18:
                raise InvalidInput("Choose a model version.")
            return self.services.overview.activate(place.caller, place.base, int(version))

        return await self.act(request, "training", change)

    async def tests(self, request: Request) -> Response:
        result: dict[str, Any] | None = None
        if request.method == "POST":  # a run is shown at once, with its chart, rather than after a redirect
            session = await self.signed_in(request)
            form = Form(await self.check_change(request, session), self.services.settings.upload_limit_bytes)
            try:
                await form.read_files()
            except UserError as error:
                result = {"refused": str(error)}
            else:
                result = {"cases": form.text("cases"), "files": form.files}
        chosen = request.query_params.get("run", "")

        def build(place: Place) -> dict[str, Any]:
            shown = None
            if result is not None and "refused" in result:
                shown = {"error": result["refused"]}
            elif result is not None:
                try:
                    reply = self.services.teaching.test(place.caller, result["cases"], result["files"], "the cases box")
                except PermissionDenied:
                    raise  # the page itself is refused
                except UserError as error:
                    shown = {"error": str(error)}
                else:
                    png = next((f.data for f in reply.files if f.name.endswith(".png")), None)
                    chart = "data:image/png;base64," + base64.b64encode(png).decode() if png else None
                    shown = {"text": reply.text, "chart": chart}
            runs = self.services.overview.test_runs(place.caller, place.base)
            run_id = int(chosen) if chosen.isdigit() and len(chosen) < 19 else (runs[0]["id"] if runs else None)
            failures = self.services.overview.failures(place.caller, place.base, run_id) if run_id else []
            chart = charts.runs(list(reversed(runs)))
            return {"runs": runs, "run_id": run_id, "failures": failures, "result": shown, "chart": chart}

        return await self.show(request, "tests", build)

    async def feedback(self, request: Request) -> Response:
        def build(place: Place) -> dict[str, Any]:
            notes, ratings = self.services.overview.feedback(place.caller, place.base)
            liked = sum(rating["rating"] > 0 for rating in ratings)
            chart = (
                charts.bars(
                    ["👍 liked", "👎 disliked"], [liked, len(ratings) - liked], title="Ratings of the latest replies"
                )
                if ratings
                else None
            )
            return {"notes": notes, "ratings": ratings, "chart": chart}

        return await self.show(request, "feedback", build)

    async def settings_page(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.act(request, "settings", self._change_setting)

        def build(place: Place) -> dict[str, Any]:
            if place.base == GLOBAL_BASE:
                raise NotFound()  # the bot's own settings are its environment's, not a page's
            return {"summary": self.services.servers.summary(place.caller)}

        return await self.show(request, "settings", build)

    def _change_setting(self, place: Place, form: Form) -> str:
        name = form.text("setting")
        if name not in ("admin-roles", "bot-wide", "persona"):
            raise InvalidInput("Choose a setting to change.")
        value = "reset" if name == "persona" and form.text("reset") else form.text("value")
        return self.services.servers.config(place.caller, f"{name} {value}").text

    async def audit(self, request: Request) -> Response:
        before = request.query_params.get("before", "")

        def build(place: Place) -> dict[str, Any]:
            older = int(before) if before.isdigit() and len(before) < 19 else None
            return {"entries": self.services.knowledge.audit(place.caller, place.base, before=older)}

        return await self.show(request, "audit", build)

    async def status(self, request: Request) -> Response:
        session = await self.signed_in(request)
        if not self.is_owner(session):
            raise NotFound()
        context = {"status": await asyncio.to_thread(status_of, self.services), "page": "status"}
        return self.render(request, "status.html", context, session=session)

    # --- the API: the same rules, as JSON ----------------------------------------------------------

    async def api_servers(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return JSONResponse({"error": "Sign in first."}, status_code=401)
        servers = await self.visible_servers(session)
        return JSONResponse([{"id": slug, "name": name, "standing": standing} for slug, name, standing in servers])

    async def api_jobs(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return JSONResponse({"error": "Sign in first."}, status_code=401)
        place = await self.place(session, request.path_params["where"])
        try:
            jobs = await asyncio.to_thread(self.services.overview.jobs, place.caller, place.base)
        except PermissionDenied as refused:
            return JSONResponse({"error": str(refused)}, status_code=403)
        return JSONResponse(
            [
                {
                    "id": job.id,
                    "status": job.status,
                    "progress": job.progress,
                    "stage": job.stage,
                    "finished": job.finished,
                    "created_at": job.created_at,
                }
                for job in jobs
            ]
        )

    async def api_answers(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return JSONResponse({"error": "Sign in first."}, status_code=401)
        place = await self.place(session, request.path_params["where"])
        try:
            answers = await asyncio.to_thread(
                self.services.knowledge.answers,
                place.caller,
                place.base,
                search=request.query_params.get("q", "")[:200],
                page=_page_number(request),
            )
        except PermissionDenied as refused:
            return JSONResponse({"error": str(refused)}, status_code=403)
        return JSONResponse(_plain(answers))


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


def _address(request: Request) -> str:
    return request.client.host if request.client else "?"


def _page_number(request: Request) -> int:
    typed = request.query_params.get("page", "1")
    return int(typed) if typed.isdigit() and 0 < len(typed) < 7 else 1


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


def _plain(value: Any) -> Any:
    """Dataclasses as JSON-ready dicts and lists."""
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


def resident_bytes(pid: str) -> int | None:
    """A process's resident memory, from /proc (None where there is no /proc, or the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _engine_memory(engine: Any) -> list[tuple[str, int | None]]:
    """llama-server's memory, when the chat engine runs one beside the bot."""
    pid = getattr(engine, "server_pid", None)
    return [("llama-server", resident_bytes(str(pid)))] if pid else []


def status_of(services: Services) -> dict[str, Any]:
    """What the owners' status page shows: the queues, training, memory and the engines in use."""
    settings = services.settings
    queues = services.queues
    engine = services.engine
    return {
        "queues": [
            (queue.what, queue.running, queue.waiting, queue.capacity)
            for queue in (queues.replies, queues.transcriptions)
        ],
        "jobs": services.store.jobs.unfinished(),
        "training_workers": settings.training_workers,
        "memory": [("the bot's process", resident_bytes("self")), *_engine_memory(engine)],
        "engines": [
            ("chat", f"{settings.chat_engine} ({settings.chat_model})" if engine else "none"),
            ("chat replies at once", str(engine.parallel) if engine else "-"),
            ("speech to text", settings.stt_engine),
            ("text to speech", settings.tts_engine),
            ("database", "SQLite"),
        ],
        "bases": len(services.store.knowledge.bases()),
    }
