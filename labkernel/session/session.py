"""One lab session: a shell on a PTY, its output log, its input, its processes.

The PTY's file descriptor is non-blocking and watched by the IOLoop: reads happen
when the kernel says there are bytes, a bounded amount per loop turn, and stop
altogether while an attached reader lags too far behind (the program then blocks
on its write, as on a slow terminal). The shell's exit is watched through a pidfd,
so it is seen even while background jobs keep the PTY open.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import io
import os
import secrets
import signal
import struct
import termios
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, NamedTuple

import pexpect
import ptyprocess
from tornado.ioloop import IOLoop

from .. import memory
from ..containment import Enclosure, ScanEnclosure
from ..errors import BadRequest, PayloadTooLarge, SessionEnded, SignalRefused
from .output import Chunk, OutputLog
from .poller import edge_poller

#: Signals a client may send to the foreground program, by name.
ALLOWED_SIGNALS = {
    name: getattr(signal, name)
    for name in ("SIGINT", "SIGQUIT", "SIGTERM", "SIGKILL", "SIGHUP", "SIGTSTP", "SIGCONT")
}

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
_DEFAULT_CLIENT = ""


def isoformat(timestamp: float) -> str:
    """A Unix time as the contract's ISO 8601 UTC string."""
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _reset_signals() -> None:
    """Run in the child before exec: start from default signal dispositions.

    Ignored signals survive exec; a server started with ``&`` from a script ignores
    SIGINT, and without this Ctrl-C would do nothing in the lab.
    """
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE, signal.SIGTERM,
                signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _bytes_waiting(fd: int) -> int:
    """How many bytes a read of ``fd`` would return right now (FIONREAD)."""
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return 0


class _PtyProcess(ptyprocess.PtyProcess):
    """A PtyProcess without the BufferedRWPair ptyprocess wraps the PTY in.

    That pair holds two 8 KiB buffers per session, and we never use them: the PTY
    is read and written with ``os.read``/``os.write`` on the fd. ptyprocess only
    needs ``fileobj`` for ``close()``, which a raw FileIO (owning the fd, as the
    pair did) serves as well. The pair is built on a duplicate of the fd, so that
    closing it at once leaves the PTY open.
    """

    def __init__(self, pid: int, fd: int):
        dup = os.dup(fd)
        try:
            super().__init__(pid, dup)
        except BaseException:
            os.close(dup)
            raise
        self.fileobj.close()  # closes the duplicate, frees the buffers
        self.fd = fd
        self.fileobj = io.open(fd, "r+b", buffering=0)


class _Spawn(pexpect.spawn):
    """pexpect.spawn on a ``_PtyProcess``."""

    def _spawnpty(self, args: list[str], **kwargs: Any) -> ptyprocess.PtyProcess:
        return _PtyProcess.spawn(args, **kwargs)


@dataclass
class SessionSettings:
    """The manager's limits that each session applies."""

    buffer_size: int
    read_budget: int
    attach_timeout: float
    kill_grace: float
    kill_timeout: float
    input_limit: int
    max_clients: int
    retained_output: int = 64 * 1024


class Accepted(NamedTuple):
    """The answer to a message: the output offset when it took effect."""

    offset: int
    duplicate: bool


class _Reader(NamedTuple):
    offset: int
    seen: float  # monotonic time of its last poll


class Session:
    """A shell process on a PTY with the output log and input queue of one lab session."""

    def __init__(self, lab: Any, *, rows: int, cols: int, lifetime: float,
                 settings: SessionSettings, log: Any):
        self.id = secrets.token_urlsafe(16)
        self.lab = lab
        self.rows, self.cols = rows, cols
        self.status = "starting"
        self.exit_code: int | None = None
        self.created_at = time.time()
        self.expires_at = self.created_at + lifetime
        self.last_activity = self.created_at
        self.last_output = 0.0  # monotonic time of the last read from the PTY
        self.ended_at: float | None = None
        self.output = OutputLog(settings.buffer_size)
        self.settings = settings
        self.log = log
        self._loop = IOLoop.current()
        self._proc: pexpect.spawn | None = None
        self._fd = -1
        self._pidfd = -1
        self._paused = False  # flow control: a reader lags too far behind
        self._eof = False  # the PTY reported EIO: nothing more to read
        self._drain_deadline: float | None = None  # set once the shell is reaped
        self._drain_timer: asyncio.TimerHandle | None = None
        self._resume_timer: asyncio.TimerHandle | None = None
        self._pending_input = bytearray()
        self._readers: dict[str, _Reader] = {}
        self._seqs: OrderedDict[str, int] = OrderedDict()
        self._closed = asyncio.get_running_loop().create_future()
        self._stopping: asyncio.Task[None] | None = None
        self._enclosure: Enclosure | None = None
        #: Pids that would not die when the session ended (see ``_terminate``).
        self.unkilled: list[int] = []
        #: Done once what the containment made for the session (cgroups) is removed.
        self.released: asyncio.Future[None] | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self, argv: list[str], env: dict[str, str], cwd: str,
              enclosure: Enclosure | None = None) -> None:
        """Spawn ``argv`` on a new PTY and start watching it. Raises OSError on failure.

        ``enclosure`` (see ``containment``) wraps the argv and holds every process the
        session starts; by default the last-resort scan.
        """
        self._enclosure = enclosure = enclosure or ScanEnclosure(self.id, max_processes=0, log=self.log)
        env.update(enclosure.env())
        argv, preexec = enclosure.wrap(argv, cwd), enclosure.preexec

        def prepare_child() -> None:
            _reset_signals()
            preexec()

        # On failure the caller ends the session with ``end_unstarted``, which ends
        # the enclosure too (what a lab's setup left in it).
        self._proc = _Spawn(
            argv[0], argv[1:], env=env, cwd=cwd,
            dimensions=(self.rows, self.cols), preexec_fn=prepare_child, encoding=None,
        )
        enclosure.started(self._proc.pid)
        # The environment is only needed to spawn; pexpect and ptyprocess keep it
        # (a dict and some 80 strings per session): let it go.
        self._proc.env = self._proc.ptyproc.env = None
        # pexpect's close() sleeps; we never call it, and keep it quick if GC does.
        # Closing a shell that would not die tries to terminate it: no sleeps there either.
        self._proc.delayafterclose = self._proc.ptyproc.delayafterclose = 0
        self._proc.delayafterterminate = self._proc.ptyproc.delayafterterminate = 0
        self._fd = self._proc.child_fd
        os.set_blocking(self._fd, False)
        self._poller = edge_poller()
        self._poller.register(self._fd, self._on_pty)
        self._watch_exit()
        self.status = "running"

    def end_unstarted(self, status: str, reason: str = "") -> None:
        """End a session whose program never ran (``failed``, or stopped during its
        setup); its output says why. What its setup started in its enclosure is
        ended in the background (``stop`` waits for that)."""
        self.status = status
        self.ended_at = time.time()
        if reason:
            self.output.append(reason.encode() + b"\r\n")
        self.output.close()
        if self._enclosure is not None and self._stopping is None:
            self._stopping = asyncio.ensure_future(self._end_enclosure(time.monotonic() + self.settings.kill_timeout))
        if not self._closed.done():
            self._closed.set_result(None)

    @property
    def closed(self) -> bool:
        """True once the shell is reaped and the terminal released."""
        return self._closed.done()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self.status == "running"

    async def stop(self, status: str = "stopped") -> None:
        """End the session and every process it started; return once all are gone."""
        if self.running:
            self.status = status
        if self._stopping is None and not self._closed.done():
            self._stopping = asyncio.ensure_future(self._terminate())
        if self._stopping is not None:
            await asyncio.shield(self._stopping)
        await asyncio.shield(self._closed)

    async def _terminate(self) -> None:
        """End every process of the session; by ``kill_timeout`` the session ends anyway.

        What could not be killed by then (stuck in the kernel, or not the server's
        to signal) is logged and kept in ``unkilled``.
        """
        deadline = time.monotonic() + self.settings.kill_timeout
        await self._end_enclosure(deadline, release=False)
        # The shell is dead (or will not die); the exit watcher reaps it and closes the session.
        await self._closed_or_poll(deadline)
        assert self._enclosure is not None
        # Not awaited here: a stop answers once the processes are gone, not their cgroups.
        self.released = asyncio.ensure_future(self._enclosure.release())

    async def _end_enclosure(self, deadline: float, release: bool = True) -> None:
        """End every process in the enclosure by ``deadline``; keep what would not die
        in ``unkilled``. With ``release``, then release it in the background."""
        assert self._enclosure is not None
        try:
            # The enclosure keeps the deadline itself; this only guards against a
            # /proc read that hangs in its executor.
            self.unkilled = await asyncio.wait_for(
                self._enclosure.end(self.settings.kill_grace, deadline), self.settings.kill_timeout + 1)
        except Exception:
            self.log.exception("labkernel: ending the processes of session %s failed", self.id)
        if self.unkilled:
            self.log.warning("labkernel: session %s: could not kill pid(s) %s within %ss",
                             self.id, ", ".join(map(str, self.unkilled)), self.settings.kill_timeout)
        if release:
            self.released = asyncio.ensure_future(self._enclosure.release())

    async def _closed_or_poll(self, deadline: float) -> None:
        while not self._closed.done():
            self._on_exit()
            if self._closed.done():
                break
            if time.monotonic() >= deadline:
                self._abandon()
                break
            await asyncio.sleep(0.01)

    def _abandon(self) -> None:
        """The deadline passed: end the session anyway, and reap the shell if it ever exits."""
        if self._drain_deadline is None:  # the shell itself would not die
            self.ended_at = time.time()
            if self._pidfd >= 0:
                self._loop.remove_handler(self._pidfd)
                self._loop.add_handler(self._pidfd, lambda fd, events: self._reap_late(), IOLoop.READ)
            if not self.unkilled:
                self.unkilled = [self.pid]
        # Take what the terminal holds now and close: a process that would not die
        # and keeps the terminal open must not keep the session open too.
        self._drain_and_close(deadline=time.monotonic())

    def _reap_late(self) -> None:
        assert self._proc is not None
        with contextlib.suppress(Exception):
            if self._proc.ptyproc.isalive():
                return
        self._loop.remove_handler(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1

    def _watch_exit(self) -> None:
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            # No pidfd (old kernel, not Linux): fall back to polling.
            self._poll_exit()
            return
        self._loop.add_handler(self._pidfd, lambda fd, events: self._on_exit(), IOLoop.READ)

    def _poll_exit(self) -> None:
        if not self._on_exit():
            self._loop.call_later(0.2, self._poll_exit)

    def _on_exit(self) -> bool:
        """Reap the shell if it has ended and close the session. True once closed."""
        if self._closed.done():
            return True
        if self._drain_deadline is not None:
            return False  # reaped; the terminal is being emptied
        assert self._proc is not None
        try:
            if self._proc.isalive():  # waitpid with WNOHANG: never blocks
                return False
        except pexpect.ExceptionPexpect:
            pass  # already reaped by someone else: treat as ended, status unknown
        proc = self._proc
        if proc.exitstatus is not None:
            self.exit_code = proc.exitstatus
        elif proc.signalstatus is not None:
            self.exit_code = 128 + proc.signalstatus
        if self.running:
            self.status = "exited"
        self.ended_at = time.time()
        if self._pidfd >= 0:
            self._loop.remove_handler(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        self._drain_and_close()
        if self._stopping is None:
            # The shell exited on its own; jobs it left behind end with it.
            self._stopping = asyncio.ensure_future(self._terminate())
        return self._closed.done()

    def _drain_and_close(self, deadline: float | None = None) -> None:
        """Read everything the session's processes wrote, then release the PTY.

        The shell's exit is seen before its last output has crossed the terminal:
        what FIONREAD reports then is not all there is. So the PTY is read until it
        reports EIO (no process holds the terminal any more, and it is empty), a
        budget per loop turn, on edges and a short timer; a job that keeps the
        terminal open past the kill ends the reading at a deadline.
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
        if self._closed.done():
            return
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
            self._close_pty()
            return
        delay = 0.0 if budget <= 0 else 0.05
        self._drain_timer = asyncio.get_running_loop().call_later(delay, self._drain)

    def _close_pty(self) -> None:
        """Release the PTY and close the session's output."""
        self._pause_cancel()
        self._poller.unregister(self._fd)
        with contextlib.suppress(Exception):
            assert self._proc is not None
            self._proc.close(force=False)  # the child is reaped: this only closes the fd
        self._fd = -1
        self._pending_input.clear()
        slowest = self._slowest_reader()
        self._readers.clear()
        self.output.close()
        self._retain_output(slowest)
        self._closed.set_result(None)

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

    def on_close(self, callback: Callable[["Session"], None]) -> None:
        """Call ``callback(session)`` once the session has closed (soon, if it has)."""
        self._closed.add_done_callback(lambda _: callback(self))

    # -- reading the PTY and flow control ----------------------------------------

    def _on_pty(self, fd: int, events: int) -> None:
        if events & IOLoop.WRITE and self._pending_input:
            self._flush_input()
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

    # -- what clients call -------------------------------------------------------

    def read(self, offset: int, max_bytes: int, *, utf8: bool, reader: str = _DEFAULT_CLIENT) -> Chunk:
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

    def write(self, data: bytes, *, client: str | None = None, seq: int | None = None) -> Accepted:
        """Write input to the PTY as typed; queued if the program is not reading."""
        return self._deliver(client, seq, lambda: self._write(data))

    def resize(self, rows: int, cols: int, *, client: str | None = None, seq: int | None = None) -> Accepted:
        """Set the terminal size; the kernel tells the foreground program (SIGWINCH)."""
        def apply() -> None:
            assert self._proc is not None
            self._proc.setwinsize(rows, cols)
            self.rows, self.cols = rows, cols
        return self._deliver(client, seq, apply)

    def signal(self, name: str, *, client: str | None = None, seq: int | None = None) -> Accepted:
        """Send a signal to the terminal's foreground process group, as a key would."""
        signum = ALLOWED_SIGNALS.get(name)
        if signum is None:
            raise BadRequest(f"{name!r} is not a signal you can send; use one of {', '.join(ALLOWED_SIGNALS)}.")

        def apply() -> None:
            try:
                pgrp = os.tcgetpgrp(self._fd)
            except OSError:
                pgrp = self.pid
            try:
                os.killpg(pgrp, signum)
            except ProcessLookupError:
                pass
            except PermissionError:
                # A program that changed its user (su, sudo) may not be signalled by
                # the server; the terminal's own Ctrl-C still reaches it.
                raise SignalRefused(
                    f"The program in the foreground runs as another user, so the server may not "
                    f"send it {name}; send Ctrl-C as data (\\u0003) instead.") from None
        return self._deliver(client, seq, apply)

    def _deliver(self, client: str | None, seq: int | None, apply: Any) -> Accepted:
        """Apply a message once per (client, seq): a retried message is acknowledged only."""
        key = _DEFAULT_CLIENT if client is None else client
        offset = self.output.end
        if seq is not None and self._seqs.get(key, -1) >= seq:
            self._seqs.move_to_end(key)
            return Accepted(offset, True)
        if not self.running:
            raise SessionEnded(f"This session has {self.status}; start a new one to continue.")
        apply()
        self.last_activity = time.time()
        if seq is not None:
            self._seqs[key] = seq
            self._seqs.move_to_end(key)
            if len(self._seqs) > self.settings.max_clients:
                self._seqs.popitem(last=False)
        return Accepted(offset, False)

    def _write(self, data: bytes) -> None:
        if len(self._pending_input) + len(data) > self.settings.input_limit:
            raise PayloadTooLarge("The program is not reading its input and the input queue is full.")
        self._pending_input += data
        self._flush_input()

    def _flush_input(self) -> None:
        """Write queued input; what does not fit goes when the PTY signals room."""
        try:
            written = os.write(self._fd, self._pending_input)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._pending_input)  # the terminal is gone; so is its input
        del self._pending_input[:written]

    # -- views -------------------------------------------------------------------

    def model(self) -> dict[str, Any]:
        """The session object of the contract."""
        return {
            "sessionId": self.id,
            "labId": self.lab.id,
            "title": self.lab.title,
            "status": self.status,
            "terminalActive": self.running,
            "exitCode": self.exit_code,
            "createdAt": isoformat(self.created_at),
            "expiresAt": isoformat(self.expires_at),
            "lastActivity": isoformat(self.last_activity),
            "rows": self.rows,
            "cols": self.cols,
            "outputOffset": self.output.end,
            "unkilled": self.unkilled,
        }

    def status_model(self) -> dict[str, Any]:
        """The answer of ``GET /api/ws/status``."""
        return {
            "sessionId": self.id,
            # The platform's clients read this as "the terminal takes input".
            "connected": self.running,
            "terminalActive": self.running,
            "status": self.status,
            "exitCode": self.exit_code,
            "outputOffset": self.output.end,
            "lastActivity": isoformat(self.last_activity),
        }
