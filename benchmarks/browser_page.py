"""The browser benchmark's pages: a JupyterLab page with labkernel Terminals in a notebook
and JupyterLab's own terminals beside them, the terminals on it, and timing one key.

Used by ``browser_bench.py`` and ``idle_cpu.py``; see benchmarks/README.md.
"""

from __future__ import annotations

import json
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "browser"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # its support package

from labservers import CHROMIUM, CHROMIUM_ARGS, JupyterProcess  # noqa: E402

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "BenchPage", "Requests", "Target", "log", "start_server"]

INSTRUMENT = Path(__file__).with_name("browser_instrument.js")

#: The flood's end mark, as browser_instrument.js looks for it.
MARK = "flood-42"

#: Letters typed into terminals: any lowercase ASCII letter but those of the shell's
#: prompt, so that what a key adds to the screen is easy to count.
LETTERS = "cfghijknqsuvwxyz"

#: Letters for a terminal's echo while another floods: none in the flood's output
#: (``y``, the mark, the prompt) nor in the keys of a JSON answer, so a big answer of
#: the flood never needs decoding to find them (browser_instrument.js).
PROBE_LETTERS = "gjkqvwxz"

#: The notebook cell: labkernel Terminals, one per entry of ``specs`` (None: the
#: default; True/False: ``predict=`` where the widget has that option), and a line
#: saying what it found. ``Terminal(predict=…)`` is detected, not assumed: before the
#: option exists, the widget has none and every Terminal is the default one.
CELL = '''import inspect, json
from IPython.display import display
from labkernel import Terminal

def _has_predict():
    try:
        if "predict" in inspect.signature(Terminal.__init__).parameters:
            return True
    except (TypeError, ValueError):
        pass
    return Terminal.class_traits().get("predict") is not None

PREDICT = _has_predict()

def _terminal(predict):
    if predict is not None and PREDICT:
        try:
            return Terminal(rows={rows}, predict=predict{http})
        except TypeError:
            pass
    return Terminal(rows={rows}{http})

terminals = [_terminal(p) for p in {specs!r}]
print("LKBENCH " + json.dumps({{"predict": PREDICT, "sessions": [t.session_id for t in terminals]}}))
display(*terminals)'''

#: labkernel's API under any base URL (browser_instrument.js has the same pattern).
LK_PATH = re.compile(r"/(?:api/(?:labs|ws)(?:[/?]|$)|health(?:[/?]|$)|labkernel/)")
SID_IN_URL = re.compile(r"/(?:output|status|session)/([^/?#]+)")


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def start_server() -> JupyterProcess:
    """``jupyter lab`` for a benchmark, with ``window.jupyterapp`` exposed to open its terminals."""
    server = JupyterProcess("lab", base_url="/bench/", extra_args=("--LabApp.expose_app_in_browser=True",))
    server.start()
    log(f"jupyter lab at {server.url}")
    return server


@dataclass
class Target:
    """One terminal of a page: labkernel's (``kind="lk"``, its session id) or JupyterLab's
    (``kind="jl"``, its terminal name); ``predict``: None (JupyterLab's, or the widget
    has no such option), True or False."""

    name: str
    kind: str
    sid: str
    predict: Optional[bool] = None

    @property
    def js(self) -> dict[str, str]:
        return {"kind": self.kind, "sid": self.sid}

    def focus(self, page: Any) -> None:
        if self.kind == "lk":
            page.evaluate("(sid) => document.querySelector(`.labkernel-terminal[data-session-id=\"${sid}\"]`)"
                          ".querySelector('.xterm-helper-textarea').focus()", self.sid)
        else:
            page.evaluate("(name) => window.__jl[name].content._term.focus()", self.sid)


@dataclass
class Request:
    t: float
    method: str
    url: str
    sid: Optional[str]
    wait0: bool
    route: str


class Requests:
    """Every request of a page to labkernel's API, as Playwright saw it leave."""

    def __init__(self) -> None:
        self.log: list[Request] = []

    def on_request(self, request: Any) -> None:
        url = request.url
        parts = urlsplit(url)
        if not LK_PATH.search(parts.path):
            return
        m = SID_IN_URL.search(parts.path)
        sid = m.group(1) if m else None
        if sid is None and request.method == "POST":
            try:
                sid = json.loads(request.post_data or "{}").get("sessionId")
            except (ValueError, AttributeError):
                sid = None
        query = parse_qs(parts.query)
        wait0 = any(float(w) == 0 for w in query.get("wait", []) if _is_number(w))
        route = re.sub(r"/[A-Za-z0-9_-]{16,}(?=/|$)", "/{id}", parts.path.split("/api/", 1)[-1])
        self.log.append(Request(time.monotonic(), request.method, url, sid, wait0, route))

    def mark(self) -> int:
        return len(self.log)

    def since(self, mark: int) -> list[Request]:
        return self.log[mark:]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@dataclass
class BenchPage:
    """A JupyterLab page (in a browser context of its own: its own connections) with a
    notebook of labkernel Terminals and JupyterLab terminals split beside it."""

    name: str
    server: JupyterProcess
    context: Any
    page: Any
    lk: list[Target]
    jl: list[Target]
    predict: bool
    requests: Requests
    notebook: str
    cdp: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, browser: Any, server: JupyterProcess, name: str, lk_specs: list[Optional[bool]],
             jl_count: int, rows: int = 10, port: Optional[int] = None,
             viewport: tuple[int, int] = (1600, 1000), http: Optional[str] = None) -> "BenchPage":
        """``lk_specs``: one labkernel Terminal each (see CELL); ``port``: load the page
        (and so every request it makes) through this port, a delay proxy's; ``http``: the
        Terminals' ``http`` option (None: the widget's default)."""
        notebook = server.write_notebook(f"{name}.ipynb", CELL.format(
            rows=rows, specs=lk_specs, http=f", http={http!r}" if http else ""))
        names = [server.ok("POST", "api/terminals", {})["name"] for _ in range(jl_count)]
        context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        page = context.new_page()
        requests = Requests()
        page.on("request", requests.on_request)
        page.add_init_script(path=str(INSTRUMENT))
        url = server.notebook_url(notebook, name)
        if port is not None:
            url = url.replace(f"127.0.0.1:{server.port}/", f"127.0.0.1:{port}/", 1)
        page.goto(url)
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
        deadline = time.monotonic() + 120
        while not any(s.get("path", "").endswith(notebook) and s["kernel"]["execution_state"] == "idle"
                      for s in server.ok("GET", "api/sessions")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: the kernel did not start")
            time.sleep(0.2)
        page.locator(".jp-Notebook .jp-Cell").first.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Control+Enter")
        page.wait_for_function(
            "(n) => [...document.querySelectorAll('.labkernel-terminal')]"
            ".filter(e => e.dataset.state === 'connected').length === n", arg=len(lk_specs), timeout=120_000)
        said = page.locator(".jp-OutputArea-output", has_text="LKBENCH").first.inner_text()
        info = json.loads(said.split("LKBENCH", 1)[1].strip().splitlines()[0])
        sids = page.evaluate("() => [...document.querySelectorAll('.labkernel-terminal')]"
                             ".map(e => e.dataset.sessionId)")
        if all(info["sessions"]) and sorted(info["sessions"]) == sorted(sids):
            sids = info["sessions"]  # in the order of lk_specs
        predict = bool(info["predict"])
        lk = []
        for i, (sid, spec) in enumerate(zip(sids, lk_specs)):
            variant = spec if predict else None
            label = {None: "labkernel", True: "labkernel, predict on", False: "labkernel, predict off"}[variant]
            lk.append(Target(f"{label} #{i + 1}" if len(lk_specs) > 1 else label, "lk", sid, variant))
        page.evaluate("""async (names) => {
            const app = window.jupyterapp;
            let ref = app.shell.currentWidget.id;
            window.__jl = {};
            for (const [i, name] of names.entries()) {
                const w = await app.commands.execute('terminal:open', {name});
                app.shell.add(w, 'main', {mode: i === 0 ? 'split-right' : 'split-bottom', ref});
                ref = w.id;
                window.__jl[name] = w;
            }
        }""", names)
        page.wait_for_function("(names) => names.every(n => window.__jl[n].content.session"
                               " && window.__jl[n].content.session.connectionStatus === 'connected')",
                               arg=names, timeout=60_000)
        jl = [Target(f"JupyterLab #{i + 1}" if jl_count > 1 else "JupyterLab", "jl", n) for i, n in enumerate(names)]
        self = cls(name, server, context, page, lk, jl, predict, requests, notebook)
        # Wait for every prompt, so no output is still on its way when timing starts.
        for target in self.lk + self.jl:
            page.wait_for_function("(t) => /[$#] *(\\n|$)/.test(window.__lkb.screenText(t))", arg=target.js,
                                   timeout=60_000)
        return self

    def renderer(self) -> dict[str, Any]:
        """What draws each kind of terminal on this page (for the record)."""
        return self.page.evaluate("""() => {
            const kind = (el) => !el ? '?' : el.querySelector('canvas') ? 'canvas'
              : el.querySelector('.xterm-rows') ? 'dom' : '?';
            return {labkernel: kind(document.querySelector('.labkernel-terminal')),
                    jupyterlab: kind(document.querySelector('.jp-Terminal'))};
        }""")

    def close(self) -> None:
        """Close the page, its kernel, its sessions and its JupyterLab terminals."""
        try:
            self.context.close()
        except Exception as error:  # noqa: BLE001 - cleanup goes on
            log(f"{self.name}: closing the page: {error}")
        server = self.server
        for s in server.ok("GET", "api/sessions"):
            if s.get("path", "").endswith(self.notebook):
                server.api("DELETE", f"api/sessions/{s['id']}")
        for t in self.lk:
            server.api("DELETE", f"api/labs/session/{t.sid}")
        for t in self.jl:
            server.api("DELETE", f"api/terminals/{t.sid}")

    # -- typing ---------------------------------------------------------------------

    def key(self, target: Target, key: str, line: str, echo: bool = True, paint: bool = True,
            timeout: float = 15) -> dict[str, Any]:
        """Press ``key`` in the focused ``target``, whose input line will then end in ``line``:
        ms from its keydown to the echo's arrival and to the frame that shows it."""
        spec: dict[str, Any] = {"timeout": timeout * 1000}
        if echo:
            spec["echo"] = {**target.js, "text": key}
        if paint:
            spec["paint"] = {"target": target.js, "text": line}
        xid = self.page.evaluate("(spec) => window.__lkb.expect(spec)", spec)
        self.page.keyboard.press(key)
        got = self.page.evaluate("(id) => window.__lkb.result(id)", xid)
        return {"key": key, "echo": got.get("echo"), "paint": got.get("paint"), "drawn": got.get("drawn"),
                "frame_end": got.get("frameEnd"),
                "in_frame": got.get("inFrame"), "t0": got.get("t0"),
                "timed_out": got.get("timedOut", False)}

    def block(self, target: Target, keys: int, rng: random.Random, letters: str = LETTERS,
              settle: float = 0.15) -> list[dict[str, Any]]:
        """``keys`` keys typed at ``target``'s prompt, each timed; then Ctrl-C (a fresh prompt)."""
        target.focus(self.page)
        text = "".join(rng.choice(letters) for _ in range(keys))
        samples = []
        for i, ch in enumerate(text):
            samples.append(self.key(target, ch, text[: i + 1]))
            self.page.wait_for_timeout(10)
        self.page.keyboard.press("Control+c")
        self.page.wait_for_timeout(settle * 1000)
        return samples

    def type_line(self, target: Target, line: str) -> None:
        target.focus(self.page)
        self.page.keyboard.type(line)
        self.page.keyboard.press("Enter")

    def screenshot(self, shots: Optional[Path], name: str) -> None:
        if shots:
            self.page.screenshot(path=str(shots / f"browser-bench-{name}.png"))
