"""Builds one session's sandbox, then becomes the next program of the chain.

Run by the server's interpreter (``python -I -S sandboxer.py SPEC -- ARGV...``) as
the first process of a sandboxed session (its PTY's child, or a setup's holder),
between the server's spawn and ``unshare --pid`` (see ``sandbox``). It needs only
the standard library, and nothing of the server's: it runs in a fresh interpreter,
off the server's event loop, and exits into ``ARGV`` once the sandbox is built.
What it does, in order:

1. A user namespace: the lab's root is this server's uid outside (one uid), or,
   for a server that is host root, a range of unprivileged uids (``SPEC["map"]``):
   a short-lived child makes the namespace and this process, still host root
   outside, writes its map (a process may map only its own uid into a namespace it
   is in), makes what needs host root (below), then joins it. Host root is never
   mapped: a process whose uid is host root passes every permission check that
   looks at the uid alone (sysctls under /proc/sys were writable that way).
2. A mount, IPC and UTS namespace, nothing propagating out.
3. A new root, on a tmpfs: each top-level directory of the host's root is the
   lower layer of an overlay whose upper layer is the session's (on disk, in
   ``SPEC["dir"]``, the working directory from the start: a root server's lab uid
   may not search the folders above it), or, where an overlay cannot be made (a
   directory with mounts below it, ``/dev`` and ``/sys``), bound as it is; symlinks
   (``/bin``) copied; ``/tmp``, ``/var/tmp``, ``/dev/shm`` and ``/run`` fresh; the
   session's folder bound at its own path and at ``/root``; the paths in
   ``SPEC["hide"]`` (the server's home, runtime, data and config folders) covered
   by empty tmpfs, where the lab would see them. For a root server the overlays'
   lower layers and the session's folder are idmapped mounts (host uid ``n`` is
   the lab's ``n``), so that the lab's root owns what host root owns: editing
   ``/etc/passwd`` and dpkg's chowns work; and ``ID_MAPPER`` goes to /run/labkernel.
4. ``pivot_root`` into it, the old root detached: nothing of the host's tree but
   what was put there stays reachable. The host's ``/proc`` stays at ``/proc`` for
   ``unshare --mount-proc`` (next in the chain) to mount the PID namespace's over
   it: the kernel refuses a new procfs where no full one is visible. Then the
   program's folder, the one chdir that the rest of the chain keeps.

Nothing may be imported after step 4: the interpreter's library may be out of
sight (under the server's home, or /root).

Failures are written to stderr (the session's terminal) and end it with 126.
"""

from __future__ import annotations

import ctypes
import os
import signal
import struct
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1

# The new mount API (5.2+; mount_setattr 5.12+): one number on every architecture.
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x00000001
MOUNT_ATTR_IDMAP = 0x00100000

#: pivot_root has no libc wrapper, and its number differs by architecture.
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217,
                  "armv7l": 218, "i686": 217}

#: Top-level directories made anew rather than overlaid or bound.
FRESH = {"tmp": 0o1777, "run": 0o755}

#: The folder, in a session's sandbox folder, of the lab's files to put at absolute
#: paths (``sandbox.SandboxEnclosure.place``), as a tree from the root: ``seed/etc/x``.
SEED = "seed"

#: Folders made anew in the sandbox (tmpfs), where a seed is copied once mounted.
FRESH_PATHS = ("/tmp", "/run", "/var/tmp", "/dev/shm")

#: Where a root server's sandbox keeps ``ID_MAPPERS`` (see ``write_id_mappers``).
MAPPERS = "/run/labkernel"

#: util-linux's ``unshare --map-users`` runs ``newuidmap PID INNER OUTER COUNT``
#: (and ``newgidmap``) from a child it forks before it unshares, to write the new
#: namespace's map: these do it themselves. The child is the first namespace's root,
#: which may map any of its ids; shadow's setuid newuidmap would want /etc/subuid
#: entries, and is not installed everywhere.
ID_MAPPER = """#!/bin/sh
pid=$1; shift; map=
while [ $# -ge 3 ]; do map="$map$1 $2 $3
"; shift 3; done
printf '%s' "$map" > /proc/$pid/{kind}_map
"""

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def _b(path: str | None) -> bytes | None:
    return os.fsencode(path) if path is not None else None


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), f"mount {fstype or source} on {target}")


def tmpfs(target: str, mode: int, size: str = "") -> None:
    options = f"mode={mode:o}" + (f",size={size}" if size else "")
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, options)


def rbind(source: str, target: str) -> None:
    mount(source, target, None, MS_BIND | MS_REC)


def open_tree(path: str, recursive: bool) -> int:
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    return _check(libc.syscall(SYS_OPEN_TREE, AT_FDCWD, _b(path), flags), f"open_tree {path}")


def idmap(tree: int, userns: int, recursive: bool) -> None:
    """Make the detached mount ``tree`` show the ids through ``userns``'s map."""
    attr = ctypes.create_string_buffer(struct.pack("QQQQ", MOUNT_ATTR_IDMAP, 0, 0, userns), 32)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    _check(libc.syscall(SYS_MOUNT_SETATTR, tree, b"", flags, attr, 32), "mount_setattr idmap")


def read_only(target: str) -> None:
    """Make the mount at ``target`` and every one below it read-only (once the mounts
    are locked, the lab cannot undo it)."""
    attr = ctypes.create_string_buffer(struct.pack("QQQQ", MOUNT_ATTR_RDONLY, 0, 0, 0), 32)
    _check(libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, _b(target), AT_RECURSIVE, attr, 32),
           f"mount_setattr read-only {target}")


def attach(tree: int, target: str) -> None:
    _check(libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, _b(target), MOVE_MOUNT_F_EMPTY_PATH),
           f"move_mount on {target}")
    os.close(tree)


def pivot_root(new_root: str) -> None:
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(38, f"pivot_root: unknown on {os.uname().machine}")
    os.chdir(new_root)
    _check(libc.syscall(number, b".", b"."), "pivot_root")
    _check(libc.umount2(b".", MNT_DETACH), "detaching the old root")
    os.chdir("/")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def mountpoints() -> list[str]:
    """Every mount point of this process's mount namespace."""
    points = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            # Octal escapes (\040) stand for spaces and the like.
            points.append(line.split()[4].decode("unicode_escape").encode("latin-1").decode(errors="surrogateescape"))
    return points


# -- 1. the user namespace ------------------------------------------------------------


def own_user_namespace() -> None:
    """A user namespace in which this process's uid and gid are 0 (one id each)."""
    uid, gid = os.geteuid(), os.getegid()
    _check(libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1\n")
    _write("/proc/self/gid_map", f"0 {gid} 1\n")


def mapped_user_namespace(base: int, count: int) -> int:
    """Host root only: a user namespace mapping 0..count-1 to base..base+count-1,
    made by a child, whose map this process writes; returns it, open. This process
    joins it later (``join``), once it has made what needs host root."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's side
        try:
            os.close(ready_r)
            os.close(go_w)
            _check(libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
            os.write(ready_w, b"1")
            os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError(1, "the user namespace's child failed")
        for kind in ("uid_map", "gid_map"):
            _write(f"/proc/{child}/{kind}", f"0 {base} {count}\n")
        return os.open(f"/proc/{child}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(go_w)  # its EOF lets the child exit
        os.close(ready_r)
        os.waitpid(child, 0)


def join(userns: int, server: int) -> None:
    """Enter ``userns`` as its root. Changing uid clears PDEATHSIG: set it again, and
    make sure the server did not die in between (then no signal would come)."""
    _check(libc.setns(userns, CLONE_NEWUSER), "setns(user)")
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
    if os.getppid() != server:
        raise OSError(3, "the server has gone")


def limit_processes(limit: int) -> None:
    """RLIMIT_NPROC, soft and hard, now that the user namespace exists: the kernel then
    counts the session's processes in it, and the server's user's as a whole against
    the limit the namespace's maker had (the server's), not this one (see
    ``Enclosure.nproc_inside``). The lab's root cannot raise it: that takes
    CAP_SYS_RESOURCE in the host's namespace."""
    import resource  # a C module of the standard library: no cost worth avoiding
    _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))


# -- 3. the new root ----------------------------------------------------------------------


class Builder:
    """The new root's mounts, made at ``root`` (a tmpfs) from the spec."""

    def __init__(self, spec: dict, trees: dict[str, int]):
        self.spec = spec
        # Relative to the sandbox's folder, the working directory: a root server's
        # lab uid may not search the folders above it (as a test's tmp_path).
        self.dir = "."
        self.root = "root"
        #: Detached idmapped mounts made by host root: "lower:/etc", "folder".
        self.trees = trees
        self.report: dict[str, list[str]] = {"overlay": [], "bound": [], "fresh": [], "hidden": [], "failed": []}

    def at(self, path: str) -> str:
        return self.root + path

    def build(self) -> None:
        tmpfs(self.root, 0o755)
        points = mountpoints()
        for entry in sorted(os.scandir("/"), key=lambda e: e.name):
            self.top_level(entry, points)
        for path in ("/var/tmp", "/dev/shm"):
            if os.path.isdir(self.at(path)) and not os.path.islink(self.at(path)):
                tmpfs(self.at(path), 0o1777)
                self.report["fresh"].append(path)
        resolve = "/run/systemd/resolve"  # /etc/resolv.conf may point there
        if os.path.isdir(resolve):
            os.makedirs(self.at(resolve), exist_ok=True)
            rbind(resolve, self.at(resolve))
        os.makedirs(self.at("/run/lock"), mode=0o1777, exist_ok=True)
        folder, inside = self.spec["folder"], self.spec["inside"]
        covering = [p for p in self.spec["hide"] if _within(folder, p) or _within("/root", p)]
        for path in covering:  # those the folder is in: first, so that the folder shows
            self.hide(path)
        self.bind_folder(folder, inside)
        for path in self.spec["hide"]:
            if path not in covering:
                self.hide(path)
                if _within(path, folder) and inside == folder:
                    self.hide("/root" + path[len(folder):])

    def top_level(self, entry: os.DirEntry, points: list[str]) -> None:
        path, target = "/" + entry.name, self.at("/" + entry.name)
        if entry.is_symlink():
            os.symlink(os.readlink(path), target)
            return
        if not entry.is_dir(follow_symlinks=False):
            if entry.is_file(follow_symlinks=False):  # /.dockerenv and the like
                open(target, "w").close()
                mount(path, target, None, MS_BIND)
            return
        os.mkdir(target, 0o755)
        if entry.name in FRESH:
            os.chmod(target, FRESH[entry.name])
            if entry.name != "tmp":  # /tmp is the root tmpfs's own
                tmpfs(target, FRESH[entry.name])
            self.report["fresh"].append(path)
            return
        if entry.name == "root":
            return  # the session's folder goes there
        below = [p for p in points if p.startswith(path + "/")]
        if entry.name in ("proc", "dev", "sys") or below:
            # /proc: the host's, for now; the PID namespace's goes over it (see above).
            rbind(path, target)
            if entry.name == "sys":
                # Read-only, cgroupfs included: a server that is not root may have a
                # pids cgroup of its own, whose pids.max its lab's uid could raise.
                read_only(target)
            self.report["bound"].append(path)
            return
        try:
            self.overlay(entry.name)
            self.report["overlay"].append(path)
        except OSError as e:
            rbind(path, target)
            self.report["failed"].append(f"{path}: {e.strerror}")

    def overlay(self, name: str) -> None:
        upper, work = (os.path.join(self.dir, layer, name) for layer in ("upper", "work"))
        for folder in (upper, work):
            os.makedirs(folder, exist_ok=True)
        lower = "/" + name
        tree = self.trees.pop(f"lower:{lower}", None)
        if tree is not None:
            lower = os.path.join(self.dir, "lower", name)
            attach(tree, lower)
        mount("overlay", self.at("/" + name), "overlay", 0,
              f"lowerdir={_escape(lower)},upperdir={_escape(upper)},workdir={_escape(work)},userxattr")

    def bind_folder(self, folder: str, inside: str) -> None:
        """The session's folder at its own path (unless that is under /root) and at /root."""
        tree = self.trees.pop("folder", None)
        first = self.at(inside if inside != "/root" else "/root")
        os.makedirs(first, exist_ok=True)
        if tree is not None:
            attach(tree, first)
        else:
            rbind(folder, first)
        if inside != "/root":
            rbind(first, self.at("/root"))

    def hide(self, path: str) -> None:
        target = self.at(path)
        if path in ("", "/") or not os.path.isdir(target) or os.path.islink(target):
            return
        tmpfs(target, 0o755, size="16m")
        self.report["hidden"].append(path)


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _escape(path: str) -> str:
    """A path as an overlay mount option (its separators escaped)."""
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def idmapped_trees(spec: dict, userns: int) -> dict[str, int]:
    """Host root only: the overlays' lower layers and the session's folder as detached
    idmapped mounts. What cannot be idmapped (a filesystem without support, or with
    mounts below) is left out: it is overlaid or bound as it is, unmapped."""
    trees: dict[str, int] = {}
    points = mountpoints()
    wanted = [("folder", spec["folder"], True)]
    for entry in os.scandir("/"):
        path = "/" + entry.name
        if (entry.is_dir(follow_symlinks=False) and entry.name not in (*FRESH, "root", "proc", "dev", "sys")
                and not any(p.startswith(path + "/") for p in points)):
            wanted.append((f"lower:{path}", path, False))
    for key, path, recursive in wanted:
        tree = -1
        try:
            tree = open_tree(path, recursive)
            idmap(tree, userns, recursive)
        except OSError:
            if tree >= 0 and key != "folder":  # the folder goes in unmapped: the lab may not reach it
                os.close(tree)
                continue
            if tree < 0:
                continue
        trees[key] = tree
        if key.startswith("lower:"):
            os.makedirs(os.path.join("lower", key[len("lower:/"):]), exist_ok=True)
    return trees


def take_seeds() -> list[tuple[str, str]]:
    """The lab's files for absolute paths (``SEED``), before anything is mounted: those
    under an overlaid folder become its upper layer (``seed/etc`` is ``upper/etc``);
    those under a fresh one are set aside, to be copied in once it is mounted
    (returned: where they are, where they go)."""
    if not os.path.isdir(SEED):
        return []
    later = []
    for i, path in enumerate(FRESH_PATHS):
        if os.path.lexists(SEED + path):
            os.makedirs("fresh-seed", exist_ok=True)
            os.rename(SEED + path, f"fresh-seed/{i}")
            later.append((f"fresh-seed/{i}", path))
    os.makedirs("upper", exist_ok=True)
    for entry in os.scandir(SEED):
        os.rename(entry.path, os.path.join("upper", entry.name))
    return later


def copy_tree(source: str, target: str) -> None:
    """``source``'s contents into the folder ``target`` (made if missing): files with
    their permission bits, symlinks as links."""
    os.makedirs(target, 0o755, exist_ok=True)
    for entry in os.scandir(source):
        to = os.path.join(target, entry.name)
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), to)
        elif entry.is_dir():
            copy_tree(entry.path, to)
        else:
            with open(entry.path, "rb") as f, open(to, "wb") as out:
                while chunk := f.read(1 << 20):
                    out.write(chunk)
            os.chmod(to, entry.stat().st_mode & 0o7777)


def build(spec: dict) -> dict[str, list[str]]:
    """Steps 1 to 4 (see the module docstring); what was made how."""
    try:
        os.mkdir(spec["dir"], 0o700)
    except FileExistsError:  # made by the server for the lab's files (``SEED``) alone
        if os.path.islink(spec["dir"]) or set(os.listdir(spec["dir"])) - {SEED}:
            raise
    os.chdir(spec["dir"])  # everything below is made relative to it
    seeds = take_seeds()
    os.mkdir("root")
    trees: dict[str, int] = {}
    mapping = spec.get("map")
    if mapping:
        userns = mapped_user_namespace(mapping["base"], mapping["count"])
        trees = idmapped_trees(spec, userns)
        for path, _, files in os.walk("."):
            for name in (path, *(os.path.join(path, f) for f in files)):
                # Not through a symlink: a lab's files (SEED) may hold some, and this is host root.
                os.chown(name, mapping["base"], mapping["base"], follow_symlinks=False)
        join(userns, spec["server"])
    else:
        own_user_namespace()
    if spec.get("nproc"):
        limit_processes(spec["nproc"])
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS), "unshare(mount, IPC, UTS)")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    builder = Builder(spec, trees)
    builder.build()
    for source, path in seeds:
        copy_tree(source, builder.at(path))
    for tree in trees.values():
        os.close(tree)
    if mapping:
        write_id_mappers(builder.at(MAPPERS))
    pivot_root(builder.root)
    os.chdir(spec["cwd"])  # kept through the chain's execs and namespace copies
    return builder.report


def write_id_mappers(folder: str) -> None:
    """``newuidmap`` and ``newgidmap`` for the lock's ``unshare --map-users``, first
    on PATH (the sandbox's init takes them off it, and removes them)."""
    os.makedirs(folder, 0o755, exist_ok=True)
    for kind in ("uid", "gid"):
        path = os.path.join(folder, f"new{kind}map")
        with open(path, "w") as f:
            f.write(ID_MAPPER.replace("{kind}", kind))
        os.chmod(path, 0o755)
    os.environ["PATH"] = f"{MAPPERS}:{os.environ.get('PATH', os.defpath)}"


#: The spec's keys whose value is a list (one line each), a number, a flag.
LISTS, NUMBERS, FLAGS = {"hide"}, {"server", "base", "count", "nproc"}, {"report"}


def encode_spec(spec: dict) -> str:
    """The spec as lines of ``key<TAB>value``: a list's items one line each, ``map``
    as ``base`` and ``count``. Not JSON: importing json (and the re module it brings)
    took 7 ms of the sandbox's start, a third of what this program costs."""
    lines = []
    for key, value in spec.items():
        if key == "map":
            if value:
                lines += [f"base\t{value['base']}", f"count\t{value['count']}"]
            continue
        for item in value if key in LISTS else [value]:
            text = str(int(item)) if key in FLAGS else str(item)
            if "\n" in text:
                raise ValueError(f"a newline in {key} of a sandbox: {text!r}")
            lines.append(f"{key}\t{text}")
    return "\n".join(lines)


def decode_spec(text: str) -> dict:
    spec: dict = {key: [] for key in LISTS}
    for line in text.split("\n"):
        key, _, value = line.partition("\t")
        if key in LISTS:
            spec[key].append(value)
        else:
            spec[key] = int(value) if key in NUMBERS or key in FLAGS else value
    spec["map"] = {"base": spec.pop("base"), "count": spec.pop("count")} if "base" in spec else None
    return spec


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        sys.exit("usage: sandboxer.py SPEC -- PROGRAM [ARG...]")
    spec = decode_spec(argv[1])
    if spec.get("report"):  # the probe's run only; imported now: after pivot_root the
        import json  # interpreter's library may be out of sight (under /root)
    try:
        report = build(spec)
    except OSError as e:
        print(f"labkernel: the session's sandbox could not be made: {e}", file=sys.stderr, flush=True)
        os._exit(126)
    if spec.get("report"):
        print(json.dumps(report), flush=True)
    # Python ignores SIGPIPE and SIGXFSZ at start, and ignored signals survive exec:
    # the lab's `yes | head` would print "Broken pipe" instead of ending quietly.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    try:
        os.execvp(argv[3], argv[3:])
    except OSError as e:
        print(f"labkernel: {argv[3]}: {e.strerror}", file=sys.stderr, flush=True)
        os._exit(127)


if __name__ == "__main__":
    main(sys.argv)
