"""A real browser for tests: Playwright's async API driving Debian's Chromium, headless.

Playwright's own browser download is not used: the browser is the Debian package ``chromium``
(``/usr/bin/chromium``), which ``make test`` installs with apt-get. Without it a browser test
fails, saying so, rather than skipping: a skipped browser test would pass a broken dashboard.

Usage, in a test (pytest-asyncio runs every ``async def`` test, ``asyncio_mode = "auto"``)::

    from tests.browser import browser_page, screenshot

    async def test_dashboard(tmp_path: Path) -> None:
        async with browser_page() as page:
            await page.goto(url)
            await page.get_by_role("button", name="Sign in").click()
            await screenshot(page, tmp_path / "signed-in.png")

or the ``page`` fixture, imported into the test module (the ``as`` tells ruff it is meant)::

    from tests.browser import page as page

    async def test_dashboard(page: Page) -> None: ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import ConsoleMessage, Page

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT_SIZE = (1280, 800)
# Actions and navigations that take longer fail the test (Playwright's default is 30 s); it is all on loopback.
TIMEOUT_MS = 15_000
# As root, Chromium's sandbox cannot start; /dev/shm is small in many containers.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]


@asynccontextmanager
async def browser_page(*, viewport: tuple[int, int] = VIEWPORT_SIZE, chromium: Path = CHROMIUM) -> AsyncIterator[Page]:
    """A new page (tab) of a fresh headless Chromium, closed with its browser when the block exits.

    Each call is a new browser: no cookies or storage carry over from another test.
    """
    if not chromium.exists():
        pytest.fail(
            f"Debian's Chromium is not installed at {chromium}: `make test` installs it "
            "(the apt package chromium: apt-get install chromium)",
            pytrace=False,
        )
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: `make test` installs it (pip install -e '.[dev]')", pytrace=False)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            width, height = viewport
            context = await browser.new_context(viewport={"width": width, "height": height})
            context.set_default_timeout(TIMEOUT_MS)
            yield await context.new_page()
        finally:
            await browser.close()


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    """``browser_page()`` as a fixture (``from tests.browser import page as page`` in the test module)."""
    async with browser_page() as opened:
        yield opened


async def screenshot(page: Page, path: Path | str, *, full_page: bool = True) -> Path:
    """Saves a PNG of the page (all of it unless ``full_page`` is False) at ``path``; returns the path.

    To see what a failing browser test saw: write it to ``tmp_path``, which pytest keeps.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(target), full_page=full_page)
    return target


def page_errors(page: Page) -> list[str]:
    """A list that fills with the page's uncaught JavaScript errors and console errors from now on.

    A dashboard test can end with ``assert not errors``: a script that broke shows up even when
    the page still looks right. The browser's own request for /favicon.ico is not an error.
    """
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        url = message.location.get("url", "")
        if message.type == "error" and not url.endswith("/favicon.ico"):
            errors.append(f"console: {message.text} ({url})" if url else f"console: {message.text}")

    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.on("console", on_console)
    return errors
