"""Output polls are not activity: a tab left open must not keep a server from idle culling.

JupyterHub and Binder cull a single-user server by ``/api/status``'s
``last_activity``; input (typing) counts as activity, reading output does not.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any


async def last_activity(api: Any) -> datetime:
    status = await api.ok("GET", "api", "status")
    return datetime.fromisoformat(status["last_activity"].replace("Z", "+00:00"))


async def test_output_polls_do_not_count_as_activity_but_input_does(api: Any) -> None:
    sid, offset = await api.shell()
    await asyncio.sleep(0.05)  # let every answer so far be older than what follows
    before = await last_activity(api)
    await asyncio.sleep(0.05)
    for _ in range(3):
        await api.output(sid, offset)  # plain polls
    await api.output(sid, offset, wait=0.2)  # a long poll that times out
    await api.output(sid, 0, clientId="a-view")  # one that carries data
    assert await last_activity(api) == before

    await api.send(sid, "echo typed\r")
    after = await last_activity(api)
    assert after > before


async def test_reading_is_not_activity_starting_typing_and_stopping_are(api: Any) -> None:
    # Signed in (the token), as a page, a kernel or a script watching a session is:
    # none of these reads may keep an idle server alive.
    sid, offset = await api.shell()
    await asyncio.sleep(0.05)
    before = await last_activity(api)
    await asyncio.sleep(0.05)
    await api.ok("GET", "health")
    await api.ok("GET", "api", "labs")
    await api.ok("GET", "api", "labs", "sessions")
    await api.get(sid)
    await api.status(sid)
    await api.output(sid, offset)
    await api.call("GET", "api", "labs", "session", "no-such-session")  # a 404 read either
    assert await last_activity(api) == before

    moved = before
    for act in (lambda: api.send(sid, "true\r"), lambda: api.start(), lambda: api.stop(sid)):
        await asyncio.sleep(0.05)
        await act()
        now = await last_activity(api)
        assert now > moved
        moved = now
