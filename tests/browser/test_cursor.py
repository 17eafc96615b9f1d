"""The focused cursor blinks without a CSS animation, so an idle page does not repaint.

xterm's DOM renderer blinks its cursor with an infinite CSS animation, and while a
terminal had focus Chromium rendered a frame every 16 ms (13 % of a core for an
idle JupyterLab page). labkernel's blink is a class toggled on a timer
(js/src/cursor.js); ``benchmarks/idle_cpu.py`` measures what that costs. These
tests hold what can be asserted without timing: no animation runs, the cursor
still blinks while focused, stays put while not, and a program's steady or
blinking cursor (DECSCUSR) is obeyed.
"""

from __future__ import annotations

import re
from typing import Any

from .labservers import PROMPT, JupyterProcess
from .termpage import TerminalView, first_terminal, wait_until

PROMPT_RX = re.escape(PROMPT.strip()) + "$"

RUNNING_ANIMATIONS = "document.getAnimations().filter(a => a.playState === 'running').length"

#: The root's blink class and the cursor cell's look, sampled every 100 ms for 2.5 s.
SAMPLE_BLINK = """() => new Promise((resolve) => {
  const root = document.querySelector('.labkernel-terminal');
  const seen = [];
  const started = performance.now();
  const timer = setInterval(() => {
    const cursor = root.querySelector('.xterm-rows .xterm-cursor');
    seen.push({
      off: root.classList.contains('labkernel-cursor-off'),
      classes: cursor ? cursor.className : null,
      background: cursor ? getComputedStyle(cursor).backgroundColor : null,
      boxShadow: cursor ? getComputedStyle(cursor).boxShadow : null,
    });
    if (performance.now() - started > 2500) { clearInterval(timer); resolve(seen); }
  }, 100);
})"""


def open_lab_page(lab: JupyterProcess, page: Any) -> TerminalView:
    page.goto(lab.page_url("labkernel/labs/shell"))
    term = first_terminal(page)
    term.wait_state("connected")
    term.wait_text(PROMPT_RX)
    term.focus()
    return term


def test_the_focused_cursor_blinks_without_any_css_animation(lab: JupyterProcess, page: Any) -> None:
    term = open_lab_page(lab, page)
    assert page.evaluate(RUNNING_ANIMATIONS) == 0
    seen = page.evaluate(SAMPLE_BLINK)
    assert page.evaluate(RUNNING_ANIMATIONS) == 0
    on = [s for s in seen if not s["off"]]
    off = [s for s in seen if s["off"]]
    assert on and off, "the focused cursor does not blink"
    assert all("xterm-cursor-block" in s["classes"] for s in seen)
    # Shown, the cell is the cursor's colour; hidden, it is the terminal's own.
    assert {s["background"] for s in on} == {"rgb(51, 51, 51)"}
    assert {s["background"] for s in off} == {"rgba(0, 0, 0, 0)"}
    # Two toggles or fewer a second: at most two style changes, never frames.
    toggles = sum(1 for a, b in zip(seen, seen[1:]) if a["off"] != b["off"])
    assert toggles <= 6, toggles

    root = term.root
    wait_until(lambda: "labkernel-cursor-off" not in root.get_attribute("class"), 5, "the cursor shown")
    page.shot("cursor-on")
    wait_until(lambda: "labkernel-cursor-off" in root.get_attribute("class"), 5, "the cursor hidden")
    page.shot("cursor-off")

    # Unfocused: xterm's hollow outline, no blink.
    page.evaluate("document.activeElement.blur()")
    seen = page.evaluate(SAMPLE_BLINK)
    assert not any(s["off"] for s in seen)
    assert all("xterm-cursor-outline" in s["classes"] for s in seen)
    page.shot("unfocused")


def test_a_programs_cursor_shape_and_blink_are_obeyed_without_an_animation(lab: JupyterProcess, page: Any) -> None:
    term = open_lab_page(lab, page)
    # A blinking bar (vim's insert mode in many configurations): xterm would animate it.
    term.run(r"printf '\e[5 q'; echo bar", r"^bar$")
    seen = page.evaluate(SAMPLE_BLINK)
    assert page.evaluate(RUNNING_ANIMATIONS) == 0
    assert all("xterm-cursor-bar" in s["classes"] for s in seen)
    assert any(s["off"] for s in seen) and not all(s["off"] for s in seen)
    assert {s["boxShadow"] for s in seen if s["off"]} == {"none"}
    page.shot("blinking-bar")

    # A steady block: no blink at all.
    term.run(r"printf '\e[2 q'; echo steady", r"^steady$")
    seen = page.evaluate(SAMPLE_BLINK)
    assert page.evaluate(RUNNING_ANIMATIONS) == 0
    assert not any(s["off"] for s in seen)
    assert all("xterm-cursor-block" in s["classes"] for s in seen)

    # And back to the default, blinking block.
    term.run(r"printf '\e[0 q'; echo default", r"^default$")
    seen = page.evaluate(SAMPLE_BLINK)
    assert any(s["off"] for s in seen) and page.evaluate(RUNNING_ANIMATIONS) == 0
    page.shot("default")
