"""``labkernel.Terminal`` on the Python side, against the real server.

The widget's browser side is tested in a browser (tests/browser/) and its
transport by the JS unit tests (test_js.py); here: which session a Terminal
shows, and ``stop()``. LabClient is synchronous and the server runs on the
test's loop, so Terminal() runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from labkernel import Terminal
from labkernel.client import LabClient, LabError
from labkernel.clients.widget import _kernel_client


@pytest.fixture
def client(server_url: str, jp_serverapp: Any) -> LabClient:
    with LabClient(server_url, token=jp_serverapp.identity_provider.token) as lab:
        yield lab


async def test_a_terminal_starts_a_shell_session_and_stops_it(api: Any, client: LabClient) -> None:
    term = await asyncio.to_thread(Terminal, client=client, rows=30)
    session = await api.get(term.session_id)
    assert (session["labId"], session["status"], session["rows"]) == ("shell", "running", 30)
    assert (term.lab, term.rows, term.read_only) == ("shell", 30, False)
    await asyncio.to_thread(term.stop)
    assert (await api.get(term.session_id))["status"] == "stopped"


async def test_a_terminal_given_a_session_attaches_without_starting_one(api: Any, client: LabClient) -> None:
    sid, _ = await api.shell()
    term = await asyncio.to_thread(Terminal, session_id=sid, client=client, read_only=True)
    assert term.session_id == sid
    assert term.read_only is True
    assert [s["sessionId"] for s in (await api.ok("GET", "api", "labs", "sessions"))["sessions"]] == [sid]


async def test_an_unknown_lab_is_an_error_in_the_cell(client: LabClient) -> None:
    with pytest.raises(LabError) as error:
        await asyncio.to_thread(Terminal, lab="no-such-lab", client=client)
    assert (error.value.status, error.value.code) == (404, "lab_not_found")


def test_outside_a_labkernel_kernel_the_browser_starts_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABKERNEL_URL", raising=False)
    _kernel_client.cache_clear()
    try:
        term = Terminal(lab="shell")
    finally:
        _kernel_client.cache_clear()
    assert term.session_id == ""
    assert term.status == "connecting"


def test_the_widget_ships_the_built_bundle_and_its_css() -> None:
    term = Terminal(session_id="x")
    assert "labkernel-terminal" in term._esm and "xterm" in term._esm
    assert ".xterm" in term._css and ".labkernel-status" in term._css
    state = term.get_state()
    assert {"session_id", "lab", "rows", "read_only", "status", "exit_code", "http"} <= set(state)
