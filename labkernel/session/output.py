"""The output log: one session's output as a byte stream with absolute offsets.

Offsets count bytes from the first byte the program ever wrote, so a client that
always asks for the ``nextOffset`` it was given sees every byte once, in order,
whatever happened to its connection in between. The log keeps a sliding window
``[base, end)`` of at most ``limit`` bytes; whether the window may slide past a
reader is the session's decision (flow control), not the log's.

This module is a plain data structure: no I/O and no Tornado, only asyncio futures
for the long-poll waiters, so that it can be property-tested on its own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import NamedTuple


class Chunk(NamedTuple):
    """What a read returns: ``data`` starts at ``offset``; ask for ``next_offset`` next."""

    offset: int
    next_offset: int
    data: bytes
    truncated: bool


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def utf8_char_size(lead: int) -> int:
    """The length of the UTF-8 character a lead byte announces (1 for ASCII or invalid)."""
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 1


def incomplete_utf8_tail(data: bytes | bytearray, lo: int = 0, hi: int | None = None) -> int:
    """How many bytes at the end of ``data[lo:hi]`` start a UTF-8 character not yet complete.

    Only a valid lead byte followed by fewer continuation bytes than it announces
    counts; anything else (ASCII, a complete character, invalid bytes) is 0, because
    waiting for more bytes could not change how it decodes.
    """
    hi = len(data) if hi is None else hi
    for back in range(1, min(4, hi - lo) + 1):
        byte = data[hi - back]
        if byte & 0xC0 != 0x80:  # not a continuation byte: this is where it starts
            return back if utf8_char_size(byte) > back else 0
    return 0


#: Bytes per block of an output log's storage.
BLOCK = 64 * 1024


class OutputLog:
    """A bounded append-only byte stream with absolute offsets and long-poll waiters.

    The bytes are kept in blocks of ``block`` bytes (all full but the last), not in
    one buffer: a 4 MiB bytearray whose window slides is reallocated and copied
    whole every 512 KiB of output (its over-allocation), which cost 2-4 ms of CPU
    inside one PTY read during a flood. Blocks are appended and dropped whole, and
    the block holding an offset is found by arithmetic.
    """

    def __init__(self, limit: int, *, block: int = BLOCK):
        if limit < 1:
            raise ValueError("the output log needs room for at least one byte")
        self.limit = limit
        self.base = 0
        self.closed = False
        self._block = block
        self._blocks: deque[bytearray] = deque()
        self._start = 0  # offset of the first byte of _blocks[0] (<= base)
        self._end = 0
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def end(self) -> int:
        """The offset one past the newest byte: the number of bytes ever appended."""
        return self._end

    def append(self, data: bytes) -> None:
        """Add output, dropping the oldest bytes beyond the limit, and wake waiters."""
        if not data:
            return
        blocks, size = self._blocks, self._block
        with memoryview(data) as view:
            at = 0
            while at < len(view):
                if not blocks or len(blocks[-1]) >= size:
                    blocks.append(bytearray())
                last = blocks[-1]
                take = min(size - len(last), len(view) - at)
                last += view[at:at + take]
                at += take
        self._end += len(data)
        self._drop_before(self._end - self.limit)
        self._wake()

    def shrink(self, limit: int) -> None:
        """Keep only the newest ``limit`` bytes from now on; offsets are unchanged.

        The kept bytes move to blocks of their own, so that no partly dropped block
        holds memory for what was dropped.
        """
        if limit < 1:
            raise ValueError("the output log needs room for at least one byte")
        self.limit = limit
        self._drop_before(self._end - limit)
        kept = self._slice(self.base, self._end)
        self._blocks.clear()
        self._start = self._end = self.base
        self.append(kept)  # wakes nobody new: the waiters were woken for these bytes

    def _drop_before(self, offset: int) -> None:
        if offset <= self.base:
            return
        self.base = offset
        blocks = self._blocks
        while blocks and self._start + len(blocks[0]) <= offset:
            self._start += len(blocks.popleft())

    def _slice(self, lo: int, hi: int) -> bytes:
        """The bytes from offset ``lo`` to ``hi`` (both kept), copied once."""
        if hi <= lo:
            return b""
        size, blocks = self._block, self._blocks
        first = (lo - self._start) // size
        at = (lo - self._start) % size
        parts = []
        want = hi - lo
        index = first
        while want > 0:
            block = blocks[index]
            with memoryview(block) as view:
                part = view[at:at + want]
                parts.append(bytes(part))
                want -= len(part)
            index, at = index + 1, 0
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """No more output will come: wake every waiter so long polls answer now."""
        self.closed = True
        self._wake()

    def read(self, offset: int, max_bytes: int, *, utf8: bool = False) -> Chunk:
        """Return up to ``max_bytes`` from ``offset`` (or the oldest byte kept). Never blocks.

        With ``utf8``, the answer never ends inside a character while more output may
        come, and always makes progress: if ``max_bytes`` is smaller than the first
        whole character, that one character is returned.
        """
        if offset < 0 or offset > self.end:
            raise ValueError(f"offset {offset} is outside the output (0 to {self.end})")
        start = max(offset, self.base)
        stop = min(start + max_bytes, self.end)
        if utf8 and stop > start:
            tail = incomplete_utf8_tail(self._slice(max(start, stop - 4), stop))
            if tail == stop - start:
                # The first character itself is cut: by max_bytes (return it whole),
                # or by the end of a running session's output (return nothing yet).
                stop = self._first_char_stop(start)
            elif stop < self.end or not self.closed:
                # Once the log is closed, a cut character at its very end is final
                # and decodes as U+FFFD; otherwise the next read starts at it.
                stop -= tail
        return Chunk(start, stop, self._slice(start, stop), start > offset)

    def _first_char_stop(self, start: int) -> int:
        """Where the character at ``start`` ends, or ``start`` if it may still complete."""
        buf = self._slice(start, min(start + 4, self._end))
        size = utf8_char_size(buf[0])
        n = 1
        while n < size and n < len(buf) and buf[n] & 0xC0 == 0x80:
            n += 1
        if n == size or n < len(buf) or self.closed:
            # Complete, or broken by a byte that is no continuation (it decodes as
            # U+FFFD whatever comes next), or final.
            return start + n
        return start

    def wait(self, offset: int, timeout: float) -> asyncio.Future[None]:
        """A future resolved once output past ``offset`` exists, the log closes, or
        ``timeout`` seconds pass. Cancel it when the client goes away: a cancelled or
        finished waiter removes itself, so aborted polls leave nothing behind.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if self.end > offset or self.closed or timeout <= 0:
            fut.set_result(None)
            return fut
        self._waiters.add(fut)
        timer = loop.call_later(timeout, _resolve, fut)

        def forget(done: asyncio.Future[None]) -> None:
            timer.cancel()
            self._waiters.discard(done)

        fut.add_done_callback(forget)
        return fut

    @property
    def waiter_count(self) -> int:
        """How many long polls are waiting on this log (for tests and diagnostics)."""
        return len(self._waiters)

    def _wake(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, set()
            for fut in waiters:
                _resolve(fut)
