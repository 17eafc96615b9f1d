"""The text of a lab terminal as ``Lab.run`` reads it: ANSI codes cleaned, and its markers.

How ``run`` finds the end of a command, and its exit status
-----------------------------------------------------------
As bash_kernel does: markers a command's own output cannot fake. The first ``run``
of a ``Lab`` types one setup line into the terminal (bash 4.4 or later) that installs
three markers, OSC sequences ``ESC ] 7701 ; <nonce> ; <what> BEL``:

- ``<$?>`` from a function put first in ``PROMPT_COMMAND``: a command has ended,
  with this exit status (the function returns that status again, so the learner's
  own ``PROMPT_COMMAND`` and ``$?`` are unchanged);
- ``s`` appended to ``PS0``, which bash prints once it has read a command and before
  it runs it: the command's output starts here;
- ``c`` appended to ``PS2`` (inside ``\\[ \\]``): bash wants more lines (an open
  quote, ``for``, ``if``, a here-document).

A command's output is exactly what lies between its ``s`` and its end marker: no
echo of the typed line to strip, whatever readline draws for long or wrapped lines.
A line bash cannot parse runs nothing and has no ``s``; its output (the syntax error)
is what follows the line's echo.

*Unfakeable*: the nonce is 64 random bits made per ``Lab``, and a marker counts only
with its ESC and BEL bytes. The echo of the setup line shows the nonce, but after
the text ``\\e]7701;`` (a backslash and an ``e``), never after an ESC byte, and no
command's output carries it unless the command reads the shell's variables on
purpose. Markers from another ``Lab`` (another nonce) are ignored.

*Invisible*: xterm.js, like xterm, ignores OSC numbers it does not know, so the
markers show nothing; every command the learner or ``run`` types appears exactly as
typed. The one visible trace is the setup line, once per ``Lab``: it deletes itself
from the shell's history (``history -d -1``, only when the last entry is itself) and
erases its own echo from the screen (cursor up over the rows it took, sized from the
prompt's width seen just before and the terminal's columns, then clear to the end),
so the terminal looks as it did, with a fresh prompt.

Why not the other ways: appending ``; printf …$?`` to each typed line shows in the
learner's terminal and history on every command, and breaks commands: after a
``# comment`` it is swallowed, after a trailing ``&`` it is a syntax error, after a
here-document's first line it becomes part of the document. Changing ``PS1``
(bash_kernel's way, where nobody watches the terminal) changes the prompt the
learner sees.

How lines are typed
-------------------
One line at a time, as keys: Ctrl-A Ctrl-K first (a line the learner half typed is
cleared into readline's kill ring, where Ctrl-Y brings it back, rather than run with
our text glued to it), control characters quoted with Ctrl-V (a Tab is a Tab, not a
completion), then Enter. After a ``c`` marker the next line follows, so ``for`` loops
and here-documents over several lines work as when typed by hand, and each complete
command has its own output and status (``%%lab`` stops at the first that fails).

Every marker in the output stream is read, also those of commands the learner
types: after an ``s`` with no end yet, a program is running in the terminal, and
``run`` waits for it to end, as a person at the keyboard would, never typing into
it; still running at ``run``'s deadline, it raises ``LabBusy``. After ``send`` and
``check`` (a passed step may have the server type the next step's foreground
script), ``run`` first waits for 0.2 s of quiet, so that keys typed a moment ago
have shown their ``s`` before it decides the terminal is free. What ``run`` cannot
tell apart is a learner who presses Enter in the same instant as it types.
"""

from __future__ import annotations

import bisect
import math
import re
import unicodedata
from typing import List, Optional, Tuple

OSC = b"7701"

# ANSI escape sequences: CSI, OSC (BEL or ST), DCS/SOS/PM/APC, and two- or three-byte ones.
ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)"
                   r"|[PX^_][^\x1b]*\x1b\\|[ -/]*[0-~])")
# Output as tokens: escape sequences, runs of \r, NUL or bell, other text, a stray ESC.
_TOKENS = re.compile(ANSI.pattern + r"|(\r+)|([\x00\x07])|[^\x1b\r\x00\x07]+|\x1b")
# What follows a \r that ends its line: more escape sequences or \r, then \n.
_LINE_END = re.compile(r"(?:" + ANSI.pattern + r"|\r)*\n")


def clean_spans(text: str) -> Tuple[str, List[int], List[int]]:
    """``clean(text)``, with where each kept piece starts: in the clean text and in ``text``."""
    pieces: List[str] = []
    clean_starts: List[int] = []
    raw_starts: List[int] = []
    length, line_start = 0, True
    for m in _TOKENS.finditer(text):
        piece = m.group()
        if m.group(2) is not None or piece[0] == "\x1b":
            continue
        # A \r that ends a line, or comes where the cursor is at a line's start
        # already, changes nothing on the screen; a \r that redraws a line stays.
        if m.group(1) is not None and (line_start or _LINE_END.match(text, m.end())):
            continue
        clean_starts.append(length)
        raw_starts.append(m.start())
        pieces.append(piece)
        length += len(piece)
        line_start = piece.endswith("\n")
    return "".join(pieces), clean_starts, raw_starts


def clean(text: str) -> str:
    """Terminal output as text: ANSI escape sequences removed, ``\r\n`` as ``\n``.

    A ``\r`` that redraws a line (a progress bar) is kept, as ``subprocess`` keeps it.
    """
    return clean_spans(text)[0]


def raw_end(clean_starts: List[int], raw_starts: List[int], end: int) -> int:
    """The index in the raw text just after the clean text's ``end`` characters."""
    if end == 0:
        return 0
    k = bisect.bisect_right(clean_starts, end - 1) - 1
    return raw_starts[k] + (end - clean_starts[k])


def cut_escape(text: str) -> str:
    """``text`` less an escape sequence cut off at its end (its rest is still to come)."""
    i = text.rfind("\x1b", max(0, len(text) - 512))
    return text[:i] if i >= 0 and not ANSI.match(text, i) else text


def cursor_column(text: str) -> int:
    """The column the cursor is left at by ``text`` (output since a line start), unwrapped."""
    col = 0
    for ch in clean(text).rsplit("\n", 1)[-1]:
        if ch == "\r":
            col = 0
        elif ch == "\b":
            col = max(0, col - 1)
        elif ch == "\t":
            col = (col // 8 + 1) * 8
        elif ch >= " ":
            col += 2 if unicodedata.east_asian_width(ch) in "WF" else 1
    return col


def keys_for(line: str) -> str:
    """The keys that type ``line`` at a readline prompt: control characters quoted (Ctrl-V)."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: "\x16" + m.group(), line)


def has_command(text: str) -> bool:
    """Whether ``text`` has a line that is neither blank nor a comment."""
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


def tail(text: str, lines: int = 12, chars: int = 800) -> str:
    text = "\n".join(text.rstrip("\n").split("\n")[-lines:])
    return text if len(text) <= chars else "…" + text[-chars:]


class Marker:
    """One marker in the stream: ``kind`` s (started), c (more lines) or e (ended, ``status``)."""

    __slots__ = ("kind", "status", "start", "end")

    def __init__(self, kind: str, status: Optional[int], start: int, end: int):
        self.kind, self.status, self.start, self.end = kind, status, start, end


def setup_line(nonce: str, prompt_col: Optional[int], cols: int) -> str:
    """The line that installs a Lab's markers, erasing its own echo when the prompt's width is known."""
    f, mark = f"__lk_{nonce}", f"\\e]7701;{nonce};"
    line = (f"{f}(){{ local s=$?; printf '{mark}%s\\a' $s; return $s; }}; "
            f"PROMPT_COMMAND=\"{f};$PROMPT_COMMAND\"; PS0+='{mark}s\\a'; PS2+='\\[{mark}c\\a\\]'; "
            f"[[ $(history 1) == *{f}* ]] && history -d -1")
    if not prompt_col or cols < 1:
        return line  # no prompt seen yet: nothing measured, nothing erased
    rows = 1
    for _ in range(3):  # the row count is part of the line it counts
        erase = f"; printf '\\e[{rows}A\\r\\e[J'"
        rows = max(1, math.ceil((prompt_col + len(line) + len(erase)) / cols))
    return line + f"; printf '\\e[{rows}A\\r\\e[J'"
