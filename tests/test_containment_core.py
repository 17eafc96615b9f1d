"""The pure core of ``labkernel.containment``: which processes belong to a session.

``members`` is checked against an independent model: a live process belongs when
it, or any of its ancestors, is a root, in the session, or marked.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from labkernel.containment import Proc, members, parse_stat


@st.composite
def process_trees(draw: st.DrawFn) -> dict[int, Proc]:
    """A process table: each process's parent is an earlier one (or 1, init), as in a real tree."""
    count = draw(st.integers(1, 40))
    procs: dict[int, Proc] = {}
    for pid in range(2, count + 2):
        ppid = draw(st.sampled_from([1, *procs]))
        sid = draw(st.sampled_from([procs[ppid].sid if ppid in procs else pid, pid]))
        procs[pid] = Proc(pid, ppid, sid, draw(st.sampled_from("SRDTZ")))
    return procs


def model(procs: dict[int, Proc], roots: set[int], sid: int | None, marked: set[int]) -> set[int]:
    def seed(pid: int) -> bool:
        return pid in roots or pid in marked or (sid is not None and procs[pid].sid == sid)

    result = set()
    for pid, proc in procs.items():
        if proc.state in ("Z", "X"):
            continue
        chain = pid
        while chain in procs:
            if seed(chain):
                result.add(pid)
                break
            chain = procs[chain].ppid
    return result


@given(procs=process_trees(), data=st.data())
def test_members_are_the_live_seeds_and_their_live_descendants(procs, data):
    pids = sorted(procs)
    roots = set(data.draw(st.lists(st.sampled_from(pids), max_size=3)))
    marked = set(data.draw(st.lists(st.sampled_from(pids), max_size=3)))
    sid = data.draw(st.one_of(st.none(), st.sampled_from(pids)))
    assert members(procs, roots=roots, sid=sid, marked=marked) == model(procs, roots, sid, marked)


def test_a_process_whose_parent_has_exited_is_found_through_the_zombie():
    procs = {10: Proc(10, 1, 10, "S"), 11: Proc(11, 10, 10, "Z"), 12: Proc(12, 11, 12, "S")}
    assert members(procs, roots=[10]) == {10, 12}


def test_stat_lines_with_spaces_and_parentheses_in_the_name_parse():
    assert parse_stat(b"42 (a b) c)) S 7 42 40 0 -1") == Proc(42, 7, 40, "S")
    assert parse_stat(b"garbage") is None
