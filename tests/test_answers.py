"""Answers in pieces (``answers.pieces``): joined, they are the whole answer."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from labkernel.answers import pieces

FIELDS = st.dictionaries(st.sampled_from(["sessionId", "offset", "status", "truncated"]),
                         st.one_of(st.text(max_size=5), st.integers(), st.booleans(), st.none()))
#: Terminal-like bytes: text, escapes, control characters, UTF-8 and invalid bytes.
OUTPUT = st.lists(st.one_of(
    st.text(max_size=20).map(str.encode),
    st.sampled_from([b"\x1b[31m", b"\r\n", b"\\", b'"', b"\x00", b"\xff", b"\xe2\x82",
                     "\u2028".encode()]),
), max_size=60).map(b"".join)


@given(FIELDS, OUTPUT, st.integers(min_value=1, max_value=40))
def test_utf8_pieces_join_into_the_answer_encoded_at_once(fields, data, piece):
    text = data.decode("utf-8", "replace")
    joined = "".join(pieces(fields, text, piece=piece))
    assert json.loads(joined) == dict(fields, data=text)
    assert joined == json.dumps(dict(fields, data=text))


@given(FIELDS, OUTPUT, st.integers(min_value=1, max_value=40))
def test_base64_pieces_join_into_the_exact_bytes(fields, data, piece):
    answer = json.loads("".join(pieces(fields, base64.b64encode(data).decode(), piece=piece)))
    assert base64.b64decode(answer.pop("data"), validate=True) == data
    assert answer == fields


def test_a_large_answer_comes_in_pieces_of_the_given_size():
    parts = list(pieces({"offset": 0}, "y\r\n" * 100_000, piece=65536))
    # head, ceil(300000 / 65536) = 5 data pieces, tail
    assert len(parts) == 7
    assert max(len(p) for p in parts[1:-1]) <= 65536 * 6  # JSON escapes: at most 6 per char
