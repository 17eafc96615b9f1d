"""The session manager: creates, finds, culls and stops lab sessions.

It knows nothing of HTTP: it raises ``LabError``s and returns ``LabSession``s.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from typing import Any

from tornado.ioloop import IOLoop, PeriodicCallback
from traitlets import CaselessStrEnum, Float, Instance, Int, List, Unicode, default
from traitlets.config import LoggingConfigurable

from .containment import Containment, choose, clean_leftovers
from .containment.modes import CHOICES
from .containment.sandbox import (
    DEFAULT_UID_BASE,
    SandboxSettings,
    probe_sandbox,
    sandbox_status,
)
from .credentials import CREDENTIAL_ENV
from .errors import SessionNotFound, TooManySessions
from .labs import pool
from .labs.catalog import LabCatalog, LabScanner
from .labs.files import Limits
from .labs.labsession import LabSession, LabSettings
from .labs.model import Lab, LabProblem
from .labs.workspace import remove_stale_scratch
from .session import SessionSettings


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

    hidden_env = List(
        Unicode(),
        help=f"""Environment variables of the server that lab shells do not inherit, as
        names or fnmatch patterns (e.g. "AWS_*"), in addition to the credentials that
        are always withheld: {", ".join(CREDENTIAL_ENV)}.""",
    ).tag(config=True)

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
        latency while one floods (see PtyReader._read_pty).""",
    ).tag(config=True)

    attach_timeout = Float(
        35.0, help="""A client counts as attached (and holds back the program when it
        lags) while it has polled within this many seconds; keep it above
        LabKernelApp.max_wait.""",
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

    retained_output = Int(
        64 * 1024, help="""Output an ended session keeps for its retention, in bytes (its
        newest output). A client still reading it when it ended keeps what it had not
        read for one attach_timeout more.""",
    ).tag(config=True)

    max_ended_sessions = Int(
        100, help="""The most ended sessions kept readable for their retention; beyond
        it the oldest is forgotten (answers 404) first.""",
    ).tag(config=True)

    max_sessions = Int(
        100, help="The most sessions running at once; starting one more answers 429."
    ).tag(config=True)

    kill_grace = Float(
        1.0, help="""Seconds between SIGHUP and SIGKILL when a session's processes are
        ended (stop, expiry, culling, shutdown).""",
    ).tag(config=True)

    kill_timeout = Float(
        5.0, help="""Seconds, from the start of a stop, after which a session ends even
        if some of its processes would not die (stuck in the kernel, or another user's
        after a setuid program): they are logged and listed in the session's
        `unkilled`, so that stopping and shutdown always finish. Keep it above
        kill_grace.""",
    ).tag(config=True)

    containment = CaselessStrEnum(
        CHOICES, default_value="auto",
        help="""How a session's processes are held so that all of them end with it
        (see labkernel/containment/). "auto" takes the strongest that works here:
        "sandbox", a user, PID, mount, IPC and UTS namespace per session: root
        inside and no capability outside, the host's root under a copy-on-write
        overlay of the session's, private /tmp, the session's folder as /root and
        HOME, the server's files hidden (needs user namespaces, util-linux's
        unshare and nsenter, and overlayfs; see the sandbox_* options);
        "pidns", a PID namespace per session (bwrap, else unshare; "pidns-bwrap" or
        "pidns-unshare" names one; needs root or unprivileged user namespaces, and
        nsenter for setup and checks to enter it);
        "cgroup", a cgroup v2 per session ended with cgroup.kill (needs a writable
        cgroup v2); "subreaper", a PR_SET_CHILD_SUBREAPER process in front of each
        session's program; "scan", the session id, an environment marker and
        descendants found in /proc (escapable by a double fork that also drops the
        marker). A lab's setup and checks run inside the same containment. A mode
        that does not work here falls back to the next. GET /health says which is
        in force.""",
    ).tag(config=True)

    sandbox_dir = Unicode(
        "", help="""Where the "sandbox" containment makes each session's folder: the upper
        layers of its overlays, which hold what the session wrote outside its own folder
        (/etc, /usr, /opt, ...), removed when it ends (or, after a crash, at the next
        start). It needs a filesystem that overlayfs takes as an upper layer in a user
        namespace (ext4, xfs, btrfs; tmpfs from Linux 6.6). Empty: a folder of this
        server's user in the system's temporary folder. Hidden from the labs.""",
    ).tag(config=True)

    sandbox_uid_base = Int(
        DEFAULT_UID_BASE, min=1, help="""For a server running as root: the host uid and gid
        that a sandboxed lab's root is, and the first of the 65536 its uids 0-65535 are
        (so that the lab's root owns, through idmapped mounts, what host root owns, and
        package managers can chown). Pick a range no user or other container uses. A
        server that is not root maps its own uid, and only that one.""",
    ).tag(config=True)

    sandbox_hidden = List(
        Unicode(), help="""Folders hidden from sandboxed labs (empty in their place), in
        addition to the server's home, its Jupyter runtime, data and config folders and
        sandbox_dir, which always are. A lab's root can read what the server's user (or,
        for a root server, host root) can, elsewhere: list here what holds secrets.""",
    ).tag(config=True)

    max_processes = Int(
        512, help="""The most processes (and threads) one session may run at once; 0 for
        no limit. Enforced by a pids cgroup (pids.max) where the server may create
        one; otherwise by RLIMIT_NPROC, set in the session's own user namespace where it
        has one (sandbox, and pidns without root), where it counts the session's
        processes alone; elsewhere it counts every process of the server's user, so
        one session's fork bomb can stop the others, and root ignores it. GET /health
        says which holds.""",
    ).tag(config=True)

    max_memory = Int(
        2 * 1024 * 1024 * 1024, min=0, help="""The most memory one session's processes may use
        together, in bytes (page cache included, which is reclaimed first); 0 for no limit.
        Enforced by a memory cgroup (memory.max on a delegated cgroup v2, else
        memory.limit_in_bytes of a writable v1 hierarchy); where the server may make none,
        there is no limit, and GET /health says so.""",
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

    lab_path = List(
        Unicode(), default_value=["labs"], help="""Where lab definitions are found: folders
        relative to the server's root (or absolute). Each is a lab folder (it holds a
        lab.toml or a Killercoda index.json) or a tree searched for lab folders.""",
    ).tag(config=True)

    lab_scan_interval = Float(
        2.0, min=0.0, help="""How old, in seconds, the catalog may be when something asks
        for it (the catalog, a start, a warm pool with room to fill): older, the search
        path is walked again (off the event loop, one walk for all who ask meanwhile)
        and changed definitions are re-read. A start of a lab the catalog does not
        know always waits for a walk begun after it asked, so a lab added a moment ago
        is found. Nothing is walked while nobody asks. 0: on every request.""",
    ).tag(config=True)

    max_definition_size = Int(
        1024 * 1024, min=1024, help="""The largest lab definition file (lab.toml, a Killercoda
        index.json) read, in bytes. A larger one is not read at all (refused by its size
        before a byte is), and is listed among the catalog's errors.""",
    ).tag(config=True)

    max_lab_file_size = Int(
        4 * 1024 * 1024, min=1024, help="""The largest file a lab definition names (a step's
        text, a script, intro, finish) read, in bytes; a larger one makes the lab an
        error of the catalog, unread.""",
    ).tag(config=True)

    max_lab_size = Int(
        16 * 1024 * 1024, min=1024, help="""The most bytes one lab's definition and the files
        it names may take together (a scenario of many steps); beyond it the lab is an
        error of the catalog.""",
    ).tag(config=True)

    pool_max = Int(
        10, help="""The most sessions kept warm (started, setup done) across all labs'
        pools (`pool = n` in lab.toml). Pooled sessions count towards max_sessions, but
        a start at the limit stops a pooled session rather than answer 429.""",
    ).tag(config=True)

    setup_timeout = Float(
        300.0, help="""Seconds a lab's hidden setup may run; then it is killed with its
        children and the session fails.""",
    ).tag(config=True)

    check_timeout = Float(
        30.0, help="Seconds a step's check may run; then it is killed with its children.",
    ).tag(config=True)

    scratch_dir = Unicode(
        "", help="""Where the scratch folders of labs with `scratch = true` are made;
        empty: the system's temporary folder.""",
    ).tag(config=True)

    check_output_limit = Int(
        16 * 1024, help="""The most bytes of a check's output returned as its message (and
        of a failed setup's output shown); the rest is cut.""",
    ).tag(config=True)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._sessions: dict[str, LabSession] = {}
        self._culler: PeriodicCallback | None = None
        self._scanner: LabScanner | None = None
        self._scan: asyncio.Future[None] | None = None
        #: When the last scan that finished began (monotonic): it saw the disk as of then.
        self._scanned_at: float | None = None
        #: How many times the search path was walked (for tests and diagnostics).
        self.scan_count = 0
        self._shutting_down = False
        self._refill_timer: asyncio.TimerHandle | None = None
        self._refill: asyncio.Future[None] | None = None
        self.warm_pool = pool.WarmPool(self._create_pooled, self.log)
        # Probed once per process (a few ms; the sandbox's ~150 ms), before the server answers.
        self._sandbox = self._sandbox_settings()
        self._containment: Containment = choose(self.containment, max_processes=self.max_processes,
                                                log=self.log, sandbox=self._sandbox,
                                                protected=self._protected(), runtime_dir=self._runtime_dir(),
                                                max_memory=self.max_memory)
        self.log.info("labkernel: session containment: %s", self._containment.describe())
        if self.containment in ("auto", "sandbox") and self._containment.mode != "sandbox":
            self.log.warning("labkernel: no sandbox for the sessions: %s",
                             probe_sandbox(self._sandbox).reason)
        IOLoop.current().add_callback(self._clean_leftovers)

    def _runtime_dir(self) -> str:
        """The server's Jupyter runtime folder (its token and cookie secret are there)."""
        return getattr(self.parent, "runtime_dir", "") if self.parent is not None else ""

    def _sandbox_settings(self) -> SandboxSettings:
        """The sandbox's settings, resolved; the server's runtime folder hidden too
        (it may be configured elsewhere than Jupyter's default)."""
        hide = tuple(p for p in (self._runtime_dir(), *self.sandbox_hidden) if p)
        return SandboxSettings(dir=self.sandbox_dir, uid_base=self.sandbox_uid_base, hide=hide).resolved()

    def _protected(self) -> tuple[str, ...]:
        """Folders of the server's no lab file is written into: those the sandbox hides,
        but the server's home (outside a sandbox, a lab's ``~/`` asset goes there)."""
        home = os.path.realpath(os.path.expanduser("~"))
        return tuple(p for p in self._sandbox.hide if p != home)

    @property
    def containment_mode(self) -> str:
        """The containment mode in force: "sandbox", "pidns", "cgroup", "subreaper" or "scan"."""
        return self._containment.mode

    def limits(self) -> dict[str, Any]:
        """The per-session process and memory limits in force, and how (``/health``)."""
        return self._containment.limits()

    def sandbox_status(self) -> dict[str, Any]:
        """What the sandbox gives here (in force or not), or why there is none."""
        if self.containment not in ("auto", "sandbox"):
            model = {"available": None, "reason": f"not probed: containment is set to {self.containment!r}"}
        else:
            found = probe_sandbox(self._sandbox)  # probed at start, when choosing
            model = sandbox_status(found.options, found.reason)
        return {"inForce": self._containment.mode == "sandbox", **model}

    async def _clean_leftovers(self) -> None:
        """Kill what a server that died without cleaning up left behind, then remove its
        sandbox and scratch folders (off the loop)."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, clean_leftovers, self.log, self._sandbox.dir)
            await loop.run_in_executor(None, remove_stale_scratch, self.scratch_dir, self.log)
        except Exception:
            self.log.exception("labkernel: cleaning up after a previous server failed")

    # -- sessions ---------------------------------------------------------------

    async def start(self, lab_id: str = "shell", rows: int | None = None,
                    cols: int | None = None) -> LabSession:
        """Start a session of a lab; raises LabNotFound or TooManySessions.

        The lab is looked up as ``find_lab`` does: a lab added a moment ago is found.
        A lab with a setup answers at once with a ``starting`` session; a lab with a
        warm pool hands out a pooled session whose setup has run (see ``pool``).
        """
        lab = await self.find_lab(lab_id)
        rows, cols = rows or self.default_rows, cols or self.default_cols
        ready, pooled = self.warm_pool.counts()
        admission = pool.admit(lab.id, ready, pooled, self.live_count, self.max_sessions)
        session = self.warm_pool.take(lab) if admission.take else None
        if session is not None:
            session.hand_out(rows, cols, self._lifetime(lab))
            self.log.info("labkernel: handed out pooled session %s of lab %s", session.id, lab.id)
        else:
            if admission.take:  # the ready one was of an older definition
                admission = pool.admit(lab.id, {}, pooled, self.live_count, self.max_sessions)
            if admission.refuse:
                raise TooManySessions(
                    f"This server already runs {self.max_sessions} lab sessions; stop one or try later.")
            if admission.evict is not None:
                self.warm_pool.evict(admission.evict)
            session = self._create(lab, rows, cols)
            self.log.info("labkernel: started session %s of lab %s (%s)", session.id, lab.id,
                          f"pid {session.pid}" if session.running else session.status)
        self._sessions[session.id] = session
        session.on_close(self._forget_oldest_ended)
        self._start_culling()
        self._refill_soon()
        return session

    async def find_lab(self, lab_id: str) -> Lab:
        """The lab with this id, from a catalog at most ``lab_scan_interval`` old;
        raises LabNotFound.

        An id that catalog does not know gets one more scan, begun after this call,
        before the answer is no: the lab may have been added a moment ago.
        """
        asked = time.monotonic()
        catalog = await self.refresh_labs()
        if lab_id not in catalog:
            catalog = await self.refresh_labs(since=asked)
        if lab_id not in catalog:
            # Close matches among 10,000 ids take some 50 ms: not on the loop.
            close = await asyncio.get_running_loop().run_in_executor(None, catalog.close_matches, lab_id)
            raise catalog.not_found(lab_id, close)
        return catalog.get(lab_id)

    def _lifetime(self, lab: Lab) -> float:
        return lab.lifetime if lab.lifetime is not None else self.lifetime

    def _create(self, lab: Lab, rows: int, cols: int) -> LabSession:
        settings = SessionSettings(
            buffer_size=self.buffer_size, read_budget=self.read_budget,
            attach_timeout=self.attach_timeout, kill_grace=self.kill_grace,
            kill_timeout=max(self.kill_timeout, self.kill_grace),
            input_limit=self.input_limit, max_clients=self.max_clients,
            retained_output=self.retained_output,
        )
        lab_settings = LabSettings(root_dir=self.root_dir, setup_timeout=self.setup_timeout,
                                   check_timeout=self.check_timeout, output_limit=self.check_output_limit,
                                   scratch_dir=self.scratch_dir, hidden_env=tuple(self.hidden_env))
        session = LabSession(lab, rows=rows, cols=cols, lifetime=self._lifetime(lab), settings=settings,
                             log=self.log, lab_settings=lab_settings,
                             argv=list(lab.argv or self.shell_command),
                             enclose=self._containment.enclose)
        session.launch()
        return session

    def _create_pooled(self, lab: Lab) -> LabSession:
        return self._create(lab, self.default_rows, self.default_cols)

    def _refill_soon(self) -> None:
        """Refill the pools a moment later: a burst of starts is answered first, and
        the shells (forks of this server) the refill spawns come after it."""
        if self._refill_timer is None:
            def run() -> None:
                self._refill_timer = None
                if self._refill is None or self._refill.done():
                    self._refill = asyncio.ensure_future(self._keep_pools_full())
            self._refill_timer = asyncio.get_running_loop().call_later(0.05, run)

    async def _keep_pools_full(self) -> None:
        """Refill the warm pools, reading the definitions again first if they are older
        than ``lab_scan_interval`` — only when there is something to start: pools that
        are full (or have no room) need no definitions, and an idle server reads none.
        """
        if self._shutting_down:
            return
        try:
            if not self.warm_pool.plan(self.labs.list(), self.live_count, self.max_sessions,
                                       self.pool_max):
                return
        except Exception:
            self.log.exception("labkernel: planning the warm pools failed")
            return
        await self.refresh_labs()  # a scan refills the pools itself when it ends
        self._refill_pool()

    def _refill_pool(self) -> None:
        if self._shutting_down:
            return
        try:
            self.warm_pool.refill(self.labs.list(), self.live_count, self.max_sessions, self.pool_max)
        except Exception:
            self.log.exception("labkernel: refilling the warm pools failed")

    async def check(self, session_id: str, step: int | None = None) -> dict[str, Any]:
        """Run a session's checks (one step, from 1, or all); see ``LabSession.check``."""
        return await self.get(session_id).check(step)

    # -- the catalog --------------------------------------------------------------

    async def refresh_labs(self, since: float | None = None) -> LabCatalog:
        """The catalog, as read by a scan begun at most ``lab_scan_interval`` ago, or at
        or after ``since`` (``time.monotonic()``) when given.

        The catalog is only ever read on demand: this is the one way to it. The scan
        (a stat walk, see ``catalog``) runs in an executor, one at a time: whoever asks
        while one is running waits for it, and for one more only if it began too early.
        """
        oldest = time.monotonic() - self.lab_scan_interval if since is None else since
        while self._scanned_at is None or self._scanned_at < oldest:
            if self._scan is None:
                self._scan = asyncio.ensure_future(self._rescan())
            await asyncio.shield(self._scan)
        return self.labs

    async def _rescan(self) -> None:
        started = time.monotonic()
        self.scan_count += 1
        try:
            if self._scanner is None:
                caps = Limits(self.max_definition_size, self.max_lab_file_size, self.max_lab_size)
                self._scanner = LabScanner(self.root_dir, self.lab_path, self.log, caps=caps,
                                           sandbox=self._containment.mode == "sandbox")
            result = await asyncio.get_running_loop().run_in_executor(None, self._scanner.scan)
            for problem in result.new_problems:
                self.log.warning("labkernel: lab %s (%s) is left out: %s: %s", problem.lab_id,
                                 problem.path, problem.field, problem.reason)
            if result.changed:
                self.labs.update(result.labs, result.problems + self._pool_problems(result.labs))
            self.log.debug("labkernel: %d labs found in %.0f ms", len(result.labs),
                           (time.monotonic() - started) * 1000)
        except Exception:
            self.log.exception("labkernel: reading the lab definitions failed")
        finally:
            # Also after a failure: those waiting get the catalog as it is, and the
            # next one to ask tries again.
            self._scanned_at = started
            self._scan = None
        self._refill_pool()

    def _pool_problems(self, labs: list[Lab]) -> list[LabProblem]:
        """Labs asking for a bigger pool than the server allows: served, with the pool cut."""
        limit = min(self.max_sessions, self.pool_max)
        return [LabProblem(
            path=self._display_path(os.path.join(lab.source, "lab.toml" if lab.kind == "lab.toml"
                                                 else "index.json")),
            field="pool", lab_id=lab.id,
            reason=f"asks for {lab.pool} warm sessions but this server keeps at most {limit} "
                   f"(max_sessions {self.max_sessions}, pool_max {self.pool_max}); it keeps {limit}")
            for lab in labs if lab.pool > limit]

    def _display_path(self, path: str) -> str:
        root = os.path.realpath(self.root_dir)
        return os.path.relpath(path, root) if path.startswith(root + os.sep) else path

    async def warm_up(self) -> None:
        """Read the catalog and fill the warm pools, before any learner asks."""
        await self.refresh_labs(since=time.monotonic())
        self._start_culling()

    def _forget_oldest_ended(self, _closed: LabSession) -> None:
        """Keep at most ``max_ended_sessions`` ended sessions, dropping the oldest."""
        ended = [s for s in self._sessions.values() if s.closed]
        excess = len(ended) - self.max_ended_sessions
        if excess > 0:
            for session in sorted(ended, key=lambda s: s.ended_at or 0.0)[:excess]:
                del self._sessions[session.id]

    def get(self, session_id: str) -> LabSession:
        """The session with this id; raises SessionNotFound."""
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionNotFound(
                "There is no such lab session; it may have ended a while ago. Start a new one.")
        return session

    def list(self) -> list[LabSession]:
        return list(self._sessions.values())

    @property
    def active_count(self) -> int:
        """How many sessions are running (ended ones kept for retention do not count)."""
        return sum(s.running for s in self._sessions.values())

    @property
    def live_count(self) -> int:
        """Sessions handed out that have not ended, those still in setup included."""
        return sum(s.status in ("starting", "running") for s in self._sessions.values())

    async def stop(self, session_id: str, status: str = "stopped") -> LabSession:
        """Stop a session; every process it started is gone when this returns."""
        session = self.get(session_id)
        await session.stop(status)
        return session

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
                elif (session.running and self._idle_timeout(session) > 0
                      and now - session.last_activity >= self._idle_timeout(session)):
                    self.log.info("labkernel: culling idle session %s", session.id)
                    stops.append(session.stop("expired"))
                elif session.ended_at is not None and now - session.ended_at >= self.retention:
                    del self._sessions[session.id]
            except Exception:
                self.log.exception("labkernel: culling session %s failed", session.id)
        for result in await asyncio.gather(*stops, return_exceptions=True):
            if isinstance(result, BaseException):
                self.log.error("labkernel: stopping a session failed: %s", result)
        # Freed slots and pooled sessions that ended: the pools follow. Changed
        # definitions are seen when the catalog is next asked for, not here.
        await self._keep_pools_full()

    def _idle_timeout(self, session: LabSession) -> float:
        idle = session.lab.idle_timeout
        return idle if idle is not None else self.cull_idle_timeout

    async def shutdown(self) -> None:
        """Stop every session and wait until all their processes are gone."""
        self._shutting_down = True
        if self._refill_timer is not None:
            self._refill_timer.cancel()
        if self._culler is not None:
            self._culler.stop()
            self._culler = None
        sessions = [s for s in self._sessions.values() if not s.closed]
        if sessions:
            self.log.info("labkernel: stopping %d lab session(s)", len(sessions))
        results = await asyncio.gather(self.warm_pool.shutdown(), *(s.stop("stopped") for s in sessions),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                self.log.error("labkernel: stopping a session at shutdown failed: %s", result)
        # Their cgroups go once their last processes are reaped, their scratch folders
        # and setup leftovers once they have closed: give that a moment.
        releases = [f for s in self._sessions.values() for f in (s.released, s.cleaned)
                    if f is not None and not f.done()]
        if releases:
            await asyncio.wait(releases, timeout=self.kill_timeout)
