"""The default local engine: llama.cpp's own server, started by the bot, writing several replies at once.

The server is the real `llama-server` the Makefile builds from llama-cpp-python's vendored
llama.cpp, serving the small model here (the quality preset is the default; see
bench/chat_parallel.py for its figures).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.loopback_discord import FakeUser
from tests.test_chat_e2e import answered, chat_bot
from trainerbot.app import build_services
from trainerbot.chat.engine import ChatMessage
from trainerbot.chat.llama_server import LlamaServerEngine, server_binary
from trainerbot.chat.local import LocalEngine
from trainerbot.chat.models import SMALL
from trainerbot.config import load_settings
from trainerbot.errors import ChatUnavailable

PEOPLE = [FakeUser(900_000_000_000_000_700 + n, f"asker{n}") for n in range(4)]
ASK = [ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", "Name three colours.")]


@pytest.fixture(scope="module")
def binary() -> Path:
    found = server_binary()
    assert found is not None, "the Makefile builds llama-server into .venv/bin"
    return found


def small_model() -> Path:
    path = SMALL.path()
    assert path is not None
    return path


async def test_four_people_asking_at_once_are_answered_together_without_waiting_in_line(tmp_path: Path) -> None:
    async with chat_bot(tmp_path, chat_parallel=4, edit_interval=0.2) as (server, services):
        assert isinstance(services.engine, LlamaServerEngine)
        assert services.queues.replies.capacity == 4
        server.add_members(*PEOPLE)
        asked = await asyncio.gather(
            *(server.send_message(f"hi, give me one tip about {topic}", author=person)
              for person, topic in zip(PEOPLE, ("tea", "sleep", "running", "reading"), strict=True))
        )  # fmt: skip
        replies = [await answered(services, server, sent) for sent in asked]
        for sent, messages in zip(asked, replies, strict=True):
            assert messages and messages[0]["content"].strip(), sent["content"]
            first = server.message_bodies[int(messages[0]["id"])][0]["content"]
            assert "in line" not in first, first  # four slots: nobody waited for another's reply
        assert services.queues.replies.longest_line == 0
        process = services.engine._process
        assert process is not None and process.poll() is None
    assert process.poll() is not None  # the bot stopped its server when it closed


def test_the_server_counts_tokens_as_the_model_in_process_does(binary: Path) -> None:
    engine = LlamaServerEngine(small_model(), binary, parallel=2)
    local = LocalEngine(small_model())
    try:
        for text in ["Hello there!", "print('hi')  # 🌱 émoji", "<|im_start|>user\nhi<|im_end|>", "word " * 300]:
            assert engine.count_tokens(text) == local.count_tokens(text), text
    finally:
        engine.close()
        local.close()


def test_a_server_that_died_is_started_again_for_the_next_reply(binary: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = LlamaServerEngine(small_model(), binary, parallel=2, temperature=0.0)
    try:
        first = "".join(engine.stream(ASK, max_tokens=30, cancel=threading.Event()))
        assert first.strip()
        assert engine._process is not None
        engine._process.send_signal(signal.SIGKILL)
        engine._process.wait()
        with caplog.at_level(logging.WARNING, logger="trainerbot.chat.llama_server"):
            again = "".join(engine.stream(ASK, max_tokens=30, cancel=threading.Event()))
        assert again == first  # the same model, greedy: the same reply
        assert "llama-server exited with -9; starting it again" in caplog.text
    finally:
        engine.close()


def test_the_server_is_for_the_bot_alone_and_takes_its_sampling_settings(binary: Path) -> None:
    engine = LlamaServerEngine(small_model(), binary, parallel=2, repeat_penalty=1.3, temperature=0.2)
    try:
        assert "".join(engine.stream(ASK, max_tokens=20, cancel=threading.Event())).strip()
        base = str(engine._http.base_url)
        refused = httpx.post(f"{base}/v1/chat/completions", json={"messages": [m.as_dict() for m in ASK]})
        assert refused.status_code == 401  # another local program, without the bot's key
        key = engine._http.headers["Authorization"].removeprefix("Bearer ")
        assert key not in Path(f"/proc/{engine._process.pid}/cmdline").read_text()  # not for `ps` to show
        slots = engine._http.get("/slots").json()
        used = [slot for slot in slots if slot.get("params", {}).get("repeat_penalty")]
        assert used and all(abs(slot["params"]["repeat_penalty"] - 1.3) < 1e-6 for slot in used), slots
    finally:
        engine.close()


def test_a_server_that_cannot_start_is_a_clear_message(tmp_path: Path) -> None:
    engine = LlamaServerEngine(small_model(), Path("/bin/false"), parallel=2)
    engine.load()  # at start-up: logged, not raised
    with pytest.raises(ChatUnavailable, match="could not be started; the owners can find why in the log"):
        list(engine.stream(ASK, max_tokens=5, cancel=threading.Event()))


def test_without_the_server_binary_the_model_runs_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("trainerbot.chat.llama_server.server_binary", lambda: None)
    settings = load_settings(
        _env_file=None, data_dir=tmp_path, chat_engine="local", chat_parallel=4, stt_engine="none", tts_engine="none"
    )
    with caplog.at_level(logging.WARNING, logger="trainerbot.chat"):
        services = build_services(settings, chat=True)
    try:
        assert isinstance(services.engine, LocalEngine)
        assert "llama-server is not installed" in caplog.text
    finally:
        services.close()


def test_the_operator_can_give_the_server_more_options(tmp_path: Path) -> None:
    from trainerbot.chat import build_engine

    settings = load_settings(
        _env_file=None,
        data_dir=tmp_path,
        chat_engine="local",
        chat_parallel=2,
        llama_server_args="--poll 0 --no-warmup",
    )
    engine = build_engine(settings)
    assert isinstance(engine, LlamaServerEngine) and engine.extra_args == ["--poll", "0", "--no-warmup"]
    try:
        assert "".join(engine.stream(ASK, max_tokens=10, cancel=threading.Event())).strip()
    finally:
        engine.close()


def running(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for its new parent to reap it has stopped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_the_server_dies_with_a_bot_killed_outright(tmp_path: Path, binary: Path) -> None:
    """A bot killed with SIGKILL cannot stop its server; the server must not outlive it, holding a GB."""
    script = (
        "import sys, threading\n"
        "from pathlib import Path\n"
        "from trainerbot.chat.llama_server import LlamaServerEngine\n"
        f"engine = LlamaServerEngine(Path({str(small_model())!r}), Path({str(binary)!r}), parallel=2)\n"
        "threading.Thread(target=engine.load).start()  # started from a thread that ends, as at the bot's start\n"
        "import time\n"
        "while engine._process is None or engine._client is None: time.sleep(0.05)\n"
        "print(engine._process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    bot = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(bot.stdout.readline())
        time.sleep(1)
        assert running(server_pid)  # the thread that started it has ended: the server runs on
        bot.kill()
        bot.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and running(server_pid):
            time.sleep(0.1)
        if running(server_pid):
            os.kill(server_pid, signal.SIGKILL)
            pytest.fail("llama-server outlived the bot that started it")
    finally:
        bot.kill()
