"""The figures: each scenario written once, run for every transport.

A scenario is ``fn(T, P, srv) -> dict``: T a transport (``bench_transports``), P the
run's parameters, srv the ``Server``. ``SCENARIOS`` lists them in the order they
run. The two reference figures (no transport) are here too: they measure the
same command and the same request as the scenarios do.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

# this folder is on sys.path when run as a script
from bench_server import Server, log, pc, pct
from bench_transports import Reader, _quiet, drain, echo_run, make_transport, summarize

MARK = "END_MARK"                      # what the throughput command prints last
MARK_CMD = "EN''D_MARK"                # how it is typed (the echo never contains MARK)


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


# The child process is spawned, not forked: it imports this module by name (the
# parent's sys.path goes with it) and rebuilds the transport from T.spec, a plain
# tuple: so this function stays at module level, and no transport is pickled.
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
# The scenarios, in the order they run
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


# ----------------------------------------------------------------------------------
# References: no transport involved
# ----------------------------------------------------------------------------------
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
