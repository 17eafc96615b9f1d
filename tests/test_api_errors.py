"""Every error row of the contract (API.md), against the real server and real shells.

Each answer must be the contract's JSON body, ``{"error": code, "message": text}``
with ``Content-Type: application/json`` (``Api.call`` fails on anything else, so
an HTML error page or a 500 fails the test), and a refused request must have had
no effect: no session started, no input typed, no session stopped.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from support.api import PROMPT
from support.auth import NO_AUTH, browser_login


@pytest.fixture
def labkernel_config() -> dict[str, Any]:
    # Two sessions make the 429 row cheap to reach; a short long-poll cap makes
    # "a huge wait is capped" answer quickly.
    return {"max_sessions": 2, "max_wait": 0.5}


# -- helpers -------------------------------------------------------------------------

WRONG_TOKEN = {"Authorization": "token not-the-token"}


def assert_error(answer: tuple[int, Any], status: int, code: str) -> None:
    """The contract's error body: the code, and a message a learner can read."""
    got_status, body = answer
    assert got_status == status, f"expected {status} {code}, got {got_status}: {body}"
    assert isinstance(body, dict), body
    assert body.get("error") == code, body
    assert isinstance(body.get("message"), str) and body["message"].strip(), body


async def post_message(api: Any, body: Any = None, raw_body: str | bytes | None = None,
                       **kwargs: Any) -> tuple[int, Any]:
    return await api.call("POST", "api", "ws", "message", body=body, raw_body=raw_body, **kwargs)


async def post_start(api: Any, body: Any = None, raw_body: str | bytes | None = None,
                     **kwargs: Any) -> tuple[int, Any]:
    return await api.call("POST", "api", "labs", "start", body=body, raw_body=raw_body, **kwargs)


async def session_count(api: Any) -> int:
    return len((await api.ok("GET", "api", "labs", "sessions"))["sessions"])


async def assert_not_typed(api: Any, sid: str, offset: int, marker: str) -> None:
    """Prove that refused input never reached the shell.

    Input to one session is written in order, so if the refused text had been
    typed it would show up before the output of a command sent after it.
    """
    accepted = await api.command(sid, "echo after-$((40+2))")
    text, _ = await api.read_until(sid, r"after-42", offset)
    assert marker not in text, f"refused input reached the shell: {text!r}"
    assert accepted["offset"] >= offset


async def end_by_exit(api: Any, sid: str, code: int = 3) -> dict[str, Any]:
    await api.command(sid, f"exit {code}")
    deadline = time.monotonic() + 15
    while True:
        status = await api.status(sid)
        if status["status"] != "running":
            return status
        assert time.monotonic() < deadline, "the shell did not exit"
        await api.output(sid, status["outputOffset"], wait=0.5)


# -- 400 bad_request: bodies ------------------------------------------------------

NOT_AN_OBJECT = ["{", "not json", "rows=24", "[]", '["shell"]', '"shell"', "5", "null", "true",
                 b"\xff\xfe{}", "{'labId': 'shell'}"]


@pytest.mark.parametrize("raw", NOT_AN_OBJECT)
async def test_start_refuses_a_body_that_is_not_a_json_object(api: Any, raw: str) -> None:
    assert_error(await post_start(api, raw_body=raw), 400, "bad_request")
    assert await session_count(api) == 0


async def test_deeply_nested_json_is_a_bad_request_not_a_server_error(api: Any) -> None:
    """json.loads raises RecursionError (not ValueError) on deep nesting: a few KiB of
    brackets, well under the size limit, must still be an ordinary 400."""
    nested = "[" * 5000 + "]" * 5000
    assert_error(await post_start(api, raw_body=nested), 400, "bad_request")
    assert_error(await post_message(api, raw_body='{"sessionId": ' + nested + "}"), 400, "bad_request")


@pytest.mark.parametrize("field,value", [
    ("rows", 0), ("rows", 1001), ("rows", -1), ("rows", "24"), ("rows", True), ("rows", 24.5),
    ("rows", [24]), ("cols", 0), ("cols", 1001), ("cols", "80"), ("cols", False), ("cols", 80.0),
    ("labId", 5), ("labId", ["shell"]), ("labId", {"id": "shell"}), ("labId", True),
])
async def test_start_refuses_a_field_of_the_wrong_type_or_range(api: Any, field: str, value: Any) -> None:
    assert_error(await post_start(api, body={field: value}), 400, "bad_request")
    assert await session_count(api) == 0


async def test_start_accepts_the_edges_of_the_size_range(api: Any) -> None:
    """1 and 1000 are inside the range: the 0/1001 refusals are not off by one."""
    session = await api.start(rows=1, cols=1000)
    assert (session["rows"], session["cols"]) == (1, 1000)
    session = await api.start(rows=1000, cols=1)
    assert (session["rows"], session["cols"]) == (1000, 1)


async def test_start_of_a_lab_that_does_not_exist_is_lab_not_found(api: Any) -> None:
    assert_error(await post_start(api, body={"labId": "no-such-lab"}), 404, "lab_not_found")
    assert await session_count(api) == 0


@pytest.mark.parametrize("raw", NOT_AN_OBJECT)
async def test_message_refuses_a_body_that_is_not_a_json_object(api: Any, raw: str) -> None:
    assert_error(await post_message(api, raw_body=raw), 400, "bad_request")


async def test_message_without_a_body_is_a_bad_request(api: Any) -> None:
    assert_error(await post_message(api, raw_body=b""), 400, "bad_request")


@pytest.mark.parametrize("extra", [
    {"type": "explode"}, {"type": "RESIZE", "rows": 5, "cols": 5}, {"type": 5}, {"type": ["resize"]},
    {"command": "ls", "data": "ls\r"},  # both
    {},  # neither
    {"command": 5}, {"command": ["ls"]}, {"command": None}, {"data": 13}, {"data": {"k": "v"}},
    {"data": None},
    {"data": "\ud800"},  # a lone surrogate: valid JSON, not encodable text
    {"type": "resize", "rows": 0, "cols": 80}, {"type": "resize", "rows": 24, "cols": 1001},
    {"type": "resize", "rows": "24", "cols": 80}, {"type": "resize", "rows": True, "cols": 80},
    {"type": "resize", "rows": 24}, {"type": "resize", "cols": 80}, {"type": "resize"},
    {"type": "resize", "rows": 24.0, "cols": 80},
    {"type": "signal", "signal": "SIGUSR1"}, {"type": "signal", "signal": "KILL"},
    {"type": "signal", "signal": "sigint"}, {"type": "signal", "signal": 2},
    {"type": "signal", "signal": "SIGSTOP"}, {"type": "signal"},
    {"data": "x", "seq": -1}, {"data": "x", "seq": "1"}, {"data": "x", "seq": True},
    {"data": "x", "seq": 1.5}, {"data": "x", "seq": 2**63},
    {"data": "x", "clientId": ""}, {"data": "x", "clientId": "c" * 129}, {"data": "x", "clientId": 7},
])
async def test_message_refuses_a_malformed_body_and_types_nothing(api: Any, extra: dict[str, Any]) -> None:
    sid, offset = await api.shell()
    assert_error(await post_message(api, body={"sessionId": sid, **extra}), 400, "bad_request")
    session = await api.get(sid)
    assert session["status"] == "running"
    if extra.get("type") == "resize":
        assert (session["rows"], session["cols"]) == (24, 80), "a refused resize took effect"
    await assert_not_typed(api, sid, offset, "ls")


@pytest.mark.parametrize("body", [{"data": "x"}, {"command": "ls"}, {"sessionId": 5, "data": "x"},
                                  {"sessionId": None, "data": "x"}, {"sessionId": ["a"], "data": "x"},
                                  {"type": "resize", "rows": 5, "cols": 5}])
async def test_message_without_a_string_session_id_is_a_bad_request(api: Any, body: dict[str, Any]) -> None:
    assert_error(await post_message(api, body=body), 400, "bad_request")


async def test_message_at_the_edges_of_its_ranges_is_accepted(api: Any) -> None:
    """The refusals above are not off by one: the extreme valid values work."""
    sid, _ = await api.shell()
    await api.message(sid, type="resize", rows=1, cols=1000)
    await api.message(sid, type="resize", rows=1000, cols=1)
    assert (await api.get(sid))["rows"] == 1000
    await api.message(sid, data="", seq=2**63 - 1, clientId="c" * 128)
    await api.message(sid, data="", seq=0, clientId="c")


# -- 404 session_not_found on every session route ------------------------------------

UNKNOWN = "AAAAAAAAAAAAAAAAAAAAAA"  # the shape of a real id, but never issued


@pytest.mark.parametrize("sid", [UNKNOWN, "nope", "", "a b", "..", "%00", "\u00e9"])
async def test_unknown_session_is_session_not_found_on_every_route(api: Any, sid: str) -> None:
    await api.shell()  # a live session that must not be mistaken for the unknown one
    for method, route in [("GET", "api/labs/session/"), ("DELETE", "api/labs/session/"),
                          ("GET", "api/ws/status/"), ("GET", "api/ws/output/")]:
        # one piece, so that an empty id keeps its slash (url_path_join drops empty pieces)
        assert_error(await api.call(method, route + sid), 404, "session_not_found")
    for body in [{"data": "x"}, {"command": "ls"}, {"type": "resize", "rows": 5, "cols": 5},
                 {"type": "signal", "signal": "SIGINT"}]:
        assert_error(await post_message(api, body={"sessionId": sid, **body}), 404, "session_not_found")


async def test_output_of_an_unknown_session_is_not_found_even_with_a_long_wait(api: Any) -> None:
    """The lookup happens before any long poll: no hanging on a session that is not there."""
    started = time.monotonic()
    assert_error(await api.call("GET", "api", "ws", "output", UNKNOWN, params={"wait": "20"}),
                 404, "session_not_found")
    assert time.monotonic() - started < 10


# -- 409 session_ended ---------------------------------------------------------------

INPUTS = [{"data": "echo hi\r"}, {"command": "echo hi"}, {"type": "resize", "rows": 30, "cols": 90},
          {"type": "signal", "signal": "SIGINT"}, {"type": "signal", "signal": "SIGKILL"}]


async def test_input_resize_and_signal_to_a_stopped_session_are_session_ended(api: Any) -> None:
    sid, _ = await api.shell()
    await api.stop(sid)
    for body in INPUTS:
        assert_error(await post_message(api, body={"sessionId": sid, **body}), 409, "session_ended")
    session = await api.get(sid)  # still readable, unchanged
    assert session["status"] == "stopped"
    assert (session["rows"], session["cols"]) == (24, 80)


async def test_input_resize_and_signal_after_the_shell_exits_are_session_ended(api: Any) -> None:
    sid, _ = await api.shell()
    status = await end_by_exit(api, sid, 3)
    assert status["status"] == "exited" and status["exitCode"] == 3
    for body in INPUTS:
        assert_error(await post_message(api, body={"sessionId": sid, **body}), 409, "session_ended")
    # a retried message with a new seq is still refused, not acknowledged
    assert_error(await post_message(api, body={"sessionId": sid, "data": "x", "seq": 1}), 409,
                 "session_ended")


async def test_input_to_an_ended_session_leaves_the_other_sessions_working(api: Any, manager: Any) -> None:
    ended, _ = await api.shell()
    alive, offset = await api.shell()
    await end_by_exit(api, ended, 0)
    for _ in range(20):
        for body in INPUTS:
            assert_error(await post_message(api, body={"sessionId": ended, **body}), 409, "session_ended")
    # the server still answers, for the ended session and the live one alike
    assert (await api.get(ended))["status"] == "exited"
    assert (await api.ok("GET", "health"))["activeSessions"] == 1
    accepted = await api.command(alive, "echo still-$((6*7))")
    await api.read_until(alive, r"still-42", accepted["offset"])
    assert manager.get(alive).running


# -- 413 payload_too_large -----------------------------------------------------------

LIMIT = 64 * 1024


def padded(model: dict[str, Any], size: int) -> bytes:
    """``model`` as JSON, padded with whitespace (still valid JSON) to exactly ``size`` bytes."""
    raw = json.dumps(model).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


async def test_start_body_over_the_limit_is_payload_too_large(api: Any) -> None:
    assert_error(await post_start(api, raw_body=padded({"labId": "shell"}, LIMIT + 1)), 413,
                 "payload_too_large")
    assert await session_count(api) == 0
    # exactly at the limit is fine
    status, body = await post_start(api, raw_body=padded({"labId": "shell"}, LIMIT))
    assert status == 201, body


async def test_message_body_over_the_limit_is_payload_too_large(api: Any) -> None:
    sid, offset = await api.shell()
    big = {"sessionId": sid, "data": "echo LEAKED" + "x" * LIMIT + "\r"}
    assert_error(await post_message(api, body=big), 413, "payload_too_large")
    assert_error(await post_message(api, raw_body=padded({"sessionId": sid, "data": "echo LEAKED\r"},
                                                         LIMIT + 1)), 413, "payload_too_large")
    # the limit is checked before anything else: even an unknown session gets 413
    assert_error(await post_message(api, raw_body=padded({"sessionId": UNKNOWN}, LIMIT + 1)), 413,
                 "payload_too_large")
    await assert_not_typed(api, sid, offset, "LEAKED")
    status, body = await post_message(api, raw_body=padded({"sessionId": sid, "data": ""}, LIMIT))
    assert status == 200, body


# -- 429 too_many_sessions -----------------------------------------------------------


async def test_starting_beyond_max_sessions_is_too_many_sessions_until_one_ends(api: Any) -> None:
    first = await api.start()
    second = await api.start()
    assert_error(await post_start(api), 429, "too_many_sessions")
    assert_error(await post_start(api, body={"labId": "shell"}), 429, "too_many_sessions")
    assert await session_count(api) == 2
    await api.stop(first["sessionId"])
    third = await api.start()  # a stopped session frees its slot
    assert_error(await post_start(api), 429, "too_many_sessions")
    await end_by_exit(api, third["sessionId"], 0)
    await api.start()  # and so does one whose shell exited
    assert second["sessionId"] != third["sessionId"]


# -- output query parameters ------------------------------------------------------------


@pytest.mark.parametrize("params", [
    {"offset": "-1"}, {"offset": "abc"}, {"offset": "1.5"}, {"offset": "1e3"}, {"offset": ""},
    {"offset": str(10**30)}, {"offset": "9" * 5000},
    {"wait": "-1"}, {"wait": "abc"}, {"wait": "nan"}, {"wait": "NaN"}, {"wait": "inf"},
    {"wait": "-inf"}, {"wait": "1e400"}, {"wait": ""},
    {"max": "0"}, {"max": "-5"}, {"max": "abc"}, {"max": "1.5"}, {"max": ""},
    {"encoding": "latin-1"}, {"encoding": "base32"}, {"encoding": ""}, {"encoding": "utf8 "},
])
async def test_output_refuses_bad_query_parameters(api: Any, params: dict[str, str]) -> None:
    sid, offset = await api.shell()
    assert_error(await api.call("GET", "api", "ws", "output", sid, params=params), 400, "bad_request")
    # the session is unharmed and the same parameters, made valid, work
    answer = await api.output(sid, 0)
    assert answer["nextOffset"] >= offset and answer["status"] == "running"


async def test_output_offset_one_past_the_end_is_refused_but_the_end_itself_is_fine(api: Any) -> None:
    sid, _ = await api.shell()
    end = (await api.status(sid))["outputOffset"]
    answer = await api.output(sid, end)
    assert answer["data"] == "" and answer["nextOffset"] == end
    assert_error(await api.call("GET", "api", "ws", "output", sid, params={"offset": str(end + 1)}),
                 400, "bad_request")


async def test_output_huge_finite_wait_is_capped_by_max_wait(api: Any) -> None:
    """wait=1e9 is not an error: the server caps it (here at 0.5 s) and answers."""
    sid, offset = await api.shell()
    started = time.monotonic()
    answer = await api.output(sid, offset, wait="1e9")
    assert answer["data"] == "" and answer["nextOffset"] == offset
    assert time.monotonic() - started < 15  # generous: only a hang fails


# -- unknown routes and methods --------------------------------------------------------


@pytest.mark.parametrize("method,path", [
    ("GET", ("api", "labs", "nope")), ("GET", ("api", "ws", "nope")), ("POST", ("api", "ws", "nope")),
    ("GET", ("api/labs/",)), ("GET", ("api/ws/",)), ("POST", ("api/ws/",)),
    ("GET", ("api", "labs", "session", "a", "b")), ("GET", ("api", "ws", "output", "a", "b")),
    ("DELETE", ("api", "labs", "start", "x")),
])
async def test_unknown_route_under_our_prefixes_is_a_json_404(api: Any, method: str, path: tuple) -> None:
    assert_error(await api.call(method, *path), 404, "not_found")


@pytest.mark.parametrize("method,path", [
    ("PUT", ("api", "labs")), ("POST", ("api", "labs")), ("DELETE", ("api", "labs", "sessions")),
    ("GET", ("api", "labs", "start")), ("PATCH", ("api", "labs", "session", UNKNOWN)),
    ("POST", ("api", "ws", "status", UNKNOWN)), ("GET", ("api", "ws", "message")),
    ("DELETE", ("api", "ws", "output", UNKNOWN)), ("PUT", ("health",)),
])
async def test_wrong_method_is_a_json_405(api: Any, method: str, path: tuple) -> None:
    assert_error(await api.call(method, *path), 405, "method_not_allowed")


# -- 403 forbidden: authentication -------------------------------------------------------


def routes(sid: str) -> list[tuple[str, tuple[str, ...], Any]]:
    """Every authenticated route of the contract, with a body that would otherwise work."""
    return [
        ("GET", ("api", "labs"), None),
        ("POST", ("api", "labs", "start"), {}),
        ("GET", ("api", "labs", "sessions"), None),
        ("GET", ("api", "labs", "session", sid), None),
        ("DELETE", ("api", "labs", "session", sid), None),
        ("GET", ("api", "ws", "status", sid), None),
        ("POST", ("api", "ws", "message"), {"sessionId": sid, "data": "echo LEAKED\r"}),
        ("GET", ("api", "ws", "output", sid), None),
    ]


@pytest.mark.parametrize("headers", [NO_AUTH, WRONG_TOKEN, {"Authorization": "bearer nope"}],
                         ids=["no-token", "wrong-token", "wrong-bearer"])
async def test_every_route_but_health_needs_a_valid_token(api: Any, headers: dict[str, str]) -> None:
    sid, offset = await api.shell()
    for method, path, body in routes(sid):
        answer = await api.call(method, *path, body=body, headers=headers)
        assert_error(answer, 403, "forbidden")
    # nothing happened: no session started or stopped, nothing typed
    assert await session_count(api) == 1
    assert (await api.get(sid))["status"] == "running"
    await assert_not_typed(api, sid, offset, "LEAKED")


async def test_a_token_in_the_url_is_accepted(api: Any, jp_serverapp: Any) -> None:
    """Jupyter's other token form (``?token=``) works as the header does."""
    token = jp_serverapp.identity_provider.token
    body = await api.ok("GET", "api", "labs", params={"token": token}, headers=NO_AUTH)
    assert any(lab["id"] == "shell" for lab in body["labs"])


@pytest.mark.parametrize("headers", [NO_AUTH, WRONG_TOKEN], ids=["no-token", "wrong-token"])
async def test_health_answers_without_authentication(api: Any, headers: dict[str, str]) -> None:
    await api.shell()
    body = await api.ok("GET", "health", headers=headers)
    assert body["status"] == "ok" and body["transport"] == "http-polling"
    assert body["activeSessions"] == 1


# -- 403 forbidden: cookie login and XSRF --------------------------------------------------


async def test_cookie_login_reads_but_needs_the_xsrf_header_to_change_anything(
        api: Any, jp_fetch: Any, jp_serverapp: Any) -> None:
    cookie, xsrf = await browser_login(jp_fetch, jp_serverapp.identity_provider.token)
    browser = {**NO_AUTH, "Cookie": cookie}
    sid, offset = await api.shell()

    # GETs need no XSRF header: the cookie is enough
    assert (await api.ok("GET", "api", "ws", "status", sid, headers=browser))["status"] == "running"
    await api.ok("GET", "api", "labs", headers=browser)

    # POST and DELETE without the header: refused, and without effect
    assert_error(await post_start(api, body={}, headers=browser), 403, "forbidden")
    assert_error(await post_message(api, body={"sessionId": sid, "data": "echo LEAKED\r"}, headers=browser),
                 403, "forbidden")
    assert_error(await api.call("DELETE", "api", "labs", "session", sid, headers=browser), 403, "forbidden")
    # a header that does not match the cookie is no better
    forged = {**browser, "X-XSRFToken": "forged"}
    assert_error(await post_message(api, body={"sessionId": sid, "data": "echo LEAKED\r"}, headers=forged),
                 403, "forbidden")
    assert await session_count(api) == 1
    assert (await api.get(sid))["status"] == "running"
    await assert_not_typed(api, sid, offset, "LEAKED")

    # with X-XSRFToken matching the _xsrf cookie: accepted
    with_xsrf = {**browser, "X-XSRFToken": xsrf}
    second = await api.ok("POST", "api", "labs", "start", body={}, headers=with_xsrf, expect=201)
    end = (await api.status(sid))["outputOffset"]
    await api.ok("POST", "api", "ws", "message", body={"sessionId": sid, "command": "echo cookie-$((7*6))"},
                 headers=with_xsrf)
    await api.read_until(sid, r"cookie-42", end)
    stopped = await api.ok("DELETE", "api", "labs", "session", second["sessionId"], headers=with_xsrf)
    assert stopped["status"] == "stopped"


# -- 403 forbidden: authorization (resource "terminals") -----------------------------------


@pytest.mark.parametrize("denied_actions", [["read"]])
async def test_denied_read_refuses_every_get_but_start_and_input_still_work(api: Any) -> None:
    sid = (await api.start())["sessionId"]  # write is still allowed
    for path in [("api", "labs"), ("api", "labs", "sessions"), ("api", "labs", "session", sid),
                 ("api", "ws", "status", sid), ("api", "ws", "output", sid)]:
        assert_error(await api.call("GET", *path), 403, "forbidden")
    await api.command(sid, "echo hi")  # execute is allowed
    assert (await api.ok("GET", "health"))["activeSessions"] == 1
    assert (await api.stop(sid))["status"] == "stopped"


@pytest.mark.parametrize("denied_actions", [["write"]])
async def test_denied_write_refuses_start_and_stop(api: Any, manager: Any) -> None:
    assert_error(await post_start(api, body={}), 403, "forbidden")
    assert manager.list() == []
    # a session started another way (the manager itself) cannot be stopped either
    session = await manager.start()
    assert_error(await api.call("DELETE", "api", "labs", "session", session.id), 403, "forbidden")
    assert (await api.get(session.id))["status"] == "running"
    await api.read_until(session.id, re.escape(PROMPT))
    await api.command(session.id, "echo ok")  # input is execute, not write


@pytest.mark.parametrize("denied_actions", [["execute"]])
async def test_denied_execute_refuses_input_while_reads_and_start_work(api: Any) -> None:
    sid, offset = await api.shell()
    for body in INPUTS:
        assert_error(await post_message(api, body={"sessionId": sid, **body}), 403, "forbidden")
    session = await api.get(sid)
    assert session["status"] == "running" and (session["rows"], session["cols"]) == (24, 80)
    # nothing was typed: a long poll (capped at 0.5 s) finds no new output
    answer = await api.output(sid, offset, wait=1)
    assert answer["data"] == "" and answer["nextOffset"] == offset
    assert (await api.status(sid))["outputOffset"] == offset
    await api.start()  # write is still allowed
    assert (await api.stop(sid))["status"] == "stopped"


@pytest.mark.parametrize("denied_actions", [["read", "write", "execute"]])
async def test_denying_everything_leaves_health_answering(api: Any) -> None:
    assert (await api.ok("GET", "health", headers=NO_AUTH))["status"] == "ok"
    assert_error(await api.call("GET", "api", "labs"), 403, "forbidden")
    assert_error(await post_start(api, body={}), 403, "forbidden")
