"""REST handlers: HTTP in, calls on the session manager, JSON out.

Each route of the contract (``openapi.yaml``) is one small class. Every error,
ours (``LabError``) or Tornado's and Jupyter's (``HTTPError``: authentication,
XSRF, unknown methods), leaves through ``LabHandler.write_error`` as the
contract's ``{"error", "message"}`` body.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import TYPE_CHECKING, Any, cast

from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.iostream import StreamClosedError

from .. import __version__
from ..errors import BadRequest, Forbidden, LabError, PayloadTooLarge
from ..manager import LabSessionManager
from ..session import Session
from . import answers

if TYPE_CHECKING:
    from .app import LabKernelApp

#: Error codes for the statuses Tornado and Jupyter raise themselves.
_STATUS_CODES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    429: "too_many_sessions",
}

_STATUS_MESSAGES = {
    403: "You are not signed in to this Jupyter server, or not allowed to use lab sessions.",
    404: "There is nothing at this address; check the URL.",
    405: "This address does not answer to that HTTP method.",
}

#: A POST body over the limit but under this is read (and discarded) before the 413:
#: answering while the client still sends makes Tornado close the connection, and
#: a client (or a proxy) that is reset mid-send may never see the answer.
_READ_AND_REFUSE = 1024 * 1024


@web.stream_request_body
class LabHandler(ExtensionHandlerMixin, APIHandler):
    """Base of every labkernel handler: the manager, JSON bodies, JSON errors.

    Bodies are streamed (``stream_request_body``) rather than read whole before
    ``prepare``, as Tornado otherwise does, and kept only up to the limit; the rest
    is discarded as it arrives. A body whose Content-Length is over the limit (for
    a POST, over ``_READ_AND_REFUSE`` too) is refused before any of it is read,
    authenticated or not, and the connection closed. (Three 200 MB bodies without a token cost the
    server 480 MiB before.)
    """

    auth_resource = "terminals"
    _body: bytearray | None = None  # None: over the limit

    async def prepare(self) -> None:  # type: ignore[override]
        self._body = bytearray()
        length = self.request.headers.get("Content-Length", "")
        limit = self.extensionapp.max_body_size
        # Only POST routes take a body: any other request's is refused unread.
        refuse_over = max(limit, _READ_AND_REFUSE) if self.request.method == "POST" else limit
        if length.isdigit() and int(length) > refuse_over:
            raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes.")
        await super().prepare()

    def data_received(self, chunk: bytes) -> None:
        if self._body is not None:
            if len(self._body) + len(chunk) > self.extensionapp.max_body_size:
                self._body = None
            else:
                self._body += chunk

    @property
    def manager(self) -> LabSessionManager:
        return self.settings["labkernel_manager"]

    @property
    def extensionapp(self) -> LabKernelApp:
        """The labkernel app, and with it every HTTP limit (``max_body_size``, ``max_wait``…).

        Always the server's labkernel extension (by the handler's ``name``), even for
        handlers bound to another manager, as the benchmark's variants are.
        """
        return cast("LabKernelApp", self.settings[self.name])

    def compute_etag(self) -> None:
        # Answers describe a live session and are never cached: skip hashing them.
        return None

    def write_json(self, model: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(model))

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object ({} when empty), within the size limit."""
        body = self._body
        limit = self.extensionapp.max_body_size
        if body is None:
            raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes.")
        if not body.strip():
            return {}
        try:
            model = json.loads(body)
        except (ValueError, RecursionError):  # deep nesting exhausts the parser's stack
            raise BadRequest("The request body is not valid JSON.") from None
        if not isinstance(model, dict):
            raise BadRequest("The request body must be a JSON object.")
        return model

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """The one place where errors become the contract's JSON body."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, LabError):
            status_code, code, message = exc.status, exc.code, exc.message
            self.set_status(status_code)
        else:
            code = _STATUS_CODES.get(status_code, "server_error")
            message = _STATUS_MESSAGES.get(status_code)
            if isinstance(exc, web.HTTPError) and exc.log_message and status_code != 403:
                message = exc.log_message % exc.args if exc.args else exc.log_message
            message = message or "The server could not answer this request; try again."
        self.clear_header("Content-Type")
        self.finish(json.dumps({"error": code, "message": message}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # A LabError is an answer, not a fault of the server.
        if not isinstance(value, LabError):
            super().log_exception(typ, value, tb)


def _int_field(model: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = model.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}.")
    return value


def _str_field(model: dict[str, Any], name: str, required: bool = False) -> str | None:
    if required and name not in model:
        raise BadRequest(f"{name} is missing.")
    value = model.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string.")
    return value


def _client_id(value: str | None) -> str | None:
    if value is not None and not 1 <= len(value) <= 128:
        raise BadRequest("clientId must be 1 to 128 characters long.")
    return value


def _encode_input(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("The input is not valid Unicode text.") from None


class HealthHandler(LabHandler):
    """``GET /health``: is the lab service up (no authentication)."""

    @allow_unauthenticated  # a load balancer's health check has no credentials
    def get(self) -> None:
        self.write_json({
            "status": "ok",
            "version": __version__,
            "transport": "http-polling",
            "activeSessions": self.manager.active_count,
            "containment": self.manager.containment_mode,
        })


class LabsHandler(LabHandler):
    """``GET /api/labs``: the lab catalog."""

    @web.authenticated
    @authorized("read")
    async def get(self) -> None:
        catalog = await self.manager.refresh_labs()
        self.write_json({"labs": [lab.summary() for lab in catalog.list()],
                         "errors": [problem.model() for problem in catalog.problems()]})


class StartHandler(LabHandler):
    """``POST /api/labs/start``: start a session of a lab."""

    @web.authenticated
    @authorized("write")
    async def post(self) -> None:
        model = self.json_body()
        lab_id = _str_field(model, "labId") or "shell"
        rows = _int_field(model, "rows", 1, 1000)
        cols = _int_field(model, "cols", 1, 1000)
        await self.manager.find_lab(lab_id)
        session = self.manager.start(lab_id, rows, cols)
        self.write_json(session.model(), status=201)


class SessionsHandler(LabHandler):
    """``GET /api/labs/sessions``: every session the server still knows."""

    @web.authenticated
    @authorized("read")
    def get(self) -> None:
        self.write_json({"sessions": [s.model() for s in self.manager.list()]})


class SessionHandler(LabHandler):
    """``GET`` and ``DELETE /api/labs/session/{id}``."""

    @web.authenticated
    @authorized("read")
    def get(self, session_id: str) -> None:
        self.write_json(self.manager.get(session_id).model())

    @web.authenticated
    @authorized("write")
    async def delete(self, session_id: str) -> None:
        session = await self.manager.stop(session_id)
        self.write_json(session.model())


class CheckHandler(LabHandler):
    """``POST /api/labs/session/{id}/check``: run the checks of one step or of all."""

    @web.authenticated
    @authorized("execute")
    async def post(self, session_id: str) -> None:
        model = self.json_body()
        step = _int_field(model, "step", 1, 10**6)
        self.write_json(await self.manager.check(session_id, step))


class StatusHandler(LabHandler):
    """``GET /api/ws/status/{id}``: the live state of a session."""

    @web.authenticated
    @authorized("read")
    def get(self, session_id: str) -> None:
        self.write_json(self.manager.get(session_id).status_model())


class MessageHandler(LabHandler):
    """``POST /api/ws/message``: input, resize or signal for a session."""

    @web.authenticated
    @authorized("execute")
    def post(self) -> None:
        model = self.json_body()
        session = self.manager.get(_str_field(model, "sessionId", required=True) or "")
        seq = _int_field(model, "seq", 0, 2**63 - 1)
        client = _client_id(_str_field(model, "clientId"))
        kind = model.get("type")
        if kind in ("resize", "signal") and ("command" in model or "data" in model):
            # Applying one half of such a message would drop the other silently.
            raise BadRequest(f"A {kind} message carries no command or data; send the input "
                             "in a message of its own.")
        if kind == "resize":
            rows, cols = _int_field(model, "rows", 1, 1000), _int_field(model, "cols", 1, 1000)
            if rows is None or cols is None:
                raise BadRequest("A resize message needs rows and cols, each from 1 to 1000.")
            accepted = session.resize(rows, cols, client=client, seq=seq)
        elif kind == "signal":
            name = _str_field(model, "signal", required=True) or ""
            accepted = session.signal(name, client=client, seq=seq)
        elif kind is not None:
            raise BadRequest(f"Unknown message type {kind!r}; use resize or signal, or send data.")
        elif ("command" in model) == ("data" in model):
            raise BadRequest("A message carries either command (a line to run) or data (keystrokes).")
        elif "command" in model:
            line = _str_field(model, "command", required=True) or ""
            accepted = session.write(_encode_input(line + "\r"), client=client, seq=seq)
        else:
            data = _str_field(model, "data", required=True) or ""
            accepted = session.write(_encode_input(data), client=client, seq=seq)
        self.write_json({"accepted": True, "offset": accepted.offset, "duplicate": accepted.duplicate})


#: Answers smaller than this never wait to batch: typing and prompts go out at once.
_BATCH_MIN = 4096


class OutputHandler(LabHandler):
    """``GET /api/ws/output/{id}``: output from an offset, long-polling when there is none."""

    # A tab left open polls for ever: that must not keep a Binder or JupyterHub
    # server from being culled as idle. Input (MessageHandler) still counts.
    _track_activity = False
    _poll: asyncio.Future[None] | None = None
    _gone = False  # the client hung up, possibly before the poll began

    def _number(self, name: str, default: float, *, integer: bool) -> Any:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            value = -1
        if value < 0 or (not integer and not math.isfinite(value)):
            kind = "a whole number" if integer else "a number of seconds"
            raise BadRequest(f"{name} must be {kind}, 0 or more (got {raw!r}).")
        return value

    @web.authenticated
    @authorized("read")
    async def get(self, session_id: str) -> None:
        session = self.manager.get(session_id)
        offset = self._number("offset", 0, integer=True)
        wait = min(self._number("wait", 0.0, integer=False), self.extensionapp.max_wait)
        max_bytes = self._number("max", 1024 * 1024, integer=True)
        if max_bytes < 1:
            raise BadRequest("max must be 1 or more.")
        encoding = self.get_query_argument("encoding", "utf-8")
        if encoding not in ("utf-8", "base64"):
            raise BadRequest(f"encoding must be utf-8 or base64 (got {encoding!r}).")
        reader = _client_id(self.get_query_argument("clientId", None)) or ""
        utf8 = encoding == "utf-8"
        cap = self.extensionapp.max_answer_size
        max_bytes = min(max_bytes, answers.raw_limit(cap, utf8))

        # The first piece only: a large answer is read and encoded a piece at a time.
        first = min(max_bytes, answers.PIECE)
        chunk = session.read(offset, first, utf8=utf8, reader=reader)
        if not chunk.data and wait > 0 and session.status in ("starting", "running"):
            # Nothing complete past offset yet: wait for bytes past what exists now.
            stream = getattr(self.request.connection, "stream", None)
            if self._gone or (stream is not None and stream.closed()):
                # The client hung up before the poll began (with streamed bodies its
                # close can come while prepare() runs, when no one hears it): no one
                # would cancel this poll.
                return
            self._poll = session.output.wait(session.output.end, wait)
            try:
                await self._poll
            except asyncio.CancelledError:
                return  # the client went away; there is no one to answer
            finally:
                self._poll = None
            chunk = session.read(offset, first, utf8=utf8, reader=reader)
        elif self._streaming(session, chunk, max_bytes):
            # The program is writing fast and this reader has caught up with it:
            # let the answer gather a little more. Fewer, larger answers carry a
            # flood at a fraction of the per-request cost.
            await asyncio.sleep(self.extensionapp.batch_delay)
            chunk = session.read(offset, first, utf8=utf8, reader=reader)
        # The pieces after the first read the log itself: flow control counts this
        # reader at the offset it asked for (the answer may yet be lost), not beyond.
        answer = answers.Answer(lambda at, n: session.output.read(at, n, utf8=utf8), chunk,
                                min(chunk.offset + max_bytes, session.output.end), cap, utf8=utf8)
        while answer.step():
            await asyncio.sleep(0)  # a piece encoded: let the other sessions run
            if self._gone:
                return  # the client went away meanwhile
        head = json.dumps({"sessionId": session.id, "offset": answer.offset,
                           "truncated": answer.truncated})
        tail = json.dumps({"nextOffset": answer.next_offset, "status": session.status,
                           "exitCode": session.exit_code})
        head_bytes = (head[:-1] + ', "data": "').encode()
        tail_bytes = ('", ' + tail[1:]).encode()
        if len(answer.parts) <= 1:
            self.finish(head_bytes + b"".join(answer.parts) + tail_bytes)
            return
        # Sent as the pieces are, never joined (see ``answers``), with its length.
        self.set_header("Content-Type", "application/json")
        self.set_header("Content-Length", str(len(head_bytes) + answer.size + len(tail_bytes)))
        self.write(head_bytes)
        try:
            for part in answer.parts:
                self.write(part)
                await self.flush()
        except StreamClosedError:
            return  # the client went away; there is no one to answer
        self.finish(tail_bytes)

    def _streaming(self, session: Session, chunk: Any, max_bytes: int) -> bool:
        batch_delay = self.extensionapp.batch_delay
        waiting = session.output.end - chunk.offset
        return (
            batch_delay > 0
            and _BATCH_MIN <= waiting < max_bytes // 2
            and time.monotonic() - session.last_output < batch_delay
            and session.running
        )

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._gone = True
        if self._poll is not None:
            self._poll.cancel()


class NotFoundHandler(LabHandler):
    """Anything else under our prefixes: a JSON 404, never Jupyter's HTML page."""

    def prepare(self) -> None:  # type: ignore[override]
        raise web.HTTPError(404)


class DisabledHandler(LabHandler):
    """Every lab route of a server whose terminals are disabled: labs are too."""

    def prepare(self) -> None:  # type: ignore[override]
        raise Forbidden("Lab sessions are disabled on this server, as its terminals are.")


_ID = r"([^/]*)"

default_handlers = [
    (r"/health", HealthHandler),
    (r"/api/labs", LabsHandler),
    (r"/api/labs/start", StartHandler),
    (r"/api/labs/sessions", SessionsHandler),
    (rf"/api/labs/session/{_ID}", SessionHandler),
    (rf"/api/labs/session/{_ID}/check", CheckHandler),
    (rf"/api/ws/status/{_ID}", StatusHandler),
    (r"/api/ws/message", MessageHandler),
    (rf"/api/ws/output/{_ID}", OutputHandler),
    (r"/api/(?:labs|ws)/.*", NotFoundHandler),
]

#: Where terminals are disabled: the service answers its health check, nothing else.
disabled_handlers = [
    (r"/health", HealthHandler),
    (r"/api/(?:labs|ws)(?:/.*)?", DisabledHandler),
]
