"""The Terminal widget in JupyterLab 4, in Chromium, against a real ``jupyter lab``.

Every test opens a notebook of its own (in a workspace of its own), runs its cells
as a user does and types into the terminal with the keyboard. The server runs at
base URL ``/a%40b/``, so every request the widget makes must carry it.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any
from urllib.parse import urlparse

import pytest

from .labservers import PROMPT, JupyterProcess
from .termpage import Notebook, RequestLog, TerminalView, wait_until

PROMPT_RX = re.escape(PROMPT.strip())

TERMINAL_CELL = "from labkernel import Terminal\nt = Terminal()\nt"


def open_terminal(page: Any, server: JupyterProcess, name: str, *cells: str) -> tuple[Notebook, TerminalView]:
    """Write a notebook of ``cells`` (a Terminal first), open it, run the first cell."""
    server.write_notebook(f"{name}.ipynb", *(cells or (TERMINAL_CELL,)))
    notebook = Notebook(page, server, f"{name}.ipynb").open(workspace=name)
    notebook.run_cell(0)
    term = notebook.terminal()
    term.wait_state("connected")
    term.wait_text(PROMPT_RX + "$")
    term.focus()
    return notebook, term


def test_a_notebook_cell_shows_a_terminal_that_echoes_what_is_typed(lab: JupyterProcess, page: Any) -> None:
    requests = RequestLog().attach(page)
    _, term = open_terminal(page, lab, "echo")

    term.run("echo hello", r"^hello$")

    page.shot("hello")
    assert term.status_text == "Connected"
    session = lab.session(term.session_id)
    assert session["status"] == "running" and session["labId"] == "shell"
    # The command went through the PTY the server runs, not just onto the screen.
    assert "hello\r\n" in lab.output_text(term.session_id)
    # Under base URL /a%40b/ every labkernel request carries it, encoded as the server has it.
    paths = {urlparse(url).path for _, _, url in requests.requests}
    assert paths and all(p.startswith("/a%40b/api/") for p in paths), paths


def test_ctrl_c_stops_a_running_program(lab: JupyterProcess, page: Any) -> None:
    _, term = open_terminal(page, lab, "ctrlc")
    term.type("sleep 100")
    term.press("Enter")
    # sleep has started when it is the PTY's foreground job: wait until the line is echoed.
    term.wait_text(r"sleep 100$")
    time.sleep(1)
    started = time.monotonic()
    term.press("Control+c")
    term.wait_text(r"\^C\n" + PROMPT_RX + "$", timeout=20)
    assert time.monotonic() - started < 20
    term.run("echo after-$((40+2))", r"^after-42$")
    page.shot("after-ctrl-c")


def test_vim_opens_edits_and_quits(lab: JupyterProcess, page: Any) -> None:
    _, term = open_terminal(page, lab, "vim")
    term.type("vim -N -u NONE notes.txt")
    term.press("Enter")
    term.wait_text(r'"notes.txt" \[New\]')
    term.wait_text(r"^~$")  # vim's empty-buffer rows: it owns the screen
    term.type("ihello from vim")
    term.press("Escape")
    page.shot("vim-open")
    term.type(":wq")
    term.press("Enter")
    term.wait_text(PROMPT_RX + "$")
    assert not re.search(r"^~$", term.screen(), re.M), "vim's screen is still shown"
    term.run("cat notes.txt", r"^hello from vim$")
    assert (lab.root / "notes.txt").read_text() == "hello from vim\n"


def test_a_window_resize_reaches_stty_size(lab: JupyterProcess, page: Any) -> None:
    _, term = open_terminal(page, lab, "resize")
    rows, cols = map(int, term.run("stty size", r"^(\d+) (\d+)$").groups())
    page.shot("wide")

    page.set_viewport_size({"width": 900, "height": 900})
    # The fit addon refits to the narrower cell and the new size is sent to the PTY.
    wait_until(lambda: lab.session(term.session_id)["cols"] < cols, 20, "a narrower PTY")
    session = lab.session(term.session_id)
    term.type("clear; stty size")
    term.press("Enter")
    term.wait_text(rf"^{session['rows']} {session['cols']}$")
    assert session["cols"] < cols and session["rows"] == rows
    page.shot("narrow")


def test_a_reloaded_page_attaches_to_the_same_session_with_its_scrollback(lab: JupyterProcess, page: Any) -> None:
    notebook, term = open_terminal(page, lab, "reload")
    sid = term.session_id
    term.run("echo before-$((6*7))", r"^before-42$")
    notebook.save()  # the widget's output (its model id) is in the saved notebook

    page.reload()
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    term = notebook.terminal()
    term.wait_state("connected")

    assert term.session_id == sid
    term.wait_text(r"^before-42$")  # what the session printed before the reload
    term.focus()
    term.run("echo after-$((6*7))", r"^after-42$")
    assert [s["sessionId"] for s in lab.running_sessions()] == [sid]
    page.shot("reloaded")


def test_the_terminal_answers_while_the_kernel_is_busy(lab: JupyterProcess, page: Any) -> None:
    notebook, term = open_terminal(page, lab, "busy", TERMINAL_CELL, "import time\ntime.sleep(30)")
    notebook.run_cell(1)
    wait_until(lambda: notebook.kernel()["execution_state"] == "busy", 20, "the kernel to be busy")

    started = time.monotonic()
    term.focus()
    term.run("echo busy-$((6*7))", r"^busy-42$", timeout=20)

    assert notebook.kernel()["execution_state"] == "busy", "the kernel finished before the check"
    assert time.monotonic() - started < 20
    page.shot("kernel-busy")


def test_the_terminal_answers_after_a_kernel_restart(lab: JupyterProcess, page: Any) -> None:
    cell = "import os\nopen('kernel.pid', 'w').write(str(os.getpid()))\n" + TERMINAL_CELL
    notebook, term = open_terminal(page, lab, "restart", cell)
    wait_until(lambda: (lab.root / "kernel.pid").exists(), 20, "the kernel's pid")
    old_pid = int((lab.root / "kernel.pid").read_text())

    notebook.restart_kernel()
    wait_until(lambda: not _alive(old_pid), 30, "the old kernel process to end")
    notebook.wait_kernel_idle()

    term = notebook.terminal()
    term.focus()
    term.run("echo restarted-$((6*7))", r"^restarted-42$", timeout=20)
    assert term.state == "connected"
    page.shot("kernel-restarted")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_session_ending_shows_ended_without_a_request_loop(lab: JupyterProcess, page: Any) -> None:
    requests = RequestLog().attach(page)
    _, term = open_terminal(page, lab, "ended")
    restart = term.root.locator(".labkernel-restart")
    assert not restart.is_visible()

    term.type("exit 3")
    term.press("Enter")
    term.wait_state("ended", timeout=20)
    assert "exit code 3" in term.status_text
    settled = time.monotonic()
    time.sleep(10)
    after = requests.since(settled)
    assert len(after) <= 1, f"{len(after)} requests after the session ended: {after}"
    assert restart.is_visible()
    page.shot("ended")


def test_the_new_session_button_after_an_end_starts_a_session_that_answers(
        lab: JupyterProcess, page: Any) -> None:
    _, term = open_terminal(page, lab, "newsession")
    ended = term.session_id
    term.type("exit")
    term.press("Enter")
    term.wait_state("ended", timeout=20)

    term.root.locator(".labkernel-restart").click()
    wait_until(lambda: term.session_id not in ("", ended), 20, "a new session id")
    term.wait_state("connected")
    term.wait_text(PROMPT_RX + "$")
    assert lab.session(term.session_id)["status"] == "running"
    term.focus()
    term.run("echo again", r"^again$")
    page.shot("new-session")


@pytest.mark.parametrize("size", [1024 * 1024])
def test_a_paste_of_a_megabyte_arrives_whole_and_in_order(lab: JupyterProcess, page: Any, size: int) -> None:
    _, term = open_terminal(page, lab, "paste")
    # Numbered lines well under the line discipline's 4095-byte limit of a canonical line.
    lines, n = [], 0
    while sum(map(len, lines)) < size:
        n += 1
        lines.append(f"{n:07d} " + "abcdefghij" * 9 + "\n")
    text = "".join(lines)
    term.run("stty -echo; cat > pasted.txt; stty echo", r"stty echo$")

    page.evaluate("""text => {
        const target = document.querySelector('.labkernel-terminal .xterm-helper-textarea');
        const data = new DataTransfer();
        data.setData('text/plain', text);
        target.dispatchEvent(new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true}));
    }""", text)
    wait_until(lambda: (lab.root / "pasted.txt").exists()
               and (lab.root / "pasted.txt").stat().st_size >= len(text), 120,
               "the pasted text in the file")
    term.press("Control+d")
    term.wait_text(PROMPT_RX + "$")
    assert (lab.root / "pasted.txt").read_text() == text
    page.shot("pasted")
