"""Browser tests: Debian's Chromium driven by Playwright against real Jupyter servers.

The whole directory is skipped, with the reason, where Chromium or Playwright is
missing on a developer's machine; under CI (``CI=true``) it runs or fails, never
skips. Servers are shared per module where isolation allows (each test opens its
own notebook, its own workspace and its own lab session); tests that restart or
break their server get one of their own.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator

import pytest

from .labservers import CHROMIUM, CHROMIUM_ARGS, JupyterProcess

ARTIFACTS = Path(__file__).parent / "artifacts"
HERE = Path(__file__).parent


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does it)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Playwright for Python is missing (pip install -e '.[test]')"
    return None


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Chromium against a real Jupyter server")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = _missing()
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            if missing and not _in_ci():
                item.add_marker(pytest.mark.skip(reason=f"browser tests need Chromium: {missing}"))


@pytest.fixture(autouse=True)
def _known_prompt() -> None:
    """Overrides tests/conftest.py's: the servers here set their shells' prompt themselves."""


# pytest-jupyter's autouse fixtures run an in-process server's cleanup on the thread's
# asyncio loop, which under Playwright's sync API is Playwright's own (running) loop.
# The servers here are subprocesses: nothing of pytest-jupyter's to clean up.
@pytest.fixture(autouse=True)
def jp_asyncio_loop() -> None:
    """Overrides pytest-jupyter's: no in-process server, no loop of its own."""


@pytest.fixture(autouse=True)
def jp_server_cleanup() -> None:
    """Overrides pytest-jupyter's: see jp_asyncio_loop."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for a module's tests.

    Module scope, not session: while Playwright's sync API is active its asyncio loop
    is marked running on this thread, which would break every pytest-jupyter test
    that runs after the browser tests in the same pytest run.
    """
    missing = _missing()
    if missing:
        pytest.fail(f"CI=true but the browser tests cannot run: {missing}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _artifact_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context and page; a screenshot of it is kept after the test.

    ``page.shot("moment")`` keeps one more, named after the test and the moment
    (``page.shot("moment", other_page)``: of another page of the test).
    The page's console errors go to ``page.console_errors``.
    """
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    pg = context.new_page()
    name = _artifact_name(request)
    pg.console_errors = []
    pg.on("console", lambda m: m.type == "error" and pg.console_errors.append(m.text))
    pg.shot = lambda moment, other=None: (other or pg).screenshot(
        path=str(ARTIFACTS / f"{name}--{moment}.png"))
    yield pg
    try:
        pg.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    except Exception:  # noqa: BLE001 - a page that crashed has no screenshot to give
        pass
    context.close()


def _server(app: str, **kwargs: Any) -> Iterator[JupyterProcess]:
    server = JupyterProcess(app, **kwargs).start()
    try:
        yield server
    finally:
        log = server.log_tail(200)
        server.close()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / f"server-{app}-{server.port}.log").write_text(log)


@pytest.fixture(scope="module")
def lab_server() -> Iterator[JupyterProcess]:
    """``jupyter lab`` at base URL ``/a%40b/``, shared by a module's tests."""
    yield from _server("lab")


@pytest.fixture
def lab(lab_server: JupyterProcess) -> Iterator[JupyterProcess]:
    """The module's JupyterLab server, with its sessions and kernels stopped after the test."""
    yield lab_server
    lab_server.cleanup()


@pytest.fixture(scope="module")
def notebook_server() -> Iterator[JupyterProcess]:
    """``jupyter notebook`` (Notebook 7) at base URL ``/a%40b/``."""
    yield from _server("notebook")


@pytest.fixture
def own_lab() -> Iterator[JupyterProcess]:
    """A JupyterLab server for one test alone, free to be restarted or broken."""
    yield from _server("lab")
