"""Serving the dashboard: inside the bot's event loop, beside the console in a thread of its own, or alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import Iterator

import uvicorn

from trainerbot.adapters.web.dashboard import Dashboard
from trainerbot.adapters.web.directory import Directory, StoredDirectory
from trainerbot.app import Services

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the process it runs in (the bot, the console) owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebServer:
    """The dashboard on its host and port, served by uvicorn in the running event loop."""

    def __init__(self, services: Services, directory: Directory) -> None:
        self.settings = settings = services.settings
        public = settings.web_public_url or f"http://{_host(settings.web_host)}:{settings.web_port}"
        self.dashboard = Dashboard(services, directory, public_url=public)
        config = uvicorn.Config(
            self.dashboard.app(),
            host=settings.web_host,
            port=settings.web_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the setting, or the one chosen when the setting is 0)."""
        if self._server.servers:
            return int(self._server.servers[0].sockets[0].getsockname()[1])
        return self.settings.web_port

    async def start(self) -> bool:
        """Starts serving; False (logged) when it cannot, e.g. the port is taken: the bot runs on without it."""
        self._task = asyncio.create_task(self._server.serve(), name="dashboard")
        while not self._server.started:
            if self._task.done():
                log.error(
                    "the dashboard could not start on %s:%d (is the port taken? TRAINERBOT_WEB_PORT chooses another)",
                    self.settings.web_host,
                    self.settings.web_port,
                )
                return False
            await asyncio.sleep(0.02)
        if self.settings.web_public_url is None and self.settings.web_port == 0:  # the port chosen for it
            self.dashboard.public_url = f"http://{_host(self.settings.web_host)}:{self.port}"
            if self.dashboard.oauth is not None:
                self.dashboard.oauth.redirect_uri = f"{self.dashboard.public_url}/signin/discord/callback"
        log.info("the dashboard is at %s", self.dashboard.public_url)
        return True

    def announce(self) -> None:
        """Prints the operator's one-time sign-in link to the terminal (never to the log: it signs in an owner)."""
        if self.dashboard.link_url:
            link = self.dashboard.link_url
            print(f"Dashboard: {self.dashboard.public_url} (operator's one-time sign-in: {link})", file=sys.stderr)

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)


def _host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


class BackgroundWeb:
    """The dashboard in a thread with its own event loop, for a front end that is not asyncio (the console)."""

    def __init__(self, services: Services) -> None:
        self.web = WebServer(services, StoredDirectory(services.store.knowledge.bases, services.settings.owner_ids))
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._ok = False
        self._thread = threading.Thread(target=self._run, name="dashboard", daemon=True)

    def start(self) -> bool:
        self._thread.start()
        self._started.wait(30)
        return self._ok

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._ok = self._loop.run_until_complete(self.web.start())
        self._started.set()
        if self._ok:
            self._loop.run_forever()

    def stop(self) -> None:
        if self._ok:
            asyncio.run_coroutine_threadsafe(self.web.stop(), self._loop).result(15)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
