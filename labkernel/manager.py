"""The session manager: creates, finds, culls and stops lab sessions.

It knows nothing of HTTP: it raises ``LabError``s and returns ``Session``s.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from typing import Any

from tornado.ioloop import PeriodicCallback
from traitlets import Float, Instance, Int, List, Unicode, default
from traitlets.config import LoggingConfigurable

from .errors import SessionNotFound, TooManySessions
from .labs import LabCatalog
from .sessions import Session, SessionSettings


class LabSessionManager(LoggingConfigurable):
    """Owns every lab session of the server."""

    shell_command = List(
        Unicode(),
        help="""The command a plain shell lab runs, as argv. Default: the user's
        $SHELL (or sh), as a login shell when the server has no terminal (as under
        JupyterHub), so that /etc/profile and the like are read.""",
    ).tag(config=True)

    @default("shell_command")
    def _default_shell(self) -> list[str]:
        shell = os.environ.get("SHELL") or shutil.which("bash") or "sh"
        return [shell, "-l"] if not os.isatty(1) else [shell]

    root_dir = Unicode(help="The directory sessions start in (the server's root).").tag(config=True)

    @default("root_dir")
    def _default_root(self) -> str:
        return os.getcwd()

    buffer_size = Int(
        4 * 1024 * 1024, help="""Output kept per session, in bytes. A client that falls
        further behind than this while polling pauses the program instead of losing
        output; with no client attached, the oldest output is dropped.""",
    ).tag(config=True)

    read_budget = Int(
        4 * 1024, min=1, help="""The most bytes read from one session's terminal per event
        loop turn, so that a flooding session yields to the others. The default is
        one read (a PTY read returns under 4 KiB): the best isolation measured; a
        larger budget (e.g. 262144) reads on within a turn and carries an
        uncontended flood about 3x faster, at the cost of the other sessions'
        latency while one floods (see Session._read_pty).""",
    ).tag(config=True)

    max_answer = Int(
        1024 * 1024, min=1, help="""The most output bytes one answer carries, whatever `max` a
        client asks for: encoding and sending an answer holds the event loop (every
        session's) for about 1 ms per 100 KiB, so a flood is carried in answers of
        this size rather than in 1 MiB ones.""",
    ).tag(config=True)

    max_wait = Float(
        25.0, help="""The longest a long poll is held, in seconds; longer `wait`s are
        capped. Keep it under the idle timeout of proxies in front of the server.""",
    ).tag(config=True)

    batch_delay = Float(
        0.008, help="""While a program floods its terminal, how long, in seconds, a poll
        that finds output waiting may hold its answer to gather more: fewer, larger
        answers leave the server time for the other sessions. Half a display frame
        by default; small output such as typing is never held. 0 disables batching.""",
    ).tag(config=True)

    attach_timeout = Float(
        35.0, help="""A client counts as attached (and holds back the program when it
        lags) while it has polled within this many seconds; keep it above max_wait.""",
    ).tag(config=True)

    lifetime = Float(3600.0, help="How long a session may run, in seconds.").tag(config=True)

    cull_idle_timeout = Float(
        900.0, help="""Stop a session no client has polled or typed into, and whose
        program printed nothing, for this many seconds. 0 disables idle culling.""",
    ).tag(config=True)

    cull_interval = Float(
        5.0, help="How often, in seconds, to look for expired, idle and forgotten sessions."
    ).tag(config=True)

    retention = Float(
        600.0, help="""How long an ended session's record and output stay readable, in
        seconds, before its id answers 404.""",
    ).tag(config=True)

    max_sessions = Int(
        100, help="The most sessions running at once; starting one more answers 429."
    ).tag(config=True)

    kill_grace = Float(
        1.0, help="""Seconds between SIGHUP and SIGKILL when a session's processes are
        ended (stop, expiry, culling, shutdown).""",
    ).tag(config=True)

    input_limit = Int(
        1024 * 1024, help="""The most input bytes queued for a program that is not
        reading its terminal; more is refused.""",
    ).tag(config=True)

    max_clients = Int(
        64, help="""The most clients (message `clientId`s and attached readers) one
        session remembers; the least recently seen is forgotten first.""",
    ).tag(config=True)

    default_rows = Int(24, help="Terminal rows when a start request names none.").tag(config=True)
    default_cols = Int(80, help="Terminal columns when a start request names none.").tag(config=True)

    labs = Instance(LabCatalog, args=(), help="The labs sessions can be started from.")

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._sessions: dict[str, Session] = {}
        self._culler: PeriodicCallback | None = None

    # -- sessions ---------------------------------------------------------------

    def start(self, lab_id: str = "shell", rows: int | None = None, cols: int | None = None) -> Session:
        """Start a session of a lab; raises LabNotFound or TooManySessions."""
        lab = self.labs.get(lab_id)
        if self.active_count >= self.max_sessions:
            raise TooManySessions(
                f"This server already runs {self.max_sessions} lab sessions; stop one or try later.")
        env = dict(os.environ, TERM="xterm-256color", JUPYTER_SERVER_ROOT=self.root_dir,
                   **{var.name: var.value for var in lab.env})
        settings = SessionSettings(
            buffer_size=self.buffer_size, read_budget=self.read_budget,
            attach_timeout=self.attach_timeout, kill_grace=self.kill_grace,
            input_limit=self.input_limit, max_clients=self.max_clients,
        )
        session = Session(
            lab, rows=rows or self.default_rows, cols=cols or self.default_cols,
            lifetime=self.lifetime, settings=settings, log=self.log,
        )
        try:
            session.start(list(lab.argv or self.shell_command), env, self.root_dir)
        except Exception as e:
            # Keep the record: the client sees status "failed" and why, not a 500.
            self.log.error("labkernel: could not start lab %s: %s", lab.id, e)
            session.fail(f"labkernel: could not start the lab: {e}")
        self._sessions[session.id] = session
        self.log.info("labkernel: started session %s of lab %s (pid %s)", session.id, lab.id,
                      session.pid if session.running else "-")
        self._start_culling()
        return session

    def get(self, session_id: str) -> Session:
        """The session with this id; raises SessionNotFound."""
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionNotFound(
                "There is no such lab session; it may have ended a while ago. Start a new one.")
        return session

    def list(self) -> list[Session]:
        return list(self._sessions.values())

    @property
    def active_count(self) -> int:
        """How many sessions are running (ended ones kept for retention do not count)."""
        return sum(s.running for s in self._sessions.values())

    async def stop(self, session_id: str, status: str = "stopped") -> Session:
        """Stop a session; every process it started is gone when this returns."""
        session = self.get(session_id)
        await session.stop(status)
        return session

    def clamp_wait(self, wait: float) -> float:
        """A long poll's wait, capped by ``max_wait``."""
        return min(wait, self.max_wait)

    # -- culling and shutdown -----------------------------------------------------

    def _start_culling(self) -> None:
        if self._culler is None:
            self._culler = PeriodicCallback(self._cull, self.cull_interval * 1000)
            self._culler.start()

    async def _cull(self) -> None:
        now = time.time()
        stops = []
        for session in list(self._sessions.values()):
            try:
                if session.running and now >= session.expires_at:
                    self.log.info("labkernel: session %s reached its lifetime", session.id)
                    stops.append(session.stop("expired"))
                elif (session.running and self.cull_idle_timeout > 0
                      and now - session.last_activity >= self.cull_idle_timeout):
                    self.log.info("labkernel: culling idle session %s", session.id)
                    stops.append(session.stop("expired"))
                elif session.ended_at is not None and now - session.ended_at >= self.retention:
                    del self._sessions[session.id]
            except Exception:
                self.log.exception("labkernel: culling session %s failed", session.id)
        for result in await asyncio.gather(*stops, return_exceptions=True):
            if isinstance(result, BaseException):
                self.log.error("labkernel: stopping a session failed: %s", result)

    async def shutdown(self) -> None:
        """Stop every session and wait until all their processes are gone."""
        if self._culler is not None:
            self._culler.stop()
            self._culler = None
        sessions = [s for s in self._sessions.values() if not s.closed]
        if sessions:
            self.log.info("labkernel: stopping %d lab session(s)", len(sessions))
        results = await asyncio.gather(*(s.stop("stopped") for s in sessions), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                self.log.error("labkernel: stopping a session at shutdown failed: %s", result)
