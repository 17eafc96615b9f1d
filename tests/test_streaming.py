"""Streaming output: long polling, resuming by offset, flow control, encodings.

Every test talks to a real server (pytest-jupyter, base URL ``/a%40b/``) and real
shells on real PTYs. The ``manager`` fixture is only used to look inside (waiters,
the output window) where the HTTP answers cannot show what must hold.

Markers a test looks for in the output are built from pieces on the command line
(``'==BEG''IN=='``), so the terminal's echo of the command never contains them.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from itertools import cycle
from typing import Any

import pytest

from support.api import PROMPT, eventually
from support.streaming import DONE_BYTES_RE, DONE_RE, KIB, PROMPT_RE, Reader, log_tail, start_unattached

SMALL_BUFFER = 256 * KIB


async def run(api: Any, sid: str, line: str, offset: int) -> int:
    """Run a command line and wait for the prompt after it; the offset after the prompt."""
    accepted = await api.command(sid, line)
    assert accepted["offset"] >= offset
    _, offset = await api.read_until(sid, PROMPT_RE, accepted["offset"])
    return offset


async def eventually_status(api: Any, sid: str, status: str) -> None:
    """Wait until the session reports this status (the timeout only catches a hang)."""
    deadline = time.monotonic() + 15
    while (await api.status(sid))["status"] != status:
        assert time.monotonic() < deadline, f"session never became {status}"
        await asyncio.sleep(0.05)


async def held_back(log: Any, asked: int, manager: Any) -> None:
    """Stay away, as a reader that last polled at ``asked``, until the program is held.

    What flow control guarantees whatever the speed of the program and the server:
    the output never runs more than the window (``buffer_size``) past the offset the
    reader last asked for, and drops none of it; reading stops only once it is full,
    and a paused program resumes only when a poll brings it under half the window.
    So the output comes to rest more than half a window past ``asked`` (the
    reader's ``nextOffset`` may be under that mark, by up to its last answer).
    Returns once the output has been still for half a second above that mark; the
    reader must be back before ``attach_timeout``, when it stops holding anything.
    """
    window = manager.buffer_size
    still, end = 0, log.end
    deadline = time.monotonic() + manager.attach_timeout - 2
    while not (still >= 5 and end - asked > window // 2):
        assert time.monotonic() < deadline, (
            f"the output did not come to rest above half the window: {log.end - asked} bytes "
            f"past the reader's last poll")
        await asyncio.sleep(0.1)
        assert log.end - asked <= window, "the output ran past the window of a lagging reader"
        assert log.base <= asked, "bytes the reader had not had were dropped"
        still, end = (still + 1, end) if log.end == end else (0, log.end)


# -- long polling ---------------------------------------------------------------


async def test_long_poll_is_held_and_answers_as_soon_as_output_arrives(api, manager):
    sid, offset = await api.shell()
    log = manager.get(sid).output
    poll = asyncio.ensure_future(api.output(sid, offset, wait=10))
    await eventually(lambda: log.waiter_count == 1)
    await asyncio.sleep(0.2)
    assert not poll.done(), "a poll on a quiet session answered before its wait"

    sent = time.monotonic()
    await api.command(sid, "echo held-$((6*7))")
    answer = await asyncio.wait_for(poll, 10)
    # It answered because output came, not because the 10 s ran out.
    assert time.monotonic() - sent < 5
    assert answer["offset"] == offset
    assert answer["data"] and answer["status"] == "running"
    text = answer["data"]
    if "held-42\r\n" not in text:
        text += (await api.read_until(sid, r"held-42\r\n", answer["nextOffset"]))[0]
    assert "held-42\r\n" in text
    assert log.waiter_count == 0


async def test_long_poll_with_no_output_answers_empty_after_wait(api):
    sid, offset = await api.shell()
    started = time.monotonic()
    answer = await api.output(sid, offset, wait=0.3)
    elapsed = time.monotonic() - started
    assert answer["data"] == ""
    assert answer["offset"] == answer["nextOffset"] == offset
    assert answer["status"] == "running" and answer["truncated"] is False
    assert 0.29 <= elapsed < 10


@pytest.mark.labkernel(max_wait=0.5)
async def test_wait_longer_than_max_wait_is_capped(api):
    sid, offset = await api.shell()
    started = time.monotonic()
    answer = await api.output(sid, offset, wait=1e6)
    assert time.monotonic() - started < 10
    assert answer["data"] == "" and answer["nextOffset"] == offset


async def test_poll_on_an_ended_session_answers_at_once(api):
    sid, offset = await api.shell()
    accepted = await api.command(sid, "exit 3")
    await eventually_status(api, sid, "exited")
    offset = (await api.output(sid, accepted["offset"]))["nextOffset"]  # all there is
    started = time.monotonic()
    answer = await api.output(sid, offset, wait=25)
    assert time.monotonic() - started < 10
    assert answer["data"] == "" and answer["nextOffset"] == offset
    assert answer["status"] == "exited" and answer["exitCode"] == 3


async def test_pending_poll_answers_at_once_when_the_session_is_stopped(api, manager):
    sid, offset = await api.shell()
    log = manager.get(sid).output
    poll = asyncio.ensure_future(api.output(sid, offset, wait=25))
    await eventually(lambda: log.waiter_count == 1)
    started = time.monotonic()
    stopped = await api.stop(sid)
    assert stopped["status"] == "stopped"
    answer = await asyncio.wait_for(poll, 20)
    assert time.monotonic() - started < 10
    assert answer["status"] == "stopped"
    assert answer["offset"] == offset


# -- aborted long polls -----------------------------------------------------------


async def test_aborted_long_polls_leave_no_waiters_behind(api, manager, jp_serverapp,
                                                          jp_http_port, jp_base_url):
    sid, offset = await api.shell()
    log = manager.get(sid).output
    token = jp_serverapp.identity_provider.token
    request = (f"GET {jp_base_url}api/ws/output/{sid}?offset={offset}&wait=25 HTTP/1.1\r\n"
               f"Host: 127.0.0.1:{jp_http_port}\r\nAuthorization: token {token}\r\n\r\n").encode()

    async def open_poll() -> asyncio.StreamWriter:
        _, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
        writer.write(request)
        await writer.drain()
        return writer

    async def close(writers: list[asyncio.StreamWriter]) -> None:
        for writer in writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)

    # 500 polls known to be waiting when their client goes away...
    for _ in range(5):
        writers = await asyncio.gather(*(open_poll() for _ in range(100)))
        await eventually(lambda: log.waiter_count == 100)
        await close(writers)
        await eventually(lambda: log.waiter_count == 0)
    # ...and 500 whose client hangs up right after sending, wherever the server is then.
    for _ in range(5):
        writers = await asyncio.gather(*(open_poll() for _ in range(100)))
        await close(writers)
    # Well before their 25 s wait would end.
    await eventually(lambda: log.waiter_count == 0, timeout=10)

    accepted = await api.command(sid, "echo still-$((7*6))")
    text, _ = await api.read_until(sid, r"still-42\r\n", accepted["offset"])
    assert log.waiter_count == 0


# -- resuming, flow control --------------------------------------------------------


async def test_reader_resuming_from_next_offset_gets_every_byte_exactly_once(api, manager):
    """8 MB through the default 4 MiB buffer, read in small pieces with a break."""
    sid, offset = await api.shell()
    log = manager.get(sid).output
    offset = await run(api, sid, "stty -onlcr", offset)  # the bytes arrive as written
    accepted = await api.command(
        sid, "head -c 6000000 /dev/urandom | base64 > flood.txt; sha256sum flood.txt; "
             "printf '%s\\n' '==BEG''IN=='; cat flood.txt; printf '%s\\n' '==EN''D=='")
    reader = Reader(api, sid, accepted["offset"])
    received = bytearray()
    pauses = 0
    for size in cycle([4096, 65536, 12345, 30000, 50001, 7777]):
        received += await reader.read(size)
        if pauses == 0 and len(received) > 3_000_000:
            # The reader is away with 5 MB still to come: the program must wait for it.
            pauses += 1
            await held_back(log, reader.asked, manager)
            assert b"==END==" not in log_tail(log)
        if received.find(b"\n==END==\n", len(received) - size - 16) >= 0:
            break
        assert reader.status == "running"
    assert pauses == 1

    digest = re.search(rb"\b([0-9a-f]{64})  flood\.txt\n", received)
    assert digest, received[:500]
    content = received[received.index(b"\n==BEGIN==\n") + 11:received.index(b"\n==END==\n") + 1]
    assert len(content) > manager.buffer_size  # more than the server could have kept
    assert hashlib.sha256(content).hexdigest() == digest.group(1).decode()


@pytest.mark.labkernel(buffer_size=SMALL_BUFFER)
async def test_attached_reader_that_stops_reading_pauses_the_program(api, manager):
    sid, offset = await api.shell()
    log = manager.get(sid).output
    reader = Reader(api, sid, offset, encoding="utf-8")
    await reader.read(65536, wait=0)  # attached at the current end
    await api.command(sid, "head -c 5000000 /dev/zero | tr '\\0' x; echo DO''NE")

    # The program fills the window up to the high-water mark, then must stop.
    await eventually(lambda: log.end - reader.offset > SMALL_BUFFER // 2)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert log.end - reader.offset <= SMALL_BUFFER
        assert log.base <= reader.offset
        await asyncio.sleep(0.01)
    assert b"DONE" not in log_tail(log)

    text = ""
    for size in cycle([65536, 40000, 100000]):
        text += await reader.read(size)
        if DONE_RE.search(text[-100:]):
            break
    assert max(map(len, re.findall("x+", text))) == 5_000_000


@pytest.mark.labkernel(buffer_size=SMALL_BUFFER)
async def test_flood_with_no_reader_attached_keeps_going_within_the_buffer(api, manager):
    sid, offset = await start_unattached(api, manager)
    log = manager.get(sid).output
    await api.command(sid, "head -c 3000000 /dev/zero | tr '\\0' x; echo DO''NE")

    widest = 0

    def finished() -> bool:
        nonlocal widest
        widest = max(widest, log.end - log.base)
        return DONE_BYTES_RE.search(log_tail(log)) is not None

    await eventually(finished, timeout=30, interval=0.005)
    assert widest <= SMALL_BUFFER
    assert log.end - offset > 3_000_000

    late = await api.output(sid, offset, max=10 * SMALL_BUFFER)
    assert late["truncated"] is True
    assert late["offset"] == log.base > offset
    assert late["nextOffset"] == log.end
    assert DONE_RE.search(late["data"]) and late["data"][-1100:-100].count("x") > 900


@pytest.mark.labkernel(buffer_size=SMALL_BUFFER, attach_timeout=0.5, max_wait=0.2)
async def test_reader_that_polls_while_behind_then_goes_away_stops_holding_back_the_program(
        api, manager):
    sid, offset = await api.shell()
    log = manager.get(sid).output
    await api.output(sid, offset)  # attached
    await api.command(sid, "head -c 3000000 /dev/zero | tr '\\0' x; echo DO''NE")
    # Still polling, still behind: the program waits for this reader... It polls far
    # more often than attach_timeout, however slow the machine, so it stays attached
    # while the output fills half the window and for 0.2 s more.
    behind_since, deadline = None, time.monotonic() + 15
    while behind_since is None or time.monotonic() - behind_since < 0.2:
        assert time.monotonic() < deadline, "the output never filled half the window"
        await api.output(sid, offset, max=1)
        if behind_since is None and log.end - offset > SMALL_BUFFER // 2:
            behind_since = time.monotonic()
        await asyncio.sleep(0.05)
    assert b"DONE" not in log_tail(log)
    # ...which then goes away for good: once it is no longer attached, the program
    # must go on (a build left running in a closed tab must not stall).
    await eventually(lambda: DONE_BYTES_RE.search(log_tail(log)) is not None, timeout=15)
    late = await api.output(sid, offset)
    assert late["truncated"] is True


async def test_one_session_flooding_does_not_hold_up_another(api):
    flood, offset = await api.shell()
    other, _ = await api.shell()
    await run(api, flood, "stty -onlcr", offset)
    accepted = await api.command(
        flood, "printf '%s\\n' '==BEG''IN=='; yes | head -c 50000000; printf '%s\\n' '==EN''D=='")
    reader = Reader(api, flood, accepted["offset"], encoding="utf-8")
    flowing = asyncio.Event()

    async def read_flood() -> tuple[int, int]:
        """Read the flood to its end marker; the offsets where it starts and ends."""
        begin = end = None
        tail = ""  # the end of the previous answer, for markers split across answers
        while end is None:
            start = reader.offset - len(tail)
            text = tail + await reader.read(4 * 1024 * 1024)
            if begin is None and "==BEGIN==\n" in text:
                begin = start + text.index("==BEGIN==\n") + len("==BEGIN==\n")
            if begin is not None:
                if reader.offset - begin > 1_000_000:
                    flowing.set()
                if "==END==\n" in text:
                    end = start + text.index("==END==\n")
                elif reader.offset - begin > 100:
                    assert set(text[-100:]) <= set("y\n=END"), text[-100:]
            tail = text[-16:]
        return begin, end

    async def round_trips() -> list[str]:
        await asyncio.wait_for(flowing.wait(), 60)
        results = []
        for i in range(2, 8):
            sent = await api.command(other, f"echo sq=$(({i}*{i}))")
            text, _ = await api.read_until(other, r"sq=\d+\r\n", sent["offset"], timeout=20)
            results.append(re.search(r"sq=(\d+)\r\n", text).group(1))
        flood_read_when_done.append(reader.offset)
        return results

    flood_read_when_done: list[int] = []
    (begin, end), squares = await asyncio.wait_for(
        asyncio.gather(read_flood(), round_trips()), 120)
    assert squares == [str(i * i) for i in range(2, 8)]
    assert end - begin == 50_000_000
    # The other session answered while the flood was still coming, not after it.
    assert flood_read_when_done[0] < end


# -- encodings ------------------------------------------------------------------------

UTF8_PROGRAM = """\
import os, time
data = ('é€😀' * 3000).encode()
os.write(1, ('==BEG' + 'IN==').encode())
i, k = 0, 0
sizes = [1, 2, 3, 5, 7, 11, 13, 1000, 4097]
while i < len(data):
    n = sizes[k % len(sizes)]
    os.write(1, data[i:i + n])
    i, k = i + n, k + 1
    if k % 50 == 0:
        time.sleep(0.002)
os.write(1, ('==EN' + 'D==').encode())
"""


async def test_multibyte_characters_split_across_reads_never_become_replacement_chars(api):
    sid, offset = await api.shell()
    offset = await run(api, sid, "cat > utf8.py <<'EOF'\n" + UTF8_PROGRAM + "EOF", offset)
    accepted = await api.command(sid, "python3 utf8.py")
    reader = Reader(api, sid, accepted["offset"], encoding="utf-8")
    text = ""
    for size in cycle([1, 2, 3, 4, 5, 7, 1, 2, 3, 11, 97, 1001, 4096]):
        text += await reader.read(size)
        if "==END==" in text[-(size + 16):]:
            break
    content = text[text.index("==BEGIN==") + 9:text.index("==END==")]
    assert "\ufffd" not in content
    assert content == "é€😀" * 3000


async def test_incomplete_character_at_the_end_is_held_back_until_it_completes(api, manager):
    sid, offset = await api.shell()
    log = manager.get(sid).output
    accepted = await api.command(sid, "printf '==M''K==\\xe2\\x82'; sleep 1; printf '\\xac\\n'")
    # The first two bytes of '€' are all there is for a while.
    await eventually(lambda: log_tail(log).endswith(b"==MK==\xe2\x82"))
    early = await api.output(sid, accepted["offset"], wait=0)
    assert early["data"].endswith("==MK==")
    assert early["nextOffset"] == log.end - 2
    reader = Reader(api, sid, early["nextOffset"], encoding="utf-8")
    text = await reader.read(4096)  # a long poll: answered once the character is whole
    while "\n" not in text:
        text += await reader.read(4096)
    assert text.startswith("€\r\n")


async def test_invalid_utf8_bytes_become_replacement_chars(api):
    sid, offset = await api.shell()
    accepted = await api.command(sid, "printf 'A\\xff\\xfeB\\xc3(C\\n'")
    for size in (1, 2, 3, 1000):
        reader = Reader(api, sid, accepted["offset"], encoding="utf-8")
        text = ""
        while PROMPT not in text:
            text += await reader.read(size)
        assert "A\ufffd\ufffdB\ufffd(C\r\n" in text


async def test_invalid_lead_byte_does_not_hold_back_the_bytes_after_it(api):
    """An invalid lead byte (no continuation after it) is U+FFFD now, not an incomplete char."""
    sid, offset = await api.shell()
    accepted = await api.command(sid, "printf 'Q\\xe2Z'; sleep 30")
    reader = Reader(api, sid, accepted["offset"], encoding="utf-8")
    text = ""
    deadline = time.monotonic() + 10
    while "Q\ufffdZ" not in text:
        assert time.monotonic() < deadline, f"stuck after {text[-40:]!r}"
        text += await reader.read(1, wait=0.5)


async def test_base64_returns_the_exact_bytes(api):
    sid, offset = await api.shell()
    offset = await run(api, sid, "stty -opost", offset)  # no output processing at all
    expected = bytes(range(256)) * 3
    escapes = "".join(f"\\{byte:03o}" for byte in range(256))
    accepted = await api.command(
        sid, f"printf '%s' '==BEG''IN=='; for i in 1 2 3; do printf '{escapes}'; done; "
             "printf '%s' '==EN''D=='")
    reader = Reader(api, sid, accepted["offset"])
    received = bytearray()
    for size in cycle([1, 7, 64, 255, 1000]):
        received += await reader.read(size)
        if b"==END==" in received:
            break
    content = received[received.index(b"==BEGIN==") + 9:received.index(b"==END==")]
    assert bytes(content) == expected


# -- truncation ---------------------------------------------------------------------------


@pytest.mark.labkernel(buffer_size=SMALL_BUFFER)
async def test_reading_from_zero_after_the_window_slid_says_truncated_and_goes_on(api, manager):
    sid, offset = await start_unattached(api, manager)
    log = manager.get(sid).output
    await api.command(sid, "head -c 1000000 /dev/zero | tr '\\0' x; echo DO''NE")
    await eventually(lambda: DONE_BYTES_RE.search(log_tail(log)) is not None, timeout=30)
    assert log.base > 0

    first = await api.output(sid, 0, max=4096)
    assert first["truncated"] is True
    assert first["offset"] == log.base > 0
    assert first["nextOffset"] == first["offset"] + len(first["data"].encode())
    reader = Reader(api, sid, first["nextOffset"], encoding="utf-8")
    text = first["data"]
    while not text.endswith(PROMPT):
        text += await reader.read(65536)
    assert reader.offset == log.end
    assert len(text.encode()) == log.end - log.base
    assert DONE_RE.search(text)
    assert re.fullmatch(r"x+DONE\r\n.*", text, re.S)  # the newest bytes, from inside the flood
