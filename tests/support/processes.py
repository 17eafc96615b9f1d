"""Finding a session's processes from the test: by the pid its shell prints, or by a
token in their command lines.

A session may run in a PID namespace of its own (see ``labkernel.containment``),
where the pids its shell sees are not the server's: ``printed_pid`` translates them.
Hidden scripts' processes and a respawning loop's children are found by a token
(the ``token`` fixture) in their command lines (``sleep 300.TOKEN``) instead; the
token keeps the search of the machine's process list from finding another test's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import psutil

#: Shell text that prints a pid with its PID namespace, as ``NAME=[pid@pid:[inode]]``.
NS = "@$(readlink /proc/self/ns/pid)"


def printed_pid(text: str, name: str) -> int:
    """The host pid of what a session printed as ``NAME=[pid@ns]`` (see ``NS``)."""
    match = re.search(rf"{name}=\[(\d+)@(pid:\[\d+\])\]", text)
    assert match, f"no {name}=[pid@ns] in {text[-300:]!r}"
    return host_pid(int(match.group(1)), match.group(2))


def host_pid(pid: int, ns: str) -> int:
    """The pid in this process's namespace of process ``pid`` of namespace ``ns``."""
    if os.readlink("/proc/self/ns/pid") == ns:
        return pid
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/ns/pid") != ns:
                continue
            status = Path(f"/proc/{entry.name}/status").read_text()
        except OSError:
            continue
        nspids = re.search(r"^NSpid:\s*(.*)$", status, re.MULTILINE).group(1).split()
        if int(nspids[-1]) == pid:
            return int(entry.name)
    raise AssertionError(f"no process {pid} in {ns}")


def with_token(token: str) -> list[psutil.Process]:
    """Live processes whose command line holds ``token``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if token in " ".join(proc.info["cmdline"] or ()) and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def sleeping(token: str) -> list[psutil.Process]:
    """The live ``sleep N.TOKEN`` processes (not the scripts whose text holds the token)."""
    return [p for p in with_token(token) if os.path.basename((p.info["cmdline"] or [""])[0]) == "sleep"]


def survivors(token: str) -> list[str]:
    """What still carries the token, as ``pid command line`` (for failure messages)."""
    return [f"{p.pid} {' '.join(p.info['cmdline'])}" for p in with_token(token)]
