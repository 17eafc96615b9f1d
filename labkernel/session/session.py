"""One session: a program on a PTY, its output log, its input, its processes.

``Session`` composes the parts, each a module of this package: ``process`` (the
spawn, the exit watch through a pidfd, ending every process of the enclosure),
``reader`` (PTY reads within a budget, flow control, the drain after the exit,
what an ended session keeps), ``input`` (de-duplication by ``clientId``/``seq``,
messages held while starting, the input queue) and ``output`` (the log). It owns
the life cycle that ties them together, ``starting`` → ``running`` → ``exited``,
``stopped`` or ``expired`` (or ``failed`` when the program never ran), and the
contract's JSON views.

Ending has one order: the processes are ended (``kill_grace`` between SIGHUP and
SIGKILL), the program is reaped, the terminal is drained until EIO and released,
and the session is *closed*; by ``kill_timeout`` it closes anyway, listing what
would not die in ``unkilled``. The enclosure's cgroups go in the background after.

Hooks for a layer built around a session (``labs.labsession``): ``enclose`` makes
the enclosure before the program starts (a lab's setup runs in it), messages that
come while ``starting`` are held until ``release_input``, ``end_unstarted`` ends a
session whose program never ran, ``on_close`` and ``processes_ended`` say when it
is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import time
from datetime import datetime, timezone
from typing import Any, Callable

from ..containment import Enclosure
from ..errors import BadRequest, LabError, SessionEnded, SignalRefused
from .input import DEFAULT_CLIENT, Accepted, Apply, Inbox, InputQueue
from .output import Chunk, OutputLog
from .process import Process
from .reader import PtyReader
from .settings import SessionSettings

#: Signals a client may send to the foreground program, by name.
ALLOWED_SIGNALS = {
    name: getattr(signal, name)
    for name in ("SIGINT", "SIGQUIT", "SIGTERM", "SIGKILL", "SIGHUP", "SIGTSTP", "SIGCONT")
}


def isoformat(timestamp: float) -> str:
    """A Unix time as the contract's ISO 8601 UTC string."""
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Session:
    """A program on a PTY with the output log and input of one lab session."""

    def __init__(self, lab: Any, *, rows: int, cols: int, lifetime: float,
                 settings: SessionSettings, log: Any):
        self.id = secrets.token_urlsafe(16)
        self.lab = lab
        self.rows, self.cols = rows, cols
        self.status = "starting"
        self.created_at = time.time()
        self.expires_at = self.created_at + lifetime
        self.ended_at: float | None = None
        self.output = OutputLog(settings.buffer_size)
        self.settings = settings
        self.log = log
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Ending every process of the session, once begun.
        self._ending: asyncio.Future[None] | None = None
        self._process = Process(self.id, settings, log)
        self._inbox = Inbox(settings.max_clients)
        self._input = InputQueue(settings.input_limit)
        self._pty = PtyReader(self.id, self.output, self._input, settings, log, self._on_pty_closed)
        self._pty.last_activity = self.created_at

    # -- state -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def closed(self) -> bool:
        """True once the program is reaped and the terminal released."""
        return self._closed.done()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def exit_code(self) -> int | None:
        return self._process.exit_code

    @property
    def unkilled(self) -> list[int]:
        """Pids that would not die when the session ended."""
        return self._process.unkilled

    @property
    def released(self) -> asyncio.Future[None] | None:
        """Done once what the containment made for the session (cgroups) is removed."""
        return self._process.released

    @property
    def enclosure(self) -> Enclosure | None:
        """What holds every process of the session (see ``enclose``)."""
        return self._process.enclosure

    @property
    def last_activity(self) -> float:
        """When output was last read, a client polled or a message came (Unix time)."""
        return self._pty.last_activity

    @last_activity.setter
    def last_activity(self, when: float) -> None:
        self._pty.last_activity = when

    @property
    def last_output(self) -> float:
        """When output was last read from the PTY (``time.monotonic()``; 0 never)."""
        return self._pty.last_output

    # -- life cycle --------------------------------------------------------------

    def enclose(self, enclosure: Enclosure | None = None) -> Enclosure:
        """Make the enclosure (see ``containment``) that will hold every process the
        session starts, before its program: ``enclosure``, or by default the
        last-resort scan. ``start`` calls it if nobody did."""
        return self._process.enclose(enclosure)

    def start(self, argv: list[str], env: dict[str, str], cwd: str,
              enclosure: Enclosure | None = None) -> None:
        """Spawn ``argv`` on a new PTY and start watching it. Raises OSError on failure.

        ``enclosure`` wraps the argv and holds every process the session starts
        (see ``enclose``). Messages held while the session was starting stay held
        until ``release_input``, so that the caller may type first.
        """
        fd = self._process.spawn(argv, env, cwd, self.rows, self.cols, enclosure)
        self._input.attach(fd)
        self._pty.start(fd)
        self._process.watch_exit(self._exited)
        self.status = "running"

    def release_input(self) -> None:
        """Apply, in the order they came, the messages held while the session was
        starting (a refused one is dropped, as its answer has been given)."""
        for apply in self._inbox.release():
            with contextlib.suppress(LabError):
                apply()

    def end_unstarted(self, status: str, reason: str = "") -> None:
        """End a session whose program never ran (``failed``, or stopped during its
        setup); its output says why. What its setup started in its enclosure is
        ended in the background (``stop`` and ``processes_ended`` wait for that)."""
        self.status = status
        self.ended_at = time.time()
        if reason:
            self.output.append(reason.encode() + b"\r\n")
        self.output.close()
        self._inbox.release()  # held messages end with the session
        if self._process.enclosure is not None and self._ending is None:
            self._ending = asyncio.ensure_future(
                self._process.end(time.monotonic() + self.settings.kill_timeout))
        if not self._closed.done():
            self._closed.set_result(None)

    def on_close(self, callback: Callable[[Session], None]) -> None:
        """Call ``callback(session)`` once the session has closed (soon, if it has)."""
        self._closed.add_done_callback(lambda _: callback(self))

    async def stop(self, status: str = "stopped") -> None:
        """End the session and every process it started; return once all are gone."""
        if self.status == "starting" and not self._process.spawned:
            self.end_unstarted(status)
        if self.running:
            self.status = status
        if self._ending is None and not self._closed.done():
            self._ending = asyncio.ensure_future(self._terminate())
        await self.processes_ended()
        await asyncio.shield(self._closed)

    async def processes_ended(self) -> None:
        """Return once every process of the session is gone, if their end has begun."""
        if self._ending is not None:
            await asyncio.shield(self._ending)

    def _exited(self) -> None:
        """The program has ended and is reaped: take its last output, end the rest."""
        if self.running:
            self.status = "exited"
        self.ended_at = time.time()
        self._pty.drain()
        if self._ending is None:
            # The program exited on its own; jobs it left behind end with it.
            self._ending = asyncio.ensure_future(self._terminate())

    async def _terminate(self) -> None:
        """End every process of the session; by ``kill_timeout`` the session ends anyway.

        What could not be killed by then (stuck in the kernel, or not the server's
        to signal) is logged and kept in ``unkilled``.
        """
        deadline = time.monotonic() + self.settings.kill_timeout
        await self._process.end(deadline, release=False)
        # The program is dead (or will not die); the exit watcher reaps it, the
        # drain closes the session.
        while not self._closed.done():
            self._process.reap()
            if self._closed.done():
                break
            if time.monotonic() >= deadline:
                self._abandon()
                break
            await asyncio.sleep(0.01)
        # Not awaited here: a stop answers once the processes are gone, not their cgroups.
        self._process.release()

    def _abandon(self) -> None:
        """The deadline passed: end the session anyway, and reap the program if it ever exits."""
        if not self._process.reaped:  # the program itself would not die
            self.ended_at = time.time()
            self._process.give_up()
        # Take what the terminal holds now and close: a process that would not die
        # and keeps the terminal open must not keep the session open too.
        self._pty.drain(deadline=time.monotonic())

    def _on_pty_closed(self) -> None:
        self._process.close()
        self._input.close()
        self._closed.set_result(None)

    # -- what clients call -------------------------------------------------------

    def read(self, offset: int, max_bytes: int, *, utf8: bool, reader: str = DEFAULT_CLIENT) -> Chunk:
        """Output from ``offset``; records the reader as attached at that offset."""
        return self._pty.read(offset, max_bytes, utf8=utf8, reader=reader)

    def write(self, data: bytes, *, client: str | None = None, seq: int | None = None) -> Accepted:
        """Write input to the PTY as typed; queued if the program is not reading."""
        return self._deliver(client, seq, lambda: self._input.write(data))

    def resize(self, rows: int, cols: int, *, client: str | None = None, seq: int | None = None) -> Accepted:
        """Set the terminal size; the kernel tells the foreground program (SIGWINCH)."""
        def apply() -> None:
            self._process.setwinsize(rows, cols)
            self.rows, self.cols = rows, cols
        return self._deliver(client, seq, apply)

    def signal(self, name: str, *, client: str | None = None, seq: int | None = None) -> Accepted:
        """Send a signal to the terminal's foreground process group, as a key would."""
        signum = ALLOWED_SIGNALS.get(name)
        if signum is None:
            raise BadRequest(f"{name!r} is not a signal you can send; use one of {', '.join(ALLOWED_SIGNALS)}.")

        def apply() -> None:
            try:
                self._process.signal_foreground(signum)
            except PermissionError:
                # A program that changed its user (su, sudo) may not be signalled by
                # the server; the terminal's own Ctrl-C still reaches it.
                raise SignalRefused(
                    f"The program in the foreground runs as another user, so the server may not "
                    f"send it {name}; send Ctrl-C as data (\\u0003) instead.") from None
        return self._deliver(client, seq, apply)

    def _deliver(self, client: str | None, seq: int | None, apply: Apply) -> Accepted:
        """Apply a message once per (client, seq): a retried message is acknowledged
        only. While the session is starting there is no terminal yet: messages (keys,
        a resize) are held, and applied in order by ``release_input``."""
        offset = self.output.end

        def run() -> None:
            if not self.running:
                raise SessionEnded(f"This session has {self.status}; start a new one to continue.")
            apply()
            self.last_activity = time.time()
        taken = self._inbox.deliver(client, seq, run, hold=self.status == "starting")
        return Accepted(offset, not taken)

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
