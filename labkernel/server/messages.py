"""A message of ``POST /api/ws/message``, checked and applied to its session.

One body is one of: ``command`` (a line and Enter), ``data`` (keystrokes as typed),
``type: resize`` or ``type: signal``; any may carry ``clientId`` and ``seq``, by
which the session acknowledges a retried message again without applying it twice.
"""

from __future__ import annotations

from typing import Any

from ..errors import BadRequest
from ..labs.labsession import LabSession
from ..session import Accepted
from .fields import client_id, encode_input, int_field, str_field


def apply(session: LabSession, model: dict[str, Any]) -> Accepted:
    """Apply the message ``model`` to ``session``; raises a LabError (bad request, ended
    session, refused signal)."""
    seq = int_field(model, "seq", 0, 2**63 - 1)
    client = client_id(str_field(model, "clientId"))
    kind = model.get("type")
    if kind in ("resize", "signal") and ("command" in model or "data" in model):
        # Applying one half of such a message would drop the other silently.
        raise BadRequest(f"A {kind} message carries no command or data; send the input "
                         "in a message of its own.")
    if kind == "resize":
        rows, cols = int_field(model, "rows", 1, 1000), int_field(model, "cols", 1, 1000)
        if rows is None or cols is None:
            raise BadRequest("A resize message needs rows and cols, each from 1 to 1000.")
        return session.resize(rows, cols, client=client, seq=seq)
    if kind == "signal":
        name = str_field(model, "signal", required=True) or ""
        return session.signal(name, client=client, seq=seq)
    if kind is not None:
        raise BadRequest(f"Unknown message type {kind!r}; use resize or signal, or send data.")
    if ("command" in model) == ("data" in model):
        raise BadRequest("A message carries either command (a line to run) or data (keystrokes).")
    if "command" in model:
        line = str_field(model, "command", required=True) or ""
        return session.write(encode_input(line + "\r"), client=client, seq=seq)
    data = str_field(model, "data", required=True) or ""
    return session.write(encode_input(data), client=client, seq=seq)
