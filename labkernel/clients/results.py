"""What ``Lab`` calls return and raise."""

from __future__ import annotations

import subprocess
from typing import Any, Dict, List, Optional

from .client import LabError
from .screen import tail


class RunResult:
    """What ``Lab.run`` returns: ``output`` (cleaned text) and ``exit_status`` of ``command``."""

    def __init__(self, command: str, output: str, exit_status: int):
        self.command, self.output, self.exit_status = command, output, exit_status

    @property
    def ok(self) -> bool:
        """Whether the command exited 0."""
        return self.exit_status == 0

    @property
    def returncode(self) -> int:
        """``exit_status``, under ``subprocess.CompletedProcess``'s name."""
        return self.exit_status

    def check_returncode(self) -> "RunResult":
        """Raise ``CommandFailed`` if the command exited non-zero; else return the result."""
        if self.exit_status != 0:
            raise CommandFailed(self.exit_status, self.command, self.output)
        return self

    def __str__(self) -> str:
        return self.output

    def __repr__(self) -> str:
        output = self.output if len(self.output) <= 200 else self.output[:100] + "…" + self.output[-100:]
        return f"RunResult({self.command!r}, exit_status={self.exit_status}, output={output!r})"


class CommandFailed(subprocess.CalledProcessError):
    """A command exited non-zero (``run(check=True)``, ``check_returncode()``, ``%%lab``).

    A ``subprocess.CalledProcessError``: ``returncode`` (also ``exit_status``), ``cmd``, ``output``.
    """

    def __init__(self, returncode: int, cmd: str, output: str):
        super().__init__(returncode, cmd, output)

    @property
    def exit_status(self) -> int:
        return self.returncode

    def __str__(self) -> str:
        text = f"{self.cmd!r} exited with status {self.returncode}"
        return text + (":\n" + tail(self.output) if self.output.strip() else "")


class LabTimeout(TimeoutError):
    """A command did not end, or a pattern did not appear, in time.

    ``output`` is what the terminal showed meanwhile (cleaned); ``interrupted`` says
    whether Ctrl-C brought the shell back to its prompt (``run`` only).
    """

    def __init__(self, message: str, *, output: str = "", command: Optional[str] = None,
                 timeout: Optional[float] = None, interrupted: bool = False):
        super().__init__(message)
        self.output, self.command, self.timeout, self.interrupted = output, command, timeout, interrupted


class LabBusy(RuntimeError):
    """A program is running in the terminal: ``run`` does not type into it."""


class LabEnded(LabError):
    """The session has ended (or is gone): it takes no more commands."""


class IncompleteCommand(ValueError):
    """The shell still wanted more lines after the last one (an open quote, ``for``, here-document)."""


class CheckReport:
    """What ``Lab.check`` returns: the server's results, one per step checked.

    ``results`` are the API's objects (``step``, ``title``, ``passed`` — None for a
    step without a check —, ``message``, ``durationMs``, ``timedOut``); ``passed`` is
    True when no check failed; ``answer`` is the whole answer.
    """

    def __init__(self, answer: Dict[str, Any]):
        self.answer = answer
        self.results: List[Dict[str, Any]] = answer.get("results", [])
        self.current_step: Optional[int] = answer.get("currentStep")
        self.steps: List[Dict[str, Any]] = answer.get("steps", [])

    @property
    def passed(self) -> bool:
        return all(r.get("passed") is not False for r in self.results)

    @property
    def failed(self) -> List[Dict[str, Any]]:
        return [r for r in self.results if r.get("passed") is False]

    def __str__(self) -> str:
        lines = []
        for r in self.results:
            mark = {True: "✓", False: "✗", None: "·"}[r.get("passed")]
            message = (r.get("message") or "").strip().splitlines()
            note = " (timed out)" if r.get("timedOut") else ""
            lines.append(f"{mark} {r['step']} {r['title']}{note}" + (f": {message[0]}" if message and
                                                                    r.get("passed") is False else ""))
        return "\n".join(lines) or "(no steps)"

    def __repr__(self) -> str:
        return f"<CheckReport passed={self.passed} current_step={self.current_step}\n{self}>"
