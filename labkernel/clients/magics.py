"""``%%lab``: a notebook cell of shell lines, run in the current lab's terminal.

``%load_ext labkernel`` registers it. Each complete command of the cell is typed
into the terminal as ``Lab.run`` types it (one line at a time, so a ``for`` loop or
a here-document over several lines is one command), and its output printed when it
ends. A command that exits non-zero raises ``CommandFailed``, so the rest of the
cell is not typed and a notebook run (nbclient, "Run all") stops there.
"""

from __future__ import annotations

import sys
from typing import Dict, Optional

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .client import LabError
from .lab import Lab, current_lab
from .results import CommandFailed, IncompleteCommand, LabBusy, LabTimeout
from .screen import has_command

__all__ = ["LabMagics"]

NO_LAB = ("%%lab runs its lines in a lab, and no lab was started in this kernel. Start one "
          "first: `from labkernel import Lab; lab = Lab(\"shell\")` (any lab id: see "
          "LabClient().labs()), or attach to a session: `%%lab <session id>`.")


def _short(error: BaseException) -> BaseException:
    # IPython shows an exception's _render_traceback_ in place of the traceback: the
    # frames of the magic's machinery say nothing to whoever wrote the cell. A failed
    # command's output is in the cell already: the line says only which and how.
    text = (f"{error.cmd!r} exited with status {error.returncode}" if isinstance(error, CommandFailed)
            else str(error))
    error._render_traceback_ = lambda: [f"\x1b[0;31m{type(error).__name__}\x1b[0m: {text}"]  # type: ignore[attr-defined]
    return error


@magics_class
class LabMagics(Magics):
    """The ``%%lab`` cell magic."""

    _attached: Dict[str, Lab] = {}

    def _lab(self, session_id: Optional[str]) -> Lab:
        lab = current_lab()
        if not session_id:
            if lab is None:
                raise UsageError(NO_LAB)
            return lab
        if lab is not None and lab.session_id == session_id:
            return lab
        if session_id not in self._attached:  # one Lab (one setup line) per session
            self._attached[session_id] = Lab(session_id=session_id)
        return self._attached[session_id]

    @magic_arguments()
    @argument("session_id", nargs="?", help="the session to run in (default: the last Lab made in this kernel)")
    @argument("-t", "--timeout", type=float, default=30.0,
              help="seconds each command may take (default: 30); then Ctrl-C and an error")
    @cell_magic
    def lab(self, line: str, cell: str) -> None:
        """Run the cell's lines in the lab's terminal, printing each command's output.

        A command that exits non-zero, times out, or finds the session ended or the
        terminal busy raises, and the cell's later lines are not typed.
        """
        args = parse_argstring(self.lab, line)
        if not has_command(cell):
            return
        try:
            lab = self._lab(args.session_id)
            for result in lab.run_lines(cell, args.timeout, each=True):
                if result.output:
                    print(result.output, end="" if result.output.endswith("\n") else "\n")
                    sys.stdout.flush()
                result.check_returncode()
        except (CommandFailed, LabTimeout, LabBusy, LabError, IncompleteCommand) as error:
            raise _short(error) from None
