"""Helpers for tests of lab definitions: lab folders of their own under tmp_path."""

from __future__ import annotations

import contextlib
import os
import secrets
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest

#: The settings of a server whose catalog is re-read on every request.
FRESH = {"lab_scan_interval": 0.0, "cull_interval": 0.1, "kill_grace": 0.3}


def lab_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """labkernel_config for a server whose labs are in ``tmp_path/labs``."""
    (tmp_path / "labs").mkdir(exist_ok=True)
    return {"lab_path": [str(tmp_path / "labs")], **FRESH, **overrides}


def write_lab(parent: Path, name: str, toml: str, files: dict[str, str] | None = None) -> Path:
    folder = parent / name
    folder.mkdir(parents=True, exist_ok=True)
    for rel, text in (files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    # The definition last: a scan that sees it sees its files too.
    (folder / "lab.toml").write_text(textwrap.dedent(toml))
    return folder


async def check(api: Any, sid: str, step: int | None = None, expect: int = 200) -> Any:
    body = {} if step is None else {"step": step}
    return await api.ok("POST", "api", "labs", "session", sid, "check", body=body, expect=expect)


async def wait_running(api: Any, sid: str, timeout: float = 30) -> dict[str, Any]:
    """Long-poll until the session has left ``starting``; returns the session."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        session = await api.get(sid)
        if session["status"] != "starting":
            return session
        assert time.monotonic() < deadline, "the session is still starting"
        await api.output(sid, session["outputOffset"], wait=1)


def new_token() -> str:
    """A token to put in a process's command line (``sleep 300.TOKEN``), to find it by.

    Hidden scripts run inside the session's enclosure, which may be a PID namespace
    whose pids (``$!``) are not the server's: tests find their processes by token.
    """
    return str(secrets.randbelow(10**9)).zfill(9)


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


@pytest.fixture
def token() -> str:
    """A token for the command lines of a test's processes (see ``with_token``)."""
    return str(secrets.randbelow(10**9)).zfill(9)


@pytest.fixture(autouse=True)
def _no_leftovers(token: str):
    """Whatever a failing (or xfailing) test leaves behind, it does not outlive the test
    (autouse in the modules that import it, with ``token``)."""
    yield
    for proc in with_token(token):
        with contextlib.suppress(psutil.Error):
            proc.kill()
