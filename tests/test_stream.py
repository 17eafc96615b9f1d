"""The output stream, ``GET /api/ws/stream``: several sessions' output as Server-Sent Events.

A real server (pytest-jupyter, base URL ``/a%40b/``) and real shells; the stream is read
over a raw socket (``support.sse``), one event at a time, so a test can be a page that
is slow to write what it gets. The ``manager`` fixture only looks inside (the output
log, the window) where the answers cannot show what must hold.

Markers a test looks for are built from pieces on the command line (``'DO''NE'``), so
the terminal's echo of the command never contains them.
"""

from __future__ import annotations

import asyncio
import re
import select
import socket
import time
import urllib.parse
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkernel.errors import BadRequest
from labkernel.server.stream import Channel
from support.api import eventually
from support.serverproc import ServerProcess
from support.sse import BlockingEventStream, EventStream, read_spec
from support.streaming import KIB, PROMPT_RE

PROPERTY = settings(max_examples=300, deadline=None)

#: The prompt after a command's output line (bash announces bracketed paste before it).
AFTER = r"\r\n(?:\x1b\[\?2004h)?" + PROMPT_RE


@pytest.fixture
def token(jp_serverapp: Any) -> str:  # overrides conftest's process token: a different thing
    return jp_serverapp.identity_provider.token


async def open_stream(server_url: str, token: str, *reads: tuple[str, int, str], **params: Any) -> EventStream:
    stream = await EventStream.open(server_url, token, [read_spec(*r) for r in reads], **params)
    assert stream.status == 200, (stream.status, stream.answer.body)
    opened = await stream.next()
    assert opened is not None and opened.name == "open", opened
    stream.id = opened.data["streamId"]
    stream.window = opened.data["window"]
    return stream


async def ack(api: Any, stream: EventStream, **written: int) -> dict[str, Any]:
    return await api.ok("POST", "api", "ws", "stream", stream.id, "ack", body={"written": written})


async def read_text(stream: EventStream, client: str, pattern: str, offset: int, *, timeout: float = 30,
                    api: Any = None, others: dict[str, str] | None = None) -> tuple[str, int]:
    """Output events of ``client`` from ``offset`` until the text matches ``pattern``; every event
    must follow on from the one before. Acknowledges as it goes when given ``api``. Other
    clients' events go to ``others``."""
    text = ""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, text):
        item = await stream.next(max(0.1, deadline - time.monotonic()))
        assert item is not None, f"the stream ended before {pattern!r}: {text[-300:]!r}"
        if item.name != "output":
            continue
        if item.data["clientId"] != client:
            if others is not None:
                others[item.data["clientId"]] = others.get(item.data["clientId"], "") + item.data["data"]
            continue
        assert item.data["offset"] == offset, (item.data["offset"], offset)
        assert item.data["truncated"] is False
        offset = item.data["nextOffset"]
        text += item.data["data"]
        if api is not None:
            await ack(api, stream, **{client: offset})
    return text, offset


# -- the pure core: a channel's accounting --------------------------------------------------


#: (kind, amount): output appended, output dropped by the log (nobody attached), an event sent
#: (as much as the channel wants of what exists), the page acknowledging a point it reached.
OPS = st.lists(st.tuples(st.sampled_from(["append", "drop", "send", "ack"]), st.integers(0, 5000)),
               max_size=80)


@PROPERTY
@given(ops=OPS, window=st.integers(4, 3000), piece=st.integers(1, 2000), start=st.integers(0, 50))
def test_property_a_channel_never_has_more_than_a_window_unwritten_and_sends_every_byte_once(
        ops: list[tuple[str, int]], window: int, piece: int, start: int) -> None:
    """Against a model of the log (base, end) and of the page (what it received, what it wrote)."""
    base, end = start, start
    channel = Channel("s", "c", start, start, window)
    received: list[tuple[int, int]] = []  # the page's events, in order: (offset, nextOffset)
    written = start
    for kind, amount in ops:
        if kind == "append":
            end += amount
        elif kind == "drop":
            base = min(end, base + amount)
        elif kind == "send":
            want = channel.want(piece)
            assert want <= piece and (want == 0) == (channel.room < 4)
            offset = max(channel.sent, base)
            if want and end > offset:
                channel.took(offset, min(end, offset + want))
                received.append((offset, channel.sent))
        else:
            # The page writes what it received in order and says so at some point of it.
            points = [start] + [nxt for _, nxt in received]
            target = points[amount % len(points)]
            written = max(written, target)
            channel.wrote(target)
        unwritten = sum(nxt - off for off, nxt in received if off >= written)
        unwritten += sum(nxt - written for off, nxt in received if off < written < nxt)
        assert unwritten <= window, (unwritten, window)
        assert channel.sent - channel.written <= window
        assert channel.written <= channel.sent
    # Events follow on: each starts where the last ended, or later only past bytes the log dropped.
    at = start
    for offset, nxt in received:
        assert offset >= at and nxt >= offset
        assert offset == at or offset <= base
        at = nxt
    with pytest.raises(BadRequest):
        channel.wrote(channel.sent + 1)


def test_a_channel_takes_nothing_before_what_it_sent() -> None:
    channel = Channel("s", "c", 10, 10, 100)
    with pytest.raises(ValueError):
        channel.took(9, 12)
    assert channel.took(10, 20) is False
    assert channel.took(30, 40) is True  # 20..30 were gone: not unwritten at the page
    assert channel.room == 100 - 20
    assert channel.wrote(5) is False


# -- offsets and resuming ------------------------------------------------------------------


async def test_one_stream_carries_each_sessions_output_from_its_offset_in_order(api, server_url, token):
    a, a_offset = await api.shell()
    b, b_offset = await api.shell()
    stream = await open_stream(server_url, token, (a, a_offset, "view-a"), (b, b_offset, "view-b"))
    try:
        assert stream.answer.headers["content-type"].startswith("text/event-stream")
        assert "no-cache" in stream.answer.headers["cache-control"]
        await api.command(a, "echo alpha-$((6*7))")
        await api.command(b, "echo beta-$((6*7))")
        others: dict[str, str] = {}
        text, a_next = await read_text(stream, "view-a", "alpha-42" + AFTER, a_offset, others=others)
        b_text, b_next = others.get("view-b", ""), None
        # What the stream gave each reader is its session's output, byte for byte.
        assert text == (await api.output(a, a_offset, max=a_next - a_offset))["data"]
        if not re.search("beta-42" + AFTER, b_text):
            more, b_next = await read_text(stream, "view-b", "beta-42" + AFTER,
                                           b_offset + len(b_text.encode()))
            b_text += more
        assert "beta-42" in b_text and "alpha" not in b_text
    finally:
        stream.close()


async def test_a_stream_reopened_from_the_last_next_offset_loses_and_repeats_nothing(api, server_url, token):
    sid, start = await api.shell()
    await api.command(sid, "for i in $(seq 1 3000); do echo line-$i; done; echo DO''NE")
    got, offset = "", start
    # Each stream is cut after a few events, and the next starts where the last event ended.
    while "DONE\r\n" not in got:
        stream = await open_stream(server_url, token, (sid, offset, "view"), window=4096)
        for _ in range(3):
            item = await stream.next()
            assert item is not None and item.name == "output"
            assert item.data["offset"] == offset
            offset = item.data["nextOffset"]
            got += item.data["data"]
            await ack(api, stream, view=offset)
            if "DONE\r\n" in got:
                break
        stream.close()
    whole, _ = await api.read_until(sid, r"DONE\r\n", start)
    assert got.startswith(whole)
    assert [int(n) for n in re.findall(r"line-(\d+)\r\n", got)] == list(range(1, 3001))


async def test_a_stream_from_an_offset_the_log_dropped_says_truncated_and_goes_on(api, server_url, token, manager):
    sid, _ = await api.shell()
    log = manager.get(sid).output
    log.shrink(64)  # as if nobody had read it for a long while
    await api.command(sid, "echo after-$((6*7))")
    stream = await open_stream(server_url, token, (sid, 0, "late"))
    try:
        first = await stream.next()
        assert first.name == "output" and first.data["truncated"] is True and first.data["offset"] > 0
        text = first.data["data"]
        if "after-42" not in text:
            more, _ = await read_text(stream, "late", r"after-42", first.data["nextOffset"])
            text += more
        assert "after-42" in text
    finally:
        stream.close()


# -- flow control ----------------------------------------------------------------------------


async def test_a_page_that_writes_nothing_is_sent_one_window_and_then_only_what_it_acknowledges(
        api, server_url, token):
    sid, start = await api.shell()
    window = 8 * KIB
    stream = await open_stream(server_url, token, (sid, start, "slow"), window=window)
    try:
        assert stream.window == window
        await api.command(sid, "head -c 300000 /dev/zero | tr '\\0' x; echo DO''NE")
        offset, text = start, ""
        # Nothing acknowledged: one window, then silence (the flood goes on meanwhile).
        while offset - start < window - 4:
            item = await stream.next()
            assert item.name == "output" and item.data["offset"] == offset
            offset = item.data["nextOffset"]
            text += item.data["data"]
        assert offset - start <= window
        assert [e for e in await stream.quiet(1.0) if e.name == "output"] == []
        # Each acknowledgement lets at most a window past it through.
        written = start
        while "DONE" not in text:
            written = offset
            await ack(api, stream, slow=written)
            item = await stream.next()
            while item.name != "output":
                item = await stream.next()
            assert item.data["offset"] == offset
            offset = item.data["nextOffset"]
            assert offset - written <= window, (offset, written)
            text += item.data["data"]
        assert max(map(len, re.findall("x+", text))) == 300_000
    finally:
        stream.close()


@pytest.mark.labkernel(buffer_size=256 * KIB, attach_timeout=1.5, stream_heartbeat=0.2)
async def test_a_page_that_falls_behind_pauses_the_program_even_when_it_is_idle_for_long(
        api, server_url, token, manager):
    """The stream keeps its reader attached (at what the page wrote) while the stream is open,
    longer than a poll's attach timeout: the program is held, never run past the page."""
    sid, start = await api.shell()
    log = manager.get(sid).output
    stream = await open_stream(server_url, token, (sid, start, "behind"), window=4096)
    try:
        await asyncio.sleep(3)  # two attach timeouts with nothing but heartbeats
        await api.command(sid, "head -c 3000000 /dev/zero | tr '\\0' x; echo DO''NE")
        still, end = 0, log.end
        while still < 10:
            await asyncio.sleep(0.1)
            assert log.end - start <= 256 * KIB + 4096, "the program ran past the page's window"
            assert log.base <= start, "bytes the page had not written were dropped"
            still, end = (still + 1, end) if log.end == end else (0, log.end)
        assert log.end - start > 128 * KIB  # held at the window, not before
        # The page writes what it got: the program goes on, and every byte arrives.
        offset, text = start, ""
        while "DONE" not in text:
            item = await stream.next()
            if item.name != "output":
                continue
            assert item.data["offset"] == offset and not item.data["truncated"]
            offset = item.data["nextOffset"]
            text += item.data["data"]
            await ack(api, stream, behind=offset)
        assert max(map(len, re.findall("x+", text))) == 3_000_000
    finally:
        stream.close()


async def test_another_sessions_echo_comes_through_while_one_floods_a_slow_page(api, server_url, token):
    flood, flood_at = await api.shell()
    quiet, quiet_at = await api.shell()
    stream = await open_stream(server_url, token, (flood, flood_at, "flood"), (quiet, quiet_at, "quiet"))
    try:
        await api.command(flood, "yes | head -c 20000000; echo DO''NE")
        await api.command(quiet, "cat")
        got = {"flood": flood_at, "quiet": quiet_at}
        text = {"flood": "", "quiet": ""}

        async def page() -> None:
            """Reads every event; writes the flood's output slowly: acknowledges it 5 times a second."""
            acked_at = time.monotonic()
            while True:
                item = await stream.next()
                if item is None:
                    return
                if item.name != "output":
                    continue
                client = item.data["clientId"]
                assert item.data["offset"] == got[client]
                got[client] = item.data["nextOffset"]
                text[client] = (text[client] + item.data["data"])[-1000:]
                if time.monotonic() - acked_at > 0.2:
                    await ack(api, stream, flood=got["flood"], quiet=got["quiet"])
                    acked_at = time.monotonic()

        reading = asyncio.ensure_future(page())
        await eventually(lambda: got["flood"] - flood_at > 100 * KIB, timeout=60)
        echoes = []
        for key in "abcdefghijklmnopqrst":
            sent = time.monotonic()
            await api.send(quiet, key)
            await eventually(lambda: key in text["quiet"][-5:], timeout=30, interval=0.005)
            echoes.append(time.monotonic() - sent)
            await asyncio.sleep(0.1)
        assert "DONE" not in text["flood"], "the flood ended before the keys were typed"
        reading.cancel()
        assert max(echoes) < 5, echoes  # a hang-catcher: the echo is not stuck behind the flood
    finally:
        stream.close()


async def test_a_flood_goes_in_events_of_many_reads_and_typing_at_once(api, server_url, token):
    """A PTY read is under 4 KiB: while a program keeps writing, an event gathers them."""
    sid, start = await api.shell()
    stream = await open_stream(server_url, token, (sid, start, "v"))
    try:
        await api.command(sid, "head -c 3000000 /dev/zero | tr '\\0' x; echo DO''NE")
        sizes, text, offset = [], "", start
        while "DONE" not in text[-200:]:
            item = await stream.next()
            if item.name != "output":
                continue
            sizes.append(item.data["nextOffset"] - item.data["offset"])
            offset = item.data["nextOffset"]
            text = text[-200:] + item.data["data"]
            await ack(api, stream, v=offset)
        assert sum(sizes) / len(sizes) > 8 * KIB, f"{len(sizes)} events for {sum(sizes)} bytes"
        # A key typed after a quiet spell is sent at once, in an event of its own.
        await asyncio.sleep(0.1)
        await api.send(sid, "z")
        echo = await stream.next()
        assert echo.name == "output" and echo.data["data"] == "z"
    finally:
        stream.close()


# -- sessions ending -----------------------------------------------------------------------


async def test_a_session_that_ends_gets_an_end_event_after_all_its_output_and_the_others_go_on(
        api, server_url, token):
    ending, ending_at = await api.shell()
    staying, staying_at = await api.shell()
    stream = await open_stream(server_url, token, (ending, ending_at, "e"), (staying, staying_at, "s"))
    try:
        await api.command(ending, "echo bye-$((6*7)); exit 3")
        text, end = "", None
        while end is None:
            item = await stream.next()
            if item.name == "output" and item.data["clientId"] == "e":
                text += item.data["data"]
            elif item.name == "end":
                end = item.data
        assert "bye-42" in text
        assert end == {"sessionId": ending, "clientId": "e", "nextOffset": end["nextOffset"],
                       "status": "exited", "exitCode": 3}
        assert end["nextOffset"] == (await api.status(ending))["outputOffset"]
        await api.command(staying, "echo still-$((6*7))")
        _, offset = await read_text(stream, "s", "still-42" + AFTER, staying_at)
        # Stopped: its end says so; with no reader left, the stream closes.
        await api.stop(staying)
        item = await stream.next()
        while item.name == "output":
            item = await stream.next()
        assert item.name == "end" and item.data["status"] == "stopped" and item.data["clientId"] == "s"
        closing = await stream.next()
        assert closing.name == "close" and closing.data == {"reason": "ended"}
        assert await stream.next() is None  # the answer ended
    finally:
        stream.close()


async def test_an_unknown_session_gets_an_error_event_and_the_others_are_read(api, server_url, token):
    sid, offset = await api.shell()
    stream = await open_stream(server_url, token, ("no-such-session", 0, "x"), (sid, offset, "y"))
    try:
        error = await stream.next()
        assert error.name == "error"
        assert error.data["sessionId"] == "no-such-session" and error.data["clientId"] == "x"
        assert error.data["error"] == "session_not_found" and error.data["message"]
        await api.command(sid, "echo here-$((6*7))")
        await read_text(stream, "y", "here-42", offset)
    finally:
        stream.close()
    only_unknown = await open_stream(server_url, token, ("gone", 0, "x"))
    assert [e.name for e in [await only_unknown.next(), await only_unknown.next()]] == ["error", "close"]
    assert await only_unknown.next() is None


# -- keeping it open -----------------------------------------------------------------------


@pytest.mark.labkernel(stream_heartbeat=0.3, stream_lifetime=2.0)
async def test_an_idle_stream_sends_heartbeats_and_closes_at_its_lifetime(api, server_url, token):
    sid, offset = await api.shell()
    stream = await open_stream(server_url, token, (sid, offset, "idle"))
    try:
        assert stream.answer.headers.get("x-accel-buffering") == "no"
        got = await stream.quiet(1.0)
        assert len([e for e in got if e.name == "comment"]) >= 2, got
        closing = await stream.next(10)
        assert closing.name == "close" and closing.data == {"reason": "lifetime"}
        assert await stream.next() is None
    finally:
        stream.close()


async def test_streams_and_acknowledgements_are_not_activity(api, server_url, token):
    sid, offset = await api.shell()
    await asyncio.sleep(0.05)
    before = (await api.ok("GET", "api", "status"))["last_activity"]
    stream = await open_stream(server_url, token, (sid, offset, "v"))
    await ack(api, stream, v=offset)
    stream.close()
    await asyncio.sleep(0.1)
    assert (await api.ok("GET", "api", "status"))["last_activity"] == before


# -- bad input and bounds --------------------------------------------------------------------


def assert_error(answer: tuple[int, Any], status: int, code: str) -> None:
    assert answer[0] == status, answer
    assert answer[1]["error"] == code and answer[1]["message"], answer


@pytest.mark.parametrize("reads,params", [
    ([], {}),
    (["abc"], {}),
    (["abc:1"], {}),
    ([":0:c"], {}),
    (["abc:-1:c"], {}),
    (["abc:x:c"], {}),
    (["abc:0:"], {}),
    (["abc:0:" + "c" * 129], {}),
    (["abc:0:c", "def:0:c"], {}),
    (["abc:0:c"], {"window": "100"}),
    (["abc:0:c"], {"window": "lots"}),
])
async def test_a_malformed_stream_request_is_a_json_bad_request(api, server_url, token, reads, params):
    stream = await EventStream.open(server_url, token, reads, **params)
    try:
        assert stream.status == 400
        assert stream.answer.headers["content-type"].startswith("application/json")
        assert stream.answer.error["error"] == "bad_request" and stream.answer.error["message"]
    finally:
        stream.close()


async def test_an_offset_past_a_sessions_output_is_a_bad_request(api, server_url, token):
    sid, offset = await api.shell()
    stream = await EventStream.open(server_url, token, [read_spec(sid, offset + 1, "c")])
    assert stream.status == 400 and stream.answer.error["error"] == "bad_request"
    stream.close()


@pytest.mark.labkernel(max_stream_sessions=2, max_streams=2)
async def test_streams_are_bounded_per_server_and_in_sessions(api, server_url, token, jp_serverapp):
    sid, offset = await api.shell()
    too_wide = await EventStream.open(server_url, token, [read_spec(sid, offset, c) for c in "abc"])
    assert too_wide.status == 400 and "at most 2" in too_wide.answer.error["message"]
    too_wide.close()
    first = await open_stream(server_url, token, (sid, offset, "a"))
    second = await open_stream(server_url, token, (sid, offset, "b"))
    third = await EventStream.open(server_url, token, [read_spec(sid, offset, "c")])
    assert third.status == 429 and third.answer.error["error"] == "too_many_streams"
    third.close()
    first.close()
    streams = jp_serverapp.web_app.settings["labkernel_streams"]
    await eventually(lambda: len(streams) == 1)
    (await open_stream(server_url, token, (sid, offset, "c"))).close()
    second.close()
    await eventually(lambda: len(streams) == 0)


async def test_acknowledgements_refuse_bad_input_with_json_and_change_nothing(api, server_url, token):
    sid, offset = await api.shell()
    stream = await open_stream(server_url, token, (sid, offset, "v"))
    try:
        path = ("api", "ws", "stream", stream.id, "ack")
        assert_error(await api.call("POST", "api", "ws", "stream", "nope", "ack", body={"written": {"v": 0}}),
                     404, "stream_not_found")
        for body in [{}, {"written": []}, {"written": {}}, {"written": {"v": -1}}, {"written": {"v": "1"}},
                     {"written": {"v": True}}, {"written": {"v": offset + 1}}]:
            assert_error(await api.call("POST", *path, body=body), 400, "bad_request")
        assert_error(await api.call("POST", *path, raw_body="not json"), 400, "bad_request")
        # A reader the stream does not have (it ended meanwhile) is no error.
        assert (await api.ok("POST", *path, body={"written": {"other": 5}}))["accepted"] is True
        assert_error(await api.call("GET", *path), 405, "method_not_allowed")
        assert_error(await api.call("POST", "api", "ws", "stream"), 405, "method_not_allowed")
        # The stream still works.
        await api.command(sid, "echo fine-$((6*7))")
        await read_text(stream, "v", "fine-42", offset)
    finally:
        stream.close()
    await eventually(lambda: True)
    assert_error(await api.call("POST", "api", "ws", "stream", stream.id, "ack", body={"written": {"v": 0}}),
                 404, "stream_not_found")


# -- the input's answer after its echo ---------------------------------------------------------


def echo_before_answer(url: str, token: str, sid: str, offset: int, keys: str) -> list[bool]:
    """For each key: when the input POST's answer can be read, is its echo on the stream already?

    On the loopback the bytes a server writes are in the reader's socket as the write
    returns, so this tells the order in which the server sent them.
    """
    stream = BlockingEventStream(url, token, [read_spec(sid, offset, "order")])
    assert stream.next().name == "open"
    parts = urllib.parse.urlsplit(url)
    post = socket.create_connection((parts.hostname, parts.port), timeout=30)
    first: list[bool] = []
    try:
        for key in keys:
            body = f'{{"sessionId": "{sid}", "data": "{key}"}}'.encode()
            post.sendall((f"POST {parts.path}api/ws/message HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                          f"Authorization: token {token}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
            select.select([post], [], [], 30)
            ready, _, _ = select.select([stream.sock], [], [], 0)
            first.append(bool(ready) or bool(stream.answer.events))
            answer = post.recv(65536)
            assert b" 200 " in answer.split(b"\r\n")[0], answer
            while True:  # the echo, read off the stream
                item = stream.next()
                if item.name == "output" and key in item.data["data"]:
                    break
    finally:
        post.close()
        stream.close()
    return first


@pytest.mark.labkernel(echo_wait=2.0)
async def test_the_answer_to_typed_input_goes_after_its_echo(api, server_url, token):
    sid, offset = await api.shell()
    await api.command(sid, "cat")
    _, offset = await api.read_until(sid, r"cat\r\n", offset)
    first = await asyncio.to_thread(echo_before_answer, server_url, token, sid, offset, "abcdefghij")
    assert all(first), first


@pytest.mark.labkernel(echo_wait=0.5)
async def test_the_answer_waits_for_output_only_up_to_its_bound(api, manager):
    sid, offset = await api.shell()
    log = manager.get(sid).output
    await api.command(sid, "stty -echo; cat > /dev/null")
    await api.read_until(sid, r"cat > /dev/null\r\n", offset)
    await asyncio.sleep(0.3)
    end = log.end
    started = time.monotonic()
    accepted = await api.send(sid, "x")  # no echo: the bound
    assert time.monotonic() - started >= 0.45
    assert log.end == end == accepted["offset"]
    await api.send(sid, "\x03")  # ^C: the shell prints a new prompt
    await api.read_until(sid, PROMPT_RE, end)
    started = time.monotonic()
    accepted = await api.send(sid, "echo hi\r")  # stty -echo ended with cat? the shell echoes
    assert log.end > accepted["offset"]  # answered once output had come


# -- a flood, the server's memory, and another session's echo ---------------------------------


@pytest.mark.server
def test_a_flood_to_a_slow_page_keeps_the_servers_memory_bounded_and_another_session_echoing(tmp_path):
    """50 MB of output to a page that writes slowly, and a stream whose client reads nothing
    at all: the server holds a window per stream and the session's buffer, no more, and a
    second session on the slow page's stream echoes every key."""
    # A page that reads nothing holds the program for one attach timeout, as a poll would.
    with ServerProcess(tmp_path, manager={"attach_timeout": 3.0}) as server:
        flood, flood_at = server.shell()
        quiet, quiet_at = server.shell()
        baseline = server.rss()
        page = BlockingEventStream(server.url, server.token, [read_spec(flood, flood_at, "flood"),
                                                               read_spec(quiet, quiet_at, "quiet")])
        stuck = BlockingEventStream(server.url, server.token, [read_spec(flood, flood_at, "stuck")])
        try:
            opened = page.next()
            stream_id, window = opened.data["streamId"], opened.data["window"]
            server.command(quiet, "cat")
            server.command(flood, "yes | head -c 50000000; echo DO''NE")
            got = {"flood": flood_at, "quiet": quiet_at}
            tail = {"flood": "", "quiet": ""}
            peak, echoes, unwritten = 0, [], 0
            acked = {"flood": flood_at, "quiet": quiet_at}
            acked_at = time.monotonic()
            keys = iter("abcdefghijklmnopqrstuvwxyz" * 4)
            key, typed_at = None, 0.0
            while "DONE" not in tail["flood"]:
                item = page.next(60)
                assert item is not None, "the stream ended"
                if item.name == "output":
                    client = item.data["clientId"]
                    assert item.data["offset"] == got[client] and not item.data["truncated"]
                    got[client] = item.data["nextOffset"]
                    tail[client] = (tail[client] + item.data["data"])[-200:]
                    unwritten = max(unwritten, got["flood"] - acked["flood"])
                now = time.monotonic()
                if got["flood"] - acked["flood"] > window - 64 * KIB and now - acked_at < 0.1:
                    time.sleep(0.1 - (now - acked_at))  # the stream waits for this page
                    now = time.monotonic()
                if now - acked_at >= 0.1:  # a slow page: writes its output ten times a second
                    acked = dict(got)
                    server.ok("POST", "api", "ws", "stream", stream_id, "ack", body={"written": acked})
                    acked_at = now
                    peak = max(peak, server.rss())
                if key is not None and key in tail["quiet"][-3:]:
                    echoes.append(now - typed_at)
                    key = None
                if key is None and now - typed_at > 0.2:
                    key, typed_at = next(keys), time.monotonic()
                    server.message(quiet, data=key)
            assert unwritten <= window, "the page was sent more than a window past what it wrote"
            assert len(echoes) >= 5, f"too few keys were echoed during the flood: {echoes}"
            assert max(echoes) < 5, echoes  # a hang-catcher: no echo waits behind the flood
            # The server's memory: the stuck stream's window and two sessions' buffers are
            # some MiB; 50 MB of output (or the 290 MB it would be as JSON) must not be there.
            growth = (peak - baseline) / 2**20
            print(f"server RSS +{growth:.1f} MiB; echo during the flood: {len(echoes)} keys, "
                  f"max {max(echoes) * 1000:.0f} ms; most unwritten {unwritten} B")
            assert growth < 40, f"the server grew by {growth:.0f} MiB during the flood"
        finally:
            page.close()
            stuck.close()
