"""The lab catalog on a running server: read when asked for, never in the background.

The search path is walked (a stat of every lab folder's files, see
``labkernel/labs/catalog.py``) only when something needs the definitions: the catalog,
a start, a warm pool with room to fill. ``manager.scan_count`` counts the walks.
Each test has lab folders of its own under ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import pytest

from labkernel.labs.catalog import LabScanner
from support.api import eventually
from support.labs import lab_config, write_lab


@pytest.fixture
def labkernel_config(tmp_path: Path) -> dict[str, Any]:
    return lab_config(tmp_path)


async def catalog(api: Any) -> dict[str, Any]:
    return await api.ok("GET", "api", "labs")


async def stale_catalog(api: Any, manager: Any) -> dict[str, Any]:
    """The catalog once what was written before this call is in it: a scan begun at
    most ``lab_scan_interval`` before the request began after this call."""
    await asyncio.sleep(manager.lab_scan_interval)
    return await catalog(api)


def lab_ids(body: dict[str, Any]) -> set[str]:
    return {lab["id"] for lab in body["labs"]}


async def pool_ready(manager: Any, lab_id: str, n: int = 1) -> None:
    await eventually(lambda: manager.warm_pool.counts()[0].get(lab_id, 0) >= n, timeout=30)


# A catalog older than 50 ms counts as stale, and the culler passes every 50 ms: a
# server that walked its labs in the background would walk them all the time.
@pytest.mark.labkernel(lab_scan_interval=0.05, cull_interval=0.05)
async def test_an_idle_server_does_not_walk_its_labs(api: Any, manager: Any, labs: Path) -> None:
    write_lab(labs, "warm", "pool = 1\nsetup = 'true'")
    assert "warm" in lab_ids(await stale_catalog(api, manager))
    await pool_ready(manager, "warm")
    scans = manager.scan_count
    await asyncio.sleep(1.0)  # some 20 culler passes, each with a stale catalog
    assert manager.scan_count == scans
    assert manager.warm_pool.counts() == ({"warm": 1}, {"warm": 1})  # the pool stays full
    # The next one to ask gets a fresh catalog: one walk.
    await catalog(api)
    assert manager.scan_count == scans + 1


@pytest.mark.labkernel(lab_scan_interval=3600.0)
async def test_a_lab_added_a_moment_ago_is_found_by_its_start_and_then_listed(
        api: Any, manager: Any, labs: Path) -> None:
    assert "late" not in lab_ids(await catalog(api))
    scans = manager.scan_count
    await catalog(api)  # fresh: served as it is
    assert manager.scan_count == scans
    write_lab(labs, "late", "title = 'Late'")
    # The catalog is fresh for an hour, but it does not know this id: a start looks again.
    session = await api.start(labId="late")
    assert (session["labId"], session["title"]) == ("late", "Late")
    assert "late" in lab_ids(await catalog(api))
    # An id that is nowhere: one more walk, then the answer is no.
    scans = manager.scan_count
    status, body = await api.call("POST", "api", "labs", "start", body={"labId": "nowhere"})
    assert (status, body["error"]) == (404, "lab_not_found")
    assert manager.scan_count == scans + 1


@pytest.mark.labkernel(lab_scan_interval=0.5)
async def test_labs_and_broken_definitions_added_later_are_listed_once_the_catalog_is_stale(
        api: Any, manager: Any, labs: Path) -> None:
    first = await catalog(api)
    assert first["errors"] == [] and lab_ids(first) == {"shell"}
    write_lab(labs, "good", "title = 'Good'")
    write_lab(labs, "broken", "title = 'unclosed")
    scans = manager.scan_count
    body = await stale_catalog(api, manager)
    assert manager.scan_count == scans + 1
    assert lab_ids(body) == {"shell", "good"}
    (error,) = body["errors"]
    assert error["labId"] == "broken" and error["path"].endswith("broken/lab.toml")
    assert error["field"] == "lab.toml" and "not valid TOML" in error["reason"]


@pytest.mark.labkernel(lab_scan_interval=2.0)  # the default
async def test_concurrent_requests_share_one_walk(api: Any, manager: Any, labs: Path) -> None:
    await catalog(api)
    await asyncio.sleep(manager.lab_scan_interval)  # stale now
    scans = manager.scan_count
    answers = await asyncio.gather(*(catalog(api) for _ in range(10)))
    assert manager.scan_count == scans + 1
    assert all(answer == answers[0] for answer in answers)


@pytest.mark.labkernel(lab_scan_interval=3600.0)
async def test_concurrent_starts_of_a_lab_added_a_moment_ago_all_find_it(
        api: Any, manager: Any, labs: Path) -> None:
    await catalog(api)
    write_lab(labs, "new", "title = 'New'")
    # Each start waits for a walk begun after it asked (one at a time, shared by
    # those that asked before it began): none may be answered from the old catalog.
    sessions = await asyncio.gather(*(api.start(labId="new") for _ in range(8)))
    assert {s["labId"] for s in sessions} == {"new"} and len({s["sessionId"] for s in sessions}) == 8


@pytest.mark.labkernel(lab_scan_interval=0.05, cull_interval=0.05)
async def test_a_pool_refilled_with_nobody_asking_reads_the_changed_definition_first(
        api: Any, manager: Any, labs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[str] = []
    create = manager.warm_pool.create
    monkeypatch.setattr(manager.warm_pool, "create", lambda lab: created.append(lab.title) or create(lab))
    # A pooled session whose program ends after a second: the pool refills itself.
    brief = "pool = 1\ncommand = ['sh', '-c', 'sleep 1']\ntitle = '{}'"
    write_lab(labs, "brief", brief.format("One"))
    await stale_catalog(api, manager)  # finds the lab, and starts its pool
    await eventually(lambda: created == ["One"])
    write_lab(labs, "brief", brief.format("Two, longer"))
    # No client asks for anything: the culler finds the pool short, and since the
    # catalog is stale it reads the definitions before starting the new session.
    await eventually(lambda: "Two, longer" in created, timeout=30)
    assert created[0] == "One" and set(created) == {"One", "Two, longer"}


# -- many labs ---------------------------------------------------------------------------------


def many_labs(labs: Path, n: int) -> None:
    for i in range(n):
        folder = labs / f"lab{i:04d}"
        folder.mkdir(parents=True)
        (folder / "lab.toml").write_text(f"title = 'Lab {i}'\n[[steps]]\ntitle = 'One'\ncheck = 'true'\n")


async def test_a_404_names_the_count_and_a_few_close_ids_not_every_lab(api: Any, labs: Path) -> None:
    """With 10,000 labs the message listed them all: 100,049 characters."""
    many_labs(labs, 300)
    assert len(lab_ids(await catalog(api))) == 301
    for wanted, close in [("lab0042x", "lab0042"), ("x" * 60000, None)]:
        status, body = await api.call("POST", "api", "labs", "start", body={"labId": wanted})
        assert (status, body["error"]) == (404, "lab_not_found")
        message = body["message"]
        assert len(message) < 300, message
        assert "301 labs" in message and "GET api/labs" in message
        if close:
            assert close in message.split("did you mean", 1)[1]
    status, body = await api.call("GET", "api", "labs", "nolab", "files", "x.png")
    assert status == 404 and len(body["message"]) < 300


async def test_a_404_on_a_small_server_lists_its_labs(api: Any, labs: Path) -> None:
    write_lab(labs, "only", "title = 'Only'")
    status, body = await api.call("POST", "api", "labs", "start", body={"labId": "onyl"})
    assert status == 404 and body["message"] == "There is no lab 'onyl' here; the labs here are: only, shell."


@pytest.mark.labkernel(lab_scan_interval=0.0)
async def test_a_walk_that_finds_nothing_new_keeps_the_snapshot_and_its_answer(
        api: Any, manager: Any, labs: Path) -> None:
    many_labs(labs, 20)
    first = await catalog(api)
    snapshot = manager.labs.list()
    answers = dict(manager.labs._answers)
    scans = manager.scan_count
    assert await catalog(api) == first
    assert manager.scan_count == scans + 1  # walked again (interval 0)...
    assert manager.labs._answers == answers  # ...found nothing new: the same answer, not made again
    assert all(a is b for a, b in zip(manager.labs.list(), snapshot))
    (labs / "lab0003" / "lab.toml").write_text("title = 'Changed'")
    assert {lab["id"]: lab["title"] for lab in (await catalog(api))["labs"]}["lab0003"] == "Changed"
    assert all(a is not b for a, b in zip(manager.labs._answers.values(), answers.values()))


def test_a_walk_that_finds_nothing_new_leaves_nothing_for_the_garbage_collector(tmp_path: Path) -> None:
    """At 10,000 labs each walk's surviving objects brought a full collection every few
    walks, holding the server's interpreter lock 0.3 to 0.6 s (measured): a walk that
    changes nothing may not promote anything to an older generation."""
    many_labs(tmp_path / "labs", 3000)
    scanner = LabScanner(str(tmp_path), ["labs"])
    scanner.scan()
    gc.collect()
    collections: list[int] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collections.append(info["generation"])
    gc.callbacks.append(count)
    try:
        for _ in range(3):
            assert not scanner.scan().changed
    finally:
        gc.callbacks.remove(count)
    assert [g for g in collections if g > 0] == [], collections
