"""The local model served by llama.cpp's own server, started by the bot: several replies written at once.

In process, llama-cpp-python writes one reply at a time. `llama-server` (built by the Makefile
from the llama.cpp sources that llama-cpp-python vendors) keeps ``parallel`` slots and decodes
every active reply in the same batch (continuous batching), so each read of the weights serves
several conversations. It also keeps each slot's prompt cache and a RAM cache of prompts for
conversations that move between slots, as our in-process engine does. The bot talks to it
through the OpenAI-compatible engine on 127.0.0.1 and stops it when it closes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from trainerbot.chat.engine import ChatMessage
from trainerbot.chat.openai_compatible import OpenAIEngine
from trainerbot.errors import ChatUnavailable

log = logging.getLogger(__name__)

CACHE_RAM_MIB = 256  # prompts kept for conversations that left their slot (llama-server's default: 8 GiB)
START_SECONDS = 120.0
RETRY_SECONDS = 60.0  # loading a 1 GB model takes a few seconds; a cold disk more


def server_binary() -> Path | None:
    """llama-server as the Makefile installs it, beside the environment's Python, else on the PATH."""
    beside = Path(sys.executable).with_name("llama-server")
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("llama-server")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _spawn(command: list[str], output: Any, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Starts the server so that it dies with the bot, even a bot killed with SIGKILL.

    Linux sends a process's death signal when the thread that started it ends, so the server is
    started by a thread of its own that waits for it as long as it runs; `setpriv --pdeathsig`
    (util-linux) sets the signal without running Python code between fork and exec.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        command = [setpriv, "--pdeathsig", "TERM", "--", *command]
    started: queue.Queue[subprocess.Popen[bytes] | OSError] = queue.Queue(maxsize=1)

    def parent() -> None:
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output, env=env)
        except OSError as exc:
            started.put(exc)
            return
        started.put(process)
        process.wait()

    threading.Thread(target=parent, name="llama-server", daemon=True).start()
    process = started.get()
    if isinstance(process, OSError):
        raise process
    return process


class LlamaServerEngine:
    name = "local"

    def __init__(
        self,
        model_path: Path,
        binary: Path,
        *,
        parallel: int = 4,
        context_tokens: int = 2048,
        threads: int | None = None,
        temperature: float = 0.7,
        repeat_penalty: float = 1.1,
        timeout: float = 60.0,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.model_path = model_path
        self.binary = binary
        self.parallel = parallel
        self.context_tokens = context_tokens  # each conversation's window; the server holds parallel of them
        self.threads = threads or min(2, os.cpu_count() or 1)
        self.temperature = temperature
        self.repeat_penalty = repeat_penalty
        self.timeout = timeout
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._client: OpenAIEngine | None = None
        self._http: httpx.Client | None = None
        self._failed_at: float | None = None  # a start that failed is tried again after RETRY_SECONDS
        self._slots_lock = threading.Lock()
        self._busy: set[int] = set()  # slots writing a reply now
        self._held: dict[int, frozenset[ChatMessage]] = {}  # the messages each slot's cache last held
        self._used: dict[int, float] = {}  # when each slot last finished

    @property
    def server_pid(self) -> int | None:
        """The running server's process id (the owners' status page reads its memory)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def load(self) -> None:
        """Starts the server now rather than at the first message (called in a thread at start-up)."""
        with contextlib.suppress(ChatUnavailable):  # logged; each reply will say so
            self._started()

    def _started(self) -> OpenAIEngine:
        with self._lock:
            if self._client is not None and self._process is not None and self._process.poll() is None:
                return self._client
            if self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_SECONDS:
                raise ChatUnavailable("The chat model could not be started; the owners can find why in the log.")
            if self._process is not None:  # it was running and stopped: start it again
                log.warning("llama-server exited with %s; starting it again", self._process.returncode)
                self._close_clients()
            try:
                self._client = self._start()
                self._failed_at = None
            except (OSError, RuntimeError) as exc:
                self._failed_at = time.monotonic()
                log.error("cannot start llama-server for %s: %s: %s", self.model_path.name, type(exc).__name__, exc)
                raise ChatUnavailable(
                    "The chat model could not be started; the owners can find why in the log."
                ) from exc
            return self._client

    def _start(self) -> OpenAIEngine:
        port = _free_port()
        # Only the bot may use its server, even from another local account; given in the environment, which
        # only the server's own user can read (a command line is there for anyone to see with `ps`).
        key = secrets.token_urlsafe(24)
        command = [
            str(self.binary),
            "--model", str(self.model_path),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--parallel", str(self.parallel),
            "--ctx-size", str(self.context_tokens * self.parallel),
            "--threads", str(self.threads),
            "--threads-batch", str(self.threads),
            "--threads-http", "2",
            "--cache-ram", str(CACHE_RAM_MIB),
            # Read, not mapped: the weights are repacked for the CPU's kernels anyway, and a mapped file's
            # pages would stay resident beside the repacked copy (1,952 MiB against 1,361, as fast).
            "--load-mode", "none",
            "--cache-reuse", "64",  # when old turns leave a prompt, move the rest up instead of reading it again
            "--no-webui",
            "--jinja",  # the model file's own chat template, as the in-process engine uses
            *self.extra_args,
        ]  # fmt: skip
        output = open(self.log_path, "ab") if self.log_path is not None else subprocess.DEVNULL  # noqa: SIM115
        started = time.monotonic()
        try:
            self._process = _spawn(command, output, {**os.environ, "LLAMA_API_KEY": key})
        finally:
            if output is not subprocess.DEVNULL:
                output.close()
        base = f"http://127.0.0.1:{port}"
        self._http = httpx.Client(base_url=base, timeout=10.0, headers={"Authorization": f"Bearer {key}"})
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"llama-server stopped at start with exit code {self._process.returncode}")
            try:
                if self._http.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - started > START_SECONDS:
                self._stop()
                raise RuntimeError(f"llama-server was not ready after {START_SECONDS:.0f} s")
            time.sleep(0.1)
        log.info("llama-server ready in %.1f s on port %d, %d slots", time.monotonic() - started, port, self.parallel)
        self._tokens.cache_clear()
        self._held.clear()  # a new server's slots hold nothing
        return OpenAIEngine(
            model=self.model_path.stem,
            base_url=f"{base}/v1",
            api_key=key,
            context_tokens=self.context_tokens,
            timeout=self.timeout,
            temperature=self.temperature,
            parallel=self.parallel,
            extra_body={"repeat_penalty": self.repeat_penalty, "cache_prompt": True},
        )

    def count_tokens(self, text: str) -> int:
        return self._tokens(text)

    @functools.lru_cache(maxsize=4096)  # noqa: B019  # one engine per bot; turns are counted again each message
    def _tokens(self, text: str) -> int:
        self._started()
        assert self._http is not None
        try:
            response = self._http.post("/tokenize", json={"content": text})
            response.raise_for_status()
            return len(response.json()["tokens"])
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            log.warning("llama-server could not count tokens: %s", exc)
            return OpenAIEngine.count_tokens(self._client, text) if self._client else len(text) // 3 + 1

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int, cancel: threading.Event) -> Iterator[str]:
        client = self._started()
        slot = self._take_slot(messages)
        written: list[str] = []
        try:
            for piece in client.stream(messages, max_tokens=max_tokens, cancel=cancel, extra_body={"id_slot": slot}):
                written.append(piece)
                yield piece
        finally:
            self._free_slot(slot, [*messages, ChatMessage("assistant", "".join(written).strip())])

    def _take_slot(self, messages: Sequence[ChatMessage]) -> int:
        """The free slot that last held most of this prompt's replies, else the one idle longest (-1: let the
        server choose).

        The server itself picks the slot whose cache shares the longest prefix with the prompt; once a
        conversation's oldest turns leave its prompt that prefix is the persona alone, the same in every
        slot, and the conversation would land in any of them and be read again from its first turn.
        Sent back to the slot that holds its turns, its kept turns are moved up in that slot's cache
        (``--cache-reuse``) and only the new message is read.
        """
        wanted = {m for m in messages if m.role == "assistant"}  # the bot's replies are its conversation's own
        with self._slots_lock:
            free = [slot for slot in range(self.parallel) if slot not in self._busy]
            if not free:
                return -1
            slot = max(free, key=lambda s: (len(wanted & self._held.get(s, frozenset())), -self._used.get(s, 0.0)))
            self._busy.add(slot)
            return slot

    def _free_slot(self, slot: int, held: list[ChatMessage]) -> None:
        if slot < 0:
            return
        with self._slots_lock:
            self._busy.discard(slot)
            self._held[slot] = frozenset(m for m in held if m.role == "assistant")
            self._used[slot] = time.monotonic()

    def _stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def _close_clients(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._http is not None:
            self._http.close()
        self._client = self._http = None

    def close(self) -> None:
        with self._lock:
            self._stop()
            self._close_clients()
