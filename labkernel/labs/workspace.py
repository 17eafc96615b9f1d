"""What a lab session starts with: its folder, the lab's files copied in, its
environment (the server's, less credentials, plus the lab's variables, secrets
masked).

The folder is the lab's ``workdir`` under the server's root (never out of it, not
through a symlink either), or with ``scratch = true`` a fresh folder removed with
the session; else the root itself.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from typing import TYPE_CHECKING, Any, Callable

from ..containment.procfs import mark_alive, server_mark
from ..containment.sandbox import remove_sandbox
from ..credentials import is_credential, without_credentials
from .checks import Masker
from .model import Asset, Lab

if TYPE_CHECKING:
    from ..containment import Enclosure

#: ``${NAME}`` in a lab's env: the server's variable NAME.
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def server_environment(root_dir: str, hidden: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment every session starts from: the server's, less its credentials
    (see ``credentials``) and the ``hidden`` names."""
    env = without_credentials(os.environ, hidden)
    env.update(TERM="xterm-256color", JUPYTER_SERVER_ROOT=root_dir)
    return env


def expand_env(lab: Lab, log: Any = None, hidden: tuple[str, ...] = ()) -> tuple[dict[str, str], Masker]:
    """The lab's variables with ``${NAME}`` taken from the server's environment less
    its credentials (``credentials``, and the ``hidden`` names), and a masker for the
    secret ones.

    ``${LABKERNEL_TOKEN}`` or ``${JUPYTERHUB_API_TOKEN}`` in a ``lab.toml`` must not
    put the server's token in the shell: a credential expands to nothing, as an unset
    variable does, and the log says which.
    """
    source = without_credentials(os.environ, hidden)
    values, secret_values = {}, []
    for var in lab.env:
        def take(m: re.Match[str], name: str = var.name) -> str:
            if m[1] in source:
                return source[m[1]]
            if log is not None:
                if m[1] in os.environ or is_credential(m[1], hidden):
                    log.warning("labkernel: lab %s: ${%s} in env.%s names a credential of the server, "
                                "which labs never get; it is empty in the session", lab.id, m[1], name)
                else:
                    log.warning("labkernel: lab %s: ${%s} in env.%s is not set on the server; "
                                "it is empty in the session", lab.id, m[1], name)
            return ""
        values[var.name] = ENV_REFERENCE.sub(take, var.value)
        if var.secret:
            secret_values.append(values[var.name])
    return values, Masker(secret_values)


def prepare_folder(lab: Lab, root_dir: str, scratch_dir: str = "") -> tuple[str, str | None]:
    """The folder a session of ``lab`` starts in, made if need be, and its scratch
    folder (the same) if it has one. Raises ValueError for a workdir that leads out
    of the root, OSError when a folder cannot be made."""
    root = os.path.realpath(root_dir)
    if lab.scratch:
        scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{server_mark()}-{lab.id}-", dir=scratch_dir or None)
        return scratch, scratch
    if not lab.workdir:
        return root, None
    cwd = os.path.realpath(os.path.join(root, lab.workdir))
    if cwd != root and not cwd.startswith(root + os.sep):
        raise ValueError(f"its workdir {lab.workdir!r} leads out of the server's root folder")
    os.makedirs(cwd, exist_ok=True)
    return cwd, None


#: How a scratch folder's name starts: ``labkernel-scratch-<mark>-<lab>-<random>``, the
#: mark being the server's pid and start time (``procfs.server_mark``).
SCRATCH_PREFIX = "labkernel-scratch-"


def remove_stale_scratch(scratch_dir: str, log: Any) -> list[str]:
    """Remove the scratch folders of servers no longer running (a server killed with
    SIGKILL removes none of its own); the folders removed. Only folders of this
    server's user, by their mark (never by age: another server may share the folder):
    a whole-folder scan and removals, run it in an executor, once the dead servers'
    processes are gone (``containment.clean_leftovers``)."""
    folder = scratch_dir or tempfile.gettempdir()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    removed = []
    for entry in entries:
        if not entry.name.startswith(SCRATCH_PREFIX):
            continue
        mark = entry.name[len(SCRATCH_PREFIX):].partition("-")[0]
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and mark_alive(mark) is False:
            remove_sandbox(entry.path)
            removed.append(entry.path)
    if removed:
        log.info("labkernel: removed %d scratch folder(s) a dead server left in %s", len(removed), folder)
    return removed


#: chmod's symbolic permission bits, by who and what.
_BITS = {(w, p): getattr(stat, f"S_I{p.upper()}{who}") for w, who in (("u", "USR"), ("g", "GRP"), ("o", "OTH"))
         for p in "rwx"}


def _mode(current: int, mode: str) -> int:
    """``current`` permission bits changed by ``mode``: octal (``0755``) or symbolic
    (``+x``, ``u+rw``)."""
    if not mode:
        return current
    if mode.isdigit():
        return int(mode, 8)
    match = re.fullmatch(r"([ugoa]*)([+-])([rwx]+)", mode)
    if match is None:
        raise ValueError(f"{mode!r} is not a mode")
    who, op, perms = match.groups()
    who = who.replace("a", "ugo") or "ugo"
    bits = 0
    for w in who:
        for p in perms:
            bits |= _BITS[w, p]
    return current | bits if op == "+" else current & ~bits


#: Places an absolute asset target: ``(host folder, path below it)`` for where the
#: file must go so that the session finds it at the target; raises ValueError where
#: it cannot (see ``Enclosure.place``).
Place = Callable[[str], "tuple[str, str]"]

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def copy_assets(assets: tuple[Asset, ...], cwd: str, home: str | None = None,
                enclosure: Enclosure | None = None) -> None:
    """Copy a lab's files into place (blocking: run it in an executor).

    A target is taken relative to the session's folder, or to the home folder with
    ``~``: the session's ``home`` if it has one of its own (a sandbox's home is its
    folder), else the server's. One ending in ``/`` or naming a folder receives the
    source inside it. An absolute target is placed by the session's ``enclosure``:
    only a sandbox can (in the session's own ``/etc``, ``/tmp``...); elsewhere one
    outside the session's folder is refused, never written on the host. Nothing is
    written into the server's own folders (``enclosure.protected``: its Jupyter
    runtime folder, with the token, may be under the session's folder).

    Every folder on the way is opened without following symlinks, and no file is
    written through one: the session's folder is the learner's, and a symlink left
    there (``ln -s /etc data``) must not turn the next session's copy, made by the
    server's user, into a write on the host. Symlinks in a copied folder are copied
    as links, never followed.
    """
    place = enclosure.place if enclosure is not None else None
    protected = enclosure.protected if enclosure is not None else ()
    for asset in assets:
        base, rel = _destination(asset, cwd, home, place)
        where = os.path.join(base, rel)
        if any(_within(where, p) for p in protected) and not any(_within(base, p) for p in protected):
            raise ValueError(f"its asset target {asset.target!r} is in a folder of the server's own "
                             "(its Jupyter runtime, data or config folder): never written there")
        if os.path.isdir(asset.source):
            _copy_folder(asset.source, base, rel, asset.mode)
        else:
            _copy_file(asset.source, base, rel, asset.mode)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _destination(asset: Asset, cwd: str, home: str | None, place: Place | None) -> tuple[str, str]:
    """The folder an asset's target is under, and its path there (no ``..``)."""
    target = asset.target
    if target == "~" or target.startswith("~/"):
        base, rel = os.path.realpath(home or os.path.expanduser("~")), target[2:]
    elif not os.path.isabs(target):
        base, rel = os.path.realpath(cwd), target
    else:
        folder, normal = os.path.realpath(cwd), os.path.normpath(target)
        if _within(normal, folder):  # in the session's folder, written absolutely
            base, rel = folder, normal[len(folder):].lstrip("/")
        elif place is None:
            raise ValueError(f"its asset target {target!r} is outside the session's folder: absolute targets "
                             "are placed only in a sandbox (containment 'sandbox'), which this session does "
                             "not have")
        else:
            base, rel = place(normal)
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"its asset target {target!r} may not contain '..'")
    into_folder = target.endswith("/") or not parts or _is_dir(base, parts)
    if not into_folder and os.path.isabs(target) and place is not None:
        into_folder = os.path.isdir(target)  # a sandbox shows the host's folders under its own
    if into_folder:
        parts.append(os.path.basename(asset.source.rstrip("/")))
    return base, "/".join(parts)


def _is_dir(base: str, parts: list[str]) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(os.path.join(base, *parts)).st_mode)
    except OSError:
        return False


def _open_folder(base: str, parts: list[str]) -> int:
    """An open descriptor of ``base/parts...``, each folder made if missing and opened
    without following a symlink; ValueError if one is a symlink or not a folder."""
    fd = os.open(base, _OPEN_DIR)
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o777, dir_fd=fd)
            try:
                inner = os.open(part, _OPEN_DIR, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ValueError(f"an asset's folder {part!r} is a symlink or a file in the session's "
                                     "folder: assets are never written through one") from None
                raise
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def _copy_file(source: str, base: str, rel: str, mode: str) -> None:
    *folders, name = rel.split("/")
    dir_fd = _open_folder(base, folders)
    try:
        _write_file(source, dir_fd, name, mode)
    finally:
        os.close(dir_fd)


def _write_file(source: str, dir_fd: int, name: str, mode: str) -> None:
    info = os.stat(source)
    try:
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                      dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ValueError(f"the asset {name!r} would be written through a symlink in the session's folder"
                             ) from None
        raise
    try:
        with open(source, "rb") as f:
            while chunk := f.read(1024 * 1024):
                os.write(out, chunk)
        os.fchmod(out, _mode(stat.S_IMODE(info.st_mode), mode))
        os.utime(out, ns=(info.st_atime_ns, info.st_mtime_ns))
    finally:
        os.close(out)


def _copy_folder(source: str, base: str, rel: str, mode: str) -> None:
    for dirpath, dirnames, filenames in os.walk(source):
        sub = os.path.relpath(dirpath, source)
        parts = [p for p in (rel + ("" if sub == "." else "/" + sub)).split("/") if p]
        dir_fd = _open_folder(base, parts)
        try:
            for name in [*dirnames]:
                if os.path.islink(os.path.join(dirpath, name)):
                    dirnames.remove(name)
                    filenames.append(name)
            for name in filenames:
                path = os.path.join(dirpath, name)
                if os.path.islink(path):
                    with contextlib.suppress(FileNotFoundError):
                        if not stat.S_ISDIR(os.lstat(name, dir_fd=dir_fd).st_mode):
                            os.unlink(name, dir_fd=dir_fd)
                    os.symlink(os.readlink(path), name, dir_fd=dir_fd)
                else:
                    _write_file(path, dir_fd, name, mode)
        finally:
            os.close(dir_fd)
