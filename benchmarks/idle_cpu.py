"""Idle CPU of a JupyterLab page: a focused labkernel Terminal against JupyterLab's own terminal.

One ``jupyter lab``, one Chromium page (set up as ``browser_bench.py`` does): a
notebook showing a labkernel Terminal and, split beside it, a JupyterLab terminal,
both at an idle prompt. In each round the page spends ``--seconds`` with the
labkernel terminal focused, with JupyterLab's terminal focused, and with neither,
in rotating order, after a short settle each time. Measured per window:

- the CPU time of every Chromium process (renderer, GPU process, browser), as % of
  one core: what the machine pays, compositing and rasterising included;
- the page's main-thread task time (CDP ``Performance.getMetrics``,
  ``TaskDuration``), style recalculations and layouts per second;
- the CSS animations running in the page (``document.getAnimations()``).

    python benchmarks/idle_cpu.py                  # 4 rounds of 10 s, about 3 minutes
    python benchmarks/idle_cpu.py --rounds 2 --seconds 5

The table goes to stdout, progress to stderr. It measures whatever labkernel is
importable: run it with another checkout on ``PYTHONPATH`` to compare versions
(each against JupyterLab's terminal of its own run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "browser"))

from labservers import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

from browser_bench import jupyterlab_target, labkernel_target, log, open_page, start_server  # noqa: E402

CELL = "from labkernel import Terminal\nTerminal()"

LABKERNEL, JUPYTERLAB, NEITHER = "labkernel terminal focused", "JupyterLab terminal focused", "no terminal focused"


def chromium_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of every Chromium process under this one."""
    times: dict[int, float] = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if "chrom" in proc.name().lower():
                t = proc.cpu_times()
                times[proc.pid] = t.user + t.system
        except psutil.Error:
            pass
    return times


def metrics(cdp: Any) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def measure(page: Any, cdp: Any, seconds: float) -> dict[str, float]:
    cpu0, m0, t0 = chromium_cpu(), metrics(cdp), time.monotonic()
    time.sleep(seconds)
    cpu1, m1, t1 = chromium_cpu(), metrics(cdp), time.monotonic()
    wall = t1 - t0
    used = sum(v - cpu0.get(pid, 0.0) for pid, v in cpu1.items())
    return {
        "cpu_pct": 100 * used / wall,
        "task_ms_per_s": 1000 * (m1["TaskDuration"] - m0["TaskDuration"]) / wall,
        "recalc_per_s": (m1["RecalcStyleCount"] - m0["RecalcStyleCount"]) / wall,
        "layout_per_s": (m1["LayoutCount"] - m0["LayoutCount"]) / wall,
        "animations": page.evaluate("document.getAnimations().filter(a => a.playState === 'running').length"),
    }


def run(args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    from playwright.sync_api import sync_playwright

    server = start_server()
    samples: dict[str, list[dict[str, float]]] = {LABKERNEL: [], JUPYTERLAB: [], NEITHER: []}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page, sids, names = open_page(browser, server, CELL, 1, 1, instrument=None)
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            lk = labkernel_target(0, sids[0], LABKERNEL)
            jl = jupyterlab_target(names[0], JUPYTERLAB)
            focus = {
                LABKERNEL: lk.focus,
                JUPYTERLAB: jl.focus,
                NEITHER: lambda p: p.evaluate("() => document.activeElement && document.activeElement.blur()"),
            }
            time.sleep(2)
            order = [LABKERNEL, JUPYTERLAB, NEITHER]
            for rnd in range(args.rounds):
                for name in order[rnd % 3:] + order[:rnd % 3]:
                    focus[name](page)
                    time.sleep(args.settle)
                    got = measure(page, cdp, args.seconds)
                    samples[name].append(got)
                    log(f"round {rnd + 1}, {name}: {got['cpu_pct']:.1f} % of a core, "
                        f"main thread {got['task_ms_per_s']:.1f} ms/s, {got['animations']} animations")
                    if rnd == 0 and args.shots:
                        page.screenshot(path=str(args.shots / f"idle-cpu-{name.split()[0]}.png"))
            browser.close()
    finally:
        server.close()
    return samples


def table(samples: dict[str, list[dict[str, float]]]) -> str:
    def med(name: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[name])

    def spread(name: str, key: str) -> str:
        values = [s[key] for s in samples[name]]
        return f"{med(name, key):.1f} ({min(values):.1f}–{max(values):.1f})"

    out = ["| page idle, 10 s windows, median (min–max) | Chromium CPU, % of a core | main thread, ms/s "
           "| style recalcs/s | layouts/s | CSS animations running |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in (LABKERNEL, JUPYTERLAB, NEITHER):
        out.append(f"| {name} | {spread(name, 'cpu_pct')} | {spread(name, 'task_ms_per_s')} "
                   f"| {med(name, 'recalc_per_s'):.1f} | {med(name, 'layout_per_s'):.1f} "
                   f"| {max(s['animations'] for s in samples[name])} |")
    ratio = med(LABKERNEL, "cpu_pct") / med(JUPYTERLAB, "cpu_pct")
    out.append("")
    out.append(f"labkernel / JupyterLab terminal focused: {ratio:.2f}× Chromium CPU "
               f"(target ≤ 1); rounds: {len(samples[LABKERNEL])}")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the three windows")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one window")
    parser.add_argument("--settle", type=float, default=2.0, help="pause after a focus change")
    parser.add_argument("--json", type=Path, help="also write every sample as JSON here")
    parser.add_argument("--shots", type=Path, default=Path(__file__).parent / "results",
                        help="where the screenshots go")
    args = parser.parse_args()
    args.shots.mkdir(parents=True, exist_ok=True)
    samples = run(args)
    print(table(samples))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(samples, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
