"""Choosing a mode: which modes exist, which work here, and the one in force.

``ENCLOSURES`` is the table of modes, strongest first: the order in which ``auto``
tries them. A new mode is one more ``Enclosure`` subclass (its ``mode`` name, its
``probe``, its ``variants``) put in the table where its strength ranks it;
``MODES``, ``CHOICES`` (what may be configured), ``available`` and ``choose``
follow from the table.

At start a server also kills what dead servers left behind (``clean_leftovers``).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from .cgroups import cgroup_dirs, kill_stale_cgroups
from .enclosure import CgroupEnclosure, Enclosure, ScanEnclosure, SubreaperEnclosure
from .pidns import PidNamespaceEnclosure
from .procfs import signal_all, stale_processes
from .sandbox import SandboxEnclosure, remove_stale_sandboxes

#: The modes' enclosures, strongest first.
ENCLOSURES: tuple[type[Enclosure], ...] = (SandboxEnclosure, PidNamespaceEnclosure, CgroupEnclosure,
                                           SubreaperEnclosure, ScanEnclosure)
_BY_MODE = {cls.mode: cls for cls in ENCLOSURES}

#: The modes, strongest first.
MODES = tuple(_BY_MODE)

#: What a server may be configured with: "auto", a mode, or a mode's variant
#: (``pidns-bwrap``: the mode made one way).
CHOICES = ("auto", *MODES, *(f"{cls.mode}-{variant}" for cls in ENCLOSURES for variant in cls.variants))


def available(mode: str, **settings: Any) -> bool:
    """Whether ``mode`` (or ``<mode>-<variant>``) works on this host, for this server's
    user, with these ``settings`` (see ``Containment``)."""
    name, _, variant = mode.partition("-")
    cls = _BY_MODE.get(name)
    return cls is not None and variant in ("", *cls.variants) and cls.probe(variant, **settings) is not None


class Containment:
    """The containment mode in force on a server; makes each session's ``Enclosure``."""

    def __init__(self, mode: str, *, max_processes: int, log: Any, protected: tuple[str, ...] = (),
                 max_memory: int = 0, **settings: Any):
        """``mode`` is one of ``MODES``, or ``<mode>-<variant>`` (``pidns-bwrap``,
        ``pidns-unshare``) for one variant. ``protected``: the server's folders no
        file of a lab is written into (its Jupyter runtime, data and config folders).
        ``settings``: the modes' own (``sandbox=SandboxSettings(...)``,
        ``runtime_dir``). Raises ValueError if it does not work here."""
        self.mode, _, variant = mode.partition("-")
        self.max_processes = max_processes
        self.max_memory = max_memory
        self.protected = protected
        self.log = log
        self._enclosure = _BY_MODE[self.mode]
        support = self._enclosure.probe(variant, **settings)
        if support is None:
            raise ValueError(f"containment {mode!r} does not work here")
        self._options = support.options
        self.detail = support.detail

    def enclose(self, session_id: str, folder: str = "") -> Enclosure:
        """The enclosure of a new session whose folder is ``folder`` (a cgroup mode's
        cgroups are made now)."""
        return self._enclosure(session_id, max_processes=self.max_processes, log=self.log, folder=folder,
                               protected=self.protected, max_memory=self.max_memory, **self._options)

    def limits(self) -> dict[str, dict[str, Any]]:
        """The per-session limits in force here, and how, or why there are none (for
        ``GET /health``: no path in it)."""
        dirs = cgroup_dirs()
        root = os.geteuid() == 0
        # The lab's processes are in a user namespace of the session's, where the
        # RLIMIT_NPROC fallback counts only them (Enclosure.nproc_inside), and are
        # never host root (whom it does not bind).
        own_namespace = self.mode == "sandbox" or (self.mode == "pidns" and not root)
        processes: dict[str, Any]
        if self.max_processes <= 0:
            processes = {"max": None, "perSession": False, "how": "none", "why": "max_processes is 0"}
        elif dirs.pids:
            processes = {"max": self.max_processes, "perSession": True, "how": "pids cgroup"}
        elif own_namespace:
            processes = {"max": self.max_processes, "perSession": True,
                         "how": "RLIMIT_NPROC in the session's user namespace"}
        elif root:
            processes = {"max": None, "perSession": False, "how": "none",
                         "why": "no pids cgroup this server may make, and its sessions run as root, whom "
                                "RLIMIT_NPROC does not bind"}
        else:
            processes = {"max": self.max_processes, "perSession": False, "how": "RLIMIT_NPROC",
                         "why": "no pids cgroup this server may make, and no user namespace per session: "
                                "RLIMIT_NPROC counts every process of the server's user, so one session's "
                                "fork bomb can stop the others"}
        memory: dict[str, Any]
        if self.max_memory <= 0:
            memory = {"max": None, "perSession": False, "how": "none", "why": "max_memory is 0"}
        elif dirs.memory:
            memory = {"max": self.max_memory, "perSession": True, "how": "memory cgroup"}
        else:
            memory = {"max": None, "perSession": False, "how": "none",
                      "why": "no memory cgroup this server may make (a delegated cgroup v2 with the memory "
                             "controller, or a writable v1 memory hierarchy)"}
        return {"processes": processes, "memory": memory}

    def describe(self) -> str:
        limits = self.limits()
        processes, memory = limits["processes"], limits["memory"]
        detail = f" ({self.detail})" if self.detail else ""
        words = []
        for what, limit in (("process", processes), ("memory", memory)):
            how = f"{limit['max']} by {limit['how']}" if limit["max"] else "none"
            scope = "" if limit["perSession"] or not limit["max"] else " (shared by all sessions)"
            words.append(f"{what} limit: {how}{scope}")
        return f"{self.mode}{detail}, {', '.join(words)}"


def choose(wanted: str, *, max_processes: int, log: Any, protected: tuple[str, ...] = (), max_memory: int = 0,
           **settings: Any) -> Containment:
    """The mode ``wanted`` ("auto": the strongest that works), or the next that works.

    ``<mode>-<variant>`` (``pidns-bwrap``, ``pidns-unshare``) asks for one variant
    of a mode; where it does not work, the next mode is taken, not another variant.
    """
    name, _, variant = wanted.partition("-")
    if variant and available(wanted, **settings):
        return Containment(wanted, max_processes=max_processes, log=log, protected=protected,
                           max_memory=max_memory, **settings)
    start = 0 if wanted == "auto" else MODES.index(name)
    for mode in MODES[start:]:
        if available(mode, **settings) and not (variant and mode == name):
            if wanted not in ("auto", mode):
                log.warning("labkernel: containment %r is not available here; using %r", wanted, mode)
            return Containment(mode, max_processes=max_processes, log=log, protected=protected,
                               max_memory=max_memory, **settings)
    raise RuntimeError("no containment mode works here (no /proc?)")


def clean_leftovers(log: Any, sandbox_dir: str = "") -> list[int]:
    """Kill and remove what servers that died without cleaning up left behind.

    Their cgroups (named ``labkernel-<pid>-...``, the pid no longer running), the
    processes that still carry a dead server's pid in their environment, and their
    sandboxes' folders in ``sandbox_dir`` (the upper layers of their overlays).
    Returns the pids signalled. A whole-/proc scan: run it in an executor.
    """
    killed = kill_stale_cgroups(log)
    for _ in range(50):  # a leftover loop may fork between rounds: until none is left
        found = stale_processes()
        if not found:
            break
        signal_all(found, signal.SIGSTOP)
        signal_all(found, signal.SIGKILL)
        killed += found
        time.sleep(0.02)
    if killed:
        log.info("labkernel: killed %d process(es) a dead server left behind", len(set(killed)))
    if sandbox_dir:  # once nothing of theirs runs: nothing uses the overlays
        remove_stale_sandboxes(sandbox_dir, log)
    return sorted(set(killed))
