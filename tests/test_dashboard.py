"""The dashboard over HTTP (no browser): signing in, sessions and cookies, CSRF, the walls between servers.

The real dashboard (Starlette under uvicorn) serves on 127.0.0.1 over the real core services and
SQLite; a real aiohttp client talks to it. The browser tests (test_dashboard_browser.py) drive
the same pages through Chromium.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import OWNER_ID, TRAINER, core_services, guild_setup
from tests.loopback_discord import FakeDiscord, GuildSetup, discord_endpoints
from trainerbot.adapters.web.directory import RestDirectory, StoredDirectory
from trainerbot.adapters.web.server import WebServer
from trainerbot.app import Services
from trainerbot.storage.sessions import GuildSeen
from trainerbot.types import Caller, Example

SERVER_A = 111_111_111_111_111_111
SERVER_B = 222_222_222_222_222_222


@pytest.fixture
def services(tmp_path: Path) -> AsyncIterator[Services]:
    built = core_services(tmp_path / "data", web_port=0, owner_ids=[OWNER_ID], admin_roles=["Trainer"])
    yield built
    built.close()


@pytest.fixture
async def web(services: Services) -> AsyncIterator[WebServer]:
    server = WebServer(services, StoredDirectory(services.store.knowledge.bases, services.settings.owner_ids))
    assert await server.start()
    yield server
    await server.stop()


def client(web: WebServer) -> aiohttp.ClientSession:
    # unsafe: aiohttp keeps no cookies of an IP address (127.0.0.1) otherwise
    return aiohttp.ClientSession(web.dashboard.public_url, cookie_jar=aiohttp.CookieJar(unsafe=True))


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def said(page: str) -> list[str]:
    return [html.unescape(text) for text in re.findall(r'<p class="said[^"]*"[^>]*>(.*?)</p>', page, re.S)]


async def sign_in_as(
    web: WebServer, http: aiohttp.ClientSession, user: int, name: str, guilds: list[GuildSeen]
) -> None:
    """A session as Discord sign-in makes one (that flow itself is tested through the loopback Discord)."""
    token = web.dashboard.services.store.web_sessions.create(user, name, operator=False, guilds=guilds, hours=1)
    http.cookie_jar.update_cookies({"trainerbot_session": web.dashboard.signer.sign(token)})


async def test_the_operators_link_signs_in_once_as_an_owner(web: WebServer) -> None:
    link = web.dashboard.link_url
    assert link is not None
    async with client(web) as http:
        async with http.get("/") as response:
            assert "Sign in" in await response.text()
        async with http.get(link, allow_redirects=False) as response:
            assert response.status == 303
            cookie = response.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Max-Age=" in cookie
        async with http.get("/") as response:
            page = await response.text()
            assert "Bot-wide knowledge" in page and "Status of the bot" in page
        async with http.get("/status") as response:
            page = html.unescape(await response.text())
            assert response.status == 200
            assert "Memory: the bot's process" in page and "a written reply" in page and "SQLite" in page
    assert web.dashboard.link_url is None
    async with client(web) as http, http.get(link) as response:
        assert response.status == 403
        assert "used already" in await response.text()


async def test_a_tampered_or_missing_cookie_signs_nobody_in(web: WebServer) -> None:
    async with client(web) as http:
        async with http.get(web.dashboard.link_url or "") as response:
            assert response.status == 200
        [cookie] = [c for c in http.cookie_jar if c.key == "trainerbot_session"]
        http.cookie_jar.clear()
        http.cookie_jar.update_cookies({"trainerbot_session": cookie.value[:-2] + "xx"})
        async with http.get("/servers/global/training", allow_redirects=False) as response:
            assert response.status == 303 and response.headers["Location"] == "/"
        async with http.get("/api/servers") as response:
            assert response.status == 401


async def test_every_change_needs_the_sessions_csrf_token_and_no_foreign_origin(web: WebServer) -> None:
    async with client(web) as http:
        async with http.get(web.dashboard.link_url or "") as response:
            page = await response.text()
        token = csrf_of(page)
        path = "/servers/global/training/start"
        async with http.post(path, data={}) as response:
            assert response.status == 403
        async with http.post(path, data={"csrf": "x" * len(token)}) as response:
            assert response.status == 403
        headers = {"Origin": "https://evil.example"}
        async with http.post(path, data={"csrf": token}, headers=headers) as response:
            assert response.status == 403
        async with http.post(path, data={"csrf": token}) as response:
            assert "Nothing has been taught here yet" in " ".join(said(await response.text()))


async def test_sign_in_attempts_are_limited_across_every_dashboard_on_the_database(
    web: WebServer, tmp_path: Path
) -> None:
    """Two dashboards (two processes, say) on one database: an address's attempts count together."""
    other_services = core_services(tmp_path / "data", web_port=0)  # the same database, its own connection
    other = WebServer(other_services, StoredDirectory(other_services.store.knowledge.bases, []))
    assert await other.start()
    try:
        statuses = []
        for n in range(12):
            async with client(web if n % 2 else other) as http, http.get("/signin/link/guess") as response:
                statuses.append(response.status)
    finally:
        await other.stop()
        other_services.close()
    assert statuses[:10] == [403] * 10
    assert statuses[10:] == [429, 429]


async def test_a_server_the_person_is_not_in_does_not_exist_for_them(web: WebServer, services: Services) -> None:
    for server in (SERVER_A, SERVER_B):  # both have something stored
        services.store.knowledge.add_examples(server, [Example("hi", "hello")], source="train:test", author_id=1)
    admin_of_a = [GuildSeen(SERVER_A, "Server A", owner=False, administrator=True)]
    async with client(web) as http:
        await sign_in_as(web, http, 5, "alice", admin_of_a)
        async with http.get("/api/servers") as response:
            assert [server["id"] for server in await response.json()] == [str(SERVER_A)]
        async with http.get(f"/servers/{SERVER_A}/training") as response:
            assert response.status == 200
        pages = ["training", "tests", "review", "knowledge", "feedback", "settings", "audit"]
        for page in pages:
            async with http.get(f"/servers/{SERVER_B}/{page}") as response:
                assert response.status == 404, page
                assert str(SERVER_B) not in await response.text()
        for path in (f"/api/servers/{SERVER_B}/jobs", f"/api/servers/{SERVER_B}/answers", "/servers/global/tests"):
            async with http.get(path) as response:
                assert response.status == 404, path
        async with http.get("/status") as response:
            assert response.status == 404
        async with http.get(f"/servers/{SERVER_A}/training") as response:
            token = csrf_of(await response.text())
        async with http.post(f"/servers/{SERVER_B}/training/start", data={"csrf": token}) as response:
            assert response.status == 404


async def test_a_member_sees_the_members_pages_and_is_refused_the_admins(web: WebServer, services: Services) -> None:
    services.store.knowledge.add_examples(SERVER_A, [Example("hi", "hello")], source="train:test", author_id=1)
    member = [GuildSeen(SERVER_A, "Server A", owner=False, administrator=False)]
    async with client(web) as http:
        await sign_in_as(web, http, 6, "bob", member)
        async with http.get(f"/servers/{SERVER_A}/training") as response:
            page = await response.text()
            assert response.status == 200
            assert "Train now" not in page and ">Knowledge<" not in page
        for admins_only in ("review", "feedback", "audit"):
            async with http.get(f"/servers/{SERVER_A}/{admins_only}") as response:
                assert response.status == 403, admins_only
                assert "only the bot's owners and members with an admin role" in html.unescape(await response.text())
        async with http.post(f"/servers/{SERVER_A}/training/start", data={"csrf": csrf_of(page)}) as response:
            assert response.status == 403


async def test_a_change_on_the_page_is_in_the_servers_audit_list_with_who_made_it(
    web: WebServer, services: Services
) -> None:
    admin = [GuildSeen(SERVER_A, "Server A", owner=True, administrator=True)]
    async with client(web) as http:
        await sign_in_as(web, http, 7, "carol", admin)
        async with http.get(f"/servers/{SERVER_A}/settings") as response:
            token = csrf_of(await response.text())
        form = {"csrf": token, "setting": "persona", "value": "You are a pirate."}
        async with http.post(f"/servers/{SERVER_A}/settings", data=form) as response:
            assert "You are a pirate." in " ".join(said(await response.text()))
        async with http.get(f"/servers/{SERVER_A}/audit") as response:
            page = await response.text()
    assert services.store.knowledge.settings(SERVER_A).persona == "You are a pirate."
    [entry] = services.store.audit.entries(SERVER_A)
    assert (entry.user_id, entry.user_name, entry.via) == (7, "carol", "web")
    assert "carol" in page and "persona" in page


async def test_the_operator_rolls_back_to_any_earlier_version(web: WebServer, services: Services) -> None:
    owner = Caller(OWNER_ID, "owner", is_owner=True, via="console")
    for number in range(3):
        started = services.teaching.train(owner, f"question {number} => answer {number}", [], now=True)
        deadline = time.monotonic() + 120
        while not services.teaching.job_status(started.base, started.job_id)[1]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    versions = services.store.knowledge.model_versions(0)
    assert len(versions) == 3
    oldest = versions[-1].id
    async with client(web) as http:
        async with http.get(web.dashboard.link_url or "") as response:
            token = csrf_of(await response.text())
        async with http.post("/servers/global/training/activate", data={"csrf": token, "version": oldest}) as response:
            page = await response.text()
    assert f"Model version {oldest} answers again" in " ".join(said(page))
    assert services.store.knowledge.active_model_id(0) == oldest
    assert "answering" in page


# --- signing in with Discord, through the loopback Discord's OAuth2 endpoints --------------------------------


@asynccontextmanager
async def dashboard_on(server: FakeDiscord, tmp_path: Path, **settings: object) -> AsyncIterator[WebServer]:
    discord = {
        "discord_client_id": int(server.client_id),
        "discord_client_secret": server.client_secret,
        "discord_url": server.base_url,
    }
    built = core_services(tmp_path / "data", web_port=0, owner_ids=[OWNER_ID], **(discord | settings))
    web = WebServer(built, StoredDirectory(built.store.knowledge.bases, built.settings.owner_ids))
    assert await web.start()
    try:
        yield web
    finally:
        await web.stop()
        built.close()


async def consent(http: aiohttp.ClientSession, web: WebServer, action: str) -> aiohttp.ClientResponse:
    """Follows 'Sign in with Discord' to the consent page and presses ``action`` there; returns the last answer."""
    async with http.get("/signin/discord", allow_redirects=False) as response:
        authorize = response.headers["Location"]
    async with http.get(authorize) as response:
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', await response.text()))
    fields = {key: html.unescape(value) for key, value in fields.items()} | {"action": action}
    return await http.post(authorize.split("?")[0], data=fields)


async def test_signing_in_with_discord_shows_the_servers_the_person_is_in(tmp_path: Path) -> None:
    first, second = GuildSetup(), GuildSetup.nth(1)
    async with FakeDiscord([first, second]) as server, dashboard_on(server, tmp_path) as web:
        server.sign_in_browser(first.admin)  # Administrator in the first server, in no other
        for guild in (first, second):  # without the bot beside it, the servers with anything stored
            web.dashboard.services.store.knowledge.change_settings(guild.guild_id, None, persona="Hi.")
        async with client(web) as http:
            response = await consent(http, web, "authorize")
            page = await response.text()
            assert response.status == 200 and "Your servers" in page
            assert "Loopback Guild" in page and "Guild B" not in page
            async with http.get(f"/servers/{first.guild_id}/audit") as response:
                assert response.status == 200  # an Administrator there is an admin here
            async with http.get(f"/servers/{second.guild_id}/audit") as response:
                assert response.status == 404
        [code] = server.oauth_codes_issued
        assert code.used and code.redirect_uri == f"{web.dashboard.public_url}/signin/discord/callback"


async def test_a_refused_or_forged_sign_in_signs_nobody_in(tmp_path: Path) -> None:
    async with FakeDiscord() as server, dashboard_on(server, tmp_path) as web:
        server.sign_in_browser(server.setup.member)
        async with client(web) as http:
            response = await consent(http, web, "cancel")
            assert response.status == 400 and "did not sign you in" in await response.text()
            # a callback whose state is not the one this browser was given
            async with http.get("/signin/discord/callback?code=abc&state=forged") as response:
                assert response.status == 400 and "stale or not yours" in await response.text()
            async with http.get("/api/servers") as response:
                assert response.status == 401


async def test_a_wrong_client_secret_is_a_plain_message_and_nothing_leaks(tmp_path: Path) -> None:
    async with (
        FakeDiscord() as server,
        dashboard_on(server, tmp_path, discord_client_secret="wrong-secret-1234") as web,
    ):
        server.sign_in_browser(server.setup.member)
        async with client(web) as http:
            response = await consent(http, web, "authorize")
            page = await response.text()
        assert response.status == 400 and "Discord did not accept this sign-in" in page
        assert "wrong-secret-1234" not in page and server.client_secret not in page


# --- editing what a server knows --------------------------------------------------------------------------


async def test_an_admin_teaches_edits_imports_exports_and_deletes_on_the_pages(
    web: WebServer, services: Services
) -> None:
    admin = [GuildSeen(SERVER_A, "Server A", owner=False, administrator=True)]
    url = f"/servers/{SERVER_A}"
    async with client(web) as http:
        await sign_in_as(web, http, 8, "dana", admin)
        async with http.get(f"{url}/knowledge") as response:
            token = csrf_of(await response.text())
        form = {"csrf": token, "question": "when do you open?", "answer": "At 9am."}
        async with http.post(f"{url}/knowledge/add", data=form) as response:
            assert "Stored 1 positive example" in " ".join(said(await response.text()))
        [example] = services.store.knowledge.examples_answering(SERVER_A, ["At 9am."])
        async with http.get(f"{url}/examples/{example.id}") as response:
            assert 'value="when do you open?"' in await response.text()
        form = {"csrf": token, "question": "when do you open?", "answer": "At 10am on Sundays."}
        async with http.post(f"{url}/examples/{example.id}/edit", data=form) as response:
            assert f"Example #{example.id} changed" in " ".join(said(await response.text()))
        upload = aiohttp.FormData()
        upload.add_field("csrf", token)
        upload.add_field("file", b"question,answer\nwhere are you?,At 1 Main Street.\n", filename="faq.csv")
        async with http.post(f"{url}/knowledge/import", data=upload) as response:
            [notice] = said(await response.text())
        assert "Stored 1 positive example from faq.csv" in notice
        assert "The training page shows how it goes." in notice and "this message" not in notice
        broken = aiohttp.FormData()
        broken.add_field("csrf", token)
        broken.add_field("file", b"\x00\x01 not a table", filename="faq.csv")
        async with http.post(f"{url}/knowledge/import", data=broken) as response:
            [error] = said(await response.text())
        assert "faq.csv" in error  # the same message `!train` gives for that file
        async with http.get(f"{url}/knowledge/export?format=csv") as response:
            exported = await response.text()
            assert response.headers["Content-Disposition"].startswith("attachment;")
        assert "At 10am on Sundays." in exported and "At 1 Main Street." in exported and "At 9am." not in exported
        async with http.get(f"{url}/knowledge?q=main+street") as response:
            page = await response.text()
            assert "At 1 Main Street." in page and "At 10am on Sundays." not in page
        form = {"csrf": token, "answer": "At 1 Main Street."}
        async with http.post(f"{url}/answers/delete", data=form) as response:
            assert "deleted" in " ".join(said(await response.text())).lower()
        async with http.get(f"{url}/examples/999999") as response:
            assert response.status == 400 and "There is no example #999999 here" in html.unescape(await response.text())
    actions = [entry.action for entry in services.store.audit.entries(SERVER_A)]
    assert actions[:4] == ["delete answer", "train", "edit example", "add example"]


async def test_alone_with_the_bots_token_roles_decide_as_they_do_for_the_bot(tmp_path: Path) -> None:
    """`trainerbot web` beside a bot run elsewhere: Discord's REST API says who holds which role."""
    first, second = guild_setup(), GuildSetup.nth(1)
    async with FakeDiscord([first, second]) as server:
        built = core_services(tmp_path / "data", web_port=0, owner_ids=[OWNER_ID], admin_roles=["Trainer"])
        with discord_endpoints(server):
            directory = await RestDirectory.connect(server.token, built.settings.owner_ids)
            web = WebServer(built, directory)
            assert await web.start()
            try:
                assert {s.id for s in await directory.servers()} == {first.guild_id, second.guild_id}
                knowledge = f"/servers/{first.guild_id}/knowledge"
                for person, status in ((TRAINER, 200), (first.member, 403), (second.member, 404)):
                    async with client(web) as http:
                        await sign_in_as(web, http, person.id, person.username, [])
                        async with http.get(knowledge) as response:
                            assert response.status == status, person.username
                # The list of their servers asks Discord about those it listed at sign-in, not every server.
                asked = len(server.requests)
                async with client(web) as http:
                    await sign_in_as(web, http, TRAINER.id, "trainer", [GuildSeen(first.guild_id, "A", False, False)])
                    async with http.get("/api/servers") as response:
                        assert [s["standing"] for s in await response.json()] == ["admin"]
                asked_about = {
                    re.findall(r"/guilds/(\d+)/", r.path)[0] for r in server.requests[asked:] if "/guilds/" in r.path
                }
                assert asked_about <= {str(first.guild_id)}  # (the answer about the first may be remembered)
            finally:
                await web.stop()
                await directory.close()
                built.close()


async def test_a_form_over_the_upload_limit_is_refused_before_it_is_read(web: WebServer) -> None:
    async with client(web) as http:
        async with http.get(web.dashboard.link_url or "") as response:
            token = csrf_of(await response.text())
        upload = aiohttp.FormData()
        upload.add_field("csrf", token)
        limit = web.dashboard.services.settings.upload_limit_bytes
        upload.add_field("file", b"q,a\n" * (limit // 4 + 50_000), filename="big.csv")  # 200 KB over
        async with http.post("/servers/global/knowledge/import", data=upload) as response:
            assert response.status == 413
            assert "more than the upload limit" in await response.text()


async def test_signing_out_ends_the_session_even_for_a_copy_of_its_cookie(web: WebServer) -> None:
    async with client(web) as http:
        async with http.get(web.dashboard.link_url or "") as response:
            token = csrf_of(await response.text())
        [cookie] = [c for c in http.cookie_jar if c.key == "trainerbot_session"]
        async with http.post("/signout", data={"csrf": token}) as response:
            assert "Sign in" in await response.text()
    async with client(web) as thief:
        thief.cookie_jar.update_cookies({"trainerbot_session": cookie.value})
        async with thief.get("/api/servers") as response:
            assert response.status == 401
