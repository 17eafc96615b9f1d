"""Sessions' life cycle and API against a real server and real shells.

Starting, the session object, the shell's terminal (directory, size, resize), the
shell ending by itself, retention, the session limit, one session flooding beside
another, message de-duplication by ``seq``, and input queued for a program that is
not reading. That every process of a session ends with it is
``test_session_processes.py``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import labkernel
from support.api import FAST, eventually, run, wait_ended

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")

SESSION_FIELDS = {
    "sessionId": str, "labId": str, "title": str, "status": str, "terminalActive": bool,
    "exitCode": type(None), "createdAt": str, "expiresAt": str, "lastActivity": str,
    "rows": int, "cols": int, "outputOffset": int,
}


@pytest.fixture
def labkernel_config() -> dict[str, Any]:
    """Every test of this module runs with quick culling and killing; ``@pytest.mark.labkernel``
    adds to it."""
    return dict(FAST)


# -- helpers ----------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    assert ISO_UTC.match(text), f"not an ISO 8601 UTC time: {text!r}"
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- starting, the session object, the terminal -----------------------------------------


async def test_lab_catalog_lists_the_builtin_shell_lab_without_steps(api):
    labs = (await api.ok("GET", "api", "labs"))["labs"]
    shell = next(lab for lab in labs if lab["id"] == "shell")
    assert shell["steps"] == 0 and shell["stepList"] == []
    assert isinstance(shell["title"], str) and shell["title"]
    assert isinstance(shell["description"], str)


@pytest.mark.labkernel(lifetime=1234.0)
async def test_start_with_empty_body_answers_a_complete_session_object(api):
    before = datetime.now(timezone.utc).replace(microsecond=0)
    session = await api.ok("POST", "api", "labs", "start", raw_body=b"", expect=201)
    after = datetime.now(timezone.utc)

    for field, kind in SESSION_FIELDS.items():
        assert field in session, f"missing {field}"
        assert isinstance(session[field], kind), f"{field}={session[field]!r} is not {kind.__name__}"
    assert session["labId"] == "shell"
    assert session["status"] in ("starting", "running")
    assert session["exitCode"] is None
    assert (session["rows"], session["cols"]) == (24, 80)
    assert session["outputOffset"] >= 0

    sid = session["sessionId"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", sid), sid
    assert len(base64.urlsafe_b64decode(sid + "=" * (-len(sid) % 4))) >= 16

    created = parse_time(session["createdAt"])
    assert before <= created <= after
    assert before <= parse_time(session["lastActivity"]) <= after
    assert parse_time(session["expiresAt"]) - created == timedelta(seconds=1234)

    other = await api.start()
    assert other["sessionId"] != sid


async def test_a_started_session_is_running_listed_and_counted(api):
    before = (await api.ok("GET", "health"))["activeSessions"]
    sid, _ = await api.shell()

    session = await api.get(sid)
    assert session["status"] == "running"
    assert session["terminalActive"] is True

    listed = (await api.ok("GET", "api", "labs", "sessions"))["sessions"]
    assert [s["sessionId"] for s in listed].count(sid) == 1
    assert next(s for s in listed if s["sessionId"] == sid)["status"] == "running"

    health = await api.ok("GET", "health")
    assert health["activeSessions"] == before + 1
    assert health["status"] == "ok"
    assert health["transport"] == "http-polling"
    assert health["version"] == labkernel.__version__

    await api.stop(sid)
    assert (await api.ok("GET", "health"))["activeSessions"] == before


async def test_health_needs_no_authentication_but_the_api_does(api):
    no_auth = {"Authorization": ""}
    status, body = await api.call("GET", "health", headers=no_auth)
    assert status == 200
    assert body["status"] == "ok"
    assert isinstance(body["activeSessions"], int)
    # The same request without credentials is refused elsewhere: the header was really dropped.
    status, body = await api.call("GET", "api", "labs", "sessions", headers=no_auth)
    assert status == 403
    assert body["error"] == "forbidden"


async def test_status_route_answers_the_contract_fields(api):
    sid, offset = await api.shell()
    status = await api.status(sid)
    assert status["sessionId"] == sid
    assert status["connected"] is True
    assert status["terminalActive"] is True
    assert status["status"] == "running"
    assert status["exitCode"] is None
    assert isinstance(status["outputOffset"], int) and status["outputOffset"] >= offset
    parse_time(status["lastActivity"])


async def test_output_offset_grows_with_output(api):
    sid, offset = await api.shell()
    before = (await api.get(sid))["outputOffset"]
    assert before >= offset
    accepted = await api.command(sid, "printf 'x%.0s' $(seq 500); echo END-$((2*21))")
    _, next_offset = await api.read_until(sid, r"END-42", accepted["offset"])
    after = await api.get(sid)
    assert after["outputOffset"] >= next_offset >= before + 500
    assert (await api.status(sid))["outputOffset"] >= next_offset


async def test_session_starts_in_the_server_root_dir(api, jp_root_dir):
    sid, _ = await api.shell()
    match = await run(api, sid, 'echo "PWD=[$(pwd -P)]"', r"PWD=\[(/[^\]\r\n]*)\]")
    assert match.group(1) == os.path.realpath(jp_root_dir)


async def test_terminal_has_the_requested_size_and_resize_changes_it(api):
    sid, _ = await api.shell(rows=33, cols=111)
    session = await api.get(sid)
    assert (session["rows"], session["cols"]) == (33, 111)
    match = await run(api, sid, 'echo "SIZE=[$(stty size)]"', r"SIZE=\[(\d+) (\d+)\]")
    assert match.groups() == ("33", "111")

    answer = await api.message(sid, type="resize", rows=40, cols=120)
    assert answer["accepted"] is True
    match = await run(api, sid, 'echo "SIZE=[$(stty size)]"', r"SIZE=\[(\d+) (\d+)\]")
    assert match.groups() == ("40", "120")
    session = await api.get(sid)
    assert (session["rows"], session["cols"]) == (40, 120)


# -- the shell ending by itself ----------------------------------------------------


async def test_shell_exit_ends_the_session_with_its_exit_code_and_keeps_its_output(api):
    sid, offset = await api.shell()
    accepted = await api.command(sid, "echo bye; exit 3")
    _, last = await wait_ended(api, sid, accepted["offset"])
    assert last["status"] == "exited"
    assert last["exitCode"] == 3

    session = await api.get(sid)
    assert session["status"] == "exited"
    assert session["exitCode"] == 3
    assert session["terminalActive"] is False
    status = await api.status(sid)
    assert (status["status"], status["exitCode"], status["terminalActive"]) == ("exited", 3, False)

    # What the shell wrote just before it exited is still there to read.
    everything = await api.output(sid, 0)
    assert re.search(r"[\r\n]bye\r\n", everything["data"]), everything["data"][-300:]
    assert everything["status"] == "exited"

    # A long poll at the end of an ended session answers at once: nothing more will come.
    started = time.monotonic()
    answer = await api.output(sid, everything["nextOffset"], wait=20)
    assert time.monotonic() - started < 10
    assert answer["data"] == ""
    assert answer["nextOffset"] == everything["nextOffset"]
    assert (answer["status"], answer["exitCode"]) == ("exited", 3)


async def test_long_poll_waiting_when_the_shell_exits_is_answered(api):
    sid, offset = await api.shell()
    await api.command(sid, "sleep 0.5; exit 7")
    # Skip past the echo of the command line, then wait at the end for what comes next.
    _, offset = await api.read_until(sid, r"exit 7\r\n", offset)
    _, last = await wait_ended(api, sid, offset)
    assert (last["status"], last["exitCode"]) == ("exited", 7)


# -- retention ------------------------------------------------------------------------


@pytest.mark.labkernel(retention=0.5)
async def test_ended_session_stays_readable_until_retention_then_every_route_answers_404(api):
    sid, _ = await api.shell()
    await run(api, sid, "echo kept-$((3*3))", r"kept-9")
    await api.stop(sid)

    assert (await api.get(sid))["status"] == "stopped"
    assert (await api.status(sid))["status"] == "stopped"
    output = await api.output(sid, 0)
    assert "kept-9" in output["data"]
    assert output["status"] == "stopped"
    listed = (await api.ok("GET", "api", "labs", "sessions"))["sessions"]
    assert sid in [s["sessionId"] for s in listed]

    deadline = time.monotonic() + 15
    while (await api.call("GET", "api", "labs", "session", sid))[0] != 404:
        assert time.monotonic() < deadline, "the ended session was never forgotten"
        await asyncio.sleep(0.05)

    answers = {
        "GET session": await api.call("GET", "api", "labs", "session", sid),
        "DELETE session": await api.call("DELETE", "api", "labs", "session", sid),
        "GET status": await api.call("GET", "api", "ws", "status", sid),
        "GET output": await api.call("GET", "api", "ws", "output", sid, params={"wait": "1"}),
        "POST message": await api.call("POST", "api", "ws", "message",
                                       body={"sessionId": sid, "data": "x"}),
    }
    for route, (status, body) in answers.items():
        assert (status, body["error"]) == (404, "session_not_found"), f"{route}: {status} {body}"
        assert body["message"]
    listed = (await api.ok("GET", "api", "labs", "sessions"))["sessions"]
    assert sid not in [s["sessionId"] for s in listed]


# -- the session limit --------------------------------------------------------------


@pytest.mark.labkernel(max_sessions=2)
async def test_ended_sessions_do_not_count_toward_the_session_limit(api):
    first = (await api.start())["sessionId"]
    second, _ = await api.shell()

    status, body = await api.call("POST", "api", "labs", "start", body={})
    assert (status, body["error"]) == (429, "too_many_sessions")
    assert body["message"]

    await api.stop(first)
    third = (await api.start())["sessionId"]

    await api.command(second, "exit")
    await wait_ended(api, second)
    fourth = (await api.start())["sessionId"]

    status, body = await api.call("POST", "api", "labs", "start", body={})
    assert (status, body["error"]) == (429, "too_many_sessions")
    assert {(await api.get(s))["status"] for s in (third, fourth)} == {"running"}


# -- one session flooding -----------------------------------------------------------


@pytest.mark.labkernel(buffer_size=256 * 1024)
async def test_a_flooding_session_does_not_hold_up_another_and_keeps_its_memory_bounded(api, manager):
    limit = 256 * 1024
    flood = (await api.start())["sessionId"]
    await api.command(flood, "yes")  # typed before the prompt: bash reads it when ready
    log = manager.get(flood).output  # nobody polls this session: its window slides

    widest = 0

    async def watch() -> None:
        nonlocal widest
        while True:
            widest = max(widest, log.end - log.base)
            await asyncio.sleep(0.005)

    watcher = asyncio.ensure_future(watch())
    try:
        await eventually(lambda: log.base > 2 * limit, timeout=30)  # it floods, and drops the oldest

        started, flooded = time.monotonic(), log.end
        other, _ = await api.shell()
        await run(api, other, "echo $((6*7))", r"\b42\b", timeout=30)
        assert (await api.ok("GET", "health"))["status"] == "ok"
        assert time.monotonic() - started < 30
        assert log.end > flooded, "the flood did not run during the round trip"
    finally:
        watcher.cancel()
    assert 0 < widest <= limit
    assert log.end - log.base <= limit

    stopped = await api.stop(flood)
    assert stopped["status"] == "stopped"


# -- seq de-duplication ----------------------------------------------------------------


async def test_repeated_or_older_seq_is_acknowledged_as_duplicate_and_not_written(api):
    sid, _ = await api.shell()
    first = await api.message(sid, command="echo A$((1+1))B", clientId="widget", seq=5)
    again = await api.message(sid, command="echo A$((1+1))B", clientId="widget", seq=5)
    older = await api.message(sid, command="echo C$((1+2))D", clientId="widget", seq=3)
    assert first["accepted"] is True and first.get("duplicate", False) is False
    assert again["accepted"] is True and again["duplicate"] is True
    assert older["accepted"] is True and older["duplicate"] is True

    last = await api.message(sid, command="echo DONE-$((9*9))", clientId="widget", seq=6)
    assert last.get("duplicate", False) is False
    text, _ = await api.read_until(sid, r"DONE-81", first["offset"])
    assert text.count("A2B") == 1
    assert "C3D" not in text and "echo C" not in text


async def test_two_clients_with_their_own_seq_do_not_silence_each_other(api):
    sid, _ = await api.shell()
    widget = await api.message(sid, command="echo W$((1+1))W", clientId="widget", seq=1)
    script = await api.message(sid, command="echo S$((2+2))S", clientId="script", seq=1)
    default = await api.message(sid, command="echo D$((3+3))D", seq=1)
    for answer in (widget, script, default):
        assert answer.get("duplicate", False) is False
    text, _ = await api.read_until(sid, r"D6D", widget["offset"])
    assert text.count("W2W") == 1 and text.count("S4S") == 1 and text.count("D6D") == 1


async def test_messages_without_seq_are_never_taken_for_duplicates(api):
    sid, _ = await api.shell()
    first = await api.command(sid, "echo R$((5+5))R")
    second = await api.command(sid, "echo R$((5+5))R")
    assert first.get("duplicate", False) is False and second.get("duplicate", False) is False
    text, _ = await api.read_until(sid, r"R10R[\s\S]*R10R", first["offset"])
    assert text.count("R10R") == 2


async def test_retried_message_to_an_ended_session_is_a_duplicate_not_a_conflict(api):
    sid, _ = await api.shell()
    body = {"sessionId": sid, "command": "exit 4", "clientId": "widget", "seq": 7}
    first = await api.ok("POST", "api", "ws", "message", body=body)
    assert first.get("duplicate", False) is False
    _, last = await wait_ended(api, sid, first["offset"])
    assert (last["status"], last["exitCode"]) == ("exited", 4)

    # The answer was lost; the client retries the very same message.
    retry = await api.ok("POST", "api", "ws", "message", body=body)
    assert retry["accepted"] is True and retry["duplicate"] is True

    status, answer = await api.call("POST", "api", "ws", "message", body={**body, "seq": 8})
    assert (status, answer["error"]) == (409, "session_ended")
    status, answer = await api.call("POST", "api", "ws", "message",
                                    body={"sessionId": sid, "data": "x"})
    assert (status, answer["error"]) == (409, "session_ended")


# -- input for a program that is not reading ---------------------------------------------


async def test_input_sent_while_the_program_is_not_reading_all_arrives_in_order(api, jp_root_dir):
    sid, offset = await api.shell()
    # 2,000 numbered lines of 100 bytes: 200 KB, far more than the terminal buffers.
    data = "".join(f"{i:06d}{'x' * 93}\n" for i in range(2000))
    # cat starts reading only after the sleep: until then the input waits.
    await api.command(sid, "sleep 2; cat > typed.txt")
    chunk = 20_000
    for start in range(0, len(data), chunk):
        answer = await api.send(sid, data[start:start + chunk])
        assert answer["accepted"] is True
    # The server answers other requests meanwhile.
    assert (await api.status(sid))["status"] == "running"
    assert (await api.ok("GET", "health"))["status"] == "ok"

    await api.send(sid, "\u0004")  # Ctrl-D: end of input for cat
    await run(api, sid, 'echo "WC=[$(wc -c < typed.txt)]"', r"WC=\[\s*\d+\]")
    assert (Path(jp_root_dir) / "typed.txt").read_bytes() == data.encode()
