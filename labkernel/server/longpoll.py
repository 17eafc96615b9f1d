"""One output request, ``GET /api/ws/output/{id}``: its long poll, batching and answer.

The HTTP policy of reading output lives here, between ``OutputHandler`` (which
makes an ``OutputPoll`` per request and tells it when the client hangs up) and
``answers`` (which encodes an answer's data a piece at a time). In order:

1. the query checked: ``wait`` capped by ``max_wait``, ``max`` by what
   ``max_answer_size`` characters of JSON can carry;
2. the first piece read through ``Session.read``, which records this reader at the
   offset it asked for (flow control); when there is nothing yet, after a long
   poll on the log; when a program floods and this reader has caught up with it,
   after a short batching pause (``batch_delay``);
3. the rest of the answer read from the log itself and encoded a piece at a time,
   with the loop free in between;
4. the pieces sent as they are, never joined, under one Content-Length.

The limits are ``LabKernelApp``'s (see ``Limits``), next to ``max_body_size``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import NamedTuple, Protocol

from tornado import web
from tornado.iostream import StreamClosedError

from ..errors import BadRequest
from ..labs.labsession import LabSession
from ..session.output import Chunk
from . import answers
from .fields import client_id, query_number

#: Answers smaller than this never wait to batch: typing and prompts go out at once.
_BATCH_MIN = 4096

#: ``max`` when a request names none.
_DEFAULT_MAX = 1024 * 1024


class Limits(Protocol):
    """The HTTP limits of output requests: ``LabKernelApp``'s traits of these names."""

    @property
    def max_wait(self) -> float: ...

    @property
    def batch_delay(self) -> float: ...

    @property
    def max_answer_size(self) -> int: ...


class OutputQuery(NamedTuple):
    """An output request's query, checked and capped."""

    offset: int
    wait: float  # seconds, at most max_wait
    max_bytes: int  # output bytes, at most what cap characters can carry
    utf8: bool
    reader: str  # the clientId that flow control follows ("": every reader without one)
    cap: int  # characters of JSON data in the answer: max_answer_size

    @classmethod
    def parse(cls, handler: web.RequestHandler, limits: Limits) -> OutputQuery:
        """The query of ``handler``'s request; raises BadRequest."""
        arg = handler.get_query_argument
        offset = query_number("offset", arg("offset", None), 0, integer=True)
        wait = min(query_number("wait", arg("wait", None), 0.0, integer=False), limits.max_wait)
        max_bytes = query_number("max", arg("max", None), _DEFAULT_MAX, integer=True)
        if max_bytes < 1:
            raise BadRequest("max must be 1 or more.")
        encoding = arg("encoding", "utf-8")
        if encoding not in ("utf-8", "base64"):
            raise BadRequest(f"encoding must be utf-8 or base64 (got {encoding!r}).")
        reader = client_id(arg("clientId", None)) or ""
        utf8 = encoding == "utf-8"
        cap = limits.max_answer_size
        return cls(offset, wait, min(max_bytes, answers.raw_limit(cap, utf8)), utf8, reader, cap)


class OutputPoll:
    """One output request, from its query to its last byte (see the module's text).

    ``run`` answers it; ``hang_up`` is the client gone, which may come at any time,
    before ``run`` too: a long poll is cancelled, and nothing more is built or sent.
    """

    def __init__(self) -> None:
        # No reference to the handler, which holds this: that cycle would leave every
        # answered handler (its request, headers, connection) to the garbage collector
        # instead of freeing it at once, and doubled its longest pause during a flood.
        self._wait: asyncio.Future[None] | None = None
        self._gone = False  # the client hung up, possibly before the poll began

    def hang_up(self) -> None:
        """The client went away: there is no one to answer."""
        self._gone = True
        if self._wait is not None:
            self._wait.cancel()

    async def run(self, handler: web.RequestHandler, session: LabSession, limits: Limits) -> None:
        """Answer ``handler``'s request with ``session``'s output as its query asks; raises
        BadRequest."""
        query = OutputQuery.parse(handler, limits)
        chunk = await self._first_piece(handler, session, query, limits.batch_delay)
        if chunk is None:
            return  # the client went away; there is no one to answer
        # The pieces after the first read the log itself: flow control counts this
        # reader at the offset it asked for (the answer may yet be lost), not beyond.
        utf8 = query.utf8
        answer = answers.Answer(lambda at, n: session.output.read(at, n, utf8=utf8), chunk,
                                min(chunk.offset + query.max_bytes, session.output.end), query.cap,
                                utf8=utf8)
        while answer.step():
            await asyncio.sleep(0)  # a piece encoded: let the other sessions run
            if self._gone:
                return  # the client went away meanwhile
        await self._send(handler, session, answer)

    async def _first_piece(self, handler: web.RequestHandler, session: LabSession, query: OutputQuery,
                           batch_delay: float) -> Chunk | None:
        """The answer's first piece, read through the session (None: the client is gone).

        Only the first piece: a large answer is read and encoded a piece at a time.
        """
        offset, first, utf8, reader = query.offset, min(query.max_bytes, answers.PIECE), query.utf8, query.reader
        chunk = session.read(offset, first, utf8=utf8, reader=reader)
        if not chunk.data and query.wait > 0 and session.status in ("starting", "running"):
            # Nothing complete past offset yet: wait for bytes past what exists now.
            stream = getattr(handler.request.connection, "stream", None)
            if self._gone or (stream is not None and stream.closed()):
                # The client hung up before the poll began (with streamed bodies its
                # close can come while prepare() runs, when no one hears it): no one
                # would cancel this poll.
                return None
            self._wait = session.output.wait(session.output.end, query.wait)
            try:
                await self._wait
            except asyncio.CancelledError:
                return None  # the client went away; there is no one to answer
            finally:
                self._wait = None
            chunk = session.read(offset, first, utf8=utf8, reader=reader)
        elif _streaming(session, chunk, query.max_bytes, batch_delay):
            # The program is writing fast and this reader has caught up with it:
            # let the answer gather a little more. Fewer, larger answers carry a
            # flood at a fraction of the per-request cost.
            await asyncio.sleep(batch_delay)
            chunk = session.read(offset, first, utf8=utf8, reader=reader)
        return chunk

    async def _send(self, handler: web.RequestHandler, session: LabSession, answer: answers.Answer) -> None:
        """The answer's JSON: its fields around the data's pieces, as they are."""
        head = json.dumps({"sessionId": session.id, "offset": answer.offset,
                           "truncated": answer.truncated})
        tail = json.dumps({"nextOffset": answer.next_offset, "status": session.status,
                           "exitCode": session.exit_code})
        head_bytes = (head[:-1] + ', "data": "').encode()
        tail_bytes = ('", ' + tail[1:]).encode()
        if len(answer.parts) <= 1:
            handler.finish(head_bytes + b"".join(answer.parts) + tail_bytes)
            return
        # Sent as the pieces are, never joined (see ``answers``), with its length.
        handler.set_header("Content-Type", "application/json")
        handler.set_header("Content-Length", str(len(head_bytes) + answer.size + len(tail_bytes)))
        handler.write(head_bytes)
        try:
            for part in answer.parts:
                handler.write(part)
                await handler.flush()
        except StreamClosedError:
            return  # the client went away; there is no one to answer
        handler.finish(tail_bytes)


def _streaming(session: LabSession, chunk: Chunk, max_bytes: int, batch_delay: float) -> bool:
    """Is a program flooding, with this reader caught up: worth a batching pause?"""
    waiting = session.output.end - chunk.offset
    return (
        batch_delay > 0
        and _BATCH_MIN <= waiting < max_bytes // 2
        and time.monotonic() - session.last_output < batch_delay
        and session.running
    )
