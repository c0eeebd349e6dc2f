"""The dashboard's pages of one base, the owners' status page and the JSON API, each over one core service."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from trainerbot.adapters.web import charts
from trainerbot.adapters.web.dashboard import Dashboard, Form, NotFound, Place
from trainerbot.app import Services
from trainerbot.errors import InvalidInput, PermissionDenied, UserError
from trainerbot.types import GLOBAL_BASE

SHOWN = 10  # examples listed under each answer; searching for the answer's text lists more


class Pages:
    def __init__(self, web: Dashboard) -> None:
        self.web = web

    async def home(self, request: Request) -> Response:
        session = await self.web.session(request)
        if session is None:
            return self.web.render(request, "signin.html", {"discord": self.web.oauth is not None})
        servers = await self.web.visible_servers(session)
        return self.web.render(
            request, "servers.html", {"servers": servers, "owner": self.web.is_owner(session)}, session=session
        )

    # --- a base's pages ------------------------------------------------------------------------------

    async def server_home(self, request: Request) -> Response:
        session = await self.web.signed_in(request)
        place = await self.web.place(session, request.path_params["where"])
        first = "knowledge" if place.admin else "training"
        return RedirectResponse(f"/servers/{place.slug}/{first}", status_code=303)

    async def knowledge(self, request: Request) -> Response:
        search = request.query_params.get("q", "")[:200]
        number = _page_number(request)

        def build(place: Place) -> dict[str, Any]:
            knowledge = self.web.services.knowledge
            answers = knowledge.answers(place.caller, place.base, search=search, page=number, shown=SHOWN)
            return {"answers": answers, "search": search}

        return await self.web.show(request, "knowledge", build)

    async def add_example(self, request: Request) -> Response:
        return await self.web.act(
            request,
            "knowledge",
            lambda place, form: (
                self.web.services.knowledge.add_example(
                    place.caller, place.base, form.text("question"), form.text("answer"), positive=form.positive
                ).text
            ),
        )

    async def example(self, request: Request) -> Response:
        number = request.path_params["example"]

        def build(place: Place) -> dict[str, Any]:
            return {"example": self.web.services.knowledge.example(place.caller, place.base, number)}

        return await self.web.show(request, "knowledge", build, "example.html")

    async def edit_example(self, request: Request) -> Response:
        example = request.path_params["example"]
        return await self.web.act(
            request,
            "knowledge",
            lambda place, form: (
                self.web.services.knowledge.edit_example(
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
        return await self.web.act(
            request,
            "knowledge",
            lambda place, form: self.web.services.knowledge.delete_example(place.caller, place.base, example).text,
        )

    async def rename_answer(self, request: Request) -> Response:
        return await self.web.act(
            request,
            "knowledge",
            lambda place, form: (
                self.web.services.knowledge.rename_answer(
                    place.caller, place.base, form.text("answer"), form.text("new")
                ).text
            ),
        )

    async def delete_answer(self, request: Request) -> Response:
        return await self.web.act(
            request,
            "knowledge",
            lambda place, form: (
                self.web.services.knowledge.delete_answer(place.caller, place.base, form.text("answer")).text
            ),
        )

    async def import_examples(self, request: Request) -> Response:
        def change(place: Place, form: Form) -> str:
            if not form.files:
                raise InvalidInput("Choose a file to import first.")
            return self.web.services.knowledge.import_file(
                place.caller, place.base, form.files[0], positive=form.positive
            )

        return await self.web.act(request, "knowledge", change)

    async def export_examples(self, request: Request) -> Response:
        session = await self.web.signed_in(request)
        place = await self.web.place(session, request.path_params["where"])
        fmt = "jsonl" if request.query_params.get("format") == "jsonl" else "csv"
        try:
            file = await asyncio.to_thread(self.web.services.knowledge.export, place.caller, place.base, fmt)
        except PermissionDenied as refused:
            raise HTTPException(403, str(refused)) from None
        kind = "text/csv" if fmt == "csv" else "application/x-ndjson"
        disposition = f'attachment; filename="{file.name}"'
        return Response(file.data, media_type=kind, headers={"Content-Disposition": disposition})

    async def review(self, request: Request) -> Response:
        def build(place: Place) -> dict[str, Any]:
            topics = self.web.services.overview.topics(place.caller, place.base)
            shown = topics[:15]
            chart = charts.bars(
                [f"#{view.topic.id} {view.samples[0] if view.samples else ''}" for view in shown],
                [view.topic.people for view in shown],
                title="People asking, per open topic",
            )
            return {"topics": topics, "chart": chart}

        return await self.web.show(request, "review", build)

    async def answer_topic(self, request: Request) -> Response:
        topic = request.path_params["topic"]
        return await self.web.act(
            request,
            "review",
            lambda place, form: self.web.services.review.answer(place.caller, topic, form.text("answer")).text,
        )

    async def dismiss_topic(self, request: Request) -> Response:
        topic = request.path_params["topic"]
        return await self.web.act(
            request, "review", lambda place, form: self.web.services.review.dismiss(place.caller, topic).text
        )

    async def training(self, request: Request) -> Response:
        def build(place: Place) -> dict[str, Any]:
            jobs = self.web.services.overview.jobs(place.caller, place.base)
            versions, active = self.web.services.overview.versions(place.caller, place.base)
            chart = charts.versions(list(reversed(versions)))
            return {"jobs": jobs, "versions": versions, "active": active, "chart": chart}

        return await self.web.show(request, "training", build)

    async def start_training(self, request: Request) -> Response:
        return await self.web.act(
            request, "training", lambda place, form: self.web.services.teaching.retrain(place.caller).text
        )

    async def activate_version(self, request: Request) -> Response:
        def change(place: Place, form: Form) -> str:
            version = form.text("version")
            if not version.isdigit() or len(version) > 18:
                raise InvalidInput("Choose a model version.")
            return self.web.services.overview.activate(place.caller, place.base, int(version))

        return await self.web.act(request, "training", change)

    async def tests(self, request: Request) -> Response:
        result: dict[str, Any] | None = None
        if request.method == "POST":  # a run is shown at once, with its chart, rather than after a redirect
            session = await self.web.signed_in(request)
            form = Form(await self.web.check_change(request, session), self.web.services.settings.upload_limit_bytes)
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
                    reply = self.web.services.teaching.test(
                        place.caller, result["cases"], result["files"], "the cases box"
                    )
                except PermissionDenied:
                    raise  # the page itself is refused
                except UserError as error:
                    shown = {"error": str(error)}
                else:
                    png = next((f.data for f in reply.files if f.name.endswith(".png")), None)
                    chart = "data:image/png;base64," + base64.b64encode(png).decode() if png else None
                    shown = {"text": reply.text, "chart": chart}
            runs = self.web.services.overview.test_runs(place.caller, place.base)
            run_id = int(chosen) if chosen.isdigit() and len(chosen) < 19 else (runs[0]["id"] if runs else None)
            failures = self.web.services.overview.failures(place.caller, place.base, run_id) if run_id else []
            chart = charts.runs(list(reversed(runs)))
            return {"runs": runs, "run_id": run_id, "failures": failures, "result": shown, "chart": chart}

        return await self.web.show(request, "tests", build)

    async def feedback(self, request: Request) -> Response:
        def build(place: Place) -> dict[str, Any]:
            notes, ratings = self.web.services.overview.feedback(place.caller, place.base)
            liked = sum(rating["rating"] > 0 for rating in ratings)
            chart = (
                charts.bars(
                    ["👍 liked", "👎 disliked"], [liked, len(ratings) - liked], title="Ratings of the latest replies"
                )
                if ratings
                else None
            )
            return {"notes": notes, "ratings": ratings, "chart": chart}

        return await self.web.show(request, "feedback", build)

    async def settings_page(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.web.act(request, "settings", self._change_setting)

        def build(place: Place) -> dict[str, Any]:
            if place.base == GLOBAL_BASE:
                raise NotFound()  # the bot's own settings are its environment's, not a page's
            return {"summary": self.web.services.servers.summary(place.caller)}

        return await self.web.show(request, "settings", build)

    def _change_setting(self, place: Place, form: Form) -> str:
        name = form.text("setting")
        if name not in ("admin-roles", "bot-wide", "persona"):
            raise InvalidInput("Choose a setting to change.")
        value = "reset" if name == "persona" and form.text("reset") else form.text("value")
        return self.web.services.servers.config(place.caller, f"{name} {value}").text

    async def audit(self, request: Request) -> Response:
        before = request.query_params.get("before", "")

        def build(place: Place) -> dict[str, Any]:
            older = int(before) if before.isdigit() and len(before) < 19 else None
            return {"entries": self.web.services.knowledge.audit(place.caller, place.base, before=older)}

        return await self.web.show(request, "audit", build)

    async def status(self, request: Request) -> Response:
        session = await self.web.signed_in(request)
        if not self.web.is_owner(session):
            raise NotFound()
        context = {"status": await asyncio.to_thread(status_of, self.web.services), "page": "status"}
        return self.web.render(request, "status.html", context, session=session)

    # --- the API: the same rules, as JSON ----------------------------------------------------------

    async def api_servers(self, request: Request) -> Response:
        session = await self.web.session(request)
        if session is None:
            return JSONResponse({"error": "Sign in first."}, status_code=401)
        servers = await self.web.visible_servers(session)
        return JSONResponse([{"id": slug, "name": name, "standing": standing} for slug, name, standing in servers])

    async def api_jobs(self, request: Request) -> Response:
        session = await self.web.session(request)
        if session is None:
            return JSONResponse({"error": "Sign in first."}, status_code=401)
        place = await self.web.place(session, request.path_params["where"])
        try:
            jobs = await asyncio.to_thread(self.web.services.overview.jobs, place.caller, place.base)
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
        session = await self.web.session(request)
        if session is None:
            return JSONResponse({"error": "Sign in first."}, status_code=401)
        place = await self.web.place(session, request.path_params["where"])
        try:
            answers = await asyncio.to_thread(
                self.web.services.knowledge.answers,
                place.caller,
                place.base,
                search=request.query_params.get("q", "")[:200],
                page=_page_number(request),
            )
        except PermissionDenied as refused:
            return JSONResponse({"error": str(refused)}, status_code=403)
        return JSONResponse(_plain(answers))


def _page_number(request: Request) -> int:
    typed = request.query_params.get("page", "1")
    return int(typed) if typed.isdigit() and 0 < len(typed) < 7 else 1


def _plain(value: Any) -> Any:
    """Dataclasses as JSON-ready dicts and lists."""
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else value


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
