"""Keydown → paint with predictive echo on and off, one page, alternating (issue 13, item 4).

Not a test and not the benchmark (benchmarks/ is being rewritten): a small script
to measure what prediction changes. A real ``jupyter lab`` (tests/browser's
JupyterProcess), the stand-alone lab page in Debian's Chromium, optionally behind
a TCP proxy on 127.0.0.1 that delays every byte by ``--delay`` ms each way.

Per key: the keydown's timestamp in the page; the first DOM mutation of xterm's
rows that shows the line typed so far; the next animation frame after it (xterm
renders in a frame; the frame after is when that render is on screen). The next
key is typed once the echo has confirmed the last (no dim cell left), so every
key is measured on its own. Lines of 20 letters, alternating on / off per line,
Ctrl-U between lines (its next key is held: prediction resumes after an echo).

    PYTHONPATH=. python tests/browser/measure_predict.py --keys 120 [--delay 150]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from browser.labservers import CHROMIUM, CHROMIUM_ARGS, PROMPT, JupyterProcess  # noqa: E402

MEASURE = """
window.__m = { samples: [], expect: null, t0: 0 };
document.addEventListener('keydown', (e) => {
  if (window.__m.expect !== null) window.__m.t0 = e.timeStamp;
}, true);
(function attach() {
  const rows = document.querySelector('.labkernel-terminal .xterm-rows');
  if (!rows) { setTimeout(attach, 20); return; }
  new MutationObserver(() => {
    const m = window.__m;
    if (m.expect === null) return;
    const text = rows.textContent.replace(/\\u00a0/g, ' ');
    if (!text.includes(m.expect)) return;
    const t0 = m.t0;
    m.expect = null;
    const rendered = performance.now();
    // After this frame's rendering steps (a message posted from it), then the next frame.
    const channel = new MessageChannel();
    channel.port1.onmessage = () => {
      const frameEnd = performance.now();
      requestAnimationFrame(() => m.samples.push({
        render: rendered - t0, frameEnd: frameEnd - t0, paint: performance.now() - t0 }));
    };
    channel.port2.postMessage(0);
  }).observe(rows, { childList: true, subtree: true, characterData: true });
})();
"""


class DelayProxy:
    """127.0.0.1:port → target, every chunk delivered `delay` s after it arrived, in order."""

    def __init__(self, target_port: int, delay: float):
        self.target_port = target_port
        self.delay = delay
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result()

    async def _serve(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        for sock in (writer, up_writer):
            sock.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()

        def deliver(data: bytes | None) -> None:
            if writer.is_closing():
                return
            if data is None:
                writer.close()
            else:
                writer.write(data)

        try:
            while data := await reader.read(65536):
                loop.call_later(self.delay, deliver, data)
        except ConnectionError:
            pass
        loop.call_later(self.delay, deliver, None)


COUNTS = ("keys", "predicted", "confirmed", "rolledBack", "rollbacks")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=120, help="keys measured per mode")
    parser.add_argument("--delay", type=float, default=0, help="ms added each way by a TCP proxy")
    parser.add_argument("--line", type=int, default=20, help="keys per line")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    server = JupyterProcess("lab").start()
    proxy = DelayProxy(server.port, args.delay / 1000) if args.delay else None
    url = server.page_url("labkernel/labs/shell")
    if proxy:
        url = url.replace(f":{server.port}/", f":{proxy.port}/")
    rng = random.Random(13)
    results: dict[str, list[dict]] = {"on": [], "off": []}
    counts: dict[str, dict] = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.add_init_script(MEASURE)
            page.goto(url)
            page.wait_for_function(
                "() => document.querySelector('.labkernel-terminal')?.dataset.state === 'connected'",
                timeout=120_000)
            page.wait_for_function(
                "(p) => document.querySelector('.xterm-rows').textContent.includes(p)", arg=PROMPT.strip(),
                timeout=60_000)
            page.locator(".xterm-screen").click()
            mode = "on"
            while min(len(v) for v in results.values()) < args.keys:
                page.evaluate(f"labkernelPage.setPredict({'true' if mode == 'on' else 'false'})")
                page.keyboard.press("Control+u")
                page.wait_for_function(
                    "(p) => !document.querySelector('.xterm-rows .xterm-dim')"
                    " && [...document.querySelectorAll('.xterm-rows > div')]"
                    "    .some((r) => r.textContent.replace(/\\u00a0/g, ' ').trimEnd() === p)",
                    arg=PROMPT.strip(), timeout=30_000)
                stats0 = page.evaluate("labkernelPage.prediction")
                typed = ""
                for _ in range(args.line):
                    ch = rng.choice("abcdefghijklmnopqrstuvwxyz")
                    typed += ch
                    page.evaluate("(e) => { window.__m.expect = e; }", PROMPT + typed)
                    n = page.evaluate("window.__m.samples.length")
                    page.keyboard.press(ch)
                    page.wait_for_function(f"() => window.__m.samples.length > {n}", timeout=30_000)
                    sample = page.evaluate("window.__m.samples.at(-1)")
                    # The echo confirms it (nothing dim left) before the next key.
                    page.wait_for_function("() => !document.querySelector('.xterm-rows .xterm-dim')", timeout=30_000)
                    time.sleep(rng.uniform(0.02, 0.06))
                    results[mode].append(sample)
                stats1 = page.evaluate("labkernelPage.prediction")
                c = counts.setdefault(mode, dict.fromkeys(COUNTS, 0))
                for k in c:
                    c[k] += stats1[k] - stats0[k]
                mode = "off" if mode == "on" else "on"
            browser.close()
    finally:
        server.close()
    print(f"keydown → paint, ms (n per mode ≥ {args.keys}, one page, alternating per line"
          f"{f', {args.delay:g} ms added each way' if args.delay else ''})")
    for mode in ("on", "off"):
        paint = [s["paint"] for s in results[mode]]
        render = [s["render"] for s in results[mode]]
        end = [s["frameEnd"] for s in results[mode]]
        print(f"  prediction {mode:3}: paint p50 {statistics.median(paint):6.1f}  p90 {pct(paint, 90):6.1f}"
              f"   | drawn p50 {statistics.median(render):6.1f}  p90 {pct(render, 90):6.1f}"
              f"   | frame end p50 {statistics.median(end):6.1f}  p90 {pct(end, 90):6.1f}   n={len(paint)}")
    c = counts.get("on", {})
    if c:
        share = 100 * c["predicted"] / max(1, c["keys"])
        print(f"  on: {c['predicted']} of {c['keys']} keys predicted ({share:.0f} %), "
              f"{c['confirmed']} confirmed, {c['rolledBack']} rolled back in {c['rollbacks']} rollbacks")
    print("  off: predicted", counts.get("off", {}).get("predicted"))


if __name__ == "__main__":
    main()
