"""Cgroups: where this server may make them, and making, killing and removing them.

A session's cgroups are named ``labkernel-<serverpid>-<sessionid>`` (``cgroup_name``),
so that the next server can recognise a dead server's and remove them at its start
(``kill_stale_cgroups``). Two kinds are used: a v2 cgroup, for ``cgroup.kill`` (the
``cgroup`` mode's enclosure), and a pids cgroup, for ``pids.max`` (the process limit,
in any mode): the v2 controller if it is enabled, else the v1 hierarchy
(``cgroup_dirs``).

Nothing here joins a cgroup: the session's first process does that itself, after
its exec (``scripts.JOIN_SCRIPT``), since a migration between fork and exec held the
event loop some 10 ms more.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
import time
from typing import Any, NamedTuple

from .procfs import server_alive, signal_all

PREFIX = "labkernel-"
_LEFTOVER = re.compile(rf"^{PREFIX}(\d+)-")


def cgroup_name(session_id: str) -> str:
    """The name of a session's cgroups (under any parent): this server's pid and the id."""
    return f"{PREFIX}{os.getpid()}-{session_id}"


class CgroupDirs(NamedTuple):
    """Where this server may create cgroups: its own v2 cgroup, its pids cgroup, its
    memory cgroup."""

    unified: str | None  # a writable v2 directory that has cgroup.kill
    pids: str | None  # a writable directory whose children get pids.max
    memory: str | None = None  # a writable directory whose children get a memory limit


def memory_limit_file(parent: str) -> str:
    """The file of a memory cgroup under ``parent`` that takes its limit: ``memory.max``
    (v2) or ``memory.limit_in_bytes`` (v1)."""
    return "memory.max" if os.path.exists(os.path.join(parent, "cgroup.controllers")) else "memory.limit_in_bytes"


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
    probe = os.path.join(parent, f"{PREFIX}{os.getpid()}-probe")
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
    unified = pids = memory = None
    for root, point, fstype, options in _mounts():
        if fstype == "cgroup2" and "" in own and unified is None:
            path = own[""]
            rel = path[len(root):] if root != "/" and path.startswith(root) else path
            candidate = os.path.normpath(point + rel)
            # The root cgroup has no cgroup.kill; its children do.
            if _writable_child(candidate, "cgroup.kill"):
                unified = candidate
                with contextlib.suppress(OSError), open(os.path.join(candidate, "cgroup.subtree_control")) as s:
                    enabled = s.read().split()
                    pids = candidate if "pids" in enabled else pids
                    memory = candidate if "memory" in enabled else memory
            continue
        for name in ("pids", "memory"):
            if fstype == "cgroup" and name in options.split(",") and name in own:
                if (name == "pids" and pids is not None) or (name == "memory" and memory is not None):
                    continue
                path = own[name]
                rel = path[len(root):] if root != "/" and path.startswith(root) else path
                candidate = os.path.normpath(point + rel)
                if _writable_child(candidate, "pids.max" if name == "pids" else "memory.limit_in_bytes"):
                    if name == "pids":
                        pids = candidate
                    else:
                        memory = candidate
    return CgroupDirs(unified, pids, memory)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def make_cgroup(parent: str, name: str, pids_max: int = 0, memory_max: int = 0) -> str:
    """Create cgroup ``name`` under ``parent`` (or take it, if this server made it
    already for another controller), with ``pids.max`` and the memory limit where
    above 0; its path.

    Raises OSError, leaving nothing it made behind.
    """
    path = os.path.join(parent, name)
    made = False
    try:
        try:
            os.mkdir(path)
            made = True
        except FileExistsError:
            pass
        if pids_max > 0:
            _write(os.path.join(path, "pids.max"), str(pids_max))
        if memory_max > 0:
            _write(os.path.join(path, memory_limit_file(parent)), str(memory_max))
    except OSError:
        if made:
            remove_cgroup(path)
        raise
    return path


def cgroup_procs(path: str) -> set[int]:
    """The processes in cgroup ``path`` (none if it is gone)."""
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return {int(p) for p in f.read().split()}
    except OSError:
        return set()


def populated(path: str) -> bool:
    """Whether v2 cgroup ``path`` or a child holds a process (one small read)."""
    try:
        with open(os.path.join(path, "cgroup.events")) as f:
            return "populated 1" in f.read()
    except OSError:
        return False


def kill_cgroup(path: str) -> None:
    """SIGKILL everything in a cgroup: ``cgroup.kill`` on v2, one by one on v1."""
    if os.path.exists(os.path.join(path, "cgroup.kill")):
        with contextlib.suppress(OSError):
            _write(os.path.join(path, "cgroup.kill"), "1")
    else:
        signal_all(cgroup_procs(path), signal.SIGKILL)


def remove_cgroup(path: str) -> bool:
    """rmdir an empty cgroup; whether it is gone."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


async def remove_soon(paths: list[str], log: Any, patience: float = 60.0) -> None:
    """rmdir each cgroup now or, while it still holds dying processes, a little later."""
    deadline, delay = time.monotonic() + patience, 0.02
    while True:
        paths = [path for path in paths if not remove_cgroup(path)]
        if not paths:
            return
        if time.monotonic() >= deadline:
            log.warning("labkernel: cgroup(s) %s still hold processes; left for the next start", paths)
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


def kill_stale_cgroups(log: Any) -> list[int]:
    """Kill and remove the cgroups of servers that died without removing them (named
    ``labkernel-<pid>-...``, the pid no longer running); the pids killed.

    Waits up to 5 s for them to empty: run it in an executor.
    """
    dirs = cgroup_dirs()
    stale = []
    for parent in {d for d in (dirs.unified, dirs.pids, dirs.memory) if d}:
        with contextlib.suppress(OSError):
            for entry in os.scandir(parent):
                match = _LEFTOVER.match(entry.name)
                if match and entry.is_dir() and not server_alive(int(match.group(1))):
                    stale.append(entry.path)
    killed: list[int] = []
    for path in stale:
        killed += sorted(cgroup_procs(path))
        kill_cgroup(path)
    deadline = time.monotonic() + 5
    for path in stale:
        while not remove_cgroup(path) and time.monotonic() < deadline:
            kill_cgroup(path)
            time.sleep(0.05)
        if os.path.exists(path):
            log.warning("labkernel: could not remove a dead server's cgroup %s", path)
    return killed
