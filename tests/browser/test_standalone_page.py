"""The stand-alone lab page (``labkernel/labs/{labId}``, ``labkernel/sessions/{id}``).

It is meant for hosts whose proxies allow no WebSocket at all, so it runs here with
every WebSocket of the page made to fail: ``window.WebSocket`` throws (an init
script, before any of the page's code) and Playwright refuses any WebSocket that
would still be opened.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from .labservers import PROMPT, JupyterProcess
from .termpage import first_terminal

PROMPT_RX = re.escape(PROMPT.strip()) + "$"

BLOCK_WEBSOCKETS = """
(() => {
  window.__webSocketAttempts = 0;
  const Blocked = function WebSocket(url) {
    window.__webSocketAttempts += 1;
    throw new DOMException(`WebSockets are blocked on this page (${url})`, 'SecurityError');
  };
  Blocked.CONNECTING = 0; Blocked.OPEN = 1; Blocked.CLOSING = 2; Blocked.CLOSED = 3;
  window.WebSocket = Blocked;
})();
"""


@pytest.fixture
def no_websockets(page: Any) -> Any:
    page.add_init_script(BLOCK_WEBSOCKETS)
    opened = []

    def refuse(ws: Any) -> None:
        opened.append(ws.url)
        ws.close(code=1008, reason="blocked by the test")

    page.route_web_socket(re.compile(".*"), refuse)
    yield page
    assert not opened, f"the page opened WebSockets: {opened}"
    assert page.evaluate("window.__webSocketAttempts") == 0


def test_the_lab_page_starts_a_lab_and_runs_a_command_without_websockets(lab: JupyterProcess,
                                                                         no_websockets: Any) -> None:
    page = no_websockets
    page.goto(lab.page_url("labkernel/labs/shell"))
    term = first_terminal(page)
    term.wait_state("connected")
    term.wait_text(PROMPT_RX)
    term.focus()
    term.run("echo page-$((6*7))", r"^page-42$")
    sid = term.session_id
    assert lab.session(sid)["labId"] == "shell"
    page.shot("lab-page")

    # The page remembers its session: a reload attaches again instead of starting over.
    page.reload()
    term = first_terminal(page)
    term.wait_state("connected")
    assert term.session_id == sid
    term.wait_text(r"^page-42$")
    assert [s["sessionId"] for s in lab.running_sessions()] == [sid]


def test_the_session_page_attaches_to_a_running_session(lab: JupyterProcess, no_websockets: Any) -> None:
    page = no_websockets
    sid = lab.ok("POST", "api/labs/start", {"labId": "shell"}, expect=201)["sessionId"]
    lab.ok("POST", "api/ws/message", {"sessionId": sid, "command": "echo started-by-$((1+1))-api"})

    page.goto(lab.page_url(f"labkernel/sessions/{sid}"))
    term = first_terminal(page)
    term.wait_state("connected")
    assert term.session_id == sid
    term.wait_text(r"^started-by-2-api$")
    term.focus()
    term.run("echo from-page", r"^from-page$")
    page.shot("session-page")
