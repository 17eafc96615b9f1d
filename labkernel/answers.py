"""Output answers within a size: the JSON text of ``data``, never over a cap.

``max`` counts bytes of output, but an answer's size is that of its JSON: base64
grows by 4/3, and UTF-8 output decoded to text grows by its escaping, up to six
times for control bytes and for invalid bytes (each one U+FFFD, ``\\ufffd``).
Binary output read as text therefore made 4 MiB answers of 15 MiB (issue 7:
20 clients asking ``max=4194304`` of random bytes, +320 MiB and a stalled loop).
Here an answer carries as much output as surely fits in ``cap`` characters of
JSON, by an upper bound of its escaped size that costs no decoding. An answer
within the cap is then sent in pieces (``pieces``), so that encoding it never
holds the event loop for long.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Callable, Iterator

from .output import Chunk

#: Bytes that JSON (ensure_ascii, as json.dumps writes it) keeps as one character.
_PLAIN = bytes(b for b in range(0x20, 0x7F) if b not in b'"\\')
#: Bytes that become two characters (\\n, \\"); any other byte, at most six.
_SHORT = b'"\\\n\r\t\b\f'


def escaped_size_bound(data: bytes) -> int:
    """An upper bound of the JSON size of ``data`` decoded as UTF-8, quotes excluded.

    Exact for ASCII; every other byte is counted as six characters, the most one
    byte can become. One C-speed pass over the data, no decoding.
    """
    rest = data.translate(None, _PLAIN)  # for text, a small part: \r\n, escapes
    long = len(rest.translate(None, _SHORT))
    return len(data) + len(rest) + 4 * long


def raw_limit(cap: int, utf8: bool) -> int:
    """The most output bytes an answer of at most ``cap`` characters could carry."""
    return cap if utf8 else cap // 4 * 3


def fit(read: Callable[[int], Chunk], chunk: Chunk, cap: int, *, utf8: bool) -> tuple[Chunk, str]:
    """``chunk``, or a shorter read from the same offset, with its data encoded in ``cap`` characters.

    ``read(n)`` reads again from the chunk's offset at most ``n`` bytes (always at
    least one whole character). The answer is never empty when ``chunk`` is not.
    """
    if not utf8:
        limit = raw_limit(cap, utf8=False)
        if len(chunk.data) > limit:
            chunk = read(limit)
        return chunk, base64.b64encode(chunk.data).decode()
    # Counted with the bound, not measured: measuring means decoding and escaping,
    # the very work (tens of ms per MiB of binary) a cap is there to bound.
    while True:
        data = chunk.data
        if len(data) * 6 <= cap or len(data) <= 4:
            break
        bound = escaped_size_bound(data)
        if bound <= cap:
            break
        chunk = read(max(1, min(len(data) - 1, len(data) * cap // bound)))
    return chunk, chunk.data.decode("utf-8", "replace")


#: Characters of ``data`` per piece of an answer sent in pieces: about half a
#: millisecond of JSON escaping.
PIECE = 64 * 1024


def pieces(fields: dict[str, Any], data: str, piece: int = PIECE) -> Iterator[str]:
    """The JSON text of ``dict(fields, data=data)`` in pieces to send in order.

    JSON-encoding a large answer holds the event loop, every session's, for its
    whole length: ``json.dumps`` of 1 MiB of ``yes`` output took 5-10 ms on the
    2-CPU benchmark machine, and answers under a flood were 600 KB-1 MiB (longest
    loop callback during a flood 25-80 ms of CPU on main, 1.2-3 ms in pieces).
    Capping answers small instead costs one HTTP request per piece, a millisecond
    or two of Jupyter's handler stack each, and halved the rate a flood is carried
    at (23-28 MB/s against 33-64). So the handler encodes a large answer piece by
    piece, yielding to the loop in between, and sends it whole. Escaping is per
    character, so the pieces joined are exactly the answer encoded at once.
    """
    head = json.dumps(fields)
    yield head[:-1] + (', "data": "' if fields else '"data": "')
    for start in range(0, len(data), piece):
        yield json.dumps(data[start:start + piece])[1:-1]
    yield '"}'
