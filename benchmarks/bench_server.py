"""The benchmark's Jupyter server: one subprocess, and the client calls that reach it.

``Server`` starts ``jupyter_server`` with labkernel, jupyter_server_terminals and
this directory's extensions (``floor_ext``, ``loop_probe``, ``variants_ext``), and
reads its RSS and CPU time; ``Http`` is the small JSON client for the calls that are
not in ``LabClient``; ``parse_variant`` and ``materialize_variants`` prepare the
other versions of labkernel that ``--variant`` mounts. Also the helpers every part
of the benchmark uses: ``pc``, ``log``, ``pct``.
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from labkernel.clients.localserver import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = "/bench/"

pc = time.perf_counter


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(xs, p):
    """Percentile with linear interpolation (p in 0..100)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# ----------------------------------------------------------------------------------
# A tiny keep-alive JSON HTTP client (terminado REST calls, readiness, labkernel
# probes that are not in LabClient). One connection per thread.
# ----------------------------------------------------------------------------------
class Http:
    def __init__(self, port: int, token: str | None):
        self.port = port
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"token {token}"
        self._tl = threading.local()

    def _conn(self):
        c = getattr(self._tl, "c", None)
        if c is None:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            c.connect()
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._tl.c = c
        return c

    def request(self, method, path, body=None, timeout=60):
        payload = json.dumps(body).encode() if body is not None else None
        for attempt in (0, 1):
            try:
                c = self._conn()
                c.sock.settimeout(timeout)
                c.request(method, BASE + path.lstrip("/"), body=payload, headers=self.headers)
                r = c.getresponse()
                data = r.read()
            except (http.client.HTTPException, OSError):
                c = getattr(self._tl, "c", None)
                if c is not None:
                    c.close()
                self._tl.c = None
                if attempt:
                    raise
                continue
            try:
                obj = json.loads(data) if data else None
            except ValueError:
                obj = data.decode("utf-8", "replace")
            return r.status, obj
        raise RuntimeError("unreachable")


# ----------------------------------------------------------------------------------
# Variants: other versions / settings of labkernel, mounted in the same server
# ----------------------------------------------------------------------------------
def parse_variant(text: str) -> dict:
    """``NAME=REF[:Trait=value,...]``; REF is a git ref, or ``.`` for the working tree."""
    name, _, rest = text.partition("=")
    ref, _, conf = rest.partition(":")
    if not name.isidentifier() or not ref:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: want NAME=REF[:Trait=value,...]")
    config = {}
    for item in filter(None, conf.split(",")):
        k, _, v = item.partition("=")
        try:
            config[k] = json.loads(v)
        except ValueError:
            config[k] = v
    return {"name": name, "ref": ref, "config": config, "package": f"labkernel_{name}"}


def materialize_variants(variants, pkgdir: str) -> None:
    """Copy each variant's labkernel package into pkgdir as labkernel_<name>."""
    root = os.path.dirname(HERE)
    for v in variants:
        dest = os.path.join(pkgdir, v["package"])
        if v["ref"] == ".":
            shutil.copytree(os.path.join(root, "labkernel"), dest,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            tmp = os.path.join(pkgdir, "_git")
            os.makedirs(tmp, exist_ok=True)
            archive = subprocess.run(["git", "-C", root, "archive", v["ref"], "labkernel"],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            os.rename(os.path.join(tmp, "labkernel"), dest)
            v["commit"] = subprocess.run(["git", "-C", root, "rev-parse", "--short", v["ref"]],
                                         check=True, capture_output=True,
                                         text=True).stdout.strip()


# ----------------------------------------------------------------------------------
# The Jupyter server subprocess
# ----------------------------------------------------------------------------------
class Server:
    def __init__(self, tmp: str, clean_home: bool = True, max_sessions: int = 200,
                 variants=(), lab_config=None):
        self.tmp = tmp
        self.max_sessions = max_sessions
        self.clean_home = clean_home
        self.variants = list(variants)
        self.lab_config = dict(lab_config or {})
        self.port = free_port()
        self.token = secrets.token_hex(24)
        self.proc: subprocess.Popen | None = None
        self.logpath = os.path.join(tmp, "server.log")
        self._logf = None
        self.http = Http(self.port, self.token)
        self.psproc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{BASE}"

    def start(self) -> None:
        cfg = os.path.join(self.tmp, "config")
        runtime = os.path.join(self.tmp, "runtime")
        data = os.path.join(self.tmp, "data")
        root = os.path.join(self.tmp, "root")
        pkgs = os.path.join(self.tmp, "pkgs")
        for d in (cfg, runtime, data, root, pkgs):
            os.makedirs(d, exist_ok=True)
        materialize_variants(self.variants, pkgs)
        # Explicit extension list: labkernel, terminals and the benchmark's own on,
        # the other extensions the environment may enable (jupyterlab, lsp,
        # notebook_shim) off, so the server is the same lean process for all.
        extensions = {"labkernel": True, "jupyter_server_terminals": True,
                      "floor_ext": True, "loop_probe": True, "variants_ext": True}
        config = {
            "ServerApp": {
                "jpserver_extensions": dict(extensions, jupyterlab=False, jupyter_lsp=False,
                                            notebook_shim=False),
                "token": self.token,
                "base_url": BASE,
                "open_browser": False,
                "root_dir": root,
                "terminals_enabled": True,
            },
            # labkernel's default limit is 100 running sessions; the RSS figure
            # needs exactly that many, so leave a margin (terminado has no limit).
            "LabSessionManager": dict({"max_sessions": self.max_sessions}, **self.lab_config),
        }
        with open(os.path.join(cfg, "jupyter_server_config.json"), "w") as f:
            json.dump(config, f, indent=1)
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=cfg,
            JUPYTER_RUNTIME_DIR=runtime,
            JUPYTER_DATA_DIR=data,
            JUPYTER_PLATFORM_DIRS="0",
            SHELL="/bin/bash",          # the same shell for every transport
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join(filter(None, [HERE, pkgs, env.get("PYTHONPATH")])),
            LABKERNEL_BENCH_VARIANTS=json.dumps(self.variants),
        )
        if self.clean_home:
            # Shells start from an empty HOME: the user's ~/.bashrc (pyenv init and
            # the like) would otherwise dominate create -> first byte, and the
            # benchmark's commands would land in the user's ~/.bash_history.
            home = os.path.join(self.tmp, "home")
            os.makedirs(home, exist_ok=True)
            env.update(HOME=home, HISTFILE=os.path.join(home, ".bash_history"))
        env.pop("JUPYTER_TOKEN", None)
        cmd = [
            sys.executable, "-m", "jupyter_server",
            "--no-browser", "--allow-root",
            f"--port={self.port}", "--ip=127.0.0.1", "--port-retries=0",
            f"--ServerApp.token={self.token}",
            f"--ServerApp.base_url={BASE}",
            "--ServerApp.jpserver_extensions=" + repr(extensions),
        ]
        self._logf = open(self.logpath, "wb")
        log(f"starting jupyter_server on port {self.port} (log: {self.logpath})")
        # Own session: Ctrl-C in the terminal reaches the benchmark, which then
        # shuts the server down in order.
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=self._logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        import psutil
        self.psproc = psutil.Process(self.proc.pid)

    def log_tail(self, n=40) -> str:
        try:
            with open(self.logpath, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return ""

    def wait_ready(self, timeout=90.0) -> float:
        t0 = pc()
        deadline = t0 + timeout
        while pc() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter_server exited with {self.proc.returncode}:\n"
                                   + self.log_tail())
            try:
                st, _ = self.http.request("GET", "api/status", timeout=5)
                if st == 200:
                    return pc() - t0
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("jupyter_server did not answer /bench/api/status in time:\n"
                           + self.log_tail())

    def probe(self, action: str) -> dict:
        """Start or stop a loop_probe window (stop returns its figures)."""
        st, body = self.http.request("GET", f"probe/loop?action={action}")
        if st != 200:
            raise RuntimeError(f"loop probe -> {st} {body!r}")
        return body

    def rss(self) -> int:
        return self.psproc.memory_info().rss

    def cpu(self) -> float:
        t = self.psproc.cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        if self.proc is None:
            return
        import psutil
        children = []
        try:
            children = self.psproc.children(recursive=True)
        except psutil.Error:
            pass
        if self.proc.poll() is None:
            log("stopping jupyter_server (SIGTERM)")
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log("server did not exit in 20 s: SIGKILL")
                self.proc.kill()
                self.proc.wait(timeout=10)
        # Shells the server started and failed to reap (the floor's and the
        # variants' are left to this on purpose).
        leftovers = [c for c in children if c.is_running()]
        for c in leftovers:
            try:
                c.kill()
            except psutil.Error:
                pass
        if leftovers:
            log(f"killed {len(leftovers)} leftover child process(es) of the server")
        if self._logf:
            self._logf.close()
