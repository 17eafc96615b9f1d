"""JupyterHub, for real: a learner logs in through the hub and does a lab; behind a load
balancer that refuses WebSockets, JupyterLab's terminal fails and labkernel's works;
an idle lab page does not keep a server from the idle culler, typing does.

A real ``jupyterhub`` on 127.0.0.1 (``tests/hub/hubprocess.py``): configurable-http-proxy
from npm, a shared-password authenticator, ``SimpleLocalProcessSpawner`` running
``jupyterhub-singleuser`` of this environment with labkernel, each user's home a
temporary folder with the repository's notebooks and labs. Chromium logs in through
the hub's login form and works through the hub's proxy; in the second test through
Debian's nginx in front of it, set up as a load balancer that passes no ``Upgrade``
header. The culling tests run ``jupyterhub-idle-culler`` as a hub service, with
intervals of seconds instead of minutes.

Without jupyterhub, configurable-http-proxy (``cd tests/hub && npm ci``) or nginx the
tests skip with the reason; under CI (``CI=true``) they fail instead. About four
minutes in all on this 2-core machine; look at the screenshots
(``tests/browser/artifacts/test_*hub*``).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Iterator

import pytest

from hub.hubprocess import PROMPT, REPO, Hub, Nginx, UserServer, missing_tools

from .conftest import ARTIFACTS, _in_ci
from .termpage import Notebook, wait_until
from .termpage import Panel as LabPanel

pytestmark = [pytest.mark.server, pytest.mark.browser, pytest.mark.slow]

PROMPT_RX = re.escape(PROMPT.strip())


def need(nginx: bool = False) -> None:
    missing = missing_tools(nginx=nginx)
    if missing:
        if _in_ci():
            pytest.fail(f"CI=true but the JupyterHub tests cannot run: {missing}")
        pytest.skip(f"JupyterHub tests need: {missing}")


def keep_logs(name: str, hub: Hub, nginx: Nginx | None = None) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"hub-{name}.log").write_text(hub.log_tail(400))
    if nginx is not None:
        (ARTIFACTS / f"hub-{name}-nginx.log").write_text(nginx.logs())


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    """A hub as a workshop runs it, shared by the module's first two tests (one user each)."""
    need()
    hub = Hub().start()
    try:
        yield hub
    finally:
        keep_logs("workshop", hub)
        hub.close()


@pytest.fixture(scope="module")
def nginx(hub: Hub) -> Iterator[Nginx]:
    """nginx in front of the hub's proxy, dropping ``Upgrade``."""
    need(nginx=True)
    nginx = Nginx(hub.port).start()
    try:
        yield nginx
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "hub-workshop-nginx.log").write_text(nginx.logs())
        nginx.close()


# -- what the page does --------------------------------------------------------------


class Sockets:
    """Every WebSocket a page opens, with the text frames it received and whether it closed."""

    def __init__(self, page: Any):
        self.opened: list[dict[str, Any]] = []
        page.on("websocket", self._on_socket)

    def _on_socket(self, ws: Any) -> None:
        record: dict[str, Any] = {"url": ws.url, "frames": [], "closed": False}
        self.opened.append(record)
        ws.on("framereceived", lambda frame: record["frames"].append(str(frame)))
        ws.on("close", lambda _ws: record.update(closed=True))

    def to(self, part: str) -> list[dict[str, Any]]:
        return [s for s in self.opened if part in s["url"]]

    def received(self, part: str) -> str:
        """What the sockets to ``part`` received; a terminal's ``["stdout", text]`` frames as their text."""
        return "".join(_payload(f) for s in self.to(part) for f in s["frames"])


def _payload(frame: str) -> str:
    try:
        message = json.loads(frame)
    except ValueError:
        return frame
    if isinstance(message, list) and len(message) == 2 and message[0] == "stdout":
        return str(message[1])
    return frame


def pump_until(page: Any, predicate: Any, timeout: float, what: str) -> Any:
    """``wait_until`` for what Playwright's events fill in (``Sockets``): the sync API
    delivers them only while it is called, so the wait is the page's, not a sleep."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        page.wait_for_timeout(100)
    return value


def log_in(page: Any, base: str, user: str, password: str) -> None:
    """The hub's login form, as a learner fills it in; the hub then starts the server."""
    page.goto(f"{base}hub/login")
    page.locator("#username_input").fill(user)
    page.locator("#password_input").fill(password)
    page.shot("login")
    page.locator("#login_submit").click()


class Panel(LabPanel):
    """The lab panel on a page behind the hub (``termpage.Panel``) and the first step
    of the welcome lab, done as a learner does it."""

    def __init__(self, page: Any, timeout: float = 120):
        super().__init__(page, timeout)

    def do_first_step(self, server: UserServer) -> None:
        """From the intro: Start, a run button, typing, Check, ✓ and the next step."""
        self.wait_page("intro")
        term = self.terminal
        term.wait_state("connected", timeout=90)
        term.wait_text(PROMPT_RX + " ?$")
        self.root.locator(".labkernel-next").click()  # Start →
        self.wait_page("step", 1)
        self.run("ls inbox")
        term.wait_text(r"ls inbox\n(.*\n)?letter\.txt$")
        term.focus()
        term.run("echo typed-$((6*7))", r"^typed-42$")
        self.run("cat inbox/letter.txt > seen.txt")
        term.wait_text(r"cat inbox/letter\.txt > seen\.txt\n" + PROMPT_RX + " ?$")
        self.root.locator(".labkernel-check").click()
        self.wait_page("step", 2)
        assert "Step 1 passed: Look around" in self.root.locator(".labkernel-flash").inner_text()
        pill = self.root.locator(".labkernel-step-pill[data-step='1']")
        assert pill.get_attribute("data-state") == "passed"
        assert server.session(self.session_id)["currentStep"] == 2  # the server's progress


def open_jupyterlab_terminal(page: Any) -> None:
    """File > New > Terminal, as a learner opens JupyterLab's own terminal."""
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text="File").click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^New$")).hover()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Terminal$")).click()


def welcome_lab_cell() -> int:
    cells = json.loads((REPO / "notebooks" / "welcome.ipynb").read_text())["cells"]
    return next(i for i, cell in enumerate(cells) if 'Lab("files-and-folders")' in "".join(cell["source"]))


# -- through the hub's proxy ---------------------------------------------------------------


def test_a_learner_logs_in_through_the_hub_and_passes_a_step_in_the_welcome_notebook(
        hub: Hub, page: Any) -> None:
    user = UserServer(hub, "alice")
    hub.prepare_home("alice")
    sockets = Sockets(page)
    log_in(page, hub.url, "alice", hub.password)
    # The hub starts the server and sends the learner to its default URL: the welcome notebook.
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
    assert page.url.startswith(f"{hub.url}user/alice/lab")
    notebook = Notebook(page, user, "welcome.ipynb")
    notebook.wait_kernel_idle()
    notebook.run_cell(welcome_lab_cell())
    panel = Panel(page)
    panel.do_first_step(user)
    page.shot("welcome-panel")
    # Every request of the panel and its terminal went through the hub's proxy, under /user/alice/.
    assert hub.server("alice")["ready"]

    # The control for the nginx test below: here JupyterLab's own terminal works.
    open_jupyterlab_terminal(page)
    page.locator(".jp-Terminal").first.wait_for(state="visible")
    pump_until(page, lambda: sockets.received("/terminals/websocket/"), 60, "JupyterLab's terminal to connect")
    page.locator(".jp-Terminal .xterm-screen").first.click()
    page.keyboard.type("echo jupyterlab-$((6*7))")
    page.keyboard.press("Enter")
    pump_until(page, lambda: "jupyterlab-42" in sockets.received("/terminals/websocket/"), 30,
               "JupyterLab's terminal to answer")
    page.shot("jupyterlab-terminal")
    assert not page.console_errors, page.console_errors


# -- through nginx, which drops Upgrade ---------------------------------------------------


def test_behind_a_proxy_without_websockets_jupyterlab_s_terminal_fails_and_labkernel_s_works(
        hub: Hub, nginx: Nginx, page: Any) -> None:
    user = UserServer(hub, "bob", base=nginx.url)
    hub.prepare_home("bob")
    sockets = Sockets(page)
    log_in(page, nginx.url, "bob", hub.password)  # login, OAuth and spawn all work over plain HTTP
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
    assert page.url.startswith(f"{nginx.url}user/bob/lab")

    # JupyterLab's terminal: its WebSocket's handshake reaches the server as a plain
    # GET (nginx passed no Upgrade), which answers 400; nothing typed comes back.
    open_jupyterlab_terminal(page)
    pump_until(page, lambda: any(s["closed"] for s in sockets.to("/terminals/websocket/")), 60,
               "JupyterLab's terminal WebSocket to fail")
    # The terminal tab shown (JupyterLab may have opened two; the other is hidden).
    screen = page.locator(".jp-Terminal .xterm-screen:visible").first
    if screen.count():
        screen.click()
        page.keyboard.type("echo jupyterlab-$((6*7))")
        page.keyboard.press("Enter")
    page.wait_for_timeout(5000)  # a learner's patience; nothing may arrive meanwhile
    page.shot("jupyterlab-terminal-behind-nginx")
    assert sockets.to("/terminals/websocket/"), "JupyterLab opened no terminal WebSocket"
    assert sockets.received("/terminals/websocket/") == "", "a terminal WebSocket got through nginx"
    access = (nginx.tmp / "access.log").read_text()
    assert re.search(r'"GET /user/bob/terminals/websocket/\d+ HTTP/1\.1" 400 ', access), access[-2000:]
    # The notebook's kernel is a WebSocket too: the welcome notebook cannot run its cells here.
    assert sockets.received("/api/kernels/") == ""

    # labkernel's lab page, through the same nginx: the terminal and the panel work.
    reads: list[str] = []  # the page's output reads: its event stream, or long polls after a fallback
    page.on("request", lambda r: reads.append(r.url) if re.search(r"/api/ws/(stream\?|output/)", r.url) else None)
    page.goto(user.page_url("labkernel/labs/files-and-folders"))
    panel = Panel(page)
    panel.do_first_step(user)
    page.shot("lab-page-behind-nginx")
    assert reads and all(url.startswith(f"{nginx.url}user/bob/") for url in reads), reads
    # nginx logs a request when it ends: the event stream is still open, its keys are not.
    access = (nginx.tmp / "access.log").read_text()
    assert re.search(r'"POST /user/bob/api/ws/message HTTP/1\.1" 200 ', access)
    assert re.search(r'"POST /user/bob/api/labs/session/\S+/check HTTP/1\.1" 200 ', access)
    assert not sockets.to("/api/ws/"), "labkernel opened a WebSocket"


# -- idle culling ---------------------------------------------------------------------------

#: Every interval of the hub, the servers and the culler, in seconds instead of minutes.
CULL_TIMEOUT = 20
CULLER = [f"--timeout={CULL_TIMEOUT}", "--cull-every=3"]


def culling_hub(proxy_activity: bool) -> Hub:
    return Hub(proxy_activity=proxy_activity, last_activity_interval=2, activity_interval=2,
               culler=CULLER, default_url="/labkernel/labs/files-and-folders",
               app_config={"max_wait": 3.0},  # a long poll answered every 3 s, not 25
               hub_config={"JupyterHub.activity_resolution": 1})


def open_lab_page(browser: Any, hub: Hub, user: str, name: str, *, polls: bool = False) -> tuple[Any, Panel]:
    """A learner logs in; the server's default URL is the stand-alone lab page. With
    ``polls``, the page reads by long polls, as it does where its stream fell back."""
    hub.prepare_home(user)
    context = browser.new_context(viewport={"width": 1280, "height": 700})
    context.set_default_timeout(60_000)
    page = context.new_page()
    if polls:
        page.add_init_script(f"sessionStorage.setItem('labkernel:transport:/user/{user}/', 'polls')")
    page.shot = lambda moment: page.screenshot(path=str(ARTIFACTS / f"{name}--{user}-{moment}.png"))
    log_in(page, hub.url, user, hub.password)
    panel = Panel(page)
    panel.terminal.wait_state("connected", timeout=90)
    panel.terminal.wait_text(PROMPT_RX + " ?$")
    return page, panel


def running(hub: Hub, user: str) -> bool:
    return hub.server(user) is not None


def test_an_idle_lab_page_does_not_keep_its_server_from_the_culler_typing_does(browser: Any) -> None:
    """The hub counts what the servers report (docs/jupyterhub.md's setting for labs):
    a lab page left open polls every few seconds and is culled; one where the learner
    types is not, until they stop."""
    need()
    ARTIFACTS.mkdir(exist_ok=True)
    name = "test_an_idle_lab_page_does_not_keep_its_server_from_the_culler_typing_does"
    hub = culling_hub(proxy_activity=False).start()
    try:
        idle_page, _ = open_lab_page(browser, hub, "idle", name)
        typing_page, typing = open_lab_page(browser, hub, "typist", name)
        typing.terminal.focus()
        t0 = time.monotonic()
        # The learner types a line every few seconds until the idle server is gone
        # and more than twice the timeout has passed.
        n = 0
        while running(hub, "idle") or time.monotonic() - t0 < 2 * CULL_TIMEOUT + 5:
            assert time.monotonic() - t0 < 6 * CULL_TIMEOUT, "the idle server was never culled"
            n += 1
            typing.terminal.run(f"echo still-here-{n}", rf"^still-here-{n}$")
            time.sleep(3)
        culled_after = time.monotonic() - t0
        assert running(hub, "typist"), "a learner who types was culled"
        assert idle_page.locator(".labkernel-lab").count()  # the page was open all along
        typing_page.shot("typing")
        idle_page.shot("culled")

        # The typist stops; their page keeps polling, and the server goes too.
        t1 = time.monotonic()
        wait_until(lambda: not running(hub, "typist"), 6 * CULL_TIMEOUT, "the typist's server to be culled",
                   interval=1)
        print(f"idle page culled within {culled_after:.0f} s; the typist's {time.monotonic() - t1:.0f} s "
              f"after the last line (timeout {CULL_TIMEOUT} s)")
        for page in (idle_page, typing_page):
            page.context.close()
    finally:
        keep_logs("culling", hub)
        hub.close()


def test_counting_the_proxy_s_traffic_an_open_lab_page_keeps_its_server_alive(browser: Any) -> None:
    """JupyterHub's default: every answered request through configurable-http-proxy is
    activity, so a lab page's long polls keep its server from the culler (and so
    does any open JupyterLab tab): why docs/jupyterhub.md tells labs otherwise. The
    page here reads by long polls, as it does behind a proxy that buffers its event
    stream; on the stream an idle page makes no request at all."""
    need()
    ARTIFACTS.mkdir(exist_ok=True)
    name = "test_counting_the_proxy_s_traffic_an_open_lab_page_keeps_its_server_alive"
    hub = culling_hub(proxy_activity=True).start()
    try:
        page, _ = open_lab_page(browser, hub, "idle", name, polls=True)
        opened = hub.server("idle")["last_activity"]
        time.sleep(2 * CULL_TIMEOUT + 5)
        server = hub.server("idle")
        assert server is not None, "culled, though the proxy saw the page's polls"
        assert server["last_activity"] > opened  # moved by the polls alone: nobody typed
        page.shot("kept")
        page.context.close()
    finally:
        keep_logs("culling-proxy", hub)
        hub.close()
