"""What the scenarios talk to: a reader thread, echo timing, and the transports.

Every scenario is written once against the interface below and run for each
transport: ``PollTransport`` (labkernel, a variant of it, or the floor: the same
REST routes under a prefix) and ``TermTransport`` (terminado over its WebSocket).
Importing this module wraps ``http.client`` to count requests per thread (the
idle-client figure).
"""
from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

# this folder is on sys.path when run as a script
from bench_server import BASE, Http, log, pc, pct

ENDED = {"exited", "stopped", "expired", "failed"}
BIG_READ = 4 * 1024 * 1024             # max= for bulk reads over HTTP
ECHO_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"


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
