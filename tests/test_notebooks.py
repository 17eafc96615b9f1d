"""Every notebook in ``notebooks/`` but the welcome one (``test_welcome.py`` runs that,
with its own assertions) runs top to bottom in a real kernel against the test server.

As in ``test_welcome.py``: nbclient starts the kernel from this process, whose
environment holds the server's URL and token, so ``Lab(...)`` starts real sessions.
Each notebook is copied to ``tmp_path/notebooks/`` and runs there: the author
notebook writes its lab into ``../labs``, the temporary ``labs/`` on the server's lab
path, never into the repository.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: Run by test_welcome.py.
ELSEWHERE = {"welcome.ipynb"}


@pytest.fixture
def labkernel_config(tmp_path: Path) -> dict[str, Any]:
    # The repository's labs, as the README's command serves them, and the temporary
    # labs/ beside the copied notebooks/ (where the author notebook writes its lab).
    (tmp_path / "labs").mkdir()
    return {"lab_path": [str(REPO / "labs"), str(tmp_path / "labs")], "lab_scan_interval": 0}


def stream(cell: Any) -> str:
    return "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")


def cell_after(nb: Any, source: str) -> Any:
    """The first code cell whose source starts with ``source``."""
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(source))


def check_git_basics(nb: Any, manager: Any, tmp_path: Path) -> None:
    printed = stream(cell_after(nb, "print(lab.check())"))
    # Nothing was done in the lab: every step's check ran and failed, each saying why.
    assert "✗ 1 Create a repository" in printed, printed
    assert "This folder is not a git repository yet." in printed
    assert "✗ 3 Work on a branch" in printed
    assert [s.lab.id for s in manager.list()] == ["git-basics"]


def check_author(nb: Any, manager: Any, tmp_path: Path) -> None:
    lab_id = stream(nb.cells[1]).strip()
    assert re.fullmatch(r"my-first-lab-\w+", lab_id), lab_id
    before = stream(cell_after(nb, "print(lab.check())"))
    assert "✗ 1 Make a folder" in before and "There is no folder notes yet." in before
    assert "0 notes/" in stream(cell_after(nb, "result = lab.run("))
    assert stream(cell_after(nb, "%%lab")) == "buy milk\n"
    after = cell_after(nb, "report = lab.check()")
    assert stream(after) == "✓ 1 Make a folder\n✓ 2 Write a note\n"
    assert after.outputs[-1]["data"]["text/plain"] == "True"
    report = stream(cell_after(nb, "!labkernel test"))
    assert ("1 lab(s): 1 passed, 0 unverified, 0 skipped, 0 failed; "
            "steps: 2 verified, 0 unverified, 0 failed, 0 skipped") in report, report
    # The last cell cleaned up: the session ended, the lab's folder is gone.
    assert [s.lab.id for s in manager.list()] == [lab_id]
    assert all(s.status != "running" for s in manager.list())
    assert list((tmp_path / "labs").iterdir()) == []


CHECKS: dict[str, Callable[[Any, Any, Path], None]] = {
    "git-basics.ipynb": check_git_basics,
    "author.ipynb": check_author,
}


def test_every_notebook_is_run_by_a_test() -> None:
    found = {p.name for p in NOTEBOOKS.glob("*.ipynb")}
    assert found == set(CHECKS) | ELSEWHERE


def test_the_notebooks_are_committed_without_outputs() -> None:
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        ran = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not ran, f"{path.name}: cells {ran} hold outputs"
        assert "widgets" not in nb.metadata, f"{path.name}: widget state saved"


@pytest.mark.parametrize("name", [
    "git-basics.ipynb",
    # Its `!labkernel test` starts a Jupyter server in a process of its own.
    pytest.param("author.ipynb", marks=pytest.mark.server),
])
async def test_the_notebook_runs_top_to_bottom(name: str, manager: Any, server_url: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # `!labkernel test` finds the console script beside this Python, as in an installed
    # environment (the tests may run with a venv's python without its bin/ on PATH).
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    here = tmp_path / "notebooks"
    here.mkdir()
    shutil.copy(NOTEBOOKS / name, here / name)
    nb = nbformat.read(here / name, as_version=4)
    client = NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(here)}})
    await client.async_execute()

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert any(WIDGET_VIEW in out.get("data", {}) for out in outputs), "no lab panel displayed"
    CHECKS[name](nb, manager, tmp_path)
