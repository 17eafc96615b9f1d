"""Predictive echo in a real page: keys drawn before their echo, never where they do not belong.

With prediction on (the default), a printable key typed at a shell prompt is drawn
at once, dim, and becomes the server's own character when its echo arrives; with
``?predict=0`` (``Terminal(predict=False)`` in a notebook) keys show only when
echoed. Either way the screen must end exactly as the shell drew it: typed lines,
Tab completions, vim (the alternate screen: never predicted), password prompts
(nothing typed ever shows) and a slow program whose echo differs from the key
(the prediction is rolled back). A watcher in the page sees every cell xterm's DOM
renderer draws dim (predictions are dim), every screen it shows, and the
predictor's counts; the input POSTs show that predictions never reach the shell.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from .labservers import PROMPT, JupyterProcess
from .termpage import InputLog, TerminalView, first_terminal, wait_until
from .test_jupyterlab import open_terminal

PROMPT_RX = re.escape(PROMPT.strip())

#: Watches the terminal's rows from the page's start: how often dim cells were drawn
#: and what they said, and whether a screen ever contained `needle`.
WATCH = """
window.__watch = { dimFrames: 0, dimText: '', needle: null, needleSeen: false };
(function attach() {
  const rows = document.querySelector('.labkernel-terminal .xterm-rows');
  if (!rows) { setTimeout(attach, 20); return; }
  new MutationObserver(() => {
    const w = window.__watch;
    const dims = rows.querySelectorAll('.xterm-dim');
    if (dims.length) {
      w.dimFrames += 1;
      w.dimText += [...dims].map((d) => d.textContent).join('') + '|';
    }
    if (w.needle && rows.textContent.includes(w.needle)) w.needleSeen = true;
  }).observe(rows, { childList: true, subtree: true, characterData: true });
})();
"""


def watch(page: Any, needle: str | None = None) -> None:
    page.evaluate("(needle) => Object.assign(window.__watch, "
                  "{dimFrames: 0, dimText: '', needle, needleSeen: false})", needle)


def watched(page: Any) -> dict[str, Any]:
    return page.evaluate("window.__watch")


def prediction(page: Any) -> dict[str, Any]:
    return page.evaluate("labkernelPage.prediction")


def dim_cells(term: TerminalView) -> int:
    return term.root.locator(".xterm-rows .xterm-dim").count()


def open_page(lab: JupyterProcess, page: Any, predict: str) -> TerminalView:
    page.add_init_script(WATCH)
    page.goto(lab.page_url("labkernel/labs/shell" + ("?predict=0" if predict == "off" else "")))
    term = first_terminal(page)
    term.wait_state("connected")
    term.wait_text(PROMPT_RX + "$")
    term.focus()
    assert term.root.get_attribute("data-predict") == predict
    return term


def settle(term: TerminalView) -> None:
    """Every prediction confirmed or taken back: no dim cell left."""
    wait_until(lambda: dim_cells(term) == 0, 10, "no prediction left on the screen")


def last_lines(term: TerminalView, n: int) -> list[str]:
    return term.screen().split("\n")[-n:]


def check_predicted(page: Any, predict: str, before: dict[str, Any], keys: int) -> dict[str, Any]:
    """On: most keys were drawn ahead and none rolled back; off: none drawn, ever."""
    now = prediction(page)
    drawn = now["predicted"] - before["predicted"]
    seen = watched(page)
    if predict == "on":
        assert drawn >= keys // 2, f"only {drawn} of {keys} keys predicted"
        assert seen["dimFrames"] > 0, "no prediction was ever drawn"
        assert now["rolledBack"] == before["rolledBack"], now
    else:
        assert drawn == 0 and seen["dimFrames"] == 0, (now, seen)
    return now


@pytest.mark.parametrize("predict", ["on", "off"])
def test_typed_lines_and_tab_completion_end_exactly_as_bash_drew_them(
        lab: JupyterProcess, page: Any, predict: str) -> None:
    inputs = InputLog().attach(page)
    term = open_page(lab, page, predict)
    term.run("mkdir -p tabdir && touch tabdir/predict-alpha.txt && cd tabdir", PROMPT_RX + "$")
    inputs.clear()

    # Typed fast, as a person does: many keys ahead of their echoes.
    before = prediction(page)
    watch(page)
    line = "echo typed-ahead $((6*7)) and more words"
    term.type(line)
    term.wait_text(f"^{PROMPT_RX} {re.escape(line)}$")
    settle(term)
    page.shot("typed")
    check_predicted(page, predict, before, len(line))
    term.press("Enter")
    term.wait_text(r"^typed-ahead 42 and more words\n" + PROMPT_RX + "$")

    # Typed slowly: each key on its own.
    before = prediction(page)
    watch(page)
    for ch in "echo slow":
        term.type(ch)
        time.sleep(0.05)
    settle(term)
    check_predicted(page, predict, before, len("echo slow"))
    term.press("Enter")
    term.wait_text(r"^slow\n" + PROMPT_RX + "$")

    # Tab completion, then more typing after it.
    before = prediction(page)
    watch(page)
    term.type("ls predict-al")
    term.press("Tab")
    term.wait_text(f"^{PROMPT_RX} ls predict-alpha.txt$")  # and a space, which screen() strips
    term.type("&& echo tab-ok")
    term.wait_text(f"^{PROMPT_RX} ls predict-alpha.txt && echo tab-ok$")
    settle(term)
    page.shot("tab-completed")
    check_predicted(page, predict, before, len("ls predict-al"))
    term.press("Enter")
    term.wait_text(r"^predict-alpha.txt\ntab-ok\n" + PROMPT_RX + "$")

    # Backspace over what was just typed, and retyped.
    before = prediction(page)
    term.type("echo fixx")
    term.press("Backspace")
    term.type("ed")
    term.wait_text(f"^{PROMPT_RX} echo fixed$")
    settle(term)
    term.press("Enter")
    term.wait_text(r"^fixed\n" + PROMPT_RX + "$")
    assert prediction(page)["rolledBack"] == before["rolledBack"]

    assert last_lines(term, 10) == [
        f"{PROMPT}echo typed-ahead $((6*7)) and more words", "typed-ahead 42 and more words",
        f"{PROMPT}echo slow", "slow",
        f"{PROMPT}ls predict-alpha.txt && echo tab-ok", "predict-alpha.txt", "tab-ok",
        f"{PROMPT}echo fixed", "fixed", PROMPT.strip()]
    # Predictions are drawn, never sent: the shell got the keys, once each.
    assert inputs.typed() == (f"{line}\recho slow\rls predict-al\t&& echo tab-ok\r"
                              "echo fixx\x7fed\r")
    page.shot("end")


@pytest.mark.parametrize("predict", ["on", "off"])
def test_vim_is_never_predicted_and_leaves_the_prompt_clean(lab: JupyterProcess, page: Any, predict: str) -> None:
    term = open_page(lab, page, predict)
    name = f"notes-{predict}.txt"
    term.type(f"vim -N -u NONE {name}")
    term.press("Enter")
    term.wait_text(rf'"{re.escape(name)}" \[New\]')
    term.wait_text(r"^~$")
    time.sleep(0.5)
    before = prediction(page)
    watch(page)
    term.type("ihello from vim")
    term.wait_text(r"^hello from vim$")
    page.shot("vim")
    term.press("Escape")
    term.type(":wq")
    term.press("Enter")
    term.wait_text(PROMPT_RX + "$")
    seen = watched(page)
    assert seen["dimFrames"] == 0, seen
    assert prediction(page)["predicted"] == before["predicted"]
    term.run(f"cat {name}", r"^hello from vim\n" + PROMPT_RX + "$")
    settle(term)
    assert last_lines(term, 4) == [f"{PROMPT}vim -N -u NONE {name}", f"{PROMPT}cat {name}",
                                   "hello from vim", PROMPT.strip()]
    page.shot("after-vim")


@pytest.mark.parametrize("predict", ["on", "off"])
def test_nothing_typed_at_a_password_prompt_ever_shows(lab: JupyterProcess, page: Any, predict: str) -> None:
    term = open_page(lab, page, predict)
    term.run("py=$(command -v python3)", PROMPT_RX + "$")
    for command, prompt, secret in [
        # bash's read -s, the password typed ahead, before the prompt is shown
        ("read -s -p 'Password: ' pw; echo; echo got:${#pw}", None, "4711"),
        # a program that turns the echo off itself, as sudo and ssh do (getpass)
        ("$py -c 'import getpass; print(len(getpass.getpass()))'", r"^Password:\Z", "8086"),
    ]:
        watch(page, secret)
        before = prediction(page)
        term.type(command)
        term.press("Enter")
        if prompt:
            term.wait_text(prompt)
        term.type(secret)
        time.sleep(0.5)
        page.shot(f"password-{secret}")
        term.press("Enter")
        term.wait_text(rf"^(got:)?{len(secret)}\n" + PROMPT_RX + "$")
        settle(term)
        seen = watched(page)
        assert not seen["needleSeen"], f"{secret} was on the screen"
        assert not re.search(r"\d", seen["dimText"]), f"a key of the password was drawn: {seen['dimText']!r}"
        if predict == "off":
            assert prediction(page)["predicted"] == before["predicted"]
    assert "4711" not in term.screen() and "8086" not in term.screen()
    page.shot("after-passwords")


def test_a_slow_echo_is_predicted_and_a_wrong_one_rolled_back(lab: JupyterProcess, page: Any) -> None:
    """A program that echoes each key 0.4 s late, and `z` as `Z`: what a distant server feels like."""
    term = open_page(lab, page, "on")
    term.type("stty -echo -icanon; while IFS= read -rsn1 c; do sleep 0.4; [ \"$c\" = q ] && break; "
              "[ \"$c\" = z ] && c=Z; printf %s \"$c\"; done; stty sane; echo; echo slow-done")
    term.press("Enter")
    time.sleep(0.5)
    before = prediction(page)
    term.type("a")  # the first key after Enter: held until its echo is seen
    time.sleep(0.1)
    assert dim_cells(term) == 0
    term.wait_text(r"^a$")
    term.type("b")
    wait_until(lambda: dim_cells(term) == 1, 0.3, "the b drawn before its echo")
    page.shot("predicted")
    assert term.screen().split("\n")[-1] == "ab"
    settle(term)
    term.type("z")
    wait_until(lambda: dim_cells(term) == 1, 0.3, "the z drawn before its echo")
    page.shot("before-rollback")
    term.wait_text(r"^abZ$")
    settle(term)
    page.shot("rolled-back")
    now = prediction(page)
    assert now["predicted"] - before["predicted"] == 2
    assert now["confirmed"] - before["confirmed"] == 1
    assert now["rolledBack"] - before["rolledBack"] == 1
    term.type("q")
    term.wait_text(r"^abZ\nslow-done\n" + PROMPT_RX + "$")


def test_a_notebook_terminal_takes_predict_from_python(lab: JupyterProcess, page: Any) -> None:
    page.add_init_script(WATCH)
    cells = ("from labkernel import Terminal\nt = Terminal(predict=False)\nt", "t.predict = True")
    notebook, term = open_terminal(page, lab, "predict", *cells)
    assert term.root.get_attribute("data-predict") == "off"
    watch(page)
    term.run("echo off-$((6*7)) and more", r"^off-42 and more$")
    assert watched(page)["dimFrames"] == 0
    notebook.run_cell(1)
    wait_until(lambda: term.root.get_attribute("data-predict") == "on", 30, "predict turned on from Python")
    term.focus()
    watch(page)
    term.run("echo on-$((6*7)) and more", r"^on-42 and more$")
    settle(term)
    assert watched(page)["dimFrames"] > 0, "nothing was predicted in the notebook's terminal"
    page.shot("notebook")
