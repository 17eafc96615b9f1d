"""Lab folders of a test's own under ``tmp_path``, and the checks route."""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path
from typing import Any

from .api import FAST, PROMPT, Api

#: The settings of a server whose catalog is re-read on every request.
FRESH = {"lab_scan_interval": 0.0, **FAST}


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


async def started(api: Api, lab_id: str) -> tuple[str, int]:
    """Start a lab and wait for its first prompt; returns (sessionId, offset)."""
    sid = (await api.start(labId=lab_id))["sessionId"]
    _, offset = await api.read_until(sid, re.escape(PROMPT))
    return sid, offset


async def check(api: Api, sid: str, step: int | None = None, expect: int = 200) -> Any:
    body = {} if step is None else {"step": step}
    return await api.ok("POST", "api", "labs", "session", sid, "check", body=body, expect=expect)


async def wait_running(api: Api, sid: str, timeout: float = 30) -> dict[str, Any]:
    """Long-poll until the session has left ``starting``; returns the session."""
    deadline = time.monotonic() + timeout
    while True:
        session = await api.get(sid)
        if session["status"] != "starting":
            return session
        assert time.monotonic() < deadline, "the session is still starting"
        await api.output(sid, session["outputOffset"], wait=1)
