"""Reading a session's PTY on the IOLoop: a budget per turn, flow control, the
drain after the program's exit, and what an ended session keeps of its output.

The PTY's fd is non-blocking and watched by an edge-triggered poller (see
``poller``): reads happen when the kernel says there are bytes, a bounded amount
per loop turn (``read_budget``), so that a flooding session yields to the others.

Flow control: a reader (a client polling the output) is attached while it has
polled within ``attach_timeout``, and counts as being at the offset of its last
poll, not at the ``nextOffset`` it was answered (that answer may be lost and asked
for again). A turn reads at most the room the slowest attached reader leaves in
the window (``buffer_size``); with none left, the PTY stops being read and the
program blocks on its write, as on a slow terminal. A poll that brings the
slowest reader under half the window resumes reading; a reader that never polls
again stops holding the program back after ``attach_timeout``. With nobody
attached the window slides.

After the exit the terminal is drained until EIO, then released; the log shrinks
to ``retained_output`` (a lagging reader's part stays one ``attach_timeout``
more) and the heap is trimmed.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import struct
import termios
import time
from typing import Any, Callable, NamedTuple

from tornado.ioloop import IOLoop

from .. import memory
from ..errors import BadRequest
from .input import DEFAULT_CLIENT, InputQueue
from .output import Chunk, OutputLog
from .poller import edge_poller
from .settings import SessionSettings

_READ_SIZE = 65536
#: A PTY read returns at most what the line discipline holds: 4095 bytes
#: (N_TTY_BUF_SIZE - 1).
_LDISC_FULL = 4095
#: After the shell ends, how much longer than the kill's grace its terminal is read
#: while some process still holds it open, in seconds.
_DRAIN_EXTRA = 2.0
#: Room beyond the output window for what a closing terminal still holds (a Linux
#: PTY buffers up to 640 KiB).
_DRAIN_SLACK = 1024 * 1024


def _bytes_waiting(fd: int) -> int:
    """How many bytes a read of ``fd`` would return right now (FIONREAD)."""
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return 0


class _Reader(NamedTuple):
    offset: int
    seen: float  # monotonic time of its last poll


class PtyReader:
    """The output side of a session's terminal: the PTY into the output log.

    It also carries the session's clocks that its reads move: ``last_output``
    (monotonic, the last read from the PTY) and ``last_activity`` (wall clock, also
    moved by a client's poll and, through the session, by a message).
    """

    def __init__(self, session_id: str, output: OutputLog, input_queue: InputQueue,
                 settings: SessionSettings, log: Any, on_closed: Callable[[], None]):
        self.id = session_id
        self.output = output
        self.settings = settings
        self.log = log
        self.last_activity = time.time()
        self.last_output = 0.0  # monotonic time of the last read from the PTY
        self._input = input_queue  # written when the PTY signals room
        self._on_closed = on_closed
        self._loop = IOLoop.current()
        self._poller = edge_poller()
        self._fd = -1
        self._paused = False  # flow control: a reader lags too far behind
        self._eof = False  # the PTY reported EIO: nothing more to read
        self._drain_deadline: float | None = None  # set once the program has ended
        self._drain_timer: asyncio.TimerHandle | None = None
        self._resume_timer: asyncio.TimerHandle | None = None
        self._readers: dict[str, _Reader] = {}

    def start(self, fd: int) -> None:
        """Read the PTY ``fd`` (non-blocking) as its edges come."""
        self._fd = fd
        self._poller.register(fd, self._on_pty)

    def _on_pty(self, fd: int, events: int) -> None:
        if events & IOLoop.WRITE and self._input.pending:
            self._input.flush()
        if events & IOLoop.READ:
            self._read_pty()

    def _read_pty(self) -> None:
        """Read what the PTY holds, within a budget per loop turn (one read by default).

        A PTY read returns at most what the line discipline holds (4095 bytes), so
        a read shorter than asked for leaves it empty; the next bytes it takes wake
        the edge-triggered poller (see ``poller``; a read that freed room also
        restarts the tty's flush worker). Only a read cut by our own size may leave
        bytes behind with no edge to come, and only then is the next turn asked
        for. Reading an empty PTY is what must not happen on the loop: the kernel
        then waits for the tty's flush worker, which on a busy machine waits for a
        CPU (a blind read at the next turn, after every full read, held the loop
        80-90 % of a flood's time at 15-25 % CPU: echo p95 55-120 ms). Reading on
        in the same turn needs to know more came already: FIONREAD tells, but it
        takes the tty's termios lock for writing and so waits for a worker that is
        pushing. So the default budget (``read_budget``, 4 KiB) is one read per
        edge, and FIONREAD is only asked with a larger budget.

        Measured (benchmarks/bench.py, one server, alternating, 3 rounds, 2 CPUs
        under other load): echo in a quiet session while another floods, its reader
        in another process, p95 13 ms (12-18) with one read per turn against 14 ms
        (14-84) with 32 KiB per turn and 21 ms (20-171) on main's 256 KiB, the
        floor of the stack 15.5 ms and terminado 8.7; with nobody reading the flood
        16 ms (11-17) against 30 (14-119) and 38 (13-76). The price is the rate of
        an uncontended flood: 7.7 MB/s against 25 and 20 (terminado 12.8).

        Each turn reads at most the room the slowest attached reader leaves in the
        window; with none left the program is paused (it blocks on its write).
        """
        if self._paused or self._eof or self._fd < 0:
            return
        budget = min(self.settings.read_budget, self._room())
        if budget <= 0:
            self._pause()
            return
        chunks: list[bytes] = []
        got = 0
        while True:
            size = min(_READ_SIZE, budget - got)
            try:
                data = os.read(self._fd, size)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno != errno.EIO:
                    self.log.warning("labkernel: reading session %s failed: %s", self.id, e)
                # EIO: every holder of the terminal has closed it; the exit watcher
                # ends the session.
                self._eof = True
                break
            if not data:
                break
            chunks.append(data)
            got += len(data)
            if len(data) == size:
                # Cut by our own size, not by what the line discipline held: more
                # may be waiting, and no edge will announce it.
                if got >= budget:
                    self._loop.add_callback(self._read_pty)  # next turn, where a full
                    break                                    # window pauses the program
                continue
            # Shorter than asked: the line discipline is empty, and the next bytes
            # it takes bring a new edge. Read on in this turn only where the budget
            # allows a full read and FIONREAD says they came already.
            if budget - got < _LDISC_FULL or not _bytes_waiting(self._fd):
                break
        if chunks:
            self.output.append(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            self.last_activity = time.time()
            self.last_output = time.monotonic()

    # -- readers and flow control ------------------------------------------------

    def read(self, offset: int, max_bytes: int, *, utf8: bool, reader: str = DEFAULT_CLIENT) -> Chunk:
        """Output from ``offset``; records the reader as attached at that offset."""
        try:
            chunk = self.output.read(offset, max_bytes, utf8=utf8)
        except ValueError as e:
            raise BadRequest(f"{e}; ask for the nextOffset of your last answer.") from None
        if not self.output.closed:
            self._readers[reader] = _Reader(offset, time.monotonic())
            if len(self._readers) > self.settings.max_clients:
                del self._readers[min(self._readers, key=lambda k: self._readers[k].seen)]
            self.last_activity = time.time()
            if self._paused:
                self._maybe_resume()
        return chunk

    def _slowest_reader(self) -> int | None:
        """The offset of the attached reader furthest behind, forgetting stale readers."""
        now = time.monotonic()
        stale = [k for k, r in self._readers.items() if now - r.seen > self.settings.attach_timeout]
        for key in stale:
            del self._readers[key]
        return min((r.offset for r in self._readers.values()), default=None)

    def _room(self) -> int:
        """How many bytes may be read before the log would drop one an attached reader
        has not had yet (unbounded with nobody attached: the window slides)."""
        slowest = self._slowest_reader()
        if slowest is None:
            return self.settings.read_budget
        return self.settings.buffer_size - (self.output.end - slowest)

    def _pause(self) -> None:
        self._paused = True
        self._check_again_when_a_reader_detaches()

    def _check_again_when_a_reader_detaches(self) -> None:
        # A lagging reader that never polls again stops being attached after
        # attach_timeout; without this the program would stay paused for good.
        self._pause_cancel()
        oldest = min((r.seen for r in self._readers.values()), default=time.monotonic())
        delay = max(0.0, oldest + self.settings.attach_timeout - time.monotonic()) + 0.01
        self._resume_timer = asyncio.get_running_loop().call_later(delay, self._on_resume_timer)

    def _on_resume_timer(self) -> None:
        self._resume_timer = None
        self._maybe_resume()

    def _pause_cancel(self) -> None:
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None

    def _maybe_resume(self) -> None:
        if not self._paused or self._fd < 0:
            return
        slowest = self._slowest_reader()
        low_water = self.settings.buffer_size // 2
        if slowest is None or self.output.end - slowest <= low_water:
            self._pause_cancel()
            self._paused = False
            # No new edge will come for bytes already waiting: go and read them.
            self._loop.add_callback(self._read_pty)
        else:
            self._check_again_when_a_reader_detaches()

    # -- after the exit ----------------------------------------------------------

    def drain(self, deadline: float | None = None) -> None:
        """Read everything the session's processes wrote, then release the PTY and
        close the output (``on_closed``).

        The program's exit is seen before its last output has crossed the terminal:
        what FIONREAD reports then is not all there is. So the PTY is read until it
        reports EIO (no process holds the terminal any more, and it is empty), a
        budget per loop turn, on edges and a short timer; a job that keeps the
        terminal open past the kill ends the reading at a deadline (by default the
        kill's grace and ``_DRAIN_EXTRA`` from now; ``deadline`` takes what the
        terminal holds now and closes).
        """
        self._pause_cancel()
        self._drain_deadline = (time.monotonic() + self.settings.kill_grace + _DRAIN_EXTRA
                                if deadline is None else deadline)
        # A reader that flow control held back lags by up to a window; what the
        # terminal still holds fits in the slack, so that reader loses nothing.
        self.output.limit = self.settings.buffer_size + _DRAIN_SLACK
        self._poller.unregister(self._fd)
        self._poller.register(self._fd, lambda fd, events: self._drain())
        self._drain()

    def _drain(self) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        if self._fd < 0:
            return  # closed already
        assert self._drain_deadline is not None
        budget = self.settings.read_budget
        while budget > 0 and not self._eof:
            slowest = self._slowest_reader()
            if slowest is not None and self.output.end - slowest > self.output.limit - _READ_SIZE:
                break  # wait for that reader to poll rather than drop its bytes
            try:
                data = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                break  # a process still holds the terminal open: wait for it
            except OSError:
                data = b""  # EIO: no holder is left and nothing more will come
            if not data:
                self._eof = True
                break
            self.output.append(data)
            budget -= len(data)
        if self._eof or time.monotonic() >= self._drain_deadline:
            self._close()
            return
        delay = 0.0 if budget <= 0 else 0.05
        self._drain_timer = asyncio.get_running_loop().call_later(delay, self._drain)

    def _close(self) -> None:
        """Let the PTY go, close the output and keep its tail (``on_closed``)."""
        self._pause_cancel()
        self._poller.unregister(self._fd)
        self._fd = -1
        slowest = self._slowest_reader()
        self._readers.clear()
        self.output.close()
        self._retain_output(slowest)
        self._on_closed()

    def _retain_output(self, slowest: int | None) -> None:
        """Shrink an ended session's output to its tail, giving its memory back.

        A reader that was still behind keeps its share for one attach timeout, time
        enough for it to poll the rest; then the tail is all that is left.
        """
        tail = max(1, self.settings.retained_output)
        needed = 0 if slowest is None else self.output.end - slowest
        self.output.shrink(max(tail, min(needed, self.output.limit)))
        if needed > tail:
            self._loop.call_later(self.settings.attach_timeout, self._release_output)
        memory.trim_heap_soon()

    def _release_output(self) -> None:
        self.output.shrink(max(1, self.settings.retained_output))
        memory.trim_heap_soon()
