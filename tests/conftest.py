"""Shared fixtures: a real Jupyter server (pytest-jupyter) with labkernel, and real shells.

pytest-jupyter's default base URL is ``/a%40b/``; it stays, so that any place that
forgets ``base_url`` fails a test.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

pytest_plugins = ["pytest_jupyter.jupyter_server"]

#: A prompt no command output contains by accident.
PROMPT = "lab-prompt$ "


@pytest.fixture
def labkernel_config() -> dict[str, Any]:
    """LabSessionManager settings for the test server; override in a test module to change."""
    return {}


@pytest.fixture
def jp_server_config(labkernel_config: dict[str, Any]) -> Config:
    return Config({
        "ServerApp": {"jpserver_extensions": {"labkernel": True}},
        "LabSessionManager": {
            # A shell that reads no rc files starts fast and prints a known prompt.
            "shell_command": ["bash", "--norc", "--noprofile", "-i"],
            **labkernel_config,
        },
    })


@pytest.fixture(autouse=True)
def _known_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PS1", PROMPT)
    monkeypatch.setenv("HISTFILE", "/dev/null")


class Api:
    """A thin async client of the REST API over pytest-jupyter's ``jp_fetch``.

    Every call returns ``(status, body)`` with the body parsed from JSON, so tests
    can check error answers as easily as good ones.
    """

    def __init__(self, fetch: Any):
        self._fetch = fetch

    async def call(self, method: str, *path: str, body: Any = None, params: dict | None = None,
                   headers: dict | None = None, raw_body: bytes | str | None = None,
                   **kwargs: Any) -> tuple[int, Any]:
        if raw_body is None and body is not None:
            raw_body = json.dumps(body)
        if raw_body is None and method in ("POST", "PUT", "PATCH"):
            raw_body = b""
        response = await self._fetch(
            *path, method=method, body=raw_body, params=params or {}, headers=headers or {},
            raise_error=False, allow_nonstandard_methods=True, request_timeout=60, **kwargs)
        text = response.body.decode() if response.body else ""
        content_type = response.headers.get("Content-Type", "")
        assert "json" in content_type, f"{method} {path}: not JSON ({content_type}): {text[:200]}"
        return response.code, json.loads(text) if text else None

    async def ok(self, method: str, *path: str, expect: int = 200, **kwargs: Any) -> Any:
        status, body = await self.call(method, *path, **kwargs)
        assert status == expect, f"{method} {'/'.join(path)} answered {status}: {body}"
        return body

    # -- the routes ------------------------------------------------------------

    async def start(self, **body: Any) -> dict[str, Any]:
        return await self.ok("POST", "api", "labs", "start", body=body, expect=201)

    async def get(self, sid: str) -> dict[str, Any]:
        return await self.ok("GET", "api", "labs", "session", sid)

    async def stop(self, sid: str) -> dict[str, Any]:
        return await self.ok("DELETE", "api", "labs", "session", sid)

    async def status(self, sid: str) -> dict[str, Any]:
        return await self.ok("GET", "api", "ws", "status", sid)

    async def message(self, sid: str, **body: Any) -> dict[str, Any]:
        return await self.ok("POST", "api", "ws", "message", body={"sessionId": sid, **body})

    async def send(self, sid: str, data: str, **body: Any) -> dict[str, Any]:
        return await self.message(sid, data=data, **body)

    async def command(self, sid: str, line: str) -> dict[str, Any]:
        return await self.message(sid, command=line)

    async def output(self, sid: str, offset: int = 0, **params: Any) -> dict[str, Any]:
        query = {"offset": str(offset), **{k: str(v) for k, v in params.items()}}
        return await self.ok("GET", "api", "ws", "output", sid, params=query)

    async def read_until(self, sid: str, pattern: str, offset: int = 0, *, timeout: float = 30,
                         **params: Any) -> tuple[str, int]:
        """Long-poll from ``offset`` until the text read matches ``pattern`` (a regex).

        Returns the text read and the next offset. Fails the test on timeout (a
        generous limit that only catches a hang) or when the session ends first.
        """
        text, deadline = "", time.monotonic() + timeout
        while not re.search(pattern, text):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {pattern!r}; got {text[-500:]!r}"
            answer = await self.output(sid, offset, wait=min(left, 5), **params)
            text += answer["data"]
            offset = answer["nextOffset"]
            if answer["status"] != "running" and not answer["data"]:
                assert re.search(pattern, text), f"session ended before {pattern!r}: {text[-500:]!r}"
        return text, offset

    async def shell(self, **body: Any) -> tuple[str, int]:
        """Start a session and wait for its first prompt; returns (sessionId, offset)."""
        session = await self.start(**body)
        _, offset = await self.read_until(session["sessionId"], re.escape(PROMPT))
        return session["sessionId"], offset


@pytest.fixture
def api(jp_fetch: Any) -> Api:
    return Api(jp_fetch)


@pytest.fixture
def server_url(http_server: Any, jp_http_port: int, jp_base_url: str) -> str:
    """The test server's URL with its base URL, for clients other than jp_fetch.

    Depending on ``http_server`` makes sure the server listens on that port.
    """
    return f"http://127.0.0.1:{jp_http_port}{jp_base_url}"


@pytest.fixture
def manager(jp_serverapp: Any) -> Any:
    """The server's LabSessionManager, for looking inside (waiters, buffers) in tests."""
    return jp_serverapp.web_app.settings["labkernel_manager"]


async def eventually(predicate: Any, timeout: float = 15, interval: float = 0.05) -> None:
    """Wait until ``predicate()`` is true; the timeout only catches a hang."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(interval)


#: Shell text that prints a pid with its PID namespace, as ``NAME=[pid@pid:[inode]]``:
#: a session may run in a PID namespace of its own (see ``labkernel.containment``),
#: where the pids its shell sees are not the server's.
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
        nspids = re.search(r"^NSpid:\s*(.*)$", status, re.M).group(1).split()
        if int(nspids[-1]) == pid:
            return int(entry.name)
    raise AssertionError(f"no process {pid} in {ns}")
