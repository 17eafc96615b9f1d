"""What ``/proc`` says about a session's processes: a pure core and its readers.

The core (``Proc``, ``parse_stat``, ``members``) decides which processes belong to a
session from a snapshot of the process table, and is tested without processes. The
readers take that snapshot. A whole-``/proc`` scan (``read_procs``,
``namespace_members``, ``stale_processes``) costs milliseconds on a busy host: run it
in the loop's executor, never on the event loop. The one-process reads (``alive``,
``children``, ``pid_namespace``) are single small reads, fine on the loop.

Every session's environment carries two markers: ``MARKER_ENV``, which session a
process belongs to (the scanning modes find by it what left the shell's process
session), and ``SERVER_ENV``, which server started it (``server_id``), so that a
successor can tell a dead server's leftovers (``stale_processes``).
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import NamedTuple

#: Set in every session's environment: which session a process belongs to, and which
#: server started it (so that a successor can tell a dead server's leftovers).
MARKER_ENV = "LABKERNEL_SESSION"
SERVER_ENV = "LABKERNEL_SERVER_PID"


# -- the pure core -------------------------------------------------------------------------


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


# -- readers -------------------------------------------------------------------------------


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


def children(pid: int) -> list[int]:
    """The children of process ``pid`` (its main thread's), oldest first; [] if it is gone."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def pid_namespace(pid: int) -> str | None:
    """Which PID namespace process ``pid`` is in (``pid:[4026531836]``); None if it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def namespace_members(ns: str) -> set[int]:
    """The live processes in PID namespace ``ns`` (a whole-/proc scan: executor only)."""
    pids = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and pid_namespace(int(entry.name)) == ns and alive(int(entry.name)):
            pids.add(int(entry.name))
    return pids


def signal_all(pids: Iterable[int], sig: int) -> None:
    """Send ``sig`` to each of ``pids`` that is still there and ours to signal."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# -- which server a process belongs to ---------------------------------------------------


def server_id() -> str:
    """This server as ``SERVER_ENV`` names it: its pid, and the PID namespace the pid
    means something in (a server started inside a lab's namespace must not take the
    outer server, invisible to it, for dead)."""
    return f"{os.getpid()}@{pid_namespace(os.getpid()) or ''}"


def start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (its stat's 22nd field);
    None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rpartition(b")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def server_mark(pid: int | None = None) -> str:
    """A name for this server (or process ``pid``) that no later process shares: its pid
    and start time, ``<pid>.<ticks>``. Folders left by a server killed with SIGKILL are
    recognised by it at the next start (``mark_alive``), even once the pid is reused."""
    pid = pid or os.getpid()
    return f"{pid}.{start_time(pid) or 0}"


def mark_alive(mark: str) -> bool | None:
    """Whether the process a ``server_mark`` names still runs: the same pid started at
    the same time; None if ``mark`` is not one."""
    pid, dot, ticks = mark.partition(".")
    if not (pid.isdigit() and dot and ticks.isdigit()):
        return None
    return int(pid) == os.getpid() or (alive(int(pid)) and start_time(int(pid)) == int(ticks))


def server_alive(pid: int) -> bool:
    """Whether the server that ``pid`` names (in our PID namespace) still runs."""
    return pid == os.getpid() or alive(pid)


def stale_processes() -> list[int]:
    """The live processes whose ``SERVER_ENV`` names a server of our PID namespace that
    no longer runs: what a dead server left (a whole-/proc scan: executor only)."""
    prefix = f"{SERVER_ENV}=".encode()
    here = f"@{pid_namespace(os.getpid()) or ''}".encode()
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
            if ns == here and pid.isdigit() and not server_alive(int(pid)) and alive(int(entry.name)):
                found.append(int(entry.name))
    return found
