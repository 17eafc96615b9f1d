"""The welcome notebook runs top to bottom in a kernel of the test server.

The kernel is started by nbclient in this process, whose environment holds the
server's URL and token (the extension exports them for its kernels), so the
notebook's ``Terminal()`` starts a real session on the real server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
WELCOME = REPO / "notebooks" / "welcome.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def labkernel_config() -> dict[str, Any]:
    # The README's command serves the repository's root, whose labs/ the notebook uses.
    return {"lab_path": [str(REPO / "labs")]}


async def test_the_welcome_notebook_opens_a_terminal_and_links_its_page(
        manager: Any, server_url: str, jp_base_url: str) -> None:
    nb = nbformat.read(WELCOME, as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3")
    await client.async_execute()

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert any(WIDGET_VIEW in out.get("data", {}) for out in outputs), "no widget displayed"
    sessions = {s.lab.id: s for s in manager.list()}
    assert sorted(sessions) == ["files-and-folders", "shell"]
    assert all(s.status == "running" for s in sessions.values())
    session = sessions["shell"]
    printed = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    # Nothing was done in the lab yet: its first step's check has not passed.
    assert "✗ 1 Look around" in printed
    # The lab's cell shows its panel (a widget of its own, not the bare terminal).
    states = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    kinds = [m["state"].get("kind") for m in states.get("state", {}).values()]
    assert "lab" in kinds, kinds
    links = "".join(out.get("data", {}).get("text/markdown", "") for out in outputs)
    assert f"({jp_base_url}labkernel/labs/shell)" in links
    assert f"({jp_base_url}labkernel/sessions/{session.id})" in links
    assert f"({jp_base_url}labkernel/sessions/{sessions['files-and-folders'].id})" in links
