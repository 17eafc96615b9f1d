"""A reload or a second view replays the session's history without answering its queries.

Programs ask the terminal things (vim: cursor position, device attributes, colours,
modes) and xterm answers through the same channel as keystrokes. When a page is
reloaded, the history it replays still holds those queries: answered again, the
answers were typed into the shell (``2RR0;276;0c10;rgb:…`` at the prompt). Here a
session's history is full of queries, the page is reloaded or opened a second time,
and the test watches every input POST: none may leave the page but what the test
types, while a query that arrives live still gets its answer.
"""

from __future__ import annotations

import re
import time
from typing import Any

from .labservers import PROMPT, JupyterProcess
from .termpage import InputLog, TerminalView, first_terminal, wait_until
from .test_cursor import RUNNING_ANIMATIONS
from .test_jupyterlab import open_terminal

PROMPT_RX = re.escape(PROMPT.strip())

#: Queries of every kind xterm answers, asked live; the program reads the answers
#: itself (up to DECRQM's final `y`), as vim does, so none is left at the prompt.
ASK = (r"stty -echo; printf '\e[6n\e[c\e[>c\e]10;?\a\e]11;?\a\e[?2026$p'; "
       r"read -rs -t 5 -d y answers; stty echo; echo asked:${#answers}")

#: A cursor-position query asked live: its answer is `ESC[row;colR`.
WHERE = (r"stty -echo; printf '\e[6n' > /dev/tty; read -rs -d R -t 5 pos < /dev/tty; "
         r"stty echo; echo got:${pos#*[}")

#: What an answer typed into the shell would leave in its output.
ANSWER_RX = re.compile(r"\d+;\d+R|\[\?1;2c|\d+;\d+;\dc|rgb:|\$y")


def settled(term: TerminalView) -> None:
    """Wait until the view is connected and has drawn all of its history, then a little more."""
    term.wait_state("connected")
    wait_until(lambda: term.root.get_attribute("data-replay") is None, 60, "the replay to be drawn")
    time.sleep(1.5)  # an answer would be on its way by now


def assert_sent_nothing(term: TerminalView, inputs: InputLog, who: str) -> None:
    """No input left the page, and the prompt is the screen's last line with nothing after it."""
    assert inputs.typed() == "", f"{who} sent {inputs.typed()!r}"
    term.wait_text(r"\A" + PROMPT_RX + "$")


def ask_everything(term: TerminalView) -> None:
    """Fill the session's history with queries, answered live: printf, vim, then clear."""
    term.run(ASK, r"^asked:[1-9]\d*$")
    term.type("vim -N -u NONE notes.txt")
    term.press("Enter")
    term.wait_text(r'"notes.txt" \[New\]')
    time.sleep(1)  # vim asks its questions once it has drawn
    term.page.shot("vim")
    term.type(":q")
    term.press("Enter")
    term.wait_text(PROMPT_RX + "$")
    term.run("clear", r"\A" + PROMPT_RX + "$")  # the screen is clean; the history is not


def assert_live_query_answered(term: TerminalView, inputs: InputLog) -> None:
    """A query that arrives live is answered, by this page: its answer is the last input sent."""
    term.focus()
    inputs.clear()
    row, col = map(int, term.run(WHERE, r"^got:(\d+);(\d+)$").groups())
    assert 1 <= row <= 200 and col >= 1
    assert inputs.typed() == f"{WHERE}\r\x1b[{row};{col}R"


def test_a_reloaded_lab_page_sends_nothing_for_the_queries_it_replays(lab: JupyterProcess, page: Any) -> None:
    inputs = InputLog().attach(page)
    page.goto(lab.page_url("labkernel/labs/shell"))
    term = first_terminal(page)
    term.wait_state("connected")
    term.wait_text(PROMPT_RX + "$")
    term.focus()
    ask_everything(term)
    sid = term.session_id
    history = lab.output_text(sid)
    for query in ("\x1b[6n", "\x1b[c", "\x1b]11;?"):
        assert query in history
    page.shot("before-reload")

    inputs.clear()
    page.reload()
    term = first_terminal(page)
    settled(term)
    assert term.session_id == sid
    assert_sent_nothing(term, inputs, "the reloaded page")
    page.shot("reloaded")

    # A second view of the same session replays the same history.
    second = page.context.new_page()
    inputs.attach(second)
    second.goto(lab.page_url(f"labkernel/sessions/{sid}"))
    other = first_terminal(second)
    settled(other)
    assert_sent_nothing(other, inputs, "the second view")
    page.shot("second-view", second)
    second.close()

    # What the shell got since is what is typed now, and nothing before it.
    offset = lab.session(sid)["outputOffset"]
    term.focus()
    term.run("echo clean-$((6*7))", r"^clean-42$")
    assert inputs.typed() == "echo clean-$((6*7))\r"
    since = lab.output_text(sid, offset)
    assert not ANSWER_RX.search(since.split("echo clean")[0]), since
    assert_live_query_answered(term, inputs)
    page.shot("live-query")


# Where each keydown fell: while the history was still being drawn, or after.
RECORD_KEYS = """
window.__keysDuringReplay = [];
document.addEventListener('keydown', () => window.__keysDuringReplay.push(
  !!document.querySelector('.labkernel-terminal[data-replay]')), true);
"""


def test_keys_typed_while_the_history_is_drawn_reach_the_shell_and_nothing_else(lab: JupyterProcess, page: Any) -> None:
    sid = lab.ok("POST", "api/labs/start", {"labId": "shell"}, expect=201)["sessionId"]
    # With no view attached nobody answers: ~2.5 MB of history, 160000 queries in it.
    lab.ok("POST", "api/ws/message", {"sessionId": sid, "command": (
        r"for i in $(seq 40000); do printf 'history %05d \e[6n\e[c\e]11;?\a\e[?2026$p\n' $i; done;"
        r" echo history-$((6*7))")})
    wait_until(lambda: "history-42" in lab.output_text(sid, max(0, lab.session(sid)["outputOffset"] - 200)),
               120, "the history to be written")

    # Replayed reads ask for at most the bytes up to the boundary (`max=`). The second
    # one is held until the keys are typed, so they go out while the history is drawn.
    replay_reads: list[Any] = []
    held: list[Any] = []

    def hold_second_replay_read(route: Any) -> None:
        if "max=" in route.request.url:
            replay_reads.append(route.request.url)
            if len(replay_reads) == 2:
                held.append(route)
                return
        route.continue_()

    page.add_init_script(RECORD_KEYS)
    page.route(re.compile(r".*/api/ws/output/.*"), hold_second_replay_read)
    inputs = InputLog().attach(page)
    page.goto(lab.page_url(f"labkernel/sessions/{sid}"))
    term = first_terminal(page)
    wait_until(lambda: term.root.get_attribute("data-replay") == "true", 60, "the replay to start")
    line = "echo typed-while-replaying-$((6*7))"
    page.keyboard.type(line, delay=20)
    page.keyboard.press("Enter")
    during = page.evaluate("window.__keysDuringReplay")
    page.shot("typed-during-replay")
    assert held, f"the history came in one read ({replay_reads}): nothing was held"
    for route in held:
        route.continue_()
    term.wait_text(r"^typed-while-replaying-42$", timeout=120)
    settled(term)
    assert sum(during) >= len(line), f"only {sum(during)} of {len(during)} keys fell inside the replay"
    assert inputs.typed() == line + "\r"
    assert_live_query_answered(term, inputs)
    page.shot("after-replay")


def test_a_reloaded_notebook_terminal_sends_nothing_for_the_queries_it_replays(lab: JupyterProcess, page: Any) -> None:
    inputs = InputLog().attach(page)
    notebook, term = open_terminal(page, lab, "replay")
    ask_everything(term)
    sid = term.session_id
    notebook.save()
    page.shot("before-reload")

    inputs.clear()
    page.reload()
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    term = notebook.terminal()
    settled(term)
    assert term.session_id == sid
    assert_sent_nothing(term, inputs, "the reloaded notebook")
    page.shot("reloaded")
    assert_live_query_answered(term, inputs)
    # Focused in JupyterLab: the cursor blinks without a CSS animation (test_cursor.py).
    assert page.evaluate(RUNNING_ANIMATIONS) == 0
    page.shot("live-query")
