"""The browser benchmark's own parts: what it times must be what it says.

- ``benchmarks/delayproxy.py`` delays each way, keeps order, and takes a new delay;
- ``benchmarks/browser_instrument.js`` finds a terminal's output in every transport
  the widget may use (long polls over XHR and fetch, Server-Sent Events over XHR,
  fetch and EventSource, NDJSON, a WebSocket), for the right terminal only, and times
  it before the page's own handler sees it. The transports are served by a small
  Tornado app in a thread: the point is the page's side, and a labkernel server
  cannot be made to send a stream it does not have yet;
- ``benchmarks/browser_bench.py`` runs end to end against a real JupyterLab (a few
  keys per figure; its figures are benchmarks, not asserted here).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from tornado import web, websocket
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

ROOT = Path(__file__).resolve().parent.parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

from delayproxy import DelayProxyProcess  # noqa: E402

INSTRUMENT = BENCH / "browser_instrument.js"


# -- the delay proxy --------------------------------------------------------------------

@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP echo server on a thread of its own."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def round_trip(sock: socket.socket, data: bytes) -> float:
    start = time.monotonic()
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        got += sock.recv(65536)
    assert got == data
    return time.monotonic() - start


def test_delay_proxy_delays_each_way_keeps_order_and_takes_a_new_delay(echo_port: int) -> None:
    proxy = DelayProxyProcess("127.0.0.1", echo_port, 100)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # 100 ms out and 100 ms back (a generous upper bound only catches a hang).
            assert 0.19 <= round_trip(sock, b"ping") < 5
            # Many small writes arrive whole and in order.
            pieces = [b"%04d;" % i for i in range(300)]
            start = time.monotonic()
            for piece in pieces:
                sock.sendall(piece)
            got = b""
            while len(got) < 5 * 300:
                got += sock.recv(65536)
            assert got == b"".join(pieces)
            assert time.monotonic() - start >= 0.19
            proxy.set_delay(0)
            assert round_trip(sock, b"pong") < 0.15
            proxy.set_delay(30)
            assert round_trip(sock, b"x" * 3_000_000) >= 0.059
    finally:
        proxy.close()
    assert proxy.proc.returncode == 0


# -- the page's instruments ----------------------------------------------------------------

PAGE = "<!doctype html><html><body><p>transports</p></body></html>"


class Channels:
    """What the test sends down each open answer or socket, by name (on the app's loop)."""

    def __init__(self) -> None:
        self.queues: dict[str, asyncio.Queue[Any]] = {}
        self.opened: dict[str, threading.Event] = {}

    def queue(self, name: str) -> asyncio.Queue[Any]:
        self.opened.setdefault(name, threading.Event()).set()
        return self.queues.setdefault(name, asyncio.Queue())


class PageHandler(web.RequestHandler):
    def get(self) -> None:
        self.write(PAGE)


class PollHandler(web.RequestHandler):
    """A long poll: one JSON answer (whatever the test sends) for ``/api/ws/output/<sid>``."""

    async def get(self, sid: str) -> None:
        channels: Channels = self.settings["channels"]
        body = await channels.queue(f"poll:{sid}").get()
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(body))


class StreamHandler(web.RequestHandler):
    """An endless answer: SSE events (``kind=sse``) or NDJSON lines (``kind=ndjson``)."""

    async def get(self) -> None:
        channels: Channels = self.settings["channels"]
        kind = self.get_argument("kind")
        name = self.get_argument("name")
        self.set_header("Content-Type", "text/event-stream" if kind == "sse" else "application/x-ndjson")
        self.write(": hello\n\n" if kind == "sse" else "\n")
        await self.flush()
        queue = channels.queue(f"stream:{name}")
        while True:
            body = await queue.get()
            if body is None:
                return
            if kind == "sse":
                self.write(f"event: output\ndata: {json.dumps(body)}\n\n")
            else:
                self.write(json.dumps(body) + "\n")
            await self.flush()


class TermSocket(websocket.WebSocketHandler):
    """terminado's side: ``["stdout", text]`` messages."""

    async def open(self, name: str) -> None:  # type: ignore[override]
        channels: Channels = self.settings["channels"]
        queue = channels.queue(f"ws:{name}")
        while True:
            text = await queue.get()
            if text is None:
                return
            await self.write_message(json.dumps(["stdout", text]))


@pytest.fixture
def transports() -> Iterator[tuple[str, Any]]:
    """The app on a thread of its own; yields its URL and ``send(channel, body)``."""
    channels = Channels()
    started = threading.Event()
    state: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        app = web.Application([
            (r"/", PageHandler),
            (r"/base/api/ws/output/([^/]+)", PollHandler),
            (r"/base/api/ws/stream", StreamHandler),
            (r"/base/terminals/websocket/([^/]+)", TermSocket),
        ], channels=channels)
        server = HTTPServer(app)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        server.add_sockets([sock])
        state["port"] = sock.getsockname()[1]
        state["loop"] = IOLoop.current()
        started.set()
        IOLoop.current().start()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    loop: IOLoop = state["loop"]

    def send(channel: str, body: Any) -> None:
        assert channels.opened.setdefault(channel, threading.Event()).wait(10), f"{channel} never opened"
        loop.add_callback(lambda: channels.queues[channel].put_nowait(body))

    yield f"http://127.0.0.1:{state['port']}/", send
    loop.add_callback(loop.stop)
    thread.join(5)


#: The page's own handlers, registered after the instruments' (as a page's code is):
#: each notes when it saw a piece of output.
APP = """
window.appSeen = [];
const seen = () => window.appSeen.push(performance.now());
window.open_ = {
  xhrPoll(url) { const x = new XMLHttpRequest(); x.open('GET', url); x.onload = seen; x.send(); },
  xhrPollEarly(url) { const x = new XMLHttpRequest(); x.onload = seen; x.open('GET', url); x.send(); },
  fetchPoll(url) { fetch(url).then(r => r.text()).then(seen); },
  xhrStream(url) { const x = new XMLHttpRequest(); x.open('GET', url); x.onprogress = seen; x.send(); },
  fetchStream(url) {
    fetch(url).then(async (r) => {
      const reader = r.body.getReader();
      for (;;) { const {done} = await reader.read(); if (done) return; seen(); }
    });
  },
  eventSource(url) { new EventSource(url).addEventListener('output', seen); },
  webSocket(url) { const ws = new WebSocket(url); ws.onmessage = seen; },
};
"""

#: (how the page opens it, its URL, the channel the test sends on, kind, session, whether
#: one channel carries several sessions' output)
CASES = {
    "XHR long poll": ("xhrPoll", "base/api/ws/output/S1?wait=25", "poll:S1", "lk", "S1", False),
    "XHR long poll, its handler set before open()": (
        "xhrPollEarly", "base/api/ws/output/S1?wait=25", "poll:S1", "lk", "S1", False),
    "fetch long poll": ("fetchPoll", "base/api/ws/output/S1?wait=25", "poll:S1", "lk", "S1", False),
    "SSE over XHR": ("xhrStream", "base/api/ws/stream?kind=sse&name=a", "stream:a", "lk", "S1", True),
    "SSE over fetch": ("fetchStream", "base/api/ws/stream?kind=sse&name=b", "stream:b", "lk", "S1", True),
    "EventSource": ("eventSource", "base/api/ws/stream?kind=sse&name=c", "stream:c", "lk", "S1", True),
    "NDJSON over fetch": ("fetchStream", "base/api/ws/stream?kind=ndjson&name=d", "stream:d", "lk", "S1", True),
    "WebSocket (terminado)": ("webSocket", "base/terminals/websocket/t1", "ws:t1", "jl", "t1", False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_instrument_finds_a_terminals_output_on_arrival(page: Any, transports: tuple[str, Any], case: str) -> None:
    check_echo(page, transports, case, big=False)


@pytest.mark.parametrize("case", ["XHR long poll", "SSE over fetch", "WebSocket (terminado)"])
def test_instrument_finds_an_echo_in_a_flood_sized_answer(page: Any, transports: tuple[str, Any], case: str) -> None:
    """Answers over 64 KiB are decoded later, and only where the awaited echo may be."""
    check_echo(page, transports, case, big=True)


def check_echo(page: Any, transports: tuple[str, Any], case: str, big: bool) -> None:
    url, send = transports
    how, path, channel, kind, sid, shared = CASES[case]
    page.add_init_script(path=str(INSTRUMENT))
    page.goto(url)
    page.evaluate(APP)
    ws_url = (url + path).replace("http://", "ws://")
    page.evaluate("([how, u]) => window.open_[how](u)", [how, ws_url if kind == "jl" else url + path])
    if kind == "lk" and not shared:
        # Another session's poll, open at the same time, answering with the same letter.
        page.evaluate("([how, u]) => window.open_[how](u)", [how, url + path.replace("S1", "S2")])
    xid = page.evaluate("(spec) => window.__lkb.expect(spec)",
                        {"echo": {"kind": kind, "sid": sid, "text": "Q"}, "timeout": 10_000})
    page.keyboard.press("a")  # the keydown the time is taken from
    # Output that is not this terminal's echo: another session's, the letter outside
    # the output, another letter.
    if kind == "lk" and not shared:
        send("poll:S2", {"data": "xQy", "offset": 0, "nextOffset": 3, "status": "running"})
    if shared:
        send(channel, {"sessionId": "S2", "data": "Q", "offset": 0, "nextOffset": 1})
        send(channel, {"sessionId": "S1", "data": "z", "status": "Q", "offset": 0, "nextOffset": 1})
    if kind == "jl":
        send(channel, "z")
    page.wait_for_timeout(300)
    assert page.evaluate("(id) => window.__lkb.pending(id)", xid), "taken for the echo: output that is not it"
    text = "y\r\n" * 40_000 + "xQy" if big else "xQy"
    body: Any = text if kind == "jl" else {"sessionId": sid, "data": text, "offset": 1, "nextOffset": 4,
                                           "status": "running"}
    if kind == "lk" and not shared:
        body.pop("sessionId")  # a long poll's answer names no session: its URL does
    send(channel, body)
    got = page.evaluate("(id) => window.__lkb.result(id)", xid)
    assert not got["timedOut"], f"{case}: the echo was not found"
    assert got["echo"] >= 250, got  # after the decoys, not at them
    seen = page.evaluate("() => window.appSeen")
    assert seen, "the page's own handler saw nothing"
    # Timed before the page's handler ran (the instrument's listener comes first).
    assert got["t0"] + got["echo"] <= max(seen), (got, seen)


# -- end to end ----------------------------------------------------------------------------

def test_browser_bench_runs_end_to_end(tmp_path: Path) -> None:
    """typing and delay with a few keys: every key timed on both terminals, through the proxy too."""
    out = tmp_path / "browser.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run(
        [sys.executable, str(BENCH / "browser_bench.py"), "--figures", "typing,delay", "--rounds", "1",
         "--block", "4", "--delay-block", "2", "--delays", "0,50", "--json", str(out),
         "--shots", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    typing = results["figures"]["typing"]["samples"]
    kinds = {t["name"]: t["kind"] for t in results["figures"]["typing"]["targets"]}
    assert set(kinds) == set(typing) and set(kinds.values()) == {"lk", "jl"}, kinds
    for name, samples in typing.items():
        assert len(samples) == 4, name
        for s in samples:
            assert not s["timed_out"], (name, s)
            assert 0 < s["echo"] and 0 < s["paint"], (name, s)
            assert s["drawn"] <= s["frame_end"] <= s["paint"], (name, s)
    delayed = results["figures"]["delay"]["samples"]["50.0"]
    for name, samples in delayed.items():
        # 50 ms each way: no echo can come back sooner than 100 ms.
        assert all(s["echo"] >= 100 for s in samples), (name, samples)
    assert "| keydown → paint p50" in run.stdout
    assert (tmp_path / "browser-bench-typing.png").is_file()
