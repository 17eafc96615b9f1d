#!/usr/bin/env python
"""labkernel vs terminado: one Jupyter server, both transports, one table.

Run from the repository root:

    python benchmarks/bench.py            # full run (a few minutes)
    python benchmarks/bench.py --quick    # smoke run with small counts
    python benchmarks/bench.py --json results.json

It starts ONE real ``jupyter_server`` subprocess with both ``labkernel`` and
``jupyter_server_terminals`` enabled (isolated config/runtime/data dirs, random
token, ``base_url=/bench/``), then measures, for labkernel (HTTP long polling via
``labkernel.client.LabClient``) and terminado (``/api/terminals`` + WebSocket via
``websocket-client``):

1. create -> first prompt byte (ms, median over N creations)
2. keystroke echo round trip p50/p99 (ms) typing into ``cat``
3. output throughput (MB/s) of a >= 20 MB command
4. requests an idle attached client makes in 10 s
5. server RSS growth (MB) with 100 attached sessions
6. echo p50/p95 (ms) in one session while another floods with ``yes``

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

BASE = "/bench/"
ENDED = {"exited", "stopped", "expired", "failed"}
MARK = "END_MARK"                      # what the throughput command prints last
MARK_CMD = "EN''D_MARK"                # how it is typed (the echo never contains MARK)
BIG_READ = 4 * 1024 * 1024             # labkernel max= for bulk reads
ECHO_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"

FULL = dict(create_n=10, echo_keys=300, echo_warm=20, b2b_keys=300,
            tp_bytes=20_000_000, tp_reps=3, idle_s=10.0, rss_n=100, rss_rounds=2,
            flood_keys=200, flood_warm=20, warm_keys=150, warm_requests=1000)
QUICK = dict(create_n=3, echo_keys=60, echo_warm=10, b2b_keys=60,
             tp_bytes=5_000_000, tp_reps=1, idle_s=3.0, rss_n=20, rss_rounds=2,
             flood_keys=60, flood_warm=10, warm_keys=50, warm_requests=300)

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
# The Jupyter server subprocess
# ----------------------------------------------------------------------------------
class Server:
    def __init__(self, tmp: str, clean_home: bool = True, max_sessions: int = 200):
        self.tmp = tmp
        self.max_sessions = max_sessions
        self.clean_home = clean_home
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
        for d in (cfg, runtime, data, root):
            os.makedirs(d, exist_ok=True)
        # Explicit extension list: labkernel + terminals on, the other extensions
        # the environment may enable (jupyterlab, lsp, notebook_shim) off, so the
        # server is the same lean process for both transports.
        config = {
            "ServerApp": {
                "jpserver_extensions": {
                    "labkernel": True,
                    "jupyter_server_terminals": True,
                    "jupyterlab": False,
                    "jupyter_lsp": False,
                    "notebook_shim": False,
                },
                "token": self.token,
                "base_url": BASE,
                "open_browser": False,
                "root_dir": root,
                "terminals_enabled": True,
            },
            # labkernel's default limit is 100 running sessions; the RSS figure
            # needs exactly that many, so leave a margin (terminado has no limit).
            "LabSessionManager": {"max_sessions": self.max_sessions},
        }
        with open(os.path.join(cfg, "jupyter_server_config.json"), "w") as f:
            json.dump(config, f, indent=1)
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=cfg,
            JUPYTER_RUNTIME_DIR=runtime,
            JUPYTER_DATA_DIR=data,
            JUPYTER_PLATFORM_DIRS="0",
            SHELL="/bin/bash",          # the same shell for both transports
            PYTHONUNBUFFERED="1",
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
            "--ServerApp.jpserver_extensions="
            "{'labkernel': True, 'jupyter_server_terminals': True}",
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
        # Shells the server started and failed to reap (should be none).
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
# Transport adapters
# ----------------------------------------------------------------------------------
class Terminado:
    name = "terminado"

    def __init__(self, srv: Server):
        self.srv = srv
        self.http = srv.http
        self.ws_base = f"ws://127.0.0.1:{srv.port}{BASE}terminals/websocket/"
        self.live: set[str] = set()
        self.sockets: list = []

    def create(self) -> str:
        st, m = self.http.request("POST", "api/terminals", {})
        if st != 200:
            raise RuntimeError(f"POST /api/terminals -> {st} {m!r}")
        self.live.add(m["name"])
        return m["name"]

    def connect(self, name: str, timeout=30.0):
        import websocket
        ws = websocket.create_connection(
            self.ws_base + name, header=[f"Authorization: token {self.srv.token}"],
            suppress_origin=True, timeout=timeout, enable_multithread=True,
            skip_utf8_validation=True)
        self.sockets.append(ws)
        return ws

    @staticmethod
    def pull_fn(ws):
        def pull():
            while True:
                msg = ws.recv()
                if not msg:
                    return None
                m = json.loads(msg)
                if m[0] == "stdout":
                    return m[1]
                if m[0] == "disconnect":
                    return None
        return pull

    @staticmethod
    def sender(ws):
        def send(text):
            ws.send(json.dumps(["stdin", text]))
        return send

    def first_output(self, ws, timeout=25.0) -> str:
        ws.settimeout(timeout)
        pull = self.pull_fn(ws)
        while True:
            d = pull()
            if d is None:
                raise RuntimeError("terminal ended before its first output")
            if d:
                return d

    def drain(self, ws, quiet=0.5):
        ws.settimeout(quiet)
        import websocket
        try:
            while True:
                ws.recv()
        except websocket.WebSocketTimeoutException:
            pass
        finally:
            ws.settimeout(60)

    def destroy(self, name: str) -> None:
        try:
            self.http.request("DELETE", f"api/terminals/{name}", timeout=30)
        finally:
            self.live.discard(name)

    def close_ws(self, ws) -> None:
        try:
            ws.abort()
            ws.close(timeout=0.2)
        except Exception:  # noqa: BLE001
            pass
        try:
            self.sockets.remove(ws)
        except ValueError:
            pass

    def cleanup(self) -> None:
        for ws in list(self.sockets):
            self.close_ws(ws)
        names = list(self.live)
        if names:
            log(f"terminado: deleting {len(names)} leftover terminal(s)")
            with ThreadPoolExecutor(16) as ex:
                list(ex.map(lambda n: _quiet(self.destroy, n), names))


class Labkernel:
    name = "labkernel"

    def __init__(self, srv: Server):
        from labkernel.client import LabClient
        self.LabClient = LabClient
        self.srv = srv
        self.url = srv.url
        self.client = LabClient(self.url, srv.token)
        self.live: set[str] = set()

    def new_client(self):
        return self.LabClient(self.url, self.srv.token)

    def create(self, client=None) -> str:
        s = (client or self.client).start()
        sid = s["sessionId"]
        self.live.add(sid)
        return sid

    def pull_fn(self, client, sid, offset=0, wait=25, max_bytes=None):
        state = {"off": offset}

        def pull():
            kw = {} if max_bytes is None else {"max": max_bytes}
            r = client.read(sid, offset=state["off"], wait=wait, **kw)
            state["off"] = r["nextOffset"]
            if not r["data"] and r.get("status") in ENDED:
                return None
            return r["data"]
        pull.state = state
        return pull

    def sender(self, client, sid):
        def send(text):
            client.send(sid, text)
        return send

    def drain(self, client, sid, offset=0, quiet=1) -> int:
        """Read until a long poll of `quiet` s returns nothing; return next offset."""
        got_any = False
        while True:
            r = client.read(sid, offset=offset, wait=quiet if got_any else 25)
            offset = r["nextOffset"]
            if r["data"]:
                got_any = True
                continue
            if r.get("status") in ENDED:
                raise RuntimeError(f"session {sid} ended: {r.get('status')}")
            if got_any:
                return offset

    def destroy(self, sid: str, client=None) -> None:
        try:
            (client or self.client).stop(sid)
        finally:
            self.live.discard(sid)

    def cleanup(self) -> None:
        sids = list(self.live)
        if sids:
            log(f"labkernel: stopping {len(sids)} leftover session(s)")
            c = self.new_client()
            with ThreadPoolExecutor(16) as ex:
                list(ex.map(lambda s: _quiet(self.destroy, s, c), sids))


def _quiet(fn, *a):
    try:
        fn(*a)
    except Exception:  # noqa: BLE001
        pass


# ----------------------------------------------------------------------------------
# 1. create -> first prompt byte
# ----------------------------------------------------------------------------------
def t_create_lab(L: Labkernel, P):
    c = L.client
    first, created = [], []
    for i in range(P["create_n"]):
        t0 = pc()
        sid = L.create()
        t1 = pc()
        off = 0
        deadline = t0 + 30
        while True:
            r = c.read(sid, offset=off, wait=25)
            if r["data"]:
                break
            off = r["nextOffset"]
            if r.get("status") in ENDED or pc() > deadline:
                raise RuntimeError(f"no first byte from {sid}: {r!r}")
        t2 = pc()
        first.append((t2 - t0) * 1000)
        created.append((t1 - t0) * 1000)
        L.destroy(sid)
        time.sleep(0.1)
    return {"samples_ms": first, "create_request_ms": created}


def t_create_term(T: Terminado, P):
    first, created, connected = [], [], []
    for i in range(P["create_n"]):
        t0 = pc()
        name = T.create()
        t1 = pc()
        ws = T.connect(name)
        t2 = pc()
        T.first_output(ws)
        t3 = pc()
        first.append((t3 - t0) * 1000)
        created.append((t1 - t0) * 1000)
        connected.append((t2 - t0) * 1000)
        T.destroy(name)
        T.close_ws(ws)
        time.sleep(0.1)
    return {"samples_ms": first, "create_request_ms": created, "ws_connected_ms": connected}


def merge_create(parts):
    out = {}
    for k in ("samples_ms", "create_request_ms", "ws_connected_ms"):
        xs = [x for p in parts for x in p.get(k, [])]
        if xs:
            out[k] = xs
    out["median_ms"] = statistics.median(out["samples_ms"])
    out["create_request_median_ms"] = statistics.median(out["create_request_ms"])
    if "ws_connected_ms" in out:
        out["ws_connected_median_ms"] = statistics.median(out["ws_connected_ms"])
    return out


def merge_rss(parts):
    """Rounds run L,T then T,L (ABBA): the mean cancels the order effect (memory the
    first run frees is reused by the next one)."""
    out = dict(parts[0])
    out["growth_MB"] = statistics.fmean(p["growth_MB"] for p in parts)
    out["growth_by_round_MB"] = [p["growth_MB"] for p in parts]
    out["rounds"] = parts
    return out


def merge_tp(parts):
    runs = [r for p in parts for r in p["runs"]]
    return {"MBps": statistics.median(r["MBps"] for r in runs), "runs": runs}


# ----------------------------------------------------------------------------------
# 2. keystroke echo round trip
# ----------------------------------------------------------------------------------
def lab_echo_session(L: Labkernel):
    """A session running cat, a reader thread with a standing long poll."""
    rc, sc = L.new_client(), L.new_client()
    sid = L.create(sc)
    reader = Reader(L.pull_fn(rc, sid, 0, wait=25), name=f"lab-reader-{sid[:6]}")
    reader.start()
    if not reader.first.wait(30):
        raise RuntimeError("no prompt")
    reader.wait_quiet(0.5)
    send = L.sender(sc, sid)
    send("cat\r")
    reader.wait_quiet(0.3)
    return sid, reader, send, sc


def term_echo_session(T: Terminado):
    name = T.create()
    ws = T.connect(name)
    reader = Reader(T.pull_fn(ws), name=f"term-reader-{name}")
    reader.start()
    if not reader.first.wait(30):
        raise RuntimeError("no prompt")
    reader.wait_quiet(0.5)
    send = T.sender(ws)
    send("cat\r")
    reader.wait_quiet(0.3)
    return name, reader, send, ws


def t_echo_lab(L: Labkernel, P, srv):
    sid, reader, send, sc = lab_echo_session(L)
    try:
        cpu0 = srv.cpu()
        lat, fails = echo_run(reader, send, P["echo_keys"], P["echo_warm"], P["key_gap"])
        cpu = srv.cpu() - cpu0
        b2b = []
        if P.get("b2b_keys"):
            reader.wait_quiet(0.2)
            b2b, _ = echo_run(reader, send, P["b2b_keys"], 5, 0.0)
    finally:
        L.destroy(sid, sc)
        reader.join(10)
    out = summarize(lat)
    out.update(lost=fails, server_cpu_ms_per_key=cpu * 1000 / (P["echo_keys"] + P["echo_warm"]))
    if b2b:
        out["back_to_back"] = summarize(b2b)
    return out


def t_echo_term(T: Terminado, P, srv):
    name, reader, send, ws = term_echo_session(T)
    try:
        cpu0 = srv.cpu()
        lat, fails = echo_run(reader, send, P["echo_keys"], P["echo_warm"], P["key_gap"])
        cpu = srv.cpu() - cpu0
        b2b = []
        if P.get("b2b_keys"):
            reader.wait_quiet(0.2)
            b2b, _ = echo_run(reader, send, P["b2b_keys"], 5, 0.0)
    finally:
        T.destroy(name)
        reader.join(5)
        T.close_ws(ws)
    out = summarize(lat)
    out.update(lost=fails, server_cpu_ms_per_key=cpu * 1000 / (P["echo_keys"] + P["echo_warm"]))
    if b2b:
        out["back_to_back"] = summarize(b2b)
    return out


# ----------------------------------------------------------------------------------
# 3. throughput
# ----------------------------------------------------------------------------------
def tp_command(nbytes: int) -> str:
    return f"head -c {nbytes} /dev/zero | tr '\\0' x; echo; echo {MARK_CMD}"


def t_tp_lab(L: Labkernel, P, srv):
    c = L.new_client()
    runs = []
    for rep in range(P["tp_reps"]):
        sid = L.create(c)
        try:
            off = L.drain(c, sid)
            cpu0 = srv.cpu()
            t0 = pc()
            c.command(sid, tp_command(P["tp_bytes"]))
            total, nreq, truncated, tail = 0, 0, False, ""
            while True:
                r = c.read(sid, offset=off, wait=25, max=BIG_READ)
                nreq += 1
                d = r["data"]
                total += r["nextOffset"] - r["offset"]
                truncated |= bool(r.get("truncated"))
                off = r["nextOffset"]
                if MARK in tail + d[:64] or MARK in d:
                    break
                tail = (tail + d[-64:])[-64:]
                if r.get("status") in ENDED:
                    raise RuntimeError("session ended during throughput run")
                if pc() - t0 > 300:
                    raise RuntimeError("throughput run timed out")
            el = pc() - t0
            cpu = srv.cpu() - cpu0
        finally:
            L.destroy(sid, c)
        runs.append({"MBps": total / 1e6 / el, "bytes": total, "seconds": el,
                     "requests": nreq, "avg_answer_bytes": total / max(nreq, 1),
                     "truncated": truncated, "server_cpu_s": cpu})
        log(f"  labkernel: {runs[-1]['MBps']:.1f} MB/s "
            f"({nreq} reads, server cpu {cpu:.2f} s)")
    return {"runs": runs}


def t_tp_term(T: Terminado, P, srv):
    runs = []
    for rep in range(P["tp_reps"]):
        name = T.create()
        ws = T.connect(name)
        try:
            T.first_output(ws)
            T.drain(ws)
            ws.settimeout(60)
            pull = T.pull_fn(ws)
            send = T.sender(ws)
            cpu0 = srv.cpu()
            t0 = pc()
            send(tp_command(P["tp_bytes"]) + "\r")
            total, nmsg, tail = 0, 0, ""
            while True:
                d = pull()
                if d is None:
                    raise RuntimeError("terminal ended during throughput run")
                nmsg += 1
                total += len(d.encode("utf-8"))
                if MARK in tail + d[:64] or MARK in d:
                    break
                tail = (tail + d[-64:])[-64:]
                if pc() - t0 > 300:
                    raise RuntimeError("throughput run timed out")
            el = pc() - t0
            cpu = srv.cpu() - cpu0
        finally:
            T.destroy(name)
            T.close_ws(ws)
        runs.append({"MBps": total / 1e6 / el, "bytes": total, "seconds": el,
                     "messages": nmsg, "avg_message_bytes": total / max(nmsg, 1),
                     "server_cpu_s": cpu})
        log(f"  terminado: {runs[-1]['MBps']:.1f} MB/s "
            f"({nmsg} messages, server cpu {cpu:.2f} s)")
    return {"runs": runs}


# ----------------------------------------------------------------------------------
# 4. idle attached client
# ----------------------------------------------------------------------------------
def t_idle_lab(L: Labkernel, P, srv):
    c = L.new_client()
    sid = L.create(c)
    try:
        off = L.drain(c, sid)
        reqs: list = []
        reader = Reader(L.pull_fn(L.new_client(), sid, off, wait=25), name="lab-idle")
        reader.requests = reqs
        cpu0 = srv.cpu()
        t0 = pc()
        reader.start()
        time.sleep(P["idle_s"])
        in_window = [r for r in reqs if r[0] - t0 <= P["idle_s"]]
        cpu = srv.cpu() - cpu0
    finally:
        L.destroy(sid, c)
    reader.join(10)
    return {"count": len(in_window), "window_s": P["idle_s"],
            "requests": [f"{m} {u}" for _, m, u in in_window], "server_cpu_ms": cpu * 1000}


def t_idle_term(T: Terminado, P, srv):
    import websocket
    name = T.create()
    ws = T.connect(name)
    try:
        T.first_output(ws)
        T.drain(ws)
        recv = {}
        cpu0 = srv.cpu()
        t0 = pc()
        while True:
            left = P["idle_s"] - (pc() - t0)
            if left <= 0:
                break
            ws.settimeout(left)
            try:
                op, _frame = ws.recv_data_frame(control_frame=True)
                recv[op] = recv.get(op, 0) + 1
            except websocket.WebSocketTimeoutException:
                break
        cpu = srv.cpu() - cpu0
    finally:
        T.destroy(name)
        T.close_ws(ws)
    # websocket-client answers each ping (opcode 9) with a pong: one sent message each.
    received = sum(recv.values())
    sent = recv.get(0x9, 0)
    return {"count": received + sent, "received": received, "sent": sent,
            "by_opcode": recv, "window_s": P["idle_s"], "connections": 1,
            "server_cpu_ms": cpu * 1000}


# ----------------------------------------------------------------------------------
# 5. server RSS growth with N attached sessions
# ----------------------------------------------------------------------------------
def _settle_rss(srv, settle):
    time.sleep(settle)
    return srv.rss()


def t_rss_lab(L: Labkernel, P, srv):
    n = P["rss_n"]
    base = _settle_rss(srv, 1.5)
    c = L.new_client()
    sids, readers = [], []
    try:
        for i in range(n):
            sids.append(L.create(c))
        for sid in sids:
            r = Reader(L.pull_fn(L.new_client(), sid, 0, wait=25), name=f"lab-rss-{sid[:6]}")
            r.start()
            readers.append(r)
        deadline = pc() + 60
        for r in readers:
            r.first.wait(max(0.1, deadline - pc()))
        attached = sum(1 for r in readers if r.nbytes > 0 and r.error is None)
        for r in readers:
            r.wait_quiet(0.3, 10)
        peak = _settle_rss(srv, 2.0)
    finally:
        with ThreadPoolExecutor(16) as ex:
            list(ex.map(lambda s: _quiet(L.destroy, s, c), sids))
        for r in readers:
            r.join(10)
    after = _settle_rss(srv, 2.0)
    errors = [repr(r.error) for r in readers if r.error is not None][:3]
    return {"growth_MB": (peak - base) / 1e6, "sessions": len(sids), "attached": attached,
            "rss_before_MB": base / 1e6, "rss_with_sessions_MB": peak / 1e6,
            "rss_after_cleanup_MB": after / 1e6, "reader_errors": errors}


def t_rss_term(T: Terminado, P, srv):
    n = P["rss_n"]
    base = _settle_rss(srv, 1.5)
    names, sockets = [], []
    attached = 0
    try:
        for i in range(n):
            names.append(T.create())
        for name in names:
            ws = T.connect(name)
            sockets.append(ws)
            T.first_output(ws)
            attached += 1
        peak = _settle_rss(srv, 2.0)
    finally:
        with ThreadPoolExecutor(16) as ex:
            list(ex.map(lambda nm: _quiet(T.destroy, nm), names))
        for ws in sockets:
            T.close_ws(ws)
    after = _settle_rss(srv, 2.0)
    return {"growth_MB": (peak - base) / 1e6, "sessions": len(names), "attached": attached,
            "rss_before_MB": base / 1e6, "rss_with_sessions_MB": peak / 1e6,
            "rss_after_cleanup_MB": after / 1e6}


# ----------------------------------------------------------------------------------
# 6. echo while another session floods
# ----------------------------------------------------------------------------------
def _flood_consumer(kind, port, token, target, q, stop_ev, progress):
    """Runs in a child process: attach to `target`, start `yes`, consume the flood."""
    n, el = 0, 0.0
    try:
        if kind == "labkernel":
            from labkernel.client import LabClient
            c = LabClient(f"http://127.0.0.1:{port}{BASE}", token)
            r = c.read(target, offset=0, wait=25)
            off = r["nextOffset"]
            c.command(target, "yes")
            t0 = pc()
            while not stop_ev.is_set():
                r = c.read(target, offset=off, wait=5, max=BIG_READ)
                n += r["nextOffset"] - r["offset"]
                off = r["nextOffset"]
                progress.value = n
                if r.get("status") in ENDED:
                    break
            el = pc() - t0
            c.send(target, "\x03")
        else:
            import websocket
            ws = websocket.create_connection(
                f"ws://127.0.0.1:{port}{BASE}terminals/websocket/{target}",
                header=[f"Authorization: token {token}"], suppress_origin=True, timeout=30,
                skip_utf8_validation=True)
            while True:
                m = json.loads(ws.recv())
                if m[0] == "stdout" and m[1]:
                    break
            ws.send(json.dumps(["stdin", "yes\r"]))
            t0 = pc()
            ws.settimeout(5)
            while not stop_ev.is_set():
                m = json.loads(ws.recv())
                if m[0] == "stdout":
                    n += len(m[1])
                    progress.value = n
                elif m[0] == "disconnect":
                    break
            el = pc() - t0
            ws.send(json.dumps(["stdin", "\x03"]))
            ws.abort()
        q.put({"bytes": n, "seconds": el, "MBps": n / 1e6 / el if el else 0.0})
    except BaseException as e:  # noqa: BLE001
        q.put({"error": repr(e), "bytes": n})


class Flood:
    """A child process consuming a flooding session (keeps the GIL out of the way)."""

    def __init__(self, kind, srv, target):
        ctx = mp.get_context("spawn")
        self.q = ctx.Queue()
        self.stop_ev = ctx.Event()
        self.progress = ctx.Value("q", 0, lock=False)
        self.proc = ctx.Process(target=_flood_consumer, daemon=True,
                                args=(kind, srv.port, srv.token, target, self.q,
                                      self.stop_ev, self.progress))

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
        self.stop_ev.set()
        res = self._result(30)
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        return res


def t_flood_lab(L: Labkernel, P, srv):
    fl_client = L.new_client()
    fsid = L.create(fl_client)
    flood = Flood("labkernel", srv, fsid)
    sid = reader = None
    try:
        sid, reader, send, sc = lab_echo_session(L)
        flood.start()
        lat, fails = echo_run(reader, send, P["flood_keys"], P["flood_warm"], P["key_gap"])
        fres = flood.stop()
    finally:
        if flood.proc.is_alive():
            flood.stop()
        _quiet(L.destroy, fsid, fl_client)
        if sid:
            _quiet(L.destroy, sid)
        if reader:
            reader.join(10)
    out = summarize(lat)
    out.update(lost=fails, flood=fres)
    return out


def t_flood_lab_noreader(L: Labkernel, P, srv):
    c = L.new_client()
    fsid = L.create(c)
    sid = reader = None
    try:
        c.command(fsid, "yes")          # nobody ever reads this session's output
        deadline = pc() + 30
        while True:
            st, s = srv.http.request("GET", f"api/labs/session/{fsid}")
            if st == 200 and s.get("outputOffset", 0) > 2_000_000:
                break
            if pc() > deadline:
                raise RuntimeError(f"unread flood did not start: {st} {s!r}")
            time.sleep(0.1)
        sid, reader, send, sc = lab_echo_session(L)
        st, s0 = srv.http.request("GET", f"api/labs/session/{fsid}")
        t0 = pc()
        lat, fails = echo_run(reader, send, P["flood_keys"], P["flood_warm"], P["key_gap"])
        st, s1 = srv.http.request("GET", f"api/labs/session/{fsid}")
        el = pc() - t0
    finally:
        _quiet(L.destroy, fsid, c)
        if sid:
            _quiet(L.destroy, sid)
        if reader:
            reader.join(10)
    out = summarize(lat)
    out.update(lost=fails, flood_ingest_MBps=(s1["outputOffset"] - s0["outputOffset"]) / 1e6 / el)
    return out


def t_flood_term(T: Terminado, P, srv):
    fname = T.create()
    flood = Flood("terminado", srv, fname)
    name = reader = ws = None
    try:
        name, reader, send, ws = term_echo_session(T)
        flood.start()
        lat, fails = echo_run(reader, send, P["flood_keys"], P["flood_warm"], P["key_gap"])
        fres = flood.stop()
    finally:
        if flood.proc.is_alive():
            flood.stop()
        _quiet(T.destroy, fname)
        if name:
            _quiet(T.destroy, name)
        if reader:
            reader.join(5)
        if ws:
            T.close_ws(ws)
    out = summarize(lat)
    out.update(lost=fails, flood=fres)
    return out


# ----------------------------------------------------------------------------------
# Table
# ----------------------------------------------------------------------------------
def _get(res, key, path):
    r = res.get(key)
    if not isinstance(r, dict) or "error" in r:
        return None
    for p in path:
        r = r.get(p) if isinstance(r, dict) else None
    if not isinstance(r, (int, float)) or (isinstance(r, float) and math.isnan(r)):
        return None
    return r


# (row id, label, result key, path, target text, check(lab, term) -> bool)
ROWS = [
    ("create_first_byte_ms", "create -> first prompt byte (ms, median)", "create", ["median_ms"],
     "<= terminado", lambda a, b: b is not None and a <= b),
    ("echo_p50_ms", "echo round trip p50 (ms)", "echo", ["p50"],
     "<= 0.6 ms", lambda a, b: a <= 0.6),
    ("echo_p99_ms", "echo round trip p99 (ms)", "echo", ["p99"],
     "<= 1.5 ms", lambda a, b: a <= 1.5),
    ("throughput_MBps", "output throughput (MB/s, median)", "throughput", ["MBps"],
     ">= 10x terminado", lambda a, b: b is not None and a >= 10 * b),
    ("idle_requests", "idle client: HTTP requests (L) / WS msgs (T) in {idle}", "idle",
     ["count"],
     "<= 1 (1 per 25 s)", lambda a, b: a <= 1),
    ("rss_growth_MB", "server RSS growth, {rss_n} sessions (MB)", "rss", ["growth_MB"],
     "<= terminado", lambda a, b: b is not None and a <= b),
    ("flood_echo_p50_ms", "echo p50 while another session floods (ms)", "flood", ["p50"],
     "", None),
    ("flood_echo_p95_ms", "echo p95 while another session floods (ms)", "flood", ["p95"],
     "<= 5 ms", lambda a, b: a <= 5),
    ("flood_noreader_echo_p95_ms", "  same, flood with no reader attached (p95)",
     "flood_noreader", ["p95"], "<= 5 ms", lambda a, b: a <= 5),
]


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


def build_table(results, P):
    rows = []
    for rid, label, key, path, target, check in ROWS:
        label = label.format(idle=f"{P['idle_s']:g} s", rss_n=P["rss_n"])
        a = _get(results["labkernel"], key, path)
        b = _get(results["terminado"], key, path)
        ratio = (a / b) if (a is not None and b) else None
        met = None
        if check is not None and a is not None:
            try:
                met = bool(check(a, b))
            except TypeError:
                met = None
        rows.append({"id": rid, "metric": label, "labkernel": a, "terminado": b,
                     "ratio": ratio, "target": target,
                     "met": met})
    return rows


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


def render_table(rows) -> str:
    head = ["metric", "labkernel", "terminado", "ratio L/T", "target", "met"]
    body = []
    for r in rows:
        met = "" if not r["target"] else ("n/a" if r["met"] is None
                                          else ("met" if r["met"] else "NOT met"))
        body.append([r["metric"], fmt(r["labkernel"]), fmt(r["terminado"]),
                     (fmt(r["ratio"]) + "x") if r["ratio"] is not None else "-",
                     r["target"] or "-", met or "-"])
    w = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(  # noqa: E731
        c.ljust(w[i]) if i == 0 else c.rjust(w[i]) if i < 4 else c.ljust(w[i])
        for i, c in enumerate(cells)) + " |"
    sep = "|" + "|".join("-" * (x + 2) for x in w) + "|"
    return "\n".join([line(head), sep] + [line(b) for b in body])


def details(results) -> str:
    """Secondary figures: where the time goes."""
    out = []
    L, T = results["labkernel"], results["terminado"]

    def g(res, key, *path):
        return _get(res, key, list(path))

    for nm, res in (("labkernel", L), ("terminado", T)):
        parts = []
        v = g(res, "create", "create_request_median_ms")
        if v is not None:
            parts.append(f"create request {fmt(v)} ms")
        v = g(res, "create", "ws_connected_median_ms")
        if v is not None:
            parts.append(f"websocket open at {fmt(v)} ms")
        e = res.get("echo") if isinstance(res.get("echo"), dict) else {}
        if "p50" in e:
            parts.append(f"echo p90 {fmt(e['p90'])} / max {fmt(e['max'])} ms, "
                         f"server CPU {fmt(e['server_cpu_ms_per_key'])} ms/key")
        if isinstance(e.get("back_to_back"), dict):
            b = e["back_to_back"]
            parts.append(f"echo with keys back to back (no pause): p50 {fmt(b['p50'])} / "
                         f"p99 {fmt(b['p99'])} ms")
        tp = res.get("throughput") if isinstance(res.get("throughput"), dict) else {}
        if tp.get("runs"):
            r0 = tp["runs"][0]
            per = r0.get("avg_answer_bytes") or r0.get("avg_message_bytes")
            unit = "answer" if "avg_answer_bytes" in r0 else "message"
            parts.append(f"throughput: {fmt(per / 1024)} KiB/{unit}, server CPU "
                         f"{fmt(r0['server_cpu_s'] * 1e3 / (r0['bytes'] / 1e6))} ms/MB")
        fl = res.get("flood") if isinstance(res.get("flood"), dict) else {}
        if isinstance(fl.get("flood"), dict) and "MBps" in fl["flood"]:
            parts.append(f"flood consumed at {fmt(fl['flood']['MBps'])} MB/s during echo")
        fn = res.get("flood_noreader") if isinstance(res.get("flood_noreader"), dict) else {}
        if "flood_ingest_MBps" in fn:
            parts.append(f"unread flood ingested at {fmt(fn['flood_ingest_MBps'])} MB/s")
        rs = res.get("rss") if isinstance(res.get("rss"), dict) else {}
        if "rss_before_MB" in rs:
            parts.append(f"RSS {fmt(rs['rss_before_MB'])} -> {fmt(rs['rss_with_sessions_MB'])}"
                         f" -> {fmt(rs['rss_after_cleanup_MB'])} MB after cleanup "
                         f"({rs['attached']}/{rs['sessions']} attached)")
        if "growth_by_round_MB" in rs:
            parts.append("RSS growth by round (order L,T then T,L): "
                         + ", ".join(fmt(g) for g in rs["growth_by_round_MB"]) + " MB")
        idle = res.get("idle") if isinstance(res.get("idle"), dict) else {}
        if "count" in idle:
            if nm == "terminado":
                parts.append(f"idle: {idle['received']} received + {idle['sent']} sent WS "
                             f"messages on 1 open connection")
            else:
                parts.append(f"idle: {idle['count']} HTTP request(s): {idle['requests']}")
        errs = {k: v["error"] for k, v in res.items() if isinstance(v, dict) and "error" in v}
        for k, v in errs.items():
            parts.append(f"{k}: ERROR {v}")
        if parts:
            out.append(f"{nm}:\n  - " + "\n  - ".join(parts))
    return "\n".join(out)


# ----------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------
def warm_up(adapters, srv: Server, P) -> None:
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
    for name in ("labkernel", "terminado"):
        if name in adapters:
            (t_echo_lab if name == "labkernel" else t_echo_term)(adapters[name], wp, srv)
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


def probe_labkernel(srv: Server):
    try:
        import labkernel.client  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return None, f"cannot import labkernel.client: {e!r}"
    try:
        st, body = Http(srv.port, None).request("GET", "health", timeout=10)
    except OSError as e:
        return None, f"GET /bench/health failed: {e!r}"
    if st != 200:
        return None, f"GET /bench/health -> {st} (is the labkernel extension loaded?)"
    try:
        L = Labkernel(srv)
        sid = L.create()
        L.destroy(sid)
    except Exception as e:  # noqa: BLE001
        return None, f"POST /bench/api/labs/start failed: {e!r}"
    return L, None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts, fast smoke run")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--only", choices=["labkernel", "terminado"],
                    help="measure one transport only")
    ap.add_argument("--key-gap-ms", type=float, default=10.0,
                    help="pause between timed keystrokes (default 10 ms)")
    ap.add_argument("--keep-home", action="store_true",
                    help="run the shells with the real HOME (and ~/.bashrc)")
    args = ap.parse_args(argv)
    P = dict(QUICK if args.quick else FULL)
    P["key_gap"] = args.key_gap_ms / 1000.0

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = tempfile.mkdtemp(prefix="labkernel-bench-")
    srv = Server(tmp, clean_home=not args.keep_home)
    results = {"labkernel": {}, "terminado": {}}
    reference: dict = {}
    adapters = {}
    meta = {"mode": "quick" if args.quick else "full", "params": P,
            "python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    rc = 0
    t_start = pc()
    try:
        srv.start()
        meta["server_ready_s"] = srv.wait_ready()
        log(f"server ready in {meta['server_ready_s']:.2f} s")
        if args.only != "labkernel":
            adapters["terminado"] = Terminado(srv)
        if args.only != "terminado":
            L, why = probe_labkernel(srv)
            if L is None:
                log(f"labkernel unavailable: {why}")
                results["labkernel"]["unavailable"] = why
            else:
                adapters["labkernel"] = L
                import labkernel
                meta["labkernel_version"] = getattr(labkernel, "__version__", None)
    except BaseException:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    # (key, title, labkernel fn, terminado fn, rounds: interleave L/T one sample at a
    # time, alternating who goes first, then merge - for the short repeated figures)
    tests = [
        ("create", "create -> first byte", t_create_lab, t_create_term,
         ("create_n", merge_create)),
        ("echo", "keystroke echo", t_echo_lab, t_echo_term, None),
        ("throughput", "throughput", t_tp_lab, t_tp_term, ("tp_reps", merge_tp)),
        ("idle", "idle client", t_idle_lab, t_idle_term, None),
        ("rss", "RSS with attached sessions", t_rss_lab, t_rss_term,
         ("rss_rounds", merge_rss)),
        ("flood", "echo under flood", t_flood_lab, t_flood_term, None),
        ("flood_noreader", "echo under unread flood", t_flood_lab_noreader, None, None),
    ]
    try:
        log("warm-up (server GC, first-session imports) ...")
        t0 = pc()
        warm_up(adapters, srv, P)
        log(f"warm-up done in {pc() - t0:.1f} s")
        log("reference: raw PTY ceiling, request floor ...")
        reference["pty_ceiling"] = ref_pty_ceiling(P)
        reference["request_floor"] = ref_request_floor(srv, P)
        for key, title, flab, fterm, rounds in tests:
            fns = [(t, f) for t, f in (("labkernel", flab), ("terminado", fterm))
                   if f is not None and t in adapters]
            if rounds is None:
                schedule = [[(t, f, P)] for t, f in fns]
            else:
                count_key, _merge = rounds
                p1 = dict(P, **{count_key: 1})
                if key == "rss":
                    # The first N sessions in a fresh server grow the heap and the
                    # object pools to a peak that later rounds reuse, whichever
                    # transport runs first: one unmeasured round of each.
                    log(f"{title}: one unmeasured round of each transport ...")
                    for tname, fn in fns:
                        fn(adapters[tname], p1, srv)
                schedule = [[(t, f, p1) for t, f in (fns if i % 2 == 0 else fns[::-1])]
                            for i in range(P[count_key])]
                log(f"{title}: {P[count_key]} rounds, transports interleaved ...")
            parts: dict = {t: [] for t, _ in fns}
            t0 = pc()
            for step in schedule:
                for tname, fn, pp in step:
                    if rounds is None:
                        log(f"{title}: {tname} ...")
                    if parts[tname] and "error" in parts[tname][-1]:
                        continue
                    try:
                        res = fn(adapters[tname], pp) if key == "create" \
                            else fn(adapters[tname], pp, srv)
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:  # noqa: BLE001
                        log(f"{title}: {tname} FAILED: {e!r}\n{traceback.format_exc()}")
                        res = {"error": repr(e)}
                    parts[tname].append(res)
            for tname, ps in parts.items():
                errs = [p for p in ps if "error" in p]
                res = errs[0] if errs else (ps[0] if rounds is None else rounds[1](ps))
                results[tname][key] = res
                log(f"{title}: {tname} done ({pc() - t0:.1f} s for the figure): "
                    + json.dumps({k: v for k, v in res.items()
                                  if not isinstance(v, (list, dict))}, default=str)[:300])
            if srv.proc.poll() is not None:
                raise RuntimeError("jupyter_server died:\n" + srv.log_tail())
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        rc = 130
    except Exception:  # noqa: BLE001
        log("benchmark aborted:\n" + traceback.format_exc())
        rc = 1
    finally:
        for a in adapters.values():
            _quiet(a.cleanup)
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    meta["elapsed_s"] = pc() - t_start

    rows = build_table(results, P)
    print()
    print(f"labkernel vs terminado ({meta['mode']} run, {meta['cpus']} CPUs, "
          f"Python {meta['python']}, {meta['elapsed_s']:.0f} s)")
    if "unavailable" in results["labkernel"]:
        print(f"labkernel: not measured: {results['labkernel']['unavailable']}")
    print(render_table(rows))
    print()
    if args.quick:
        print(f"(--quick: idle window {P['idle_s']:g} s, {P['rss_n']} sessions for RSS, "
              f"{P['echo_keys']} echo keys, {P['tp_bytes'] / 1e6:g} MB throughput)")
    print(details(results))
    print(render_reference(reference, P))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "table": rows, "results": results,
                       "reference": reference}, f, indent=1,
                      default=str)
        log(f"wrote {args.json}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
