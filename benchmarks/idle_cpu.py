"""Idle CPU of a JupyterLab page: a focused labkernel Terminal against JupyterLab's own terminal.

The ``idle`` figure of ``browser_bench.py``; this command runs only that figure:

    python benchmarks/idle_cpu.py                     # 4 rounds of 10 s windows
    python benchmarks/idle_cpu.py --rounds 2 --seconds 5

On the page with one labkernel Terminal and one JupyterLab terminal (both at an idle
prompt; the page with four Terminals stays open beside it, idle), each round spends
``--seconds`` with the labkernel terminal focused, with JupyterLab's focused and
with neither, in rotating order, after a short settle each time. Measured per window:

- the CPU time of the page's renderer process and of Chromium's shared ones (browser,
  GPU, network), as % of one core: what the machine pays, compositing and
  rasterising included (the other page's renderer is left out; with it: ``cpu_all_pct``);
- the page's main-thread task time (CDP ``Performance.getMetrics``,
  ``TaskDuration``), style recalculations and layouts per second;
- the CSS animations running in the page (``document.getAnimations()``);
- every request to labkernel's API, of this page and of the page with four.

It measures whatever labkernel is importable: run it with another checkout on
``PYTHONPATH`` to compare versions (each against JupyterLab's terminal of its own run).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional

import psutil


def chromium_cpu() -> dict[int, tuple[float, bool]]:
    """CPU seconds (user + system) of every Chromium process under this one, and whether
    it is a renderer (a page's process)."""
    times: dict[int, tuple[float, bool]] = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if "chrom" in proc.name().lower():
                t = proc.cpu_times()
                times[proc.pid] = (t.user + t.system, "--type=renderer" in proc.cmdline())
        except psutil.Error:
            pass
    return times


def renderer_of(page: Any) -> Optional[int]:
    """The renderer process of ``page``: the one that gets busy while the page spins for 0.5 s
    (pages in browser contexts of their own never share one)."""
    before = chromium_cpu()
    page.evaluate("() => { const t = performance.now(); while (performance.now() - t < 500) {} }")
    after = chromium_cpu()
    busy = [(v[0] - before.get(pid, (0.0, True))[0], pid) for pid, v in after.items() if v[1]]
    used, pid = max(busy, default=(0.0, 0))
    return pid if used > 0.2 else None


def metrics(cdp: Any) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def measure(page: Any, cdp: Any, seconds: float, renderer: Optional[int] = None) -> dict[str, float]:
    """One idle window of ``seconds`` (Playwright's events are handled meanwhile).

    ``cpu_pct``: the browser's processes (browser, GPU, network, …) and ``renderer``,
    the page's, but not the renderers of other pages (all of them if it is None);
    ``cpu_all_pct``: every Chromium process."""
    cpu0, m0, t0 = chromium_cpu(), metrics(cdp), time.monotonic()
    page.wait_for_timeout(seconds * 1000)
    cpu1, m1, t1 = chromium_cpu(), metrics(cdp), time.monotonic()
    wall = t1 - t0
    used = {pid: v[0] - cpu0.get(pid, (0.0, v[1]))[0] for pid, v in cpu1.items()}
    mine = sum(u for pid, u in used.items() if renderer is None or not cpu1[pid][1] or pid == renderer)
    return {
        "seconds": wall,
        "cpu_pct": 100 * mine / wall,
        "cpu_all_pct": 100 * sum(used.values()) / wall,
        "task_ms_per_s": 1000 * (m1["TaskDuration"] - m0["TaskDuration"]) / wall,
        "recalc_per_s": (m1["RecalcStyleCount"] - m0["RecalcStyleCount"]) / wall,
        "layout_per_s": (m1["LayoutCount"] - m0["LayoutCount"]) / wall,
        "animations": page.evaluate("document.getAnimations().filter(a => a.playState === 'running').length"),
    }


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import browser_bench

    argv = sys.argv[1:]
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    translated = ["--figures", "idle"]
    it = iter(argv)
    for arg in it:
        if arg == "--rounds":
            translated += ["--idle-rounds", next(it)]
        elif arg == "--seconds":
            translated += ["--idle-seconds", next(it)]
        elif arg == "--settle":
            translated += ["--idle-settle", next(it)]
        else:
            translated.append(arg)
    return browser_bench.main(translated)


if __name__ == "__main__":
    sys.exit(main())
