"""A Jupyter server with labkernel in a process of its own, for tests that need one.

The pytest-jupyter server runs inside the test process, which is right for most
tests but not for these: memory is judged by the server's RSS (the test's own
allocations would blur it), an environment must be in place before the server
starts, and some servers run with fewer privileges than the test (no CAP_KILL).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

BASE_URL = "/a%40b/"  # as pytest-jupyter's: a base-URL bug fails these tests too


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``jupyter server`` with labkernel, started in ``directory``; stop() ends it."""

    def __init__(self, directory: Path, *, manager: dict[str, Any] | None = None,
                 app: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                 prefix: list[str] | None = None):
        self.directory = directory
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        config = {
            "ServerApp": {"jpserver_extensions": {"labkernel": True}, "root_dir": str(directory)},
            "LabSessionManager": {"shell_command": ["bash", "--norc", "--noprofile", "-i"],
                                  **(manager or {})},
            "LabKernelApp": app or {},
        }
        config_file = directory / "jupyter_server_config.json"
        config_file.write_text(json.dumps(config))
        runtime = directory / "runtime"
        self.env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime),
                    "JUPYTER_CONFIG_DIR": str(directory / "config"), **(env or {})}
        argv = [*(prefix or []), sys.executable, "-m", "jupyter_server", "--allow-root",
                "--no-browser", f"--port={self.port}", "--ServerApp.port_retries=0",
                "--ServerApp.ip=127.0.0.1", f"--ServerApp.base_url={BASE_URL}",
                f"--IdentityProvider.token={self.token}", f"--config={config_file}"]
        self.log_path = directory / "server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=directory, start_new_session=True)
        self.process = psutil.Process(self.proc.pid)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}): {self.log()[-2000:]}")
            try:
                if self.request("GET", "health", token=False)[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {self.log()[-2000:]}")
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{BASE_URL}"

    def rss(self) -> int:
        """The server's resident set size, in bytes."""
        return self.process.memory_info().rss

    def request(self, method: str, path: str, body: Any = None, *, token: bool = True,
                timeout: float = 60) -> tuple[int, Any]:
        """One request on a fresh connection: ``(status, parsed JSON body)``."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Authorization": f"token {self.token}"} if token else {}
            payload = None if body is None else json.dumps(body)
            if payload is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, BASE_URL + path, payload, headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def ok(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        status, answer = self.request(method, path, body)
        assert status == expect, f"{method} {path} answered {status}: {answer}"
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the server stops its sessions, then exits
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
