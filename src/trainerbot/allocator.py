"""glibc's allocator told to give memory back: the bot's memory then levels off under load.

Each chat reply saves a model state of several MB from a worker thread. By default glibc
raises its mmap threshold after such blocks are freed and serves later ones from per-thread
arenas, which hold on to the memory: over a 50-user load run the bot's memory kept growing.
With the threshold fixed at 1 MB, two arenas, and a trim after each reply, it levels off.
On other C libraries these calls are skipped.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # mallopt parameters, from glibc's malloc.h


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


def return_large_blocks_to_the_system() -> None:
    """Blocks of 1 MB and more are mapped on their own and unmapped when freed; two arenas at most."""
    if _LIBC is None:
        log.debug("not glibc: the allocator is left as it is")
        return
    _LIBC.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    _LIBC.mallopt(_M_ARENA_MAX, 2)


def trim() -> None:
    """Hands free pages back to the system (a few milliseconds; after each reply)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
