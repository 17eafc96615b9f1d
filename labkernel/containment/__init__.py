"""Containment: every process a lab session starts ends with the session.

A learner's shell can leave its session in many ways: ``setsid`` (a new session id),
``env -i`` (no ``LABKERNEL_SESSION`` marker), a double fork (its parent gone, it is
reparented out of the shell's tree), a loop that keeps starting children. Which ways
the server can close depends on what the host allows, so there are five modes,
strongest first; the manager takes the strongest that works (``choose``) unless
configured otherwise:

``sandbox``
    A PID namespace as in ``pidns``, in a user namespace where the lab is root
    without a capability outside (the server's uid, or for a root server a range of
    unprivileged uids), and a mount namespace whose root is the host's under an
    overlay of the session's (its writes to /etc, /usr... stay in it and go with
    it), with its own /tmp, its folder as /root and HOME, the server's home and
    Jupyter folders hidden; every mount locked, so that nothing under one can be
    revealed (``umount /proc`` included). Needs unprivileged user namespaces (or
    root), util-linux and overlayfs; its folder on disk is removed with the
    session, or by the next server after a crash (``clean_leftovers``).
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

The package, from the bottom up:

- ``procfs``: the pure core that decides which processes belong to a session
  (``Proc``, ``parse_stat``, ``members``) and the ``/proc`` readers;
- ``cgroups``: where this server may make cgroups; making, killing, removing them;
- ``scripts``: the small programs put in front of a session's processes (the cgroup
  join, the subreaper ``sh``, a hidden script's reaper, the PID namespace holder);
- ``enclosure``: ``Enclosure``, what holds one session's processes and ends them
  (the same steps in every mode, the process limit, hidden scripts inside it), and
  the ``cgroup``, ``subreaper`` and ``scan`` modes' enclosures;
- ``pidns``: the ``pidns`` mode's enclosure, entering its namespace, its probes;
- ``sandbox``: the ``sandbox`` mode's enclosure (a ``pidns`` one, made another way),
  its settings and probe; ``sandboxer``, the program that builds a sandbox (run by
  a fresh interpreter in the session's first process; the server imports it only
  to write its spec);
- ``modes``: the table of modes (``ENCLOSURES``: a new mode is one more entry),
  ``choose``, ``Containment`` (the mode in force) and ``clean_leftovers``.
"""

from .cgroups import cgroup_dirs
from .enclosure import Enclosure, ScanEnclosure
from .modes import MODES, Containment, available, choose, clean_leftovers
from .pidns import pidns_prefix
from .procfs import Proc, members, parse_stat, read_procs, signal_all
from .sandbox import SandboxSettings
from .scripts import reaper_argv

__all__ = [
    "MODES", "Containment", "Enclosure", "Proc", "SandboxSettings", "ScanEnclosure", "available", "cgroup_dirs",
    "choose",
    "clean_leftovers", "members", "parse_stat", "pidns_prefix", "read_procs", "reaper_argv", "signal_all",
]
