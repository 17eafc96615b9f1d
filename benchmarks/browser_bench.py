"""Browser benchmark: labkernel's notebook Terminal beside JupyterLab's own terminal.

One ``jupyter lab`` subprocess, Debian's Chromium driven by Playwright, and JupyterLab
pages with labkernel Terminals in a notebook and JupyterLab's terminals
(jupyter_server_terminals, WebSocket) split beside them. Every figure compares the two
on the same page, in the same run, alternating; see benchmarks/README.md.

    python benchmarks/browser_bench.py                      # everything, about 8 minutes
    python benchmarks/browser_bench.py --quick              # smoke run, under 3 minutes
    python benchmarks/browser_bench.py --figures typing,delay --rounds 6

Figures (``--figures``, comma-separated; all by default):

- ``typing``: keydown → paint and keydown → echo, labkernel (prediction on and off,
  where the widget has the option) and JupyterLab's terminal, typed at the prompt;
- ``four``: a page with one labkernel terminal and a page with four, alternating:
  each terminal's echo, and its requests (``wait=0`` polls among them);
- ``idle``: CPU of the page with a labkernel terminal focused, JupyterLab's focused,
  neither; labkernel's requests per 25 s with no output;
- ``delay``: typing through ``delayproxy.py`` adding 0, 50 and 150 ms each way;
- ``flood``: 10 MB of ``yes`` shown, the longest main-thread task, a second
  terminal's echo during the flood and idle.

The table goes to stdout, progress to stderr, every sample to
``benchmarks/results/browser-<time>.json`` (or ``--json``), screenshots beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from browser_page import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    MARK,
    PROBE_LETTERS,
    BenchPage,
    Target,
    log,
    start_server,
)
from browser_report import table  # noqa: E402

FIGURES = ("typing", "four", "idle", "delay", "flood")
RESULTS = Path(__file__).resolve().parent / "results"


def palindrome(items: list[Any], rnd: int) -> list[Any]:
    """A B C in even rounds, C B A in odd ones: whatever one warms up favours both alike."""
    return list(items) if rnd % 2 == 0 else list(items)[::-1]


def tagged(samples: list[dict[str, Any]], **tags: Any) -> list[dict[str, Any]]:
    return [{**s, **tags} for s in samples]


# -- figures ----------------------------------------------------------------------------

def typing_figure(bp: BenchPage, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    """Keys typed at the prompt of each terminal, in blocks, alternating terminals."""
    targets = typing_targets(bp)
    log(f"typing: warm-up, then {args.rounds} rounds of {args.block} keys in "
        + ", ".join(t.name for t in targets))
    for target in targets:
        bp.block(target, min(args.block, 10), rng)
    samples: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    for rnd in range(args.rounds):
        for target in palindrome(targets, rnd):
            samples[target.name] += tagged(bp.block(target, args.block, rng), round=rnd)
    bp.screenshot(args.shots, "typing")
    return {"targets": [vars(t) for t in targets], "samples": samples}


def typing_targets(bp: BenchPage) -> list[Target]:
    """labkernel with prediction on and off (just the default one where the widget has no
    such option), then JupyterLab's terminal."""
    if bp.predict:
        return [bp.lk[0], bp.lk[1], bp.jl[0]]
    return [bp.lk[0], bp.jl[0]]


def four_figure(pages: list[BenchPage], args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    """The page with one terminal and the page with four, alternating, every terminal typed in."""
    log(f"four: {args.rounds} rounds of {args.four_block} keys in every terminal of both pages")
    for bp in pages:
        bp.page.bring_to_front()
        for target in bp.lk + bp.jl:
            bp.block(target, 5, rng)
    marks = {bp.name: bp.requests.mark() for bp in pages}
    started = time.monotonic()
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {bp.name: {} for bp in pages}
    for rnd in range(args.rounds):
        for bp in palindrome(pages, rnd):
            bp.page.bring_to_front()
            for target in palindrome(bp.lk + bp.jl, rnd):
                samples[bp.name].setdefault(target.name, [])
                samples[bp.name][target.name] += tagged(bp.block(target, args.four_block, rng), round=rnd)
    seconds = time.monotonic() - started
    requests = {bp.name: per_terminal(bp, bp.requests.since(marks[bp.name])) for bp in pages}
    for bp in pages:
        bp.screenshot(args.shots, f"four-{bp.name}")
    return {"samples": samples, "requests": requests, "seconds": seconds,
            "terminals": {bp.name: [vars(t) for t in bp.lk + bp.jl] for bp in pages}}


def per_terminal(bp: BenchPage, requests: list[Any]) -> dict[str, dict[str, int]]:
    """Requests by labkernel terminal (those naming no session: ``page``)."""
    names = {t.sid: t.name for t in bp.lk}
    out: dict[str, dict[str, int]] = {}
    for r in requests:
        who = names.get(r.sid or "", "page" if r.sid is None else f"other {r.sid[:8]}")
        c = out.setdefault(who, {"requests": 0, "input_posts": 0, "output_polls": 0, "wait0_polls": 0})
        c["requests"] += 1
        if r.method == "POST" and r.route.endswith("ws/message"):
            c["input_posts"] += 1
        if "/output" in r.route or r.route.startswith("ws/output"):
            c["output_polls"] += 1
        if r.wait0:
            c["wait0_polls"] += 1
    return out


def idle_figure(lone: BenchPage, others: list[BenchPage], args: argparse.Namespace) -> dict[str, Any]:
    """Idle windows on the one-terminal page: labkernel's focused, JupyterLab's, neither."""
    from idle_cpu import measure, renderer_of

    bp = lone
    bp.page.bring_to_front()
    cdp = bp.context.new_cdp_session(bp.page)
    cdp.send("Performance.enable")
    renderer = renderer_of(bp.page)
    if renderer is None:
        log("idle: the page's renderer process was not found; every renderer is counted")
    lk, jl = bp.lk[0], bp.jl[0]
    names = {"labkernel": "labkernel terminal focused", "jupyterlab": "JupyterLab terminal focused",
             "none": "no terminal focused"}
    focus = {
        "labkernel": lambda: lk.focus(bp.page),
        "jupyterlab": lambda: jl.focus(bp.page),
        "none": lambda: bp.page.evaluate("() => document.activeElement && document.activeElement.blur()"),
    }
    log(f"idle: {args.idle_rounds} rounds of {args.idle_seconds:g} s windows (labkernel, JupyterLab, none focused)")
    windows: dict[str, list[dict[str, Any]]] = {k: [] for k in names}
    order = list(names)
    all_pages = [bp, *others]
    span_marks = {p.name: p.requests.mark() for p in all_pages}
    span_start = time.monotonic()
    for rnd in range(args.idle_rounds):
        for key in order[rnd % 3:] + order[:rnd % 3]:
            focus[key]()
            bp.page.wait_for_timeout(args.idle_settle * 1000)
            marks = {p.name: p.requests.mark() for p in [bp, *others]}
            got = measure(bp.page, cdp, args.idle_seconds, renderer)
            got["requests"] = {p.name: len(p.requests.since(marks[p.name])) for p in [bp, *others]}
            got["round"] = rnd
            windows[key].append(got)
            log(f"  round {rnd + 1}, {names[key]}: {got['cpu_pct']:.1f} % of a core, "
                f"main thread {got['task_ms_per_s']:.1f} ms/s, requests {got['requests']}")
            if rnd == 0:
                bp.screenshot(args.shots, f"idle-{key}")
    span = time.monotonic() - span_start
    requests = {}
    for p in all_pages:
        times = [r.t for r in p.requests.since(span_marks[p.name])]
        requests[p.name] = {"count": len(times), "seconds": span, "per_25s": 25 * len(times) / span,
                            "most_in_25s": most_within(times, 25.0), "times": [t - span_start for t in times]}
    cdp.detach()
    terminals = {p.name: len(p.lk) for p in all_pages}
    return {"windows": windows, "labels": names, "terminals": terminals, "requests": requests,
            "renderer_found": renderer is not None}


def most_within(times: list[float], window: float, slack: float = 0.25) -> int:
    """The most of ``times`` in any ``window`` seconds (less ``slack``: a long poll renewed
    every ``window`` seconds has one in each)."""
    times = sorted(times)
    return max((sum(1 for u in times[i:] if u < t + window - slack) for i, t in enumerate(times)), default=0)


def delay_figure(bp: BenchPage, proxy: Any, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    """Typing through the delay proxy: each delay in turn, alternating delays and terminals."""
    targets = typing_targets(bp)
    log(f"delay: {args.rounds} rounds of {args.delay_block} keys at + "
        + ", ".join(f"{d:g}" for d in args.delays) + " ms each way")
    for target in targets:
        bp.block(target, 5, rng)
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {str(d): {t.name: [] for t in targets}
                                                            for d in args.delays}
    for rnd in range(args.rounds):
        for d in palindrome(args.delays, rnd):
            proxy.set_delay(d)
            bp.page.wait_for_timeout(300 + 4 * d)  # what was on its way under the old delay
            for target in palindrome(targets, rnd):
                samples[str(d)][target.name] += tagged(
                    bp.block(target, args.delay_block, rng, settle=0.15 + 3 * d / 1000), round=rnd)
    proxy.set_delay(0)
    bp.screenshot(args.shots, "delay")
    return {"targets": [vars(t) for t in targets], "samples": samples}


def flood_figure(bp: BenchPage, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    """``yes | head -c SIZE`` in one terminal while a second one of the same kind echoes keys."""
    lk_pair = (bp.lk[0], bp.lk[1])
    jl_pair = (bp.jl[0], bp.jl[1])
    out: dict[str, Any] = {"lk": [], "jl": [], "pairs": {"lk": [t.name for t in lk_pair],
                                                         "jl": [t.name for t in jl_pair]}}
    n = 0
    for rnd in range(args.flood_rounds):
        for kind, (flooder, prober) in palindrome([("lk", lk_pair), ("jl", jl_pair)], rnd):
            log(f"flood {args.flood} in {flooder.name}, probing {prober.name} (round {rnd + 1})")
            idle = bp.block(prober, args.probe_keys, rng, letters=PROBE_LETTERS)
            got = flood_once(bp, flooder, prober, args.flood, n, rng)
            got["idle_probes"] = idle
            got["round"] = rnd
            out[kind].append(got)
            bp.screenshot(args.shots, f"flood-{kind}-{rnd}")
            n += 1
            bp.page.wait_for_timeout(1500)
    return out


def flood_once(bp: BenchPage, flooder: Target, prober: Target, size: str, n: int,
               rng: random.Random, timeout: float = 300) -> dict[str, Any]:
    page = bp.page
    label = f"{MARK}.r{n}"
    bp.type_line(flooder, "clear")
    page.wait_for_timeout(500)
    flooder.focus(page)
    page.keyboard.type(f"yes | head -c {size}; echo flood-$((40+2)).r{n}")
    fid = page.evaluate("(spec) => window.__lkb.expect(spec)", {
        "echo": {**flooder.js, "text": MARK}, "paint": {"target": flooder.js, "text": label},
        "timeout": timeout * 1000})
    page.keyboard.press("Enter")
    prober.focus(page)
    probes: list[dict[str, Any]] = []
    i = 0
    while page.evaluate("(id) => window.__lkb.pending(id)", fid):
        ch = rng.choice(PROBE_LETTERS)
        probes.append(bp.key(prober, ch, "", paint=False, timeout=60))
        i += 1
        if i % 30 == 0:
            page.keyboard.press("Control+c")
        page.wait_for_timeout(100)
    got = page.evaluate("(id) => window.__lkb.result(id)", fid)
    page.keyboard.press("Control+c")
    t0, shown = got["t0"], got["paint"]
    end = t0 + shown if shown is not None else float("inf")
    tasks = page.evaluate("() => window.__lkb.longtasks.slice()")
    during = [d for start, d in tasks if t0 <= start <= end]
    if got.get("timedOut"):
        bp.screenshot(None, "flood-stalled")
    return {"arrived_ms": got["echo"], "shown_ms": shown, "longest_task_ms": max(during, default=0.0),
            "long_tasks": len(during), "probes": probes, "timed_out": got.get("timedOut", False)}


# -- the run ----------------------------------------------------------------------------

def environment() -> dict[str, Any]:
    import labkernel

    here = Path(__file__).resolve().parent.parent

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=here, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"labkernel": str(Path(labkernel.__file__).parent), "commit": git("rev-parse", "--short", "HEAD"),
            "branch": git("rev-parse", "--abbrev-ref", "HEAD"), "dirty": bool(git("status", "--porcelain")),
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "load": os.getloadavg(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from delayproxy import DelayProxyProcess

    rng = random.Random(args.seed)
    results: dict[str, Any] = {"params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                               "env": environment(), "figures": {}}
    figs = set(args.figures)
    server = start_server()
    proxy: Optional[DelayProxyProcess] = None
    pages: list[BenchPage] = []
    started = time.monotonic()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            results["env"]["chromium"] = browser.version
            if figs & {"typing", "flood"}:
                log("page 'main': two labkernel Terminals (prediction on, off), two JupyterLab terminals")
                main = BenchPage.open(browser, server, "main", [True, False], 2, http=args.http)
                pages.append(main)
                results["predict"] = main.predict
                results["env"]["renderers"] = main.renderer()
                main.screenshot(args.shots, "main")
                if "typing" in figs:
                    results["figures"]["typing"] = typing_figure(main, args, rng)
                if "flood" in figs:
                    results["figures"]["flood"] = flood_figure(main, args, rng)
                main.close()
                pages.remove(main)
            if figs & {"four", "idle"}:
                log("pages 'lone' (one labkernel Terminal) and 'four' (four), each with a JupyterLab terminal")
                lone = BenchPage.open(browser, server, "lone", [None], 1, http=args.http)
                pages.append(lone)
                four = BenchPage.open(browser, server, "four", [None] * 4, 1, rows=8, viewport=(1600, 1200),
                                      http=args.http)
                pages.append(four)
                results.setdefault("predict", lone.predict)
                lone.screenshot(args.shots, "lone")
                four.screenshot(args.shots, "four")
                if "four" in figs:
                    results["figures"]["four"] = four_figure([lone, four], args, rng)
                if "idle" in figs:
                    results["figures"]["idle"] = idle_figure(lone, [four], args)
                for bp in (four, lone):
                    bp.close()
                    pages.remove(bp)
            if "delay" in figs:
                proxy = DelayProxyProcess("127.0.0.1", server.port, 0)
                log(f"page 'delay', through the delay proxy on port {proxy.port}")
                bp = BenchPage.open(browser, server, "delay", [True, False], 1, port=proxy.port, http=args.http)
                pages.append(bp)
                results.setdefault("predict", bp.predict)
                results["figures"]["delay"] = delay_figure(bp, proxy, args, rng)
                bp.close()
                pages.remove(bp)
            browser.close()
    finally:
        for bp in pages:
            try:
                bp.close()
            except Exception:  # noqa: BLE001 - the server is stopped next anyway
                pass
        if proxy is not None:
            proxy.close()
        server.close()
    results["seconds"] = time.monotonic() - started
    return results


def parse(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--figures", default=",".join(FIGURES),
                        help=f"comma-separated, of {', '.join(FIGURES)} (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 3 rounds of small blocks, a 2 MB flood, 4 s idle windows")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of every figure but the flood (≥ 3)")
    parser.add_argument("--block", type=int, default=20, help="keys per terminal and round (typing)")
    parser.add_argument("--four-block", type=int, default=10, help="keys per terminal and round (four)")
    parser.add_argument("--delay-block", type=int, default=8, help="keys per terminal, round and delay")
    parser.add_argument("--delays", default="0,50,150", help="ms added each way by the delay proxy")
    parser.add_argument("--probe-keys", type=int, default=20, help="idle echo keys of the flood's second terminal")
    parser.add_argument("--flood", default="10M", help="bytes of `yes` per flood (head -c syntax)")
    parser.add_argument("--flood-rounds", type=int, default=2, help="floods per transport, ABBA order")
    parser.add_argument("--idle-rounds", type=int, default=4, help="rounds of the three idle windows")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="length of one idle window")
    parser.add_argument("--idle-settle", type=float, default=2.0, help="pause after a focus change")
    parser.add_argument("--http", choices=["xhr", "fetch"],
                        help="the Terminals' `http` option (default: the widget's own default)")
    parser.add_argument("--seed", type=int, default=13, help="of the random letters typed")
    parser.add_argument("--json", type=Path, help="where every sample goes (default: results/browser-<time>.json)")
    parser.add_argument("--shots", type=Path, default=RESULTS, help="where the screenshots go")
    args = parser.parse_args(argv)
    args.figures = [f.strip() for f in args.figures.split(",") if f.strip()]
    unknown = set(args.figures) - set(FIGURES)
    if unknown:
        parser.error(f"unknown figures: {', '.join(sorted(unknown))} (known: {', '.join(FIGURES)})")
    if args.quick:
        args.rounds, args.block, args.four_block, args.delay_block = 3, 10, 5, 4
        args.probe_keys, args.flood, args.flood_rounds = 10, "2M", 1
        args.idle_rounds, args.idle_seconds, args.idle_settle = 3, 4.0, 1.0
    args.delays = [float(d) for d in str(args.delays).split(",") if d.strip()]
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse(argv)
    args.shots.mkdir(parents=True, exist_ok=True)
    path = args.json or RESULTS / f"browser-{time.strftime('%Y%m%d-%H%M%S')}.json"
    results = run(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(table(results))
    log(f"every sample: {path}; took {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
