"""Property tests of ``OutputLog`` on its own: no server, no PTY, no Tornado.

The output log is what every guarantee of the output route rests on ("a client that
always asks for ``nextOffset`` sees every byte once, in order"; "``truncated`` when
the server dropped what the client had not read"; "utf-8 never splits a character").
Hypothesis drives it with random appends, reads and window sizes, and a plain
``bytes`` model of everything ever appended says what each read must return.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from labkernel.session.output import OutputLog

#: Enough examples to find edge cases, few enough to keep the file quick.
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Text over every plane: ASCII, 2-, 3- and 4-byte UTF-8 characters (no surrogates,
#: which have no UTF-8 encoding; the server's input is text, so is its test).
TEXT = st.text(st.characters(codec="utf-8"), max_size=60)


def utf8_size(lead: int) -> int:
    """How many bytes a UTF-8 lead byte announces (the model's own copy, RFC 3629)."""
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 1


def could_still_become_a_character(rest: bytes) -> bool:
    """True when ``rest`` is the start of a character whose remaining bytes may come.

    That is the only case in which a utf-8 read of a running session may hold
    back: a lead byte followed only by continuation bytes, fewer than it announces.
    """
    return (
        0 < len(rest) < utf8_size(rest[0])
        and all(0x80 <= b <= 0xBF for b in rest[1:])
    )


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given byte positions (anywhere, mid-character included)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


# -- every byte once, in order; truncated exactly on loss (bytes and utf-8 mode) ----


class OutputLogMachine(RuleBasedStateMachine):
    """Random appends and reads against a model of every byte ever appended.

    One *follower* always asks for the ``next_offset`` it was given, as a client
    does; random reads at arbitrary offsets check that any answer is a slice of
    the stream at the right place.
    """

    @initialize(limit=st.integers(1, 64), utf8=st.booleans(), block=st.integers(1, 20))
    def setup(self, limit: int, utf8: bool, block: int) -> None:
        # Blocks far smaller than the server's, so that reads and drops cross them.
        self.log = OutputLog(limit, block=block)
        self.limit = limit
        self.utf8 = utf8
        self.stream = b""  # everything ever appended
        self.pos = 0  # the follower's next offset
        self.seen = b""  # what the follower has read, concatenated
        self.lost = False  # the follower was told it missed bytes
        self.base = 0  # the oldest byte the log must still hold
        note(f"limit={limit} utf8={utf8} block={block}")

    @rule(data=st.binary(max_size=40))
    def append(self, data: bytes) -> None:
        self.log.append(data)
        self.stream += data
        self.base = max(self.base, len(self.stream) - self.limit)

    @rule(limit=st.integers(1, 64))
    def shrink(self, limit: int) -> None:
        """As an ended session keeps only its tail (or a drain widens the window)."""
        self.log.shrink(limit)
        self.limit = limit
        self.base = max(self.base, len(self.stream) - limit)

    @rule(max_bytes=st.integers(1, 80))
    def follower_reads(self, max_bytes: int) -> None:
        before_base = self.log.base
        chunk = self.log.read(self.pos, max_bytes, utf8=self.utf8)
        note(f"read({self.pos}, {max_bytes}) -> {chunk}")
        missed = before_base > self.pos
        # truncated exactly when bytes this reader had not read were dropped
        assert chunk.truncated == missed
        assert chunk.offset == max(self.pos, before_base)
        assert chunk.next_offset == chunk.offset + len(chunk.data)
        assert chunk.next_offset >= self.pos, "next_offset went backwards"
        assert chunk.data == self.stream[chunk.offset:chunk.next_offset]
        rest = self.stream[chunk.offset:]
        if self.utf8:
            # never more than max_bytes, but one whole character (or a closed log's tail)
            assert len(chunk.data) <= max(max_bytes, 4)
            if not chunk.data:
                # holding back is allowed only for a character that may still complete
                assert rest == b"" or (not self.log.closed and could_still_become_a_character(rest))
        else:
            assert len(chunk.data) == min(max_bytes, len(rest))
        if missed:
            # From here on the follower can only hold the stream from the gap on.
            self.lost = True
            self.seen, self.gap_end = b"", chunk.offset
        self.seen += chunk.data
        self.pos = chunk.next_offset

    @rule(data=st.data(), max_bytes=st.integers(1, 80))
    def read_anywhere(self, data: st.DataObject, max_bytes: int) -> None:
        offset = data.draw(st.integers(0, self.log.end), label="offset")
        chunk = self.log.read(offset, max_bytes, utf8=self.utf8)
        assert chunk.offset == max(offset, self.log.base)
        assert chunk.truncated == (offset < self.log.base)
        assert chunk.data == self.stream[chunk.offset:chunk.next_offset]

    @rule(data=st.data())
    def read_past_the_end_is_refused(self, data: st.DataObject) -> None:
        beyond = data.draw(st.integers(self.log.end + 1, self.log.end + 10**30), label="offset")
        with pytest.raises(ValueError):
            self.log.read(beyond, 10, utf8=self.utf8)
        negative = data.draw(st.integers(-(10**30), -1), label="negative")
        with pytest.raises(ValueError):
            self.log.read(negative, 10, utf8=self.utf8)

    @precondition(lambda self: not self.log.closed)
    @rule()
    def close(self) -> None:
        self.log.close()

    @invariant()
    def window_within_limit_and_at_the_stream_end(self) -> None:
        if not hasattr(self, "log"):
            return
        assert 0 <= self.log.end - self.log.base <= self.limit
        assert self.log.end == len(self.stream)
        # the window holds the newest bytes: nothing is dropped while there is room
        assert self.log.base == self.base

    @invariant()
    def follower_saw_every_byte_once_in_order(self) -> None:
        if not hasattr(self, "log"):
            return
        if not self.lost:
            assert self.seen == self.stream[:self.pos]
        else:
            assert self.seen == self.stream[self.gap_end:self.pos]

    def teardown(self) -> None:
        if not hasattr(self, "log"):
            return
        # Once the log is closed, reading on always reaches the end: nothing is stuck.
        self.log.close()
        for _ in range(len(self.stream) + 1):
            if self.pos == self.log.end:
                break
            self.follower_reads(1)
        assert self.pos == self.log.end


TestOutputLogMachine = OutputLogMachine.TestCase
TestOutputLogMachine.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY
@given(pieces=st.lists(st.binary(max_size=50), max_size=30), room=st.integers(0, 100),
       reads=st.lists(st.integers(1, 100), min_size=1, max_size=60))
def test_reader_following_next_offset_gets_the_whole_stream_when_nothing_is_dropped(
        pieces: list[bytes], room: int, reads: list[int]) -> None:
    """Interleaved appends and reads, window big enough: the concatenation is exact."""
    stream = b"".join(pieces)
    log = OutputLog(max(1, len(stream) + room))
    got, pos = b"", 0
    for i, piece in enumerate(pieces):
        log.append(piece)
        chunk = log.read(pos, reads[i % len(reads)])
        assert not chunk.truncated
        assert chunk.offset == pos
        got += chunk.data
        pos = chunk.next_offset
    while pos < log.end:
        chunk = log.read(pos, reads[pos % len(reads)])
        assert chunk.data, "a read with bytes past offset returned nothing"
        got += chunk.data
        pos = chunk.next_offset
    assert got == stream


@PROPERTY
@given(pieces=st.lists(st.binary(min_size=1, max_size=50), min_size=1, max_size=20),
       limit=st.integers(1, 64))
def test_truncated_reports_exactly_the_dropped_bytes(pieces: list[bytes], limit: int) -> None:
    """A reader that fell behind the window is told so, and starts at the oldest byte kept."""
    log = OutputLog(limit)
    for piece in pieces:
        log.append(piece)
    stream = b"".join(pieces)
    chunk = log.read(0, len(stream) + 1)
    dropped = max(0, len(stream) - limit)
    assert chunk.truncated == (dropped > 0)
    assert chunk.offset == dropped
    assert chunk.data == stream[dropped:]
    assert log.end - log.base == min(len(stream), limit)  # memory bounded by the limit


def test_log_refuses_a_limit_below_one_byte() -> None:
    with pytest.raises(ValueError):
        OutputLog(0)


# -- utf-8 mode: characters are never split while the log is open ------------------


def follow_utf8(log: OutputLog, pos: int, max_bytes: int) -> tuple[bytes, int]:
    chunk = log.read(pos, max_bytes, utf8=True)
    assert not chunk.truncated
    assert chunk.offset == pos
    assert chunk.next_offset == pos + len(chunk.data)
    return chunk.data, chunk.next_offset


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT, cuts=st.lists(st.integers(0, 10**6), max_size=12),
       sizes=st.lists(st.integers(1, 6), min_size=1, max_size=20), reads_per_append=st.integers(0, 3))
def test_utf8_pieces_decode_to_the_exact_text_while_the_log_is_open(
        text: str, cuts: list[int], sizes: list[int], reads_per_append: int) -> None:
    """Appends cut mid-character, reads of 1 to 6 bytes: every piece decodes on its own.

    A terminal client decodes each answer separately; a character split between two
    answers would show as two U+FFFD. So each piece must be valid UTF-8, and joined
    they must be the text, exactly.
    """
    raw = text.encode("utf-8")
    log = OutputLog(max(1, len(raw)))
    decoded, pos, n = [], 0, 0

    def read_once() -> None:
        nonlocal pos, n
        size = sizes[n % len(sizes)]
        n += 1
        data, pos = follow_utf8(log, pos, size)
        decoded.append(data.decode("utf-8"))  # strict: a split character raises here
        first = raw[pos - len(data):pos - len(data) + 4]
        if data:
            # at most max_bytes, except one whole character when max_bytes is smaller
            assert len(data) <= max(size, utf8_size(first[0]))
        elif pos < log.end:
            # nothing returned although bytes exist: they must be an unfinished character
            assert could_still_become_a_character(raw[pos:log.end])

    for piece in split_at(raw, cuts):
        log.append(piece)
        for _ in range(reads_per_append):
            read_once()
    for _ in range(len(raw) + 1):
        if pos == log.end:
            break
        read_once()
    assert pos == len(raw), "the reader got stuck before the end of complete text"
    assert "".join(decoded) == text


@PROPERTY
@given(text=TEXT, char=st.characters(codec="utf-8", min_codepoint=0x80), data=st.data(),
       size=st.integers(1, 4))
def test_utf8_dangling_tail_is_held_while_open_and_returned_after_close(
        text: str, char: str, data: st.DataObject, size: int) -> None:
    """A character cut by the end of the output: held back while more may come; once
    the log is closed (the program ended) it is final, returned, and decodes as U+FFFD.
    """
    encoded = char.encode("utf-8")
    cut = data.draw(st.integers(1, len(encoded) - 1), label="cut")
    complete, tail = text.encode("utf-8"), encoded[:cut]
    log = OutputLog(len(complete) + len(tail))
    log.append(complete + tail)

    got, pos = b"", 0
    for _ in range(len(complete) + 2):
        piece, pos = follow_utf8(log, pos, size)
        got += piece
    assert got == complete and pos == len(complete), "the cut character leaked while open"
    assert log.read(pos, size, utf8=True).data == b""

    log.close()
    for _ in range(len(tail) + 1):
        piece, pos = follow_utf8(log, pos, size)
        got += piece
    assert got == complete + tail
    assert pos == log.end
    assert got.decode("utf-8", "replace") == text + "\ufffd"


@PROPERTY
@given(text=TEXT, char=st.characters(codec="utf-8", min_codepoint=0x80), data=st.data())
def test_utf8_cut_character_is_returned_once_it_completes(text: str, char: str, data: st.DataObject) -> None:
    """The held-back bytes are not lost: the next read after the rest arrives starts at them."""
    encoded = char.encode("utf-8")
    cut = data.draw(st.integers(1, len(encoded) - 1), label="cut")
    raw = text.encode("utf-8")
    log = OutputLog(len(raw) + len(encoded))
    log.append(raw + encoded[:cut])
    first = log.read(0, len(raw) + len(encoded), utf8=True)
    assert first.data == raw
    log.append(encoded[cut:])
    second = log.read(first.next_offset, 1, utf8=True)
    assert second.data.decode("utf-8") == char
    assert second.next_offset == log.end


@PROPERTY
@given(data=st.binary(min_size=1, max_size=40), max_bytes=st.integers(1, 8), closed=st.booleans())
# A lead byte followed by a byte that cannot continue it is invalid for good; with
# max_bytes below the size the lead announces, it must still be handed out.
@example(data=b"\xe0\x00", max_bytes=1, closed=False)
@example(data=b"\xf0A", max_bytes=2, closed=False)
def test_utf8_reads_of_arbitrary_bytes_make_progress_unless_a_character_may_complete(
        data: bytes, max_bytes: int, closed: bool) -> None:
    """Invalid bytes must not stall a reader: only a possibly-unfinished character waits."""
    log = OutputLog(len(data))
    log.append(data)
    if closed:
        log.close()
    got, pos = b"", 0
    for _ in range(len(data) + 1):
        chunk = log.read(pos, max_bytes, utf8=True)
        if not chunk.data:
            break
        got += chunk.data
        pos = chunk.next_offset
    assert got == data[:pos]
    rest = data[pos:]
    if closed:
        assert rest == b"", "a closed log must hand out every byte"
    else:
        assert rest == b"" or could_still_become_a_character(rest)


@PROPERTY
@given(garbage=st.binary(max_size=12), text=st.text(st.characters(codec="utf-8"), min_size=1, max_size=60),
       cuts=st.lists(st.integers(0, 10**6), max_size=6),
       sizes=st.lists(st.integers(1, 6), min_size=1, max_size=10))
# An invalid lead byte before a valid character: with max_bytes=1 the invalid
# "character" must not swallow the first byte of the euro sign after it.
@example(garbage=b"\xe0\x00", text="\u20ac", cuts=[], sizes=[1])
@example(garbage=b"\xf0A", text="\u00e9", cuts=[], sizes=[1])
def test_utf8_invalid_bytes_never_split_the_valid_characters_after_them(
        garbage: bytes, text: str, cuts: list[int], sizes: list[int]) -> None:
    """A program printing binary junk, then text: the text still arrives intact.

    Decoded as a whole, invalid bytes become U+FFFD and the decoder resynchronises at
    the next lead byte, so the text after them decodes exactly. A reader that decodes
    each answer on its own must see the same text whatever ``max`` it asks for,
    which holds only if no answer ends inside one of its characters.
    """
    raw = garbage + text.encode("utf-8")
    assert raw.decode("utf-8", "replace").endswith(text)  # the model's premise
    log = OutputLog(len(raw))
    pieces, pos, n = [], 0, 0
    for piece in split_at(raw, cuts) + [b""] * len(raw):
        log.append(piece)
        chunk = log.read(pos, sizes[n % len(sizes)], utf8=True)
        n += 1
        pieces.append(chunk.data)
        pos = chunk.next_offset
    assert pos == len(raw), "complete text was held back"
    assert b"".join(pieces) == raw
    assert "".join(p.decode("utf-8", "replace") for p in pieces).endswith(text)


# -- waiters: the long poll ---------------------------------------------------------
# pytest-jupyter runs ``async def`` tests on its event loop; the futures need one.

#: Generous: only catches a waiter that never resolves.
HANG = 5.0


async def test_wait_is_done_at_once_when_output_already_exists() -> None:
    log = OutputLog(100)
    log.append(b"hello")
    assert log.wait(0, timeout=10).done()
    assert log.wait(4, timeout=10).done()
    assert log.waiter_count == 0


async def test_wait_is_done_at_once_when_closed_or_timeout_is_zero() -> None:
    log = OutputLog(100)
    assert log.wait(0, timeout=0).done()
    log.close()
    assert log.wait(0, timeout=10).done()
    assert log.waiter_count == 0


async def test_pending_wait_resolves_on_append_and_is_forgotten() -> None:
    log = OutputLog(100)
    log.append(b"ab")
    fut = log.wait(2, timeout=60)
    assert not fut.done()
    assert log.waiter_count == 1
    log.append(b"c")
    await asyncio.wait_for(fut, HANG)
    assert log.waiter_count == 0


async def test_pending_wait_ignores_an_empty_append() -> None:
    """An empty read from the PTY is not output: a long poll must keep waiting."""
    log = OutputLog(100)
    fut = log.wait(0, timeout=60)
    log.append(b"")
    await asyncio.sleep(0)
    assert not fut.done()
    fut.cancel()
    await asyncio.sleep(0)
    assert log.waiter_count == 0


async def test_pending_wait_resolves_on_close() -> None:
    log = OutputLog(100)
    futs = [log.wait(0, timeout=60) for _ in range(3)]
    assert log.waiter_count == 3
    log.close()
    await asyncio.wait_for(asyncio.gather(*futs), HANG)
    assert log.waiter_count == 0


async def test_pending_wait_resolves_on_timeout_and_is_forgotten() -> None:
    log = OutputLog(100)
    fut = log.wait(0, timeout=0.05)
    assert log.waiter_count == 1
    await asyncio.wait_for(fut, HANG)
    assert fut.result() is None
    assert log.waiter_count == 0


async def test_cancelled_waits_leave_nothing_behind() -> None:
    """1,000 aborted long polls (clients that went away) must not pile up in the log."""
    log = OutputLog(100)
    futs = [log.wait(0, timeout=60) for _ in range(1000)]
    assert log.waiter_count == 1000
    for fut in futs:
        fut.cancel()
    await asyncio.sleep(0)  # done-callbacks run on the next loop turn
    assert log.waiter_count == 0
    # and a later append does not trip over them
    log.append(b"x")
    fresh = log.wait(0, timeout=60)
    assert fresh.done()


async def test_a_cancelled_wait_does_not_disturb_the_others() -> None:
    log = OutputLog(100)
    gone, staying = log.wait(0, timeout=60), log.wait(0, timeout=60)
    gone.cancel()
    await asyncio.sleep(0)
    assert log.waiter_count == 1
    log.append(b"x")
    await asyncio.wait_for(staying, HANG)
    assert log.waiter_count == 0


def test_waiters_work_under_a_plain_asyncio_run() -> None:
    """The log needs only asyncio (no Tornado): a fresh loop of its own will do."""

    async def scenario() -> None:
        log = OutputLog(10)
        fut = log.wait(0, timeout=60)
        asyncio.get_running_loop().call_soon(log.append, b"x")
        await asyncio.wait_for(fut, HANG)
        assert log.waiter_count == 0

    asyncio.run(scenario())
