"""Answers built a piece at a time (``answers.Answer``): joined, the pieces are the
answer encoded at once, within ``max`` and the JSON cap, and never empty."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from labkernel.server.answers import Answer, escaped_size_bound
from labkernel.session.output import OutputLog

#: Terminal-like bytes: text, escapes, control characters, UTF-8 and invalid bytes.
OUTPUT = st.lists(st.one_of(
    st.text(max_size=20).map(str.encode),
    st.sampled_from([b"\x1b[31m", b"\r\n", b"\\", b'"', b"\x00", b"\xff", b"\xe2\x82",
                     "\u2028".encode(), "é".encode(), "🙂".encode()]),
), max_size=60).map(b"".join)


def answer(log: OutputLog, offset: int, max_bytes: int, cap: int, utf8: bool, piece: int) -> Answer:
    """As the output handler builds one: first piece, then step until done."""
    def read(at: int, n: int):
        return log.read(at, n, utf8=utf8)

    first = read(offset, min(max_bytes, piece))
    built = Answer(read, first, min(first.offset + max_bytes, log.end), cap, utf8=utf8, piece=piece)
    while built.step():
        pass
    return built


def make_log(data: bytes, closed: bool) -> OutputLog:
    log = OutputLog(limit=1 << 20)
    log.append(data)
    if closed:
        log.close()
    return log


@given(OUTPUT, st.data(), st.booleans(), st.integers(1, 50).map(lambda n: n * 3),
       st.integers(1, 400), st.integers(30, 2000))
def test_pieces_join_into_the_answer_read_and_encoded_at_once(data, pick, closed, piece, max_bytes, cap):
    log = make_log(data, closed)
    offset = pick.draw(st.integers(0, len(data)))
    for utf8 in (True, False):
        built = answer(log, offset, max_bytes, cap, utf8, piece)
        joined = b"".join(built.parts).decode("ascii")
        assert len(joined) == built.size
        covered = data[offset:built.next_offset]
        if utf8:
            assert joined == json.dumps(covered.decode("utf-8", "replace"))[1:-1]
        else:
            assert base64.b64decode(joined, validate=True) == covered
        # Within max and the cap; over them only by the one first character or group
        # of three bytes that makes progress.
        single = len(built.parts) <= 1 and len(covered) <= 4
        assert len(covered) <= max_bytes or single
        assert built.size <= cap or single
        # Progress: something whenever there is a whole character to give.
        whole = log.read(offset, max_bytes, utf8=utf8)
        assert bool(covered) == bool(whole.data)


@given(OUTPUT, st.booleans(), st.integers(1, 20).map(lambda n: n * 3))
def test_with_room_enough_an_answer_carries_everything_a_single_read_would(data, closed, piece):
    log = make_log(data, closed)
    for utf8 in (True, False):
        built = answer(log, 0, 10_000, 100_000, utf8, piece)
        assert built.next_offset == log.read(0, 10_000, utf8=utf8).next_offset


def test_a_large_answer_is_built_in_pieces_of_the_given_size():
    log = make_log(b"y\r\n" * 100_000, closed=False)
    built = answer(log, 0, 1 << 20, 1 << 21, utf8=True, piece=49152)
    # ceil(300000 / 49152) = 7 pieces, each at most 6 JSON characters per byte
    assert len(built.parts) == 7
    assert max(len(p) for p in built.parts) <= 49152 * 6
    assert built.next_offset == 300_000


@given(st.binary(max_size=300))
def test_the_size_bound_is_never_below_the_escaped_size(data):
    assert escaped_size_bound(data) >= len(json.dumps(data.decode("utf-8", "replace"))) - 2
