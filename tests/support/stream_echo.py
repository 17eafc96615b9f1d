"""Keydown to echo in the page: the output stream against long polls, 1 and 4 terminals.

Not a test: a measurement, run by hand (``python tests/support/stream_echo.py``).
One ``jupyter lab``, one Chromium, four pages side by side (each in a browser
context of its own, so each has its own six connections): a notebook with one
labkernel Terminal and one with four, each read on the page's stream and each
with the stream off (long polls, as a page behind a buffering proxy reads).
Keys are typed into ``cat``, alternating between the pages in blocks of ten (each
block into one terminal of the page, the next block into the next), and timed from
the keydown to:

- *arrival*: the echo reaches the page's JavaScript (a stream chunk read, an XHR's
  load), timed before labkernel's own code sees it;
- *drawn*: xterm has put it in the rows of its DOM (a MutationObserver).

It also counts the keys whose echo arrived before the answer to their POST, and
the page's output requests while typing (a page that polls with ``wait=0`` shows
there). Prints a table; ``--json`` keeps every sample.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "browser"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the support package

from labservers import CHROMIUM, CHROMIUM_ARGS, JupyterProcess  # noqa: E402

#: In each page before its code: arrivals of output (stream events, poll answers) and of
#: input answers, timed as they reach JavaScript, and keydowns.
INSTRUMENT = r"""
(() => {
  const arrivals = window.__arrivals = [];  // {t, sid, data}
  const answers = window.__answers = [];    // {t} of POST api/ws/message answers
  window.__outputRequests = 0;
  window.__keydown = 0;
  document.addEventListener('keydown', () => { window.__keydown = performance.now(); }, true);
  const sidOf = (url) => {
    const m = /\/api\/ws\/output\/([^?]+)/.exec(url);
    return m ? decodeURIComponent(m[1]) : null;
  };
  const open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (method, url, ...rest) {
    const sid = sidOf(String(url));
    const message = /\/api\/ws\/message$/.test(String(url));
    if (sid) window.__outputRequests += 1;
    // Added before the transport sets onload: this runs first, at arrival.
    this.addEventListener('load', () => {
      const t = performance.now();
      if (sid) {
        try { arrivals.push({ t, sid, data: JSON.parse(this.responseText).data || '' }); } catch (e) {}
      } else if (message) answers.push({ t });
    });
    return open.call(this, method, url, ...rest);
  };
  const read = ReadableStreamDefaultReader.prototype.read;
  const decoder = new TextDecoder();
  ReadableStreamDefaultReader.prototype.read = function () {
    return read.call(this).then((result) => {
      if (result.value && result.value.length < 4096) {
        const t = performance.now();
        for (const block of decoder.decode(result.value).split('\n\n')) {
          const line = block.split('\n').find((l) => l.startsWith('data: '));
          if (!line || !block.includes('event: output')) continue;
          try {
            const e = JSON.parse(line.slice(6));
            arrivals.push({ t, sid: e.sessionId, data: e.data });
          } catch (e) {}
        }
      }
      return result;
    });
  };
  window.__arrivedSince = (sid, c, t0) => {
    for (const a of arrivals) if (a.t >= t0 && a.sid === sid && a.data.includes(c)) return a.t - t0;
    return null;
  };
  window.__answeredSince = (t0) => { for (const a of answers) if (a.t >= t0) return a.t - t0; return null; };
  // Resolves when terminal i's rows hold `line`: the time then.
  window.__drawn = (i, line) => new Promise((resolve) => {
    const rows = document.querySelectorAll('.labkernel-terminal')[i].querySelector('.xterm-rows');
    const done = () => [...rows.children].some((r) => r.textContent.replace(/\u00a0/g, ' ').trimEnd() === line);
    if (done()) { resolve(performance.now()); return; }
    const observer = new MutationObserver(() => {
      if (done()) { observer.disconnect(); resolve(performance.now()); }
    });
    observer.observe(rows, { childList: true, subtree: true, characterData: true });
  });
})();
"""

POLLS = "sessionStorage.setItem('labkernel:transport:/bench/', 'polls');"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


class Page:
    """One page: a notebook showing ``count`` Terminals, read on the stream or by polls."""

    def __init__(self, browser: Any, server: JupyterProcess, name: str, count: int, polls: bool):
        self.name, self.count = name, count
        cell = ("from labkernel import Terminal\nfrom IPython.display import display\n"
                f"ts = [Terminal(rows=6) for _ in range({count})]\ndisplay(*ts)")
        server.write_notebook(f"{name}.ipynb", cell)
        self.context = browser.new_context(viewport={"width": 1200, "height": 1000})
        self.page = self.context.new_page()
        self.page.add_init_script(INSTRUMENT + (POLLS if polls else ""))
        self.page.goto(server.notebook_url(f"{name}.ipynb", name))
        self.page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
        deadline = time.monotonic() + 120
        while not any(s["path"].endswith(f"{name}.ipynb") and s["kernel"]["execution_state"] == "idle"
                      for s in server.ok("GET", "api/sessions")):
            assert time.monotonic() < deadline, "the kernel did not start"
            time.sleep(0.2)
        self.page.locator(".jp-Notebook .jp-Cell").first.locator(".jp-InputArea-editor").click()
        self.page.keyboard.press("Control+Enter")
        self.page.wait_for_function(
            "(n) => [...document.querySelectorAll('.labkernel-terminal')]"
            ".filter(e => e.dataset.state === 'connected').length === n", arg=count, timeout=120_000)
        self.sids = self.page.evaluate("() => [...document.querySelectorAll('.labkernel-terminal')]"
                                       ".map(e => e.dataset.sessionId)")
        self.lines = [""] * count
        for i in range(count):
            self.focus(i)
            self.page.keyboard.type("cat")
            self.page.keyboard.press("Enter")
        time.sleep(1)

    def focus(self, i: int) -> None:
        self.focused = i
        self.page.evaluate(f"() => document.querySelectorAll('.labkernel-terminal')[{i}]"
                           ".querySelector('.xterm-helper-textarea').focus()")

    def key(self, i: int, char: str) -> tuple[float, float, bool]:
        """One key into terminal i: (arrival ms, drawn ms, echo before the POST's answer)."""
        if self.focused != i:
            self.focus(i)
        if len(self.lines[i]) > 60:
            self.page.keyboard.press("Enter")
            self.lines[i] = ""
            time.sleep(0.05)
        self.lines[i] += char
        # Armed before the key: a row that is the typed line once the key is echoed.
        self.page.evaluate(f"() => {{ window.__drawing = window.__drawn({i}, {json.dumps(self.lines[i])}); }}")
        self.page.keyboard.press(char)
        keydown = self.page.evaluate("window.__keydown")
        arrival = self.page.wait_for_function(
            "([sid, c, t0]) => window.__arrivedSince(sid, c, t0)", arg=[self.sids[i], char, keydown],
            timeout=30_000, polling=2).json_value()
        shown = self.page.evaluate("() => window.__drawing") - keydown
        answered = self.page.wait_for_function("(t0) => window.__answeredSince(t0)", arg=keydown,
                                               timeout=30_000, polling=2).json_value()
        return arrival, shown, arrival <= answered


def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    server = JupyterProcess("lab", base_url="/bench/")
    server.start()
    results: dict[str, Any] = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            pages = []
            for name, count, polls in (("stream-1", 1, False), ("polls-1", 1, True), ("stream-4", 4, False),
                                       ("polls-4", 4, True)):
                log(f"opening {name}")
                pages.append(Page(browser, server, name, count, polls))
            letters = "abcdefghijklmnopqrstuvwxyz"
            log("warm-up")
            for page in pages:
                for k in range(10):
                    page.page.bring_to_front()
                    page.key(k % page.count, letters[k])
            requests_before = {p.name: p.page.evaluate("window.__outputRequests") for p in pages}
            started = time.monotonic()
            done = 0
            while done < args.keys:
                for page in pages:
                    page.page.bring_to_front()
                    term = (done // args.block) % page.count  # a block of keys into one terminal
                    for k in range(args.block):
                        arrival, drawn, first = page.key(term, letters[(done + k) % 26])
                        got = results.setdefault(page.name, {"arrival": [], "drawn": [], "first": 0})
                        got["arrival"].append(arrival)
                        got["drawn"].append(drawn)
                        got["first"] += first
                        time.sleep(0.02)
                done += args.block
                log(f"{done} keys per page")
            elapsed = time.monotonic() - started
            for page in pages:
                results[page.name]["output_requests_per_s"] = (
                    page.page.evaluate("window.__outputRequests") - requests_before[page.name]) / elapsed
                page.page.screenshot(path=str(args.shots / f"stream-echo-{page.name}.png"))
            browser.close()
    finally:
        server.close()
    return results


def table(results: dict[str, Any]) -> str:
    out = ["| page | arrival p50 / p90 (ms) | drawn p50 / p90 (ms) | echo before POST answer | output requests/s |",
           "| --- | ---: | ---: | ---: | ---: |"]
    for name, got in results.items():
        n = len(got["arrival"])
        out.append(f"| {name} | {pct(got['arrival'], 50):.1f} / {pct(got['arrival'], 90):.1f} | "
                   f"{pct(got['drawn'], 50):.1f} / {pct(got['drawn'], 90):.1f} | {got['first']}/{n} | "
                   f"{got['output_requests_per_s']:.2f} |")
    med = {name: statistics.median(got["arrival"]) for name, got in results.items()}
    out.append("")
    out.append(f"arrival p50, stream/polls: 1 terminal {med['stream-1'] / med['polls-1']:.2f}, "
               f"4 terminals {med['stream-4'] / med['polls-4']:.2f}; 4 terminals / 1: "
               f"stream {med['stream-4'] / med['stream-1']:.2f}, polls {med['polls-4'] / med['polls-1']:.2f}")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=200, help="timed keys per page")
    parser.add_argument("--block", type=int, default=10, help="keys per page before the next page's turn")
    parser.add_argument("--json", type=Path, help="also write every sample here")
    parser.add_argument("--shots", type=Path, default=Path(__file__).resolve().parent.parent / "browser" / "artifacts")
    args = parser.parse_args()
    args.shots.mkdir(parents=True, exist_ok=True)
    results = run(args)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
