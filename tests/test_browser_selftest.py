"""Self-test of the browser the web tests use (tests/browser.py): Debian's Chromium through Playwright.

First a tiny form on loopback, filled in, submitted and read back, with a screenshot; then the
loopback Discord's OAuth2 consent page in the browser, as a dashboard's "Sign in with Discord"
sends people there: Authorize lands on the redirect_uri with a code and the state, Cancel with
access_denied.
"""

from __future__ import annotations

import html
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from playwright.async_api import Page
from yarl import URL

from tests.browser import browser_page, page_errors, screenshot
from tests.browser import page as page  # the fixture
from tests.loopback_discord import FakeDiscord
from tests.loopback_discord.server import serve_on_loopback

FORM = """<!doctype html><html><head><title>Greeter</title></head><body>
<form method="post" action="/greet"><label>Name <input name="name"></label> <button type="submit">Greet</button></form>
</body></html>"""


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serves ``app`` on 127.0.0.1; yields its base URL."""
    runner, port = await serve_on_loopback(app)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def greeter() -> web.Application:
    async def form(request: web.Request) -> web.Response:
        return web.Response(text=FORM, content_type="text/html")

    async def greet(request: web.Request) -> web.Response:
        name = html.escape(str((await request.post()).get("name", "")))
        return web.Response(text=f'<p id="greeting">Hello, {name}!</p>', content_type="text/html")

    app = web.Application()
    app.router.add_get("/", form)
    app.router.add_post("/greet", greet)
    return app


def callback_site(seen: list[dict[str, str]]) -> web.Application:
    """A web app's OAuth2 redirect target: shows the query it was given, and keeps it in ``seen``."""

    async def callback(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        shown = "".join(f'<p id="{key}">{html.escape(value)}</p>' for key, value in request.query.items())
        return web.Response(text=f"<h1>Signed in?</h1>{shown}", content_type="text/html")

    app = web.Application()
    app.router.add_get("/callback", callback)
    return app


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), "not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


async def test_form_in_chromium(page: Page, tmp_path: Path) -> None:
    errors = page_errors(page)
    async with serve(greeter()) as base:
        await page.goto(base)
        assert await page.title() == "Greeter"
        await page.get_by_label("Name").fill("Ada <Lovelace>")
        await page.get_by_role("button", name="Greet").click()
        await page.wait_for_url(f"{base}/greet")
        assert await page.locator("#greeting").inner_text() == "Hello, Ada <Lovelace>!"
        shot = await screenshot(page, tmp_path / "shots" / "greeting.png", full_page=False)
    assert png_size(shot) == (1280, 800)
    assert not errors


async def test_discord_consent_page_in_chromium(tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []
    async with FakeDiscord() as server, serve(callback_site(seen)) as site, browser_page() as page:
        redirect_uri = f"{site}/callback"
        server.sign_in_browser(server.admin)

        await page.goto(server.authorize_url(redirect_uri, state="state-1"))
        assert await page.get_by_role("heading").inner_text() == "Authorize trainerbot?"
        assert await page.locator("#user").inner_text() == "admin"
        assert await page.locator("#scopes li").all_inner_texts() == [
            "Access your username, avatar, and banner",
            "Know what servers you're in",
        ]
        await screenshot(page, tmp_path / "consent.png")
        await page.get_by_role("button", name="Authorize").click()
        await page.wait_for_url(f"{redirect_uri}?**")

        landed = URL(page.url)
        [code] = server.oauth_codes_issued
        assert str(landed.with_query(None)) == redirect_uri
        assert landed.query["code"] == code.code and landed.query["state"] == "state-1"
        assert code.user == server.admin and code.redirect_uri == redirect_uri
        assert await page.locator("#code").inner_text() == code.code
        assert seen == [{"code": code.code, "state": "state-1"}]

        await page.goto(server.authorize_url(redirect_uri, state="state-2"))
        await page.get_by_role("button", name="Cancel").click()
        await page.wait_for_url(f"{redirect_uri}?**")
        assert seen[-1]["error"] == "access_denied" and seen[-1]["state"] == "state-2"
        assert len(server.oauth_codes_issued) == 1

        server.sign_in_browser(None)
        response = await page.goto(server.authorize_url(redirect_uri))
        assert response is not None and response.status == 401
        assert "not signed in" in await page.locator("#error").inner_text()
        assert await page.get_by_role("button").count() == 0
