"""Output answers within a size, built and sent a piece at a time.

``max`` counts bytes of output, but an answer's size is that of its JSON: base64
grows by 4/3, and UTF-8 output decoded to text grows by its escaping, up to six
times for control bytes and for invalid bytes (each one U+FFFD, ``\\ufffd``).
Binary output read as text therefore made 4 MiB answers of 15 MiB (issue 7:
20 clients asking ``max=4194304`` of random bytes, +320 MiB and a stalled loop).
Here an answer carries as much output as surely fits in ``cap`` characters of
JSON, by an upper bound of its escaped size that costs no decoding.

Building a large answer at once holds the event loop, every session's: for 2 MiB
of ``yes`` output the read, the size bound and the decoding took 3 ms, the JSON
escaping 8 ms, joining and encoding the text 4 ms (2-CPU benchmark machine). So an
``Answer`` reads, sizes, decodes and escapes the output one ``PIECE`` at a time
(about a quarter of a millisecond each), and the handler yields to the loop between
pieces and sends them as they are, never joined. Escaping is per character and
base64 per three bytes (``PIECE`` is a multiple of three), so the pieces joined are
exactly the answer encoded at once.
"""

from __future__ import annotations

import base64
import json
from typing import Callable

from ..session.output import Chunk

#: Bytes that JSON (ensure_ascii, as json.dumps writes it) keeps as one character.
_PLAIN = bytes(b for b in range(0x20, 0x7F) if b not in b'"\\')
#: Bytes that become two characters (\\n, \\"); any other byte, at most six.
_SHORT = b'"\\\n\r\t\b\f'

#: Output bytes read and encoded per piece: 48 KiB (a multiple of 3, so that base64
#: pieces join), about a quarter of a millisecond of escaping for dense text.
PIECE = 48 * 1024


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
        limit = max(3, raw_limit(cap, utf8=False))
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


class Answer:
    """The ``data`` of one output answer, encoded a piece at a time.

    ``read(offset, n)`` reads the log (at most ``n`` bytes from ``offset``, UTF-8
    answers never cut inside a character); ``first`` is the first piece, already
    read; the answer covers at most ``stop - first.offset`` bytes and ``cap``
    characters of JSON. Call ``step()`` until it returns False; ``parts`` then holds
    the JSON text of the data (without its quotes) as ASCII bytes, ``next_offset``
    where the answer ends. It always carries something when ``first`` does.
    """

    def __init__(self, read: Callable[[int, int], Chunk], first: Chunk, stop: int, cap: int, *,
                 utf8: bool, piece: int = PIECE):
        self.offset = first.offset
        self.truncated = first.truncated
        self.next_offset = first.offset
        self.size = 0  # characters of JSON in parts
        self.parts: list[bytes] = []
        self._read, self._chunk, self._stop, self._cap, self._utf8 = read, first, stop, cap, utf8
        self._piece = piece

    def step(self) -> bool:
        """Encode the next piece; True while there is more to encode."""
        chunk = self._chunk
        if not chunk.data:
            return False
        if chunk.offset != self.next_offset:
            return False  # the log dropped bytes meanwhile: end the answer before the gap
        room = self._cap - self.size
        chunk, text = fit(lambda n: self._read(chunk.offset, n), chunk, room, utf8=self._utf8)
        piece = json.dumps(text)[1:-1] if self._utf8 else text
        if self.parts and len(piece) > room:
            return False  # full: this piece goes in the next answer
        self.parts.append(piece.encode("ascii"))
        self.size += len(piece)
        self.next_offset = chunk.next_offset
        want = min(self._piece, self._stop - self.next_offset)
        if want <= 0 or self.size >= self._cap or (not self._utf8 and len(chunk.data) % 3):
            # Done; or base64 pieces join only in whole groups of three bytes.
            self._chunk = chunk._replace(data=b"")
            return False
        chunk = self._read(self.next_offset, want)
        if chunk.next_offset > self._stop:
            # One whole character past a small max: only the first piece may be.
            chunk = chunk._replace(data=b"")
        self._chunk = chunk
        return bool(chunk.data)
