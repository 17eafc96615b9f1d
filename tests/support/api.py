"""The in-process test server's REST API, and waiting on it without deadlines a loaded
machine misses: every limit here only catches a hang."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from typing import Any, Callable

#: A prompt no command output contains by accident.
PROMPT = "lab-prompt$ "

#: A shell that reads no rc files starts fast and prints a known prompt (``PROMPT``).
SHELL_COMMAND = ["bash", "--norc", "--noprofile", "-i"]

#: Settings for tests of sessions ending: quick culling and killing.
FAST = {"cull_interval": 0.1, "kill_grace": 0.3}


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


async def eventually(predicate: Callable[[], Any], timeout: float = 15, interval: float = 0.05) -> None:
    """Wait until ``predicate()`` is true; the timeout only catches a hang."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(interval)


async def run(api: Api, sid: str, line: str, pattern: str, *, timeout: float = 30) -> re.Match:
    """Type a command line and read its output until ``pattern`` matches."""
    accepted = await api.command(sid, line)
    text, _ = await api.read_until(sid, pattern, accepted["offset"], timeout=timeout)
    return re.search(pattern, text)


async def wait_ended(api: Api, sid: str, offset: int = 0, timeout: float = 30) -> tuple[str, dict]:
    """Long-poll until the session is no longer running; returns the text read and the last answer."""
    text, deadline = "", time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, f"session still running; output {text[-300:]!r}"
        answer = await api.output(sid, offset, wait=5)
        text += answer["data"]
        offset = answer["nextOffset"]
        if answer["status"] != "running":
            return text, answer


def request_json(method: str, url: str, token: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    """One blocking request to a server in another process (a browser test's, the
    hub's), with its token: the status and the parsed JSON (or the text) of the answer."""
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw, status = response.read(), response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")
