"""The errors a lab session can raise, each carrying the contract's error code.

The manager raises these; the handlers turn them into the JSON error body in one
place (``handlers.LabHandler.write_error``). Nothing here knows about HTTP beyond
the status number that goes with each code.
"""

from __future__ import annotations


class LabError(Exception):
    """Base class: an error a client can act on.

    ``code`` is the ``error`` field of the JSON body, ``status`` the HTTP status the
    handlers answer with, and the message is one sentence for a learner.
    """

    code = "bad_request"
    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(LabError):
    code, status = "bad_request", 400


class Forbidden(LabError):
    code, status = "forbidden", 403


class LabNotFound(LabError):
    code, status = "lab_not_found", 404


class SessionNotFound(LabError):
    code, status = "session_not_found", 404


class SessionEnded(LabError):
    code, status = "session_ended", 409


class SignalRefused(LabError):
    """The kernel refused the signal: the foreground program runs as another user."""

    code, status = "signal_refused", 409


class PayloadTooLarge(LabError):
    code, status = "payload_too_large", 413


class TooManySessions(LabError):
    code, status = "too_many_sessions", 429


class StreamNotFound(LabError):
    """An acknowledgement for an output stream that has closed (or never was)."""

    code, status = "stream_not_found", 404


class TooManyStreams(LabError):
    """The server holds as many output streams open as it allows (``max_streams``)."""

    code, status = "too_many_streams", 429
