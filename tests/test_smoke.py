import re

from conftest import PROMPT


async def test_start_type_and_read_back(api):
    sid, offset = await api.shell()
    accepted = await api.command(sid, "echo $((6*7))")
    assert accepted["accepted"] is True
    text, _ = await api.read_until(sid, r"\b42\b", accepted["offset"])
    assert "42" in text
    stopped = await api.stop(sid)
    assert stopped["status"] == "stopped"
