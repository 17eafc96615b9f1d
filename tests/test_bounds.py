"""Bounded memory, the pure parts: answer sizes (``answers``) and shrinking an ``OutputLog``."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labkernel.server.answers import escaped_size_bound, fit, raw_limit
from labkernel.session.output import OutputLog

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Terminal-like output: text of every plane, control bytes, invalid UTF-8.
OUTPUT = st.lists(st.one_of(
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
    st.sampled_from([b"\r\n", b"\x1b[31m", b'"\\', b"\xff\xfe", b"\xe2\x94", b"\x00\x7f"]),
), max_size=30).map(b"".join)


@PROPERTY
@given(data=OUTPUT)
def test_the_bound_is_never_below_the_json_size(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    assert escaped_size_bound(data) >= len(json.dumps(text)) - 2
    if data.isascii():
        assert escaped_size_bound(data) == len(json.dumps(text)) - 2


@PROPERTY
@given(data=OUTPUT, cap=st.integers(24, 2000), max_bytes=st.integers(1, 4000), utf8=st.booleans(),
       closed=st.booleans(), skip=st.integers(0, 100))
def test_an_answer_fits_its_cap_and_makes_progress(data: bytes, cap: int, max_bytes: int, utf8: bool,
                                                   closed: bool, skip: int) -> None:
    log = OutputLog(10_000)
    log.append(data)
    if closed:
        log.close()
    offset = min(skip, log.end)
    max_bytes = min(max_bytes, raw_limit(cap, utf8))

    def read(n: int):
        return log.read(offset, n, utf8=utf8)

    first = read(max_bytes)
    chunk, encoded = fit(read, first, cap, utf8=utf8)
    assert len(json.dumps(encoded)) - 2 <= cap
    assert chunk.offset == first.offset
    assert data[chunk.offset:chunk.next_offset] == chunk.data
    assert chunk.next_offset <= first.next_offset
    assert bool(chunk.data) == bool(first.data), "an answer that could carry output carries some"
    if utf8:
        assert encoded == chunk.data.decode("utf-8", "replace")


@PROPERTY
@given(chunks=st.lists(st.binary(max_size=50), max_size=20), limit=st.integers(1, 200),
       keep=st.integers(1, 200), more=st.lists(st.binary(max_size=50), max_size=5))
def test_shrinking_keeps_the_newest_bytes_at_their_offsets(chunks: list[bytes], limit: int, keep: int,
                                                           more: list[bytes]) -> None:
    log = OutputLog(limit)
    for chunk in chunks:
        log.append(chunk)
    stream = b"".join(chunks)
    end = log.end
    log.shrink(keep)
    assert log.end == end == len(stream)
    kept = log.read(0, 10_000, utf8=False)
    assert kept.data == stream[kept.offset:] and len(kept.data) == min(keep, limit, len(stream))
    assert kept.truncated == (kept.offset > 0)
    for chunk in more:  # the new limit holds from now on
        log.append(chunk)
    added = b"".join(more)
    stream += added
    kept_after = log.read(0, 10_000, utf8=False)
    assert kept_after.data == stream[kept_after.offset:]
    assert len(kept_after.data) == min(keep, len(kept.data) + len(added))
