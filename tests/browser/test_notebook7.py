"""The Terminal widget in Notebook 7 (``jupyter notebook``), in Chromium."""

from __future__ import annotations

import re
from typing import Any

from .labservers import PROMPT, JupyterProcess
from .termpage import Notebook, RequestLog

TERMINAL_CELL = "from labkernel import Terminal\nt = Terminal()\nt"


def test_notebook7_shows_a_terminal_that_runs_commands(notebook_server: JupyterProcess, page: Any) -> None:
    requests = RequestLog().attach(page)
    notebook_server.write_notebook("nb7.ipynb", TERMINAL_CELL)
    notebook = Notebook(page, notebook_server, "nb7.ipynb").open()
    assert "/a%40b/notebooks/nb7.ipynb" in page.url  # Notebook 7's page, not JupyterLab's

    notebook.run_cell(0)
    term = notebook.terminal()
    term.wait_state("connected")
    term.wait_text(re.escape(PROMPT.strip()) + "$")
    term.focus()
    term.run("echo notebook-$((6*7))", r"^notebook-42$")

    page.shot("notebook7")
    assert notebook_server.session(term.session_id)["status"] == "running"
    assert requests.requests and all("/a%40b/api/" in url for _, _, url in requests.requests)
    notebook_server.cleanup()
