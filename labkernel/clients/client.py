"""A small synchronous Python client of the labkernel REST API (stdlib only).

Inside a kernel started by a Jupyter server that runs labkernel, no arguments are
needed::

    from labkernel.client import LabClient
    with LabClient() as lab:
        s = lab.start("shell")
        lab.command(s["sessionId"], "echo $((6*7))")
        _, offset = lab.wait_for(s["sessionId"], "42\\r\\n")  # the output, not the echo
        lab.stop(s["sessionId"])
"""
from __future__ import annotations

import base64
import codecs
import http.client
import itertools
import json
import os
import re
import secrets
import socket
import threading
import time
import weakref
from typing import Any, Iterator, List, Optional, Pattern, Tuple, Union
from urllib.parse import parse_qs, quote, urlencode, urlsplit

__all__ = ["LabClient", "LabError"]

# Errors meaning "the peer closed or reset the connection", typically a keep-alive
# connection the server dropped while idle: the request can safely be sent again.
# (Not IncompleteRead: the server did act on that request.)
_RETRYABLE = (ConnectionError, http.client.BadStatusLine, http.client.ImproperConnectionState)
_LIVE = ("starting", "running")
_MAX_WAIT = 25  # the server's default long-poll cap; asking for more gains nothing


class LabError(Exception):
    """An error answer of the server, or a failure to reach it (``status`` None)."""

    def __init__(self, status: Optional[int], code: Optional[str], message: str):
        super().__init__(status, code, message)  # keeps the exception picklable
        self.status, self.code, self.message = status, code, message

    def __str__(self) -> str:
        return " ".join(str(p) for p in (self.status, self.code) if p is not None) + f": {self.message}"


class _ThreadConn:
    """One thread's connection, closed when the thread ends and its locals are dropped."""

    def __init__(self, conn: http.client.HTTPConnection):
        self.conn = conn

    def __del__(self) -> None:
        self.conn.close()


class LabClient:
    """Client of one Jupyter server's labkernel API over keep-alive HTTP.

    Each thread gets its own connection, so one thread may hold a long poll
    (``read(..., wait=...)``) while another sends input.
    """

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, *,
                 timeout: float = 30.0):
        url = url or os.environ.get("LABKERNEL_URL")
        if not url:
            raise ValueError("no server URL: pass url='http://host:port/base_url/' "
                             "or run inside a Jupyter server that has labkernel enabled")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        if token is None:  # a URL copied from `jupyter server list` carries ?token=
            token = (parse_qs(parts.query).get("token", [None])[0]
                     or os.environ.get("LABKERNEL_TOKEN") or os.environ.get("JUPYTERHUB_API_TOKEN"))
        self.url, self.timeout = url, timeout
        # The base path is kept exactly as given (e.g. /a%40b/) and paths are appended:
        # Jupyter routes on the raw path, so /a%40b/ and /a@b/ are different servers.
        self._base = parts.path if parts.path.endswith("/") else parts.path + "/"
        # An explicit port, else http.client would read "::1" as host ":" port 1.
        self._host, self._port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        self._conn_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"token {token}"
        self.client_id = secrets.token_urlsafe(12)
        self._seq = itertools.count(1)
        self._send_lock = threading.Lock()
        self._local = threading.local()
        self._conns: "weakref.WeakSet[http.client.HTTPConnection]" = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"LabClient({self.url!r})"

    # -- plumbing -----------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        """This thread's connection (made lazily; it connects on first use)."""
        holder = getattr(self._local, "holder", None)
        if holder is None:
            holder = self._local.holder = _ThreadConn(self._conn_class(self._host, self._port))
            self._conns.add(holder.conn)
        return holder.conn

    @staticmethod
    def _open(conn: http.client.HTTPConnection, timeout: float) -> bool:
        """Connect ``conn`` if needed; return whether it is a reused keep-alive connection."""
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
            return True
        # New, or closed after an error or a `Connection: close` answer.
        conn.timeout = timeout
        conn.connect()
        assert conn.sock is not None  # connect() made it
        # Small requests and answers must not wait for Nagle / delayed ACKs.
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return False

    def _request(self, method: str, path: str, body: Optional[dict] = None, *,
                 timeout: Optional[float] = None, retry: bool = False) -> Any:
        """Send one request and return the parsed JSON answer; raise LabError otherwise.

        A connection error is retried once on a fresh connection when the failed
        connection had been used before (a stale keep-alive), or always if ``retry``.
        """
        payload = None if body is None else json.dumps(body).encode()
        headers = dict(self._headers)
        if payload is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            conn, reused = self._connection(), False
            try:
                reused = self._open(conn, timeout or self.timeout)
                conn.request(method, self._base + path, payload, headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except _RETRYABLE as e:
                conn.close()
                if attempt == 1 and (reused or retry):
                    continue
                raise LabError(None, "connection_error", f"{method} {path}: {e!r}") from e
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                code = "timeout" if isinstance(e, socket.timeout) else "connection_error"
                raise LabError(None, code, f"{method} {path}: {e!r}") from e
            except BaseException:
                conn.close()  # e.g. KeyboardInterrupt mid-answer: the connection is unusable
                raise
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = None
        if 200 <= resp.status < 300:
            if data is None:
                raise LabError(resp.status, "bad_response", f"{method} {path}: answer is not JSON")
            return data
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            raise LabError(resp.status, data["error"], str(data.get("message") or resp.reason))
        raise LabError(resp.status, None, resp.reason)

    def _message(self, session_id: str, fields: dict) -> dict:
        # The lock makes seq order equal to arrival order even when several threads
        # send, so a server that remembers only the highest seq never drops one.
        with self._send_lock:
            body = {"sessionId": session_id, **fields, "clientId": self.client_id, "seq": next(self._seq)}
            # Retried with the same seq: the server acknowledges a duplicate and
            # does not write it twice, so a lost answer never doubles keystrokes.
            return self._request("POST", "api/ws/message", body, retry=True)

    @staticmethod
    def _sid(session_id: str) -> str:
        return quote(session_id, safe="")

    # -- catalog and sessions -------------------------------------------------------

    def health(self) -> dict:
        """Server health: ``{"status", "version", "transport", "activeSessions"}``."""
        return self._request("GET", "health")

    def labs(self) -> List[dict]:
        """The lab catalog: a list of ``{"id", "title", "description", "steps"}``."""
        return self.catalog()["labs"]

    def catalog(self) -> dict:
        """The whole catalog answer: ``{"labs": [...], "errors": [...]}``, where ``errors``
        lists the definitions that could not be loaded (``path``, ``field``, ``reason``, ``labId``)."""
        return self._request("GET", "api/labs")

    def start(self, lab_id: Optional[str] = None, *, rows: Optional[int] = None,
              cols: Optional[int] = None) -> dict:
        """Start a session of ``lab_id`` (server default: the plain ``shell`` lab)."""
        body = {k: v for k, v in (("labId", lab_id), ("rows", rows), ("cols", cols)) if v is not None}
        return self._request("POST", "api/labs/start", body)

    def get(self, session_id: str) -> dict:
        """The session object."""
        return self._request("GET", f"api/labs/session/{self._sid(session_id)}")

    def list(self) -> List[dict]:
        """All sessions visible to this user."""
        return self._request("GET", "api/labs/sessions")["sessions"]

    def stop(self, session_id: str) -> dict:
        """Stop the session and all its processes; returns it, now ``stopped``."""
        return self._request("DELETE", f"api/labs/session/{self._sid(session_id)}")

    def status(self, session_id: str) -> dict:
        """Short status: ``terminalActive``, ``status``, ``exitCode``, ``outputOffset``…"""
        return self._request("GET", f"api/ws/status/{self._sid(session_id)}")

    def check(self, session_id: str, step: Optional[int] = None) -> dict:
        """Run the checks of a lab session: one step (counted from 1) or all of them.

        Returns ``{"sessionId", "results": [{"step", "title", "passed", "message",
        "durationMs", "timedOut"}], "currentStep", "steps"}``; ``passed`` is None for
        a step without a check.
        """
        body = {} if step is None else {"step": step}
        # A check may take up to the server's check timeout (30 s by default).
        return self._request("POST", f"api/labs/session/{self._sid(session_id)}/check", body,
                             timeout=self.timeout + 60)

    # -- input ----------------------------------------------------------------------

    def send(self, session_id: str, data: str) -> dict:
        """Write raw keystrokes (control characters included); returns ``{"accepted", "offset"}``."""
        return self._message(session_id, {"data": data})

    def command(self, session_id: str, line: str) -> dict:
        """Type ``line`` and Enter."""
        return self._message(session_id, {"command": line})

    def resize(self, session_id: str, rows: int, cols: int) -> dict:
        """Resize the session's terminal."""
        return self._message(session_id, {"type": "resize", "rows": rows, "cols": cols})

    def signal(self, session_id: str, name: str = "SIGINT") -> dict:
        """Send a signal (``SIGINT``, ``SIGTERM``, …) to the foreground process group."""
        return self._message(session_id, {"type": "signal", "signal": name})

    # -- output ---------------------------------------------------------------------

    def read(self, session_id: str, offset: int = 0, *, wait: float = 0,
             max: Optional[int] = None, encoding: str = "utf-8", reader: Optional[str] = None) -> dict:
        """Output from ``offset``, long polling up to ``wait`` seconds if there is none yet.

        ``data`` is str for ``utf-8`` and bytes for ``base64``; ask next for ``nextOffset``.
        ``reader`` is the poll's ``clientId``: flow control then follows this reader on
        its own, apart from the client's other readers.
        """
        query = {"offset": offset, "wait": int(wait) if wait == int(wait) else wait, "encoding": encoding}
        if max is not None:
            query["max"] = max
        if reader is not None:
            query["clientId"] = reader
        out = self._request("GET", f"api/ws/output/{self._sid(session_id)}?{urlencode(query)}",
                            timeout=self.timeout + wait)  # the server holds the answer up to `wait`
        if encoding == "base64":
            out["data"] = base64.b64decode(out["data"])
        return out

    def iter_output(self, session_id: str, offset: int = 0, *, wait: float = _MAX_WAIT,
                    encoding: str = "utf-8", max: Optional[int] = None) -> Iterator[dict]:
        """Yield each non-empty output answer from ``offset`` on, until the session has ended."""
        while True:
            out = self.read(session_id, offset, wait=wait, max=max, encoding=encoding)
            offset = out["nextOffset"]
            if out["data"]:
                yield out
            elif out["status"] not in _LIVE:
                return  # ended, and everything it wrote has been seen
            elif not wait:
                time.sleep(0.05)  # plain polling: do not spin

    def wait_for(self, session_id: str, text: Union[str, Pattern[str]], offset: int = 0, *,
                 timeout: float = 30) -> Tuple[Union[str, "re.Match[str]"], int]:
        """Wait until the output from ``offset`` contains ``text`` (a str or compiled regex).

        Returns ``(text, next_offset)`` or ``(match, next_offset)``; ``next_offset`` is the
        byte offset just after the match (``match.string`` is the output read so far).
        A regex is tried on output as it arrives: end it with something unambiguous
        (a newline, the prompt) so that it cannot match a partial line. Raises
        TimeoutError, or LabError ``session_ended`` if the session ends first.
        """
        deadline = time.monotonic() + timeout
        # Raw bytes decoded here, with surrogateescape, so that character positions
        # map back to exact byte offsets even across invalid UTF-8.
        decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        buf, start, searched = "", offset, 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{text!r} did not appear in session {session_id} within {timeout} s")
            out = self.read(session_id, offset, wait=min(_MAX_WAIT, round(remaining, 3)), encoding="base64")
            if out["offset"] != offset:  # output we had not read was dropped: start over there
                decoder.reset()
                buf, start, searched = "", out["offset"], 0
            buf += decoder.decode(out["data"])
            offset = out["nextOffset"]
            found: Union[str, "re.Match[str]", None]
            if isinstance(text, str):
                i = buf.find(text, searched)
                searched = max(0, len(buf) - len(text) + 1)  # a match may straddle two reads
                found, end = (text, i + len(text)) if i >= 0 else (None, 0)
            else:
                match = text.search(buf)
                found, end = match, (match.end() if match else 0)
            if found is not None:
                return found, start + len(buf[:end].encode("utf-8", "surrogateescape"))
            if out["status"] not in _LIVE and not out["data"]:
                raise LabError(None, "session_ended", f"session {session_id} ended (status {out['status']}, "
                               f"exit code {out.get('exitCode')}) before {text!r} appeared")

    # -- lifetime -------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection of this client (it reconnects if used again)."""
        for conn in list(self._conns):
            conn.close()
        self._conns = weakref.WeakSet()
        self._local = threading.local()

    def __enter__(self) -> "LabClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
