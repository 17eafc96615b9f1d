"""Giving freed memory back to the system.

A session's output buffer is 4 MiB by default; when sessions end, their buffers are
freed, but glibc's allocator keeps much of that memory for reuse rather than
returning it, and the server's RSS stays high. Measured in issue 7: 60 sessions
that wrote 4 MiB and ended left +181 MiB with Python's own trimming, +15 MiB after
``malloc_trim(0)``. So, after big buffers are released, the heap is trimmed: once
per ``delay`` at most, in a worker thread (ctypes releases the GIL, and a trim of
a large heap can take milliseconds, too long for the event loop).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import weakref
from typing import Callable, Optional


def _find_malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's malloc_trim, or None where there is none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()
#: The loops that have a trim due (one per loop: tests run many loops in turn).
_due: "weakref.WeakSet[asyncio.AbstractEventLoop]" = weakref.WeakSet()


def trim_heap() -> bool:
    """Return the heap's free memory to the system now (blocking); False if unsupported."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True


def trim_heap_soon(delay: float = 1.0) -> None:
    """Trim the heap ``delay`` seconds from now, off the event loop, unless already due."""
    loop = asyncio.get_running_loop()
    if _malloc_trim is None or loop in _due:
        return

    def run() -> None:
        _due.discard(loop)
        loop.run_in_executor(None, trim_heap)

    _due.add(loop)
    loop.call_later(delay, run)
