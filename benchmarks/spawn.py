"""Spawn cost of each containment mode: session created → first byte of its prompt.

    python benchmarks/spawn.py [--rounds 20] [--modes sandbox,pidns,pidns-unshare]

Sessions are started directly (no HTTP), one mode after the other in each round so
that the machine's noise falls on every mode alike; the figure is the median, with
the 10th and 90th percentiles, how long the synchronous spawn holds the event loop
(fork to exec, the child's cgroup join included), and the median time a stop takes (SIGHUP to all
gone; bash exits on SIGHUP), plus the process limit's cost in the same run
(``max_processes=0`` turns it off). Modes this machine lacks are left out, and said so.

The memory a mode costs per session is that of the processes it puts between the
server and the program (bwrap's two, unshare and its sh, ...), measured at the
first prompt: their RSS, and their PSS (RSS with shared pages divided among those
who share them: what one more session adds), medians in MiB. The program (bash)
is the same in every mode and left out.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time

import psutil

from labkernel import containment
from labkernel.labs.model import Lab
from labkernel.session import Session, SessionSettings

SETTINGS = SessionSettings(buffer_size=1 << 20, read_budget=256 * 1024, attach_timeout=35.0,
                           kill_grace=1.0, kill_timeout=5.0, input_limit=1 << 20, max_clients=64)
ARGV = ["bash", "--norc", "--noprofile", "-i"]


def wrappers_memory(leader: int) -> tuple[float, float]:
    """RSS and PSS (MiB) of the session's processes but its program (and its children)."""
    rss = pss = 0
    try:
        procs = [psutil.Process(leader), *psutil.Process(leader).children(recursive=True)]
        program = {p.pid for p in procs if p.cmdline()[:1] == ARGV[:1]}
        program |= {c.pid for p in procs if p.pid in program for c in p.children(recursive=True)}
    except psutil.Error:
        return 0.0, 0.0
    for proc in procs:
        if proc.pid in program:
            continue
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += info.pss
    return rss / 2**20, pss / 2**20


async def one(mode: str, limit: int, log: logging.Logger) -> tuple[float, float, float, float, float]:
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
    rss, pss = wrappers_memory(session.pid)
    started = time.perf_counter()
    await session.stop()
    stopped = time.perf_counter() - started
    if session.released is not None:  # a sandbox's folder: gone before the next session
        await session.released
    return took, stopped, blocked, rss, pss


async def main(rounds: int, only: list[str]) -> None:
    log = logging.getLogger("spawn")
    pidns = containment.MODES.index("pidns")
    modes = [*containment.MODES[:pidns + 1], "pidns-unshare", *containment.MODES[pidns + 1:]]
    if containment.pidns_prefix() == containment.pidns_prefix("unshare"):
        modes.remove("pidns-unshare")  # "pidns" is unshare's already
    variants = [(mode, 512) for mode in modes if containment.available(mode) and (not only or mode in only)]
    if not only or "scan" in only:
        variants.append(("scan", 0))
    for mode in containment.MODES:
        if not containment.available(mode):
            print(f"{mode}: not available here", file=sys.stderr)
    times: dict[tuple[str, int], list[tuple[float, float, float, float, float]]] = {v: [] for v in variants}
    for _ in range(2):  # warm up: page cache, the probes
        for mode, limit in variants:
            await one(mode, limit, log)
    for _ in range(rounds):
        for variant in variants:
            times[variant].append(await one(*variant, log))
    print(f"| mode | process limit | start ms: median | p10 | p90 | loop blocked ms | stop ms "
          f"| RSS MiB | PSS MiB |  (n={rounds}, {os.uname().release}, uid {os.geteuid()})")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (mode, limit), values in times.items():
        starts = [v[0] for v in values]
        deciles = statistics.quantiles(starts, n=10)
        detail = containment.Containment(mode, max_processes=limit, log=log).describe()
        name = mode if mode.startswith("sandbox") else detail.split(",")[0]
        kind = "pids cgroup" if limit and containment.cgroup_dirs().pids else (limit or "off")
        print(f"| {name} | {kind} | {statistics.median(starts) * 1000:.1f} "
              f"| {deciles[0] * 1000:.1f} | {deciles[-1] * 1000:.1f} "
              f"| {statistics.median(v[2] for v in values) * 1000:.1f} "
              f"| {statistics.median(v[1] for v in values) * 1000:.1f} "
              f"| {statistics.median(v[3] for v in values):.2f} | {statistics.median(v[4] for v in values):.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--modes", default="", help="comma-separated modes (or pidns-unshare) to run; default all")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, [m for m in args.modes.split(",") if m]))
