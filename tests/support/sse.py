"""A client of ``GET /api/ws/stream`` (Server-Sent Events) over a raw socket.

HTTP clients of the test tools read an answer whole, or cannot stop reading one that
never ends; these read the events of an open answer one at a time, stop reading when
told (a slow page: the server must not run ahead of its acknowledgements) and close
it when done. ``EventStream`` is asyncio's, for the in-process server;
``BlockingEventStream`` is the same over a blocking socket, for a server in a process
of its own or a thread beside the loop.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.parse
from collections import deque
from typing import Any, NamedTuple


class Event(NamedTuple):
    """One event (``name``, its JSON ``data``), or a comment line (``name`` "comment")."""

    name: str
    data: Any
    at: float  # time.monotonic() when it was parsed


class Answer:
    """What one HTTP answer is: a status, headers, and the body fed to it piece by piece.

    A chunked body (the stream) is decoded into events as it comes; any other body is
    kept (an error's JSON).
    """

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.events: deque[Event] = deque()
        self.body = b""
        self.ended = False
        self._raw = b""
        self._head_done = False
        self._chunked = False
        self._text = b""  # decoded body of the stream not yet parsed into events
        self._event: dict[str, str] = {}
        self.received = 0  # bytes of events' body so far

    @property
    def error(self) -> Any:
        return json.loads(self.body) if self.body else None

    def take(self, comments: bool = False) -> Event | None:
        """The next event received (comments only if asked), or None for now."""
        while self.events:
            item = self.events.popleft()
            if comments or item.name != "comment":
                return item
        return None

    def feed(self, data: bytes) -> None:
        if not data:
            self.ended = True
            return
        self._raw += data
        if not self._head_done:
            if b"\r\n\r\n" not in self._raw:
                return
            head, self._raw = self._raw.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
            self._head_done = True
            self._chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        if not self._chunked:
            self.body += self._raw
            self._raw = b""
            if len(self.body) >= int(self.headers.get("content-length", "0") or 0):
                self.ended = True
            return
        while True:
            line, sep, rest = self._raw.partition(b"\r\n")
            if not sep:
                return
            size = int(line.split(b";")[0], 16)
            if size == 0:
                self.ended = True
                return
            if len(rest) < size + 2:
                return
            self._text += rest[:size]
            self.received += size
            self._raw = rest[size + 2:]
            self._parse_events()

    def _parse_events(self) -> None:
        while b"\n" in self._text:
            line, self._text = self._text.split(b"\n", 1)
            text = line.decode("utf-8").rstrip("\r")
            if not text:
                if self._event:
                    data = self._event.get("data")
                    self.events.append(Event(self._event.get("event", "message"),
                                             None if data is None else json.loads(data), time.monotonic()))
                self._event = {}
            elif text.startswith(":"):
                self.events.append(Event("comment", text[1:].strip(), time.monotonic()))
            else:
                field, _, value = text.partition(":")
                value = value[1:] if value.startswith(" ") else value
                self._event[field] = self._event[field] + "\n" + value if field in self._event else value


def request_bytes(url: str, token: str, reads: list[str], params: dict[str, Any] | None = None) -> tuple[
        str, int, bytes]:
    """The host, port and request of ``GET {url}api/ws/stream?read=…``."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.urlencode([("read", r) for r in reads] + list((params or {}).items()))
    path = f"{parts.path}api/ws/stream?{query}"
    request = (f"GET {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
               f"Authorization: token {token}\r\nAccept: text/event-stream\r\n\r\n").encode()
    return parts.hostname or "127.0.0.1", parts.port or 80, request


def read_spec(session_id: str, offset: int, client: str) -> str:
    return f"{session_id}:{offset}:{client}"


class EventStream:
    """An open stream on the in-process server (asyncio)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.answer = Answer()

    @classmethod
    async def open(cls, url: str, token: str, reads: list[str], **params: Any) -> EventStream:
        """Send the request and read its head (and, for an error, its body)."""
        host, port, request = request_bytes(url, token, reads, params)
        reader, writer = await asyncio.open_connection(host, port)
        stream = cls(reader, writer)
        writer.write(request)
        while not stream.answer.status or (stream.answer.status != 200 and not stream.answer.ended):
            data = await asyncio.wait_for(reader.read(65536), 30)
            stream.answer.feed(data)
            if not data:
                break
        return stream

    @property
    def status(self) -> int:
        return self.answer.status

    async def next(self, timeout: float = 30, comments: bool = False) -> Event | None:
        """The next event (None once the answer has ended); the timeout only catches a hang."""
        deadline = time.monotonic() + timeout
        while True:
            item = self.answer.take(comments)
            if item is not None or self.answer.ended:
                return item
            left = deadline - time.monotonic()
            assert left > 0, f"no event within {timeout} s"
            try:
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except asyncio.TimeoutError:
                raise AssertionError(f"no event within {timeout} s") from None
            self.answer.feed(data)

    async def quiet(self, seconds: float) -> list[Event]:
        """Everything that arrives within ``seconds`` (comments included)."""
        got: list[Event] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = await self.next(left, comments=True)
            except AssertionError:
                break
            if item is None:
                break
            got.append(item)
        return got

    def close(self) -> None:
        self.writer.close()


class BlockingEventStream:
    """An open stream over a blocking socket (a server in its own process, or a thread)."""

    def __init__(self, url: str, token: str, reads: list[str], **params: Any):
        host, port, request = request_bytes(url, token, reads, params)
        self.sock = socket.create_connection((host, port), timeout=60)
        self.sock.sendall(request)
        self.answer = Answer()
        while not self.answer.status or (self.answer.status != 200 and not self.answer.ended):
            data = self.sock.recv(65536)
            self.answer.feed(data)
            if not data:
                break

    @property
    def status(self) -> int:
        return self.answer.status

    def next(self, timeout: float = 30, comments: bool = False) -> Event | None:
        deadline = time.monotonic() + timeout
        while True:
            item = self.answer.take(comments)
            if item is not None or self.answer.ended:
                return item
            left = deadline - time.monotonic()
            assert left > 0, f"no event within {timeout} s"
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise AssertionError(f"no event within {timeout} s") from None
            self.answer.feed(data)

    def close(self) -> None:
        self.sock.close()
