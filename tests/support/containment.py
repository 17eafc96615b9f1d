"""The containment modes this machine supports, the escapes a learner can try, and
servers run by an unprivileged user.

The escapes are found by the test's token in their command lines (see
``support.processes``), never by pids a shell prints: a respawning loop's children
are born after any print, and a session in a PID namespace sees other pids than ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from labkernel import containment

from .api import FAST, eventually
from .processes import survivors
from .serverproc import ServerProcess

MODE_PARAMS = [
    pytest.param(mode, id=mode, marks=pytest.mark.skipif(
        not containment.available(mode), reason=f"containment {mode!r} does not work on this machine"))
    for mode in containment.MODES
]
#: Where bwrap makes the PID namespaces, unshare's way is also tested, on the tests
#: where the two differ (the init, the terminal, a server's death).
WITH_UNSHARE = MODE_PARAMS + ([pytest.param("pidns-unshare", id="pidns-unshare", marks=pytest.mark.skipif(
    not containment.available("pidns-unshare"), reason="unshare cannot make a PID namespace here"))]
    if containment.pidns_prefix() != containment.pidns_prefix("unshare") else [])

#: The escape that only the scan mode cannot hold: an orphan that left the shell's
#: session and dropped the marker is a child of init, with nothing left to find it by.
DOUBLE_FORK = "1002"
#: ``setsid`` run by an interactive shell forks (the job leads its process group), so
#: ``setsid env -i`` is such an orphan too.
SETSID_ENV = "1001"


def escapes(token: str, mode: str) -> dict[str, str]:
    """Command lines that try to outlive the session, by the sleep each one leaves running."""
    lines = {
        # setsid, SIGHUP ignored, a new child every 0.2 s
        "1000": f"""setsid bash -c 'trap "" HUP; while :; do sleep 1000.{token} & sleep .2; done' &""",
        # setsid and no marker
        SETSID_ENV: f"""setsid env -i sh -c 'while :; do sleep 1001.{token}; done' &""",
        # a double-forked daemon, no marker: its parent exits at once
        DOUBLE_FORK: f"""(setsid env -i sh -c 'sleep 1002.{token} & exit' &)""",
        # ignores SIGHUP and SIGTERM, keeps starting orphans
        "1003": f"""sh -c 'trap "" HUP TERM; while :; do (sleep 1003.{token} &); sleep .1; done' &""",
    }
    if mode == "scan":
        # What the scan cannot hold: see test_scan_mode_loses_what_dropped_the_marker_and_left_the_tree.
        del lines[DOUBLE_FORK], lines[SETSID_ENV]
    return lines


def start_escapes_on(server: ServerProcess, sid: str, token: str, lines: dict[str, str]) -> None:
    """Type the escapes into a subprocess server's session; wait until each one runs."""
    for line in lines.values():
        server.command(sid, line)
    deadline = time.monotonic() + 30
    while not all(f"sleep {kind}.{token}" in " ".join(survivors(token)) for kind in lines):
        assert time.monotonic() < deadline, survivors(token)
        time.sleep(0.1)


async def assert_none_left(token: str, *, at_once: bool = False) -> None:
    """Nothing with the token survives, now and a while later (loops would have respawned)."""
    # Messages of their own: assertions in this module are not rewritten by pytest.
    if at_once:
        left = survivors(token)
        assert left == [], f"still there when the stop answered: {left}"
    else:
        await eventually(lambda: not survivors(token), timeout=15)
    await asyncio.sleep(0.5)
    left = survivors(token)
    assert left == [], f"still there half a second later: {left}"


def as_nobody(*argv: str, env: dict | None = None) -> bool:
    """Whether ``argv`` run as ``nobody`` succeeds."""
    try:
        return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv],
                              capture_output=True, timeout=30, env=env, cwd="/").returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _python_for_nobody() -> tuple[str, str] | None:
    """An interpreter ``nobody`` may run with this environment's packages, and its PYTHONPATH.

    The test's own may live where nobody can reach (a pyenv under /root): then the
    system's interpreter of the same version, given the same site-packages.
    """
    import site
    path = os.pathsep.join([str(Path(__file__).resolve().parents[2]), *site.getsitepackages()])
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, f"/usr/bin/{version}"):
        if as_nobody(python, "-c", "import jupyter_server, labkernel",
                     env=dict(os.environ, PYTHONPATH=path)):
            return python, path
    return None


@contextlib.contextmanager
def nobody_server(config: dict, prepare: Callable[[Path], Any] | None = None,
                  env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """A server subprocess running as ``nobody``, in a directory of its own; skips
    where this machine cannot run one. ``prepare(base)`` runs before it starts;
    ``env`` adds to its environment."""
    if os.geteuid() != 0:
        pytest.skip("starts a server as another user: needs root")
    python = _python_for_nobody()
    if python is None:
        pytest.skip("no Python interpreter with this environment's packages that nobody may run")
    base = Path(tempfile.mkdtemp(prefix="labkernel-unprivileged-"))
    try:
        base.chmod(0o755)
        (base / "root").mkdir()
        if prepare is not None:
            prepare(base)
        server = ServerProcess(base, user="nobody", manager={**FAST, **config}, python=python[0],
                               pythonpath=python[1], env=env)
        try:
            yield server
        finally:
            server.terminate()
    finally:
        shutil.rmtree(base, ignore_errors=True)
