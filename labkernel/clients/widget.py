"""``Terminal``: a lab session's terminal in a notebook cell (an anywidget).

The browser talks to the REST API directly (long polls and POSTs from the page);
the kernel only starts the session and holds its id. So the terminal keeps
working while the kernel is busy, and after it restarts.

Who starts the session: the kernel, through ``LabClient()``, when it was started
by a labkernel server (it then knows the server's URL and a credential). That
way ``Terminal().session_id`` is known on the next line of Python (for
``stop()``, a grader, ``LabClient`` calls), and two views of one Terminal never
race to start two sessions. A kernel that cannot reach the server that way
(started elsewhere) leaves ``session_id`` empty, and the first view starts one
from the browser and writes its id back.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Optional

import anywidget
import traitlets

from .client import LabClient

__all__ = ["Terminal"]

_STATIC = Path(__file__).parent.parent / "static"
_BUNDLE = _STATIC / "widget.js"

if not _BUNDLE.is_file():  # pragma: no cover - a packaging error, not a runtime one
    raise ImportError(
        f"labkernel's browser bundle is missing ({_BUNDLE}): install the package with pip "
        "(`pip install .` or `pip install -e .`, which runs the JS build and needs Node.js "
        "and npm), or run `npm install && npm run build` in js/.")


@functools.lru_cache(maxsize=1)
def _kernel_client() -> Optional[LabClient]:
    """The client of the server that started this kernel (one for every Terminal), or None."""
    try:
        return LabClient()
    except ValueError:
        return None  # not in a kernel of a labkernel server: the browser starts sessions


class Terminal(anywidget.AnyWidget):
    """A terminal of a lab session, shown in the notebook; display it in any cell.

    ``Terminal()`` starts the built-in ``shell`` lab, ``Terminal(lab="intro")``
    starts that lab, ``Terminal(session_id="…")`` attaches to a running session.
    Displaying the same Terminal in two cells shows the same session in both.
    ``Terminal(predict=False)`` turns predictive echo off (it can also be changed later).
    """

    _esm = _BUNDLE
    _css = _STATIC / "widget.css"

    session_id = traitlets.Unicode("", help="The session shown; empty until one is started.").tag(sync=True)
    lab = traitlets.Unicode("shell", help="The lab a new session starts.").tag(sync=True)
    rows = traitlets.Int(20, help="Height of the terminal in rows; the width follows the cell.").tag(sync=True)
    read_only = traitlets.Bool(False, help="Show output only; keystrokes are not sent.").tag(sync=True)
    predict = traitlets.Bool(
        True,
        help="Predictive echo: printable keys typed at a prompt are drawn at once, dim, until the "
             "server's echo confirms them (taken back exactly if it does not); never in full-screen "
             "programs or at a password prompt. False: keys show only when the server echoes them.",
    ).tag(sync=True)
    status = traitlets.Unicode(
        "connecting",
        help="The state a view shows: connecting, connected, reconnecting, ended, expired, "
             "not_found, forbidden or unavailable (set by the browser).",
    ).tag(sync=True)
    exit_code = traitlets.Int(None, allow_none=True, help="The shell's exit code once it ended.").tag(sync=True)
    http = traitlets.Enum(
        ["xhr", "fetch"], "xhr", help="The browser's HTTP layer for the API (measured: see js/README.md).",
    ).tag(sync=True)

    def __init__(self, lab: Optional[str] = None, session_id: Optional[str] = None, *,
                 client: Optional[LabClient] = None, rows: int = 20, read_only: bool = False,
                 **kwargs: Any):
        super().__init__(lab=lab or "shell", rows=rows, read_only=read_only, **kwargs)
        self._client = client or _kernel_client()
        if session_id:
            self.session_id = session_id
        elif self._client is not None:
            self.session_id = self._client.start(self.lab, rows=self.rows)["sessionId"]

    def stop(self) -> None:
        """Stop the session and every process it started; the views show it ended."""
        if not self.session_id:
            return
        if self._client is not None:
            self._client.stop(self.session_id)
        else:
            self.send({"type": "stop"})  # the browser knows the server; let a view stop it

    def __repr__(self) -> str:
        return f"Terminal(session_id={self.session_id!r}, lab={self.lab!r}, status={self.status!r})"
