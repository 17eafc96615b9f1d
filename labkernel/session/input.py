"""What clients send a session: messages applied once each, held while it starts,
and the bytes typed for its program.

A client numbers its messages (``seq``, per ``clientId``) and sends one again, with
the same number, when it cannot know whether it arrived (an answer lost, a retry
after a timeout: the browser transport keeps one POST in flight and retries it
with the same ``seq``). ``Inbox`` applies each (client, seq) once: a number at or
below the last one taken from that client is only acknowledged. It remembers the
``max_clients`` clients seen most recently (a retry counts as being seen; the
least recently seen is forgotten first), so a client that sends ever new ids
cannot grow it. A message without a ``seq`` is always applied.

While a session is starting (a lab's setup runs, there is no terminal yet) its
messages are held, as keys typed before a program reads them wait in a terminal,
and applied in order once the program runs. Held or applied at once, a message is
numbered and de-duplicated the same way, so a retry of a held message is not held
twice and a message is never applied twice across the start. ``Inbox`` is pure (no
I/O, no clock) and property-tested against a model (``tests/test_input.py``).

``InputQueue`` holds the bytes written for the program that its terminal has not
taken yet: a program that does not read its input fills the terminal's buffer, the
rest waits here up to ``input_limit`` and goes when the PTY signals room (the
reader's edge poller reports it). More is refused, not buffered without bound.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Callable, NamedTuple

from ..errors import PayloadTooLarge

#: The client of messages that carry no ``clientId``.
DEFAULT_CLIENT = ""
#: The most messages held for a session that is still starting.
MAX_HELD = 1000

Apply = Callable[[], None]


class Accepted(NamedTuple):
    """The answer to a message: the output offset when it took effect."""

    offset: int
    duplicate: bool


class Inbox:
    """De-duplication by (client, seq), and the messages held while a session starts."""

    def __init__(self, max_clients: int, max_held: int = MAX_HELD):
        self.max_clients = max_clients
        self.max_held = max_held
        self._last: OrderedDict[str, int] = OrderedDict()  # least recently seen first
        self._held: list[Apply] = []

    def deliver(self, client: str | None, seq: int | None, apply: Apply, *, hold: bool) -> bool:
        """Take a message: ``apply()`` it now, or with ``hold`` keep it for ``release``.

        False for a message taken before (same client, ``seq`` not above its last):
        nothing is done, it is only acknowledged. A message that ``apply`` refuses
        (raises), or that finds the held messages full (``PayloadTooLarge``), is
        not taken: its retry is tried again.
        """
        key = DEFAULT_CLIENT if client is None else client
        if seq is not None and self._last.get(key, -1) >= seq:
            self._last.move_to_end(key)
            return False
        if hold:
            if len(self._held) >= self.max_held:
                raise PayloadTooLarge("This session is still starting and holds too much input already.")
            self._held.append(apply)
        else:
            apply()
        if seq is not None:
            self._last[key] = seq
            self._last.move_to_end(key)
            if len(self._last) > self.max_clients:
                self._last.popitem(last=False)
        return True

    def release(self) -> list[Apply]:
        """The held messages, in the order they came; none are held any more."""
        held, self._held = self._held, []
        return held


class InputQueue:
    """Bytes for the program that its terminal has not taken yet (see the module)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.pending = bytearray()
        self._fd = -1

    def attach(self, fd: int) -> None:
        """Write to the PTY ``fd`` (non-blocking) from now on."""
        self._fd = fd

    def write(self, data: bytes) -> None:
        """Queue ``data`` and write what the terminal takes now; raises
        ``PayloadTooLarge`` when the queue would exceed its limit."""
        if len(self.pending) + len(data) > self.limit:
            raise PayloadTooLarge("The program is not reading its input and the input queue is full.")
        self.pending += data
        self.flush()

    def flush(self) -> None:
        """Write queued input; what does not fit goes when the PTY signals room."""
        try:
            written = os.write(self._fd, self.pending)
        except BlockingIOError:
            return
        except OSError:
            written = len(self.pending)  # the terminal is gone; so is its input
        del self.pending[:written]

    def close(self) -> None:
        """The terminal is gone: drop what it never took."""
        self.pending.clear()
        self._fd = -1
