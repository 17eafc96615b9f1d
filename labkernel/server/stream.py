"""Several sessions' output on one answer: ``GET /api/ws/stream``, as Server-Sent Events.

Why. A page's terminals long-poll their output, one request per answer: a keystroke's
echo costs the input POST and its answer plus the poll's answer and its re-issue,
four HTTP crossings of about 2 ms out and 2.5 ms back each in Chromium here, and every
terminal holds one of the six connections Chromium opens per host, so a page gave
three of them a long poll and left a fourth polling with ``wait=0`` (32.6 ms echo and
272 polls for 60 keys; issue 13, headless Chromium, 2 shared cores). One stream per
page carries every terminal's output as events of one long answer.

**Readers.** A request names its readers, ``read=<sessionId>:<offset>:<clientId>``,
repeated: one per terminal view, with the view's ``clientId`` (as its long polls
give it). Each is a *channel*: its ``output`` events start at its offset and follow
on byte after byte, as the answers to a client that always asks for ``nextOffset``
would (nothing lost, nothing repeated, UTF-8 never cut); each event carries its
``offset`` and ``nextOffset``, so a client that reconnects with the last
``nextOffset`` it took resumes exactly. When the session has ended and all its
output is sent, an ``end`` event (status, exit code) closes the channel; a session
the server does not know gets an ``error`` event (``session_not_found``) and the
others carry on.

**Flow control.** The page says what it has written to its terminals (xterm's write
callback): ``POST /api/ws/stream/{streamId}/ack`` with ``{"written": {clientId:
offset}}``. A channel is never sent more than ``window`` bytes past the offset its
page last said it wrote (``Channel``, a pure core, property-tested): a flood cannot
outrun the page, and what the server has in flight is at most a window per channel.
The session's own flow control (``PtyReader``) counts the view as a reader at that
written offset, refreshed every heartbeat, as it counts a long-polling view at the
offset it asked for: a page that falls behind pauses the program, as a slow
long-polling one does.

**Keeping it open.** A comment line goes out when nothing else has for ``heartbeat``
seconds, so proxies keep the connection and the page can tell a stream that stalls
(a proxy that buffers: it then falls back to long polls). The answer has
TCP_NODELAY: an echo of one byte goes at once. After ``lifetime`` (authentication is
checked again on the next request) or when all its channels have ended, a ``close``
event ends the stream; the page opens the next one from its offsets.

**Bounds.** ``max_stream_sessions`` readers per stream, ``max_streams`` streams per
server (then ``too_many_streams``, 429: the page uses long polls). A flooding channel
is sent a piece (``answers.PIECE``) at a time, round robin, so another channel's
echo waits for at most one piece. Output goes at once when it is small (an echo)
or the channel has sent nothing for ``batch_delay``; while a program keeps
writing, the next event gathers its reads (each under 4 KiB) for up to
``batch_delay``, as a long poll gathers them (``Channel.hold_until``): a flood goes
in events of tens of KiB, not thousands of reads' worth.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from tornado import web
from tornado.iostream import StreamClosedError

from ..errors import BadRequest, LabError, StreamNotFound, TooManyStreams
from ..labs.labsession import LabSession
from .answers import PIECE
from .fields import client_id, query_number

#: The least room worth a read: a whole UTF-8 character always fits in it.
MIN_ROOM = 4
#: Less output than this is sent at once, never gathered: an echo, a short redraw.
GATHER_MIN = 512
#: The smallest window a request may ask for.
MIN_WINDOW = 1024


class Limits(Protocol):
    """The limits of streams: ``LabKernelApp``'s traits of these names."""

    @property
    def stream_window(self) -> int: ...

    @property
    def stream_heartbeat(self) -> float: ...

    @property
    def stream_lifetime(self) -> float: ...

    @property
    def max_stream_sessions(self) -> int: ...

    @property
    def max_streams(self) -> int: ...

    @property
    def batch_delay(self) -> float: ...


class Read(NamedTuple):
    """One reader a stream request names: ``read=<sessionId>:<offset>:<clientId>``."""

    session_id: str
    offset: int
    reader: str


def parse_reads(values: list[str], most: int) -> list[Read]:
    """The readers of a stream request's ``read`` arguments; raises BadRequest."""
    if not values:
        raise BadRequest("Name the sessions to read: read=<sessionId>:<offset>:<clientId>, one each.")
    if len(values) > most:
        raise BadRequest(f"A stream reads at most {most} sessions; read the others in another way.")
    reads: list[Read] = []
    for value in values:
        parts = value.split(":", 2)  # session ids and offsets hold no colon; a clientId may
        if len(parts) != 3 or not parts[0]:
            raise BadRequest(f"read must be <sessionId>:<offset>:<clientId> (got {value[:200]!r}).")
        session_id, offset, reader = parts
        client_id(reader)
        if any(r.reader == reader for r in reads):
            raise BadRequest(f"The clientId {reader[:200]!r} is named twice; each reader needs its own.")
        reads.append(Read(session_id, query_number("offset", offset, 0, integer=True), reader))
    return reads


@dataclass
class Channel:
    """One reader's share of a stream: what was sent, what its page has written.

    Pure accounting, no I/O. ``sent``: where the next event starts; ``written``:
    the page has written everything before it (its last acknowledgement, or the
    offset it asked for). Invariant: ``sent - written <= window``, so that the
    page never has more than a window of output it has not written yet.
    """

    session_id: str
    reader: str
    sent: int
    written: int
    window: int
    #: While a program floods, small reads are gathered until then (monotonic time).
    hold_until: float | None = None
    #: When the last event went (monotonic time).
    sent_at: float = 0.0

    @property
    def room(self) -> int:
        """How many more bytes may be sent before the page writes some."""
        return self.written + self.window - self.sent

    def want(self, piece: int = PIECE) -> int:
        """How many bytes the next event may carry (0: none until the page writes some)."""
        room = self.room
        return min(piece, room) if room >= MIN_ROOM else 0

    def took(self, offset: int, next_offset: int) -> bool:
        """An event of the bytes ``offset`` to ``next_offset`` went out, at most ``want()``
        of them; True when it starts past ``sent`` (the server no longer had those).

        Bytes that were gone are never pending at the page: ``written`` moves over
        them too, so the page's acknowledgements keep their meaning.
        """
        gap = offset - self.sent
        if gap < 0 or next_offset < offset:
            raise ValueError(f"event {offset}-{next_offset} does not follow {self.sent}")
        self.written += gap
        self.sent = next_offset
        return gap > 0

    def wrote(self, offset: int) -> bool:
        """The page has written up to ``offset``; True if that is news. Raises BadRequest
        for an offset never sent."""
        if offset > self.sent:
            raise BadRequest(f"clientId {self.reader[:200]!r} cannot have written up to {offset}: "
                             f"the stream sent it output up to {self.sent} only.")
        if offset <= self.written:
            return False  # an older acknowledgement, overtaken
        self.written = offset
        return True


def event(name: str, model: dict[str, Any]) -> bytes:
    """One Server-Sent Event (JSON escapes every newline, so ``data`` is one line)."""
    return b"event: " + name.encode() + b"\ndata: " + json.dumps(model).encode() + b"\n\n"


#: A comment line: keeps proxies from closing an idle stream, tells the page it lives.
HEARTBEAT = b": keep-alive\n\n"


class OutputStream:
    """One open stream: its channels, acknowledgements, and the loop that sends events.

    ``add`` its readers, then ``run`` it on a request handler; ``wrote`` (the ack
    route) and ``hang_up`` (the client went away) may come at any time.
    """

    def __init__(self, stream_id: str, *, window: int, heartbeat: float, lifetime: float,
                 batch_delay: float, attach_every: float):
        self.id = stream_id
        self.window, self.heartbeat, self.lifetime = window, heartbeat, lifetime
        self.attach_every = attach_every
        self.batch_delay = batch_delay
        self.channels: dict[str, Channel] = {}
        self._sessions: dict[str, LabSession] = {}
        self._missing: list[tuple[Read, LabError]] = []
        self._gone = False
        self._poked: asyncio.Future[None] | None = None
        self._deadline = time.monotonic() + lifetime
        self._last_write = self._last_attach = time.monotonic()

    def add(self, read: Read, session: LabSession) -> None:
        """Read ``session`` for ``read.reader`` from ``read.offset``; raises BadRequest for an
        offset past the session's output."""
        if read.offset > session.output.end:
            raise BadRequest(f"offset {read.offset} is past the output of session {read.session_id} "
                             f"(0 to {session.output.end}); ask for a nextOffset you were given.")
        self.channels[read.reader] = Channel(read.session_id, read.reader, read.offset, read.offset,
                                             self.window)
        self._sessions[read.reader] = session

    def add_missing(self, read: Read, error: LabError) -> None:
        """``read`` names a session the server does not know: an error event says so."""
        self._missing.append((read, error))

    def hang_up(self) -> None:
        """The client went away: stop."""
        self._gone = True
        self._poke()

    def wrote(self, written: Any) -> None:
        """An acknowledgement, ``{clientId: offset}``: the page has written those; raises
        BadRequest (nothing is applied then)."""
        if not isinstance(written, dict) or not written:
            raise BadRequest('written must be an object of clientId: offset, e.g. {"written": {"c1": 120}}.')
        checked: list[tuple[Channel, int]] = []
        for reader, offset in written.items():
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                raise BadRequest(f"written[{reader[:200]!r}] must be a whole number, 0 or more.")
            channel = self.channels.get(reader)
            if channel is None:
                continue  # ended meanwhile (its end event crossed this), or never here: nothing to do
            if offset > channel.sent:
                raise BadRequest(f"clientId {reader[:200]!r} cannot have written up to {offset}: the "
                                 f"stream sent it output up to {channel.sent} only.")
            checked.append((channel, offset))
        for channel, offset in checked:
            if channel.wrote(offset):
                self._attach(channel)
        self._poke()

    # -- the loop ------------------------------------------------------------------

    async def run(self, handler: web.RequestHandler) -> None:
        """Send events on ``handler``'s answer until the client goes, the lifetime ends or
        every channel has ended."""
        now = time.monotonic()
        self._deadline = now + self.lifetime
        self._attach_all(now)
        opening = event("open", {"streamId": self.id, "window": self.window,
                                 "heartbeat": self.heartbeat, "lifetime": self.lifetime})
        if not await self._write(handler, opening):
            return
        for read, error in self._missing:
            if not await self._write(handler, event("error", {
                    "sessionId": read.session_id, "clientId": read.reader,
                    "error": error.code, "message": error.message})):
                return
        while not self._gone:
            now = time.monotonic()
            if now >= self._deadline or not self.channels:
                reason = "ended" if not self.channels else "lifetime"
                await self._write(handler, event("close", {"reason": reason}))
                return
            if now - self._last_attach >= self.attach_every:
                self._attach_all(now)
            sent = await self._round(handler, now)
            if sent is None:
                return
            if sent:
                continue
            if now - self._last_write >= self.heartbeat:
                if not await self._write(handler, HEARTBEAT):
                    return
                continue
            await self._wait(now)

    async def _round(self, handler: web.RequestHandler, now: float) -> bool | None:
        """One event per channel that has one to send; True if any went, None if the client
        is gone. With nothing to send, nothing is awaited: no output can slip in between
        this and ``_wait``."""
        sent = False
        for reader in list(self.channels):
            channel = self.channels.get(reader)
            data = None if channel is None else self._next_event(channel, self._sessions[reader], now)
            if data is None:
                continue
            if not await self._write(handler, data):
                return None
            sent = True
        return sent

    def _next_event(self, channel: Channel, session: LabSession, now: float) -> bytes | None:
        """The channel's next event (output, or its end), or None for now."""
        log = session.output
        want = channel.want()
        if want and log.end > channel.sent and not self._gather(channel, session, log.end - channel.sent,
                                                                want, now):
            chunk = log.read(channel.sent, want, utf8=True)
            if chunk.data or chunk.offset > channel.sent:
                truncated = channel.took(chunk.offset, chunk.next_offset)
                channel.hold_until = None
                channel.sent_at = now
                return event("output", {
                    "sessionId": channel.session_id, "clientId": channel.reader, "offset": chunk.offset,
                    "nextOffset": chunk.next_offset, "data": chunk.data.decode("utf-8", "replace"),
                    "truncated": truncated})
        if log.closed and channel.sent >= log.end:
            del self.channels[channel.reader]
            del self._sessions[channel.reader]
            return event("end", {"sessionId": channel.session_id, "clientId": channel.reader,
                                 "nextOffset": channel.sent, "status": session.status,
                                 "exitCode": session.exit_code})
        return None

    def _gather(self, channel: Channel, session: LabSession, pending: int, want: int, now: float) -> bool:
        """Hold the small backlog of a program that keeps writing, to send more at once
        (as ``longpoll._streaming`` does for a poll); True while it is held. The first
        output after a quiet spell is never held, nor a few bytes (an echo)."""
        if (self.batch_delay <= 0 or not session.running or not GATHER_MIN <= pending < want
                or now - channel.sent_at >= self.batch_delay or now - session.last_output >= self.batch_delay):
            return False
        if channel.hold_until is None:
            channel.hold_until = now + self.batch_delay
        return now < channel.hold_until

    async def _wait(self, now: float) -> None:
        """Sleep until a channel with room has new output, an acknowledgement comes, a
        batch is due, or it is time for the heartbeat."""
        wake = min(self._last_write + self.heartbeat, self._last_attach + self.attach_every, self._deadline)
        waiters: list[asyncio.Future[None]] = []
        for reader, channel in self.channels.items():
            if channel.hold_until is not None:
                wake = min(wake, channel.hold_until)
            elif channel.want():
                log = self._sessions[reader].output
                waiters.append(log.wait(log.end, max(0.0, wake - now)))
        poked = self._poked = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait([*waiters, poked], timeout=max(0.0, wake - now),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._poked = None
            for waiter in (*waiters, poked):
                waiter.cancel()  # a waiter of the log removes itself once done

    def _poke(self) -> None:
        if self._poked is not None and not self._poked.done():
            self._poked.set_result(None)

    def _attach_all(self, now: float) -> None:
        """The readers are still there: the session would forget one silent for its attach
        timeout (and let its program run past it). Not a reader the window holds up: its
        page has output it has not written, and it counts as there only while its
        acknowledgements come, as a long-polling reader does while its polls come. A page
        that stopped writing lets the program go on after the attach timeout."""
        self._last_attach = now
        for channel in self.channels.values():
            if channel.want():
                self._attach(channel)

    def _attach(self, channel: Channel) -> None:
        """Tell the session's flow control where this reader is: at what its page wrote."""
        session = self._sessions[channel.reader]
        # A read of no bytes records the reader at that offset (and resumes a paused
        # program when that brings it under half the window), as a poll from there would.
        session.read(max(channel.written, session.output.base), 0, utf8=False, reader=channel.reader)

    async def _write(self, handler: web.RequestHandler, data: bytes) -> bool:
        """Send ``data`` now; False once the client is gone (or stopped reading for longer
        than the stream may live)."""
        if self._gone:
            return False
        handler.write(data)
        flushed = handler.flush()
        self._last_write = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(flushed),
                                   max(0.0, self._deadline - self._last_write) + self.heartbeat)
        except (StreamClosedError, asyncio.TimeoutError):
            # Retrieve the flush's outcome whenever it comes, or it is logged as lost.
            flushed.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._gone = True
            return False
        return not self._gone


class StreamRegistry:
    """The streams open on this server, by id (for their acknowledgements), within a bound."""

    def __init__(self) -> None:
        self._streams: dict[str, OutputStream] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def open(self, limits: Limits, window: int, attach_every: float) -> OutputStream:
        """A new stream; raises TooManyStreams when ``max_streams`` are open. ``attach_every``:
        how often its readers are told to the sessions again (under their attach timeout)."""
        if len(self._streams) >= limits.max_streams:
            raise TooManyStreams(f"This server has {limits.max_streams} output streams open already; "
                                 "read the output with long polls.")
        stream = OutputStream(secrets.token_urlsafe(16), window=window, heartbeat=limits.stream_heartbeat,
                              lifetime=limits.stream_lifetime, batch_delay=limits.batch_delay,
                              attach_every=attach_every)
        self._streams[stream.id] = stream
        return stream

    def get(self, stream_id: str) -> OutputStream:
        """The open stream of this id; raises StreamNotFound."""
        stream = self._streams.get(stream_id)
        if stream is None:
            raise StreamNotFound("This output stream has closed; the page reads from a new one.")
        return stream

    def close(self, stream: OutputStream) -> None:
        self._streams.pop(stream.id, None)

    def hang_up_all(self) -> None:
        """End every stream (the server is shutting down)."""
        for stream in list(self._streams.values()):
            stream.hang_up()


class StreamRequest:
    """One ``GET /api/ws/stream``, from its query to its last event.

    ``hang_up`` is the client gone, which may come before ``run`` begins.
    """

    def __init__(self) -> None:
        self._gone = False
        self._stream: OutputStream | None = None

    def hang_up(self) -> None:
        self._gone = True
        if self._stream is not None:
            self._stream.hang_up()

    async def run(self, handler: web.RequestHandler, manager: Any, registry: StreamRegistry,
                  limits: Limits) -> None:
        """Answer ``handler``'s request; raises a LabError (before anything is sent)."""
        reads = parse_reads(handler.get_query_arguments("read"), limits.max_stream_sessions)
        window = query_number("window", handler.get_query_argument("window", None), limits.stream_window,
                              integer=True)
        if window < MIN_WINDOW:
            raise BadRequest(f"window must be at least {MIN_WINDOW} bytes.")
        found: list[tuple[Read, LabSession]] = []
        missing: list[tuple[Read, LabError]] = []
        for read in reads:
            try:
                found.append((read, manager.get(read.session_id)))
            except LabError as unknown:
                missing.append((read, unknown))
        # Under half the session's buffer: a page that stops writing is held up by the
        # window before its program fills the buffer (see ``_attach_all``).
        window = max(MIN_WINDOW, min(window, limits.stream_window, manager.buffer_size // 2))
        stream = registry.open(limits, window,
                               min(limits.stream_heartbeat, manager.attach_timeout / 3))
        try:
            for read, session in found:
                stream.add(read, session)
            for read, problem in missing:
                stream.add_missing(read, problem)
            self._stream = stream
            if self._gone:
                return
            handler.set_header("Content-Type", "text/event-stream; charset=utf-8")
            handler.set_header("Cache-Control", "no-cache, no-store, no-transform")
            handler.set_header("X-Accel-Buffering", "no")  # nginx: pass events on as they come
            connection_stream = getattr(handler.request.connection, "stream", None)
            if connection_stream is not None:
                connection_stream.set_nodelay(True)  # an echo of one byte goes at once
            await stream.run(handler)
        finally:
            registry.close(stream)
