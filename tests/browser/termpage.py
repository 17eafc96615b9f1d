"""Driving the labkernel terminal in a real page: the widget's DOM contract, as a user would.

The widget promises a root ``.labkernel-terminal`` with ``data-session-id`` and
``data-state``, a status line ``.labkernel-status``, a new-session button
``.labkernel-restart``, and xterm's DOM renderer, so the screen's text is in
``.xterm-rows``. Everything here goes through those and the keyboard; nothing
reaches into the widget's internals.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .labservers import JupyterProcess

#: Where a test's screenshots go (git-ignored); look at them.
STATES = ("connecting", "connected", "reconnecting", "ended", "expired", "not_found",
          "forbidden", "unavailable")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something true; the timeout only catches a hang."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class TerminalView:
    """One rendered terminal (``.labkernel-terminal``) in a page."""

    def __init__(self, page: Any, root: Any):
        self.page = page
        self.root = root

    @property
    def state(self) -> str | None:
        return self.root.get_attribute("data-state")

    @property
    def session_id(self) -> str | None:
        return self.root.get_attribute("data-session-id")

    @property
    def status_text(self) -> str:
        return self.root.locator(".labkernel-status").inner_text()

    def wait_state(self, *states: str, timeout: float = 60) -> str:
        for state in states:
            assert state in STATES, state
        return wait_until(lambda: self.state if self.state in states else None, timeout,
                          f"terminal state in {states} (now {self.state!r}, "
                          f"status {self._status_or_none()!r})")

    def _status_or_none(self) -> str | None:
        try:
            return self.root.locator(".labkernel-status").inner_text(timeout=1000)
        except Exception:  # noqa: BLE001 - only for the failure message
            return None

    def screen(self) -> str:
        """The visible screen, one line per row, trailing blanks dropped."""
        text = self.root.locator(".xterm-rows").inner_text()
        rows = [row.replace("\xa0", " ").rstrip() for row in text.split("\n")]
        return "\n".join(rows).rstrip("\n")

    def wait_text(self, pattern: str, timeout: float = 30) -> re.Match:
        """Wait until the screen matches ``pattern`` (a regex, multiline)."""
        rx = re.compile(pattern, re.M)
        try:
            return wait_until(lambda: rx.search(self.screen()), timeout, f"{pattern!r} on screen")
        except AssertionError as error:
            raise AssertionError(f"{error}; screen:\n{self.screen()}") from None

    def focus(self) -> None:
        self.root.locator(".xterm-screen").click()
        wait_until(lambda: self.page.evaluate(
            "() => document.activeElement && document.activeElement.classList.contains("
            "'xterm-helper-textarea')"), 10, "xterm to have the keyboard focus")

    def type(self, text: str) -> None:
        self.page.keyboard.type(text)

    def press(self, key: str) -> None:
        self.page.keyboard.press(key)

    def run(self, line: str, expect: str, timeout: float = 30) -> re.Match:
        """Type ``line`` and Enter; wait for ``expect`` (a regex) on screen."""
        self.type(line)
        self.press("Enter")
        return self.wait_text(expect, timeout)


def terminals(page: Any) -> list[TerminalView]:
    roots = page.locator(".labkernel-terminal")
    return [TerminalView(page, roots.nth(i)) for i in range(roots.count())]


def first_terminal(page: Any, timeout: float = 90) -> TerminalView:
    root = page.locator(".labkernel-terminal").first
    root.wait_for(state="visible", timeout=timeout * 1000)
    return TerminalView(page, root)


@dataclass
class RequestLog:
    """Every labkernel API request a page makes (``api/ws/`` and ``api/labs/``), timestamped."""

    requests: list[tuple[float, str, str]] = field(default_factory=list)

    def attach(self, page: Any) -> "RequestLog":
        page.on("request", self._on_request)
        return self

    def _on_request(self, request: Any) -> None:
        if "/api/ws/" in request.url or "/api/labs/" in request.url:
            self.requests.append((time.monotonic(), request.method, request.url))

    def since(self, t0: float) -> list[tuple[float, str, str]]:
        return [r for r in self.requests if r[0] >= t0]


@dataclass
class InputLog:
    """The bodies of every input POST (``api/ws/message``) a page (or several) makes."""

    bodies: list[dict[str, Any]] = field(default_factory=list)

    def attach(self, page: Any) -> "InputLog":
        page.on("request", self._on_request)
        return self

    def _on_request(self, request: Any) -> None:
        if request.method == "POST" and request.url.split("?")[0].endswith("/api/ws/message"):
            self.bodies.append(json.loads(request.post_data or "{}"))

    def typed(self) -> str:
        """Everything sent as keystrokes (``data``), in order; resizes left out."""
        return "".join(body["data"] for body in self.bodies if "data" in body)

    def clear(self) -> None:
        self.bodies.clear()


class Notebook:
    """A notebook opened in JupyterLab or Notebook 7, driven through its UI."""

    def __init__(self, page: Any, server: JupyterProcess, name: str):
        self.page = page
        self.server = server
        self.name = name

    def open(self, workspace: str | None = None, timeout: float = 90) -> "Notebook":
        self.page.goto(self.server.notebook_url(self.name, workspace))
        self.page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=timeout * 1000)
        self.wait_kernel_idle(timeout)
        return self

    def kernel(self) -> dict[str, Any] | None:
        status, sessions = self.server.api("GET", "api/sessions")
        for session in sessions if status == 200 else []:
            if session["path"].endswith(self.name):
                return session["kernel"]
        return None

    def wait_kernel_idle(self, timeout: float = 90) -> dict[str, Any]:
        return wait_until(lambda: (k := self.kernel()) and k["execution_state"] == "idle" and k,
                          timeout, f"{self.name}'s kernel to be idle")

    def run_cell(self, index: int = 0) -> None:
        """Run one cell as a user does: click into it, Ctrl+Enter (run in place)."""
        cell = self.page.locator(".jp-Notebook .jp-Cell").nth(index)
        cell.locator(".jp-InputArea-editor").click()
        self.page.keyboard.press("Control+Enter")

    def terminal(self, timeout: float = 90) -> TerminalView:
        return first_terminal(self.page, timeout)

    def save(self) -> None:
        self.page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
        self.page.keyboard.press("Control+s")
        wait_until(lambda: not self.page.locator(".jp-mod-dirty").count(), 30,
                   "the notebook to be saved")

    def menu(self, menu: str, item: str) -> None:
        self.page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text=menu).click()
        self.page.locator(".lm-Menu-itemLabel", has_text=re.compile("^" + re.escape(item) + "…?$")).click()

    def restart_kernel(self, timeout: float = 90) -> None:
        """Kernel > Restart Kernel…, confirmed; the caller checks the old process is gone."""
        self.menu("Kernel", "Restart Kernel")
        self.page.locator(".jp-Dialog .jp-mod-accept").click()
        self.page.locator(".jp-Dialog").wait_for(state="detached")


class Panel:
    """The lab panel on a page, through its DOM contract (see js/src/panel.js)."""

    def __init__(self, page: Any, timeout: float = 90):
        self.page = page
        self.root = page.locator(".labkernel-lab").first
        self.root.wait_for(state="visible", timeout=timeout * 1000)
        # JupyterLab leaves cells out of view unrendered (content-visibility): the
        # terminal's rows would read as empty.
        self.root.scroll_into_view_if_needed()

    @property
    def terminal(self) -> TerminalView:
        return TerminalView(self.page, self.root.locator(".labkernel-terminal"))

    @property
    def session_id(self) -> str:
        return self.root.get_attribute("data-session-id") or ""

    def at(self) -> tuple[str, str]:
        return self.root.get_attribute("data-page") or "", self.root.get_attribute("data-step") or ""

    def wait_page(self, kind: str, step: int | None = None, timeout: float = 60) -> None:
        want = (kind, str(step) if step else "")
        wait_until(lambda: self.at() == want, timeout, f"the panel on {want} (it is on {self.at()})")

    def text(self) -> str:
        return self.root.locator(".labkernel-panel").inner_text()

    def run(self, code: str) -> None:
        """Press the run button of the command ``code`` (inline, or a block's)."""
        for button in self.root.locator(".labkernel-page .labkernel-run.labkernel-inline").all():
            if button.locator("code").inner_text() == code:
                button.click()
                return
        for block in self.root.locator(".labkernel-page .labkernel-block").all():
            if block.locator("pre").inner_text().strip("\n") == code:
                block.locator(".labkernel-run").click()
                return
        raise AssertionError(f"no run button for {code!r} in:\n{self.text()}")

    def check(self) -> None:
        self.root.locator(".labkernel-check").click()

    def result(self, kind: str, timeout: float = 60) -> Any:
        box = self.root.locator(f".labkernel-result[data-result='{kind}']")
        box.wait_for(state="visible", timeout=timeout * 1000)
        return box
