"""What one learner costs a JupyterHub: the single-user server's memory and idle CPU.

On JupyterHub each learner has a Jupyter server of their own; labkernel adds a lab
session (a shell on a PTY, inside its containment) and a page that long-polls it.
No hub is needed to measure that: one ``jupyter_server`` with labkernel, as
``jupyterhub-singleuser`` runs it, and clients that poll as the lab page does
(``GET api/ws/output/{id}?offset=N&wait=25&clientId=…``, one per learner, each on a
keep-alive connection of its own, from threads of this process, whose CPU is not
counted). Phases, each after a settle and measured over ``--rounds`` windows of
``--seconds``:

1. the server alone, idle (what any learner's server costs before labkernel does anything);
2. one learner: one session of ``--lab`` and its page polling;
3. ``--sessions`` sessions in the same server, each polled (a shared server, or
   a learner with many tabs): what one more session adds;
4. with ``--kernel``: a Python kernel as the welcome notebook starts one, idle.

Memory: the server's RSS and USS (its own pages), and the PSS of the processes of
the sessions (PSS shares the pages of bash and libc fairly among them, so it adds
up to what the machine pays). CPU: user + system time of the server and all its
descendants over the window, as % of one core, medians of the windows.

    python benchmarks/hub_cost.py                    # ~3 minutes
    python benchmarks/hub_cost.py --sessions 20 --seconds 30 --rounds 3 --kernel
    python benchmarks/hub_cost.py --containment subreaper   # what Z2JH's default pod gets

The table goes to stdout (progress to stderr), the figures as JSON to
``benchmarks/results/hub_cost.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import psutil

from labkernel.clients.localserver import JupyterServer

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Client:
    """JSON over one keep-alive HTTP connection to the server, with its token."""

    def __init__(self, server: JupyterServer):
        url = urllib.parse.urlsplit(server.url)
        self.base = url.path
        self.token = server.token
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body) if body is not None else ("" if method == "POST" else None)
        self.conn.request(method, self.base + path, body=data,
                          headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        answer = self.conn.getresponse()
        raw = answer.read()
        return answer.status, json.loads(raw) if raw else None

    def close(self) -> None:
        self.conn.close()


class Poller(threading.Thread):
    """A lab page's reader loop: long polls from the next offset, for ever."""

    def __init__(self, server: JupyterServer, session_id: str, wait: float):
        super().__init__(daemon=True)
        self.client = Client(server)
        self.session_id = session_id
        self.wait = wait
        self.client_id = os.urandom(8).hex()
        self.polls = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        offset = 0
        while not self.stopped.is_set():
            try:
                status, answer = self.client.call(
                    "GET", f"api/ws/output/{self.session_id}?offset={offset}&wait={self.wait:g}"
                    f"&clientId={self.client_id}")
            except OSError:
                if self.stopped.is_set():
                    return
                time.sleep(1)
                continue
            self.polls += 1
            if status == 200:
                offset = answer["nextOffset"]
            else:
                time.sleep(1)


def tree(pid: int) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """CPU time of every thread of ``procs``, from the scheduler's nanosecond count
    (``/proc/PID/task/TID/schedstat``): an idle server uses less than the 10 ms
    ticks of ``cpu_times`` would show over a window."""
    total = 0
    for proc in procs:
        try:
            for task in os.listdir(f"/proc/{proc.pid}/task"):
                with open(f"/proc/{proc.pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
        except (OSError, ValueError):
            pass  # a process or thread that ended meanwhile
    return total / 1e9


def is_kernel(proc: psutil.Process) -> bool:
    try:
        return "ipykernel" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def memory(server_pid: int) -> dict[str, float]:
    """MiB: the server's RSS and USS, the PSS of the sessions' processes and of kernels."""
    server = psutil.Process(server_pid)
    info = server.memory_full_info()
    sessions = kernels = 0.0
    count = 0
    for proc in server.children(recursive=True):
        try:
            pss = proc.memory_full_info().pss
        except psutil.Error:
            continue
        if is_kernel(proc) or any(is_kernel(p) for p in proc.parents()):
            kernels += pss
        else:
            sessions += pss
            count += 1
    return {"server_rss": info.rss / MiB, "server_uss": info.uss / MiB, "server_pss": info.pss / MiB,
            "sessions_pss": sessions / MiB, "kernels_pss": kernels / MiB, "session_processes": count}


def idle_cpu(server_pid: int, seconds: float, rounds: int) -> dict[str, Any]:
    """% of one core for the server and every descendant, each window; and the server alone."""
    whole, alone = [], []
    for _ in range(rounds):
        procs = tree(server_pid)
        t0, a0, w0 = time.monotonic(), cpu_seconds(procs[:1]), cpu_seconds(procs)
        time.sleep(seconds)
        procs = [p for p in procs if p.is_running()]
        elapsed = time.monotonic() - t0
        whole.append(100 * (cpu_seconds(procs) - w0) / elapsed)
        alone.append(100 * (cpu_seconds(procs[:1]) - a0) / elapsed)
    return {"cpu_pct": statistics.median(whole), "cpu_pct_windows": whole,
            "server_cpu_pct": statistics.median(alone)}


def measure(name: str, server: JupyterServer, args: argparse.Namespace, pollers: list[Poller]) -> dict[str, Any]:
    log(f"{name}: settling {args.settle:g} s, then {args.rounds} × {args.seconds:g} s")
    time.sleep(args.settle)
    polls0 = sum(p.polls for p in pollers)
    t0 = time.monotonic()
    figures: dict[str, Any] = {"phase": name, **idle_cpu(server.proc.pid, args.seconds, args.rounds)}
    figures["polls_per_min"] = 60 * (sum(p.polls for p in pollers) - polls0) / (time.monotonic() - t0)
    figures.update(memory(server.proc.pid))
    log(f"  {figures}")
    return figures


def start_sessions(client: Client, server: JupyterServer, args: argparse.Namespace, n: int,
                   pollers: list[Poller]) -> None:
    for _ in range(n):
        status, session = client.call("POST", "api/labs/start", {"labId": args.lab})
        assert status == 201, f"start answered {status}: {session}"
        poller = Poller(server, session["sessionId"], args.wait)
        poller.start()
        pollers.append(poller)
    # Every session at its prompt (its setup done) before the phase is measured.
    deadline = time.monotonic() + 120
    for poller in pollers:
        while time.monotonic() < deadline:
            status, model = client.call("GET", f"api/labs/session/{poller.session_id}")
            if model["status"] == "running" and model["outputOffset"] > 0:
                break
            time.sleep(0.2)


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="labkernel-hub-cost-"))
    root, home = tmp / "root", tmp / "home"
    root.mkdir()
    home.mkdir()
    shutil.copytree(REPO / "labs", root / "labs")
    settings: dict[str, Any] = {"containment": args.containment}
    server = JupyterServer(tmp / "server", {"LabSessionManager": settings}, root_dir=root, isolated=True,
                           env={"HOME": str(home)})
    pollers: list[Poller] = []
    results: dict[str, Any] = {"params": vars(args), "phases": []}
    try:
        server.start()
        client = Client(server)
        status, health = client.call("GET", "health")
        results["containment"] = health["containment"]
        log(f"server pid {server.proc.pid}, containment {health['containment']}")
        results["phases"].append(measure("server alone", server, args, pollers))
        start_sessions(client, server, args, 1, pollers)
        results["phases"].append(measure("one learner's lab", server, args, pollers))
        start_sessions(client, server, args, args.sessions - 1, pollers)
        results["phases"].append(measure(f"{args.sessions} sessions", server, args, pollers))
        if args.kernel:
            status, kernel = client.call("POST", "api/kernels", {"name": "python3"})
            assert status == 201, f"kernel start answered {status}: {kernel}"
            time.sleep(5)  # the kernel's own start-up
            results["phases"].append(measure(f"{args.sessions} sessions + a kernel", server, args, pollers))
        client.close()
    finally:
        for poller in pollers:
            poller.stopped.set()
        server.stop()
        for poller in pollers:
            poller.client.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def table(results: dict[str, Any]) -> str:
    phases = results["phases"]
    lines = [f"containment: {results['containment']}; polls wait={results['params']['wait']:g} s; "
             f"CPU: % of one core, median of {results['params']['rounds']} × {results['params']['seconds']:g} s",
             "",
             "| phase | server RSS | server USS | sessions' PSS (processes) | kernels' PSS | CPU, all | CPU, server "
             "| polls/min |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in phases:
        lines.append(f"| {p['phase']} | {p['server_rss']:.1f} MiB | {p['server_uss']:.1f} MiB | "
                     f"{p['sessions_pss']:.1f} MiB ({p['session_processes']}) | {p['kernels_pss']:.1f} MiB | "
                     f"{p['cpu_pct']:.3f} % | {p['server_cpu_pct']:.3f} % | {p['polls_per_min']:.0f} |")
    alone, one, many = phases[0], phases[1], phases[2]
    n = results["params"]["sessions"]
    per = {k: (many[k] - one[k]) / (n - 1) for k in ("server_rss", "server_uss", "sessions_pss", "cpu_pct")}
    lines += ["",
              f"one learner's lab adds: server RSS {one['server_rss'] - alone['server_rss']:+.1f} MiB, "
              f"sessions {one['sessions_pss']:.1f} MiB PSS, CPU {one['cpu_pct'] - alone['cpu_pct']:+.2f} %",
              f"each session from 1 to {n}: server RSS {per['server_rss']:+.2f} MiB (USS {per['server_uss']:+.2f}), "
              f"its processes {per['sessions_pss']:.2f} MiB PSS, CPU {per['cpu_pct']:+.3f} %"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20, help="sessions in the shared-server phase")
    parser.add_argument("--seconds", type=float, default=20, help="length of one CPU window")
    parser.add_argument("--rounds", type=int, default=3, help="CPU windows per phase")
    parser.add_argument("--settle", type=float, default=5, help="seconds before a phase is measured")
    parser.add_argument("--wait", type=float, default=25, help="the polls' wait, as the page asks")
    parser.add_argument("--lab", default="files-and-folders", help="the lab each session runs")
    parser.add_argument("--containment", default="auto", help="LabSessionManager.containment")
    parser.add_argument("--kernel", action="store_true", help="also measure an idle Python kernel")
    args = parser.parse_args()
    results = run(args)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "hub_cost.json").write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
