"""A session's program: spawned on a PTY inside its enclosure, watched, reaped, ended.

- **Spawn.** pexpect on a ptyprocess without the buffered pair it would wrap the PTY
  in (``_PtyProcess``), signals back to their defaults in the child, the PTY
  non-blocking (``reader`` reads it on the IOLoop). The spawn itself is synchronous:
  fork and exec hold the loop, ~6 ms in every containment mode (``python
  benchmarks/spawn.py``, a loaded 2-core VM). pexpect's ``close()`` and
  ``terminate()`` sleep, so their delays are set to 0 and ``close`` is only called
  once the child is reaped.
- **Exit.** Watched through a pidfd, so it is seen even while background jobs keep
  the PTY open; where there is none, polled every 0.2 s. Reaping is a waitpid with
  WNOHANG: never a blocking wait on the loop.
- **Ending.** Every process in the session's enclosure (see ``containment``: a PID
  namespace, a cgroup, a subreaper or a scan) is ended by a deadline; what would
  not die by then (stuck in the kernel, or not the server's to signal) is logged
  and kept in ``unkilled``. Then what the enclosure made (cgroups) is released,
  in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
from typing import Any, Callable

import pexpect
import ptyprocess
from tornado.ioloop import IOLoop

from ..containment import Enclosure, ScanEnclosure
from ..containment.scripts import INHERITED_IGNORES
from .settings import SessionSettings


def _reset_signals() -> None:
    """Run in the child before exec: start from default signal dispositions.

    Ignored signals survive exec; a server started with ``&`` from a script ignores
    SIGINT, and without this Ctrl-C would do nothing in the lab; Python itself ignores
    SIGPIPE and SIGXFSZ, which a program on a terminal expects to be killed by.
    """
    for name in (*INHERITED_IGNORES, "SIGPIPE", "SIGXFSZ"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


class _PtyProcess(ptyprocess.PtyProcess):
    """A PtyProcess without the BufferedRWPair ptyprocess wraps the PTY in.

    That pair holds two 8 KiB buffers per session, and we never use them: the PTY
    is read and written with ``os.read``/``os.write`` on the fd. ptyprocess only
    needs ``fileobj`` for ``close()``, which a raw FileIO (owning the fd, as the
    pair did) serves as well. The pair is built on a duplicate of the fd, so that
    closing it at once leaves the PTY open.
    """

    fileobj: io.FileIO

    def __init__(self, pid: int, fd: int):
        dup = os.dup(fd)
        try:
            super().__init__(pid, dup)
        except BaseException:
            os.close(dup)
            raise
        self.fileobj.close()  # closes the duplicate, frees the buffers
        self.fd = fd
        self.fileobj = open(fd, "r+b", buffering=0)  # noqa: SIM115 - owns the PTY until close()


class _Spawn(pexpect.spawn):
    """pexpect.spawn on a ``_PtyProcess``."""

    def _spawnpty(self, args: list[str], **kwargs: Any) -> ptyprocess.PtyProcess:
        return _PtyProcess.spawn(args, **kwargs)


class Process:
    """The program of one session, and the enclosure that holds all it starts."""

    def __init__(self, session_id: str, settings: SessionSettings, log: Any):
        self.session_id = session_id
        self.settings = settings
        self.log = log
        self.enclosure: Enclosure | None = None
        #: The PTY's fd once spawned, -1 before and once closed.
        self.fd = -1
        self.exit_code: int | None = None
        #: True once the program has ended and is reaped.
        self.reaped = False
        #: Pids that would not die when the session ended (see ``end``).
        self.unkilled: list[int] = []
        #: Done once what the containment made for the session (cgroups) is removed.
        self.released: asyncio.Future[None] | None = None
        self._loop = IOLoop.current()
        self._proc: pexpect.spawn | None = None
        self._pidfd = -1
        self._given_up = False
        self._on_exit: Callable[[], None] = lambda: None

    def enclose(self, enclosure: Enclosure | None = None) -> Enclosure:
        """The enclosure that holds every process of the session: ``enclosure`` when
        given, else the one made before, else (made here, the one place) the
        last-resort scan."""
        if enclosure is not None:
            self.enclosure = enclosure
        elif self.enclosure is None:
            self.enclosure = ScanEnclosure(self.session_id, max_processes=0, log=self.log)
        return self.enclosure

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str, rows: int, cols: int,
              enclosure: Enclosure | None = None) -> int:
        """Spawn ``argv`` on a new PTY inside the enclosure; return the PTY's fd,
        non-blocking. Raises OSError on failure."""
        enclosure = self.enclose(enclosure)
        env.update(enclosure.env())
        argv, preexec = enclosure.wrap(argv, cwd), enclosure.preexec

        def prepare_child() -> None:
            _reset_signals()
            preexec()

        # On failure the caller ends the session with ``end_unstarted``, which ends
        # the enclosure too (what a lab's setup left in it).
        self._proc = proc = _Spawn(
            argv[0], argv[1:], env=env, cwd=cwd,
            dimensions=(rows, cols), preexec_fn=prepare_child, encoding=None,
        )
        enclosure.started(proc.pid)
        # The environment is only needed to spawn; pexpect and ptyprocess keep it
        # (a dict and some 80 strings per session): let it go.
        proc.env = proc.ptyproc.env = None
        # pexpect's close() sleeps; we never call it, and keep it quick if GC does.
        # Closing a shell that would not die tries to terminate it: no sleeps there either.
        proc.delayafterclose = proc.ptyproc.delayafterclose = 0
        proc.delayafterterminate = proc.ptyproc.delayafterterminate = 0
        self.fd = proc.child_fd
        os.set_blocking(self.fd, False)
        return self.fd

    @property
    def spawned(self) -> bool:
        return self._proc is not None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def setwinsize(self, rows: int, cols: int) -> None:
        """Set the terminal size; the kernel tells the foreground program (SIGWINCH)."""
        assert self._proc is not None
        self._proc.setwinsize(rows, cols)

    def signal_foreground(self, signum: int) -> None:
        """Send ``signum`` to the terminal's foreground process group, as a key would.

        Raises PermissionError when that group runs as another user (after su or
        sudo); a group already gone is no error.
        """
        try:
            pgrp = os.tcgetpgrp(self.fd)
        except OSError:
            pgrp = self.pid
        # 0: the terminal has no foreground group (its session leader has just exited),
        # and killpg(0) signals the caller's own group: the server's. A schemathesis
        # run stopped its in-process server that way with SIGTSTP.
        if pgrp <= 0 or pgrp == os.getpgrp():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgrp, signum)

    # -- exit --------------------------------------------------------------------

    def watch_exit(self, on_exit: Callable[[], None]) -> None:
        """Call ``on_exit()`` once the program has ended and is reaped (see ``reap``)."""
        self._on_exit = on_exit
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            # No pidfd (old kernel, not Linux): fall back to polling.
            self._poll_exit()
            return
        self._loop.add_handler(self._pidfd, self._on_pidfd, IOLoop.READ)

    def _on_pidfd(self, fd: int, events: int) -> None:
        self.reap()

    def _poll_exit(self) -> None:
        if not self.reap():
            self._loop.call_later(0.2, self._poll_exit)

    def reap(self) -> bool:
        """Reap the program if it has ended, and then call ``on_exit()``; True once it
        is reaped (or given up on). A waitpid with WNOHANG: never blocks."""
        if self.reaped or self._given_up:
            return True
        assert self._proc is not None
        try:
            if self._proc.isalive():
                return False
        except pexpect.ExceptionPexpect:
            pass  # already reaped by someone else: treat as ended, status unknown
        proc = self._proc
        if proc.exitstatus is not None:
            self.exit_code = proc.exitstatus
        elif proc.signalstatus is not None:
            self.exit_code = 128 + proc.signalstatus
        self.reaped = True
        if self._pidfd >= 0:
            self._loop.remove_handler(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        self._on_exit()
        return True

    def give_up(self) -> None:
        """The program would not die by the deadline: count it as unkilled, and reap it
        if it ever exits (no ``on_exit`` then: the session has ended without it)."""
        self._given_up = True
        if self._pidfd >= 0:
            self._loop.remove_handler(self._pidfd)
            self._loop.add_handler(self._pidfd, lambda fd, events: self._reap_late(), IOLoop.READ)
        if not self.unkilled:
            self.unkilled = [self.pid]

    def _reap_late(self) -> None:
        assert self._proc is not None
        with contextlib.suppress(Exception):
            if self._proc.ptyproc.isalive():
                return
        self._loop.remove_handler(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1

    def close(self) -> None:
        """Close the PTY (the program is reaped, or given up on)."""
        with contextlib.suppress(Exception):
            assert self._proc is not None
            self._proc.close(force=False)  # the child is reaped: this only closes the fd
        self.fd = -1

    # -- ending ------------------------------------------------------------------

    async def end(self, deadline: float, *, release: bool = True) -> None:
        """End every process in the enclosure by ``deadline``; keep what would not die
        in ``unkilled``. With ``release``, then release the enclosure (``release``)."""
        assert self.enclosure is not None
        try:
            # The enclosure keeps the deadline itself; this only guards against a
            # /proc read that hangs in its executor.
            self.unkilled = await asyncio.wait_for(
                self.enclosure.end(self.settings.kill_grace, deadline), self.settings.kill_timeout + 1)
        except Exception:
            self.log.exception("labkernel: ending the processes of session %s failed", self.session_id)
        if self.unkilled:
            self.log.warning("labkernel: session %s: could not kill pid(s) %s within %ss",
                             self.session_id, ", ".join(map(str, self.unkilled)), self.settings.kill_timeout)
        if release:
            self.release()

    def release(self) -> None:
        """Release what the containment made for the session (cgroups), in the
        background: ``released`` is done once it is gone."""
        assert self.enclosure is not None
        self.released = asyncio.ensure_future(self.enclosure.release())
