"""REST handlers: HTTP in, calls on the session manager, JSON out.

Each route of the contract (``openapi.yaml``) is one small class. Every error,
ours (``LabError``) or Tornado's and Jupyter's (``HTTPError``: authentication,
XSRF, unknown methods), leaves through ``LabHandler.write_error`` as the
contract's ``{"error", "message"}`` body.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, cast

from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from .. import __version__
from ..errors import BadRequest, Forbidden, LabError, PayloadTooLarge
from ..labs import hosting
from ..manager import LabSessionManager
from . import longpoll, messages, stream
from .fields import int_field, str_field

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

    @property
    def _track_activity(self) -> bool:  # type: ignore[override]
        # Reading is not activity: a tab left open (its output polls, a panel's
        # refresh), a probe of /health or a script that watches a session must not
        # keep a Binder or JupyterHub server from being culled as idle. Typing,
        # starting, stopping and checking are (every POST and DELETE).
        return self.request.method not in ("GET", "HEAD")

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
        message: str | None
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
            "sandbox": self.manager.sandbox_status(),
            "limits": self.manager.limits(),
        })


class LabsHandler(LabHandler):
    """``GET /api/labs``: the lab catalog."""

    @web.authenticated
    @authorized("read")
    async def get(self) -> None:
        catalog = await self.manager.refresh_labs()
        # Port links for this server's address, and the needs it does not meet (cached).
        here = hosting.here(self.base_url, self.manager.containment_mode)
        self.finish(await catalog.answer(here))  # made off the loop, once per snapshot


class StartHandler(LabHandler):
    """``POST /api/labs/start``: start a session of a lab."""

    @web.authenticated
    @authorized("write")
    async def post(self) -> None:
        model = self.json_body()
        lab_id = str_field(model, "labId") or "shell"
        rows = int_field(model, "rows", 1, 1000)
        cols = int_field(model, "cols", 1, 1000)
        session = await self.manager.start(lab_id, rows, cols)
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
        step = int_field(model, "step", 1, 10**6)
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
    async def post(self) -> None:
        model = self.json_body()
        session = self.manager.get(str_field(model, "sessionId", required=True) or "")
        accepted = messages.apply(session, model)
        bound = self.extensionapp.echo_wait
        if bound > 0 and not accepted.duplicate and ("data" in model or "command" in model) and session.running:
            # Answer once the input's echo is out (or the bound passes): the page then
            # gets the echo first, and handles it first (a later answer is not waited on).
            await session.output.wait(accepted.offset, bound)
            for _ in range(3):
                # The readers woken by that output (a stream: two hops; a long poll: one)
                # send it before this answer goes.
                await asyncio.sleep(0)
        self.write_json({"accepted": True, "offset": accepted.offset, "duplicate": accepted.duplicate})


class OutputHandler(LabHandler):
    """``GET /api/ws/output/{id}``: output from an offset, long-polling when there is none.

    What the request does, from its query to its last byte, is ``longpoll.OutputPoll``.
    """

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        # Made with the handler: the client may hang up before get() begins.
        self._poll = longpoll.OutputPoll()

    @web.authenticated
    @authorized("read")
    async def get(self, session_id: str) -> None:
        await self._poll.run(self, self.manager.get(session_id), self.extensionapp)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._poll.hang_up()


class StreamHandler(LabHandler):
    """``GET /api/ws/stream``: several sessions' output as Server-Sent Events.

    What the request does is ``stream.StreamRequest``; its acknowledgements come
    through ``StreamAckHandler``.
    """

    _track_activity = False  # reading output is not activity (see OutputHandler)

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self._stream = stream.StreamRequest()  # the client may hang up before get() begins

    @property
    def streams(self) -> stream.StreamRegistry:
        return self.settings["labkernel_streams"]

    @web.authenticated
    @authorized("read")
    async def get(self) -> None:
        await self._stream.run(self, self.manager, self.streams, self.extensionapp)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._stream.hang_up()


class StreamAckHandler(LabHandler):
    """``POST /api/ws/stream/{streamId}/ack``: what the page has written, ``{"written": {clientId: offset}}``."""

    _track_activity = False

    @web.authenticated
    @authorized("read")
    def post(self, stream_id: str) -> None:
        model = self.json_body()
        self.settings["labkernel_streams"].get(stream_id).wrote(model.get("written"))
        self.write_json({"streamId": stream_id, "accepted": True})


class NotFoundHandler(LabHandler):
    """Anything else under our prefixes: a JSON 404, never Jupyter's HTML page."""

    def prepare(self) -> None:  # type: ignore[override]
        raise web.HTTPError(404)


class DisabledHandler(LabHandler):
    """Every lab route of a server whose terminals are disabled: labs are too."""

    def prepare(self) -> None:  # type: ignore[override]
        raise Forbidden("Lab sessions are disabled on this server, as its terminals are.")


# Built on LabHandler above (hence imported here, not at the top).
from .labfiles import LabFileHandler  # noqa: E402

_ID = r"([^/]*)"

default_handlers = [
    (r"/health", HealthHandler),
    (r"/api/labs", LabsHandler),
    (r"/api/labs/start", StartHandler),
    (r"/api/labs/sessions", SessionsHandler),
    (rf"/api/labs/session/{_ID}", SessionHandler),
    (rf"/api/labs/session/{_ID}/check", CheckHandler),
    (rf"/api/labs/{_ID}/files/(.+)", LabFileHandler),
    (rf"/api/ws/status/{_ID}", StatusHandler),
    (r"/api/ws/message", MessageHandler),
    (rf"/api/ws/output/{_ID}", OutputHandler),
    (r"/api/ws/stream", StreamHandler),
    (rf"/api/ws/stream/{_ID}/ack", StreamAckHandler),
    (r"/api/(?:labs|ws)/.*", NotFoundHandler),
]

#: Where terminals are disabled: the service answers its health check, nothing else.
disabled_handlers = [
    (r"/health", HealthHandler),
    (r"/api/(?:labs|ws)(?:/.*)?", DisabledHandler),
]
