#!/usr/bin/env python
"""What a check costs: one checkout against another, per containment mode, alternating.

    python benchmarks/check_bench.py --other /path/to/other/venv/bin/python
    python benchmarks/check_bench.py --other ... --rounds 20 --modes pidns cgroup

For each mode, one ``jupyter_server`` subprocess per interpreter (this one, and
``--other``, which imports its own checkout's labkernel), each with a session of
a lab whose one step's check is ``test -d .``; then ``--rounds`` rounds, each a
check on one server and then on the other (the order swapped every round, so
that both see the same machine load). Reported per mode and server: the median
and p90 of the ``POST .../check`` round trip as a client sees it, and of the
check's own ``durationMs`` (spawn to exit status, as the server measures it).
Progress goes to stderr, the table (Markdown) to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from start_bench import free_port, pct  # this folder is on sys.path when run as a script

BASE = "/checkbench/"
PROMPT = "bench-prompt$ "
LAB = """title = "Check bench"
[[steps]]
title = "Trivial"
check = "test -d ."
"""


def log(msg: str) -> None:
    print(f"[check_bench] {msg}", file=sys.stderr, flush=True)




class Server:
    """A jupyter_server subprocess of ``python`` with labkernel in ``mode`` and the bench lab."""

    def __init__(self, python: str, mode: str, tmp: Path, extra: dict | None = None):
        self.port, self.token = free_port(), secrets.token_hex(16)
        root = tmp / "root"
        (root / "labs" / "bench").mkdir(parents=True)
        (root / "labs" / "bench" / "lab.toml").write_text(LAB)
        config = tmp / "config"
        config.mkdir()
        (config / "jupyter_server_config.json").write_text(json.dumps({"LabSessionManager": {
            "containment": mode, "shell_command": ["bash", "--norc", "--noprofile", "-i"], **(extra or {})}}))
        env = dict(os.environ, PS1=PROMPT, HISTFILE="/dev/null", JUPYTER_CONFIG_DIR=str(config),
                   JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTER_DATA_DIR=str(tmp / "data"))
        self.log = open(tmp / "server.log", "wb")
        self.proc = subprocess.Popen(
            [python, "-m", "jupyter_server", "--allow-root", "--no-browser", f"--port={self.port}",
             "--ip=127.0.0.1", f"--ServerApp.token={self.token}", f"--ServerApp.base_url={BASE}",
             "--ServerApp.jpserver_extensions={'labkernel': True}", f"--ServerApp.root_dir={root}"],
            env=env, cwd=root, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while True:
            try:
                health = self.call("GET", "health")
                break
            except OSError:
                assert self.proc.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert health["containment"] == mode.partition("-")[0], health
        self.sid = self.call("POST", "api/labs/start", {"labId": "bench"})["sessionId"]
        offset, text = 0, ""
        while PROMPT not in text:
            answer = self.call("GET", f"api/ws/output/{self.sid}?offset={offset}&wait=5")
            text, offset = text + answer["data"], answer["nextOffset"]

    def call(self, method: str, path: str, body: object = None) -> dict:
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{BASE}{path}", data=data, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def check(self) -> tuple[float, float]:
        """One check: (round trip, the check's durationMs), in ms."""
        started = time.perf_counter()
        answer = self.call("POST", f"api/labs/session/{self.sid}/check", {"step": 1})
        took = (time.perf_counter() - started) * 1000
        (result,) = answer["results"]
        assert result["passed"], result
        return took, result["durationMs"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other", required=True, help="the other checkout's Python (its venv's bin/python)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--modes", nargs="+", default=["pidns", "pidns-unshare", "cgroup", "subreaper", "scan"])
    parser.add_argument("--names", nargs=2, default=["this", "other"])
    parser.add_argument("--max-processes", type=int, help="LabSessionManager.max_processes for both servers "
                        "(0: no pids cgroup for scripts and shells to join)")
    args = parser.parse_args()
    extra = {} if args.max_processes is None else {"max_processes": args.max_processes}
    pythons = dict(zip(args.names, [sys.executable, args.other]))
    print("| mode | server | round trip p50 | p90 | check durationMs p50 | p90 |\n|---|---|---|---|---|---|")
    for mode in args.modes:
        with tempfile.TemporaryDirectory(prefix="check-bench-") as tmp:
            servers = {name: Server(python, mode, Path(tmp) / name, extra) for name, python in pythons.items()}
            try:
                results: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
                for name in servers:  # one unmeasured check each
                    servers[name].check()
                for i in range(args.rounds):
                    order = list(servers) if i % 2 == 0 else list(reversed(servers))
                    for name in order:
                        results[name].append(servers[name].check())
                log(f"{mode}: {args.rounds} rounds done")
                for name, xs in results.items():
                    trips, durations = [x[0] for x in xs], [x[1] for x in xs]
                    print(f"| {mode} | {name} | {statistics.median(trips):.1f} | {pct(trips, 90):.1f} | "
                          f"{statistics.median(durations):.1f} | {pct(durations, 90):.1f} |", flush=True)
            finally:
                for server in servers.values():
                    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
