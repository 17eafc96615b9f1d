"""The small programs the server puts in front of a session's processes.

Each is a few lines of ``sh`` (one is Python), given its arguments in argv, never
pasted into its text. Together they are everything that runs between the server's
spawn and a lab's own program:

- ``JOIN_SCRIPT``: joins the session's cgroups, then becomes the program;
- ``SESSION_SUBREAPER``: the subreaper mode's ``sh`` in front of the shell;
- ``SCRIPT_REAPER``: the first process of every hidden script (setup, check);
- ``PRCTL_EXEC``: a limit and a prctl for a process spawned without a preexec_fn;
- ``HOLDER`` and ``CD_THEN_EXEC``: a PID namespace made before the shell, entered later.

``works`` runs a probe once, to learn whether a mode works here.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys

#: Joins the cgroups whose cgroup.procs files precede "--", then becomes the program.
#: Run after exec, so that the server's loop does not wait for the migration; the
#: program starts only once it is in (failing to join fails the session).
JOIN_SCRIPT = """while [ "$1" != -- ]; do echo 0 > "$1" || exit 126; shift; done
shift
exec "$@"
"""


def joined(procs_files: list[str], argv: list[str]) -> list[str]:
    """``argv`` behind ``JOIN_SCRIPT``, joining the cgroups of these cgroup.procs files."""
    if not procs_files:
        return argv
    return ["sh", "-c", JOIN_SCRIPT, "labkernel-join", *procs_files, "--", *argv]


#: The subreaper mode's ``sh``: runs the program, then kills what it left behind, one
#: generation at a time (each orphan's children are reparented to this sh in turn).
#: Handlers (not ignored signals, which the program would inherit) keep it alive
#: through the SIGHUP that ends the session and Ctrl-C typed at the program.
SESSION_SUBREAPER = r"""trap : HUP INT QUIT TERM
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


def subreaper_argv(argv: list[str]) -> list[str]:
    """``argv`` behind ``SESSION_SUBREAPER`` (made a subreaper by the spawn's preexec)."""
    return ["sh", "-c", SESSION_SUBREAPER, "labkernel-session", *argv]


#: The first process of a hidden script (setup, check), its *reaper*: runs the script
#: in the session's folder (``$1``; entering a mount namespace leaves one at its
#: root) with nothing on its stdin, then reports the script's exit status on its own
#: stdin, a socket the server holds, and waits there until the server lets it go
#: (closes the socket). Under the subreaper mode it is the script's
#: PR_SET_CHILD_SUBREAPER (``PRCTL_EXEC``), so everything the script started,
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
PRCTL_EXEC = """import ctypes, os, resource, signal, sys
# Python ignores SIGPIPE and SIGXFSZ at start, and ignored signals survive exec: a
# script's `yes | head` would print "Broken pipe" instead of ending quietly.
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
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


@functools.cache
def prlimit_path() -> str | None:
    return shutil.which("prlimit")


@functools.cache
def helper_python() -> str:
    """An interpreter to run ``PRCTL_EXEC``: the server's, or any python3 on PATH
    if the server's own path is not one it may execute (it needs only the stdlib)."""
    if os.access(sys.executable, os.X_OK):
        return sys.executable
    return shutil.which("python3") or sys.executable


#: Signals a server may have been started ignoring (``nohup``: SIGHUP; ``&`` in a
#: script: SIGINT, SIGQUIT) and that a lab's program must not inherit ignored.
INHERITED_IGNORES = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGTSTP", "SIGTTIN", "SIGTTOU")

#: Execs ``argv[1:]`` with every signal of ``INHERITED_IGNORES`` (and Python's own
#: SIGPIPE and SIGXFSZ) at its default: ignored signals survive exec, and a shell
#: cannot reset those it was started ignoring.
DEFAULT_SIGNALS_EXEC = """import os, signal, sys
for name in %r + ("SIGPIPE", "SIGXFSZ"):
    signal.signal(getattr(signal, name), signal.SIG_DFL)
os.execvp(sys.argv[1], sys.argv[1:])
""" % (INHERITED_IGNORES,)


def with_default_signals(argv: list[str]) -> list[str]:
    """``argv`` for a spawn without a preexec_fn (a vfork): as it is, unless the
    server ignores a signal its children would inherit ignored (started by ``nohup``
    or in the background), then behind ``DEFAULT_SIGNALS_EXEC``. A few dictionary
    reads per spawn; the exec in front (~25 ms, off the loop) only in that case."""
    if not any(signal.getsignal(getattr(signal, name)) == signal.SIG_IGN for name in INHERITED_IGNORES):
        return argv
    return [helper_python(), "-I", "-S", "-c", DEFAULT_SIGNALS_EXEC, *argv]


def with_limits(argv: list[str], *, nproc: int, subreaper: bool, hard: bool = False) -> list[str]:
    """``argv`` under RLIMIT_NPROC ``nproc`` (if above 0) and, with ``subreaper``, its
    own PR_SET_CHILD_SUBREAPER, by an exec in front of it: util-linux's prlimit where
    that is enough, else ``PRCTL_EXEC``. For a spawn without a preexec_fn (a vfork).
    ``hard``: the hard limit too (a learner's shell, which could raise the soft one)."""
    prlimit = prlimit_path()
    if subreaper or (nproc and not prlimit):
        return [helper_python(), "-I", "-S", "-c", PRCTL_EXEC, str(nproc), "1" if subreaper else "0", "--", *argv]
    if not (nproc and prlimit):
        return argv
    _, hard_now = resource.getrlimit(resource.RLIMIT_NPROC)  # a spawn inherits the server's
    if hard_now != resource.RLIM_INFINITY:
        nproc = min(nproc, hard_now)
    hard_text = str(nproc) if hard else "unlimited" if hard_now == resource.RLIM_INFINITY else str(hard_now)
    return [prlimit, f"--nproc={nproc}:{hard_text}", "--", *argv]


#: The program of a PID namespace made for a lab's hidden setup before the shell
#: exists: it waits on its stdin, a pipe from the server, so it ends with the server
#: (EOF), or with the SIGHUP that ends the session; the namespace ends with it.
HOLDER = ["sh", "-c", "read -r _", "labkernel-holder"]

#: Enters a folder, then becomes the program: after nsenter, which leaves the
#: process at the mount namespace's root.
CD_THEN_EXEC = 'cd -- "$0" || exit 126; exec "$@"'


def works(argv: list[str]) -> bool:
    """Whether ``argv`` runs and exits 0 (a probe, once at start: it blocks)."""
    try:
        return subprocess.run(argv, check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
