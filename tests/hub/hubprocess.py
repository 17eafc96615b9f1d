"""A real JupyterHub on 127.0.0.1, and nginx in front of it, for tests/browser/test_jupyterhub.py.

``Hub`` is ``jupyterhub`` as a small workshop runs it: configurable-http-proxy (npm,
installed by ``npm ci`` in this folder; ``.ci/run`` does it) on a free public port,
``SharedPasswordAuthenticator`` (any user name, one password: the successor of the
``DummyAuthenticator`` password, deprecated since JupyterHub 5.3),
``SimpleLocalProcessSpawner`` (the single-user server runs as the hub's user, root
here, hence ``--allow-root``), each user's home and root folder a temporary folder
with the repository's notebooks and labs copied in, and ``jupyterhub-singleuser``
from the same environment, with labkernel enabled. Everything the hub and the
servers write (database, cookie secret, pid files, Jupyter's config, runtime and
data folders) is under one temporary folder: the developer's own Jupyter setup
cannot leak in, and nothing is written into the repository.

``Nginx`` is Debian's nginx as a non-daemon child process with its own config,
pid and log files in a temporary folder (no system service), configured as a load
balancer often is: HTTP/1.1 to the upstream with ``Connection ""`` and no
``Upgrade`` header passed on, so a WebSocket handshake arrives upstream as a plain
GET and fails.
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
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from labkernel.clients.localserver import free_port
from support.api import request_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

#: A prompt no command output contains by accident (as in tests/conftest.py).
PROMPT = "lab-prompt$ "

#: Where ``npm ci`` in this folder puts the proxy.
CHP = HERE / "node_modules" / ".bin" / "configurable-http-proxy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def singleuser_command() -> Path:
    """``jupyterhub-singleuser`` of the environment the tests run in."""
    return Path(sys.executable).parent / "jupyterhub-singleuser"


def missing_tools(nginx: bool = False) -> str | None:
    """What is missing for a hub test here, said so that a developer can install it; None: nothing."""
    try:
        import jupyterhub  # noqa: F401
        import jupyterhub_idle_culler  # noqa: F401
    except ImportError as error:
        return f"{error.name} is missing (pip install -e '.[test]')"
    if not singleuser_command().exists():
        return f"{singleuser_command()} is missing (pip install -e '.[test]')"
    if not CHP.exists():
        return f"configurable-http-proxy is missing (cd {HERE.relative_to(REPO)} && npm ci; .ci/run does it)"
    if nginx and not os.path.exists(NGINX):
        return "nginx is missing (apt-get install nginx; .ci/run does it)"
    return None


def _wait_for(predicate: Any, timeout: float, what: str, proc: subprocess.Popen | None = None,
              log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited ({proc.returncode}):\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}:\n{_tail(log)}")
        time.sleep(0.2)


def _tail(path: Path | None, lines: int = 60) -> str:
    if path is None:
        return ""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# The hub's configuration, written to a file; the values come in as JSON.
_HUB_CONFIG = '''\
import json
settings = json.loads({settings!r})

c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = settings["port"]
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = settings["hub_port"]
c.JupyterHub.db_url = "sqlite:///" + settings["tmp"] + "/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = settings["tmp"] + "/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = settings["tmp"] + "/jupyterhub.pid"
c.JupyterHub.cleanup_servers = True
c.JupyterHub.last_activity_interval = settings["last_activity_interval"]

c.ConfigurableHTTPProxy.command = [settings["chp"]]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:%d" % settings["proxy_api_port"]
c.ConfigurableHTTPProxy.pid_file = settings["tmp"] + "/proxy.pid"
c.ConfigurableHTTPProxy.debug = False

c.JupyterHub.authenticator_class = "jupyterhub.authenticators.shared.SharedPasswordAuthenticator"
c.SharedPasswordAuthenticator.user_password = settings["password"]
c.Authenticator.allow_all = True

c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.SimpleLocalProcessSpawner.home_dir_template = settings["tmp"] + "/home/{{username}}"
c.Spawner.cmd = [settings["singleuser"]]
c.Spawner.args = ["--allow-root"]
c.Spawner.default_url = settings["default_url"]
c.Spawner.environment = settings["environment"]
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120

# A token for the test itself: manage users and servers, and use their servers' API.
c.JupyterHub.services = [{{"name": "test", "api_token": settings["token"]}}]
c.JupyterHub.load_roles = [{{
    "name": "test",
    "scopes": ["admin:users", "admin:servers", "access:servers", "read:users:activity"],
    "services": ["test"],
}}]

if settings["culler"]:
    import sys
    c.JupyterHub.services.append({{
        "name": "idle-culler",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", *settings["culler"]],
    }})
    c.JupyterHub.load_roles.append({{
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }})

if not settings["proxy_activity"]:
    # What docs/jupyterhub.md recommends for labs: the hub takes a server's activity
    # from what the server reports (typing, kernels running code), not from the
    # proxy's traffic, where every answered long poll of an open page counts.
    # The proxy's routes are still checked every last_activity_interval.
    from jupyterhub.proxy import ConfigurableHTTPProxy

    class ServerReportedActivity(ConfigurableHTTPProxy):
        async def get_all_routes(self):
            routes = await super().get_all_routes()
            for route in routes.values():
                route["data"].pop("last_activity", None)
            return routes

    c.JupyterHub.proxy_class = ServerReportedActivity

for key, value in settings["extra"].items():
    section, name = key.split(".")
    setattr(c[section], name, value)
'''


class Hub:
    """A JupyterHub subprocess with its proxy, on free ports of 127.0.0.1.

    ``proxy_activity``: whether the hub counts the proxy's traffic as activity
    (JupyterHub's default) or only what the single-user servers report.
    ``culler``: arguments for jupyterhub-idle-culler, run as a hub service.
    ``activity_interval``: how often (s) a single-user server reports its activity
    (JupyterHub's default is 300 s). ``labkernel_config``: settings of
    ``LabSessionManager``; ``app_config``: of ``LabKernelApp``; ``hub_config``: more
    of the hub's, ``{"Class.trait": value}``.
    """

    def __init__(self, *, proxy_activity: bool = True, last_activity_interval: int = 300,
                 culler: list[str] | None = None, activity_interval: int = 300,
                 default_url: str = "/lab/tree/welcome.ipynb",
                 labkernel_config: dict[str, Any] | None = None, app_config: dict[str, Any] | None = None,
                 hub_config: dict[str, Any] | None = None):
        self.tmp = Path(tempfile.mkdtemp(prefix="labkernel-hub-"))
        self.port = free_port()
        self.password = "workshop-" + secrets.token_hex(6)
        self.token = secrets.token_hex(24)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.tmp / "hub.log"
        jupyter = self.tmp / "jupyter"
        for name in ("config", "runtime", "data", "settings", "workspaces", "ipython", "home"):
            (jupyter / name if name != "home" else self.tmp / name).mkdir(parents=True)
        # The single-user servers' Jupyter configuration: labkernel enabled (as the
        # installed package does), a shell that reads no rc files and prints a known prompt.
        (jupyter / "config" / "jupyter_server_config.json").write_text(json.dumps({
            "ServerApp": {"jpserver_extensions": {"labkernel": True}},
            "LabSessionManager": {"shell_command": ["bash", "--norc", "--noprofile", "-i"],
                                  **(labkernel_config or {})},
            "LabKernelApp": app_config or {},
        }))
        # JupyterLab's news and update checks reach for the internet and pop a toast.
        notification = jupyter / "settings" / "@jupyterlab" / "apputils-extension"
        notification.mkdir(parents=True)
        (notification / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        environment = {
            # JupyterHub passes on none of its own environment (Spawner.env_keep).
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "LANG": "C.UTF-8",
            "JUPYTER_CONFIG_DIR": str(jupyter / "config"),
            "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"),
            "JUPYTER_DATA_DIR": str(jupyter / "data"),
            "JUPYTERLAB_SETTINGS_DIR": str(jupyter / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(jupyter / "workspaces"),
            "IPYTHONDIR": str(jupyter / "ipython"),
            "JUPYTERHUB_ACTIVITY_INTERVAL": str(activity_interval),
            "PS1": PROMPT,
            "HISTFILE": "/dev/null",
            "PYTHONUNBUFFERED": "1",
        }
        if os.environ.get("PYTHONPATH"):
            # A developer's worktree on PYTHONPATH wins, in the single-user servers too.
            environment["PYTHONPATH"] = os.environ["PYTHONPATH"]
        self.settings = {
            "port": self.port, "hub_port": free_port(), "proxy_api_port": free_port(),
            "tmp": str(self.tmp), "chp": str(CHP), "singleuser": str(singleuser_command()),
            "password": self.password, "token": self.token, "default_url": default_url,
            "environment": environment, "culler": culler or [],
            "proxy_activity": proxy_activity, "last_activity_interval": last_activity_interval,
            "extra": hub_config or {},
        }
        (self.tmp / "jupyterhub_config.py").write_text(
            _HUB_CONFIG.format(settings=json.dumps(self.settings)))

    # -- addresses ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """The hub's public URL (the proxy's), ending in ``/``."""
        return f"http://127.0.0.1:{self.port}/"

    def home(self, user: str) -> Path:
        return self.tmp / "home" / user

    def prepare_home(self, user: str) -> Path:
        """The user's home and root folder: the repository's notebooks and labs, as a workshop repository."""
        home = self.home(user)
        home.mkdir(parents=True, exist_ok=True)
        for notebook in (REPO / "notebooks").glob("*.ipynb"):
            shutil.copy(notebook, home / notebook.name)
        shutil.copytree(REPO / "labs", home / "labs", dirs_exist_ok=True)
        return home

    # -- lifecycle -----------------------------------------------------------------

    def start(self, timeout: float = 120) -> "Hub":
        assert self.proc is None, "already running"
        log = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "JPY_"))}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(self.tmp / "jupyterhub_config.py")],
            cwd=self.tmp, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        _wait_for(lambda: self._answers(), timeout, "JupyterHub to answer", self.proc, self.log_path)
        return self

    def _answers(self) -> bool:
        try:
            return self.api("GET", "")[0] == 200
        except OSError:
            return False

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM: the hub stops every server (cleanup_servers) and its proxy."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def log_tail(self, lines: int = 200) -> str:
        return _tail(self.log_path, lines)

    # -- the hub's REST API, and the users' servers through the proxy -----------------

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """``/hub/api/<path>`` with the test's service token."""
        return request_json(method, f"{self.url}hub/api/{path}", self.token, body)

    def user(self, name: str) -> dict[str, Any]:
        status, model = self.api("GET", f"users/{name}")
        assert status == 200, f"GET users/{name} answered {status}: {model}"
        return model

    def server(self, name: str) -> dict[str, Any] | None:
        """The user's default server as the hub has it (``last_activity``, ``ready``…), None if stopped."""
        return self.user(name)["servers"].get("")

    def spawn(self, name: str, timeout: float = 120) -> None:
        """Create the user and start their server through the API (not the browser)."""
        self.prepare_home(name)
        self.api("POST", f"users/{name}")
        status, answer = self.api("POST", f"users/{name}/server")
        assert status in (201, 202, 400), f"spawn answered {status}: {answer}"
        _wait_for(lambda: (s := self.server(name)) and s["ready"], timeout, f"{name}'s server",
                  self.proc, self.log_path)


class UserServer:
    """A user's single-user server through the hub's proxy, with the API calls the
    browser helpers (``tests/browser/termpage.py``'s ``Notebook``) make on a
    ``JupyterProcess``."""

    def __init__(self, hub: Hub, name: str, base: str | None = None):
        self.hub = hub
        self.name = name
        self.app = "lab"
        #: The address the browser uses: the hub's proxy, or nginx in front of it.
        self.base = base or hub.url

    @property
    def url(self) -> str:
        return f"{self.base}user/{urllib.parse.quote(self.name)}/"

    def page_url(self, path: str) -> str:
        return self.url + path

    def notebook_url(self, name: str, workspace: str | None = None) -> str:
        if workspace:
            return self.page_url(f"lab/workspaces/{workspace}/tree/{name}")
        return self.page_url(f"lab/tree/{name}")

    def api(self, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
        # Always straight through the hub's proxy: nginx is the browser's way in.
        return request_json(method, f"{self.hub.url}user/{urllib.parse.quote(self.name)}/{path}",
                        self.hub.token, body, timeout)

    def ok(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        status, answer = self.api(method, path, body)
        assert status == expect, f"{method} {path} answered {status}: {answer}"
        return answer

    def session(self, sid: str) -> dict[str, Any]:
        return self.ok("GET", f"api/labs/session/{sid}")


_NGINX_CONFIG = """\
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream hub {{
        server 127.0.0.1:{upstream};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 64m;
        location / {{
            proxy_pass http://hub;
            # A load balancer as many are set up: keep-alive connections to the
            # upstream (HTTP/1.1, Connection cleared) and no Upgrade header passed
            # on, so no WebSocket gets through. Long polls (25 s) are well inside
            # proxy_read_timeout's default of 60 s.
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


class Nginx:
    """nginx in front of ``upstream_port``, as a child process (``daemon off``) with
    its config, pid, logs and temporary files in a folder of its own."""

    def __init__(self, upstream_port: int):
        self.tmp = Path(tempfile.mkdtemp(prefix="labkernel-nginx-"))
        self.port = free_port()
        self.config = self.tmp / "nginx.conf"
        self.config.write_text(_NGINX_CONFIG.format(tmp=self.tmp, port=self.port, upstream=upstream_port))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 30) -> "Nginx":
        log = open(self.tmp / "stderr.log", "ab")
        # -e: the error log before the config is read (the default path is the system's).
        self.proc = subprocess.Popen([NGINX, "-c", str(self.config), "-p", str(self.tmp),
                                      "-e", str(self.tmp / "error.log")],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

        def answers() -> bool:
            try:
                with urllib.request.urlopen(self.url + "hub/api/", timeout=5) as response:
                    return response.status == 200
            except (OSError, urllib.error.HTTPError):
                return False
        _wait_for(answers, timeout, "nginx to answer", self.proc, self.tmp / "error.log")
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGQUIT)  # graceful: the workers finish what they serve
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def logs(self) -> str:
        return "\n".join(f"== {name}\n{_tail(self.tmp / name, 80)}"
                         for name in ("error.log", "access.log", "stderr.log"))

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
