"""Browser benchmark: labkernel's notebook Terminal beside JupyterLab's own terminal.

One ``jupyter lab`` subprocess, one Chromium page (Debian's, driven by Playwright):
a notebook showing three labkernel Terminals (two over XMLHttpRequest, one over
fetch) and, split beside it, two JupyterLab terminals (jupyter_server_terminals,
WebSocket). Every figure is taken in that one page, in the same run, alternating
between the transports; see benchmarks/README.md for what each figure means.

    python benchmarks/browser_bench.py            # about 3 minutes
    python benchmarks/browser_bench.py --quick    # smoke run with small counts
    python benchmarks/browser_bench.py --json results/browser.json

The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "browser"))

from labservers import CHROMIUM, CHROMIUM_ARGS, JupyterProcess  # noqa: E402

#: In the page before any of its code: timestamps for keydowns, for every answer of
#: labkernel's output polls (XMLHttpRequest and fetch) and every WebSocket message,
#: and the long tasks of the main thread. Short messages are kept whole (to find a
#: keystroke's echo), long ones by length and tail (to find the flood's end mark).
INSTRUMENT = r"""
(() => {
  const MARK = 'flood-' + '42';
  const arrivals = window.__arrivals = [];
  window.__keydown = 0;
  window.__longtasks = [];
  window.__marks = {};
  document.addEventListener('keydown', () => { window.__keydown = performance.now(); }, true);
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.__longtasks.push([e.startTime, e.duration]);
    }).observe({ type: 'longtask', buffered: true });
  } catch (e) { window.__longtaskError = String(e); }
  function record(id, raw) {
    const t = performance.now();
    if (raw.length < 600) {
      let data = raw;
      try { const m = JSON.parse(raw); data = Array.isArray(m) ? (m[0] === 'stdout' ? m[1] : '') : (m.data || ''); } catch (e) {}
      arrivals.push({ t, id, data });
    } else {
      arrivals.push({ t, id, data: null, n: raw.length });
    }
    if (arrivals.length > 20000) arrivals.splice(0, 10000);
    if (!window.__marks[id] && raw.indexOf(MARK) >= 0) window.__marks[id] = t;
  }
  const outputId = (url) => { const m = /\/api\/ws\/output\/([^?]+)/.exec(url); return m ? decodeURIComponent(m[1]) : null; };
  const open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (method, url, ...rest) { this.__id = outputId(String(url)); return open.call(this, method, url, ...rest); };
  const send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.send = function (...args) {
    if (this.__id) this.addEventListener('load', () => record(this.__id, this.responseText || ''));
    return send.apply(this, args);
  };
  const fetch0 = window.fetch;
  window.fetch = function (input, init) {
    const id = outputId(String(input && input.url || input));
    const p = fetch0.call(this, input, init);
    if (!id) return p;
    return p.then((r) => { r.clone().text().then((raw) => record(id, raw), () => {}); return r; });
  };
  const WS = window.WebSocket;
  window.WebSocket = class extends WS {
    constructor(url, ...rest) {
      super(url, ...rest);
      const m = /\/terminals\/websocket\/([^/?]+)/.exec(String(url));
      if (m) this.addEventListener('message', (e) => typeof e.data === 'string' && record('jl:' + m[1], e.data));
    }
  };
  // The first arrival for `id` since `t0` holding `c`: the keystroke's echo.
  window.__echoSince = (id, c, t0) => {
    let i = arrivals.length - 1;
    while (i >= 0 && arrivals[i].t >= t0) i--;
    for (i += 1; i < arrivals.length; i++) {
      const a = arrivals[i];
      if (a.id === id && a.data && a.data.includes(c)) return a.t - t0;
    }
    return null;
  };
})();
"""

NOTEBOOK_CELL = """from labkernel import Terminal
from IPython.display import display
xhr_a, xhr_b, fetch_a = Terminal(rows=10), Terminal(rows=10), Terminal(rows=10, http="fetch")
display(xhr_a, xhr_b, fetch_a)"""

MARK = "flood-42"


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Target:
    """One terminal on the page: how to focus it and which arrivals are its own."""

    def __init__(self, name: str, arrival_id: str, focus_js: str):
        self.name, self.arrival_id, self.focus_js = name, arrival_id, focus_js

    def focus(self, page: Any) -> None:
        page.evaluate(self.focus_js)
        time.sleep(0.05)


def type_line(page: Any, target: Target, line: str) -> None:
    target.focus(page)
    page.keyboard.type(line)
    page.keyboard.press("Enter")


def echo_once(page: Any, target: Target, char: str, timeout: float = 10) -> float | None:
    page.keyboard.press(char)
    handle = page.wait_for_function(
        "([id, c]) => window.__echoSince(id, c, window.__keydown)", arg=[target.arrival_id, char],
        timeout=timeout * 1000, polling=2)
    return handle.json_value()


def echo_round(page: Any, targets: list[Target], keys: int, block: int = 10) -> dict[str, list[float]]:
    """``keys`` keystrokes per target into ``cat``, alternating targets in blocks."""
    samples: dict[str, list[float]] = {t.name: [] for t in targets}
    letters = "abcdefghijklmnopqrstuvwxyz"
    done = 0
    while done < keys:
        for target in targets:
            target.focus(page)
            for i in range(block):
                samples[target.name].append(echo_once(page, target, letters[(done + i) % 26]))
                time.sleep(0.01)
            page.keyboard.press("Enter")
        done += block
    return samples


def flood(page: Any, flooder: Target, prober: Target, size: str, shown_js: str,
          probe_gap: float = 0.1, shots: Path | None = None) -> dict[str, Any]:
    """``yes | head -c size`` in ``flooder`` while ``prober`` echoes keys; until all is shown."""
    page.evaluate("() => { window.__marks = {}; window.__longtasks = []; }")
    type_line(page, flooder, f"clear; yes | head -c {size}; echo flood-$((40+2))")
    t0 = page.evaluate("performance.now()")
    prober.focus(page)
    probes: list[float] = []
    letters = "abcdefghijklmnopqrstuvwxyz"
    i = 0
    deadline = time.monotonic() + 300
    while not page.evaluate(f"() => !!window.__marks[{json.dumps(flooder.arrival_id)}]"):
        if time.monotonic() > deadline:
            if shots:
                page.screenshot(path=str(shots / "browser-bench-stalled.png"))
            got = page.evaluate("(id) => window.__arrivals.filter(a => a.id === id).length", flooder.arrival_id)
            raise RuntimeError(f"{flooder.name}: the flood did not end in 300 s ({got} answers arrived)")
        try:
            probes.append(echo_once(page, prober, letters[i % 26], timeout=30))
        except Exception as error:  # noqa: BLE001 - a probe lost in the flood is reported, not fatal
            log(f"  probe {i} on {prober.name} failed: {error}")
        i += 1
        if i % 40 == 0:
            page.keyboard.press("Enter")
        time.sleep(probe_gap)
    arrived = page.evaluate(f"() => window.__marks[{json.dumps(flooder.arrival_id)}]") - t0
    shown = page.evaluate(shown_js) - t0
    page.keyboard.press("Enter")
    tasks = page.evaluate("() => window.__longtasks.slice()")
    largest = page.evaluate("(id) => Math.max(0, ...window.__arrivals.filter(a => a.id === id)"
                            ".map(a => a.n || (a.data || '').length))", flooder.arrival_id)
    during = [d for start, d in tasks if start >= t0]
    return {"arrived_ms": arrived, "shown_ms": shown, "longest_task_ms": max(during, default=0.0),
            "long_tasks": len(during), "largest_answer": largest, "probe_ms": probes}


def start_server() -> JupyterProcess:
    """``jupyter lab`` for a benchmark, with ``window.jupyterapp`` exposed to open its terminals."""
    server = JupyterProcess("lab", base_url="/bench/", extra_args=("--LabApp.expose_app_in_browser=True",))
    server.start()
    log(f"jupyter lab at {server.url}")
    return server


def open_page(browser: Any, server: JupyterProcess, cell: str, terminals: int, jl_terminals: int,
              instrument: str | None = INSTRUMENT) -> tuple[Any, list[str], list[str]]:
    """A page with a notebook whose one ``cell`` shows ``terminals`` labkernel Terminals and,
    split to its right one above the other, ``jl_terminals`` JupyterLab terminals.

    Returns the page, the labkernel session ids and the JupyterLab terminal names, in
    page order; ``window.__jl[name]`` is each JupyterLab terminal's widget.
    """
    server.write_notebook("bench.ipynb", cell)
    names = [server.ok("POST", "api/terminals", {})["name"] for _ in range(jl_terminals)]
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    if instrument:
        page.add_init_script(instrument)
    page.goto(server.notebook_url("bench.ipynb", "bench"))
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
    deadline = time.monotonic() + 120
    while not any(s["kernel"]["execution_state"] == "idle"
                  for s in server.ok("GET", "api/sessions")):
        assert time.monotonic() < deadline, "the kernel did not start"
        time.sleep(0.2)
    page.locator(".jp-Notebook .jp-Cell").first.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+Enter")
    page.wait_for_function(
        "(n) => [...document.querySelectorAll('.labkernel-terminal')]"
        ".filter(e => e.dataset.state === 'connected').length === n", arg=terminals, timeout=120_000)
    sids = page.evaluate("() => [...document.querySelectorAll('.labkernel-terminal')]"
                         ".map(e => e.dataset.sessionId)")
    page.evaluate("""async (names) => {
        const app = window.jupyterapp;
        let ref = app.shell.currentWidget.id;
        window.__jl = {};
        for (const [i, name] of names.entries()) {
            const w = await app.commands.execute('terminal:open', {name});
            app.shell.add(w, 'main', {mode: i === 0 ? 'split-right' : 'split-bottom', ref});
            ref = w.id;
            window.__jl[name] = w;
        }
    }""", names)
    page.wait_for_function("(names) => names.every(n => window.__jl[n].content.session"
                           " && window.__jl[n].content.session.connectionStatus === 'connected')",
                           arg=names, timeout=60_000)
    return page, sids, names


def labkernel_target(i: int, sid: str, name: str) -> Target:
    """The ``i``-th labkernel terminal of the page."""
    return Target(name, sid, f"() => document.querySelectorAll('.labkernel-terminal')[{i}]"
                             ".querySelector('.xterm-helper-textarea').focus()")


def jupyterlab_target(term_name: str, name: str) -> Target:
    """JupyterLab's terminal ``term_name`` of the page (see ``open_page``)."""
    return Target(name, f"jl:{term_name}", f"() => window.__jl[{json.dumps(term_name)}].content._term.focus()")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    server = start_server()
    results: dict[str, Any] = {"params": vars(args)}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page, sids, names = open_page(browser, server, NOTEBOOK_CELL, 3, 2)
            time.sleep(2)
            page.screenshot(path=str(args.shots / "browser-bench-setup.png"))

            def lk(i: int, name: str) -> Target:
                return labkernel_target(i, sids[i], name)

            def jl(i: int, name: str) -> Target:
                return jupyterlab_target(names[i], name)

            lk_a, lk_b, lk_fetch = lk(0, "labkernel xhr"), lk(1, "labkernel xhr (2nd)"), lk(2, "labkernel fetch")
            jl_a, jl_b = jl(0, "JupyterLab"), jl(1, "JupyterLab (2nd)")
            for target in (lk_a, lk_b, lk_fetch, jl_a, jl_b):
                type_line(page, target, "cat")
            time.sleep(1)

            log("warm-up: 20 keys each")
            echo_round(page, [lk_a, lk_fetch, jl_a], 20)
            log(f"echo: {args.keys} keys into cat, alternating in blocks of 10")
            results["echo"] = echo_round(page, [lk_a, jl_a, lk_fetch], args.keys)
            log("idle echo of the second terminals")
            results["idle_second"] = echo_round(page, [lk_b, jl_b], args.probe_keys)
            for target in (lk_a, lk_b, lk_fetch, jl_a, jl_b):  # end cat
                target.focus(page)
                page.keyboard.press("Control+c")
            time.sleep(1)

            lk_shown = ("() => new Promise(resolve => { const rows = document.querySelectorAll('.labkernel-terminal')[0]"
                        ".querySelector('.xterm-rows'); const check = () => rows.textContent.includes('" + MARK
                        + "') ? resolve(performance.now()) : requestAnimationFrame(check); check(); })")
            jl_shown = ("() => new Promise(resolve => window.__jl[" + json.dumps(names[0])
                        + "].content._term.write('', () => resolve(performance.now())))")
            for target in (lk_b, jl_b):
                type_line(page, target, "cat")
            time.sleep(0.5)
            results["flood"] = {}
            order = [(lk_a, lk_b, lk_shown), (jl_a, jl_b, jl_shown)]
            for rnd in range(args.flood_rounds):
                for flooder, prober, shown in (order if rnd % 2 == 0 else order[::-1]):
                    log(f"flood {args.flood} in {flooder.name}, probing {prober.name} (round {rnd + 1})")
                    got = flood(page, flooder, prober, args.flood, shown, shots=args.shots)
                    results["flood"].setdefault(flooder.name, []).append(got)
                    page.screenshot(path=str(args.shots / f"browser-bench-flood-{flooder.name.split()[0]}-{rnd}.png"))
                    time.sleep(2)
            browser.close()
    finally:
        server.close()
    return results


def table(results: dict[str, Any]) -> str:
    echo = results["echo"]
    lk, jl, lf = echo["labkernel xhr"], echo["JupyterLab"], echo["labkernel fetch"]
    idle = results["idle_second"]
    fl = results["flood"]

    def med(rounds: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    def probes(rounds: list[dict]) -> list[float]:
        return [p for r in rounds for p in r["probe_ms"] if p is not None]

    lkf, jlf = fl["labkernel xhr"], fl["JupyterLab"]
    rows = [
        ("echo p50 (ms)", pct(lk, 50), pct(lf, 50), pct(jl, 50), "≤ JupyterLab"),
        ("echo p99 (ms)", pct(lk, 99), pct(lf, 99), pct(jl, 99), "≤ JupyterLab"),
        ("flood: all arrived (ms)", med(lkf, "arrived_ms"), None, med(jlf, "arrived_ms"), ""),
        ("flood: all shown (ms)", med(lkf, "shown_ms"), None, med(jlf, "shown_ms"), "≤ JupyterLab"),
        ("flood: longest task (ms)", max(r["longest_task_ms"] for r in lkf), None,
         max(r["longest_task_ms"] for r in jlf), "≤ 100"),
        ("flood: largest answer / message (KiB)", max(r["largest_answer"] for r in lkf) / 1024, None,
         max(r["largest_answer"] for r in jlf) / 1024, ""),
        ("2nd terminal echo idle p50 (ms)", pct(idle["labkernel xhr (2nd)"], 50), None,
         pct(idle["JupyterLab (2nd)"], 50), ""),
        ("2nd terminal echo in flood p50 (ms)", pct(probes(lkf), 50), None, pct(probes(jlf), 50), "≤ 2× idle"),
        ("2nd terminal echo in flood p99 (ms)", pct(probes(lkf), 99), None, pct(probes(jlf), 99), ""),
    ]
    out = ["| figure | labkernel (XHR) | labkernel (fetch) | JupyterLab terminal | labkernel/JupyterLab | target |",
           "| --- | ---: | ---: | ---: | ---: | --- |"]
    for name, a, b, c, target in rows:
        ratio = f"{a / c:.2f}" if c else "n/a"
        # A long task is one of 50 ms or more: none at all shows as "< 50".
        def cell(v: float) -> str:
            return "< 50" if "longest" in name and v == 0 else f"{v:.1f}"

        out.append(f"| {name} | {cell(a)} | {'' if b is None else cell(b)} | {cell(c)} | {ratio} | {target} |")
    lk_idle = pct(idle["labkernel xhr (2nd)"], 50)
    out.append("")
    out.append(f"second-terminal echo under flood / idle: labkernel {pct(probes(lkf), 50) / lk_idle:.2f}×, "
               f"JupyterLab {pct(probes(jlf), 50) / pct(idle['JupyterLab (2nd)'], 50):.2f}×; "
               f"samples: echo {len(lk)}/{len(lf)}/{len(jl)} keys, flood rounds {len(lkf)}, "
               f"probes {len(probes(lkf))}/{len(probes(jlf))}")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--keys", type=int, default=200, help="timed keystrokes per terminal")
    parser.add_argument("--probe-keys", type=int, default=40, help="idle keystrokes of the second terminals")
    parser.add_argument("--flood", default="10M", help="bytes of `yes` per flood (head -c syntax)")
    parser.add_argument("--flood-rounds", type=int, default=2, help="floods per transport, ABBA order")
    parser.add_argument("--json", type=Path, help="also write every sample as JSON here")
    parser.add_argument("--shots", type=Path, default=Path(__file__).parent / "results",
                        help="where the screenshots go")
    args = parser.parse_args()
    if args.quick:
        args.keys, args.probe_keys, args.flood, args.flood_rounds = 30, 20, "2M", 1
    args.shots.mkdir(parents=True, exist_ok=True)
    results = run(args)
    results["params"] = {k: str(v) for k, v in vars(args).items()}
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
