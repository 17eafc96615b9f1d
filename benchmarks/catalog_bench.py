"""A catalog of 10,000 small labs: how long ``/health`` and the lab routes take.

    python benchmarks/catalog_bench.py [--labs N] [--rounds R] [--other CHECKOUT]

Builds N labs (a ``lab.toml`` and a step's text each) in a temporary folder, starts a
server on them (``tests/support/serverproc.py``, with ``loop_probe`` for the longest
event-loop callbacks and the garbage collector's pauses) and measures, from outside:

- the first catalog (the server's first walk) and ``/health`` while it runs;
- ``/health``, ``GET api/labs``, a lab's file (a lookup of its id) and a start of an
  unknown id (a 404, which walks the search path once more), one after the other;
- ``/health`` while a client starts unknown ids in a loop for 5 s.

With ``--other``, the same with that checkout's labkernel, alternating, in the same
run (this machine is shared: compare within a run, not across runs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from support.serverproc import ServerProcess  # noqa: E402


def make_labs(folder: Path, n: int) -> None:
    for i in range(n):
        lab = folder / f"lab{i:05d}"
        (lab / "steps").mkdir(parents=True)
        (lab / "steps" / "one.md").write_text(f"Step one of lab {i}.\n")
        (lab / "lab.toml").write_text(f"title = 'Lab {i}'\n[[steps]]\ntitle = 'One'\n"
                                      "text_file = 'steps/one.md'\ncheck = 'true'\n")


class ProbedServer(ServerProcess):
    """A server with ``loop_probe`` loaded too."""

    def config(self, port: int, root: str) -> dict[str, Any]:
        config = super().config(port, root)
        config["ServerApp"]["jpserver_extensions"]["loop_probe"] = True
        return config


def ms_since(start: float) -> float:
    return (time.monotonic() - start) * 1000


class HealthProbe:
    """``GET health`` every 20 ms in a thread, while the ``with`` block runs."""

    def __init__(self, server: ServerProcess):
        self.url, self.times, self._stop = server.url + "health", [], threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            urllib.request.urlopen(self.url, timeout=60).read()
            self.times.append(ms_since(start))
            self._stop.wait(0.02)

    def __enter__(self) -> HealthProbe:
        self._thread = threading.Thread(target=self._run)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def line(self) -> str:
        return f"median {statistics.median(self.times):.1f} ms, max {max(self.times):.0f} ms (n={len(self.times)})"


def loop(server: ServerProcess, action: str) -> dict[str, Any]:
    return server.ok("GET", "probe", "loop", params={"action": action})


def run(name: str, pythonpath: str, labs: Path, rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    with tempfile.TemporaryDirectory(prefix="catalog-bench-") as work:
        server = ProbedServer(Path(work), manager={"lab_path": [str(labs)]},
                              pythonpath=f"{pythonpath}{os.pathsep}{HERE}")
        try:
            loop(server, "start")
            with HealthProbe(server) as during_first:
                start = time.monotonic()
                server.ok("GET", "api", "labs", timeout=600)
                out["first catalog ms"] = ms_since(start)
            out["health during first walk"] = during_first.line()
            out["loop during first walk"] = loop(server, "stop")
            times: dict[str, list[float]] = {"health": [], "catalog": [], "lab file": [], "unknown id": []}
            loop(server, "start")
            for r in range(rounds):
                for what, args in [("health", ("GET", "health")), ("catalog", ("GET", "api", "labs")),
                                   ("lab file", ("GET", "api", "labs", f"lab{r:05d}", "files", "x.png"))]:
                    start = time.monotonic()
                    server.call(*args, timeout=600)
                    times[what].append(ms_since(start))
                start = time.monotonic()
                status, body = server.call("POST", "api", "labs", "start", body={"labId": f"nolab{r}"})
                times["unknown id"].append(ms_since(start))
                out["404 message chars"] = len(body["message"])
                time.sleep(0.05)
            out["one after the other"] = {k: (statistics.median(v), max(v)) for k, v in times.items()}
            out["loop one after the other"] = loop(server, "stop")
            loop(server, "start")
            with HealthProbe(server) as during_404s:
                end = time.monotonic() + 5
                while time.monotonic() < end:
                    server.call("POST", "api", "labs", "start", body={"labId": "nowhere"}, timeout=600)
            out["health during 404 loop"] = during_404s.line()
            out["loop during 404 loop"] = loop(server, "stop")
        finally:
            server.terminate()
    return out


def report(result: dict[str, Any]) -> None:
    print(f"== {result['name']}")
    print(f"  first catalog {result['first catalog ms']:.0f} ms; "
          f"/health meanwhile {result['health during first walk']}")
    for what, (median, worst) in result["one after the other"].items():
        print(f"  {what:11s} median {median:7.1f} ms  max {worst:7.0f} ms")
    print(f"  404 message: {result['404 message chars']} characters")
    print(f"  /health during 5 s of unknown-id starts: {result['health during 404 loop']}")
    for key in ("loop during first walk", "loop one after the other", "loop during 404 loop"):
        w = result[key]
        print(f"  {key}: longest callback {w['max_ms']:.0f} ms (CPU {w['max_cpu_ms']:.0f}), "
              f"over 5 ms: {w['over_5ms']}, longest GC pause {w['gc_max_ms']:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labs", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--other", help="another checkout of labkernel, measured alternately")
    parser.add_argument("--repeat", type=int, default=1, help="alternations")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="catalog-bench-labs-") as folder:
        labs = Path(folder)
        make_labs(labs, args.labs)
        variants = [("this checkout", str(HERE.parent))]
        if args.other:
            variants.append((f"other: {args.other}", args.other))
        for _ in range(args.repeat):
            for name, path in variants:
                report(run(name, path, labs, args.rounds))


if __name__ == "__main__":
    main()
