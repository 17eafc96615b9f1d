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
from typing import Any

from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.iostream import StreamClosedError

from . import __version__
from .answers import PIECE, answer_pieces
from .errors import BadRequest, Forbidden, LabError, PayloadTooLarge
from .manager import LabSessionManager
from .sessions import Session

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


class LabHandler(ExtensionHandlerMixin, APIHandler):
    """Base of every labkernel handler: the manager, JSON bodies, JSON errors."""

    auth_resource = "terminals"

    @property
    def manager(self) -> LabSessionManager:
        return self.settings["labkernel_manager"]

    def compute_etag(self) -> None:
        # Answers describe a live session and are never cached: skip hashing them.
        return None

    def write_json(self, model: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(model))

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object ({} when empty), within the size limit."""
        body = self.request.body
        limit = self.extensionapp.max_body_size
        if len(body) > limit:
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
        })


class LabsHandler(LabHandler):
    """``GET /api/labs``: the lab catalog."""

    @web.authenticated
    @authorized("read")
    def get(self) -> None:
        self.write_json({"labs": [lab.summary() for lab in self.manager.labs.list()]})


class StartHandler(LabHandler):
    """``POST /api/labs/start``: start a session of a lab."""

    @web.authenticated
    @authorized("write")
    def post(self) -> None:
        model = self.json_body()
        lab_id = _str_field(model, "labId") or "shell"
        rows = _int_field(model, "rows", 1, 1000)
        cols = _int_field(model, "cols", 1, 1000)
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

    _poll: asyncio.Future[None] | None = None

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
        wait = self.manager.clamp_wait(self._number("wait", 0.0, integer=False))
        max_bytes = self._number("max", 1024 * 1024, integer=True)
        if max_bytes < 1:
            raise BadRequest("max must be 1 or more.")
        max_bytes = min(max_bytes, self.manager.max_answer)
        encoding = self.get_query_argument("encoding", "utf-8")
        if encoding not in ("utf-8", "base64"):
            raise BadRequest(f"encoding must be utf-8 or base64 (got {encoding!r}).")
        reader = _client_id(self.get_query_argument("clientId", None)) or ""
        utf8 = encoding == "utf-8"

        chunk = session.read(offset, max_bytes, utf8=utf8, reader=reader)
        if not chunk.data and wait > 0 and session.running:
            # Nothing complete past offset yet: wait for bytes past what exists now.
            self._poll = session.output.wait(session.output.end, wait)
            try:
                await self._poll
            except asyncio.CancelledError:
                return  # the client went away; there is no one to answer
            finally:
                self._poll = None
            chunk = session.read(offset, max_bytes, utf8=utf8, reader=reader)
        elif self._streaming(session, chunk, max_bytes):
            # The program is writing fast and this reader has caught up with it:
            # let the answer gather a little more. Fewer, larger answers carry a
            # flood at a fraction of the per-request cost.
            await asyncio.sleep(self.manager.batch_delay)
            chunk = session.read(offset, max_bytes, utf8=utf8, reader=reader)
        pieces = answer_pieces({
            "sessionId": session.id,
            "offset": chunk.offset,
            "nextOffset": chunk.next_offset,
            "truncated": chunk.truncated,
            "status": session.status,
            "exitCode": session.exit_code,
        }, chunk.data, utf8=utf8)
        if len(chunk.data) <= PIECE:
            self.finish("".join(pieces))
            return
        # A large answer: send it piece by piece and let the loop serve the other
        # sessions in between (see ``answers``).
        self.set_header("Content-Type", "application/json")
        try:
            for piece in pieces:
                self.write(piece)
                await self.flush()
                await asyncio.sleep(0)
        except StreamClosedError:
            return  # the client went away
        self.finish()

    def _streaming(self, session: Session, chunk: Any, max_bytes: int) -> bool:
        return (
            self.manager.batch_delay > 0
            and _BATCH_MIN <= len(chunk.data) < max_bytes // 2
            and chunk.next_offset >= session.output.end - 4
            and time.monotonic() - session.last_output < self.manager.batch_delay
            and session.running
        )

    def on_connection_close(self) -> None:
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
