"""A Jupyter server with labkernel in a process of its own, on a free local port.

``labkernel test`` starts one for the labs it tests (``LocalServer``); the project's
tests start them where the in-process server of pytest-jupyter will not do (the
server's own RSS, an environment or privileges set before it starts, a server
killed with SIGKILL), and its benchmarks take ``free_port`` from here.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on at the moment of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerFailed(Exception):
    """The Jupyter server did not come up; the message carries its log."""


class JupyterServer:
    """``python -m jupyter_server`` with labkernel on 127.0.0.1, a free port and a random token.

    Everything it is told is in one configuration file (``--config``): the address,
    the token, ``base_url``, ``root_dir`` (default: ``workdir/root``, made for it)
    and, section by section on top, ``config``. It runs in ``workdir``, logs to
    ``workdir/server.log`` and has a process session of its own: a Ctrl-C meant for
    its starter does not reach it, and ``stop()`` ends it in order. ``isolated``
    gives it configuration, runtime and data directories of its own under
    ``workdir``, so that nothing of the user's Jupyter setup applies (the
    extensions enabled in the environment still do).

    ``start()`` returns once ``GET health`` answers 200, or raises ``ServerFailed``
    with the log; ``stop()`` sends SIGTERM, on which the server stops every lab
    session before it exits, and kills its process group if it does not exit.
    As a context manager it starts (unless started) and stops.
    """

    def __init__(self, workdir: str | Path, config: Mapping[str, Mapping[str, Any]] | None = None, *,
                 root_dir: str | Path | None = None, base_url: str = "/", python: str = sys.executable,
                 prefix: Sequence[str] = (), env: Mapping[str, str] | None = None, isolated: bool = False,
                 preexec_fn: Callable[[], Any] | None = None, startup_timeout: float = 90.0):
        self.workdir = Path(workdir)
        self.extra_config = {section: dict(values) for section, values in (config or {}).items()}
        self.root_dir = Path(root_dir) if root_dir is not None else None
        self.base_url = base_url
        self.python, self.prefix = python, list(prefix)
        self.extra_env = dict(env or {})
        self.isolated = isolated
        self.preexec_fn = preexec_fn
        self.startup_timeout = startup_timeout
        self.token = secrets.token_hex(24)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL with its base URL, ending in ``/`` (empty before ``start()``)."""
        return f"http://127.0.0.1:{self.port}{self.base_url}" if self.port else ""

    @property
    def log_file(self) -> Path:
        return self.workdir / "server.log"

    @property
    def root(self) -> Path:
        return self.root_dir if self.root_dir is not None else self.workdir / "root"

    def config(self, port: int, root: str) -> dict[str, Any]:
        """The Jupyter configuration the server is started with."""
        config: dict[str, Any] = {
            "ServerApp": {"ip": "127.0.0.1", "port": port, "port_retries": 0, "open_browser": False,
                          "base_url": self.base_url, "root_dir": root,
                          "jpserver_extensions": {"labkernel": True}},
            "IdentityProvider": {"token": self.token},
        }
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            config["ServerApp"]["allow_root"] = True  # Jupyter refuses root without it
        for section, values in self.extra_config.items():
            config.setdefault(section, {}).update(values)
        return config

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("JUPYTER_TOKEN", None)  # ours is in the configuration
        if self.isolated:
            env.update({f"JUPYTER_{name.upper()}_DIR": str(self.workdir / name)
                        for name in ("config", "runtime", "data")})
        env.update(self.extra_env)
        return env

    def prepare(self) -> Path:
        """Make the folders and write the configuration file; returns its path.

        Runs in ``start()`` before the server does: a subclass may add to it.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.root_dir is None:
            self.root.mkdir(exist_ok=True)
        if self.isolated:
            for name in ("config", "runtime", "data"):
                (self.workdir / name).mkdir(exist_ok=True)
        self.port = free_port()
        config_file = self.workdir / "jupyter_server_config.json"
        config_file.write_text(json.dumps(self.config(self.port, str(self.root.resolve()))))
        return config_file

    def start(self) -> JupyterServer:
        config_file = self.prepare()
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, self.python, "-m", "jupyter_server", f"--config={config_file}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                env=self.env(), preexec_fn=self.preexec_fn, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerFailed(f"the Jupyter server exited with status {self.proc.returncode} "
                                   f"before it answered; its log:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "health", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ServerFailed(f"the Jupyter server did not answer within {self.startup_timeout:g} s "
                                   f"(is labkernel installed and enabled?); its log:\n{self.log()}")
            time.sleep(0.1)

    def log(self, tail: int | None = 8000) -> str:
        """The server's log, its last ``tail`` characters (None: all of it)."""
        try:
            with open(self.log_file, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return text if tail is None else text[-tail:]

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL to the process group after ``timeout``.

        True when the server had exited by itself (or had not been started).
        """
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return True
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            return False

    def __enter__(self) -> JupyterServer:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
