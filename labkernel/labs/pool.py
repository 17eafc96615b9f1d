"""Warm pools: sessions of a lab started ahead (setup done) for an instant start.

The accounting is a pure core — ``admit`` and ``refill_plan`` on plain counts —
property-tested in ``tests/test_pool.py``; ``WarmPool`` is the thin shell that
holds the pooled sessions themselves.

The rule with the session limit (``max_sessions``): pooled sessions are real
shells, so they count towards it, and the pool only fills what learners leave
free — ``live + pooled <= max_sessions`` at every moment. But a pool must never
make a learner's start fail: a start finds a ready pooled session of its lab and
takes it (the total does not change), or, when the limit is reached only because
of pooled sessions, one pooled session (of the lab with the most) is stopped to
make room. A start answers 429 only when learners' own sessions fill the limit.

Measured (``benchmarks/start_bench.py``, 2-core machine shared with other work):
start -> first prompt byte of a lab whose setup takes 2 s is ~2040 ms without a
pool and 7-16 ms p50 from a pool (a terminado terminal in the same run: 26-56
ms); ten learners at once on a pool of five: ~40-50 ms for the five served from
the pool, ~2.2 s for the others.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .model import Lab


@dataclass(frozen=True)
class Admission:
    """What a start of a lab does with the pool."""

    #: Hand out a ready pooled session of the lab.
    take: bool = False
    #: Stop one pooled session of this lab first, to make room.
    evict: str | None = None
    #: No room: the learners' own sessions fill the limit.
    refuse: bool = False


def admit(lab_id: str, ready: Mapping[str, int], pooled: Mapping[str, int], live: int,
          max_sessions: int) -> Admission:
    """Decide a start of ``lab_id``.

    ``ready``: pooled sessions whose setup is done, by lab; ``pooled``: all pooled
    sessions (ready or still in setup), by lab; ``live``: sessions handed out and
    not ended.
    """
    if ready.get(lab_id, 0) > 0:
        return Admission(take=True)
    if live >= max_sessions:
        return Admission(refuse=True)
    if live + sum(pooled.values()) < max_sessions:
        return Admission()
    # Full because of pooled sessions: make room, preferring the lab pooling the most.
    victim = max((lab for lab, n in pooled.items() if n > 0), key=lambda lab: (pooled[lab], lab))
    return Admission(evict=victim)


def pool_sizes(wanted: Mapping[str, int], max_sessions: int, cap: int) -> dict[str, int]:
    """Each lab's pool size within the limits (one lab alone may have the whole cap)."""
    limit = max(0, min(max_sessions, cap))
    return {lab: min(n, limit) for lab, n in wanted.items() if n > 0}


def refill_plan(wanted: Mapping[str, int], pooled: Mapping[str, int], live: int, max_sessions: int,
                cap: int) -> dict[str, int]:
    """How many sessions to start now for each lab's pool.

    Within both limits: ``live + pooled`` stays within ``max_sessions`` and the
    pooled total within ``cap``. What room there is goes one session at a time to
    the lab with the fewest pooled sessions among those that want more, so that
    one lab's big pool does not starve another's.
    """
    sizes = pool_sizes(wanted, max_sessions, cap)
    total = sum(pooled.values())
    budget = min(max_sessions - live - total, cap - total)
    have = {lab: pooled.get(lab, 0) for lab in sizes}
    plan: dict[str, int] = {}
    while budget > 0:
        wanting = [lab for lab in sorted(have) if have[lab] < sizes[lab]]
        if not wanting:
            break
        lab = min(wanting, key=lambda lab: have[lab])
        plan[lab] = plan.get(lab, 0) + 1
        have[lab] += 1
        budget -= 1
    return plan


class WarmPool:
    """The pooled sessions, by lab: started by ``refill``, handed out by ``take``.

    ``create(lab)`` makes and launches a session the way the manager does, but
    does not list it: pooled sessions are invisible to clients until handed out.
    A lab whose pooled setup failed is not refilled for ``retry`` seconds, so a
    broken setup does not run in a loop.
    """

    def __init__(self, create: Callable[[Lab], Any], log: Any, retry: float = 30.0):
        self.create = create
        self.log = log
        self.retry = retry
        self._pools: dict[str, list[Any]] = {}
        #: lab id -> (the definition whose pooled setup failed, when)
        self._failed: dict[str, tuple[Lab, float]] = {}
        #: Pooled sessions being stopped (evicted, stale), awaited at shutdown.
        self._stopping: set[asyncio.Future[None]] = set()

    def _prune(self) -> None:
        for lab_id, sessions in self._pools.items():
            for s in [s for s in sessions if s.status not in ("starting", "running")]:
                sessions.remove(s)
                self.log.warning("labkernel: a pooled session of lab %s ended before use (%s)",
                                 lab_id, s.status)
                if s.status == "failed":
                    self._failed[lab_id] = (s.lab, time.monotonic())

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(ready, pooled) sessions by lab."""
        self._prune()
        ready = {lab: sum(s.status == "running" for s in ss) for lab, ss in self._pools.items()}
        pooled = {lab: len(ss) for lab, ss in self._pools.items()}
        return ready, pooled

    def take(self, lab: Lab) -> Any | None:
        """A ready pooled session of this very definition of ``lab``, now the caller's."""
        for s in self._pools.get(lab.id, []):
            if s.status == "running" and s.lab is lab:
                self._pools[lab.id].remove(s)
                return s
        return None

    def evict(self, lab_id: str) -> None:
        """Stop one pooled session of a lab (one still in setup first: it has cost less)."""
        sessions = self._pools.get(lab_id, [])
        if not sessions:
            return
        victim = min(sessions, key=lambda s: s.status == "running")
        sessions.remove(victim)
        self._stop(victim)

    def plan(self, labs: list[Lab], live: int, max_sessions: int, cap: int) -> dict[str, int]:
        """How many sessions ``refill`` would start now for each lab's pool."""
        _, pooled = self.counts()
        wanted = {lab.id: lab.pool for lab in labs if lab.pool and not self._broken(lab)}
        return refill_plan(wanted, pooled, live, max_sessions, cap)

    def refill(self, labs: list[Lab], live: int, max_sessions: int, cap: int) -> None:
        """Stop pooled sessions of labs gone or changed, and start what the plan says."""
        current = {lab.id: lab for lab in labs}
        for lab_id, sessions in list(self._pools.items()):
            lab = current.get(lab_id)
            stale = [s for s in sessions if lab is None or lab.pool == 0 or s.lab is not lab]
            for s in stale:
                sessions.remove(s)
                self._stop(s)
        for lab_id, n in self.plan(labs, live, max_sessions, cap).items():
            for _ in range(n):
                self._pools.setdefault(lab_id, []).append(self.create(current[lab_id]))

    def _stop(self, session: Any) -> None:
        task = asyncio.ensure_future(session.stop("stopped"))
        self._stopping.add(task)

        def done(task: asyncio.Future[None]) -> None:
            self._stopping.discard(task)
            if not task.cancelled() and task.exception() is not None:
                self.log.error("labkernel: stopping a pooled session failed: %s", task.exception())
        task.add_done_callback(done)

    def _broken(self, lab: Lab) -> bool:
        """Whether this definition's pooled setup failed lately (a changed one gets a new try)."""
        failed = self._failed.get(lab.id)
        return failed is not None and failed[0] is lab and time.monotonic() - failed[1] < self.retry

    async def shutdown(self, patience: float = 5.0) -> None:
        """Stop every pooled session; wait (up to ``patience`` s) until what their
        containment made is gone too (cgroups, a sandbox's folder)."""
        sessions = [s for ss in self._pools.values() for s in ss]
        self._pools.clear()
        await asyncio.gather(*(s.stop("stopped") for s in sessions), *self._stopping,
                             return_exceptions=True)
        releases = [s.released for s in sessions if s.released is not None and not s.released.done()]
        if releases:
            await asyncio.wait(releases, timeout=patience)
