"""Containment: every process a lab session starts ends with the session.

A learner's shell can leave its session in many ways: ``setsid`` (a new session id),
``env -i`` (no ``LABKERNEL_SESSION`` marker), a double fork (its parent gone, it is
reparented out of the shell's tree), a loop that keeps starting children. Which ways
the server can close depends on what the host allows, so there are four modes,
strongest first; the manager takes the strongest that works (``choose``) unless
configured otherwise:

``pidns``
    Each session in a PID namespace of its own (``bwrap --unshare-pid
    --die-with-parent``, else ``unshare --pid --fork --kill-child``). When the
    namespace's init dies the kernel kills everything in it, whatever it did to
    leave the shell; the init dies with the shell and, through PDEATHSIG, with the
    server, even a server killed with SIGKILL.
``cgroup``
    Each session in a cgroup v2 of its own, ended with ``cgroup.kill``. A server that
    dies leaves the cgroup behind; the next one kills and removes it at start
    (``clean_leftovers``), recognising it by its name, ``labkernel-<serverpid>-<id>``.
``subreaper``
    The session's program runs under a small ``sh`` that is its
    ``PR_SET_CHILD_SUBREAPER``: an orphan is reparented to it, not to init, so it
    stays a descendant, findable and killed; when the program exits that ``sh``
    kills what is left before it exits itself. PDEATHSIG ties it to the server.
``scan``
    The last resort: the processes in the shell's session, those carrying the
    session's marker in their environment, and every descendant of these, found by
    reading ``/proc`` again and again until none is left. An orphan that dropped
    the marker (``setsid env -i`` and a double fork) escapes it.

Ending a session is the same in every mode: SIGHUP (and SIGCONT, so stopped jobs see
it) to its processes, SIGKILL after ``grace``, and a deadline after which what could
not be killed (a process stuck in the kernel, one whose uid the server may not
signal) is reported rather than waited for. In the scanning modes the processes are
first stopped, then killed, so that none can fork between the scan and the kill.
Every ``/proc`` scan runs in the loop's executor, never on the event loop.

A per-session process limit comes with any mode: a pids cgroup where the server may
create one (``pids.max``, the v2 controller or the v1 hierarchy), ``RLIMIT_NPROC``
otherwise.

A lab's hidden scripts (setup, checks) run inside the same enclosure
(``Enclosure.script``), so that what they start ends with the session and a check
sees the lab's processes. The enclosure exists before the shell does, since the
setup runs first: a cgroup is made with the enclosure, and a PID namespace by a
*holder* when a script needs it before the shell (``PidNamespaceEnclosure``). Each
script runs behind its reaper (``SCRIPT_REAPER``) in a process session of its own
with a marker of its own, so that the script's own end can kill what it started
without touching the learner's processes (under subreaper the reaper is the
script's subreaper, which also holds what the session's end must find).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

#: Set in every session's environment: which session a process belongs to, and which
#: server started it (so that a successor can tell a dead server's leftovers).
MARKER_ENV = "LABKERNEL_SESSION"
SERVER_ENV = "LABKERNEL_SERVER_PID"

#: The modes, strongest first.
MODES = ("pidns", "cgroup", "subreaper", "scan")

_PREFIX = "labkernel-"
_LEFTOVER = re.compile(r"^labkernel-(\d+)-")

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


# -- /proc: a pure core and its readers ----------------------------------------------


class Proc(NamedTuple):
    """What a process's ``/proc/PID/stat`` says about its place in the tree."""

    pid: int
    ppid: int
    sid: int
    state: str


def parse_stat(data: bytes) -> Proc | None:
    """Parse ``/proc/PID/stat``; None if it is not one."""
    head, _, rest = data.rpartition(b")")  # the command name may hold spaces and ")"
    fields = rest.split()
    try:
        return Proc(int(head.split(b" (", 1)[0]), int(fields[1]), int(fields[3]), fields[0].decode())
    except (IndexError, ValueError):
        return None


def members(procs: Mapping[int, Proc], *, roots: Iterable[int] = (), sid: int | None = None,
            marked: Iterable[int] = ()) -> set[int]:
    """The live processes of a session: the ``roots``, those in session ``sid``, the
    ``marked`` ones, and every descendant of any of these.

    Descendants are followed through zombies, so a process whose parent has exited
    but not yet been reaped is still found.
    """
    children: dict[int, list[int]] = defaultdict(list)
    for proc in procs.values():
        children[proc.ppid].append(proc.pid)
    found: set[int] = set()
    stack = [pid for pid in roots if pid in procs] + [pid for pid in marked if pid in procs]
    if sid is not None:
        stack += [proc.pid for proc in procs.values() if proc.sid == sid]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return {pid for pid in found if procs[pid].state not in ("Z", "X")}


def read_procs(marker: bytes | None = None) -> tuple[dict[int, Proc], set[int]]:
    """Every process's stat and, with ``marker``, the pids whose environment holds it.

    A whole-``/proc`` scan: run it in an executor, never on the event loop.
    """
    procs: dict[int, Proc] = {}
    marked: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                proc = parse_stat(f.read())
            if proc is None:
                continue
            procs[proc.pid] = proc
            if marker is not None:
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    if marker in f.read():
                        marked.add(proc.pid)
        except OSError:
            continue  # gone in the meantime, or not ours to read
    return procs, marked


def alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (one small read: fine on the loop)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            proc = parse_stat(f.read())
    except OSError:
        return False
    return proc is not None and proc.state not in ("Z", "X")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def namespace_members(ns: str) -> set[int]:
    """The live processes in PID namespace ``ns`` (a whole-/proc scan: executor only)."""
    pids = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and _pid_namespace(int(entry.name)) == ns and alive(int(entry.name)):
            pids.add(int(entry.name))
    return pids


def signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _server_alive(pid: int) -> bool:
    return pid == os.getpid() or alive(pid)


def _server_id() -> str:
    """This server as ``LABKERNEL_SERVER_PID`` names it: its pid, and the PID namespace
    the pid means something in (a server started inside a lab's namespace must not
    take the outer server, invisible to it, for dead)."""
    return f"{os.getpid()}@{_pid_namespace(os.getpid()) or ''}"


# -- cgroups -----------------------------------------------------------------------------


class CgroupDirs(NamedTuple):
    """Where this server may create cgroups: its own v2 cgroup, its v1 pids cgroup."""

    unified: str | None  # a writable v2 directory that has cgroup.kill
    pids: str | None  # a writable directory whose children get pids.max
    pids_v2: bool


def _mounts() -> list[tuple[str, str, str, str]]:
    """(root, mount point, fstype, super options) of every mount of this process."""
    mounts = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, after = left.split(), right.split()
            if len(fields) >= 5 and len(after) >= 3:
                mounts.append((fields[3], fields[4], after[0], after[2]))
    return mounts


def _writable_child(parent: str, needs: str = "cgroup.procs") -> bool:
    """Whether this server may create a child cgroup of ``parent`` that has ``needs``."""
    probe = os.path.join(parent, f"{_PREFIX}{os.getpid()}-probe")
    try:
        os.mkdir(probe)
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        return os.path.exists(os.path.join(probe, needs))
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(probe)


@functools.cache
def cgroup_dirs() -> CgroupDirs:
    """Find the cgroups this server may create children of (probed once per process).

    On a hybrid host (v1 controllers, v2 mounted at ``/sys/fs/cgroup/unified``
    without them) the kill comes from v2 and ``pids.max`` from the v1 hierarchy.
    """
    own: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                own[name] = path
    unified = pids = None
    pids_v2 = False
    for root, point, fstype, options in _mounts():
        if fstype == "cgroup2" and "" in own and unified is None:
            path = own[""]
            rel = path[len(root):] if root != "/" and path.startswith(root) else path
            candidate = os.path.normpath(point + rel)
            # The root cgroup has no cgroup.kill; its children do.
            if _writable_child(candidate, "cgroup.kill"):
                unified = candidate
                with contextlib.suppress(OSError), open(os.path.join(candidate, "cgroup.subtree_control")) as s:
                    if "pids" in s.read().split():
                        pids, pids_v2 = candidate, True
        elif fstype == "cgroup" and "pids" in options.split(",") and "pids" in own and pids is None:
            path = own["pids"]
            rel = path[len(root):] if root != "/" and path.startswith(root) else path
            candidate = os.path.normpath(point + rel)
            if _writable_child(candidate):
                pids = candidate
    return CgroupDirs(unified, pids, pids_v2)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _cgroup_procs(path: str) -> set[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return {int(p) for p in f.read().split()}
    except OSError:
        return set()


def _kill_cgroup(path: str) -> None:
    """SIGKILL everything in a cgroup: ``cgroup.kill`` on v2, one by one on v1."""
    if os.path.exists(os.path.join(path, "cgroup.kill")):
        with contextlib.suppress(OSError):
            _write(os.path.join(path, "cgroup.kill"), "1")
    else:
        signal_all(_cgroup_procs(path), signal.SIGKILL)


def _remove_cgroup(path: str) -> bool:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


async def _remove_soon(paths: list[str], log: Any, patience: float = 60.0) -> None:
    """rmdir each cgroup now or, while it still holds dying processes, a little later."""
    deadline, delay = time.monotonic() + patience, 0.02
    while True:
        paths = [path for path in paths if not _remove_cgroup(path)]
        if not paths:
            return
        if time.monotonic() >= deadline:
            log.warning("labkernel: cgroup(s) %s still hold processes; left for the next start", paths)
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


#: Joins the cgroups whose cgroup.procs files precede "--", then becomes the program.
#: Run after exec, so that the server's loop does not wait for the migration; the
#: program starts only once it is in (failing to join fails the session).
_JOIN_SCRIPT = """while [ "$1" != -- ]; do echo 0 > "$1" || exit 126; shift; done
shift
exec "$@"
"""

#: The first process of a hidden script (setup, check), its *reaper*: runs the script
#: in the session's folder (``$1``; entering a mount namespace leaves one at its
#: root) with nothing on its stdin, then reports the script's exit status on its own
#: stdin, a socket the server holds, and waits there until the server lets it go
#: (closes the socket). Under the subreaper mode it is the script's
#: PR_SET_CHILD_SUBREAPER (``_PRCTL_EXEC``), so everything the script started,
#: orphans included, is in its tree when the server kills that tree, or keeps it (a
#: setup's services) until the session ends.
SCRIPT_REAPER = """cd -- "$1" || exit 126
shift
"$@" </dev/null
rc=$?
exec >/dev/null 2>&1
echo "$rc" >&0
read -r _
exit "$rc"
"""


@functools.cache
def _prlimit_path() -> str | None:
    return shutil.which("prlimit")


@functools.cache
def _helper_python() -> str:
    """An interpreter to run ``_PRCTL_EXEC``: the server's, or any python3 on PATH
    if the server's own path is not one it may execute (it needs only the stdlib)."""
    if os.access(sys.executable, os.X_OK):
        return sys.executable
    return shutil.which("python3") or sys.executable


def reaper_argv(argv: list[str], cwd: str) -> list[str]:
    """``argv`` behind ``SCRIPT_REAPER``, in folder ``cwd``."""
    return ["sh", "-c", SCRIPT_REAPER, "labkernel-script", cwd, *argv]


#: Becomes the program after ``--`` as its own PR_SET_CHILD_SUBREAPER (if argv[2]
#: is 1; kept across exec) and under RLIMIT_NPROC argv[1] (if above 0; without the
#: prctl, util-linux's prlimit does that where there is one). A prctl only
#: acts on its caller: done by the server between fork and exec (a preexec_fn), it
#: turns the spawn from a vfork into a fork that held the event loop ~10 ms per
#: script (100 MiB server, this 2-core VM; 0.9 ms with vfork); done here, run by
#: the server's own interpreter, it costs ~25 ms per script, off the loop. (Inside a
#: PID namespace it would have to run after nsenter's fork: an orphan goes to the
#: nearest subreaper in its own namespace.)
_PRCTL_EXEC = """import ctypes, os, resource, sys
limit = int(sys.argv[1])
if limit > 0:
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_NPROC, (limit, hard if hard != resource.RLIM_INFINITY else limit))
if sys.argv[2] == "1" and ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:
    sys.exit("labkernel: PR_SET_CHILD_SUBREAPER failed: " + os.strerror(ctypes.get_errno()))
os.execvp(sys.argv[4], sys.argv[4:])
"""


# -- one session's enclosure ------------------------------------------------------------


class Enclosure:
    """What holds one session's processes, from before its spawn until it has ended.

    The session spawns ``wrap(argv)`` with ``env()`` added to its environment and
    ``preexec`` run in the child, tells ``started(pid)``, and at its end awaits
    ``end``, which returns the pids it could not kill.
    """

    mode = ""

    def __init__(self, session_id: str, *, max_processes: int, log: Any):
        self.session_id = session_id
        self.leader = 0
        self.log = log
        self._max_processes = max_processes
        self._name = f"{_PREFIX}{os.getpid()}-{session_id}"
        self._pids_cgroup: str | None = None
        dirs = cgroup_dirs()
        self._pids_limited = False  # by a cgroup's pids.max; else RLIMIT_NPROC
        if max_processes > 0 and dirs.pids is not None:
            path = os.path.join(dirs.pids, self._name)
            try:
                os.mkdir(path)
                _write(os.path.join(path, "pids.max"), str(max_processes))
                self._pids_cgroup = path
                self._pids_limited = True
            except OSError as e:
                self.log.warning("labkernel: no pids cgroup for session %s: %s", session_id, e)
                _remove_cgroup(path)

    def wrap(self, argv: list[str], cwd: str = "") -> list[str]:
        """What to spawn for the session's program ``argv`` (started in ``cwd``): the
        mode's wrapping, behind a cgroup join if any."""
        return self._joined(self._wrap(argv, cwd))

    def _joined(self, argv: list[str]) -> list[str]:
        joins = self._joins()
        if not joins:
            return argv
        return ["sh", "-c", _JOIN_SCRIPT, "labkernel-join",
                *(os.path.join(path, "cgroup.procs") for path in joins), "--", *argv]

    def _wrap(self, argv: list[str], cwd: str) -> list[str]:
        return argv

    # -- hidden scripts (setup, checks): in the enclosure, each behind its reaper

    #: Whether a script's reaper is made its PR_SET_CHILD_SUBREAPER (``_PRCTL_EXEC``),
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
        ``_PRCTL_EXEC`` in front of it."""
        spawn = self._enter(reaper_argv(argv, cwd))
        nproc = self._max_processes if self._max_processes > 0 and not self._pids_limited else 0
        # In front of nsenter: outside the namespace, and the limit is inherited.
        if self._script_subreaper:
            spawn = [_helper_python(), "-I", "-S", "-c", _PRCTL_EXEC, str(nproc), "1", "--", *spawn]
        elif nproc and _prlimit_path():
            soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)  # a spawn inherits the server's
            if hard != resource.RLIM_INFINITY:
                nproc = min(nproc, hard)
            hard_text = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
            spawn = [_prlimit_path() or "prlimit", f"--nproc={nproc}:{hard_text}", "--", *spawn]
        elif nproc:
            spawn = [_helper_python(), "-I", "-S", "-c", _PRCTL_EXEC, str(nproc), "0", "--", *spawn]
        return self._joined(spawn)

    def _enter(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the enclosure when spawned by the server."""
        return argv

    def reapers(self, pid: int) -> set[int]:
        """The script's reaper spawned as ``pid`` and what stands between them (one small read)."""
        return {pid}

    def adopt(self, pid: int, close: Callable[[], None]) -> None:
        """A script's reaper, from its spawn until ``disown``: where ``needs_reapers``
        the session's end finds what the script started through it, and ``close``
        (which lets it go) is called once the session has ended."""

    def disown(self, pid: int) -> None:
        """The script's tree has been killed, or its leftovers are held otherwise."""

    def _joins(self) -> list[str]:
        """The cgroups the session's first process joins."""
        return [self._pids_cgroup] if self._pids_cgroup else []

    def env(self) -> dict[str, str]:
        return {MARKER_ENV: self.session_id, SERVER_ENV: _server_id()}

    @property
    def marker(self) -> bytes:
        return f"{MARKER_ENV}={self.session_id}\0".encode()

    def preexec(self) -> None:
        """Run in the child between fork and exec: limits and prctl, no cgroup writes.

        The server's loop waits for the child's exec; joining a cgroup there held
        it some 10 ms more (cgroup migration synchronises with RCU), so the join is
        done after the exec, by ``wrap``'s ``sh``, before the program runs.
        """
        if self._max_processes > 0 and not self._pids_limited:
            # Counts every process of the uid, and root is exempt: a weak fallback.
            limit = self._max_processes
            soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
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
        self._pids_cgroup = None
        await _remove_soon([p for p in paths if p], self.log)

    def _cgroups(self) -> list[str]:
        return [self._pids_cgroup] if self._pids_cgroup else []

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
        for close in reapers.values():
            close()
        await super().release()


class ScanEnclosure(_Scanning):
    mode = "scan"


#: The subreaper's ``sh``: runs the program, then kills what it left behind, one
#: generation at a time (each orphan's children are reparented to this sh in turn).
#: Handlers (not ignored signals, which the program would inherit) keep it alive
#: through the SIGHUP that ends the session and Ctrl-C typed at the program.
_REAPER_SCRIPT = r"""trap : HUP INT QUIT TERM
"$@"
rc=$?
i=0
while [ $i -lt 1000 ]; do
  kids=
  read -r kids < /proc/$$/task/$$/children
  live=
  for k in $kids; do
    read -r st < /proc/$k/stat || continue
    rest=${st##*\)}
    case $rest in " Z"*|" X"*) ;; *) live="$live $k";; esac
  done
  [ -n "$live" ] || break
  kill -KILL $live
  i=$((i+1))
done 2>/dev/null
exit $rc
"""


class SubreaperEnclosure(_Scanning):
    """The program behind a subreaper ``sh``, and each hidden script behind its
    reaper, a subreaper too: a setup's reaper stays, holding what the setup left
    running, until the session ends."""

    mode = "subreaper"
    _script_subreaper = True
    needs_reapers = True

    def _wrap(self, argv: list[str], cwd: str) -> list[str]:
        return ["sh", "-c", _REAPER_SCRIPT, "labkernel-session", *argv]

    def preexec(self) -> None:
        super().preexec()
        _set(_PR_SET_CHILD_SUBREAPER, 1)  # kept across exec: the sh is the subreaper

    def adopt(self, pid: int, close: Callable[[], None]) -> None:
        self._reapers[pid] = close

    def disown(self, pid: int) -> None:
        self._reapers.pop(pid, None)

    def _spared(self) -> set[int]:
        return {self.leader, *super()._spared()}


class CgroupEnclosure(Enclosure):
    """The session's cgroup is made with the enclosure, before any setup runs; the
    program and every hidden script join it."""

    mode = "cgroup"

    def __init__(self, session_id: str, **kwargs: Any):
        super().__init__(session_id, **kwargs)
        unified = cgroup_dirs().unified
        assert unified is not None
        self._cgroup = os.path.join(unified, self._name)
        if self._pids_cgroup == self._cgroup:
            # The pids controller is on v2: the pids cgroup already is this one.
            self._pids_cgroup = None
        else:
            os.mkdir(self._cgroup)

    def _joins(self) -> list[str]:
        return [self._cgroup, *super()._joins()]

    def _populated(self) -> bool:
        try:
            with open(os.path.join(self._cgroup, "cgroup.events")) as f:
                return "populated 1" in f.read()
        except OSError:
            return False

    async def end(self, grace: float, deadline: float) -> list[int]:
        signal_all(await self._run(_cgroup_procs, self._cgroup), signal.SIGHUP)
        signal_all(await self._run(_cgroup_procs, self._cgroup), signal.SIGCONT)
        await self._until(lambda: not self._populated(), min(deadline, time.monotonic() + grace))
        if self._populated():
            _kill_cgroup(self._cgroup)
            await self._until(lambda: not self._populated(), deadline)
        return sorted(await self._run(_cgroup_procs, self._cgroup))

    def _cgroups(self) -> list[str]:
        return [self._cgroup, *super()._cgroups()]


#: The program of a PID namespace made for a lab's hidden setup before the shell
#: exists: it waits on its stdin, a pipe from the server, so it ends with the server
#: (EOF), or with the SIGHUP that ends the session; the namespace ends with it.
_HOLDER = ["sh", "-c", "read -r _", "labkernel-holder"]


def _find_init(creator: int) -> int:
    """The init of the PID namespace that ``creator`` made: its child in another
    namespace than ours; 0 while there is none (one small read)."""
    init = next(iter(_children(creator)), 0) if creator else 0
    ns = _pid_namespace(init) if init else None
    return init if ns and ns != _pid_namespace(os.getpid()) else 0


def _open_namespace(pid: int) -> dict[str, int]:
    """Open the user (if not ours), mount and PID namespaces of process ``pid`` as
    files, if it is alive and stays so meanwhile (then no other process can have had
    its pid). Take them from the namespace's program (its init's child), not from
    the init: bwrap's init changes its mount namespace while it builds the sandbox,
    and forks the program once that is done."""
    pidfd = os.pidfd_open(pid)
    try:
        files = _open_namespace_files(pid)
        readable, _, _ = select.select([pidfd], [], [], 0)
    finally:
        os.close(pidfd)
    if readable:
        for fd in files.values():
            os.close(fd)
        raise OSError(3, f"process {pid} ended")
    return files


def _open_namespace_files(pid: int) -> dict[str, int]:
    files: dict[str, int] = {}
    try:
        for kind in ("user", "mnt", "pid"):
            path = f"/proc/{pid}/ns/{kind}"
            if kind == "user" and os.readlink(path) == os.readlink("/proc/self/ns/user"):
                continue  # entering one's own user namespace is an error
            files[kind] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        for fd in files.values():
            os.close(fd)
        raise
    return files


def _nsenter_argv(nsenter: str, files: Mapping[str, int], argv: list[str]) -> list[str]:
    """``argv`` run by nsenter in the namespaces this server holds open as ``files``.

    nsenter opens them as ``/proc/<server>/fd/N``: no pid is named, so none can have
    been reused by another process in between, and no descriptor is passed down to
    the program. It forks after entering, so the program is inside the PID namespace.
    """
    server = os.getpid()
    args = [nsenter]
    if "user" in files:
        # Without --preserve-credentials nsenter would become uid 0 in the namespace.
        args += [f"--user=/proc/{server}/fd/{files['user']}", "--preserve-credentials"]
    return [*args, f"--mount=/proc/{server}/fd/{files['mnt']}", f"--pid=/proc/{server}/fd/{files['pid']}",
            "--", *argv]


#: Enters a folder, then becomes the program: after nsenter, which leaves the
#: process at the mount namespace's root.
_CD_THEN_EXEC = 'cd -- "$0" || exit 126; exec "$@"'


class PidNamespaceEnclosure(Enclosure):
    """A PID namespace for the session, made by whichever of its processes comes first.

    Its program makes it, as ``prefix`` (bwrap or unshare) in front of it; or, for a
    lab whose hidden setup runs before the shell exists, ``prepare`` makes it with a
    *holder* (``_HOLDER``) in the program's place, and the program enters it later.
    Every hidden script enters it with nsenter (``_nsenter_argv``), so that a check
    sees and signals the lab's processes, not the server's, and whatever a script
    starts dies with the namespace. The script's reaper is no subreaper (see
    ``Enclosure._script_subreaper``): a script's orphan is the namespace init's,
    and one that also left the script's process session and dropped its marker
    outlives the script, until the session ends.
    """

    mode = "pidns"

    def __init__(self, session_id: str, *, prefix: list[str], nsenter: str = "nsenter", **kwargs: Any):
        super().__init__(session_id, **kwargs)
        self._prefix = prefix
        self._nsenter = nsenter
        self._init = 0  # the namespace's init, as the server sees it
        self._init_fd = -1  # its pidfd: readable once it has exited
        self._ns = ""
        self._holder: subprocess.Popen[bytes] | None = None
        self._ns_files: dict[str, int] = {}  # "user", "mnt", "pid" -> an open file

    @property
    def _creator(self) -> int:
        """The process that made the namespace: the holder's leader, or the program's."""
        return self._holder.pid if self._holder is not None else self.leader

    def _wrap(self, argv: list[str], cwd: str) -> list[str]:
        if self._holder is None:
            return [*self._prefix, *argv]
        return self._enter(["sh", "-c", _CD_THEN_EXEC, cwd or "/", *argv])

    def _enter(self, argv: list[str]) -> list[str]:
        assert self._ns_files, "prepare() first"
        return _nsenter_argv(self._nsenter, self._ns_files, argv)

    def started(self, pid: int) -> None:
        super().started(pid)
        # The init is forked by the leader a moment after the spawn: learn it early,
        # before the leader may have exited (bwrap's does not wait for its init).
        self._look_for_init(tries=100)

    def _look_for_init(self, tries: int = 0) -> None:
        if self._init_fd >= 0:
            return
        init = _find_init(self._creator)
        if init:
            try:
                self._init_fd = os.pidfd_open(init)
            except OSError:
                return
            self._init, self._ns = init, _pid_namespace(init) or ""
        elif tries > 0:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_later(0.02, self._look_for_init, tries - 1)

    async def prepare(self) -> None:
        if self._ns_files:
            return
        if not self.leader and self._holder is None:
            self._spawn_holder()
        # The namespace's program (see _open_namespace) runs once the init has built it.
        deadline = time.monotonic() + 10
        delay = 0.001
        program = 0
        while True:
            self._look_for_init()
            program = next(iter(_children(self._init)), 0) if self._init else 0
            if program or not alive(self._creator) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        if not program:
            raise OSError(3, "the session's PID namespace is gone")
        files = _open_namespace(program)
        if self._ns_files:  # another prepare() got there first
            for fd in files.values():
                os.close(fd)
            return
        self._ns_files = files

    def _spawn_holder(self) -> None:
        """Make the namespace with the holder in it (fork and exec on the loop, as a
        session's spawn). Its environment is nearly empty: a lab can read its init's."""
        env = {"PATH": os.environ.get("PATH", os.defpath), **self.env()}
        self._holder = subprocess.Popen(
            self.wrap(_HOLDER), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env, cwd="/", preexec_fn=self.preexec, start_new_session=True)

    def reapers(self, pid: int) -> set[int]:
        # nsenter, and the reaper it forked into the namespace.
        return {pid, *_children(pid)}

    def _namespace_alive(self) -> bool:
        """While the init lives, the namespace is not empty: it exits last (one poll, no scan)."""
        if self._init_fd < 0:
            return alive(self._creator)
        readable, _, _ = select.select([self._init_fd], [], [], 0)
        return not readable

    async def end(self, grace: float, deadline: float) -> list[int]:
        self._look_for_init()
        if not self._namespace_alive():
            return []
        pids = await self._run(namespace_members, self._ns) if self._ns else set()
        # Not the init, nor the leader outside: either dying kills the rest without a
        # SIGHUP. The holder (or the program) takes the namespace down as it dies.
        signal_all(pids - {self._init}, signal.SIGHUP)
        signal_all(pids - {self._init}, signal.SIGCONT)
        await self._until(lambda: not self._namespace_alive(), min(deadline, time.monotonic() + grace))
        if self._namespace_alive():
            # SIGKILL reaches a namespace's init from outside; the kernel kills the rest.
            signal_all([self._init] if self._init else [self._creator], signal.SIGKILL)
            await self._until(lambda: not self._namespace_alive(), deadline)
        if not self._namespace_alive():
            return []
        pids = await self._run(namespace_members, self._ns) if self._ns else set()
        return sorted(pids | {self._init or self._creator})

    async def release(self) -> None:
        if self._init_fd >= 0:
            os.close(self._init_fd)
            self._init_fd = -1
        files, self._ns_files = self._ns_files, {}
        for fd in files.values():
            os.close(fd)
        holder, self._holder = self._holder, None
        if holder is not None:
            assert holder.stdin is not None
            holder.stdin.close()  # its EOF: the holder ends if nothing else ended it
            if not await self._until(lambda: holder.poll() is not None, time.monotonic() + 5):
                holder.kill()  # the leader; bwrap's init and unshare's child die with it
                await self._until(lambda: holder.poll() is not None, time.monotonic() + 5)
        await super().release()


# -- choosing a mode ---------------------------------------------------------------------


def _works(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


#: The tools that make a PID namespace, in order of preference.
PIDNS_TOOLS = ("bwrap", "unshare")


@functools.cache
def pidns_prefix(tool: str = "") -> tuple[str, ...] | None:
    """The argv prefix that runs a program in a new PID namespace here, or None.

    ``tool`` is one of ``PIDNS_TOOLS``; by default the first that works. Probed
    once per process by running ``true`` under it (a few ms each).
    """
    if not tool:
        return next(filter(None, map(pidns_prefix, PIDNS_TOOLS)), None)
    path = shutil.which(tool)
    if not path:
        return None
    if tool == "bwrap":
        # The host's root, devices and /dev/pts as they are (the PTY must stay the
        # controlling terminal: no --new-session, no new /dev); only /proc is new.
        # Without root bwrap makes a user namespace itself, mapping the user to itself.
        prefix: tuple[str, ...] = (path, "--unshare-pid", "--die-with-parent", "--dev-bind", "/", "/",
                                   "--proc", "/proc", "--")
    else:
        # Without root a PID namespace needs a user namespace; mapping the user to
        # itself (not to root) keeps `id` truthful in the lab.
        user = ("--user", "--map-current-user") if os.geteuid() != 0 else ()
        # The init is a plain sh: a shell as PID 1 would ignore the signals it has no
        # handler for, Ctrl-C's included, and leave orphans unreaped.
        prefix = (path, *user, "--pid", "--fork", "--kill-child", "--mount-proc", "--",
                  "sh", "-c", '"$@"; exit $?', "labkernel-init")
    return prefix if _works([*prefix, "true"]) else None


@functools.cache
def nsenter_path(tool: str = "") -> str | None:
    """nsenter, if it enters a namespace made by ``tool``'s prefix here, for this
    server's user (probed once per process: a holder namespace, entered to run ``true``)."""
    prefix, path = pidns_prefix(tool), shutil.which("nsenter")
    if prefix is None or path is None:
        return None
    try:
        holder = subprocess.Popen([*prefix, *_HOLDER], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, cwd="/")
    except OSError:
        return None
    try:
        deadline = time.monotonic() + 10
        while not (init := _find_init(holder.pid)) and holder.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)  # once, at start, before the server answers (as _works)
        while init and not (program := next(iter(_children(init)), 0)) and time.monotonic() < deadline:
            time.sleep(0.005)
        if not (init and program):
            return None
        files = _open_namespace(program)
        try:
            return path if _works(_nsenter_argv(path, files, ["true"])) else None
        finally:
            for fd in files.values():
                os.close(fd)
    except OSError:
        return None
    finally:
        holder.kill()
        holder.wait()


def available(mode: str) -> bool:
    """Whether ``mode`` (or ``pidns-<tool>``) works on this host, for this server's user."""
    if mode.startswith("pidns"):
        return nsenter_path(mode.partition("-")[2]) is not None
    if mode == "cgroup":
        return cgroup_dirs().unified is not None
    if mode == "subreaper":
        try:
            return _prctl is not None and os.path.exists("/proc/self/task") and bool(shutil.which("sh"))
        except OSError:
            return False
    return mode == "scan" and os.path.isdir("/proc")


class Containment:
    """The containment mode in force on a server; makes each session's ``Enclosure``."""

    def __init__(self, mode: str, *, max_processes: int, log: Any):
        """``mode`` is one of ``MODES``, or ``pidns-bwrap`` / ``pidns-unshare`` for one tool."""
        self.mode, _, tool = mode.partition("-")
        self.max_processes = max_processes
        self.log = log
        self._prefix = pidns_prefix(tool) if self.mode == "pidns" else None
        self._nsenter = nsenter_path(tool) if self.mode == "pidns" else None
        self.detail = os.path.basename(self._prefix[0]) if self._prefix else ""

    def enclose(self, session_id: str) -> Enclosure:
        """The enclosure of a new session (a cgroup mode's cgroups are made now)."""
        kwargs: dict[str, Any] = {"max_processes": self.max_processes, "log": self.log}
        if self.mode == "pidns":
            return PidNamespaceEnclosure(session_id, prefix=list(self._prefix or ()),
                                         nsenter=self._nsenter or "nsenter", **kwargs)
        cls = {"cgroup": CgroupEnclosure, "subreaper": SubreaperEnclosure}.get(self.mode, ScanEnclosure)
        return cls(session_id, **kwargs)

    def describe(self) -> str:
        limit = "none"
        if self.max_processes > 0:
            limit = (f"pids.max {self.max_processes}" if cgroup_dirs().pids
                     else f"RLIMIT_NPROC {self.max_processes}")
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.mode}{detail}, process limit: {limit}"


def choose(wanted: str, *, max_processes: int, log: Any) -> Containment:
    """The mode ``wanted`` ("auto": the strongest that works), or the next that works.

    ``pidns-bwrap`` and ``pidns-unshare`` ask for one tool's PID namespace.
    """
    if wanted.startswith("pidns-") and available(wanted):
        return Containment(wanted, max_processes=max_processes, log=log)
    start = 0 if wanted == "auto" else MODES.index(wanted.partition("-")[0])
    for mode in MODES[start:]:
        if available(mode) and not (wanted.startswith("pidns-") and mode == "pidns"):
            if wanted not in ("auto", mode):
                log.warning("labkernel: containment %r is not available here; using %r", wanted, mode)
            return Containment(mode, max_processes=max_processes, log=log)
    raise RuntimeError("no containment mode works here (no /proc?)")


def clean_leftovers(log: Any) -> list[int]:
    """Kill and remove what servers that died without cleaning up left behind.

    Their cgroups (named ``labkernel-<pid>-...``, the pid no longer running) and the
    processes that still carry a dead server's pid in their environment. Returns
    the pids signalled. A whole-/proc scan: run it in an executor.
    """
    killed: list[int] = []
    dirs = cgroup_dirs()
    stale = []
    for parent in {d for d in (dirs.unified, dirs.pids) if d}:
        with contextlib.suppress(OSError):
            for entry in os.scandir(parent):
                match = _LEFTOVER.match(entry.name)
                if match and entry.is_dir() and not _server_alive(int(match.group(1))):
                    stale.append(entry.path)
    for path in stale:
        killed += sorted(_cgroup_procs(path))
        _kill_cgroup(path)
    deadline = time.monotonic() + 5
    for path in stale:
        while not _remove_cgroup(path) and time.monotonic() < deadline:
            _kill_cgroup(path)
            time.sleep(0.05)
        if os.path.exists(path):
            log.warning("labkernel: could not remove a dead server's cgroup %s", path)

    prefix = f"{SERVER_ENV}=".encode()
    here = f"@{_pid_namespace(os.getpid()) or ''}".encode()
    for _ in range(50):  # a leftover loop may fork between rounds: until none is left
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    env = f.read()
                if prefix not in env:
                    continue
                value = next((item[len(prefix):] for item in env.split(b"\0") if item.startswith(prefix)), b"")
                pid, ns = value[:-len(here)], value[-len(here):]
                if ns == here and pid.isdigit() and not _server_alive(int(pid)) and alive(int(entry.name)):
                    found.append(int(entry.name))
        if not found:
            break
        signal_all(found, signal.SIGSTOP)
        signal_all(found, signal.SIGKILL)
        killed += found
        time.sleep(0.02)
    if killed:
        log.info("labkernel: killed %d process(es) a dead server left behind", len(set(killed)))
    return sorted(set(killed))
