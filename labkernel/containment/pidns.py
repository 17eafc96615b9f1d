"""The ``pidns`` mode: a PID namespace per session, and entering it with nsenter.

Each session is in a PID namespace of its own (``bwrap --unshare-pid
--die-with-parent``, else ``unshare --pid --fork --kill-child``; ``pidns_prefix``).
When the namespace's init dies the kernel kills everything in it, whatever it did to
leave the shell; the init dies with the shell and, through PDEATHSIG, with the server,
even a server killed with SIGKILL. The init is watched through a pidfd: bwrap's
leader exits before its namespace is empty, the init only after.

Hidden scripts, and the shell after a setup, enter the namespace with nsenter
(``nsenter_argv``), given its namespaces as files the server holds open
(``open_namespace``). They are taken from the namespace's program (the init's
child), not from its init: bwrap's init changes mount namespace while it builds the
sandbox, and 29 of 60 probes that entered it as soon as it appeared got a half-built
one (no /proc, no libc); 0 of 60 from the program.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from typing import Any

from .enclosure import Enclosure, Support
from .procfs import alive, children, namespace_members, pid_namespace, signal_all
from .scripts import CD_THEN_EXEC, HOLDER, with_limits, works

#: The tools that make a PID namespace, in order of preference.
PIDNS_TOOLS = ("bwrap", "unshare")


# -- a namespace, found, held open and entered -------------------------------------------


def find_init(creator: int) -> int:
    """The init of the PID namespace that ``creator`` made: its child in another
    namespace than ours; 0 while there is none (one small read)."""
    init = next(iter(children(creator)), 0) if creator else 0
    ns = pid_namespace(init) if init else None
    return init if ns and ns != pid_namespace(os.getpid()) else 0


def open_namespace(pid: int, kinds: tuple[str, ...] = ("user", "mnt", "pid"), *,
                   user_from: int = 0) -> dict[str, int]:
    """Open the namespaces ``kinds`` of process ``pid`` as files (its user namespace
    only if it is not ours; that of ``user_from`` instead, if given), if the processes
    are alive and stay so meanwhile (then no other process can have had their pids).
    Take them from the namespace's program (its init's child), not from the init:
    bwrap's init changes its mount namespace while it builds the sandbox, and forks
    the program once that is done."""
    owners = {kind: user_from if kind == "user" and user_from else pid for kind in kinds}
    pidfds = [os.pidfd_open(p) for p in set(owners.values())]
    try:
        files = _open_namespace_files(owners)
        readable, _, _ = select.select(pidfds, [], [], 0)
    finally:
        for fd in pidfds:
            os.close(fd)
    if readable:
        for fd in files.values():
            os.close(fd)
        raise OSError(3, f"process {pid} ended")
    return files


def _open_namespace_files(owners: Mapping[str, int]) -> dict[str, int]:
    files: dict[str, int] = {}
    try:
        for kind, pid in owners.items():
            path = f"/proc/{pid}/ns/{kind}"
            if kind == "user" and os.readlink(path) == os.readlink("/proc/self/ns/user"):
                continue  # entering one's own user namespace is an error
            files[kind] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        for fd in files.values():
            os.close(fd)
        raise
    return files


#: nsenter's option for each kind of namespace file, in the order given.
_NSENTER_OPTIONS = {"ipc": "--ipc", "uts": "--uts", "mnt": "--mount", "pid": "--pid"}


def nsenter_argv(nsenter: str, files: Mapping[str, int], argv: list[str], *, become_root: bool = False) -> list[str]:
    """``argv`` run by nsenter in the namespaces this server holds open as ``files``.

    nsenter opens them as ``/proc/<server>/fd/N``: no pid is named, so none can have
    been reused by another process in between, and no descriptor is passed down to
    the program. It forks after entering, so the program is inside the PID namespace.
    In a user namespace the program keeps the server's uid (which a sandbox maps to
    its root), unless ``become_root``: then nsenter makes it uid and gid 0 there
    (where the namespace allows setgroups: its map was written from outside).
    """
    server = os.getpid()
    args = [nsenter]
    if "user" in files:
        args.append(f"--user=/proc/{server}/fd/{files['user']}")
        if not become_root:
            # Without --preserve-credentials nsenter would become uid 0 in the namespace.
            args.append("--preserve-credentials")
    args += [f"{option}=/proc/{server}/fd/{files[kind]}" for kind, option in _NSENTER_OPTIONS.items()
             if kind in files]
    return [*args, "--", *argv]


# -- the enclosure --------------------------------------------------------------------


class PidNamespaceEnclosure(Enclosure):
    """A PID namespace for the session, made by whichever of its processes comes first.

    Its program makes it, as ``prefix`` (bwrap or unshare) in front of it; or, for a
    lab whose hidden setup runs before the shell exists, ``prepare`` makes it with a
    *holder* (``HOLDER``) in the program's place, and the program enters it later.
    Every hidden script enters it with nsenter (``nsenter_argv``), so that a check
    sees and signals the lab's processes, not the server's, and whatever a script
    starts dies with the namespace. The script's reaper is no subreaper (see
    ``Enclosure._script_subreaper``): a script's orphan is the namespace init's,
    and one that also left the script's process session and dropped its marker
    outlives the script, until the session ends.
    """

    mode = "pidns"
    variants: tuple[str, ...] = PIDNS_TOOLS

    @classmethod
    def probe(cls, variant: str = "", **settings: Any) -> Support | None:
        nsenter, prefix = nsenter_path(variant), pidns_prefix(variant)
        if nsenter is None or prefix is None:
            return None
        return Support({"prefix": hiding(list(prefix), settings.get("runtime_dir", "")), "nsenter": nsenter},
                       os.path.basename(prefix[0]))

    def __init__(self, session_id: str, *, prefix: list[str], nsenter: str = "nsenter", **kwargs: Any):
        super().__init__(session_id, **kwargs)
        # Without root, bwrap and unshare make a user namespace: the process limit goes in it.
        self._nproc_inside = os.geteuid() != 0
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
            return [*self._prefix, *with_limits(argv, nproc=self.nproc_inside, subreaper=False, hard=True)]
        # In front of nsenter, outside: the limit is inherited, and counted where nsenter forks.
        return with_limits(self._enter(["sh", "-c", CD_THEN_EXEC, cwd or "/", *argv]), nproc=self.nproc_inside,
                           subreaper=False, hard=True)

    def _enter(self, argv: list[str]) -> list[str]:
        assert self._ns_files, "prepare() first"
        return nsenter_argv(self._nsenter, self._ns_files, argv)

    def started(self, pid: int) -> None:
        super().started(pid)
        # The init is forked by the leader a moment after the spawn: learn it early,
        # before the leader may have exited (bwrap's does not wait for its init).
        self._look_for_init(tries=100)

    def _look_for_init(self, tries: int = 0) -> None:
        if self._init_fd >= 0:
            return
        init = find_init(self._creator)
        if init:
            try:
                self._init_fd = os.pidfd_open(init)
            except OSError:
                return
            self._init, self._ns = init, pid_namespace(init) or ""
        elif tries > 0:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_later(0.02, self._look_for_init, tries - 1)

    async def prepare(self) -> None:
        if self._ns_files:
            return
        if not self.leader and self._holder is None:
            self._spawn_holder()
        # The namespace's program (see open_namespace) runs once the init has built it.
        deadline = time.monotonic() + 10
        delay = 0.001
        program = 0
        while True:
            self._look_for_init()
            program = self._program() if self._init else 0
            if program or not alive(self._creator) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        if not program:
            raise OSError(3, "the session's PID namespace is gone")
        files = self._open_namespace(program)
        if self._ns_files:  # another prepare() got there first
            for fd in files.values():
                os.close(fd)
            return
        self._ns_files = files

    def _program(self) -> int:
        """The namespace's program: its init's child, once there is one (0 till then)."""
        return next(iter(children(self._init)), 0)

    def _open_namespace(self, program: int) -> dict[str, int]:
        """The namespaces scripts enter, as files: the program's (see ``open_namespace``)."""
        return open_namespace(program)

    def _spawn_holder(self) -> None:
        """Make the namespace with the holder in it (fork and exec on the loop, as a
        session's spawn). Its environment is nearly empty: a lab can read its init's."""
        env = {"PATH": os.environ.get("PATH", os.defpath), **self.env()}
        self._holder = subprocess.Popen(
            self.wrap(HOLDER), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env, cwd="/", start_new_session=True,
            preexec_fn=self.preexec)  # noqa: PLW1509 (as the shell's: setrlimit and prctl, no lock taken)

    def reapers(self, pid: int) -> set[int]:
        # nsenter, and the reaper it forked into the namespace.
        return {pid, *children(pid)}

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


# -- probing: once per process, before the server answers --------------------------------


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
    return prefix if works([*prefix, "true"]) else None


def hiding(prefix: list[str], runtime_dir: str) -> list[str]:
    """bwrap's ``prefix`` with the server's Jupyter runtime folder under an empty tmpfs.

    The PID namespace hides the server's pid, so that ``jupyter server list`` in a lab
    took the server for dead and deleted its ``jpserver-<pid>.json`` (and the
    folder holds the token and the cookie secret). A lab whose shell has no
    capability (a server that is not root) cannot take the tmpfs away; a root
    server's lab, host root, can: only the ``sandbox`` holds that off. unshare's
    prefix is left as it is: it mounts nothing but /proc, and its init runs
    without the capability to (without root).
    """
    folder = os.path.realpath(runtime_dir) if runtime_dir else ""
    if not folder or folder == "/" or not os.path.isdir(folder) or os.path.basename(prefix[0]) != "bwrap":
        return prefix
    end = prefix.index("--")
    return [*prefix[:end], "--tmpfs", folder, *prefix[end:]]


@functools.cache
def nsenter_path(tool: str = "") -> str | None:
    """nsenter, if it enters a namespace made by ``tool``'s prefix here, for this
    server's user (probed once per process: a holder namespace, entered to run ``true``)."""
    prefix, path = pidns_prefix(tool), shutil.which("nsenter")
    if prefix is None or path is None:
        return None
    try:
        holder = subprocess.Popen([*prefix, *HOLDER], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, cwd="/")
    except OSError:
        return None
    try:
        deadline = time.monotonic() + 10
        while not (init := find_init(holder.pid)) and holder.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)  # once, at start, before the server answers (as works)
        while init and not (program := next(iter(children(init)), 0)) and time.monotonic() < deadline:
            time.sleep(0.005)
        if not (init and program):
            return None
        files = open_namespace(program)
        try:
            return path if works(nsenter_argv(path, files, ["true"])) else None
        finally:
            for fd in files.values():
                os.close(fd)
    except OSError:
        return None
    finally:
        holder.kill()
        holder.wait()
