"""Spawn cost of each containment mode: session created → first byte of its prompt.

    python benchmarks/spawn.py [--rounds 20]

Sessions are started directly (no HTTP), one mode after the other in each round so
that the machine's noise falls on every mode alike; the figure is the median, with
the 10th and 90th percentiles, how long the synchronous spawn holds the event loop
(fork to exec, the child's cgroup join included), and the median time a stop takes (SIGHUP to all
gone; bash exits on SIGHUP), plus the process limit's cost in the same run
(``max_processes=0`` turns it off). Modes this machine lacks are left out, and said so.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time

from labkernel import containment
from labkernel.labs.model import Lab
from labkernel.session import Session, SessionSettings

SETTINGS = SessionSettings(buffer_size=1 << 20, read_budget=256 * 1024, attach_timeout=35.0,
                           kill_grace=1.0, kill_timeout=5.0, input_limit=1 << 20, max_clients=64)
ARGV = ["bash", "--norc", "--noprofile", "-i"]


async def one(mode: str, limit: int, log: logging.Logger) -> tuple[float, float, float]:
    chosen = containment.Containment(mode, max_processes=limit, log=log)
    session = Session(Lab(id="shell", title="Shell"), rows=24, cols=80, lifetime=60,
                      settings=SETTINGS, log=log)
    env = dict(os.environ, PS1="lab-prompt$ ", HISTFILE="/dev/null", TERM="xterm-256color")
    started = time.perf_counter()
    session.start(list(ARGV), env, os.getcwd(), chosen.enclose(session.id))
    blocked = time.perf_counter() - started  # the spawn is synchronous: the loop waits for exec
    while not session.output.end:  # the first byte bash writes is its prompt's
        await asyncio.sleep(0.0005)
    took = time.perf_counter() - started
    started = time.perf_counter()
    await session.stop()
    return took, time.perf_counter() - started, blocked


async def main(rounds: int) -> None:
    log = logging.getLogger("spawn")
    modes = [*containment.MODES[:1], "pidns-unshare", *containment.MODES[1:]]
    if containment.pidns_prefix() == containment.pidns_prefix("unshare"):
        modes.remove("pidns-unshare")  # "pidns" is unshare's already
    variants = [(mode, 512) for mode in modes if containment.available(mode)]
    variants.append(("scan", 0))
    for mode in containment.MODES:
        if not containment.available(mode):
            print(f"{mode}: not available here", file=sys.stderr)
    times: dict[tuple[str, int], list[tuple[float, float, float]]] = {v: [] for v in variants}
    for _ in range(2):  # warm up: page cache, the probes
        for mode, limit in variants:
            await one(mode, limit, log)
    for _ in range(rounds):
        for variant in variants:
            times[variant].append(await one(*variant, log))
    print(f"| mode | process limit | start ms: median | p10 | p90 | loop blocked ms | stop ms |"
          f"  (n={rounds}, {os.uname().release})")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (mode, limit), values in times.items():
        starts = [start for start, _, _ in values]
        deciles = statistics.quantiles(starts, n=10)
        detail = containment.Containment(mode, max_processes=limit, log=log).describe()
        kind = "pids cgroup" if limit and containment.cgroup_dirs().pids else (limit or "off")
        print(f"| {detail.split(',')[0]} | {kind} | {statistics.median(starts) * 1000:.1f} "
              f"| {deciles[0] * 1000:.1f} | {deciles[-1] * 1000:.1f} "
              f"| {statistics.median(blocked for _, _, blocked in values) * 1000:.1f} "
              f"| {statistics.median(stop for _, stop, _ in values) * 1000:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    asyncio.run(main(parser.parse_args().rounds))
