"""Request fields checked: a body's or a query's values, or the contract's 400.

Shared by the handlers (bodies) and the output poll (its query), so that one field
is refused with one message wherever it comes.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import BadRequest


def int_field(model: dict[str, Any], name: str, low: int, high: int) -> int | None:
    """A body's whole number from ``low`` to ``high``, or None when it is absent."""
    value = model.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}.")
    return value


def str_field(model: dict[str, Any], name: str, required: bool = False) -> str | None:
    """A body's string; None when it is absent and not ``required``."""
    if required and name not in model:
        raise BadRequest(f"{name} is missing.")
    value = model.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string.")
    return value


def client_id(value: str | None) -> str | None:
    """A ``clientId`` (of a message or a reader), 1 to 128 characters, or None."""
    if value is not None and not 1 <= len(value) <= 128:
        raise BadRequest("clientId must be 1 to 128 characters long.")
    return value


def encode_input(text: str) -> bytes:
    """Input text as the bytes typed into the terminal."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("The input is not valid Unicode text.") from None


def query_number(name: str, raw: str | None, default: float, *, integer: bool) -> Any:
    """A query argument that is a number, 0 or more: ``default`` when it is absent."""
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
