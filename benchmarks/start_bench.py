#!/usr/bin/env python
"""Start time of labs: start -> first prompt byte, with and without a warm pool.

Run from the repository root (needs ``pip install -e ".[bench]"``):

    python benchmarks/start_bench.py            # about two minutes
    python benchmarks/start_bench.py --quick    # fewer samples

One real ``jupyter_server`` subprocess with labkernel and jupyter_server_terminals,
and three labs whose hidden setup takes 2 s (``sleep 2``): ``slow`` (no pool),
``pooled`` (``pool = 2``) and ``crowd`` (``pool = 5``). Measured, in one run:

1. ``slow``: start -> first prompt byte, one learner at a time (the setup's cost);
2. ``pooled``: the same with the pool refilled between starts (what a learner
   arriving at a warm server sees);
3. ``crowd``: 10 learners starting at the same moment with a pool of 5;
4. the plain ``shell`` lab against a jupyter_server_terminals terminal
   (``POST /api/terminals``, WebSocket, first ``stdout``), alternating, so both
   see the same machine load.

Target: a pooled start <= 25 ms p50, and no slower than a terminado terminal.
Progress goes to stderr, the table (Markdown) to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request

# This checkout's labkernel, installed or not.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from labkernel.clients.localserver import free_port  # noqa: E402

BASE = "/startbench/"
ENDED = {"exited", "stopped", "expired", "failed"}
SETUP = "sleep 2"


def log(msg: str) -> None:
    print(f"[start_bench] {msg}", file=sys.stderr, flush=True)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


LABS = {
    "slow": 0,
    "pooled": 2,
    "crowd": 5,
}


class Server:
    """A jupyter_server subprocess with labkernel, terminals, and the benchmark's labs."""

    def __init__(self, tmp: str):
        self.tmp = tmp
        self.port = free_port()
        self.token = secrets.token_hex(24)
        self.url = f"http://127.0.0.1:{self.port}{BASE}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        root = os.path.join(self.tmp, "root")
        home = os.path.join(self.tmp, "home")
        for d in ("config", "runtime", "data", "root", "home"):
            os.makedirs(os.path.join(self.tmp, d), exist_ok=True)
        for name, pool in LABS.items():
            folder = os.path.join(root, "labs", name)
            os.makedirs(folder)
            with open(os.path.join(folder, "lab.toml"), "w") as f:
                f.write(textwrap.dedent(f"""\
                    title = "{name}"
                    setup = "{SETUP}"
                    pool = {pool}
                    [[steps]]
                    title = "Anything"
                    check = "true"
                """))
        env = dict(os.environ, JUPYTER_CONFIG_DIR=os.path.join(self.tmp, "config"),
                   JUPYTER_RUNTIME_DIR=os.path.join(self.tmp, "runtime"),
                   JUPYTER_DATA_DIR=os.path.join(self.tmp, "data"), JUPYTER_PLATFORM_DIRS="0",
                   SHELL="/bin/bash", HOME=home, HISTFILE="/dev/null", PYTHONUNBUFFERED="1")
        env.pop("JUPYTER_TOKEN", None)
        cmd = [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
               f"--port={self.port}", "--ip=127.0.0.1", "--port-retries=0",
               f"--ServerApp.token={self.token}", f"--ServerApp.base_url={BASE}",
               f"--ServerApp.root_dir={root}",
               "--ServerApp.jpserver_extensions={'labkernel': True, 'jupyter_server_terminals': True}",
               "--LabSessionManager.max_sessions=50", "--LabSessionManager.pool_max=10"]
        self.logf = open(os.path.join(self.tmp, "server.log"), "wb")
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}api/status?token={self.token}", timeout=5):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("the server exited; see " + self.logf.name) from None
                time.sleep(0.2)
        raise RuntimeError("the server did not start in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.logf.close()


def lab_start(client, lab_id: str) -> float:
    """Seconds from the start request to the first byte of output (the prompt)."""
    t0 = time.perf_counter()
    sid = client.start(lab_id)["sessionId"]
    offset = 0
    while True:
        answer = client.read(sid, offset, wait=25)
        if answer["data"]:
            break
        offset = answer["nextOffset"]
        if answer["status"] in ENDED:
            raise RuntimeError(f"lab {lab_id} session {sid} ended: {answer}")
    elapsed = time.perf_counter() - t0
    client.stop(sid)
    return elapsed


def terminado_start(srv: Server) -> float:
    import websocket
    headers = {"Authorization": f"token {srv.token}", "Content-Type": "application/json"}
    t0 = time.perf_counter()
    req = urllib.request.Request(f"{srv.url}api/terminals", data=b"{}", headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        name = json.load(r)["name"]
    ws = websocket.create_connection(f"ws://127.0.0.1:{srv.port}{BASE}terminals/websocket/{name}",
                                     header=[f"Authorization: token {srv.token}"], suppress_origin=True,
                                     timeout=30)
    while True:
        message = json.loads(ws.recv())
        if message[0] == "stdout" and message[1]:
            break
    elapsed = time.perf_counter() - t0
    ws.close()
    req = urllib.request.Request(f"{srv.url}api/terminals/{name}", headers=headers, method="DELETE")
    urllib.request.urlopen(req, timeout=30).close()
    return elapsed


def wait_pool(client, lab_id: str, pause: float) -> None:
    # The pool is not visible through the API (pooled sessions are not listed):
    # wait for a refill's setup to have finished, with a margin.
    time.sleep(pause)


def ms(xs: list[float]) -> list[float]:
    return [x * 1000 for x in xs]


def row(name: str, xs: list[float]) -> str:
    v = ms(xs)
    return (f"| {name} | {len(v)} | {statistics.median(v):.1f} | {pct(v, 90):.1f} | "
            f"{min(v):.1f} | {max(v):.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--json", help="write the raw samples (seconds) to this file")
    args = parser.parse_args()
    n = 4 if args.quick else 10
    from labkernel.client import LabClient

    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="start-bench-") as tmp:
        srv = Server(tmp)
        log(f"starting jupyter_server on port {srv.port}")
        srv.start()
        try:
            client = LabClient(srv.url, srv.token)
            client.labs()  # the catalog, read at start: pools begin filling
            log("warming up both transports (unmeasured)")
            lab_start(client, "shell")
            terminado_start(srv)

            log(f"shell lab vs terminado, alternating, {n} each")
            results["shell"], results["terminado"] = [], []
            for _ in range(n):
                results["shell"].append(lab_start(client, "shell"))
                results["terminado"].append(terminado_start(srv))

            log(f"lab with a 2 s setup, no pool, {min(n, 5)} starts")
            results["slow"] = [lab_start(client, "slow") for _ in range(min(n, 5))]

            log(f"lab with a 2 s setup, pool of 2, {n} starts with the pool refilled between them")
            wait_pool(client, "pooled", 3.0)
            results["pooled"] = []
            for _ in range(n):
                results["pooled"].append(lab_start(client, "pooled"))
                results.setdefault("terminado (pooled run)", []).append(terminado_start(srv))
                wait_pool(client, "pooled", 3.0)

            log("10 learners at once, pool of 5")
            wait_pool(client, "crowd", 3.0)
            crowd: list[float] = []
            lock = threading.Lock()
            barrier = threading.Barrier(10)

            def learner() -> None:
                own = LabClient(srv.url, srv.token)
                # A learner's page has loaded the catalog: its connection is open.
                own.labs()
                barrier.wait()
                t = lab_start(own, "crowd")
                with lock:
                    crowd.append(t)

            threads = [threading.Thread(target=learner) for _ in range(10)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            results["crowd"] = crowd
        finally:
            srv.stop()

    pooled_p50 = statistics.median(ms(results["pooled"]))
    term_p50 = statistics.median(ms(results["terminado (pooled run)"]))
    crowd = sorted(ms(results["crowd"]))
    print("Start -> first prompt byte, ms (one server, one run; setups take 2 s)\n")
    print("| case | n | p50 | p90 | min | max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(row("`shell` lab (no setup)", results["shell"]))
    print(row("terminado terminal, alternating with it", results["terminado"]))
    print(row("2 s setup, no pool", results["slow"]))
    print(row("2 s setup, pool of 2 (refilled)", results["pooled"]))
    print(row("terminado terminal, alternating with it", results["terminado (pooled run)"]))
    print(row("10 learners at once, pool of 5", results["crowd"]))
    print()
    print(f"10 at once, pool of 5: fastest five p50 {statistics.median(crowd[:5]):.1f} ms, "
          f"slowest five p50 {statistics.median(crowd[5:]):.1f} ms")
    shell_ratio = statistics.median(ms(results["shell"])) / statistics.median(ms(results["terminado"]))
    print(f"shell lab / terminado p50: {shell_ratio:.2f}")
    print(f"pooled start p50 {pooled_p50:.1f} ms (target <= 25), terminado p50 {term_p50:.1f} ms "
          f"(ratio {pooled_p50 / term_p50:.2f}; target <= 1)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
