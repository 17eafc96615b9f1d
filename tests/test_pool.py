"""Warm pools: the accounting (property-tested against the rule) and pooled starts on a server.

The rule (``labkernel/labs/pool.py``): learners' sessions plus pooled ones never exceed
``max_sessions``; pooled ones never exceed ``pool_max`` nor a lab's ``pool``; a
start takes a ready pooled session of its lab when there is one, and is refused
only when learners' own sessions fill the limit.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkernel.labs.pool import admit, pool_sizes, refill_plan
from support.api import PROMPT, eventually
from support.labs import lab_config, write_lab

LABS = ["a", "b", "c"]


# -- the pure core ------------------------------------------------------------------------------


class Model:
    """A server as counts: learners' sessions, and pooled ones (ready or warming) by lab."""

    def __init__(self, wanted: dict[str, int], max_sessions: int, cap: int):
        self.wanted, self.max, self.cap = wanted, max_sessions, cap
        self.live = 0
        self.ready = {lab: 0 for lab in LABS}
        self.warming = {lab: 0 for lab in LABS}

    def pooled(self) -> dict[str, int]:
        return {lab: self.ready[lab] + self.warming[lab] for lab in LABS}

    def refill(self) -> None:
        for lab, n in refill_plan(self.wanted, self.pooled(), self.live, self.max, self.cap).items():
            assert n > 0
            self.warming[lab] += n

    def start(self, lab: str) -> str:
        decision = admit(lab, self.ready, self.pooled(), self.live, self.max)
        if decision.take:
            assert self.ready[lab] > 0
            self.ready[lab] -= 1
        elif decision.refuse:
            # refused only when learners fill the limit by themselves
            assert self.live >= self.max
            return "refused"
        else:
            if decision.evict is not None:
                victim = decision.evict
                assert self.pooled()[victim] > 0
                if self.warming[victim]:
                    self.warming[victim] -= 1
                else:
                    self.ready[victim] -= 1
            assert self.live + sum(self.pooled().values()) < self.max, "no room made"
        self.live += 1
        return "took" if decision.take else "started"

    def check(self) -> None:
        pooled = self.pooled()
        assert self.live + sum(pooled.values()) <= self.max
        assert sum(pooled.values()) <= self.cap
        sizes = pool_sizes(self.wanted, self.max, self.cap)
        for lab in LABS:
            assert pooled[lab] <= sizes.get(lab, 0)


operations = st.lists(st.one_of(
    st.tuples(st.just("start"), st.sampled_from(LABS)),
    st.tuples(st.just("end"), st.none()),
    st.tuples(st.just("warm"), st.sampled_from(LABS)),
    st.tuples(st.just("fail"), st.sampled_from(LABS)),
    st.tuples(st.just("refill"), st.none()),
), max_size=60)


@settings(max_examples=400, deadline=None)
@given(wanted=st.fixed_dictionaries({lab: st.integers(0, 8) for lab in LABS}),
       max_sessions=st.integers(0, 10), cap=st.integers(0, 12), ops=operations)
def test_the_pool_never_exceeds_the_limits_and_never_refuses_a_learner_for_its_sake(
        wanted: dict[str, int], max_sessions: int, cap: int, ops: list[tuple[str, Any]]) -> None:
    model = Model(wanted, max_sessions, cap)
    model.refill()
    model.check()
    for op, lab in ops:
        if op == "start":
            outcome = model.start(lab)
            if model.ready.get(lab) and outcome == "refused":
                raise AssertionError("a ready pooled session was there")
        elif op == "end" and model.live:
            model.live -= 1
        elif op == "warm" and model.warming[lab]:
            model.warming[lab] -= 1
            model.ready[lab] += 1
        elif op == "fail" and model.warming[lab]:
            model.warming[lab] -= 1
        elif op == "refill":
            model.refill()
        model.check()


@settings(max_examples=300, deadline=None)
@given(wanted=st.fixed_dictionaries({lab: st.integers(0, 8) for lab in LABS}),
       max_sessions=st.integers(0, 10), cap=st.integers(0, 12), live=st.integers(0, 10))
def test_a_refill_fills_all_the_room_there_is(wanted: dict[str, int], max_sessions: int, cap: int,
                                                live: int) -> None:
    plan = refill_plan(wanted, {}, live, max_sessions, cap)
    sizes = pool_sizes(wanted, max_sessions, cap)
    room = max(0, min(max_sessions - live, cap))
    assert sum(plan.values()) == min(room, sum(sizes.values()))


def test_room_is_shared_between_labs_by_what_each_misses() -> None:
    assert refill_plan({"a": 5, "b": 1}, {}, 0, 4, 10) == {"a": 3, "b": 1}
    assert refill_plan({"a": 5, "b": 5}, {"a": 2}, 0, 100, 6) == {"a": 1, "b": 3}


def test_a_start_at_the_limit_evicts_from_the_lab_pooling_the_most() -> None:
    assert admit("x", {}, {"a": 1, "b": 2}, 1, 4).evict == "b"
    assert admit("x", {}, {"a": 1}, 4, 4).refuse
    assert admit("a", {"a": 1}, {"a": 1}, 3, 4).take


# -- on a server --------------------------------------------------------------------------------


@pytest.fixture
def labkernel_config(tmp_path: Path) -> dict[str, Any]:
    return lab_config(tmp_path, max_sessions=6, pool_max=4)


def pooled_lab(labs: Path, name: str = "warm", pool: int = 2, setup: str = "sleep 1; touch ready") -> None:
    write_lab(labs, name, f"""
        title = "Warm"
        scratch = true
        pool = {pool}
        setup = "{setup}"
        [[steps]]
        title = "Ready?"
        check = "test -f ready"
    """)


async def ready_pool(api: Any, manager: Any, lab_id: str, n: int) -> None:
    await api.ok("GET", "api", "labs")  # the scan that finds the lab starts its pool
    await eventually(lambda: manager.warm_pool.counts()[0].get(lab_id, 0) >= n, timeout=30)


async def test_a_pooled_start_hands_out_a_session_whose_setup_has_run(
        api: Any, manager: Any, tmp_path: Path) -> None:
    pooled_lab(tmp_path / "labs")
    await ready_pool(api, manager, "warm", 2)
    # pooled sessions are not listed before they are handed out
    assert (await api.ok("GET", "api", "labs", "sessions"))["sessions"] == []
    begun = time.monotonic()
    session = await api.start(labId="warm", rows=30, cols=100)
    elapsed = time.monotonic() - begun
    assert session["status"] == "running" and elapsed < 0.9  # the setup alone takes 1 s
    assert (session["rows"], session["cols"]) == (30, 100)
    sid = session["sessionId"]
    # its lifetime starts now, not when it was pooled
    assert abs(time.mktime(time.strptime(session["createdAt"], "%Y-%m-%dT%H:%M:%SZ"))
               - time.mktime(time.gmtime())) <= 2
    await api.read_until(sid, re.escape(PROMPT))
    answer = await api.ok("POST", "api", "labs", "session", sid, "check", body={"step": 1})
    assert answer["results"][0]["passed"] is True
    await api.command(sid, "stty size")
    await api.read_until(sid, "30 100")
    assert [s["sessionId"] for s in (await api.ok("GET", "api", "labs", "sessions"))["sessions"]] == [sid]
    # and the pool fills again behind it
    await eventually(lambda: manager.warm_pool.counts()[1].get("warm", 0) == 2)


async def test_pooled_sessions_never_make_a_start_fail(api: Any, manager: Any, tmp_path: Path) -> None:
    pooled_lab(tmp_path / "labs", pool=4, setup="true")
    await ready_pool(api, manager, "warm", 4)
    # max_sessions 6: 4 pooled + 2 learners fill it; more learners still get shells
    sids = [(await api.start())["sessionId"] for _ in range(6)]
    assert len(set(sids)) == 6
    _, pooled = manager.warm_pool.counts()
    assert manager.live_count + sum(pooled.values()) <= 6
    status, body = await api.call("POST", "api", "labs", "start", body={})
    assert (status, body["error"]) == (429, "too_many_sessions")
    # a learner's session ends: the pool may take the room back, never beyond the limit
    await api.stop(sids[0])
    await api.ok("GET", "api", "labs")
    _, pooled = manager.warm_pool.counts()
    assert manager.live_count + sum(pooled.values()) <= 6


async def test_a_pool_beyond_the_limits_is_reported_and_cut(api: Any, manager: Any, tmp_path: Path) -> None:
    pooled_lab(tmp_path / "labs", pool=50, setup="true")
    body = await api.ok("GET", "api", "labs")
    (error,) = body["errors"]
    assert error["labId"] == "warm" and error["field"] == "pool" and error["path"].endswith("warm/lab.toml")
    assert "asks for 50 warm sessions but this server keeps at most 4" in error["reason"]
    assert "warm" in {lab["id"] for lab in body["labs"]}  # served all the same
    await eventually(lambda: manager.warm_pool.counts()[1].get("warm", 0) == 4)
    await asyncio.sleep(0.3)
    assert manager.warm_pool.counts()[1]["warm"] == 4


async def test_a_changed_definition_replaces_its_pooled_sessions(api: Any, manager: Any, tmp_path: Path) -> None:
    pooled_lab(tmp_path / "labs", pool=1, setup="echo one > version")
    await ready_pool(api, manager, "warm", 1)
    (old,) = manager.warm_pool._pools["warm"]
    pooled_lab(tmp_path / "labs", pool=1, setup="echo two, longer > version")
    await ready_pool(api, manager, "warm", 1)
    await eventually(lambda: old.closed)
    sid = (await api.start(labId="warm"))["sessionId"]
    _, offset = await api.read_until(sid, re.escape(PROMPT))
    await api.command(sid, "cat version")
    await api.read_until(sid, "two, longer", offset)


async def test_a_failing_pooled_setup_is_not_retried_in_a_loop(api: Any, manager: Any, tmp_path: Path) -> None:
    created = []
    create = manager.warm_pool.create
    manager.warm_pool.create = lambda lab: created.append(lab.id) or create(lab)
    pooled_lab(tmp_path / "labs", pool=1, setup="exit 4")
    await api.ok("GET", "api", "labs")
    await eventually(lambda: manager.warm_pool._failed.get("warm") is not None)
    await asyncio.sleep(0.5)  # several culler rounds (cull_interval 0.1 s)
    assert manager.warm_pool.counts()[1].get("warm", 0) == 0
    assert created == ["warm"]
    # a learner's start still runs the setup, and sees why it fails
    sid = (await api.start(labId="warm"))["sessionId"]
    _, _ = await api.read_until(sid, "failed with exit code 4")


async def test_shutdown_stops_pooled_sessions(jp_serverapp: Any, api: Any, manager: Any, tmp_path: Path) -> None:
    pooled_lab(tmp_path / "labs", pool=2, setup="true")
    await ready_pool(api, manager, "warm", 2)
    sessions = [s for ss in manager.warm_pool._pools.values() for s in ss]
    pids = [s.pid for s in sessions]
    await manager.shutdown()
    assert all(s.closed for s in sessions)
    import psutil
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
