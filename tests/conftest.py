"""The fixtures every test module may use, and the markers that sort the tests.

Servers: a real Jupyter server with labkernel in the test process (pytest-jupyter),
and real shells. pytest-jupyter's default base URL is ``/a%40b/``; it stays, so that
any place that forgets ``base_url`` fails a test. A module changes the server's
settings (the manager's and the app's HTTP limits) by overriding ``labkernel_config``; one test adds
to them with ``@pytest.mark.labkernel(name=value)``.

Markers (registered in pyproject.toml): ``server`` (Jupyter servers in subprocesses),
``containment`` (every containment mode of this machine) and ``browser`` (Chromium)
are each also ``slow``, as are the in-process tests marked ``slow`` by hand, so that
``python -m pytest -m "not slow"`` is the quick full check of the core: the unit
tests and the API against the in-process server.

Helpers live in ``tests/support/`` (``from support.api import Api``); no test module
imports another, and nothing imports this one.
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest
from traitlets.config import Config

from labkernel.server.app import LabKernelApp
from support.api import PROMPT, SHELL_COMMAND, Api
from support.auth import DenyingAuthorizer
from support.processes import with_token

pytest_plugins = ["pytest_jupyter.jupyter_server"]

#: Markers whose tests ``-m "not slow"`` leaves out.
SLOW_KINDS = ("server", "containment", "browser")
BROWSER_TESTS = Path(__file__).parent / "browser"


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # tests/browser/conftest.py marks its tests browser: maybe after this runs.
        if BROWSER_TESTS in item.path.parents or any(item.get_closest_marker(kind) for kind in SLOW_KINDS):
            item.add_marker(pytest.mark.slow)


# -- the in-process server ------------------------------------------------------------


#: Settings of ``LabKernelApp``, the web layer; ``labkernel_config`` may name them too.
HTTP_LIMITS = tuple(LabKernelApp.class_own_traits(config=True))


@pytest.fixture
def labkernel_config() -> dict[str, Any]:
    """Settings for the test server (the manager's, and the app's ``HTTP_LIMITS``);
    override in a test module to change."""
    return {}


@pytest.fixture
def denied_actions() -> list[str] | None:
    """Actions on the terminals resource the server's authorizer refuses (``DenyingAuthorizer``);
    None, the default, keeps Jupyter's own. A test parametrizes this to deny actions."""
    return None


@pytest.fixture
def jp_server_config(request: pytest.FixtureRequest, labkernel_config: dict[str, Any],
                     denied_actions: list[str] | None) -> Config:
    marker = request.node.get_closest_marker("labkernel")
    settings = {"shell_command": SHELL_COMMAND, **labkernel_config, **(marker.kwargs if marker else {})}
    # The HTTP limits are the app's; every other setting is the manager's.
    app = {name: settings.pop(name) for name in HTTP_LIMITS if name in settings}
    config = Config({
        "ServerApp": {"jpserver_extensions": {"labkernel": True}},
        "LabSessionManager": settings,
        "LabKernelApp": app,
    })
    if denied_actions is not None:
        config["ServerApp"]["authorizer_class"] = DenyingAuthorizer
        config["DenyingAuthorizer"] = Config({"denied_actions": denied_actions})
    return config


@pytest.fixture(autouse=True)
def _known_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PS1", PROMPT)
    monkeypatch.setenv("HISTFILE", "/dev/null")


@pytest.fixture
def api(jp_fetch: Any) -> Api:
    return Api(jp_fetch)


@pytest.fixture
def server_url(http_server: Any, jp_http_port: int, jp_base_url: str) -> str:
    """The test server's URL with its base URL, for clients other than jp_fetch.

    Depending on ``http_server`` makes sure the server listens on that port.
    """
    return f"http://127.0.0.1:{jp_http_port}{jp_base_url}"


@pytest.fixture
def manager(jp_serverapp: Any) -> Any:
    """The server's LabSessionManager, for looking inside (waiters, buffers) in tests."""
    return jp_serverapp.web_app.settings["labkernel_manager"]


@pytest.fixture
def labs(tmp_path: Path) -> Path:
    """The folder of a test's own lab definitions, where ``support.labs.lab_config`` points
    the server (made by it)."""
    return tmp_path / "labs"


# -- processes ----------------------------------------------------------------------------


@pytest.fixture
def token() -> Iterator[str]:
    """A token for the command lines of a test's processes (``sleep 300.TOKEN``), to find
    them by (``support.processes.with_token``). Whatever carries it when the test ends,
    passed, failed or xfailed, is killed: it does not outlive the test."""
    value = str(secrets.randbelow(10**9)).zfill(9)
    yield value
    for proc in with_token(value):
        with contextlib.suppress(psutil.Error):
            proc.kill()
