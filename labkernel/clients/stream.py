"""``MarkedStream``: a session's output stream as ``Lab`` reads it, with its markers.

``Lab`` reads the stream from its own offset, under its own reader name (the
server's flow control counts it), and scans every byte for the markers of its
nonce (``screen`` says what they are): from them it knows whether the shell is at
its prompt (``state``) and where each command's output starts and ends
(``wait_marker``, ``output``). The bytes read are kept from the oldest offset still
needed: ``search`` (``expect``) looks after a cursor, and a ``run`` in progress
sets ``pin`` to the offset its command was typed at. Older output is dropped, and
so is unread output beyond the last 4 MiB (``_KEEP``), unless pinned.

The stream does no locking: ``Lab`` holds its lock around every use.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Dict, Optional, Pattern, Tuple

from .results import LabEnded
from .screen import OSC, Marker, clean, clean_spans, cut_escape, raw_end, tail

_LIVE = ("starting", "running")
_MAX_WAIT = 25.0         # the server's default long-poll cap; asking for more gains nothing
_RECENT = 4096           # bytes of the stream kept to measure the prompt before the setup line
_KEEP = 4 << 20          # unread output kept for expect(); older output is dropped
# A full-screen program taking the terminal and giving it back: the alternate screen
# (smcup/rmcup of xterm's terminfo, and their older forms) and application cursor
# keys (smkx/rmkx), which less, man, vim and watch switch on, and top (which keeps
# the normal screen) too; bash's readline does not.
_FULL_SCREEN = re.compile(rb"\x1b\[\?(?:1049|1047|47|1)([hl])")


class MarkedStream:
    """The output of one session as read so far, and the markers of one nonce in it.

    ``read(offset, wait)`` is the server's read of the session (base64 answer, long
    polling up to ``wait`` seconds); ``ended(more)`` is the error to raise when the
    session has ended, ``more`` added to its message. ``status`` is the session's
    as last known. A new session (``attach_at`` None) is read from its
    start; a running one is read from a little before ``attach_at``, its output
    offset then (enough to see its prompt), and ``search`` looks after that offset.

    What the stream has learnt, to read: ``state`` (from our markers: ``unknown``,
    ``idle``, ``running`` or ``more``), ``installed`` (a marker of ours has been
    seen), ``last_status`` (the exit status in the last end marker),
    ``full_screen_since`` (``time.monotonic()`` when a full-screen program took the
    terminal: its alternate screen or application keys; None once given back), ``recent`` (the stream's last 4 KiB),
    ``live``.
    ``pin`` is for the caller to set: output from that offset on is never dropped.
    """

    def __init__(self, nonce: str, read: Callable[[int, float], Dict[str, Any]],
                 ended: Callable[[str], LabEnded], *, status: str, attach_at: Optional[int] = None):
        self._read = read
        self._ended = ended
        self._marker = re.compile(rb"\x1b\]" + OSC + b";" + nonce.encode() + rb";(s|c|\d{1,3})\x07")
        # The output stream as read so far: bytes from _base on, read up to _pos;
        # search() looks from _cursor on. A new session is read from its start; an
        # attached one from a little before its end (enough to see its prompt).
        self._pos = self._base = 0 if attach_at is None else max(0, attach_at - _RECENT)
        self._cursor = attach_at or 0
        self._buf = bytearray()
        self.pin: Optional[int] = None      # output a run in progress still needs
        self._tail = b""                    # the stream's last bytes: a marker cut in two
        self.recent = b""                   # the stream's last _RECENT bytes
        self.state = "unknown"              # from our markers: idle, running, more
        self.installed = False              # a marker of ours has been seen
        self.last_status: Optional[int] = None  # the exit status of the last end marker
        self.full_screen_since: Optional[float] = None  # when a full-screen program took the terminal
        self._status = status
        self._prompt_from: Optional[int] = None  # an end marker found: its prompt is coming

    @property
    def live(self) -> bool:
        """Whether the session was starting or running at the last read."""
        return self._status in _LIVE

    # -- reading ------------------------------------------------------------------------

    def _fill(self, wait: float) -> Dict[str, Any]:
        """Read once from ``_pos`` (long polling up to ``wait``), scanning for our markers."""
        out = self._read(self._pos, wait)
        data: bytes = out["data"]
        if out["offset"] != self._pos:  # what we had not read is gone: go on from there
            self._buf = bytearray()
            self._base = self._cursor = out["offset"]
            self._tail = b""
            if self.pin is not None:
                self.pin = out["offset"]
        chunk = self._tail + data
        for m in self._marker.finditer(chunk):
            if m.end() > len(self._tail):
                self.state = {b"s": "running", b"c": "more"}.get(m.group(1), "idle")
                self.installed = True
                if self.state == "idle":
                    self.last_status = int(m.group(1))
        for m in _FULL_SCREEN.finditer(chunk):
            if m.end() > len(self._tail):
                self.full_screen_since = time.monotonic() if m.group(1) == b"h" else None
        self._tail = chunk[-64:]
        self.recent = (self.recent + data)[-_RECENT:]
        self._buf += data
        self._pos = out["nextOffset"]
        self._status = out["status"]
        if len(self._buf) > _KEEP:
            self._drop(self._base + len(self._buf) - _KEEP)
        return out

    def fill_until(self, deadline: Optional[float]) -> Optional[Dict[str, Any]]:
        """Read once, long polling up to the server's cap or to ``deadline``; None once that has passed."""
        remaining = _MAX_WAIT if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            return None
        return self._fill(min(_MAX_WAIT, round(remaining, 3)))

    def catch_up(self) -> None:
        """Read what the session has written so far, without waiting."""
        for _ in range(64):  # a flood is not followed to its end: its state is known by then
            if not self._fill(0)["data"]:
                return

    def wait_started(self, deadline: Optional[float]) -> None:
        """Read until the session has written something (its first prompt), or the deadline."""
        while self._pos == 0 and self.live:
            if self.fill_until(deadline) is None:
                return

    def wait_idle(self, deadline: Optional[float]) -> None:
        """Read while a program runs in the terminal (an ``s`` marker, no end yet), up to the deadline."""
        while self.state == "running" and self.live:
            if self.fill_until(deadline) is None:
                return

    def wait_prompt(self, limit: float = 1.0) -> None:
        """After an end marker, read until the shell's line editor has the terminal again,
        for at most ``limit`` seconds.

        The end marker comes from ``PROMPT_COMMAND``, before readline has set the
        terminal up: keys typed in that moment are echoed by the terminal itself
        (Ctrl-A Ctrl-K as ``^A^K`` before the command, about 1 run in 60 here).
        Readline switches bracketed paste on (``ESC[?2004h``) once the terminal is
        its own; where bracketed paste is off, the wait ends at ``limit`` or when the
        output has been still for a moment after the prompt.
        """
        after, self._prompt_from = self._prompt_from, None
        if after is None:
            return
        end = time.monotonic() + limit
        while self.live:
            if b"\x1b[?2004h" in self._buf[max(0, after - self._base):]:
                return
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            if not self._fill(min(remaining, 0.1))["data"] and self._base + len(self._buf) > after:
                return  # still, with a prompt printed after the marker: no bracketed paste here

    def quiet(self, seconds: float, deadline: Optional[float]) -> None:
        """Read until the output has been still for ``seconds`` (or the deadline)."""
        while self.live and (deadline is None or time.monotonic() < deadline):
            if not self._fill(seconds)["data"]:
                return

    # -- what has been read -------------------------------------------------------------

    def _drop(self, upto: int) -> None:
        """Forget the output before offset ``upto`` (never what a running ``run`` needs)."""
        if self.pin is not None:
            upto = min(upto, self.pin)
        if upto > self._base:
            del self._buf[:upto - self._base]
            self._base = upto
            self._cursor = max(self._cursor, upto)

    def consume(self, upto: int) -> None:
        """Everything before ``upto`` has been seen: ``expect`` looks after it."""
        self._cursor = max(self._cursor, upto)
        self._drop(self._cursor)

    def text(self, start: int, end: Optional[int] = None) -> str:
        """The output from offset ``start`` to ``end`` (or all read), as text (not cleaned)."""
        end = self._base + len(self._buf) if end is None else end
        return self._buf[max(0, start - self._base):end - self._base].decode("utf-8", "replace")

    def _find(self, start: int, kinds: str) -> Optional[Marker]:
        """The first marker of ``kinds`` (of ``s``, ``c``, ``e``) read at or after offset ``start``."""
        for m in self._marker.finditer(self._buf, max(0, start - self._base)):
            kind = m.group(1).decode()
            kind = kind if kind in ("s", "c") else "e"
            if kind in kinds:
                status = int(m.group(1)) if kind == "e" else None
                return Marker(kind, status, self._base + m.start(), self._base + m.end())
        return None

    def wait_marker(self, start: int, kinds: str, deadline: Optional[float]) -> Optional[Marker]:
        """The first marker of ``kinds`` at or after offset ``start``; None at the deadline.

        Raises ``LabEnded`` when the session ends first.
        """
        while True:
            found = self._find(start, kinds)
            if found is not None:
                if found.kind == "e":
                    self._prompt_from = found.end
                return found
            out = self.fill_until(deadline)
            if out is None:
                return None
            if not out["data"] and not self.live:
                raise self._ended(f"\nIt showed: {tail(clean(self.text(start)))}"
                                  if clean(self.text(start)).strip() else "")

    def output(self, start: int, end: Marker, lines: int) -> str:
        """The output of the command typed from ``start`` whose end marker is ``end``, cleaned.

        ``lines``: how many lines were typed, whose echo is left out when nothing ran.
        """
        began = self._find(start, "s")
        if began is not None and began.start < end.start:
            return clean(self.text(began.end, end.start))
        # Nothing ran (a syntax error, a cancelled line): what followed the echo.
        text = clean(self.text(start, end.start))
        return "\n".join(text.split("\n")[lines:]) if text.count("\n") >= lines else ""

    def printed(self, start: int) -> str:
        """What the command typed from ``start`` has printed so far, cleaned.

        From its ``s`` marker on; before it has one (it is still being typed, or
        nothing ran), from its echo on.
        """
        began = self._find(start, "s")
        return clean(self.text(began.end if began else start))

    def full_screen(self, start: int) -> bool:
        """Whether the output from offset ``start`` on has a full-screen program (a
        pager, an editor, ``watch``, ``top``) taking the terminal and not giving it back."""
        last = None
        for last in _FULL_SCREEN.finditer(self._buf, max(0, start - self._base)):
            pass
        return last is not None and last.group(1) == b"h"

    def search(self, regex: Pattern[str]) -> Tuple[Optional["re.Match[str]"], str]:
        """``regex`` searched in the output after the cursor, cleaned as ``run``'s is.

        Returns the match (None: not there yet) and the text searched; a match
        moves the cursor past it. While the session lives, an escape sequence cut
        off at the end is left out: its rest is still to come.
        """
        raw = self._buf[self._cursor - self._base:].decode("utf-8", "surrogateescape")
        text, clean_starts, raw_starts = clean_spans(cut_escape(raw) if self.live else raw)
        match = regex.search(text)
        if match is not None:
            end = raw_end(clean_starts, raw_starts, match.end())
            self.consume(self._cursor + len(raw[:end].encode("utf-8", "surrogateescape")))
        return match, text
