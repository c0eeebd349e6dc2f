"""The dashboard in a real browser (Debian's Chromium through Playwright), end to end.

The bot runs on the loopback Discord with the dashboard in its event loop, as `make run` has it;
people sign in through the fake Discord's OAuth2 consent page. Screenshots go to ``tmp_path``,
or, with ``TRAINERBOT_SCREENSHOTS=docs/dashboard``, to the pictures docs/dashboard.md shows.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.async_api import Page, expect

from tests.browser import browser_page, page_errors, screenshot
from tests.conftest import OWNER_ID, TRAINER, guild_setup
from tests.loopback_discord import FakeDiscord, GuildSetup, run_bot
from trainerbot.adapters.discord.bot import TrainerBot
from trainerbot.adapters.web.directory import GatewayDirectory
from trainerbot.adapters.web.server import WebServer
from trainerbot.app import Services, build_services
from trainerbot.config import load_settings


@dataclass
class Running:
    server: FakeDiscord
    services: Services
    web: WebServer
    first: GuildSetup
    second: GuildSetup

    @property
    def url(self) -> str:
        return self.web.dashboard.public_url


@asynccontextmanager
async def bot_with_dashboard(tmp_path: Path) -> AsyncIterator[Running]:
    first, second = guild_setup(), GuildSetup.nth(1)
    async with FakeDiscord([first, second]) as server:
        settings = load_settings(
            _env_file=None,
            data_dir=tmp_path / "data",
            owner_ids=[OWNER_ID],
            admin_roles=["Trainer"],
            chat_engine="none",
            stt_engine="none",
            tts_engine="none",
            web=True,
            web_port=0,
            discord_client_id=int(server.client_id),
            discord_client_secret=server.client_secret,
            discord_url=server.base_url,
        )
        services = build_services(settings, chat=False)
        try:
            bot = TrainerBot(services, progress_interval=0.05)
            async with run_bot(bot, server):
                web = WebServer(services, GatewayDirectory(bot))
                assert await web.start()
                try:
                    yield Running(server, services, web, first, second)
                finally:
                    await web.stop()
        finally:
            await asyncio.to_thread(services.close)


def pictures(tmp_path: Path) -> Path:
    chosen = os.environ.get("TRAINERBOT_SCREENSHOTS")
    return Path(chosen) if chosen else tmp_path / "screenshots"


async def sign_in_with_discord(page: Page, running: Running) -> None:
    """As the Trainer, an admin of the first server through its admin role (and a member of no other)."""
    running.server.sign_in_browser(TRAINER)
    await page.goto(running.url)
    await page.get_by_role("link", name="Sign in with Discord").click()
    await expect(page.locator("#user")).to_contain_text(TRAINER.username)
    await page.get_by_role("button", name="Authorize").click()
    await expect(page.get_by_role("heading", name="Your servers")).to_be_visible()


async def wait_for_jobs(services: Services, base: int, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while sum(job.status == "succeeded" for job in services.store.jobs.recent(base)) < count:
        assert time.monotonic() < deadline, services.store.jobs.recent(base)
        await asyncio.sleep(0.1)


async def test_an_admin_signs_in_teaches_tests_and_rolls_back_and_finds_no_other_server(tmp_path: Path) -> None:
    shots = pictures(tmp_path)
    async with bot_with_dashboard(tmp_path) as running, browser_page() as page:
        errors = page_errors(page)
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        guild = running.first.guild_id
        await page.goto(running.url)
        await screenshot(page, shots / "sign-in.png")
        await sign_in_with_discord(page, running)
        servers = page.get_by_role("list")
        await expect(servers).to_contain_text("Loopback Guild")
        await expect(servers).not_to_contain_text("Guild B")
        await screenshot(page, shots / "servers.png")

        # Teach on the page; the bot answers it on Discord at once.
        await page.get_by_role("link", name="Loopback Guild").click()
        await expect(page.get_by_role("heading", name="What Loopback Guild knows")).to_be_visible()
        await page.locator("#question").fill("when do you open?")
        await page.locator("#answer").fill("We open at 9am.")
        await page.get_by_role("button", name="Teach").click()
        await expect(page.locator(".said")).to_contain_text("Stored")
        sent = await running.server.send_message("when do you open?", author=running.first.member)
        [reply] = await running.server.wait_for_bot_messages(after=sent["id"])
        assert "We open at 9am." in reply["content"]
        await wait_for_jobs(running.services, guild, 1)
        await page.locator("#question").fill("where are you?")
        await page.locator("#answer").fill("At 1 Main Street.")
        await page.get_by_role("button", name="Teach").click()
        await expect(page.locator(".said")).to_contain_text("Stored")
        await wait_for_jobs(running.services, guild, 2)
        await page.reload()
        await screenshot(page, shots / "knowledge.png")

        # What members asked that nobody taught reaches the review page; answering it there answers in Discord.
        member = running.first.member
        sent = await running.server.send_message("do you sell gift cards?", author=member)
        await running.server.wait_for_bot_messages(after=sent["id"])
        sent = await running.server.send_message("can I buy a gift card?", author=running.first.owner)
        [unknown] = await running.server.wait_for_bot_messages(after=sent["id"])
        await running.server.add_reaction(unknown["id"], "👎", user=running.first.owner)
        await page.get_by_role("link", name="Review").click()
        topic = page.locator(".topic").first
        await expect(topic).to_contain_text("gift card")
        await expect(page.get_by_role("img", name="People asking")).to_be_visible()
        await screenshot(page, shots / "review.png")
        await topic.get_by_label("Answer").fill("Yes, at the front desk.")
        await topic.get_by_role("button", name="Answer").click()
        await expect(page.locator(".said")).to_contain_text("answered")
        sent = await running.server.send_message("do you sell gift cards?", author=member)
        [reply] = await running.server.wait_for_bot_messages(after=sent["id"])
        assert "Yes, at the front desk." in reply["content"]

        # Feedback and ratings, with the reply they are about.
        await running.server.add_reaction(reply["id"], "👍", user=member)
        sent = await running.server.send_message("!feedback thanks, that was quick", author=member)
        await running.server.wait_for_bot_messages(after=sent["id"])
        await page.get_by_role("link", name="Feedback").click()
        await expect(page.locator("table").first).to_contain_text("Yes, at the front desk.")
        await expect(page.locator("table").nth(1)).to_contain_text("thanks, that was quick")
        await screenshot(page, shots / "feedback.png")

        # A test run, its chart and the runs so far.
        await page.get_by_role("link", name="Tests").click()
        cases = [
            {"input": "when do you open?", "output": "We open at 9am."},
            {"input": "where are you?", "output": "At 1 Main Street."},
            {"input": "what is the wifi password?", "output": "hunter2"},
        ]
        await page.get_by_label("Cases as JSON").fill(json.dumps(cases))
        await page.get_by_role("button", name="Run the test").click()
        result = page.locator(".result")
        await expect(result).to_contain_text("Passed 2 of 3")
        await expect(result.get_by_role("img")).to_be_visible()
        await expect(page.locator("table").first).to_contain_text("2 of 3")
        await expect(page.locator("table").nth(1)).to_contain_text("what is the wifi password?")
        await screenshot(page, shots / "tests.png")

        # Three model versions (two answers taught, a topic answered): roll back to the first.
        await wait_for_jobs(running.services, guild, 3)
        await page.get_by_role("link", name="Training").click()
        versions = running.services.store.knowledge.model_versions(guild)
        assert len(versions) == 3
        oldest = versions[-1].id
        await expect(page.get_by_role("img", name="Model versions")).to_be_visible()
        await screenshot(page, shots / "training.png")
        await page.get_by_role("button", name=f"Roll back to v{oldest}").click()
        await expect(page.locator(".said")).to_contain_text(f"Model version {oldest} answers again")
        assert running.services.store.knowledge.active_model_id(guild) == oldest

        # The audit list names who did it, and through the dashboard.
        await page.get_by_role("link", name="Changes").click()
        await expect(page.locator("tbody")).to_contain_text("rollback")
        await expect(page.locator("tbody")).to_contain_text("web")
        await screenshot(page, shots / "changes.png")

        assert not errors  # before the walls below, whose 404s the browser reports as failed loads
        # Another server's pages and API do not exist for this admin.
        other = running.second.guild_id
        for path in ("knowledge", "training", "settings"):
            await page.goto(f"{running.url}/servers/{other}/{path}")
            await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        answer = await page.request.get(f"{running.url}/api/servers/{other}/jobs")
        assert answer.status == 404
        assert str(other) not in await answer.text()


async def test_the_pages_fit_a_phones_width(tmp_path: Path) -> None:
    async with bot_with_dashboard(tmp_path) as running, browser_page(viewport=(390, 844)) as page:
        await sign_in_with_discord(page, running)
        await page.get_by_role("link", name="Loopback Guild").click()
        for name in ("Knowledge", "Training", "Tests", "Settings"):
            await page.get_by_role("link", name=name, exact=True).click()
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the {name} page is {width} px wide on a 390 px screen"
        await screenshot(page, pictures(tmp_path) / "phone-settings.png")
        # The keyboard: the first Tab reaches the skip link, which takes the focus to the page's own content.
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == "Skip to the page"
        await page.keyboard.press("Enter")
        assert await page.evaluate("document.activeElement.id") == "main"


async def test_a_member_sees_their_servers_training_and_no_admin_page(tmp_path: Path) -> None:
    async with bot_with_dashboard(tmp_path) as running, browser_page() as page:
        member = running.first.member
        running.server.sign_in_browser(member)
        await page.goto(running.url)
        await page.get_by_role("link", name="Sign in with Discord").click()
        await page.get_by_role("button", name="Authorize").click()
        await page.get_by_role("link", name="Loopback Guild").click()
        await expect(page.get_by_role("heading", name="Training")).to_be_visible()
        tabs = page.get_by_role("navigation", name="Loopback Guild")
        await expect(tabs).not_to_contain_text("Knowledge")
        await expect(page.get_by_role("button", name="Train now")).to_have_count(0)
        await page.goto(f"{running.url}/servers/{running.first.guild_id}/knowledge")
        await expect(page.locator("main")).to_contain_text("only the bot's owners and members with an admin role")
