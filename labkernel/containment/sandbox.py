"""The ``sandbox`` mode: a session in namespaces of its own, root inside, not outside.

What a sandboxed session's processes see (``sandboxer`` builds it, see there):

- a user namespace in which they are root, with every capability in it and none in
  the host's: outside they are the server's uid (one uid mapped), or, for a server
  that is host root, a range of 65536 unprivileged uids from ``uid_base``, never
  host root (a process whose uid is host root passes every check that only looks
  at the uid: host sysctls were writable that way);
- a PID namespace, as in ``pidns``: the server, its ``/proc/<pid>/environ`` and
  ``cmdline`` included, and every other process are out of sight;
- a mount namespace whose root is a tmpfs holding an overlay per top-level folder
  of the host's root (lower: the host's, upper: the session's, on disk, removed
  with it), ``/dev``, ``/sys`` and folders with mounts below them bound as they
  are, a fresh ``/tmp``, ``/var/tmp``, ``/dev/shm`` and ``/run``, the session's
  folder at its own path and at ``/root`` (``HOME``), and the server's home,
  runtime, data and config folders under empty tmpfs;
- an IPC and a UTS namespace.

Every mount is made in a first user namespace and then *locked*: the lab runs in
a second one, nested, whose mount namespace is a copy, and the kernel refuses to
unmount there what came with the copy (``umount -l /proc`` included): nothing under
a mount can be revealed. The chain, from the server's spawn:

``python sandboxer.py SPEC`` (namespaces, mounts, pivot_root, chdir) → ``unshare
--pid --fork --kill-child --mount-proc`` (the leader; its child, the PID namespace's
init, mounts its /proc) → ``unshare --user --mount`` with ``--map-root-user``, or
for a root server ``--map-users`` of all 65536 ids (the lock) → ``sh`` (the init:
the program, whose exit is its own).

The leader is watched as ``pidns``'s is. It dies with the server (PDEATHSIG, set
again by the sandboxer where it changes uid) and kills the init as it dies
(``--kill-child``); the kernel kills the rest.

Why these tools: bubblewrap (``pidns``'s) makes no overlay before 0.11 (Debian 12
has 0.8), and maps no other uid than the caller's; util-linux's ``unshare`` and
``nsenter`` are everywhere ``pidns`` already needs them; the mounts themselves are
a dozen syscalls from a short Python program (stdlib only, ``ctypes``) rather than
a dozen ``mount`` commands, ~1 ms each. A Python process lives only until the
sandbox is built: what stays is ``unshare`` and ``sh``, as in ``pidns-unshare``.

Hidden scripts enter as in ``pidns`` (``nsenter``, namespaces the server holds
open), as the first user namespace's root: the PID namespace belongs to that one
(its /proc had to be mounted before the lock), and a process in the second could
not enter it. Their mounts are the lab's, locked too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

from .enclosure import Support
from .pidns import PidNamespaceEnclosure, find_init, nsenter_argv, open_namespace
from .procfs import children, mark_alive, server_alive, server_mark
from .sandboxer import SEED, SYS_PIVOT_ROOT, encode_spec
from .scripts import CD_THEN_EXEC, HOLDER, helper_python, with_limits, works

#: The first of the 65536 host uids (and gids) a root server's labs are 0..65535 of:
#: the last 64 Ki block of the range systemd leaves to containers (524288 to
#: 1879048191), so as not to meet users, nor /etc/subuid's usual allocations.
DEFAULT_UID_BASE = 0x6FFF0000
UID_COUNT = 65536

SANDBOXER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandboxer.py")

#: The PID namespace's init: runs the program and exits with its status; a plain
#: sh, which reaps orphans while it waits (a shell as PID 1 would ignore the signals
#: it has no handler for). The folder it starts in is the sandboxer's last chdir:
#: not in argv, where it would show in the command line of the session's leader.
INIT = '"$@"; exit $?'

#: The init of a root server's sandbox: the same, once it has taken the folder of
#: ``newuidmap`` and ``newgidmap`` (see ``sandboxer.ID_MAPPER``) off PATH. They stay
#: in /run/labkernel (removing them would fork, and the init's first child must be
#: the program); they write maps only where the first namespace's root could anyway.
MAPPED_INIT = 'PATH=${PATH#/run/labkernel:}; "$@"; exit $?'

#: The architectures ``sandboxer.pivot_root`` knows the syscall's number of.
_MACHINES = set(SYS_PIVOT_ROOT)


@dataclass(frozen=True)
class SandboxSettings:
    """The sandbox's configuration (``LabSessionManager.sandbox_*``)."""

    #: Where each session's sandbox folder (its overlays' upper layers) is made;
    #: "": ``labkernel-sandboxes-<uid>`` in the system's temporary folder.
    dir: str = ""
    #: Root servers: the host uid (and gid) of the labs' root; 65536 from it are theirs.
    uid_base: int = DEFAULT_UID_BASE
    #: Folders hidden from the labs besides the server's home, its Jupyter
    #: runtime, data and config folders and ``dir``.
    hide: tuple[str, ...] = ()

    def resolved(self) -> SandboxSettings:
        """With the defaults filled in: the folder, and every path to hide, real."""
        folder = os.path.realpath(self.dir or os.path.join(tempfile.gettempdir(),
                                                           f"labkernel-sandboxes-{os.geteuid()}"))
        hide = {os.path.realpath(p) for p in (*default_hidden(), *self.hide, folder) if p}
        return replace(self, dir=folder, hide=tuple(sorted(hide - {"/"})))


def default_hidden() -> list[str]:
    """The server's home and Jupyter's folders (its runtime folder holds the server's
    token and cookie secret, ``jpserver-<pid>.json``; its config folder may hold a
    password)."""
    paths = [os.path.expanduser("~")]
    with contextlib.suppress(ImportError):
        from jupyter_core.paths import (
            jupyter_config_dir,
            jupyter_data_dir,
            jupyter_runtime_dir,
        )
        paths += [jupyter_runtime_dir(), jupyter_data_dir(), jupyter_config_dir()]
    return paths


def host_root() -> bool:
    """Whether this process is root of the host (of the initial user namespace)."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return False


def within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def ensure_dir(path: str) -> None:
    """Make the sandboxes' folder, or check the one there: ours, a real folder, closed
    to others (traversable only, for a root server: its labs' uid makes their layers in it)."""
    mode = 0o711 if host_root() else 0o700
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise OSError(1, f"{path} is not a folder of this server's user")
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)


def remove_sandbox(path: str) -> None:
    """Remove a session's sandbox folder (or any folder a lab wrote in: its scratch
    folder), if there is one (blocking: run it in an executor).

    Its overlays' work folders hold a ``work`` folder the kernel made mode 000, and
    a lab may leave folders it closed (``chmod 000``): opened up first, where the
    server's user is not root. Symlinks are removed, never followed.
    """
    def open_up(func: Any, failed: str, _exc: Any) -> None:
        opened = failed if func in (os.scandir, os.open, os.listdir) else os.path.dirname(failed)
        if not within(opened, path):
            return
        with contextlib.suppress(OSError):
            os.chmod(opened, 0o700)
            if func in (os.rmdir, os.unlink):
                func(failed)
            else:
                shutil.rmtree(failed, ignore_errors=True)

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=open_up)


def remove_stale_sandboxes(folder: str, log: Any) -> None:
    """Remove the sandbox folders of servers no longer running (``<mark>-<session>``,
    ``procfs.server_mark``; or ``<pid>-<session>``, as servers before named them)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    stale = []
    for e in entries:
        owner = e.name.partition("-")[0]
        alive = mark_alive(owner) if "." in owner else server_alive(int(owner)) if owner.isdigit() else None
        if alive is False:
            stale.append(e.path)
    for path in stale:
        remove_sandbox(path)
    if stale:
        log.info("labkernel: removed %d sandbox folder(s) a dead server left in %s", len(stale), folder)


def inside_folder(folder: str) -> str:
    """Where the session's folder is inside: its own path, or /root if it is under
    /root (the host's /root is not there: /root is the session's folder)."""
    return "/root" if within(folder, "/root") else folder


def chain(*, python: str, unshare: str, spec: dict[str, Any]) -> list[str]:
    """The argv that builds a sandbox by ``spec`` and runs what follows in it.

    The lock's user namespace maps the first one's root to its root, or, for a root
    server, all 65536 of the first one's ids to themselves.
    """
    count = spec["map"]["count"] if spec["map"] else 0
    lock = [f"--map-users=0,0,{count}", f"--map-groups=0,0,{count}"] if count else ["--map-root-user"]
    return [python, "-I", "-S", SANDBOXER, encode_spec(spec), "--",
            unshare, "--pid", "--fork", "--kill-child", "--mount-proc", "--",
            unshare, "--user", *lock, "--mount", "--",
            "sh", "-c", MAPPED_INIT if count else INIT, "labkernel-init"]


# -- probing: once per process, before the server answers --------------------------------


@dataclass(frozen=True)
class Probe:
    """What probing found: the enclosures' options, or why there are none."""

    options: dict[str, Any] | None
    reason: str = ""


@functools.cache
def probe_sandbox(settings: SandboxSettings) -> Probe:
    """Build a sandbox with a holder in it, enter it with nsenter as its root, and
    check that the session's folder is the lab root's (~150 ms; blocks: once, at
    start). ``settings`` resolved."""
    tools = {name: shutil.which(name) for name in ("unshare", "nsenter", "sh")}
    missing = [name for name, path in tools.items() if not path]
    if missing:
        return Probe(None, f"{' and '.join(missing)} not found (util-linux)")
    if os.uname().machine not in _MACHINES:
        return Probe(None, f"pivot_root's syscall number is not known on {os.uname().machine}")
    try:
        ensure_dir(settings.dir)
    except OSError as e:
        return Probe(None, f"the sandboxes' folder {settings.dir}: {e.strerror}")
    mapping = {"base": settings.uid_base, "count": UID_COUNT} if host_root() else None
    options = {"python": helper_python(), "unshare": tools["unshare"], "nsenter": tools["nsenter"],
               "settings": settings, "mapping": mapping}
    folder = os.path.join(settings.dir, f"{server_mark()}-probe-folder")
    sandbox = os.path.join(settings.dir, f"{server_mark()}-probe")
    for path in (folder, sandbox):
        remove_sandbox(path)
    try:
        os.mkdir(folder, 0o700)
        layout, reason = _try(options, sandbox, folder)
    except OSError as e:
        layout, reason = None, str(e)
    finally:
        for path in (folder, sandbox):
            remove_sandbox(path)
    if layout is None:
        return Probe(None, reason)
    return Probe({**options, "layout": layout})


def _try(options: dict[str, Any], sandbox: str, folder: str) -> tuple[dict[str, Any] | None, str]:
    spec = make_spec(options, sandbox, folder, inside_folder(folder), report=True)
    argv = [*chain(python=options["python"], unshare=options["unshare"], spec=spec), *HOLDER]
    holder = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              cwd="/")
    assert holder.stdout is not None and holder.stderr is not None
    try:
        readable, _, _ = select.select([holder.stdout], [], [], 10)
        line = holder.stdout.readline() if readable else b""
        if not line.startswith(b"{"):
            holder.kill()
            why = holder.stderr.read().decode(errors="replace").strip().splitlines()
            return None, why[-1] if why else "the sandbox was not built in 10 s"
        layout = json.loads(line)
        deadline = time.monotonic() + 10
        init = program = 0
        while not program and holder.poll() is None and time.monotonic() < deadline:
            init = init or find_init(holder.pid)
            program = locked_program(init, holder.pid) if init else 0
            time.sleep(0.005)  # once, at start, before the server answers (as works)
        if not program:
            return None, "the sandbox's init did not start its program"
        files = open_namespace(program, KINDS, user_from=holder.pid)
        try:
            # The lab's root: uid 0, and the owner of the session's folder.
            check = 'test "$(id -u)" = 0 && cd /root && touch .labkernel-probe && rm .labkernel-probe'
            enter = nsenter_argv(options["nsenter"], files, ["sh", "-c", check], become_root=bool(options["mapping"]))
            if not works(enter):
                return None, "nsenter could not enter the sandbox as its root, or /root was not writable there"
        finally:
            for fd in files.values():
                os.close(fd)
        return layout, ""
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        holder.stderr.close()


def locked_program(init: int, creator: int) -> int:
    """The sandbox's program: the child of its init that runs in the lock's user
    namespace (before, a root server's init has another child: the id mapper
    ``unshare --map-users`` forks); 0 while there is none."""
    try:
        first = os.readlink(f"/proc/{creator}/ns/user")
    except OSError:
        return 0
    for child in children(init):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{child}/ns/user") != first:
                return child
    return 0


def make_spec(options: dict[str, Any], sandbox: str, folder: str, cwd: str, *,
              report: bool = False, nproc: int = 0) -> dict[str, Any]:
    """``sandboxer``'s spec for a session's sandbox in folder ``sandbox``, whose
    program starts in ``cwd`` (a path inside), with RLIMIT_NPROC ``nproc`` (if above
    0) set in its user namespace."""
    settings: SandboxSettings = options["settings"]
    return {"dir": sandbox, "folder": folder, "inside": inside_folder(folder), "hide": list(settings.hide),
            "server": os.getpid(), "map": options["mapping"], "cwd": cwd, "report": report, "nproc": nproc}


def describe(options: dict[str, Any]) -> str:
    """The sandbox in a few words, for the log."""
    layout, mapping = options["layout"], options["mapping"]
    outside = (f"uids {mapping['base']}-{mapping['base'] + mapping['count'] - 1} outside, host root's files "
               "its own" if mapping else f"uid {os.geteuid()} outside, host root's files read-only")
    bound = [p for p in layout["bound"] if p != "/proc"]
    return (f"root inside, {outside}; overlaid: {' '.join(layout['overlay'])}; as on the host: "
            f"{' '.join(bound)}; fresh: {' '.join(layout['fresh'])}; home /root = the session's folder")


def sandbox_status(options: dict[str, Any] | None, reason: str = "") -> dict[str, Any]:
    """What the sandbox gives here, for ``GET /health``: no host path in it but the
    names of the host root's top-level folders (the route needs no authentication)."""
    if options is None:
        return {"available": False, "reason": reason}
    layout, mapping = options["layout"], options["mapping"]
    return {
        "available": True,
        "rootInside": True,
        "uidsOutside": UID_COUNT if mapping else 1,
        "hostRootFiles": "own" if mapping else "read-only",
        # With one uid, dpkg cannot chown to root:adm and the like (measured).
        "packageInstall": bool(mapping),
        "overlaid": layout["overlay"],
        "asOnHost": [p for p in layout["bound"] if p != "/proc"],
        "fresh": layout["fresh"],
        "home": "/root",
        "serverFilesHidden": True,
    }


#: The namespaces hidden scripts enter (the user namespace: the first one's, see above).
KINDS = ("user", "ipc", "uts", "mnt", "pid")


# -- the enclosure --------------------------------------------------------------------


class SandboxEnclosure(PidNamespaceEnclosure):
    """A session's sandbox (see the module docstring), made by the program or, before
    a setup, by a holder, as a ``pidns`` namespace is; its folder removed once the
    session has ended."""

    mode = "sandbox"
    variants = ()

    @classmethod
    def probe(cls, variant: str = "", sandbox: SandboxSettings | None = None, **settings: Any) -> Support | None:
        if variant:
            return None
        found = probe_sandbox((sandbox or SandboxSettings()).resolved())
        return Support(found.options, describe(found.options)) if found.options else None

    def __init__(self, session_id: str, *, python: str, unshare: str, settings: SandboxSettings,
                 mapping: dict[str, int] | None, layout: dict[str, Any], **kwargs: Any):
        super().__init__(session_id, prefix=[], **kwargs)
        self._options: dict[str, Any] = {"python": python, "unshare": unshare, "settings": settings,
                                         "mapping": mapping}
        self._dir = os.path.join(settings.dir, f"{server_mark()}-{session_id}")
        self._layout = layout
        self._nproc_inside = True  # set by the sandboxer in the session's user namespace
        self.folder = os.path.realpath(self.folder) if self.folder else ""
        self.home = self.folder or None

    def place(self, target: str) -> tuple[str, str]:
        """A lab's file at absolute ``target`` goes into the sandbox before it is built:
        into its folder's ``seed``, which the sandboxer puts in the upper layer of the
        overlay it is under (``/etc``, ``/opt``...) or copies into a fresh folder
        (``/tmp``...) once mounted; under ``/root``, into the session's folder. Never
        where the host's own files are: a folder the sandbox shows as it is on the
        host (``/dev``, ``/sys``, one with mounts below it), a hidden one, ``/proc``."""
        if self._holder is not None or self.leader:
            raise ValueError(f"its asset target {target!r} comes too late: the session's sandbox is built")
        target = os.path.normpath(target)
        if self.folder and within(target, "/root"):
            return self.folder, target[len("/root"):].lstrip("/")
        fresh = [p for p in self._layout["fresh"] if within(target, p)]
        top = "/" + target.strip("/").split("/")[0]
        hidden = [p for p in self._options["settings"].hide if within(target, p)]
        shown_as_is = top in self._layout["bound"] or top in ("/proc", "/dev", "/sys")
        if target == "/" or hidden or (shown_as_is and not fresh) or (
                top not in self._layout["overlay"] and not fresh):
            raise ValueError(f"its asset target {target!r} is where the sandbox shows the host's own files "
                             "(or hides them): assets go under an overlaid folder (/etc, /opt, /usr...), "
                             "a fresh one (/tmp, /run...) or the session's folder")
        seed = os.path.join(self._dir, SEED)
        os.makedirs(self._dir, 0o700, exist_ok=True)
        os.makedirs(seed, 0o755, exist_ok=True)
        return seed, target.lstrip("/")

    def inside(self, path: str) -> str:
        """Where host path ``path`` (the session's folder or below) is in the sandbox."""
        inside = inside_folder(self.folder)
        if within(path, self.folder):
            return inside + path[len(self.folder):] if path != self.folder else inside
        return inside if within(path, "/root") else path

    def _wrap(self, argv: list[str], cwd: str) -> list[str]:
        if not self.folder:  # a session without a folder of its own: where it starts
            self.folder = os.path.realpath(cwd or os.getcwd())
            self.home = self.folder
        if self._holder is not None:
            return with_limits(self._enter(["sh", "-c", CD_THEN_EXEC, self.inside(cwd or self.folder), *argv]),
                               nproc=self.nproc_inside, subreaper=False, hard=True)
        if self.folder == "/":
            raise OSError(22, "a sandbox cannot take / as the session's folder: set a root_dir or a workdir")
        spec = make_spec(self._options, self._dir, self.folder, self.inside(cwd or self.folder),
                         nproc=self.nproc_inside)
        return [*chain(python=self._options["python"], unshare=self._options["unshare"], spec=spec), *argv]

    def _enter(self, argv: list[str]) -> list[str]:
        assert self._ns_files, "prepare() first"
        # The server's uid is the namespace's root, unless the server is host root.
        return nsenter_argv(self._nsenter, self._ns_files, argv, become_root=bool(self._options["mapping"]))

    def _program(self) -> int:
        return locked_program(self._init, self._creator)

    def _open_namespace(self, program: int) -> dict[str, int]:
        return open_namespace(program, KINDS, user_from=self._creator)

    def script(self, argv: list[str], cwd: str) -> list[str]:
        return super().script(argv, self.inside(cwd))

    def env(self) -> dict[str, str]:
        return {**super().env(), "HOME": "/root", "USER": "root", "LOGNAME": "root"}

    async def release(self) -> None:
        ended = not self._namespace_alive()
        await super().release()
        if ended:  # else its overlays are still mounted: the next start removes it
            await self._run(remove_sandbox, self._dir)
        else:
            self.log.warning("labkernel: session %s's sandbox still runs; its folder %s is left for the "
                             "next start", self.session_id, self._dir)
