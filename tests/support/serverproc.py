"""A Jupyter server with labkernel in a process of its own, for tests that need one.

The pytest-jupyter server runs inside the test process, which is right for most
tests but not for these: memory is judged by the server's RSS (the test's own
allocations would blur it), an environment, a signal disposition or a user must be
in place before the server starts, some servers run with fewer privileges than the
test (no CAP_KILL), and some are killed with SIGKILL.
"""

from __future__ import annotations

import json
import pwd
import re
import shutil
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from labkernel.clients.localserver import JupyterServer

from .api import PROMPT, SHELL_COMMAND

BASE_URL = "/a%40b/"  # as pytest-jupyter's: a base-URL bug fails these tests too


def user_group(user: str) -> int:
    """The primary group of ``user``."""
    return pwd.getpwnam(user).pw_gid


class ServerProcess(JupyterServer):
    """``jupyter server`` with labkernel, started at once in ``directory``, and a blocking
    client of its API; ``terminate()``, ``stop()`` or the end of a ``with`` block end it.

    Its root is ``directory/root``; it has configuration, runtime and data directories
    of its own, the base URL ``/a%40b/``, and shells that start as the in-process
    server's do (no rc files, ``PROMPT``). ``manager`` and ``app`` are settings of
    ``LabSessionManager`` and ``LabKernelApp``; ``env`` adds to its environment;
    ``prefix`` goes in front of its command line (``setpriv ...``). ``user`` runs it as
    that user, owning its directories, with its root as HOME; ``python`` and
    ``pythonpath`` are the interpreter and its path (one that user may run);
    ``ignore_sigint`` starts it with SIGINT ignored, as ``jupyter server &`` in a script.
    """

    def __init__(self, directory: Path, *, manager: dict[str, Any] | None = None,
                 app: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                 prefix: list[str] | None = None, user: str | None = None, python: str = sys.executable,
                 pythonpath: str = "", ignore_sigint: bool = False):
        config: dict[str, Any] = {"LabSessionManager": {"shell_command": SHELL_COMMAND, **(manager or {})}}
        if app:
            config["LabKernelApp"] = app
        environment = {"PS1": PROMPT, "HISTFILE": "/dev/null", **(env or {})}
        if pythonpath:
            environment["PYTHONPATH"] = pythonpath
        as_user: list[str] = []
        if user is not None:
            environment["HOME"] = str(directory / "root")
            as_user = ["setpriv", f"--reuid={user}", f"--regid={user_group(user)}", "--clear-groups"]
        super().__init__(
            directory, config, base_url=BASE_URL, python=python, prefix=[*as_user, *(prefix or [])],
            env=environment, isolated=True,
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None)
        self.user = user
        self.start()
        assert self.proc is not None
        self.process = psutil.Process(self.proc.pid)

    def prepare(self) -> Path:
        config_file = super().prepare()
        if self.user is not None:  # the server runs as this user: its directories are its own
            for path in (self.workdir, *self.workdir.rglob("*")):
                shutil.chown(path, self.user, user_group(self.user))
        return config_file

    def rss(self) -> int:
        """The server's resident set size, in bytes."""
        return self.process.memory_info().rss

    # -- its API, blocking -------------------------------------------------------------

    def call(self, method: str, *path: str, body: Any = None, params: dict | None = None,
             token: bool = True, timeout: float = 60) -> tuple[int, Any]:
        """One request: ``(status, parsed JSON body)``. ``path``'s pieces are joined by ``/``."""
        url = f"{self.url}{'/'.join(path)}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"token {self.token}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def ok(self, method: str, *path: str, expect: int = 200, **kwargs: Any) -> Any:
        status, body = self.call(method, *path, **kwargs)
        assert status == expect, f"{method} {'/'.join(path)} answered {status}: {body}"
        return body

    def command(self, sid: str, line: str) -> dict:
        return self.ok("POST", "api", "ws", "message", body={"sessionId": sid, "command": line})

    def message(self, sid: str, **body: Any) -> dict:
        return self.ok("POST", "api", "ws", "message", body={"sessionId": sid, **body})

    def read_until(self, sid: str, pattern: str, offset: int = 0, timeout: float = 30) -> tuple[str, int]:
        """Long-poll from ``offset`` until the text read matches ``pattern`` (a regex)."""
        text, deadline = "", time.monotonic() + timeout
        while not re.search(pattern, text):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {pattern!r}; got {text[-500:]!r}"
            answer = self.ok("GET", "api", "ws", "output", sid,
                             params={"offset": offset, "wait": min(left, 5)})
            text += answer["data"]
            offset = answer["nextOffset"]
            assert answer["status"] == "running" or answer["data"] or re.search(pattern, text), \
                f"session ended before {pattern!r}: {text[-500:]!r}"
        return text, offset

    def shell(self, **body: Any) -> tuple[str, int]:
        """Start a session and wait for its first prompt; returns (sessionId, offset)."""
        sid = self.ok("POST", "api", "labs", "start", body=body, expect=201)["sessionId"]
        _, offset = self.read_until(sid, re.escape(PROMPT))
        return sid, offset

    # -- its end ---------------------------------------------------------------------------

    def stop(self, timeout: float = 60) -> bool:
        return super().stop(timeout)

    def terminate(self, timeout: float = 60) -> None:
        """Stop the server, which must exit on SIGTERM by itself (a failure if it had to be killed)."""
        assert self.stop(timeout), f"the server did not stop on SIGTERM:\n{self.log(3000)}"
