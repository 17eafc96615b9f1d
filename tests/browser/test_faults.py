"""What a workshop does to a terminal: the network drops mid-flood, the server
restarts, the credentials stop being accepted.

Each test drives the real widget in a real page; the faults are real too (the
browser goes offline, the server process is restarted, the token and cookie
secret change), never a faked answer.
"""

from __future__ import annotations

import re
import time
from typing import Any

from .labservers import PROMPT, JupyterProcess
from .termpage import Notebook, RequestLog, TerminalView, first_terminal

PROMPT_RX = re.escape(PROMPT.strip()) + "$"
TERMINAL_CELL = "from labkernel import Terminal\nt = Terminal()\nt"


def notebook_terminal(page: Any, server: JupyterProcess, name: str) -> tuple[Notebook, TerminalView]:
    server.write_notebook(f"{name}.ipynb", TERMINAL_CELL)
    notebook = Notebook(page, server, f"{name}.ipynb").open(workspace=name)
    notebook.run_cell(0)
    term = notebook.terminal()
    term.wait_state("connected")
    term.wait_text(PROMPT_RX)
    return notebook, term


def page_terminal(page: Any, server: JupyterProcess) -> TerminalView:
    page.goto(server.page_url("labkernel/labs/shell"))
    term = first_terminal(page)
    term.wait_state("connected")
    term.wait_text(PROMPT_RX)
    return term


def test_a_30_s_network_drop_mid_flood_loses_and_repeats_no_byte(lab: JupyterProcess, page: Any) -> None:
    lines = 200_000
    # The long polls' path (a page whose stream fell back); the stream's: test_stream.py.
    page.add_init_script("sessionStorage.setItem('labkernel:transport:/a%40b/', 'polls')")
    _, term = notebook_terminal(page, lab, "flood")
    sid = term.session_id
    answers: list[Any] = []
    page.on("response", lambda r: f"/api/ws/output/{sid}?" in r.url and answers.append(r))
    failed: list[str] = []
    page.on("requestfailed", lambda r: f"/api/ws/output/{sid}?" in r.url and failed.append(r.url))

    term.focus()
    term.type(f"seq 1 {lines}")
    term.press("Enter")
    term.wait_text(r"^\d{4,}$")  # the flood is on screen...
    page.context.set_offline(True)
    assert not re.search(rf"^{lines}$", term.screen(), re.M), "the flood ended before the drop"
    term.wait_state("reconnecting", timeout=20)
    page.shot("offline")
    time.sleep(30)
    shown_offline = term.screen()
    page.context.set_offline(False)

    term.wait_text(rf"^{lines}\n{PROMPT_RX}", timeout=180)
    term.wait_state("connected")
    page.shot("after")
    assert failed, "no output request failed: the drop did not reach the widget"
    assert not re.search(rf"^{lines}$", shown_offline, re.M), "the flood ended during the drop"

    # What the page received, answer by answer: each starts where the last ended.
    # (Listening began after the prompt arrived: the chain starts there.)
    bodies = [r.json() for r in answers if r.status == 200]
    for before, after in zip(bodies, bodies[1:]):
        assert after["offset"] == before["nextOffset"], (before["nextOffset"], after["offset"])
        assert not after["truncated"]
    stream = "".join(b["data"] for b in bodies)
    command = f"seq 1 {lines}\r\n"
    start = stream.index(command) + len(command)
    end = stream.index(PROMPT, start)
    expected = "".join(f"{i}\r\n" for i in range(1, lines + 1))
    # bash switches bracketed paste off before the command and on again for the prompt.
    assert re.sub(r"\x1b\[\?2004[hl]\r?", "", stream[start:end]) == expected
    # ...and what xterm shows above the prompt is the flood's tail, in order.
    rows = term.screen().split("\n")
    tail = rows[:rows.index(next(r for r in rows if r.startswith(PROMPT.strip())))]
    assert tail and [int(r) for r in tail] == list(range(lines - len(tail) + 1, lines + 1))


def test_a_server_restart_shows_not_found_and_offers_a_new_session(own_lab: JupyterProcess, page: Any) -> None:
    """A server that dies (OOM, a container restarted) and comes back without its sessions.

    Killed, it cannot answer the pending polls: the widget finds its session gone.
    (A graceful stop answers them first with the session's end: see the next test.)
    """
    requests = RequestLog().attach(page)
    _, widget = notebook_terminal(page, own_lab, "restart")
    lab_page = page.context.new_page()
    requests.attach(lab_page)
    standalone = page_terminal(lab_page, own_lab)
    old = standalone.session_id

    own_lab.restart(kill=True)  # same port, token and cookie secret: only the sessions are gone

    for term in (widget, standalone):
        term.wait_state("not_found", timeout=90)
        assert "no longer exists" in term.status_text
        assert term.root.locator(".labkernel-restart").is_visible()
    settled = time.monotonic()
    page.shot("widget-not-found")
    page.shot("page-not-found", lab_page)
    time.sleep(10)
    assert not requests.since(settled), f"requests after not_found: {requests.since(settled)}"

    # The page's button starts a new session on the restarted server.
    standalone.root.locator(".labkernel-restart").click()
    standalone.wait_state("connected")
    assert standalone.session_id not in ("", old)
    standalone.wait_text(PROMPT_RX)
    standalone.focus()
    standalone.run("echo new-$((6*7))", r"^new-42$")
    page.shot("page-new-session", lab_page)

    # So does the widget's, though its kernel died with the server: the browser starts it.
    # (First close JupyterLab's own "Server Connection Error" dialog, a modal over the page.)
    dialog = page.locator(".jp-Dialog")
    if dialog.count():
        dialog.locator(".jp-Dialog-footer button").last.click()
        dialog.wait_for(state="detached")
    old = widget.session_id
    widget.root.locator(".labkernel-restart").click()
    widget.wait_state("connected")
    assert widget.session_id not in ("", old)
    widget.wait_text(PROMPT_RX)
    widget.focus()
    widget.run("echo widget-$((6*7))", r"^widget-42$")
    page.shot("widget-new-session")


def test_a_graceful_server_restart_shows_the_end_and_offers_a_new_session(
        own_lab: JupyterProcess, page: Any) -> None:
    requests = RequestLog().attach(page)
    lab_page = page
    standalone = page_terminal(lab_page, own_lab)

    own_lab.restart()  # SIGTERM: the server stops every session before it exits

    standalone.wait_state("ended", "not_found", timeout=90)
    assert standalone.root.locator(".labkernel-restart").is_visible()
    settled = time.monotonic()
    page.shot("page-after-restart")
    time.sleep(5)
    assert not requests.since(settled), f"requests after the end: {requests.since(settled)}"
    standalone.root.locator(".labkernel-restart").click()
    standalone.wait_state("connected")
    standalone.wait_text(PROMPT_RX)
    standalone.focus()
    standalone.run("echo new-$((6*7))", r"^new-42$")


def test_refused_credentials_show_forbidden_without_a_retry_storm(own_lab: JupyterProcess, page: Any) -> None:
    requests = RequestLog().attach(page)
    _, widget = notebook_terminal(page, own_lab, "forbidden")
    lab_page = page.context.new_page()
    requests.attach(lab_page)
    standalone = page_terminal(lab_page, own_lab)

    # A new token and cookie secret: the pages' login cookie and token are refused (403).
    own_lab.restart(new_credentials=True, kill=True)

    for term in (widget, standalone):
        term.wait_state("forbidden", timeout=90)
        assert re.search(r"sign in|not signed in|not allowed", term.status_text, re.I), term.status_text
    settled = time.monotonic()
    page.shot("widget-forbidden")
    page.shot("page-forbidden", lab_page)
    time.sleep(15)
    assert not requests.since(settled), f"requests after forbidden: {requests.since(settled)}"
