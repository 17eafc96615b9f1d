"""``LabPanel``: a lab in a notebook cell: its instructions beside its terminal (an anywidget).

What a ``Lab`` shows when it is displayed. The browser does the work, as for
``Terminal``: the panel reads the lab (``GET api/labs``) and the session's progress
(``steps``, ``currentStep``) from the REST API, runs checks (``POST …/check``) and
types the step's commands into the terminal itself, so it keeps working while the
kernel is busy, after a kernel restart and after a reload. The kernel only starts
the session (or names one) and tells the panel when a check ran on its side
(``refresh``), so the progress shown follows ``Lab.check`` at once.
"""

from __future__ import annotations

from typing import Any, Optional

import traitlets

from .client import LabClient
from .widget import Terminal

__all__ = ["LabPanel"]


class LabPanel(Terminal):
    """A lab session shown with its steps: title and intro, the current step (run
    and copy buttons on its commands), hints, the solution on request, Check or
    Mark done, step n of m, the finish text, and the terminal beside them.

    ``LabPanel(lab="files-and-folders")`` starts a session of that lab,
    ``LabPanel(session_id="…")`` shows a running one; ``Lab(…)`` displayed in a
    cell makes one. Traits and session handling are ``Terminal``'s.
    """

    #: Which view the shared bundle renders (widget.js): the panel, not the bare terminal.
    kind = traitlets.Unicode("lab", read_only=True).tag(sync=True)
    rows = traitlets.Int(24, help="Height of the terminal in rows; the instructions beside it scroll.").tag(sync=True)

    def __init__(self, lab: Optional[str] = None, session_id: Optional[str] = None, *,
                 client: Optional[LabClient] = None, rows: int = 24, read_only: bool = False,
                 **kwargs: Any):
        super().__init__(lab=lab, session_id=session_id, client=client, rows=rows, read_only=read_only,
                         **kwargs)

    def refresh(self) -> None:
        """Have every view read the session's progress again (after a check run elsewhere)."""
        self.send({"type": "refresh"})

    def __repr__(self) -> str:
        return f"LabPanel(session_id={self.session_id!r}, lab={self.lab!r}, status={self.status!r})"
