"""Flood isolation: a flooding session is read and answered in pieces that keep the
event loop free for the others, and still never loses a byte for an attached reader.

Real server, real shells. The ``manager`` fixture is used to look inside: the sizes
the PTY was read in (a spy on the session's real output log, recording and passing
every call through) and the output window.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from support.api import eventually
from support.streaming import DONE_RE, KIB, Reader, log_tail, start_unattached


def spy_appends(session: Any) -> list[int]:
    """Record the size of every append to the session's output log (passed through)."""
    sizes: list[int] = []
    append = session.output.append

    def recording(data: bytes) -> None:
        sizes.append(len(data))
        append(data)

    session.output.append = recording
    return sizes


@pytest.mark.labkernel(read_budget=8 * KIB)
async def test_a_flooding_session_is_read_at_most_read_budget_per_loop_turn_and_loses_nothing(api, manager):
    sid, offset = await start_unattached(api, manager)
    session = manager.get(sid)
    sizes = spy_appends(session)
    await api.command(sid, "head -c 3000000 /dev/zero | tr '\\0' x; echo DO''NE")
    await eventually(lambda: b"DONE" in log_tail(session.output), timeout=60, interval=0.01)
    assert sum(sizes) > 3_000_000
    assert sum(sizes) == session.output.end - offset
    assert max(sizes) <= 8 * KIB


@pytest.mark.labkernel(buffer_size=256 * KIB, read_budget=256 * KIB)
async def test_a_turn_stops_where_an_attached_reader_would_lose_a_byte(api, manager):
    """The budget of a turn is cut to the room the slowest reader leaves, exactly."""
    sid, offset = await api.shell()
    log = manager.get(sid).output
    reader = Reader(api, sid, offset, encoding="utf-8")
    await reader.read(65536, wait=0)  # attached at the current end
    accepted = await api.command(sid, "head -c 2000000 /dev/zero | tr '\\0' x; echo DO''NE")
    text = ""
    while not DONE_RE.search(text[-100:]):
        # A slow reader: the program must keep stopping at the window, never past it.
        await asyncio.sleep(0.05)
        assert log.end - reader.offset <= 256 * KIB
        assert log.base <= reader.offset
        text += await reader.read(100_000)
    assert accepted["offset"] >= offset
    assert max(map(len, re.findall("x+", text))) == 2_000_000
