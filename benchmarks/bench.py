#!/usr/bin/env python
"""labkernel vs the floor of its stack vs terminado: one Jupyter server, one table.

Run from the repository root:

    python benchmarks/bench.py            # full run (about 10 minutes)
    python benchmarks/bench.py --quick    # smoke run with small counts
    python benchmarks/bench.py --json results.json
    python benchmarks/bench.py --variant main=main --figures echo,flood

It starts ONE real ``jupyter_server`` subprocess with ``labkernel``,
``jupyter_server_terminals`` and three benchmark-only extensions of this directory
enabled (isolated config/runtime/data dirs, random token, ``base_url=/bench/``):
``floor_ext`` (labkernel's routes in ~100 lines: the floor of this stack),
``loop_probe`` (how long each event-loop callback runs) and ``variants_ext`` (other
versions or settings of labkernel, ``--variant``). Every scenario is written once
against a small transport interface (create, attach -> pull/send, destroy) and run
for each transport, alternating the order, repeated:

1. create -> first prompt byte (ms)
2. keystroke echo round trip p50/p99 (ms) typing into ``cat``
3. output throughput (MB/s) of a >= 20 MB command
4. requests an idle attached client makes in 10 s
5. server RSS growth (MB) with 100 attached sessions
6. echo p50/p95 (ms) in one session while another floods with ``yes``, its reader in
   a separate process, and the longest event-loop callback meanwhile; again with
   nobody reading the flood

See benchmarks/README.md for what each figure means exactly.
Progress goes to stderr, the table to stdout.
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing as mp
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from labkernel.clients.localserver import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = "/bench/"
ENDED = {"exited", "stopped", "expired", "failed"}
MARK = "END_MARK"                      # what the throughput command prints last
MARK_CMD = "EN''D_MARK"                # how it is typed (the echo never contains MARK)
BIG_READ = 4 * 1024 * 1024             # max= for bulk reads over HTTP
ECHO_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"

FULL = dict(create_n=10, echo_keys=300, echo_warm=20, b2b_keys=300, echo_rounds=2,
            tp_bytes=20_000_000, tp_reps=3, idle_s=10.0, rss_n=100, rss_rounds=2,
            flood_keys=200, flood_warm=20, flood_rounds=3, warm_keys=150,
            warm_requests=1000)
QUICK = dict(create_n=3, echo_keys=60, echo_warm=10, b2b_keys=60, echo_rounds=1,
             tp_bytes=5_000_000, tp_reps=1, idle_s=3.0, rss_n=20, rss_rounds=2,
             flood_keys=60, flood_warm=10, flood_rounds=1, warm_keys=50,
             warm_requests=300)

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
# Counting HTTP requests per thread (for the idle-client figure). Wraps the stdlib
# http.client, which LabClient is built on, so internal retries are counted too.
# ----------------------------------------------------------------------------------
_tl = threading.local()
_orig_putrequest = http.client.HTTPConnection.putrequest


def _counting_putrequest(self, method, url, *a, **kw):
    counter = getattr(_tl, "requests", None)
    if counter is not None:
        counter.append((pc(), method, url))
    return _orig_putrequest(self, method, url, *a, **kw)


http.client.HTTPConnection.putrequest = _counting_putrequest


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


# ----------------------------------------------------------------------------------
# Generic reader thread: pull() returns text ('' = nothing yet) or None (ended).
# ----------------------------------------------------------------------------------
class Reader(threading.Thread):
    def __init__(self, pull, name="reader"):
        super().__init__(daemon=True, name=name)
        self.pull = pull
        self.lock = threading.Lock()
        self.hit = threading.Event()
        self.first = threading.Event()
        self.want = None
        self.hit_t = None
        self.last_t = pc()
        self.nbytes = 0
        self.tail = ""
        self.error = None
        self.requests = None        # set before start() to count HTTP requests

    def expect(self, ch: str) -> None:
        with self.lock:
            self.want = ch
            self.hit_t = None
            self.hit.clear()

    def run(self):
        if self.requests is not None:
            _tl.requests = self.requests
        try:
            while True:
                d = self.pull()
                t = pc()
                if d is None:
                    break
                if not d:
                    continue
                with self.lock:
                    self.last_t = t
                    self.nbytes += len(d)
                    self.tail = (self.tail + d)[-4096:]
                    w = self.want
                    if w is not None and w in d:
                        self.want = None
                        self.hit_t = t
                        self.hit.set()
                self.first.set()
        except Exception as e:  # noqa: BLE001 - a closed session/socket ends the loop
            self.error = e
        finally:
            self.first.set()

    def wait_quiet(self, quiet=0.3, timeout=15.0) -> bool:
        deadline = pc() + timeout
        while pc() < deadline:
            with self.lock:
                idle = pc() - self.last_t
            if idle >= quiet:
                return True
            time.sleep(min(0.02, quiet / 4))
        return False

    def wait_text(self, text: str, timeout=15.0) -> bool:
        deadline = pc() + timeout
        while pc() < deadline:
            with self.lock:
                if text in self.tail:
                    return True
            time.sleep(0.01)
        return False


def echo_run(reader: Reader, send, nkeys: int, warm: int, gap: float):
    """Type nkeys+warm printable chars into cat; time each until its echo arrives."""
    lat, fails = [], 0
    for i in range(warm + nkeys):
        if i and i % 50 == 0:
            send("\r")                       # let cat print the line; keeps lines short
            reader.wait_quiet(0.1, 5)
        c = ECHO_CHARS[i % len(ECHO_CHARS)]
        reader.expect(c)
        t0 = pc()
        send(c)
        if not reader.hit.wait(5):
            fails += 1
            if reader.error is not None or fails > 5:
                raise RuntimeError(f"echo lost ({fails} keys); reader error: {reader.error!r}")
            continue
        if i >= warm:
            lat.append((reader.hit_t - t0) * 1000.0)
        if gap:
            time.sleep(gap)
    send("\r")
    return lat, fails


def summarize(lat):
    return {"n": len(lat), "p50": pct(lat, 50), "p90": pct(lat, 90), "p95": pct(lat, 95),
            "p99": pct(lat, 99), "max": max(lat) if lat else float("nan"),
            "mean": statistics.fmean(lat) if lat else float("nan")}


# ----------------------------------------------------------------------------------
# Transports: the one interface every scenario is written against
#
#   T.create() -> id                 a new terminal / session (one request)
#   T.attach(id, bulk) -> conn       conn.pull(wait) -> text | '' (nothing) | None (ended)
#                                    conn.send(text); conn.close()
#   T.send_detached(id, text)        type without reading (the unread flood)
#   T.output_offset(id)              bytes the server has taken from the PTY (or None)
#   T.idle(id, seconds)              what an attached, idle client exchanges
#   T.destroy(id); T.cleanup()
#   T.spec                           picklable: rebuilds T in another process
# ----------------------------------------------------------------------------------
class PollConn:
    """One client of a session over labkernel's routes: a standing reader + a sender."""

    def __init__(self, T, tid, bulk):
        self.T, self.tid, self.bulk = T, tid, bulk
        self.reader, self.sender = T.client(), T.client()
        self.off = 0

    def pull(self, wait=25.0):
        kw = {"max": BIG_READ} if self.bulk else {}
        r = self.reader.read(self.tid, offset=self.off, wait=wait, **kw)
        self.off = r["nextOffset"]
        if not r["data"] and r.get("status") in ENDED:
            return None
        return r["data"]

    def send(self, text):
        self.sender.send(self.tid, text)

    def close(self):
        self.reader.close()
        self.sender.close()


class PollTransport:
    """labkernel, a variant of it, or the floor: the same REST routes under a prefix."""

    def __init__(self, name, port, token, prefix=""):
        from labkernel.client import LabClient
        self.LabClient = LabClient
        self.name, self.port, self.token, self.prefix = name, port, token, prefix
        self.url = f"http://127.0.0.1:{port}{BASE}{prefix}"
        self.ctl = LabClient(self.url, token)
        self.live: set[str] = set()
        self.spec = ("poll", name, port, token, prefix)

    def client(self):
        return self.LabClient(self.url, self.token)

    def create(self) -> str:
        sid = self.ctl.start()["sessionId"]
        self.live.add(sid)
        return sid

    def attach(self, tid, bulk=False) -> PollConn:
        return PollConn(self, tid, bulk)

    def send_detached(self, tid, text):
        self.ctl.send(tid, text)

    def output_offset(self, tid):
        return self.ctl.get(tid).get("outputOffset")

    def idle(self, tid, seconds):
        conn = self.attach(tid)
        drain(conn)
        reqs: list = []
        reader = Reader(conn.pull, name="idle")
        reader.requests = reqs
        t0 = pc()
        reader.start()
        time.sleep(seconds)
        in_window = [r for r in reqs if r[0] - t0 <= seconds]
        return {"count": len(in_window), "requests": [f"{m} {u}" for _, m, u in in_window]}

    def destroy(self, tid) -> None:
        try:
            self.ctl.stop(tid)
        finally:
            self.live.discard(tid)

    def cleanup(self) -> None:
        ids = list(self.live)
        if ids:
            log(f"{self.name}: stopping {len(ids)} leftover session(s)")
            with ThreadPoolExecutor(16) as ex:
                list(ex.map(lambda s: _quiet(self.destroy, s), ids))


class TermConn:
    def __init__(self, T, tid):
        import websocket
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{T.port}{BASE}terminals/websocket/{tid}",
            header=[f"Authorization: token {T.token}"], suppress_origin=True, timeout=30,
            enable_multithread=True, skip_utf8_validation=True)
        self._timeout = 30.0

    def pull(self, wait=25.0):
        import websocket
        if wait != self._timeout:
            self.ws.settimeout(wait)
            self._timeout = wait
        while True:
            try:
                msg = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                return ""
            if not msg:
                return None
            m = json.loads(msg)
            if m[0] == "stdout":
                return m[1]
            if m[0] == "disconnect":
                return None

    def send(self, text):
        self.ws.send(json.dumps(["stdin", text]))

    def close(self):
        try:
            self.ws.abort()
            self.ws.close(timeout=0.2)
        except Exception:  # noqa: BLE001
            pass


class TermTransport:
    """terminado (jupyter_server_terminals): REST create/delete, WebSocket I/O."""

    def __init__(self, name, port, token, prefix=""):
        self.name, self.port, self.token = name, port, token
        self.http = Http(port, token)
        self.live: set[str] = set()
        self.spec = ("term", name, port, token, prefix)

    def create(self) -> str:
        st, m = self.http.request("POST", "api/terminals", {})
        if st != 200:
            raise RuntimeError(f"POST /api/terminals -> {st} {m!r}")
        self.live.add(m["name"])
        return m["name"]

    def attach(self, tid, bulk=False) -> TermConn:
        return TermConn(self, tid)

    def send_detached(self, tid, text):
        conn = self.attach(tid)
        conn.pull(25)          # the connection is set up once the first output came
        conn.send(text)
        time.sleep(0.2)
        conn.close()

    def output_offset(self, tid):
        return None

    def idle(self, tid, seconds):
        import websocket
        conn = self.attach(tid)
        drain(conn)
        ws, recv = conn.ws, {}
        t0 = pc()
        try:
            while True:
                left = seconds - (pc() - t0)
                if left <= 0:
                    break
                ws.settimeout(left)
                try:
                    op, _frame = ws.recv_data_frame(control_frame=True)
                    recv[op] = recv.get(op, 0) + 1
                except websocket.WebSocketTimeoutException:
                    break
        finally:
            conn.close()
        # websocket-client answers each ping (opcode 9) with a pong: one sent message each.
        received = sum(recv.values())
        sent = recv.get(0x9, 0)
        return {"count": received + sent, "received": received, "sent": sent,
                "by_opcode": {str(k): v for k, v in recv.items()}}

    def destroy(self, tid) -> None:
        try:
            self.http.request("DELETE", f"api/terminals/{tid}", timeout=30)
        finally:
            self.live.discard(tid)

    def cleanup(self) -> None:
        ids = list(self.live)
        if ids:
            log(f"terminado: deleting {len(ids)} leftover terminal(s)")
            with ThreadPoolExecutor(16) as ex:
                list(ex.map(lambda n: _quiet(self.destroy, n), ids))


def make_transport(spec):
    kind, *args = spec
    return (PollTransport if kind == "poll" else TermTransport)(*args)


def _quiet(fn, *a):
    try:
        fn(*a)
    except Exception:  # noqa: BLE001
        pass


def drain(conn, quiet=0.5, first_timeout=25.0):
    """Read the first output, then until nothing comes for `quiet` s."""
    deadline = pc() + first_timeout
    while True:
        d = conn.pull(min(25.0, max(0.1, deadline - pc())))
        if d is None:
            raise RuntimeError("session ended before its first output")
        if d:
            break
        if pc() > deadline:
            raise RuntimeError("no first output")
    while True:
        d = conn.pull(quiet)
        if d is None:
            raise RuntimeError("session ended")
        if not d:
            return


# ----------------------------------------------------------------------------------
# Scenarios: each written once, run for every transport. fn(T, P, srv) -> dict
# ----------------------------------------------------------------------------------
def s_create(T, P, srv):
    """One creation: create request, attach, first non-empty output."""
    t0 = pc()
    tid = T.create()
    t1 = pc()
    conn = T.attach(tid)
    t2 = pc()
    deadline = t0 + 30
    while True:
        d = conn.pull(25)
        if d:
            break
        if d is None or pc() > deadline:
            raise RuntimeError(f"no first byte from {tid}")
    t3 = pc()
    T.destroy(tid)
    conn.close()
    time.sleep(0.1)
    return {"first_byte_ms": (t3 - t0) * 1000, "create_request_ms": (t1 - t0) * 1000,
            "attached_ms": (t2 - t0) * 1000}


def echo_session(T):
    """A session running cat, a reader thread with a standing poll / open socket."""
    tid = T.create()
    conn = T.attach(tid)
    reader = Reader(conn.pull, name=f"{T.name}-reader")
    reader.start()
    if not reader.first.wait(30):
        raise RuntimeError("no prompt")
    reader.wait_quiet(0.5)
    conn.send("cat\r")
    reader.wait_quiet(0.3)
    return tid, conn, reader


def close_echo(T, tid, conn, reader):
    _quiet(T.destroy, tid)
    reader.join(10)
    conn.close()


def s_echo(T, P, srv):
    tid, conn, reader = echo_session(T)
    try:
        cpu0 = srv.cpu()
        lat, fails = echo_run(reader, conn.send, P["echo_keys"], P["echo_warm"], P["key_gap"])
        cpu = srv.cpu() - cpu0
        b2b = []
        if P.get("b2b_keys"):
            reader.wait_quiet(0.2)
            b2b, _ = echo_run(reader, conn.send, P["b2b_keys"], 5, 0.0)
    finally:
        close_echo(T, tid, conn, reader)
    out = summarize(lat)
    out.update(lost=fails, server_cpu_ms_per_key=cpu * 1000 / (P["echo_keys"] + P["echo_warm"]))
    if b2b:
        out["b2b_p50"], out["b2b_p99"] = pct(b2b, 50), pct(b2b, 99)
    return out


def tp_command(nbytes: int) -> str:
    return f"head -c {nbytes} /dev/zero | tr '\\0' x; echo; echo {MARK_CMD}"


def s_throughput(T, P, srv):
    """MB/s from sending the command until END_MARK arrives. The output is ASCII, so
    characters received = bytes."""
    tid = T.create()
    conn = T.attach(tid, bulk=True)
    try:
        drain(conn)
        cpu0 = srv.cpu()
        srv.probe("start")
        t0 = pc()
        conn.send(tp_command(P["tp_bytes"]) + "\r")
        total, n, tail = 0, 0, ""
        while True:
            d = conn.pull(25)
            if d is None:
                raise RuntimeError("session ended during the throughput run")
            n += 1
            total += len(d)
            if MARK in tail + d[:64] or MARK in d:
                break
            tail = (tail + d[-64:])[-64:]
            if pc() - t0 > 300:
                raise RuntimeError("throughput run timed out")
        el = pc() - t0
        probe = srv.probe("stop")
        cpu = srv.cpu() - cpu0
    finally:
        _quiet(T.destroy, tid)
        conn.close()
    log(f"  {T.name}: {total / 1e6 / el:.1f} MB/s ({n} answers, server cpu {cpu:.2f} s)")
    return {"MBps": total / 1e6 / el, "bytes": total, "seconds": el, "answers": n,
            "avg_answer_KiB": total / max(n, 1) / 1024,
            "server_cpu_ms_per_MB": cpu * 1e3 / (total / 1e6), "loop_max_ms": probe["max_ms"],
            "loop_max_cpu_ms": probe["max_cpu_ms"]}


def s_idle(T, P, srv):
    tid = T.create()
    try:
        cpu0 = srv.cpu()
        out = T.idle(tid, P["idle_s"])
        out["server_cpu_ms"] = (srv.cpu() - cpu0) * 1000
    finally:
        T.destroy(tid)
    out["window_s"] = P["idle_s"]
    return out


def s_rss(T, P, srv):
    n = P["rss_n"]
    time.sleep(1.5)
    base = srv.rss()
    ids, conns, readers = [], [], []
    try:
        for _ in range(n):
            ids.append(T.create())
        for tid in ids:
            conn = T.attach(tid)
            conns.append(conn)
            r = Reader(conn.pull, name=f"{T.name}-rss")
            r.start()
            readers.append(r)
        deadline = pc() + 60
        for r in readers:
            r.first.wait(max(0.1, deadline - pc()))
        attached = sum(1 for r in readers if r.nbytes > 0 and r.error is None)
        for r in readers:
            r.wait_quiet(0.3, 10)
        time.sleep(2.0)
        peak = srv.rss()
    finally:
        with ThreadPoolExecutor(16) as ex:
            list(ex.map(lambda s: _quiet(T.destroy, s), ids))
        for r in readers:
            r.join(10)
        for c in conns:
            c.close()
    time.sleep(2.0)
    after = srv.rss()
    return {"growth_MB": (peak - base) / 1e6, "sessions": len(ids), "attached": attached,
            "rss_before_MB": base / 1e6, "rss_with_sessions_MB": peak / 1e6,
            "rss_after_cleanup_MB": after / 1e6}


def _flood_consumer(spec, target, q, stop_ev, progress):
    """Runs in a child process: attach to `target`, start `yes`, consume the flood."""
    n, el = 0, 0.0
    try:
        T = make_transport(spec)
        conn = T.attach(target, bulk=True)
        while not conn.pull(25):
            pass
        conn.send("yes\r")
        t0 = pc()
        while not stop_ev.is_set():
            d = conn.pull(5)
            if d is None:
                break
            n += len(d)
            progress.value = n
        el = pc() - t0
        conn.send("\x03")
        conn.close()
        q.put({"bytes": n, "seconds": el, "MBps": n / 1e6 / el if el else 0.0})
    except BaseException as e:  # noqa: BLE001
        q.put({"error": repr(e), "bytes": n})


class Flood:
    """A child process consuming a flooding session (keeps the GIL out of the way)."""

    def __init__(self, T, target):
        ctx = mp.get_context("spawn")
        self.q = ctx.Queue()
        self.stop_ev = ctx.Event()
        self.progress = ctx.Value("q", 0, lock=False)
        self.proc = ctx.Process(target=_flood_consumer, daemon=True,
                                args=(T.spec, target, self.q, self.stop_ev, self.progress))

    def start(self, min_bytes=5_000_000, timeout=60):
        self.proc.start()
        deadline = pc() + timeout
        while self.progress.value < min_bytes:
            if not self.proc.is_alive() or pc() > deadline:
                raise RuntimeError(f"flood did not start: {self._result(1)!r}")
            time.sleep(0.05)

    def _result(self, timeout):
        try:
            return self.q.get(timeout=timeout)
        except Exception:  # noqa: BLE001
            return {"error": "no result from flood consumer"}

    def stop(self):
        if self.stop_ev.is_set():
            return {}
        self.stop_ev.set()
        res = self._result(30)
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        return res


def _flood(T, P, srv, attached: bool):
    fid = T.create()
    flood = Flood(T, fid) if attached else None
    echo = None
    try:
        if attached:
            flood.start()
        else:
            T.send_detached(fid, "yes\r")      # nobody ever reads this session's output
            deadline = pc() + 30
            while (T.output_offset(fid) or 0) < 2_000_000 and T.output_offset(fid) is not None:
                if pc() > deadline:
                    raise RuntimeError("unread flood did not start")
                time.sleep(0.1)
            if T.output_offset(fid) is None:
                time.sleep(1.0)
        echo = echo_session(T)
        tid, conn, reader = echo
        off0, t0 = T.output_offset(fid), pc()
        srv.probe("start")
        lat, fails = echo_run(reader, conn.send, P["flood_keys"], P["flood_warm"], P["key_gap"])
        probe = srv.probe("stop")
        off1, el = T.output_offset(fid), pc() - t0
        fres = flood.stop() if attached else {}
    finally:
        if flood is not None:
            flood.stop()
        _quiet(T.destroy, fid)
        if echo:
            close_echo(T, *echo)
    out = summarize(lat)
    out.update(lost=fails, loop_max_ms=probe["max_ms"], loop_max_cpu_ms=probe["max_cpu_ms"],
               loop_over_5ms=probe["over_5ms"], loop_over_5ms_cpu=probe["over_5ms_cpu"],
               loop_busy=probe["busy_fraction"], loop_busy_cpu=probe["busy_cpu_fraction"],
               loop_top=probe["top"][:3],
               loop_max_cpu_what=probe["max_cpu_what"],
               loop_max_cpu_nogc_ms=probe["max_cpu_nogc_ms"], gc_max_ms=probe["gc_max_ms"],
               gc_max_generation=probe["gc_max_generation"],
               gc_full_collections=probe["gc_collections"][2])
    if "MBps" in fres:
        out["flood_MBps"] = fres["MBps"]
    elif "error" in fres:
        out["flood_error"] = fres["error"]
    if off0 is not None and off1 is not None:
        out["ingest_MBps"] = (off1 - off0) / 1e6 / el
    return out


def s_flood(T, P, srv):
    return _flood(T, P, srv, attached=True)


def s_flood_noreader(T, P, srv):
    return _flood(T, P, srv, attached=False)


# ----------------------------------------------------------------------------------
# Rounds and merging
# ----------------------------------------------------------------------------------
SCENARIOS = [
    # key, title, fn, rounds parameter (None: one round)
    ("create", "create -> first byte", s_create, "create_n"),
    ("echo", "keystroke echo", s_echo, "echo_rounds"),
    ("throughput", "throughput", s_throughput, "tp_reps"),
    ("idle", "idle client", s_idle, None),
    ("rss", "RSS with attached sessions", s_rss, "rss_rounds"),
    ("flood", "echo under flood", s_flood, "flood_rounds"),
    ("flood_noreader", "echo under unread flood", s_flood_noreader, "flood_rounds"),
]


def merge(parts):
    """Median of each numeric figure over the rounds, with its range."""
    out = {"rounds": len(parts)}
    for k, v in parts[0].items():
        vals = [p[k] for p in parts if isinstance(p.get(k), (int, float))]
        if isinstance(v, (int, float)) and not isinstance(v, bool) and vals:
            out[k] = statistics.median(vals)
            if len(vals) > 1:
                out[k + "_range"] = [min(vals), max(vals)]
        elif k not in out:
            out[k] = v
    out["by_round"] = parts
    return out


# (row id, label, result key, field, lower is better)
ROWS = [
    ("create_first_byte_ms", "create -> first prompt byte (ms, median)", "create",
     "first_byte_ms"),
    ("echo_p50_ms", "echo round trip p50 (ms)", "echo", "p50"),
    ("echo_p99_ms", "echo round trip p99 (ms)", "echo", "p99"),
    ("throughput_MBps", "output throughput (MB/s, median)", "throughput", "MBps"),
    ("idle_requests", "idle client: requests (HTTP) / WS msgs in {idle}", "idle", "count"),
    ("rss_growth_MB", "server RSS growth, {rss_n} sessions (MB)", "rss", "growth_MB"),
    ("flood_echo_p50_ms", "echo p50 while another session floods (ms)", "flood", "p50"),
    ("flood_echo_p95_ms", "echo p95 while another session floods (ms)", "flood", "p95"),
    ("flood_loop_max_ms", "  longest loop callback meanwhile (ms, wall)", "flood", "loop_max_ms"),
    ("flood_loop_max_cpu_ms", "  longest loop callback meanwhile (ms, CPU)", "flood",
     "loop_max_cpu_ms"),
    ("flood_MBps", "  flood consumed meanwhile (MB/s)", "flood", "flood_MBps"),
    ("flood_noreader_echo_p95_ms", "echo p95, flood with no reader attached (ms)",
     "flood_noreader", "p95"),
    ("flood_noreader_loop_max_ms", "  longest loop callback meanwhile (ms, wall)",
     "flood_noreader", "loop_max_ms"),
]

# (label, row id, reference transport or None for an absolute bound, factor, higher is better)
TARGETS = [
    ("create -> first byte <= terminado's", "create_first_byte_ms", "terminado", 1.0, False),
    ("echo p50 <= 1.15x the floor's", "echo_p50_ms", "floor", 1.15, False),
    ("throughput >= 4x terminado's", "throughput_MBps", "terminado", 4.0, True),
    ("idle client <= 1 request in the window", "idle_requests", None, 1, False),
    ("RSS growth <= terminado's", "rss_growth_MB", "terminado", 1.0, False),
    ("echo p95 under flood <= 1.5x the floor's", "flood_echo_p95_ms", "floor", 1.5, False),
    ("echo p95 under flood <= 2.5x terminado's", "flood_echo_p95_ms", "terminado", 2.5, False),
    ("no loop callback over 5 ms during the flood", "flood_loop_max_ms", None, 5.0, False),
    ("  same, judged on CPU time", "flood_loop_max_cpu_ms", None, 5.0, False),
]


def _num(res, key, field):
    r = res.get(key)
    if not isinstance(r, dict) or "error" in r:
        return None
    v = r.get(field)
    if not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        return None
    return v


def fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, int) or float(v).is_integer() and abs(v) >= 1:
        return f"{int(v)}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _grid(head, body, left=1):
    w = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(  # noqa: E731
        c.ljust(w[i]) if i < left else c.rjust(w[i]) for i, c in enumerate(cells)) + " |"
    sep = "|" + "|".join("-" * (x + 2) for x in w) + "|"
    return "\n".join([line(head), sep] + [line(b) for b in body])


def build_table(results, names, P):
    rows = []
    for rid, label, key, field in ROWS:
        label = label.format(idle=f"{P['idle_s']:g} s", rss_n=P["rss_n"])
        vals = {n: _num(results[n], key, field) for n in names}
        rows.append({"id": rid, "metric": label, "values": vals})
    return rows


def render_table(rows, names) -> str:
    ratio_cols = [n for n in ("floor", "terminado") if n in names and "labkernel" in names]
    head = ["metric"] + names + [f"L/{'F' if n == 'floor' else 'T'}" for n in ratio_cols]
    body = []
    for r in rows:
        v = r["values"]
        cells = [r["metric"]] + [fmt(v[n]) for n in names]
        for n in ratio_cols:
            a, b = v.get("labkernel"), v.get(n)
            cells.append(fmt(a / b) + "x" if a is not None and b else "-")
        body.append(cells)
    return _grid(head, body)


def paired_ratios(results, a, b, key, field):
    """a/b round by round: each round ran a and b back to back, so the ratio cancels
    most of what the rest of the machine did meanwhile."""
    ra, rb = results[a].get(key), results[b].get(key)
    if not (isinstance(ra, dict) and isinstance(rb, dict)):
        return []
    out = []
    for x, y in zip(ra.get("by_round", []), rb.get("by_round", [])):
        u, v = x.get(field), y.get(field)
        if isinstance(u, (int, float)) and isinstance(v, (int, float)) and v:
            out.append(u / v)
    return out


def evaluate_targets(rows, names, results):
    """For labkernel and each variant: each target's figure, same-run ratio, met.

    The ratio is the median of the per-round ratios where the figure has rounds
    (paired), else the ratio of the medians.
    """
    by_id = {r["id"]: r["values"] for r in rows}
    where = {rid: (key, field) for rid, _, key, field in ROWS}
    out = {}
    for n in names:
        if n in ("floor", "terminado"):
            continue
        res = []
        for label, rid, ref, factor, higher in TARGETS:
            v = by_id.get(rid, {}).get(n)
            entry = {"target": label, "value": v, "ratio": None, "met": None}
            if v is not None and ref is None:
                entry["met"] = v >= factor if higher else v <= factor
            elif v is not None and by_id[rid].get(ref):
                entry["ratio"] = entry["ratio_of_medians"] = v / by_id[rid][ref]
                pr = paired_ratios(results, n, ref, *where[rid])
                if len(pr) > 1:
                    entry.update(ratio=statistics.median(pr), ratio_range=[min(pr), max(pr)])
                r = entry["ratio"]
                entry["met"] = r >= factor if higher else r <= factor
            res.append(entry)
        out[n] = res
    return out


def render_targets(targets) -> str:
    names = list(targets)
    if not names:
        return ""
    head = ["target"] + [h for n in names for h in (n, "ratio", "met")]
    body = []
    for i, t in enumerate(targets[names[0]]):
        cells = [t["target"]]
        for n in names:
            x = targets[n][i]
            ratio = "-" if x["ratio"] is None else fmt(x["ratio"]) + "x"
            if "ratio_range" in x:
                ratio += " ({}-{})".format(*map(fmt, x["ratio_range"]))
            cells += [fmt(x["value"]), ratio,
                      "n/a" if x["met"] is None else ("met" if x["met"] else "NOT met")]
        body.append(cells)
    return _grid(head, body)


def details(results, names) -> str:
    """Secondary figures and the spread over rounds."""
    out = []
    for n in names:
        res, parts = results[n], []

        def rng(key, field, unit="ms"):
            r = res.get(key, {})
            if isinstance(r, dict) and field + "_range" in r:
                lo, hi = r[field + "_range"]
                return f"{fmt(r[field])} ({fmt(lo)}-{fmt(hi)} over {r['rounds']} rounds) {unit}"
            return f"{fmt(r.get(field) if isinstance(r, dict) else None)} {unit}"

        c = res.get("create", {})
        if "create_request_ms" in c:
            parts.append(f"create request {fmt(c['create_request_ms'])} ms, attached at "
                         f"{fmt(c['attached_ms'])} ms")
        e = res.get("echo", {})
        if "p50" in e:
            parts.append(f"echo p50 {rng('echo', 'p50')}, p99 {rng('echo', 'p99')}, max "
                         f"{fmt(e['max'])} ms, server CPU {fmt(e['server_cpu_ms_per_key'])} "
                         f"ms/key; keys back to back: p50 {fmt(e.get('b2b_p50'))} / p99 "
                         f"{fmt(e.get('b2b_p99'))} ms")
        tp = res.get("throughput", {})
        if "MBps" in tp:
            parts.append(f"throughput {rng('throughput', 'MBps', 'MB/s')}: "
                         f"{fmt(tp['avg_answer_KiB'])} KiB/answer, server CPU "
                         f"{fmt(tp['server_cpu_ms_per_MB'])} ms/MB, longest loop callback "
                         f"{fmt(tp['loop_max_ms'])} ms")
        idle = res.get("idle", {})
        if "count" in idle:
            parts.append(f"idle: {idle['count']} ({idle.get('requests') or idle.get('by_opcode')})")
        rs = res.get("rss", {})
        if "growth_MB" in rs:
            parts.append(f"RSS {fmt(rs['rss_before_MB'])} -> {fmt(rs['rss_with_sessions_MB'])} -> "
                         f"{fmt(rs['rss_after_cleanup_MB'])} MB after cleanup; growth by round "
                         + ", ".join(fmt(p["growth_MB"]) for p in rs["by_round"]) + " MB")
        for key, what in (("flood", "flood, reader attached"),
                          ("flood_noreader", "flood, nobody reading")):
            f = res.get(key, {})
            if "p50" in f:
                s = (f"{what}: echo p50 {rng(key, 'p50')}, p95 {rng(key, 'p95')}, longest loop "
                     f"callback {rng(key, 'loop_max_ms')} wall / {rng(key, 'loop_max_cpu_ms')} "
                     f"CPU, callbacks over 5 ms {fmt(f['loop_over_5ms'])} (CPU: "
                     f"{fmt(f['loop_over_5ms_cpu'])}), loop busy {fmt(100 * f['loop_busy'])} % "
                     f"(CPU {fmt(100 * f['loop_busy_cpu'])} %)")
                if "flood_MBps" in f:
                    s += f", flood consumed at {rng(key, 'flood_MBps', 'MB/s')}"
                if "ingest_MBps" in f:
                    s += f", server took {fmt(f['ingest_MBps'])} MB/s from the PTY"
                if "gc_max_ms" in f:
                    s += (f"; longest CPU without garbage collection {rng(key, 'loop_max_cpu_nogc_ms')}, "
                          f"longest collection {rng(key, 'gc_max_ms')} "
                          f"({fmt(f['gc_full_collections'])} full)")
                if f.get("loop_top"):
                    t = f["loop_top"][0]
                    s += f"; longest was {t['what']}"
                parts.append(s)
        for k, v in res.items():
            if isinstance(v, dict) and "error" in v:
                parts.append(f"{k}: ERROR {v['error']}")
        if parts:
            out.append(f"{n}:\n  - " + "\n  - ".join(parts))
    return "\n".join(out)


def reachability(rows, ref) -> str:
    """Whether the throughput target is reachable at all on this machine, this run:
    no terminal transport can carry output faster than the PTY gives it."""
    ceiling = (ref.get("pty_ceiling") or {}).get("MBps")
    term = next((r["values"].get("terminado") for r in rows if r["id"] == "throughput_MBps"), None)
    factor = next(f for label, rid, _, f, _ in TARGETS if rid == "throughput_MBps")
    if not ceiling or not term:
        return ""
    need = factor * term
    verdict = "above" if need > ceiling else "below"
    return (f"(throughput target: {factor:g}x terminado's is {fmt(need)} MB/s, {verdict} the raw "
            f"PTY ceiling of this run, {fmt(ceiling)} MB/s)")


def render_reference(ref, P) -> str:
    out = ["reference (no transport):"]
    pc_ = ref.get("pty_ceiling")
    if pc_:
        out.append(f"  - raw PTY ceiling: the throughput command read straight from a PTY by "
                   f"this process: {fmt(pc_['MBps'])} MB/s")
    rf = ref.get("request_floor")
    if rf:
        out.append(f"  - jupyter_server request floor: authenticated GET /api/status round trip, "
                   f"spaced {P['key_gap'] * 1000:g} ms apart: p50 {fmt(rf['p50'])} / "
                   f"p99 {fmt(rf['p99'])} ms")
    return "\n".join(out) if len(out) > 1 else ""


# ----------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------
def warm_up(transports, srv: Server, P) -> None:
    """Bring the server to a steady state before measuring anything.

    A fresh jupyter_server still runs its first full (generation 2) garbage
    collections during its first thousands of requests, and the first session of
    each kind imports modules (pexpect, ptyprocess...). Those pauses reach ~100 ms
    on a small machine; whichever transport happened to be measured first would
    pay them. Each transport types warm_keys keys into cat, then plain requests.
    """
    for _ in range(P["warm_requests"] // 2):
        srv.http.request("GET", "api/status")
    wp = dict(P, echo_keys=P["warm_keys"], echo_warm=0, key_gap=0.0, b2b_keys=0)
    for T in transports:
        s_echo(T, wp, srv)
    for _ in range(P["warm_requests"] // 2):
        srv.http.request("GET", "api/status")


def ref_request_floor(srv: Server, P, n=300) -> dict:
    """Round trip of an authenticated no-op request (GET /api/status, jupyter_server's
    own handler) spaced like the timed keystrokes: the floor under any HTTP design."""
    lat = []
    for i in range(n + 20):
        t0 = pc()
        srv.http.request("GET", "api/status")
        if i >= 20:
            lat.append((pc() - t0) * 1000)
        if P["key_gap"]:
            time.sleep(P["key_gap"])
    return summarize(lat)


def ref_pty_ceiling(P) -> dict:
    """The throughput command read straight from a PTY by this process (no server):
    the ceiling any terminal transport on this machine can reach."""
    import pty
    import select
    master, slave = pty.openpty()
    env = dict(os.environ, TERM="xterm-256color")
    proc = subprocess.Popen(["bash", "-c", tp_command(P["tp_bytes"])],
                            stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    total, tail = 0, b""
    t0 = pc()
    try:
        while pc() - t0 < 120:
            select.select([master], [], [], 5)
            try:
                d = os.read(master, 65536)
            except OSError:
                break
            if not d:
                break
            total += len(d)
            if MARK.encode() in tail + d:
                break
            tail = d[-16:]
        el = pc() - t0
    finally:
        os.close(master)
        proc.kill()
        proc.wait()
    return {"MBps": total / 1e6 / el, "bytes": total, "seconds": el}


def probe_transport(T):
    try:
        tid = T.create()
        T.destroy(tid)
    except Exception as e:  # noqa: BLE001
        return f"create failed: {e!r}"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts, fast smoke run")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--only", metavar="NAMES",
                    help="comma-separated transports to measure (labkernel, floor, "
                         "terminado, variant names); default all")
    ap.add_argument("--figures", metavar="KEYS",
                    help="comma-separated figures to measure: "
                         + ",".join(s[0] for s in SCENARIOS) + " (default all)")
    ap.add_argument("--variant", action="append", type=parse_variant, default=[],
                    metavar="NAME=REF[:Trait=value,...]",
                    help="also measure labkernel from git REF ('.' = the working tree) "
                         "with these LabSessionManager settings, as transport NAME")
    ap.add_argument("--lab-config", metavar="Trait=value,...", default="",
                    help="LabSessionManager settings for the main labkernel")
    ap.add_argument("--rounds", type=int, metavar="N",
                    help="repeat echo and the flood figures N times (default 2 / 3)")
    ap.add_argument("--key-gap-ms", type=float, default=10.0,
                    help="pause between timed keystrokes (default 10 ms)")
    ap.add_argument("--keep-home", action="store_true",
                    help="run the shells with the real HOME (and ~/.bashrc)")
    args = ap.parse_args(argv)
    P = dict(QUICK if args.quick else FULL)
    P["key_gap"] = args.key_gap_ms / 1000.0
    if args.rounds:
        P.update(echo_rounds=args.rounds, flood_rounds=args.rounds)
    figures = set(args.figures.split(",")) if args.figures else {s[0] for s in SCENARIOS}
    lab_config = parse_variant("x=.:" + args.lab_config)["config"]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = tempfile.mkdtemp(prefix="labkernel-bench-")
    srv = Server(tmp, clean_home=not args.keep_home, variants=args.variant,
                 lab_config=lab_config)
    specs = [("poll", "labkernel", ""), *[("poll", v["name"], f"v/{v['name']}/")
                                          for v in args.variant],
             ("poll", "floor", "floor/"), ("term", "terminado", "")]
    if args.only:
        only = args.only.split(",")
        specs = [s for s in specs if s[1] in only]
    names = [s[1] for s in specs]
    results = {n: {} for n in names}
    reference: dict = {}
    transports = []
    meta = {"mode": "quick" if args.quick else "full", "params": P,
            "python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "variants": args.variant, "lab_config": lab_config}
    rc = 0
    t_start = pc()
    try:
        srv.start()
        meta["server_ready_s"] = srv.wait_ready()
        log(f"server ready in {meta['server_ready_s']:.2f} s")
        for kind, name, prefix in specs:
            T = make_transport((kind, name, srv.port, srv.token, prefix))
            why = probe_transport(T)
            if why:
                log(f"{name} unavailable: {why}")
                results[name]["unavailable"] = why
            else:
                transports.append(T)
        import labkernel
        meta["labkernel_version"] = getattr(labkernel, "__version__", None)
    except BaseException:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    try:
        log("warm-up (server GC, first-session imports) ...")
        t0 = pc()
        warm_up(transports, srv, P)
        log(f"warm-up done in {pc() - t0:.1f} s")
        log("reference: raw PTY ceiling, request floor ...")
        reference["pty_ceiling"] = ref_pty_ceiling(P)
        reference["request_floor"] = ref_request_floor(srv, P)
        for key, title, fn, count_key in SCENARIOS:
            if key not in figures:
                continue
            n = P[count_key] if count_key else 1
            if key == "rss":
                # The first N sessions in a fresh server grow the heap and the
                # object pools to a peak that later rounds reuse, whichever
                # transport runs first: one unmeasured round of each.
                log(f"{title}: one unmeasured round of each transport ...")
                for T in transports:
                    _quiet(fn, T, P, srv)
            log(f"{title}: {n} round(s), transports alternating ...")
            parts: dict = {T.name: [] for T in transports}
            t0 = pc()
            for i in range(n):
                # Palindromic order (A B C, C B A, ...): memory freed and CPU caches
                # warmed by one transport favour the next; over two rounds each
                # transport follows each other once.
                for T in (transports if i % 2 == 0 else transports[::-1]):
                    if parts[T.name] and "error" in parts[T.name][-1]:
                        continue
                    try:
                        res = fn(T, P, srv)
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:  # noqa: BLE001
                        log(f"{title}: {T.name} FAILED: {e!r}\n{traceback.format_exc()}")
                        res = {"error": repr(e)}
                    parts[T.name].append(res)
                if srv.proc.poll() is not None:
                    raise RuntimeError("jupyter_server died:\n" + srv.log_tail())
            for tname, ps in parts.items():
                errs = [p for p in ps if "error" in p]
                res = errs[0] if errs else merge(ps)
                results[tname][key] = res
                log(f"{title}: {tname}: " + json.dumps(
                    {k: v for k, v in res.items() if isinstance(v, (int, float, str))},
                    default=str)[:300])
            log(f"{title}: {pc() - t0:.1f} s")
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        rc = 130
    except Exception:  # noqa: BLE001
        log("benchmark aborted:\n" + traceback.format_exc())
        rc = 1
    finally:
        for T in transports:
            _quiet(T.cleanup)
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    meta["elapsed_s"] = pc() - t_start

    rows = build_table(results, names, P)
    targets = evaluate_targets(rows, names, results)
    print()
    print(f"labkernel, the floor, terminado ({meta['mode']} run, {meta['cpus']} CPUs, "
          f"Python {meta['python']}, {meta['elapsed_s']:.0f} s)")
    for n in names:
        if "unavailable" in results[n]:
            print(f"{n}: not measured: {results[n]['unavailable']}")
    for v in args.variant:
        print(f"variant {v['name']}: labkernel at {v['ref']}"
              + (f" ({v['commit']})" if v.get("commit") else "")
              + (f" with {v['config']}" if v["config"] else ""))
    print(render_table(rows, names))
    print()
    print("targets (same run; ratios: median of per-round ratios, with their range):")
    print(render_targets(targets))
    print(reachability(rows, reference))
    print()
    if args.quick:
        print(f"(--quick: idle window {P['idle_s']:g} s, {P['rss_n']} sessions for RSS, "
              f"{P['echo_keys']} echo keys, {P['tp_bytes'] / 1e6:g} MB throughput, "
              f"{P['flood_rounds']} flood round(s))")
    print(details(results, names))
    print(render_reference(reference, P))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "table": rows, "targets": targets, "results": results,
                       "reference": reference}, f, indent=1, default=str)
        log(f"wrote {args.json}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
