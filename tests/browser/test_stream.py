"""One output stream per page (``GET /api/ws/stream``), as the browser sees it.

A page's terminals read their live output on one Server-Sent Events stream: one
request for all of them, an echo with no new request, a flood that never runs ahead
of what xterm has written. Where a proxy buffers answers the stream brings nothing
and the page falls back to long polls, for good. Every test counts the page's
requests (``RequestLog``): what must hold is visible there, not in timings.
"""

from __future__ import annotations

import re
import time
from typing import Any, Iterator

import pytest

from support.proxy import BufferingProxy

from .labservers import PROMPT, JupyterProcess
from .termpage import Notebook, RequestLog, TerminalView, first_terminal, terminals, wait_until

PROMPT_RX = re.escape(PROMPT.strip()) + "$"


def streams(log: RequestLog, since: float = 0.0) -> list[str]:
    return [url for t, method, url in log.since(since) if method == "GET" and "/api/ws/stream?" in url]


def polls(log: RequestLog, since: float = 0.0) -> list[str]:
    return [url for t, method, url in log.since(since) if method == "GET" and "/api/ws/output/" in url]


def acks(log: RequestLog, since: float = 0.0) -> list[str]:
    return [url for t, method, url in log.since(since) if method == "POST" and url.endswith("/ack")]


def notebook_terminals(page: Any, lab: JupyterProcess, name: str, count: int) -> list[TerminalView]:
    """A notebook whose one cell shows ``count`` Terminals; each connected, at its prompt."""
    names = ", ".join(f"t{i}" for i in range(count))
    cell = (f"from labkernel import Terminal\nfrom IPython.display import display\n"
            f"{names}, = [Terminal(rows=8) for _ in range({count})]\ndisplay({names})")
    lab.write_notebook(f"{name}.ipynb", cell)
    notebook = Notebook(page, lab, f"{name}.ipynb").open(workspace=name)
    notebook.run_cell(0)
    wait_until(lambda: len(terminals(page)) == count, 90, f"{count} terminals")
    views = terminals(page)
    for view in views:
        view.wait_state("connected")
        view.wait_text(PROMPT_RX)
    return views


# -- behind a proxy that buffers ---------------------------------------------------------------


@pytest.fixture
def buffering_proxy(lab: JupyterProcess) -> Iterator[BufferingProxy]:
    proxy = BufferingProxy(lab.port, hold=64 * 1024).start()
    yield proxy
    proxy.close()


def test_behind_a_proxy_that_buffers_the_page_falls_back_to_long_polls_and_remembers(
        lab: JupyterProcess, page: Any, buffering_proxy: BufferingProxy) -> None:
    requests = RequestLog().attach(page)
    page.goto(buffering_proxy.url(lab.base_url, "labkernel/labs/shell", lab.token))
    term = first_terminal(page)
    term.wait_state("connected")
    term.wait_text(PROMPT_RX, timeout=60)  # the prompt came by a long poll, after the stream gave nothing
    term.focus()
    term.run("echo proxied-$((6*7))", r"^proxied-42$")
    page.shot("fell-back")
    assert len(streams(requests)) == 1, "the stream was tried once"
    assert polls(requests), "the output came by long polls"
    remembered = page.evaluate("Object.entries(sessionStorage).filter(([k]) => k.startsWith('labkernel:transport:'))")
    assert [value for _, value in remembered] == ["polls"]

    # The next load of the page does not try the stream again, and works at once.
    before = time.monotonic()
    page.reload()
    term = first_terminal(page)
    term.wait_state("connected")
    term.wait_text(r"^proxied-42$")
    term.focus()
    term.run("echo again-$((6*7))", r"^again-42$")
    assert streams(requests, before) == []
    page.shot("reloaded")

    # Straight to the server, a page in a new tab of its own uses the stream.
    direct = page.context.browser.new_context()
    other = direct.new_page()
    direct_requests = RequestLog().attach(other)
    other.goto(lab.page_url(f"labkernel/sessions/{term.session_id}"))
    view = first_terminal(other)
    view.wait_state("connected")
    view.focus()
    since = time.monotonic()
    view.run("echo direct-$((6*7))", r"^direct-42$")
    assert len(streams(direct_requests)) == 1 and polls(direct_requests, since) == []
    page.shot("direct", other)
    direct.close()


# -- a network drop -----------------------------------------------------------------------------


#: Every output event the page's streams bring, as JavaScript gets them: [offset, nextOffset, data].
RECORD_EVENTS = """
(() => {
  window.__events = [];
  const read = ReadableStreamDefaultReader.prototype.read;
  const buffers = new WeakMap();
  ReadableStreamDefaultReader.prototype.read = function () {
    return read.call(this).then((result) => {
      if (result.value) {
        const state = buffers.get(this) || { decoder: new TextDecoder(), text: '' };
        buffers.set(this, state);
        state.text += state.decoder.decode(result.value, { stream: true });
        let end;
        while ((end = state.text.indexOf('\\n\\n')) >= 0) {
          const block = state.text.slice(0, end);
          state.text = state.text.slice(end + 2);
          if (block.startsWith('event: output\\n')) {
            const e = JSON.parse(block.slice(block.indexOf('data: ') + 6));
            window.__events.push([e.offset, e.nextOffset, e.data, e.truncated]);
          }
        }
      }
      return result;
    });
  };
})();
"""


def test_a_network_drop_mid_flood_on_the_stream_loses_and_repeats_no_byte(lab: JupyterProcess, page: Any) -> None:
    """The network goes away for 30 s (every connection reset, new ones refused) while a
    flood streams; the page says so, then resumes from its offsets."""
    lines = 200_000
    proxy = BufferingProxy(lab.port, hold=0).start()
    try:
        page.add_init_script(RECORD_EVENTS)
        page.goto(proxy.url(lab.base_url, "labkernel/labs/shell", lab.token))
        term = first_terminal(page)
        term.wait_state("connected")
        term.wait_text(PROMPT_RX)
        term.focus()
        term.type(f"seq 1 {lines}")
        term.press("Enter")
        term.wait_text(r"^\d{4,}$")  # the flood is on screen...
        proxy.drop(30)
        term.wait_state("reconnecting", timeout=20)
        assert not re.search(rf"^{lines}$", term.screen(), re.M), "the flood ended before the drop"
        page.shot("dropped")
        term.wait_text(rf"^{lines}\n{PROMPT_RX}", timeout=180)
        term.wait_state("connected")
        page.shot("after")
        events = page.evaluate("window.__events")
    finally:
        proxy.close()
    for before, after in zip(events, events[1:]):
        assert after[0] == before[1], (before[:2], after[:2])
        assert not after[3]
    text = "".join(e[2] for e in events)
    command = f"seq 1 {lines}\r\n"
    start = text.index(command) + len(command)
    end = text.index(PROMPT, start)
    expected = "".join(f"{i}\r\n" for i in range(1, lines + 1))
    assert re.sub(r"\x1b\[\?2004[hl]\r?", "", text[start:end]) == expected
    assert proxy.paths[f"{lab.base_url}api/ws/stream"] >= 2, "the stream was not opened again"


# -- a flood on the stream -------------------------------------------------------------------


#: Longest main-thread tasks, and the most output a terminal had been given and not yet
#: written (the stream's flow control), sampled while the page runs.
WATCH_PAGE = """
(() => {
  window.__tasks = [];
  window.__unwritten = 0;
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.__tasks.push([e.startTime, e.duration]);
    }).observe({ type: 'longtask', buffered: true });
  } catch (e) {}
  setInterval(() => {
    for (const stream of (window.__labkernelStreams || new Map()).values()) {
      for (const sub of stream.subs.values()) {
        window.__unwritten = Math.max(window.__unwritten, sub.next - sub.written);
      }
    }
  }, 20);
})();
"""


def test_a_flood_on_the_stream_is_shown_whole_while_another_terminal_echoes(lab: JupyterProcess, page: Any) -> None:
    page.add_init_script(WATCH_PAGE)
    requests = RequestLog().attach(page)
    flood, typing = notebook_terminals(page, lab, "streamflood", 2)
    typing.focus()
    typing.run("cat", re.escape(PROMPT) + "cat$")
    flood.focus()
    flood.type("clear; yes | head -c 10000000; echo flood-$((40+2))")
    began = page.evaluate("performance.now()")
    flood.press("Enter")
    since = time.monotonic()
    flood.wait_text(r"^y$")  # the flood is on screen
    typing.focus()
    echoes, typed = [], ""
    for key in "abcdefghijklmnopqrst":
        if re.search(r"^flood-42$", flood.screen(), re.M):
            break
        started = time.monotonic()
        typing.press(key)
        typed += key
        typing.wait_text(re.escape(typed) + "$", timeout=30)
        echoes.append(time.monotonic() - started)
        time.sleep(0.1)
    page.shot("during-flood")
    flood.wait_text(r"^flood-42$", timeout=300)
    page.shot("flood-shown")
    assert len(echoes) >= 3, f"the flood ended after {len(echoes)} keys: nothing was tested"
    assert max(echoes) < 10, echoes  # a hang-catcher; the benchmark measures the figure
    # All of it came on the stream, none by polls, with the page acknowledging as it wrote.
    assert polls(requests, since) == []
    assert len(acks(requests, since)) >= 10, "10 MB passed with few acknowledgements: no flow control"
    window = 512 * 1024
    assert 0 < page.evaluate("window.__unwritten") <= 2 * window
    longest = page.evaluate("(t0) => Math.max(0, ...window.__tasks.filter(([t]) => t >= t0).map(([, d]) => d))",
                            began)
    assert longest < 2000, f"a task of {longest:.0f} ms: the page froze"
    # The flood's end, drawn whole before its mark.
    lines = flood.screen().splitlines()
    assert lines[lines.index("flood-42") - 2:lines.index("flood-42")] == ["y", "y"], lines
    print(f"echo during the flood: {len(echoes)} keys, max {max(echoes) * 1000:.0f} ms; "
          f"{len(acks(requests, since))} acknowledgements; most unwritten "
          f"{page.evaluate('window.__unwritten')} characters; longest task {longest:.0f} ms")


# -- four terminals on a page ----------------------------------------------------------------


def test_four_terminals_on_one_page_share_one_stream_and_all_echo_without_polling(
        lab: JupyterProcess, page: Any) -> None:
    requests = RequestLog().attach(page)
    views = notebook_terminals(page, lab, "fourterms", 4)
    time.sleep(1)  # the replays are done and the stream holds all four
    since = time.monotonic()
    for i, view in enumerate(views):
        view.focus()
        view.run(f"echo four-{i}-$((6*7))", rf"^four-{i}-42$")
    for i, view in enumerate(views):
        view.focus()
        for key in "xyz":
            view.press(key)
        view.wait_text(r"xyz$")
        view.press("Control+u")
    page.shot("four-terminals")
    # Idle, with no output: no request at all (the stream's heartbeats keep it open).
    quiet = time.monotonic()
    time.sleep(26)
    assert requests.since(quiet) == [], requests.since(quiet)
    after = requests.since(since)
    assert polls(requests, since) == [], "a terminal polled its output"
    assert streams(requests, since) == [], "the stream was opened again"
    assert {method for _, method, _ in after} == {"POST"}, after
    # One stream carried the four sessions: the last one opened names them all.
    last = streams(requests)[-1]
    assert len(re.findall(r"[?&]read=", last)) == 4
    assert {v.session_id for v in views} == {s["sessionId"] for s in lab.running_sessions()}
