"""HTTP policy at the edge: the limits of HTTP are ``LabKernelApp``'s, their old names
on ``LabSessionManager`` still work (with a warning), and the manager starts a lab in
one async call.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.utils import url_path_join
from traitlets.config import Config

from labkernel.errors import LabNotFound
from labkernel.manager import LabSessionManager
from labkernel.server import handlers
from labkernel.server.app import LabKernelApp
from support.api import PROMPT
from support.labs import lab_config, write_lab

LIMITS = {"max_wait": 0.3, "batch_delay": 0.0, "max_answer_size": 4096}


def app_config(**settings: Any) -> Any:
    """Run a test against a server whose LabKernelApp has these settings."""
    name = ",".join(f"{key}={value}" for key, value in settings.items())
    return pytest.mark.parametrize("labkernel_app_config", [settings], ids=[f"app:{name}"])


def manager_config(**settings: Any) -> Any:
    """Run a test against a server whose LabSessionManager section has these settings, as
    a deployer's config from before the HTTP limits moved to the app has them (the
    shared ``labkernel_config`` would give the app those names)."""
    name = ",".join(f"{key}={value}" for key, value in settings.items())
    return pytest.mark.parametrize("old_manager_config", [settings], ids=[f"manager:{name}"])


@pytest.fixture
def labkernel_config(request: Any, tmp_path: Path) -> dict[str, Any]:
    """LabSessionManager settings: the test's, or with "labs" a catalog in tmp_path/labs."""
    settings = getattr(request, "param", {})
    return lab_config(tmp_path, lab_scan_interval=3600.0) if settings == "labs" else settings


@pytest.fixture
def labkernel_app_config() -> dict[str, Any]:
    return {}


@pytest.fixture
def old_manager_config() -> dict[str, Any]:
    return {}


@pytest.fixture
def app_log(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the labkernel app (and the manager it makes) log while it sets up.

    Caught by a handler of its own on the app's logger for that time: the app
    configures its logger (handlers included) when it is made, after any fixture.
    """
    messages: list[str] = []
    setup = LabKernelApp.initialize_settings

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    def initialize_settings(app: LabKernelApp) -> None:
        handler = Keep(logging.WARNING)
        app.log.addHandler(handler)
        try:
            setup(app)
        finally:
            app.log.removeHandler(handler)

    monkeypatch.setattr(LabKernelApp, "initialize_settings", initialize_settings)
    return messages


@pytest.fixture
def jp_server_config(jp_server_config: Config, labkernel_app_config: dict[str, Any],
                     old_manager_config: dict[str, Any], app_log: list[str]) -> Config:
    jp_server_config.merge(Config({"LabKernelApp": labkernel_app_config,
                                   "LabSessionManager": old_manager_config}))
    return jp_server_config


@pytest.fixture
def app(jp_serverapp: Any) -> Any:
    return jp_serverapp.web_app.settings["labkernel"]


def deprecations(log: list[str]) -> list[str]:
    return [m for m in log if "deprecated" in m]


async def assert_limits_in_force(api: Any, app: Any) -> None:
    """max_wait 0.3 s and max_answer_size 4096 hold for output requests."""
    assert (app.max_wait, app.batch_delay, app.max_answer_size) == (0.3, 0.0, 4096)
    sid, offset = await api.shell()
    began = time.monotonic()
    answer = await api.output(sid, offset, wait=5)
    assert answer["data"] == "" and time.monotonic() - began < 2.5
    accepted = await api.command(sid, "head -c 20000 /dev/zero | tr '\\0' a; echo; echo DO''NE")
    text, _ = await api.read_until(sid, "DONE", accepted["offset"])
    answer = await api.output(sid, accepted["offset"], max=1024 * 1024)
    assert 1000 < len(answer["data"]) <= 4096 < len(text)


@manager_config(**LIMITS)
async def test_old_manager_names_of_http_limits_still_take_effect_with_a_warning(
        api: Any, app: Any, app_log: list[str]) -> None:
    await assert_limits_in_force(api, app)
    warned = deprecations(app_log)
    for name in LIMITS:
        assert any(f"LabSessionManager.{name} is deprecated: set LabKernelApp.{name} instead" in m
                   for m in warned), app_log
    # Taken by the app, so the manager does not call them unknown.
    assert not any("not recognized" in m for m in app_log), app_log


@app_config(**LIMITS)
async def test_http_limits_are_set_on_the_app(api: Any, app: Any, manager: Any,
                                              app_log: list[str]) -> None:
    await assert_limits_in_force(api, app)
    assert deprecations(app_log) == []
    assert not any(hasattr(manager, name) for name in [*LIMITS, "clamp_wait"])


@manager_config(max_wait=10.0)
@app_config(**LIMITS)
async def test_the_new_name_wins_over_the_old_one(api: Any, app: Any, app_log: list[str]) -> None:
    await assert_limits_in_force(api, app)
    assert any("LabSessionManager.max_wait is deprecated and ignored" in m for m in app_log), app_log


@pytest.mark.parametrize("jp_argv", [["--LabSessionManager.max_wait=0.4"]])
async def test_an_old_name_on_the_command_line_still_takes_effect(app: Any, app_log: list[str]) -> None:
    assert app.max_wait == 0.4
    assert any("LabSessionManager.max_wait is deprecated" in m for m in app_log), app_log


async def test_handlers_bound_to_another_manager_obey_the_apps_limits(
        api: Any, app: Any, jp_serverapp: Any) -> None:
    # As the benchmark's variants are mounted (benchmarks/variants_ext.py): the
    # limits come from the labkernel app, the sessions from the bound manager.
    app.max_wait = 0.3
    other = LabSessionManager(parent=jp_serverapp, root_dir=jp_serverapp.root_dir, log=app.log)
    base = url_path_join(jp_serverapp.base_url, "v", "other")
    specs = [(url_path_join(base, pattern), type(cls.__name__, (cls,), {"manager": property(lambda _: other)}),
              {"name": "labkernel"}) for pattern, cls in handlers.default_handlers]
    jp_serverapp.web_app.add_handlers(".*$", specs)
    try:
        session = await api.ok("POST", "v", "other", "api", "labs", "start", body={}, expect=201)
        sid = session["sessionId"]
        assert [s.id for s in other.list()] == [sid]
        offset, text = 0, ""
        while PROMPT not in text:
            answer = await api.ok("GET", "v", "other", "api", "ws", "output", sid,
                                  params={"offset": str(offset), "wait": "5"})
            text, offset = text + answer["data"], answer["nextOffset"]
        began = time.monotonic()
        answer = await api.ok("GET", "v", "other", "api", "ws", "output", sid,
                              params={"offset": str(offset), "wait": "5"})
        assert answer["data"] == "" and time.monotonic() - began < 2.5
    finally:
        await other.shutdown()


@pytest.mark.parametrize("labkernel_config", ["labs"], indirect=True)
async def test_the_managers_start_finds_a_lab_added_a_moment_ago_and_refuses_an_unknown_one(
        manager: Any, tmp_path: Path) -> None:
    await manager.refresh_labs()
    write_lab(tmp_path / "labs", "late", "title = 'Late'")
    session = await manager.start("late", 30, 100)
    assert (session.lab.id, session.rows, session.cols) == ("late", 30, 100)
    scans = manager.scan_count
    with pytest.raises(LabNotFound):
        await manager.start("nowhere")
    assert manager.scan_count == scans + 1
    await manager.stop(session.id)


async def test_the_page_title_is_escaped(jp_fetch: Any) -> None:
    page = await jp_fetch("labkernel", "labs", "<b>&")
    html = page.body.decode()
    assert re.search(r"<title>&lt;b&gt;&amp; · labkernel</title>", html), html[:400]


async def test_an_answered_output_request_is_freed_without_the_garbage_collector(
        api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # A handler in a reference cycle (it held its poll, the poll held it) waited for
    # the collector, with its request and headers: during a flood that doubled the
    # longest collection pause (benchmarks/bench.py, 2.1 ms against 0.9).
    handlers_seen: list[weakref.ref[Any]] = []
    initialize = handlers.OutputHandler.initialize

    def keep(self: Any, *args: Any, **kwargs: Any) -> None:
        handlers_seen.append(weakref.ref(self))
        initialize(self, *args, **kwargs)

    monkeypatch.setattr(handlers.OutputHandler, "initialize", keep)
    sid, offset = await api.shell()
    handlers_seen.clear()
    gc.disable()
    try:
        for wait in (0, 0.2):  # answered at once, and after a long poll
            await api.output(sid, offset, wait=wait)
        for _ in range(10):  # Tornado lets go of a finished request within a turn or two
            await asyncio.sleep(0)
        assert len(handlers_seen) == 2
        assert [ref() for ref in handlers_seen] == [None, None], "a handler outlived its request"
    finally:
        gc.enable()
