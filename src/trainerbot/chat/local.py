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
import ctypes
import io
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import llama_cpp
from llama_cpp import Llama, LlamaRAMCache, llama_set_n_threads
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from trainerbot import allocator
from trainerbot.chat.engine import CUT_SHORT, ChatMessage
from trainerbot.errors import ChatUnavailable

log = logging.getLogger(__name__)

_llama_log = logging.getLogger("llama_cpp")
_log_callback = None  # kept referenced: llama.cpp holds a pointer to it


def _route_llama_logs() -> None:
    """Sends llama.cpp's messages to the log (at DEBUG) instead of straight to stderr."""
    global _log_callback
    if _log_callback is not None:
        return

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        _llama_log.debug("%s", text.decode("utf-8", errors="replace").rstrip())

    _log_callback = callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


PROBE = 16  # tokens of the new prompt looked for in what llama.cpp holds
WORTH_SHIFTING = 64  # fewer reusable tokens than this: let llama.cpp read them again


def _reuse(held: Sequence[int], tokens: Sequence[int]) -> tuple[int, int, int]:
    """How much of the prompt ``tokens`` a cache holding ``held`` already has.

    Returns (prefix, at, run): the common prefix, and where in ``held`` the longest run of
    the tokens that follow it sits (``at`` is -1 when no run is worth moving up).
    """
    prefix = 0
    while prefix < min(len(held), len(tokens)) and held[prefix] == tokens[prefix]:
        prefix += 1
    probe = list(tokens[prefix : prefix + PROBE])
    best, best_at = 0, -1
    if prefix < len(held) and len(probe) == PROBE:
        for at in range(prefix + 1, len(held) - PROBE + 1):
            if held[at] == probe[0] and list(held[at : at + PROBE]) == probe:
                run = PROBE
                while at + run < len(held) and prefix + run < len(tokens) and held[at + run] == tokens[prefix + run]:
                    run += 1
                if run > best:
                    best, best_at = run, at
    return (prefix, best_at, best) if best >= WORTH_SHIFTING else (prefix, -1, 0)


def _covered(held: Sequence[int], tokens: Sequence[int]) -> int:
    prefix, _, run = _reuse(held, tokens)
    return prefix + run


def _shift_context(llama, tokens: list[int]) -> int:
    """llama.cpp's context shift, for a prompt whose oldest turns were dropped.

    When the history outgrows its budget the prompt loses turns between the persona and
    the rest, and llama.cpp, which reuses only a common prefix, would read the whole
    rest again (seconds). Instead the dropped span is removed from its cache and what
    follows is moved up, as llama.cpp's own server does when its context fills. The kept
    turns were read with the dropped ones before them; the model does not mind (a test
    checks it answers as after a fresh read). Returns how many tokens were moved.
    """
    held = llama._input_ids.tolist()  # what the cache holds (input_ids is the whole window)
    prefix, at, run = _reuse(held, tokens)
    if at < 0:
        return 0
    size, gap = len(held), at - prefix
    context = llama._ctx
    if not context.kv_cache_seq_rm(0, prefix, at):
        return 0
    context.kv_cache_seq_shift(0, at, size, -gap)
    llama.input_ids[prefix : size - gap] = held[at:size]
    llama.n_tokens = size - gap
    log.debug("context shift: dropped %d tokens, kept %d", gap, run)
    return run


def _bring_back(llama, tokens: list[int]) -> None:
    """Loads the cached state that holds the most of the prompt, when the live one holds less.

    llama-cpp-python does this itself for a common prefix only; a conversation whose old
    turns were just dropped shares little more than its persona with any state.
    """
    cache = llama.cache
    if cache is None:
        return
    live = _covered(llama._input_ids.tolist(), tokens)
    best, chosen = live, None
    for state in cache.cache_state.values():
        covered = _covered(state.input_ids[: state.n_tokens].tolist(), tokens)
        if covered > best:
            best, chosen = covered, state
    if chosen is not None and best > live + WORTH_SHIFTING:
        llama.load_state(chosen)


class ConversationStateCache(LlamaRAMCache):
    """A RAM cache of model states holding one state per conversation.

    llama-cpp-python saves a state after every reply; a conversation's newer state starts
    with everything its older one holds, so the older one is dropped rather than left to
    crowd out other conversations.
    """

    def __setitem__(self, key: Sequence[int], value: llama_cpp.llama.LlamaState) -> None:
        key = tuple(key)
        for old in list(self.cache_state):
            shared = next((i for i, (a, b) in enumerate(zip(old, key, strict=False)) if a != b), len(old))
            if shared >= 0.9 * len(old):
                del self.cache_state[old]
        # A state carries a copy of the logits buffer (n_batch rows of the vocabulary: 12.6 MB here)
        # that nothing reads unless every token's logits are kept; one row keeps load_state working.
        value.scores = value.scores[-1:].copy()
        super().__setitem__(key, value)

    @property
    def cache_size(self) -> int:
        """Every byte the states hold, not only llama.cpp's part (the base class counts that alone)."""
        return sum(s.llama_state_size + s.scores.nbytes + s.input_ids.nbytes for s in self.cache_state.values())


class LocalEngine:
    name = "local"
    parallel = 1  # one llama.cpp context, one reply at a time

    def __init__(
        self,
        model_path: Path,
        *,
        context_tokens: int = 2048,
        threads: int | None = None,
        busy: Callable[[], bool] = lambda: False,
        temperature: float = 0.7,
        repeat_penalty: float = 1.1,
        cache_bytes: int = 256 << 20,
    ) -> None:
        self.model_path = model_path
        self.context_tokens = context_tokens
        self.temperature = temperature
        self.repeat_penalty = repeat_penalty
        self._threads = threads  # None: two when idle, one when busy
        self._busy = busy
        self._cache_bytes = cache_bytes
        self._lock = threading.Lock()  # one generation at a time: a llama.cpp context is not shareable
        self._load_lock = threading.Lock()
        self._llama: Llama | None = None
        self._load_error: str | None = None
        self._formatter = None  # the model file's chat template, built at the first reply

    def _model(self) -> Llama:
        with self._load_lock:
            return self._load()

    def _load(self) -> Llama:
        if self._llama is None and self._load_error is None:
            try:
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
                    self._llama.set_cache(ConversationStateCache(capacity_bytes=self._cache_bytes))
                log.info("loaded chat model %s in %.2f s", self.model_path.name, time.perf_counter() - started)
            except Exception as exc:
                self._load_error = f"{type(exc).__name__}: {exc}"
                log.error("cannot load the chat model %s: %s", self.model_path, self._load_error)
        if self._llama is None:
            raise ChatUnavailable("The chat model could not be loaded; the owners can find why in the log.")
        return self._llama

    @property
    def cache_fill(self) -> float:
        """How full the cache of conversation states is, 0 to 1: it grows to its cap, then stays there."""
        cache = self._llama.cache if self._llama is not None else None
        return cache.cache_size / self._cache_bytes if cache is not None and self._cache_bytes else 1.0

    def load(self) -> None:
        """Loads the model now rather than at the first message (called in a thread at start-up)."""
        with contextlib.suppress(ChatUnavailable):  # already logged; each reply will say so
            self._model()

    def count_tokens(self, text: str) -> int:
        # Tokenizing reads only the vocabulary, so it need not wait for a reply being written.
        return len(self._model().tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _set_threads(self, llama: Llama) -> int:
        threads = self._threads or (1 if self._busy() else min(2, os.cpu_count() or 1))
        llama_set_n_threads(llama._ctx.ctx, threads, threads)
        return threads

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int, cancel: threading.Event) -> Iterator[str]:
        with self._lock:
            llama = self._model()
            threads = self._set_threads(llama)
            log.debug("generating with %d thread(s)", threads)
            try:
                prompt = self._prompt(llama, messages)
                if prompt is None:  # no chat template in the file: llama-cpp-python's default format
                    chunks = llama.create_chat_completion(
                        [m.as_dict() for m in messages], stream=True, **self._sampling(max_tokens)
                    )
                    pieces = ((c["choices"][0]["delta"].get("content"), c["choices"][0]) for c in chunks)
                else:
                    tokens, stop, criteria = prompt
                    _bring_back(llama, tokens)
                    _shift_context(llama, tokens)
                    chunks = llama.create_completion(
                        tokens, stream=True, stop=stop, stopping_criteria=criteria, **self._sampling(max_tokens)
                    )
                    pieces = ((c["choices"][0]["text"], c["choices"][0]) for c in chunks)
                for piece, choice in pieces:
                    if cancel.is_set():
                        chunks.close()
                        return
                    if piece:
                        yield piece
                    if choice.get("finish_reason") == "length":
                        yield CUT_SHORT
            except Exception as exc:
                log.exception("the local chat model failed")
                raise ChatUnavailable(
                    "The chat model failed while writing; the owners can find why in the log."
                ) from exc
            finally:
                allocator.trim()  # the reply's saved state and buffers were just freed

    def _sampling(self, max_tokens: int) -> dict[str, float | int]:
        # repeat_penalty: small models loop without it (bench/chat_quality.py chose the default).
        return {"max_tokens": max_tokens, "temperature": self.temperature, "repeat_penalty": self.repeat_penalty}

    def _prompt(self, llama: Llama, messages: Sequence[ChatMessage]):  # -> (tokens, stop, criteria) or None
        """The prompt as tokens, formatted by the model file's own chat template (as llama-cpp-python does)."""
        if self._formatter is None:
            template = llama.metadata.get("tokenizer.chat_template")
            if not template:
                return None
            eos, bos = llama.token_eos(), llama.token_bos()
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
                bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
                stop_token_ids=[eos],
            )
        result = self._formatter(messages=[m.as_dict() for m in messages])
        tokens = llama.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        stop = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        return tokens, stop, result.stopping_criteria

    def close(self) -> None:
        with self._lock, self._load_lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None
