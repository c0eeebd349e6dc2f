"""Self-test of the loopback Discord's OAuth2 authorization code flow (tests/loopback_discord/oauth.py).

An aiohttp client plays both the browser (consent page, its form, the redirect) and the web app
(token endpoint, bearer calls), so the flow a dashboard's sign-in depends on is checked without a
browser: codes are single use and bound to client and redirect_uri, the secret is checked, Cancel
answers access_denied, a bearer token opens only the person's own routes, and the guild list
carries each guild's ownership and permissions for that person.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.loopback_discord import FakeDiscord, FakeUser, GuildSetup
from tests.loopback_discord.payloads import ALL_PERMISSIONS, EVERYONE_PERMISSIONS

REDIRECT_URI = "http://127.0.0.1:9/callback"  # never opened: the client stops at the 302


@pytest.fixture
async def server() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def basic(server: FakeDiscord, secret: str | None = None) -> dict[str, str]:
    """HTTP Basic auth with the application's client id and secret (aiohttp's BasicAuth is deprecated)."""
    pair = f"{server.client_id}:{server.client_secret if secret is None else secret}"
    return {"Authorization": f"Basic {base64.b64encode(pair.encode()).decode()}"}


async def consent(
    http: aiohttp.ClientSession,
    server: FakeDiscord,
    *,
    action: str = "authorize",
    state: str = "s-123",
    scope: str = "identify guilds",
    redirect_uri: str = REDIRECT_URI,
) -> URL:
    """Opens the consent page, submits its form with ``action``; returns where Discord redirects to."""
    async with http.get(server.authorize_url(redirect_uri, state=state, scope=scope)) as page:
        assert page.status == 200, await page.text()
        text = await page.text()
    assert f'value="{action}"' in text and '<form method="post"' in text
    fields = {"client_id": server.client_id, "redirect_uri": redirect_uri, "response_type": "code"}
    form = {**fields, "scope": scope, "state": state, "action": action}
    async with http.post(server.authorize_endpoint, data=form, allow_redirects=False) as answer:
        assert answer.status == 302, await answer.text()
        return URL(answer.headers["Location"])


async def redeem(
    http: aiohttp.ClientSession,
    server: FakeDiscord,
    code: str,
    *,
    redirect_uri: str = REDIRECT_URI,
    secret: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """The web app's token request, with Basic auth; returns the status and the JSON body."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    async with http.post(server.token_endpoint, data=form, headers=basic(server, secret)) as answer:
        return answer.status, await answer.json()


async def get(http: aiohttp.ClientSession, url: str, authorization: str) -> tuple[int, Any]:
    async with http.get(url, headers={"Authorization": authorization}) as answer:
        return answer.status, await answer.json()


async def test_full_flow(server: FakeDiscord, http: aiohttp.ClientSession) -> None:
    server.sign_in_browser(server.admin)
    async with http.get(server.authorize_url(REDIRECT_URI, state="abc")) as page:
        text = await page.text()
    assert "Authorize trainerbot?" in text and ">admin<" in text
    assert 'data-scope="identify"' in text and 'data-scope="guilds"' in text

    location = await consent(http, server, state="abc")
    assert str(location.with_query(None)) == REDIRECT_URI
    assert location.query["state"] == "abc"
    [issued] = server.oauth_codes_issued
    assert location.query["code"] == issued.code and issued.user == server.admin and not issued.used

    status, token = await redeem(http, server, issued.code)
    assert status == 200, token
    assert token["token_type"] == "Bearer" and token["expires_in"] == 604800
    assert token["scope"] == "identify guilds" and token["refresh_token"]
    [recorded] = server.oauth_tokens
    assert recorded.access_token == token["access_token"] and recorded.user == server.admin and issued.used

    bearer = f"Bearer {token['access_token']}"
    status, me = await get(http, f"{server.api_base}/users/@me", bearer)
    assert status == 200
    assert {key: me[key] for key in ("id", "username", "global_name", "avatar", "discriminator")} == {
        "id": str(server.admin.id),
        "username": "admin",
        "global_name": None,
        "avatar": None,
        "discriminator": "0",
    }
    status, authorization = await get(http, f"{server.api_base}/oauth2/@me", bearer)
    assert status == 200 and authorization["scopes"] == ["identify", "guilds"]
    assert authorization["application"]["id"] == server.client_id and authorization["user"]["id"] == me["id"]
    # The bot's own token still reads the bot's user.
    status, bot_me = await get(http, f"{server.api_base}/users/@me", f"Bot {server.token}")
    assert status == 200 and bot_me["id"] == str(server.bot_user.id)


async def test_unversioned_token_url_and_form_credentials(server: FakeDiscord, http: aiohttp.ClientSession) -> None:
    server.sign_in_browser(server.member)
    code = (await consent(http, server, scope="identify")).query["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "client_id": server.client_id,
        "client_secret": server.client_secret,
    }
    async with http.post(f"{server.base_url}/api/oauth2/token", data=form) as answer:
        assert answer.status == 200
        token = await answer.json()
    assert token["scope"] == "identify"
    # The request is recorded like every REST call, its form fields as its body.
    assert server.requests[-1].path == "/oauth2/token" and server.requests[-1].json["code"] == code


async def test_code_is_single_use(server: FakeDiscord, http: aiohttp.ClientSession) -> None:
    server.sign_in_browser(server.admin)
    code = (await consent(http, server)).query["code"]
    assert (await redeem(http, server, code))[0] == 200
    status, error = await redeem(http, server, code)
    assert (status, error) == (400, {"error": "invalid_grant", "error_description": 'Invalid "code" in request.'})
    assert len(server.oauth_tokens) == 1


async def test_wrong_secret_refused(server: FakeDiscord, http: aiohttp.ClientSession) -> None:
    server.sign_in_browser(server.admin)
    code = (await consent(http, server)).query["code"]
    assert await redeem(http, server, code, secret="not-the-secret") == (401, {"error": "invalid_client"})
    # Refused before the code was looked at: it still works with the right secret.
    assert (await redeem(http, server, code))[0] == 200


async def test_wrong_redirect_uri_refused(server: FakeDiscord, http: aiohttp.ClientSession) -> None:
    server.sign_in_browser(server.admin)
    code = (await consent(http, server)).query["code"]
    status, error = await redeem(http, server, code, redirect_uri="http://127.0.0.1:9/elsewhere")
    assert status == 400 and error["error"] == "invalid_grant" and "redirect_uri" in error["error_description"]
    assert not server.oauth_tokens


async def test_expired_code_refused(server: FakeDiscord, http: aiohttp.ClientSession) -> None:
    server.sign_in_browser(server.admin)
    code = (await consent(http, server)).query["code"]
    server.oauth_codes_issued[0].expires_at = 0
    assert (await redeem(http, server, code))[1]["error"] == "invalid_grant"


async def test_cancel_gives_access_denied(server: FakeDiscord, http: aiohttp.ClientSession) -> None:
    server.sign_in_browser(server.admin)
    location = await consent(http, server, action="cancel", state="keep-me")
    assert str(location.with_query(None)) == REDIRECT_URI
    assert location.query["error"] == "access_denied" and location.query["error_description"]
    assert location.query["state"] == "keep-me" and "code" not in location.query
    assert not server.oauth_codes_issued


async def test_bearer_opens_only_its_own_routes(server: FakeDiscord, http: aiohttp.ClientSession) -> None:
    server.sign_in_browser(server.owner)
    code = (await consent(http, server, scope="identify")).query["code"]
    bearer = f"Bearer {(await redeem(http, server, code))[1]['access_token']}"
    for route in (f"/channels/{server.channel_id}", f"/guilds/{server.guild_id}", "/oauth2/applications/@me"):
        assert (await get(http, server.api_base + route, bearer))[0] == 401, route
    # Without the guilds scope, not even the person's guild list.
    assert (await get(http, f"{server.api_base}/users/@me/guilds", bearer))[0] == 401
    assert (await get(http, f"{server.api_base}/users/@me", bearer))[0] == 200
    # ... and the bot's token does not open the OAuth2 authorization route; nor does a made-up bearer.
    assert (await get(http, f"{server.api_base}/oauth2/@me", f"Bot {server.token}"))[0] == 401
    assert (await get(http, f"{server.api_base}/users/@me", "Bearer made-up"))[0] == 401
    assert (await get(http, f"{server.api_base}/channels/{server.channel_id}", f"Bot {server.token}"))[0] == 200


async def test_guilds_list_owner_and_permissions() -> None:
    first = GuildSetup()
    second = GuildSetup.nth(1, extra_users=[first.admin.with_roles()])  # admin in the first, plain member here
    third = GuildSetup.nth(2)  # not theirs
    async with FakeDiscord([first, second, third]) as server, aiohttp.ClientSession() as http:
        guilds = {}
        for person in (first.admin, first.owner):
            server.sign_in_browser(person)
            code = (await consent(http, server)).query["code"]
            token = (await redeem(http, server, code))[1]["access_token"]
            status, found = await get(http, f"{server.api_base}/users/@me/guilds", f"Bearer {token}")
            assert status == 200
            guilds[person.username] = {guild["id"]: guild for guild in found}

    admin = guilds["admin"]
    assert list(admin) == [str(first.guild_id), str(second.guild_id)]
    assert admin[str(first.guild_id)] == {
        "id": str(first.guild_id),
        "name": "Loopback Guild",
        "icon": None,
        "banner": None,
        "owner": False,
        "permissions": str(ALL_PERMISSIONS),  # the Admin role has Administrator
        "features": [],
    }
    assert admin[str(second.guild_id)]["owner"] is False
    assert admin[str(second.guild_id)]["permissions"] == str(EVERYONE_PERMISSIONS)
    owner = guilds["owner"]
    assert list(owner) == [str(first.guild_id)]
    assert owner[str(first.guild_id)]["owner"] is True
    assert owner[str(first.guild_id)]["permissions"] == str(ALL_PERMISSIONS)


async def test_authorize_page_refuses_like_discord(server: FakeDiscord, http: aiohttp.ClientSession) -> None:
    async def page(url: str) -> tuple[int, str]:
        async with http.get(url, allow_redirects=False) as answer:
            return answer.status, await answer.text()

    # Nobody signed in to Discord: the page says so, and offers no button.
    status, text = await page(server.authorize_url(REDIRECT_URI))
    assert status == 401 and "not signed in" in text and "<form" not in text

    server.sign_in_browser(server.member)
    good = URL(server.authorize_url(REDIRECT_URI))
    for wrong in ({"client_id": "123"}, {"response_type": "token"}, {"scope": ""}, {"scope": "identify bot"}):
        status, text = await page(str(good.update_query(wrong)))
        assert status == 400 and 'id="error"' in text and "<form" not in text, wrong
    assert (await page(str(good.without_query_params("scope"))))[0] == 400

    server.oauth_redirect_uris = ["http://127.0.0.1:9/registered"]
    assert (await page(str(good)))[0] == 400
    assert (await page(server.authorize_url("http://127.0.0.1:9/registered")))[0] == 200


async def test_prompt_none_skips_the_page_once_consented(server: FakeDiscord, http: aiohttp.ClientSession) -> None:
    server.sign_in_browser(FakeUser(900_000_000_000_000_777, "visitor"))  # in no guild: still a Discord user
    url = server.authorize_url(REDIRECT_URI, state="again", prompt="none")
    async with http.get(url, allow_redirects=False) as answer:
        assert answer.status == 200  # never consented: the page is shown
    await consent(http, server, state="first")
    async with http.get(url, allow_redirects=False) as answer:
        assert answer.status == 302
        location = URL(answer.headers["Location"])
    assert location.query["state"] == "again" and location.query["code"] == server.oauth_codes_issued[-1].code
    token = (await redeem(http, server, location.query["code"]))[1]["access_token"]
    assert (await get(http, f"{server.api_base}/users/@me/guilds", f"Bearer {token}")) == (200, [])


async def test_refresh_and_revoke(server: FakeDiscord, http: aiohttp.ClientSession) -> None:
    server.sign_in_browser(server.admin)
    first = (await redeem(http, server, (await consent(http, server)).query["code"]))[1]
    auth = basic(server)
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    async with http.post(server.token_endpoint, data=refresh, headers=auth) as answer:
        assert answer.status == 200
        second = await answer.json()
    assert second["access_token"] != first["access_token"] and second["scope"] == "identify guilds"
    async with http.post(server.token_endpoint, data=refresh, headers=auth) as answer:
        assert answer.status == 400  # a refresh token is spent once used
    bearer = f"Bearer {second['access_token']}"
    assert (await get(http, f"{server.api_base}/users/@me", bearer))[0] == 200
    revoke = {"token": second["access_token"], "token_type_hint": "access_token"}
    async with http.post(f"{server.token_endpoint}/revoke", data=revoke, headers=auth) as answer:
        assert answer.status == 200
    assert (await get(http, f"{server.api_base}/users/@me", bearer))[0] == 401
    assert server.oauth_tokens[-1].revoked
