"""One session's enclosure: what holds its processes, from before its spawn until it
has ended; and the enclosures of the ``cgroup``, ``subreaper`` and ``scan`` modes.

Ending a session is the same in every mode (``Enclosure.end``): SIGHUP (and SIGCONT,
so stopped jobs see it) to its processes, SIGKILL after ``grace``, and a deadline
after which what could not be killed (a process stuck in the kernel, one whose uid
the server may not signal) is reported rather than waited for. In the scanning modes
the processes are first stopped, then killed, so that none can fork between the scan
and the kill. Every ``/proc`` scan runs in the loop's executor, never on the event
loop.

A per-session process limit comes with any mode: a pids cgroup where the server may
create one (``pids.max``, the v2 controller or the v1 hierarchy), ``RLIMIT_NPROC``
otherwise.

A lab's hidden scripts (setup, checks) run inside the same enclosure
(``Enclosure.script``), so that what they start ends with the session and a check
sees the lab's processes. The enclosure exists before the shell does, since the
setup runs first: a cgroup is made with the enclosure, and a PID namespace by a
*holder* when a script needs it before the shell (``pidns.PidNamespaceEnclosure``).
Each script runs behind its reaper (``scripts.SCRIPT_REAPER``) in a process session
of its own with a marker of its own, so that the script's own end can kill what it
started without touching the learner's processes (under subreaper the reaper is the
script's subreaper, which also holds what the session's end must find).

A mode is one ``Enclosure`` subclass: its ``mode`` name, its ``probe`` (does it work
here, and with what), and what it does at each step of a session's life. The modes'
order is ``modes.ENCLOSURES``.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import resource
import shutil
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .cgroups import (
    cgroup_dirs,
    cgroup_name,
    cgroup_procs,
    kill_cgroup,
    make_cgroup,
    populated,
    remove_soon,
)
from .procfs import MARKER_ENV, SERVER_ENV, members, read_procs, server_id, signal_all
from .scripts import joined, reaper_argv, subreaper_argv, with_limits

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36

try:
    _libc: Any = ctypes.CDLL(None, use_errno=True)
    _prctl = _libc.prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _set(option: int, value: int) -> None:
    """prctl(option, value); raises OSError. Safe between fork and exec."""
    if _prctl is None or _prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno() if _prctl else 38, "prctl failed")


class Support(NamedTuple):
    """How a mode works on this host: the keyword arguments its enclosures are made
    with, and a word for the log (``pidns (bwrap)``)."""

    options: Mapping[str, Any]
    detail: str = ""


class Enclosure:
    """What holds one session's processes, from before its spawn until it has ended.

    The session spawns ``wrap(argv)`` with ``env()`` added to its environment and
    ``preexec`` run in the child, tells ``started(pid)``, and at its end awaits
    ``end``, which returns the pids it could not kill, then ``release``.
    """

    #: The mode's name, as configured and shown by ``GET /health``.
    mode = ""
    #: Named ways of making the mode's enclosures (``<mode>-<variant>``), preferred first.
    variants: tuple[str, ...] = ()

    @classmethod
    def probe(cls, variant: str = "", **settings: Any) -> Support | None:
        """Whether the mode works on this host for this server's user, and how (by
        ``variant``, or the first of ``variants`` that works); None if it does not.
        Cheap, or probed once per process: it runs before the server answers.
        ``settings`` are the server's for the modes that have some (``sandbox``);
        the others take none."""
        raise NotImplementedError

    #: The host folder that is the session's home (``~``), if not the server's own.
    home: str | None = None

    def place(self, target: str) -> tuple[str, str]:
        """Where on the host a file goes that the session must find at absolute path
        ``target``: ``(folder, path below it)``. Only a sandbox has a filesystem of the
        session's own; elsewhere the target is the host's, and a lab's file must not
        land there: ValueError."""
        raise ValueError(f"its asset target {target!r} is outside the session's folder: absolute targets are "
                         "placed only in a sandbox (containment 'sandbox'), which this session does not have")

    def __init__(self, session_id: str, *, max_processes: int, log: Any, folder: str = "",
                 protected: tuple[str, ...] = (), max_memory: int = 0):
        self.session_id = session_id
        #: The session's folder (its working directory), where a mode needs to know it.
        self.folder = folder
        #: The server's folders no file of the lab is ever written into (real paths).
        self.protected = protected
        self.leader = 0
        self.log = log
        self._max_processes = max_processes
        self._name = cgroup_name(session_id)
        #: The cgroups that hold the session's limits (pids.max, its memory's), one per
        #: hierarchy: on v2 with both controllers, one for both.
        self._limit_cgroups: list[str] = []
        self._pids_limited = False  # by a cgroup's pids.max; else RLIMIT_NPROC
        dirs = cgroup_dirs()
        wanted: dict[str, dict[str, int]] = {}
        if max_processes > 0 and dirs.pids is not None:
            wanted.setdefault(dirs.pids, {})["pids_max"] = max_processes
        if max_memory > 0 and dirs.memory is not None:
            wanted.setdefault(dirs.memory, {})["memory_max"] = max_memory
        for parent, limits in wanted.items():
            try:
                self._limit_cgroups.append(make_cgroup(parent, self._name, **limits))
            except OSError as e:
                self.log.warning("labkernel: no %s cgroup for session %s: %s", " and ".join(
                    k.partition("_")[0] for k in limits), session_id, e)
                continue
            self._pids_limited = self._pids_limited or "pids_max" in limits

    def wrap(self, argv: list[str], cwd: str = "") -> list[str]:
        """What to spawn for the session's program ``argv`` (started in ``cwd``): the
        mode's wrapping, behind a cgroup join if any."""
        return self._joined(self._wrap(argv, cwd))

    def _joined(self, argv: list[str]) -> list[str]:
        return joined([os.path.join(path, "cgroup.procs") for path in self._joins()], argv)

    def _wrap(self, argv: list[str], cwd: str) -> list[str]:
        return argv

    # -- hidden scripts (setup, checks): in the enclosure, each behind its reaper

    #: Whether a script's reaper is made its PR_SET_CHILD_SUBREAPER (``PRCTL_EXEC``),
    #: so that the script's own end takes its orphans too. Only where nothing else
    #: would hold them until the session ends (subreaper): the helper costs ~25 ms
    #: per script (checks took 31 ms instead of 2.5 in a cgroup-mode server), and a
    #: PID namespace or a cgroup holds them anyway.
    _script_subreaper = False

    #: Whether the enclosure finds what a script started only through the script's
    #: reaper (subreaper): then a reaper stays alive, and in the session's reach,
    #: from its spawn until the session ends or the script's tree has been killed.
    needs_reapers = False

    async def prepare(self) -> None:
        """Make sure scripts can run inside the enclosure, before the session's program
        exists too (a PID namespace is made for them then). Raises OSError if they
        cannot (the enclosure is gone: its session is ending)."""

    def script(self, argv: list[str], cwd: str) -> list[str]:
        """What to spawn for a hidden script ``argv``: its reaper (``SCRIPT_REAPER``),
        inside the enclosure. Call ``prepare`` first. Spawn it without a preexec_fn
        (a vfork): the limit and prctl the child needs come from prlimit or
        ``PRCTL_EXEC`` in front of it."""
        nproc = self._max_processes if self._max_processes > 0 and not self._pids_limited else 0
        # In front of nsenter: outside the namespace, and the limit is inherited.
        spawn = with_limits(self._enter(reaper_argv(argv, cwd)), nproc=nproc, subreaper=self._script_subreaper)
        return self._joined(spawn)

    def _enter(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the enclosure when spawned by the server."""
        return argv

    def reapers(self, pid: int) -> set[int]:
        """The script's reaper spawned as ``pid`` and what stands between them (one small read)."""
        return {pid}

    def track_reaper(self, pid: int, let_go: Callable[[], None]) -> None:
        """Register a script's reaper, spawned as ``pid``, until ``forget_reaper``:
        where ``needs_reapers`` the session's end finds what the script started
        through it, and calls ``let_go`` (which lets the reaper exit) once the
        session has ended."""

    def forget_reaper(self, pid: int) -> None:
        """The script's tree has been killed, or its leftovers are held otherwise."""

    def _joins(self) -> list[str]:
        """The cgroups the session's first process joins."""
        return list(self._limit_cgroups)

    def env(self) -> dict[str, str]:
        return {MARKER_ENV: self.session_id, SERVER_ENV: server_id()}

    @property
    def marker(self) -> bytes:
        return f"{MARKER_ENV}={self.session_id}\0".encode()

    #: Whether the session's processes run in a user namespace of their own, where the
    #: RLIMIT_NPROC fallback is set once it exists (``nproc_inside``), not before.
    _nproc_inside = False

    @property
    def nproc_inside(self) -> int:
        """The RLIMIT_NPROC to set inside the session's user namespace, once made (0: none).

        Since Linux 5.14 a user namespace counts its processes by itself (ucounts), and
        compares the count in the parent namespace with the limit its creator had
        when it made it. So a limit set before the namespace is made counts every
        process of the server's user, all sessions' (one session's fork bomb of 499
        processes stopped every other session, measured); set in it, only the
        session's own: the server makes the namespace under its own limit.
        """
        if self._nproc_inside and self._max_processes > 0 and not self._pids_limited:
            return self._max_processes
        return 0

    def preexec(self) -> None:
        """Run in the child between fork and exec: limits and prctl, no cgroup writes.

        The server's loop waits for the child's exec; joining a cgroup there held
        it some 10 ms more (cgroup migration synchronises with RCU), so the join is
        done after the exec, by ``wrap``'s ``sh``, before the program runs.
        """
        if self._max_processes > 0 and not self._pids_limited and not self._nproc_inside:
            # Counts every process of the uid, and root is exempt: a weak fallback.
            limit = self._max_processes
            _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
            if hard != resource.RLIM_INFINITY:
                limit = min(limit, hard)
            resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit if hard == resource.RLIM_INFINITY else hard))
        # The shell (or the wrapper in front of it) dies with the server's main thread.
        _set(_PR_SET_PDEATHSIG, signal.SIGKILL)

    def started(self, pid: int) -> None:
        self.leader = pid

    async def end(self, grace: float, deadline: float) -> list[int]:
        """SIGHUP, SIGKILL after ``grace``; the pids still alive at ``deadline`` (monotonic)."""
        raise NotImplementedError

    async def release(self) -> None:
        """Remove the cgroups the enclosure created, once they are empty.

        A process just killed leaves its cgroup only once reaped, and orphans are
        reaped by init, whenever it gets to it: retry for a while, then leave the
        cgroup to the next server's start (``clean_leftovers``).
        """
        paths = self._cgroups()
        self._limit_cgroups = []
        await remove_soon([p for p in paths if p], self.log)

    def _cgroups(self) -> list[str]:
        return list(self._limit_cgroups)

    # -- shared by the modes

    @staticmethod
    async def _run(func: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, func, *args)

    @staticmethod
    async def _until(done: Callable[[], Any], deadline: float) -> Any:
        """Await ``done()`` (sync or async) until truthy or the deadline; its last value."""
        delay = 0.005
        while True:
            result = done()
            if asyncio.iscoroutine(result):
                result = await result
            if result or time.monotonic() >= deadline:
                return result
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.1)


class _Scanning(Enclosure):
    """Finds the session's processes by reading /proc; kills them stopped."""

    def __init__(self, session_id: str, **kwargs: Any):
        super().__init__(session_id, **kwargs)
        self._known: set[int] = set()
        #: Scripts' reapers the session's end must find (see ``needs_reapers``), and
        #: how to let each go once it is over.
        self._reapers: dict[int, Callable[[], None]] = {}

    def _find(self) -> set[int]:
        procs, marked = read_procs(self.marker)
        # Once found, a process stays a root: when its parent dies it is reparented
        # out of the tree, and with setsid and no marker nothing else would find it.
        # No session id before the program runs: session 0 is the kernel's threads.
        roots = [self.leader, *self._reapers, *self._known]
        found = members(procs, roots=roots, sid=self.leader or None, marked=marked)
        self._known = found
        return found

    async def end(self, grace: float, deadline: float) -> list[int]:
        pids = await self._run(self._find)
        signal_all(pids - self._spared(), signal.SIGHUP)
        signal_all(pids, signal.SIGCONT)  # a stopped job only sees SIGHUP once continued

        async def emptied() -> bool:
            nonlocal pids
            pids = await self._run(self._find)
            # Reapers wait to be let go: they are killed below, with what is left.
            return not pids - set(self._reapers)
        await self._until(emptied, min(deadline, time.monotonic() + grace))
        while pids and time.monotonic() < deadline:
            # Stopped processes cannot fork: stop all, look again for children born
            # meanwhile, and kill only once nothing new turns up.
            stopped: set[int] = set()
            while pids - stopped and time.monotonic() < deadline:
                signal_all(pids - stopped, signal.SIGSTOP)
                stopped |= pids
                pids = await self._run(self._find)
            signal_all(stopped | pids, signal.SIGKILL)
            await asyncio.sleep(0.01)
            pids = await self._run(self._find)
        return sorted(pids)

    def _spared(self) -> set[int]:
        """Processes SIGHUP must not reach: the scripts' reapers (dead, they would
        let their orphans go to init before these are found)."""
        return set(self._reapers)

    async def release(self) -> None:
        reapers, self._reapers = self._reapers, {}
        for let_go in reapers.values():
            let_go()
        await super().release()


class ScanEnclosure(_Scanning):
    """The last resort: the processes in the shell's session, those carrying the
    session's marker in their environment, and every descendant of these, found by
    reading ``/proc`` again and again until none is left. An orphan that dropped the
    marker (``setsid env -i`` and a double fork) escapes it."""

    mode = "scan"

    @classmethod
    def probe(cls, variant: str = "", **settings: Any) -> Support | None:
        return Support({}) if os.path.isdir("/proc") else None


class SubreaperEnclosure(_Scanning):
    """The program behind a subreaper ``sh`` (``SESSION_SUBREAPER``): an orphan is
    reparented to it, not to init, so it stays a descendant, findable and killed;
    when the program exits that ``sh`` kills what is left before it exits itself.
    PDEATHSIG ties it to the server. Each hidden script is behind its reaper, a
    subreaper too: a setup's reaper stays, holding what the setup left running,
    until the session ends.

    The server itself is not made a subreaper: it would inherit every kernel's
    orphans as zombies nobody reaps.
    """

    mode = "subreaper"
    _script_subreaper = True
    needs_reapers = True

    @classmethod
    def probe(cls, variant: str = "", **settings: Any) -> Support | None:
        works = _prctl is not None and os.path.exists("/proc/self/task") and bool(shutil.which("sh"))
        return Support({}) if works else None

    def _wrap(self, argv: list[str], cwd: str) -> list[str]:
        return subreaper_argv(argv)

    def preexec(self) -> None:
        super().preexec()
        _set(_PR_SET_CHILD_SUBREAPER, 1)  # kept across exec: the sh is the subreaper

    def track_reaper(self, pid: int, let_go: Callable[[], None]) -> None:
        self._reapers[pid] = let_go

    def forget_reaper(self, pid: int) -> None:
        self._reapers.pop(pid, None)

    def _spared(self) -> set[int]:
        return {self.leader, *super()._spared()}


class CgroupEnclosure(Enclosure):
    """A cgroup v2 of the session's own, ended with ``cgroup.kill``. It is made with
    the enclosure, before any setup runs; the program and every hidden script join
    it. A server that dies leaves it behind; the next one kills and removes it at
    start (``clean_leftovers``), recognising it by its name (``cgroup_name``)."""

    mode = "cgroup"

    @classmethod
    def probe(cls, variant: str = "", **settings: Any) -> Support | None:
        return Support({}) if cgroup_dirs().unified is not None else None

    def __init__(self, session_id: str, **kwargs: Any):
        super().__init__(session_id, **kwargs)
        unified = cgroup_dirs().unified
        assert unified is not None
        self._cgroup = os.path.join(unified, self._name)
        if self._cgroup in self._limit_cgroups:
            # The pids or memory controller is on v2: the limits' cgroup already is this one.
            self._limit_cgroups.remove(self._cgroup)
        else:
            make_cgroup(unified, self._name)

    def _joins(self) -> list[str]:
        return [self._cgroup, *super()._joins()]

    async def end(self, grace: float, deadline: float) -> list[int]:
        signal_all(await self._run(cgroup_procs, self._cgroup), signal.SIGHUP)
        signal_all(await self._run(cgroup_procs, self._cgroup), signal.SIGCONT)
        await self._until(lambda: not populated(self._cgroup), min(deadline, time.monotonic() + grace))
        if populated(self._cgroup):
            kill_cgroup(self._cgroup)
            await self._until(lambda: not populated(self._cgroup), deadline)
        return sorted(await self._run(cgroup_procs, self._cgroup))

    def _cgroups(self) -> list[str]:
        return [self._cgroup, *super()._cgroups()]
