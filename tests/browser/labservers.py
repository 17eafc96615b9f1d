"""Real Jupyter servers for browser tests and the browser benchmark.

A ``JupyterProcess`` is ``jupyter lab`` (or ``jupyter notebook``) as a learner runs
it: a subprocess on a free port with a token, a base URL other than ``/`` and a root
directory of its own. Its configuration, runtime, data, settings and workspace
directories are temporary, so the developer's own Jupyter setup cannot leak in;
only the extensions enabled in the environment (``sys.prefix/etc/jupyter``) stay,
which is how JupyterLab, Notebook 7 and the widget frontends are found.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from labkernel.clients.localserver import free_port
from support.api import request_json

#: A prompt no command output contains by accident (as in tests/conftest.py).
PROMPT = "lab-prompt$ "

#: Debian's Chromium, the only browser the tests use (never a downloaded one).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]


def notebook_json(*sources: str) -> str:
    """An nbformat 4 notebook of code cells, with the python3 kernel named so it starts alone."""
    cells = [{"cell_type": "code", "execution_count": None, "id": f"cell{i}", "metadata": {},
              "outputs": [], "source": source} for i, source in enumerate(sources)]
    return json.dumps({
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }, indent=1)


class JupyterProcess:
    """One ``jupyter lab`` / ``jupyter notebook`` subprocess, restartable on the same port.

    ``restart()`` keeps the port, token and cookie secret, so an open page stays
    signed in and only the server's state (its sessions) is lost;
    ``restart(new_credentials=True)`` changes both, so the page's credentials are
    refused, as after a JupyterHub server was restarted with a new token.
    """

    def __init__(self, app: str = "lab", base_url: str = "/a%40b/",
                 extra_args: tuple[str, ...] = (), labkernel_config: dict[str, Any] | None = None):
        self.app = app
        self.base_url = base_url
        self.extra_args = list(extra_args)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"labkernel-{app}-"))
        self.root = self.tmp / "root"
        self.home = self.tmp / "home"
        for name in ("root", "home", "config", "runtime", "data", "settings", "workspaces",
                     "ipython"):
            (self.tmp / name).mkdir()
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.tmp / "server.log"
        config = {
            "ServerApp": {"jpserver_extensions": {"labkernel": True}},
            "LabSessionManager": {
                # A shell that reads no rc files starts fast and prints a known prompt.
                "shell_command": ["bash", "--norc", "--noprofile", "-i"],
                **(labkernel_config or {}),
            },
        }
        (self.tmp / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
        # JupyterLab's news and update checks pop a toast over the page; they also
        # reach for the internet, which labs must never need.
        notification = self.tmp / "settings" / "@jupyterlab" / "apputils-extension"
        notification.mkdir(parents=True)
        (notification / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))

    # -- addresses -------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's URL with its base URL, ending in ``/``."""
        return f"http://127.0.0.1:{self.port}{self.base_url}"

    def page_url(self, path: str) -> str:
        """``path`` under the base URL, signed in by the token (which sets the login cookie)."""
        sep = "&" if "?" in path else "?"
        return f"{self.url}{path}{sep}token={self.token}"

    def notebook_url(self, name: str, workspace: str | None = None) -> str:
        if self.app == "notebook":
            return self.page_url(f"notebooks/{name}")
        if workspace:
            return self.page_url(f"lab/workspaces/{workspace}/tree/{name}")
        return self.page_url(f"lab/tree/{name}")

    def write_notebook(self, name: str, *sources: str) -> str:
        (self.root / name).write_text(notebook_json(*sources))
        return name

    # -- lifecycle ---------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "JUPYTER_CONFIG_DIR": str(self.tmp / "config"),
            "JUPYTER_RUNTIME_DIR": str(self.tmp / "runtime"),
            "JUPYTER_DATA_DIR": str(self.tmp / "data"),
            "JUPYTERLAB_SETTINGS_DIR": str(self.tmp / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(self.tmp / "workspaces"),
            "IPYTHONDIR": str(self.tmp / "ipython"),
            "HOME": str(self.home),
            "PS1": PROMPT,
            "HISTFILE": "/dev/null",
            "SHELL": "/bin/bash",
            "PYTHONUNBUFFERED": "1",
        })
        env.pop("JUPYTER_TOKEN", None)
        env.pop("LABKERNEL_URL", None)
        env.pop("LABKERNEL_TOKEN", None)
        return env

    def start(self, timeout: float = 120) -> "JupyterProcess":
        assert self.proc is None, "already running"
        args = [
            sys.executable, "-m", "jupyter", self.app, "--no-browser", "--allow-root",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0", f"--ServerApp.base_url={self.base_url}",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
            *self.extra_args,
        ]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, env=self.env(), cwd=self.root, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter {self.app} exited ({self.proc.returncode}):\n"
                                   + self.log_tail())
            try:
                status, _ = self.api("GET", "api/status")
                if status == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"jupyter {self.app} did not answer in {timeout} s:\n"
                                   + self.log_tail())
            time.sleep(0.2)

    def stop(self, timeout: float = 30, kill: bool = False) -> None:
        """SIGTERM, which runs labkernel's shutdown (every session's processes end).

        ``kill``: SIGKILL to the server's whole process group instead (shells,
        kernels), as when a container is killed: nothing answers on the way out.
        """
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def restart(self, new_credentials: bool = False, kill: bool = False) -> None:
        self.stop(kill=kill)
        if new_credentials:
            self.token = secrets.token_hex(16)
            # A new cookie secret invalidates the login cookie the page holds.
            for name in ("jupyter_cookie_secret",):
                path = self.tmp / "runtime" / name
                if path.exists():
                    path.unlink()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- the REST API, for setting up and checking ------------------------------

    def api(self, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
        return request_json(method, self.url + path, self.token, body, timeout)

    def ok(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        status, answer = self.api(method, path, body)
        assert status == expect, f"{method} {path} answered {status}: {answer}"
        return answer

    def session(self, sid: str) -> dict[str, Any]:
        return self.ok("GET", f"api/labs/session/{sid}")

    def running_sessions(self) -> list[dict[str, Any]]:
        return [s for s in self.ok("GET", "api/labs/sessions")["sessions"]
                if s["status"] == "running"]

    def output_text(self, sid: str, offset: int = 0) -> str:
        """Everything the session printed from ``offset`` that the server still keeps."""
        text = ""
        while True:
            answer = self.ok("GET", f"api/ws/output/{sid}?offset={offset}&wait=0")
            text += answer["data"]
            if answer["nextOffset"] == offset:
                return text
            offset = answer["nextOffset"]

    def cleanup(self) -> None:
        """Stop every lab session and shut every kernel down, between tests."""
        for session in self.running_sessions():
            self.api("DELETE", f"api/labs/session/{session['sessionId']}")
        status, kernels = self.api("GET", "api/kernels")
        for kernel in kernels if status == 200 else []:
            self.api("DELETE", f"api/kernels/{kernel['id']}")
