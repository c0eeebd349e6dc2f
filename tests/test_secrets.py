"""Secrets: the Discord token and the chat server's API key never reach a log, a terminal or a reply.

A whole run of the real bot process (``trainerbot run``, logging at DEBUG) with distinctive
secrets: it logs in with the token, sends the key to a chat server that refuses it (and, as
some OpenAI-compatible proxies do, quotes the key back in its error), and is driven through
commands that work and commands that fail. Then every byte it left is searched: the log file,
stdout and stderr, every REST request it made (bodies and uploaded files) and every message.
"""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import CONFIGURED_OWNER, OWNER_ID, guild_setup
from tests.loopback_discord import FakeDiscord
from tests.loopback_discord.process_bot import BotProcess
from tests.loopback_discord.server import serve_on_loopback
from trainerbot.cli import LOG_FORMAT, RedactingFormatter, settings_secrets
from trainerbot.config import load_settings

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the bot process is stopped with SIGINT")


class RefusingChatServer:
    """An OpenAI-compatible endpoint that answers every request 401, quoting the key it was sent.

    LiteLLM's proxy has answered a bad key with "Received API Key = sk-...": the worst case
    for a bot that logs its chat server's error messages.
    """

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def refuse(self, request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.keys.append(key)
        body = {"error": {"message": f"Invalid proxy server token passed. Received API Key = {key}", "code": 401}}
        return web.json_response(body, status=401)

    async def __aenter__(self) -> RefusingChatServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.refuse)
        self._runner, self.port = await serve_on_loopback(app)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def everything_the_bot_left(server: FakeDiscord, bot: BotProcess) -> dict[str, bytes]:
    """What the run left, by where: files it wrote and everything the fake Discord received."""
    found: dict[str, bytes] = {str(path): path.read_bytes() for path in bot.data_dir.rglob("*.log*")}
    found.update({str(path): path.read_bytes() for path in bot.outputs})
    for number, request in enumerate(server.requests):
        found[f"request {number}: {request.method} {request.path}"] = json.dumps(
            [request.path, request.query, request.json]
        ).encode()
        for index, (name, data) in request.files.items():
            found[f"request {number}: file {index} {name}"] = data
    for message_id, bodies in server.message_bodies.items():
        found[f"message {message_id} (created and edited)"] = json.dumps(bodies).encode()
    for message_id, message in server.messages.items():
        found[f"message {message_id}"] = json.dumps(message).encode()
    found.update({f"attachment {blob_id}": data for blob_id, data in server.blobs.items()})
    return found


async def test_the_token_and_the_api_key_never_appear_in_logs_or_replies(tmp_path: Path) -> None:
    token = f"MTAxNDk4.loopback.{secrets.token_urlsafe(24)}"
    api_key = f"sk-loopback-{secrets.token_hex(20)}"
    async with (
        RefusingChatServer() as chat,
        FakeDiscord(guild_setup(), token=token) as server,
    ):
        env = {
            "TRAINERBOT_LOG_LEVEL": "DEBUG",
            "TRAINERBOT_OWNER_IDS": str(OWNER_ID),
            "TRAINERBOT_CHAT_ENGINE": "openai",
            "TRAINERBOT_OPENAI_BASE_URL": f"http://127.0.0.1:{chat.port}/v1",
            "TRAINERBOT_OPENAI_API_KEY": api_key,
            "TRAINERBOT_STT_ENGINE": "none",
            "TRAINERBOT_TTS_ENGINE": "none",
        }
        async with BotProcess(server, tmp_path / "data", tmp_path, env) as bot:
            await bot.start()

            async def say(content: str, author=None, **kwargs) -> dict:
                sent = await server.send_message(content, author=author, **kwargs)
                return (await server.wait_for_bot_messages(after=sent["id"], timeout=30))[0]

            assert "Hi member" in (await say("!hi"))["content"]
            started = await say("!train when do you open? => We open at nine.", author=CONFIGURED_OWNER)
            await server.wait_for_message(started["id"], lambda m: "now answers" in m["content"], timeout=60)
            refused = await say("Hello there, how are you today?")
            assert (
                refused["content"] == "The chat server refused the bot's API key; an owner needs to check the settings."
            )
            assert "I don't know `!frobnicate`" in (await say("!frobnicate"))["content"]
            broken = await say("!train", author=CONFIGURED_OWNER, attachments=[("faq.csv", b"\xff\xfe\x00bad")])
            assert "faq.csv" in broken["content"]
            assert "outside" in (await say("!getfile ../../.env", author=CONFIGURED_OWNER))["content"]
            assert "JSON" in (await say("!test {not json"))["content"]
            handle = await server.invoke_slash("hi")
            await handle.wait_messages()
            # The log is one of the bot's own files: no server's folder holds it, so no command sends it.
            not_sent = await say("!getfile trainerbot.log", author=CONFIGURED_OWNER)
            assert "There is no file `trainerbot.log`" in not_sent["content"] and not not_sent["attachments"]
            assert await bot.stop() == 0

        # The secrets were really there to leak: Discord saw the token, the chat server the key.
        assert any(frame.get("op") == 2 and frame["d"]["token"] == token for frame in server.gateway.received)
        assert chat.keys and set(chat.keys) == {api_key}
        log = bot.log_file.read_text()
        assert " DEBUG " in log and "AuthenticationError" in log and "chat server" in log
        assert "Received API Key = [redacted]" in log  # the chat server quoted it; the log did not
        assert f"training job 1 of base {server.guild_id} on 1 examples" in log  # the training process logs here too
        # Whole, and their random parts alone (a log line could cut or mask the rest).
        pieces = [token, token.rsplit(".", 1)[1], api_key, api_key.removeprefix("sk-loopback-")]
        leaks = [
            f"{where}: {piece[:6]}..."
            for where, data in everything_the_bot_left(server, bot).items()
            for piece in pieces
            if piece.encode() in data
        ]
        assert not leaks, f"a secret appears in: {leaks}"


def test_a_secret_in_a_log_line_or_its_traceback_is_redacted(tmp_path: Path) -> None:
    token, api_key = f"token-{secrets.token_hex(16)}", f"sk-{secrets.token_hex(16)}"
    settings = load_settings(
        _env_file=None, data_dir=tmp_path, discord_token=token, openai_api_key=api_key, chat_engine="none"
    )
    assert sorted(settings_secrets(settings)) == sorted([token, api_key])
    formatter = RedactingFormatter(LOG_FORMAT, [*settings_secrets(settings), "none"])
    try:
        raise RuntimeError(f"the server said: bad key {api_key}")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "logging in with %s", (token,), sys.exc_info())
    text = formatter.format(record)
    assert token not in text and api_key not in text
    assert "logging in with [redacted]" in text and "RuntimeError: the server said: bad key [redacted]" in text
    assert "none" in formatter.format(logging.LogRecord("x", logging.INFO, __file__, 1, "none left", (), None))


@pytest.mark.parametrize("where", ["main", "thread"])
def test_an_uncaught_exception_quoting_a_secret_is_redacted_on_stderr(tmp_path: Path, where: str) -> None:
    api_key = f"sk-{secrets.token_hex(16)}"
    crash = (
        "import sys, threading\n"
        "from trainerbot.cli import configure_logging\n"
        "from trainerbot.config import load_settings\n"
        f"settings = load_settings(_env_file=None, data_dir=sys.argv[1], openai_api_key={api_key!r})\n"
        "configure_logging(settings, console=True)\n"
        "def fail(): raise RuntimeError('the server said: bad key ' + settings.openai_api_key.get_secret_value())\n"
        "if sys.argv[2] == 'thread':\n"
        "    worker = threading.Thread(target=fail, name='worker'); worker.start(); worker.join()\n"
        "else:\n"
        "    fail()\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", crash, str(tmp_path), where], capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == (1 if where == "main" else 0)
    log_file = (tmp_path / "trainerbot.log").read_text()
    for output in (ran.stderr, log_file):
        assert api_key not in output and "RuntimeError: the server said: bad key [redacted]" in output
