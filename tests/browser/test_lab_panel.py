"""The lab panel in Chromium: ``Lab(...)`` displayed in JupyterLab and Notebook 7, and
the stand-alone lab page, driven as a learner drives them.

A learner reads a step, presses a command's run button (the command shows up in the
terminal and runs there), presses Check and sees ✓ and the next step; the progress
is the server's. Also: an expired session's panel says so and starts the lab again;
step Markdown with ``<script>`` or ``onerror=`` runs nothing (a page-level flag
stays unset); a check that times out says so. The servers here serve the
repository's ``labs/`` and a few labs of the tests' own, with a 2 s check timeout
and a 1 s culler so that a session can expire within a test.

Screenshots (``tests/browser/artifacts/test_*--*.png``): the panel in JupyterLab,
light and dark, in Notebook 7, and the lab page; look at them.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any, Iterator

import pytest

from .conftest import ARTIFACTS
from .labservers import PROMPT, JupyterProcess
from .termpage import Notebook, Panel, TerminalView, wait_until

REPO = Path(__file__).resolve().parents[2]
PROMPT_RX = re.escape(PROMPT.strip())


def tiny_png(width: int = 40, height: int = 20) -> bytes:
    """A real PNG (a blue box), so that the page can decode it and give it a size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\x20\x60\xd0" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


#: Labs of the tests' own, next to the repository's.
TEST_LABS = {
    # A step without a check (Mark done), then a check that never ends in time.
    "slow-check": """
title = "Slow check"
scratch = true
[[steps]]
title = "Read this"
text = '''
Nothing to check here: start `sleep 100`{{exec}}, stop it and go on with
`echo stopped-$((6*7))`{{exec interrupt}}, then press **Mark done**.
'''
[[steps]]
title = "Wait"
text = "This step's check takes longer than the server allows."
check = "sleep 60"
""",
    # A session that expires while the learner looks at it.
    "expiring": """
title = "Expiring"
scratch = true
lifetime = 6
intro = "This lab's sessions last a few seconds."
[[steps]]
title = "Be quick"
text = "`echo quick`{{exec}}"
check = "exit 0"
""",
    # Step text that tries to run script in the page, and what must survive sanitising.
    "unsafe": """
title = "Unsafe text"
scratch = true
[[steps]]
title = "Read carefully"
text = '''
Plain **bold** text.

<script>window.__labkernelPwned = "script"</script>

<img src="nope.png" onerror="window.__labkernelPwned = 'onerror'" alt="nope">

<p><a href="javascript:window.__labkernelPwned='link'" id="evil-link">a link</a>
<a href="https://example.org/" id="good-link">a good link</a></p>

<svg><script>window.__labkernelPwned = "svg"</script><rect onload="window.__labkernelPwned = 'svg-onload'"/></svg>

<iframe srcdoc="<script>parent.__labkernelPwned = 'iframe'</script>"></iframe>

<form action="https://example.org/"><input name="password" autofocus onfocus="window.__labkernelPwned = 'focus'"></form>

<div style="position:fixed;inset:0;background:red" class="overlay">styled</div>

<details><summary>More</summary>

Hidden **details**.

</details>

![a picture](./assets/pic.png)

Run `echo safe-$((6*7))`{{exec}}, not <code data-lk-action="0:0">echo forged</code>.
'''
check = "exit 0"
""",
}


#: A Killercoda scenario of the tests' own: it needs docker (no daemon here: unmet), its
#: background fails (a note on the session), and its solution ends a program with ^C.
NEEDY = {
    "index.json": json.dumps({
        "title": "Needy", "backend": {"imageid": "ubuntu"},
        "details": {"intro": {"background": "bg.sh"},
                    "steps": [{"title": "Run and stop", "text": "step1.md"}]}}),
    "bg.sh": "echo 'pulling images: no daemon' >&2\nexit 4\n",
    "step1.md": ("Containers: `docker ps`{{copy}}.\n\n"
                 "Watch it: `sleep 100 && echo never`{{exec}}, then stop it: `^C`{{execute ctrl-seq}}.\n"),
}


def install_labs(server: JupyterProcess) -> None:
    labs = server.root / "labs"
    shutil.copytree(REPO / "labs", labs)
    for lab_id, toml in TEST_LABS.items():
        (labs / lab_id).mkdir()
        (labs / lab_id / "lab.toml").write_text(toml)
    (labs / "needy").mkdir()
    for name, text in NEEDY.items():
        (labs / "needy" / name).write_text(text)
    (labs / "unsafe" / "assets").mkdir()
    (labs / "unsafe" / "assets" / "pic.png").write_bytes(tiny_png())


def serve(app: str) -> Iterator[JupyterProcess]:
    server = JupyterProcess(app, labkernel_config={"check_timeout": 2, "cull_interval": 1})
    install_labs(server)
    server.start()
    try:
        yield server
    finally:
        log = server.log_tail(200)
        server.close()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / f"server-panel-{app}-{server.port}.log").write_text(log)


@pytest.fixture(scope="module")
def panel_lab_server() -> Iterator[JupyterProcess]:
    """``jupyter lab`` serving the repository's labs and TEST_LABS, shared by the module."""
    yield from serve("lab")


@pytest.fixture
def server(panel_lab_server: JupyterProcess) -> Iterator[JupyterProcess]:
    yield panel_lab_server
    panel_lab_server.cleanup()


def wait_prompt(term: TerminalView) -> None:
    term.wait_text(PROMPT_RX + r" ?$")


def open_welcome(page: Any, server: JupyterProcess) -> tuple[Notebook, int, int]:
    """The repository's welcome notebook in JupyterLab; returns it, its lab cell and its check cell."""
    shutil.copy(REPO / "notebooks" / "welcome.ipynb", server.root / "welcome.ipynb")
    cells = json.loads((REPO / "notebooks" / "welcome.ipynb").read_text())["cells"]
    sources = ["".join(cell["source"]) for cell in cells]
    lab_cell = next(i for i, s in enumerate(sources) if 'Lab("files-and-folders")' in s)
    check_cell = next(i for i, s in enumerate(sources) if "lab.check()" in s and cells[i]["cell_type"] == "code")
    return Notebook(page, server, "welcome.ipynb").open(workspace="welcome"), lab_cell, check_cell


def brightness(page: Any, selector: str) -> float:
    """The mean of the R, G and B of an element's background (0 black to 255 white)."""
    colour = page.locator(selector).first.evaluate("e => getComputedStyle(e).backgroundColor")
    r, g, b = (float(x) for x in re.findall(r"[\d.]+", colour)[:3])
    return (r + g + b) / 3


def choose_theme(page: Any, name: str) -> None:
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text="Settings").click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Theme$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile("^" + re.escape(name) + "$")).click()
    light = "true" if "Light" in name else "false"
    wait_until(lambda: page.evaluate("document.body.dataset.jpThemeLight") == light, 30, f"the {name} theme")


# -- JupyterLab: the welcome notebook --------------------------------------------------


def test_the_welcome_notebook_s_lab_passes_a_step_with_its_run_and_check_buttons(
        server: JupyterProcess, page: Any) -> None:
    notebook, lab_cell, check_cell = open_welcome(page, server)
    notebook.run_cell(lab_cell)
    panel = Panel(page)
    panel.wait_page("intro")
    assert panel.root.locator(".labkernel-lab-title").inner_text() == "Files and folders"
    term = panel.terminal
    term.wait_state("connected")
    wait_prompt(term)
    sid = panel.session_id
    assert server.session(sid)["labId"] == "files-and-folders"

    panel.root.locator(".labkernel-next").click()  # Start →
    panel.wait_page("step", 1)
    assert "Look around" in panel.text()
    check = panel.root.locator(".labkernel-check")
    assert check.inner_text() == "Check"

    # A run button types its command into the terminal, where it runs.
    panel.run("ls inbox")
    term.wait_text(r"ls inbox\n(.*\n)?letter\.txt$")
    panel.run("cat inbox/letter.txt > seen.txt")
    term.wait_text(r"cat inbox/letter\.txt > seen\.txt\n" + PROMPT_RX + " ?$")
    page.shot("step-1-light")

    panel.check()
    panel.wait_page("step", 2)
    flash = panel.root.locator(".labkernel-flash")
    assert "Step 1 passed: Look around" in flash.inner_text()
    assert panel.root.locator(".labkernel-step-pill[data-step='1']").get_attribute("data-state") == "passed"
    assert server.session(sid)["currentStep"] == 2  # the server's progress, not the page's
    assert panel.root.locator(".labkernel-next").is_disabled()  # step 2 is not done yet
    page.shot("step-2-light")

    # Step 2 done by hand, checked from Python in the next cell: the panel follows.
    term.focus()
    term.run("mkdir -p projects/notes", PROMPT_RX + " ?$")
    notebook.run_cell(check_cell)
    panel.wait_page("step", 3, timeout=60)
    output = page.locator(".jp-Cell").nth(check_cell).locator(".jp-OutputArea")
    wait_until(lambda: "✓ 2 Make a folder" in output.inner_text(), 30, "the check's report in the cell")

    # Earlier steps stay reviewable; later ones are not reachable yet.
    panel.root.locator(".labkernel-step-pill[data-step='1']").click()
    panel.wait_page("step", 1)
    assert panel.root.locator(".labkernel-step-pill[data-step='4']").is_disabled()
    panel.root.locator(".labkernel-step-pill[data-step='3']").click()
    panel.wait_page("step", 3)

    # The same panel in JupyterLab's dark theme: its colours follow.
    light = brightness(page, ".labkernel-panel")
    choose_theme(page, "JupyterLab Dark")
    wait_until(lambda: brightness(page, ".labkernel-panel") < 100, 10, "a dark panel")
    assert light > 200
    panel.root.locator(".labkernel-hint-toggle").click()
    page.shot("step-3-dark")
    choose_theme(page, "JupyterLab Light")
    assert not page.console_errors, page.console_errors


def test_the_panel_works_while_the_kernel_is_busy_and_comes_back_after_a_reload(
        server: JupyterProcess, page: Any) -> None:
    server.write_notebook("busy-panel.ipynb", 'from labkernel import Lab\nlab = Lab("files-and-folders")\nlab',
                          "import time\ntime.sleep(60)")
    notebook = Notebook(page, server, "busy-panel.ipynb").open(workspace="busy-panel")
    notebook.run_cell(0)
    panel = Panel(page)
    panel.wait_page("intro")
    panel.terminal.wait_state("connected")
    notebook.run_cell(1)
    wait_until(lambda: notebook.kernel()["execution_state"] == "busy", 20, "the kernel to be busy")

    panel.root.locator(".labkernel-next").click()
    panel.run("cat inbox/letter.txt > seen.txt")
    wait_prompt(panel.terminal)
    panel.check()
    panel.wait_page("step", 2)
    assert notebook.kernel()["execution_state"] == "busy", "the kernel finished before the check"
    sid = panel.session_id
    notebook.save()

    page.reload()
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    panel = Panel(page)
    panel.wait_page("step", 2)  # where the learner was, from the server's progress
    assert panel.session_id == sid
    assert panel.root.locator(".labkernel-step-pill[data-step='1']").get_attribute("data-state") == "passed"
    page.shot("reloaded")


# -- the stand-alone lab page --------------------------------------------------------


def test_the_lab_page_takes_a_killercoda_lab_from_intro_to_finish(server: JupyterProcess, page: Any) -> None:
    page.goto(server.page_url("labkernel/labs/log-detective"))
    panel = Panel(page)
    panel.wait_page("intro")
    term = panel.terminal
    term.wait_state("connected")
    term.wait_text(r"app\.log$")  # the intro's foreground script, typed by the server
    assert "Last night the shop's web server misbehaved" in panel.text()
    page.shot("intro")
    # Instructions left, terminal right.
    box = panel.root.locator(".labkernel-panel").bounding_box()
    screen = panel.root.locator(".labkernel-terminal").bounding_box()
    assert box["x"] + box["width"] <= screen["x"] and abs(box["y"] - screen["y"]) < 5

    panel.root.locator(".labkernel-next").click()
    panel.wait_page("step", 1)
    panel.run("grep ERROR logs/app.log")
    term.wait_text(r"ERROR payment gateway timed out for order 1010$")
    panel.run("grep ERROR logs/app.log > errors.txt")
    term.wait_text(r"> errors\.txt\n" + PROMPT_RX + " ?$")
    panel.check()
    panel.wait_page("step", 2)
    assert "errors.txt holds 3 errors" in panel.root.locator(".labkernel-flash").inner_text()
    page.shot("step-2")

    # {{copy}}: to the clipboard, not into the terminal.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    panel.root.locator(".labkernel-copyable .labkernel-copy").click()
    copied = "cut -d' ' -f1 logs/access.log | sort"
    wait_until(lambda: page.evaluate("navigator.clipboard.readText()").startswith(copied),
               10, "the command on the clipboard")
    assert "uniq -c" not in term.screen()

    # A fenced block: its two lines run as they would if pasted.
    panel.run("cut -d' ' -f1 logs/access.log | sort -u | wc -l > visitors.txt\ncat visitors.txt")
    term.wait_text(r"cat visitors\.txt\n(\s*\d+)\n" + PROMPT_RX)
    panel.check()
    panel.wait_page("step", 3)

    # A here-document, then the script it wrote.
    panel.run("cat > report.sh <<'END'\n#!/bin/sh\necho \"errors: $(wc -l < errors.txt)\"\n"
              "echo \"visitors: $(cat visitors.txt)\"\nEND\nchmod +x report.sh")
    wait_prompt(term)
    panel.run("./report.sh")
    term.wait_text(r"^errors: 3$")
    panel.check()
    panel.wait_page("finish")
    assert "Case closed" in panel.text()
    assert all(s["state"] == "passed" for s in server.session(panel.session_id)["steps"])
    page.shot("finish")

    # A reload comes back to the same session, and to where the learner was.
    sid = panel.session_id
    page.reload()
    panel = Panel(page)
    panel.wait_page("finish")
    assert panel.session_id == sid
    # Outside JupyterLab the page follows the browser's colour scheme.
    light = brightness(page, ".labkernel-panel")
    page.emulate_media(color_scheme="dark")
    wait_until(lambda: brightness(page, ".labkernel-panel") < 100, 10, "a dark panel")
    assert light > 200
    page.shot("finish-dark")
    assert not page.console_errors, page.console_errors


def test_the_panel_names_unmet_needs_a_failed_background_and_presses_ctrl_c(
        server: JupyterProcess, page: Any) -> None:
    page.goto(server.page_url("labkernel/labs/needy"))
    panel = Panel(page)
    panel.wait_page("step", 1)
    term = panel.terminal
    term.wait_state("connected")
    wait_prompt(term)  # the prompt comes at once: the background is not waited for
    needs = panel.root.locator(".labkernel-needs")
    needs.wait_for(state="visible", timeout=30_000)
    assert "This lab needs: docker" in needs.inner_text()
    sid = panel.session_id
    wait_until(lambda: server.session(sid)["notes"], 30, "the background's note")
    # The panel reads the session again when the page comes back into view.
    page.evaluate("window.dispatchEvent(new Event('focus'))")
    notes = panel.root.locator(".labkernel-session-notes")
    notes.wait_for(state="visible", timeout=30_000)
    notes.locator("summary").click()
    assert "failed with exit code 4" in notes.inner_text() and "no daemon" in notes.inner_text()
    page.shot("needs-and-notes")

    panel.run("sleep 100 && echo never")
    term.wait_text(r"sleep 100 && echo never\s*$")
    # The solution: the command, then Ctrl-C as a key to press.
    panel.root.locator(".labkernel-solution-toggle").click()
    panel.root.locator(".labkernel-solution-yes").click()
    box = panel.root.locator(".labkernel-solution")
    assert [b.inner_text() for b in box.locator(".labkernel-run").all()] == ["▶ Run", "▶ Press"]
    assert box.locator(".labkernel-block").nth(1).locator(".labkernel-copy").count() == 0
    box.locator(".labkernel-run").nth(1).click()
    term.wait_text(r"\^C\n" + PROMPT_RX + " ?$")
    assert not re.search(r"^never$", term.screen(), re.M)  # the command was interrupted
    page.shot("ctrl-c-pressed")
    assert not page.console_errors, page.console_errors


def test_an_expired_session_s_panel_says_so_and_starts_the_lab_again(server: JupyterProcess, page: Any) -> None:
    page.goto(server.page_url("labkernel/labs/expiring"))
    panel = Panel(page)
    panel.wait_page("intro")
    term = panel.terminal
    term.wait_state("connected")
    old = panel.session_id
    panel.root.locator(".labkernel-next").click()
    panel.wait_page("step", 1)

    term.wait_state("expired", timeout=60)
    notice = panel.root.locator(".labkernel-notice")
    notice.wait_for(state="visible")
    assert "expired" in notice.inner_text()
    again = panel.root.locator(".labkernel-start-again")
    assert again.is_visible()
    assert panel.root.locator(".labkernel-check").is_disabled()
    page.shot("expired")

    again.click()
    wait_until(lambda: panel.session_id not in ("", old), 30, "a new session")
    term.wait_state("connected")
    assert notice.is_hidden()
    new = panel.session_id
    assert server.session(new)["labId"] == "expiring" and server.session(new)["status"] == "running"
    panel.wait_page("intro")
    panel.root.locator(".labkernel-next").click()
    panel.run("echo quick")
    term.wait_text(r"^quick$")
    page.shot("started-again")


def test_step_markdown_with_script_or_onerror_runs_nothing(server: JupyterProcess, page: Any) -> None:
    page.goto(server.page_url("labkernel/labs/unsafe"))
    panel = Panel(page)
    panel.wait_page("step", 1)  # no intro: straight to the first step
    panel.terminal.wait_state("connected")
    markdown = panel.root.locator(".labkernel-page .labkernel-markdown")
    markdown.wait_for()
    # The lab's own image loads (through the files route, with the page's credentials);
    # the missing one fails, and its onerror is gone with it.
    picture = markdown.locator("img[alt='a picture']")
    wait_until(lambda: picture.evaluate("i => i.complete && i.naturalWidth") == 40, 30, "the lab's picture")
    wait_until(lambda: "labkernel-missing" in (markdown.locator("img[alt='nope']").get_attribute("class") or ""),
               30, "the missing picture to fail")
    page.wait_for_timeout(500)

    assert page.evaluate("window.__labkernelPwned") is None
    handlers = markdown.evaluate(
        "m => [...m.querySelectorAll('*')].flatMap(e => [...e.attributes].map(a => a.name))"
        ".filter(n => n.startsWith('on'))")
    assert handlers == []
    for tag in ("script", "iframe", "form", "input", "style"):
        assert markdown.locator(tag).count() == 0, tag
    assert not (markdown.locator("#evil-link").get_attribute("href") or "").startswith("javascript")
    assert markdown.locator("#good-link").get_attribute("target") == "_blank"
    assert markdown.locator(".overlay").get_attribute("style") is None
    # What a step may hold is kept: <details>, Markdown inside it, emphasis.
    assert markdown.locator("details summary").inner_text() == "More"
    assert markdown.locator("strong", has_text="bold").count() == 1
    # Only the marked command is a button: a placeholder written in raw HTML is plain code.
    assert [b.inner_text().replace("▶", "").strip() for b in markdown.locator(".labkernel-run").all()] == \
        ["echo safe-$((6*7))"]
    panel.run("echo safe-$((6*7))")
    panel.terminal.wait_text(r"^safe-42$")
    page.shot("sanitised")


def test_mark_done_then_a_check_that_times_out_says_so(server: JupyterProcess, page: Any) -> None:
    page.goto(server.page_url("labkernel/labs/slow-check"))
    panel = Panel(page)
    panel.wait_page("step", 1)
    panel.terminal.wait_state("connected")
    term = panel.terminal
    wait_prompt(term)
    # {{exec interrupt}}: Ctrl-C for the program that runs, then the command.
    panel.run("sleep 100")
    term.wait_text(r"sleep 100\n?$")
    panel.run("echo stopped-$((6*7))")
    term.wait_text(r"^stopped-42$")
    assert "^C" in term.screen()

    check = panel.root.locator(".labkernel-check")
    assert check.inner_text() == "Mark done"
    check.click()
    panel.wait_page("step", 2)
    assert "Step 1 marked done" in panel.root.locator(".labkernel-flash").inner_text()

    assert check.inner_text() == "Check"
    check.click()
    result = panel.result("timeout", timeout=60)
    assert "Timed out" in result.inner_text()
    assert "did not finish within 2 s" in result.inner_text()  # the server's own words
    panel.wait_page("step", 2)
    assert not check.is_disabled()
    assert server.session(panel.session_id)["steps"][1]["state"] == "failed"
    page.shot("timed-out")


# -- Notebook 7 -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def panel_notebook_server() -> Iterator[JupyterProcess]:
    yield from serve("notebook")


def test_notebook7_shows_the_lab_panel(panel_notebook_server: JupyterProcess, page: Any) -> None:
    server = panel_notebook_server
    server.write_notebook("panel7.ipynb", 'from labkernel import Lab\nlab = Lab("files-and-folders")\nlab')
    notebook = Notebook(page, server, "panel7.ipynb").open()
    notebook.run_cell(0)
    panel = Panel(page)
    panel.wait_page("intro")
    panel.terminal.wait_state("connected")
    panel.root.locator(".labkernel-next").click()
    panel.run("cat inbox/letter.txt > seen.txt")
    wait_prompt(panel.terminal)
    panel.run("ls")
    panel.terminal.wait_text(r"^inbox\s+seen\.txt$")
    panel.check()
    panel.wait_page("step", 2)
    panel.root.locator(".labkernel-solution-toggle").click()
    panel.root.locator(".labkernel-solution-yes").click()
    assert panel.root.locator(".labkernel-solution pre").inner_text() == "mkdir -p projects/notes"
    page.shot("notebook7")
    server.cleanup()
