"""``Lab``: a lab session scripted from Python, its commands typed into the learner's terminal.

::

    from labkernel import Lab
    lab = Lab("files-and-folders")      # starts a session; `lab` in a cell shows its panel and terminal
    r = lab.run("ls -l")                # typed into that terminal, visible there as typed
    r.output, r.exit_status             # what it printed (no ANSI codes, "\\n" line ends), and $?
    lab.run("make", check=True)         # raises CommandFailed on a non-zero status
    lab.send("q"); lab.expect(r"\\$ $") # raw keys; a regex over the output new since the last expect/run
    lab.wait_idle()                     # until the shell is back at its prompt: the last exit status
    lab.check()                         # the lab's checks, as a Check button runs them
    lab.stop()

Every call goes through ``LabClient`` (blocking HTTP, long polls); the ``*_async``
variants run it in the event loop's default executor, so ``await lab.run_async(…)``
in a notebook cell leaves the kernel's loop free. ``%%lab`` (``magics.py``) runs a
cell's lines with the same machinery.

How ``run`` finds the end of a command and types its lines: see ``screen``; how it reads the output: ``stream``.

Timeouts
--------
When a command has not ended within ``timeout``, ``run`` presses Ctrl-C in the
terminal (the foreground program gets SIGINT, a half-typed multi-line command is
cancelled), waits up to ``interrupt_timeout`` (5 s) for the prompt, and raises
``LabTimeout`` with what the command printed. Ctrl-C, as ``subprocess.run`` kills its
child on timeout: the caller has given up on the command, and a command left running
(``read x``) would take the next ``run``'s line as its input. A program that ignores
Ctrl-C (a full-screen editor) keeps the terminal: ``LabTimeout`` says so, and the
next ``run`` waits for it and raises ``LabBusy`` (``lab.send`` keys to it, or
``lab.stop()``). Interrupting the kernel during a ``run`` presses Ctrl-C too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import secrets
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, NoReturn, Optional, Pattern, Tuple, TypeVar, Union

from .client import LabClient, LabError
from .results import CheckReport, CommandFailed, IncompleteCommand, LabBusy, LabEnded, LabTimeout, RunResult
from .screen import Marker, clean, cursor_column, has_command, keys_for, setup_line, tail
from .stream import MarkedStream

__all__ = ["Lab", "RunResult", "CheckReport", "CommandFailed", "LabTimeout", "LabBusy", "LabHeld", "LabEnded",
           "IncompleteCommand", "current_lab"]

_T = TypeVar("_T")

_CLEAR_LINE = "\x01\x0b"  # Ctrl-A Ctrl-K: readline's line emptied (no bell when it is empty already)
_CTRL_C = "\x03"
_SETTLE = 0.2            # seconds of quiet that show keys typed a moment ago have been echoed


class LabHeld(LabBusy):
    """A command typed by ``run_lines(held=…)`` has a full-screen program at the
    keyboard: it switched the terminal to its alternate screen (a pager, an editor,
    ``watch``, ``top``) and has been quiet there. It is left running, as a learner
    would find it: ``send`` it keys (``q``, Ctrl-C), then ``wait_idle``.

    ``command`` is the command's text, ``output`` what it showed (cleaned), ``rest``
    the lines of ``run_lines``' text not typed yet.
    """

    def __init__(self, message: str, *, command: str, output: str, rest: str):
        super().__init__(message)
        self.command, self.output, self.rest = command, output, rest


# -- the lab ----------------------------------------------------------------------------


_current: Optional["Lab"] = None


def current_lab() -> Optional["Lab"]:
    """The last ``Lab`` made in this process (what ``%%lab`` runs in), or None."""
    return _current


@functools.lru_cache(maxsize=1)
def _kernel_client() -> LabClient:
    try:
        return LabClient()
    except ValueError:
        raise ValueError("Lab needs a labkernel server: use it in a notebook on a Jupyter server "
                         "with labkernel enabled, or pass client=LabClient(url, token=…)") from None


async def _in_thread(func: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    # LabClient blocks (urllib): the loop's default executor keeps the loop free.
    # A cancelled await leaves the call running in its thread until its own timeout.
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(func, *args, **kwargs))


class Lab:
    """A session of a lab, to script from Python and to show in a notebook.

    ``Lab("files-and-folders")`` starts a session of that lab (``Lab()``: the plain
    ``shell`` lab); ``Lab(session_id="…")`` attaches to a running one. The server is
    found as ``LabClient()`` finds it (a kernel of a labkernel server knows it), or
    pass ``client=``. Displaying a ``Lab`` in a notebook shows its panel
    (``lab.panel``: the steps, hints and Check beside the session's terminal);
    ``lab.terminal`` is the terminal alone.

    ``run`` types commands into that terminal and returns their output and exit
    status; ``send`` writes raw keys; ``expect`` waits for a regex in the output;
    ``check`` runs the lab's checks; ``stop`` ends the session. Each has an
    ``*_async`` twin for a running event loop. See the module's docstring for how
    ``run`` knows where a command ends.
    """

    #: Seconds ``run`` waits for the prompt after pressing Ctrl-C on a timeout.
    interrupt_timeout = 5.0

    def __init__(self, lab_id: Optional[str] = None, *, session_id: Optional[str] = None,
                 client: Optional[LabClient] = None, rows: Optional[int] = None,
                 cols: Optional[int] = None):
        global _current
        self.client = client or _kernel_client()
        if session_id:
            try:
                session = self.client.get(session_id)
            except LabError as e:
                if e.code != "session_not_found":
                    raise
                raise LabError(404, "session_not_found",
                               f"There is no session {session_id!r} on {self.client.url} (an ended "
                               "session is forgotten after its retention); start one with "
                               "Lab('<lab id>').") from None
        else:
            try:
                session = self.client.start(lab_id, rows=rows, cols=cols)
            except LabError as e:
                if e.code != "lab_not_found":
                    raise
                raise LabError(404, "lab_not_found", self._no_such_lab(lab_id or "")) from None
        self.session_id: str = session["sessionId"]
        self.lab_id: str = session["labId"]
        self.title: str = session.get("title", self.lab_id)
        self._nonce = secrets.token_hex(8)
        self._reader = f"lab-{self._nonce}"  # this Lab's own reader for the server's flow control
        self._lock = threading.RLock()
        self._stream = MarkedStream(self._nonce, self._read, self._ended_error,
                                    status=session.get("status", "running"),
                                    attach_at=int(session.get("outputOffset", 0)) if session_id else None)
        self._settle = False                # something may have been typed: let it show first
        self._terminal: Any = None
        self._panel: Any = None
        _current = self

    def _no_such_lab(self, lab_id: str) -> str:
        try:
            catalog = self.client.catalog()
        except LabError:
            return f"There is no lab {lab_id!r} on {self.client.url}."
        ids = ", ".join(sorted(lab["id"] for lab in catalog.get("labs", []))) or "none"
        text = f"There is no lab {lab_id!r} on {self.client.url}; the labs there: {ids}."
        for problem in catalog.get("errors", []):
            if problem.get("labId") == lab_id:
                text += (f" Its definition {problem.get('path')} could not be loaded: "
                         f"{problem.get('field')}: {problem.get('reason')}.")
        return text

    # -- what it shows ---------------------------------------------------------------

    @property
    def terminal(self) -> Any:
        """The session's ``Terminal`` widget (made on first use; one per Lab)."""
        if self._terminal is None:
            from .widget import Terminal  # ipywidgets only when something is displayed
            self._terminal = Terminal(session_id=self.session_id, client=self.client)
            self._terminal.observe(self._view_switched, names="session_id")
        return self._terminal

    @property
    def panel(self) -> Any:
        """The session's ``LabPanel`` widget: its steps beside its terminal (made on first use)."""
        if self._panel is None:
            from .panel import LabPanel  # ipywidgets only when something is displayed
            self._panel = LabPanel(lab=self.lab_id, session_id=self.session_id, client=self.client)
            self._panel.observe(self._view_switched, names="session_id")
        return self._panel

    def _view_switched(self, change: Dict[str, Any]) -> None:
        """A view of this Lab started a new session ("Start again", "New session" in
        the browser: the widget's ``session_id`` changes): the Lab follows it, so that
        ``run``, ``check`` and ``%%lab`` act on the session the learner sees, and its
        other view shows that session too."""
        session_id = change["new"]
        if not session_id or session_id == self.session_id:
            return
        with self._lock:
            session = self.client.get(session_id)
            self.session_id = session["sessionId"]
            self.lab_id = session.get("labId", self.lab_id)
            self._stream = MarkedStream(self._nonce, self._read, self._ended_error,
                                        status=session.get("status", "running"),
                                        attach_at=int(session.get("outputOffset", 0)))
            self._settle = False
        for view in (self._terminal, self._panel):
            if view is not None and view.session_id != session_id:
                view.session_id = session_id

    def _view(self) -> Any:
        # The one place that says what a Lab shows.
        return self.panel

    def _repr_mimebundle_(self, **kwargs: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        view = self._view()._repr_mimebundle_(**kwargs)  # anywidget: (data, metadata)
        data, metadata = view if isinstance(view, tuple) else (view or {}, {})
        return {**data, "text/plain": repr(self)}, metadata

    def __repr__(self) -> str:
        return f"<Lab {self.lab_id!r} session {self.session_id!r} on {self.client.url}>"

    @property
    def session(self) -> Dict[str, Any]:
        """The session object, as the server has it now (status, steps, …)."""
        return self.client.get(self.session_id)

    @property
    def status(self) -> str:
        """``starting``, ``running``, ``exited``, ``stopped``, ``expired`` or ``failed``."""
        return self.session["status"]

    # -- reading the stream ------------------------------------------------------------

    def _read(self, offset: int, wait: float) -> Dict[str, Any]:
        """The stream's read: from ``offset``, long polling up to ``wait``, as this Lab's reader."""
        return self._checked(lambda: self.client.read(self.session_id, offset, wait=wait,
                                                      encoding="base64", reader=self._reader))

    def _ended_error(self, more: str = "") -> LabEnded:
        try:
            session = self.client.get(self.session_id)
            how = session["status"] + (f", exit code {session['exitCode']}"
                                       if session.get("exitCode") is not None else "")
        except LabError:
            how = "gone"
        return LabEnded(409, "session_ended",
                        f"The session {self.session_id} of lab {self.lab_id!r} has ended ({how}): it "
                        f"takes no more commands. Start a new one: Lab({self.lab_id!r}).{more}")

    def _checked(self, call: Callable[[], _T]) -> _T:
        """``call()``, with the server's "ended" and "gone" answers as ``LabEnded``."""
        try:
            return call()
        except LabError as e:
            if e.code in ("session_ended", "session_not_found"):
                raise self._ended_error() from None
            raise

    # -- typing ---------------------------------------------------------------------------

    def _type(self, line: str) -> int:
        """Type ``line`` and Enter at the prompt; returns the output offset at that moment."""
        self._stream.wait_prompt()
        answer = self._checked(lambda: self.client.send(self.session_id, _CLEAR_LINE + keys_for(line) + "\r"))
        return int(answer["offset"])

    def _install(self, deadline: Optional[float], timeout: Optional[float]) -> None:
        """Type the setup line that installs this Lab's markers (see the module docstring)."""
        self._stream.wait_started(deadline)  # no prompt yet: typing would be held anyway
        self._stream.catch_up()
        if not self._stream.live:
            raise self._ended_error()
        try:
            cols = int(self.client.get(self.session_id).get("cols") or 0)
        except LabError:
            cols = 0
        recent = self._stream.recent.decode("utf-8", "replace")
        offset = self._type(setup_line(self._nonce, cursor_column(recent) if recent else None, cols))
        marker = self._stream.wait_marker(offset, "e", deadline)
        if marker is None:
            raise LabTimeout(
                f"The terminal did not take labkernel's setup line within {timeout} s: Lab.run needs "
                "bash (4.4 or later) at its prompt, not a program running there. It showed: "
                f"{tail(clean(self._stream.text(offset)))!r}", output=clean(self._stream.text(offset)), timeout=timeout)
        self._stream.consume(marker.end)

    def _ready(self, deadline: Optional[float], timeout: Optional[float]) -> None:
        """Markers installed, shell at its prompt: else LabEnded, LabTimeout or LabBusy.

        A program running in the terminal is waited for, up to the deadline.
        """
        self._stream.catch_up()
        if self._settle:
            # Keys typed just before (by send, or a step's foreground typed by the
            # server as a check passed) may not have reached the output yet.
            self._settle = False
            self._stream.quiet(_SETTLE, deadline)
        if not self._stream.live:
            raise self._ended_error()
        if not self._stream.installed:
            self._install(deadline, timeout)
        self._stream.wait_idle(deadline)
        if not self._stream.live:
            raise self._ended_error()
        if self._stream.state in ("running", "more"):
            what = (f"a program has been running in it for the last {timeout:g} s"
                    if self._stream.state == "running" else "a command typed there waits for more lines")
            raise LabBusy(f"The terminal of session {self.session_id} is busy: {what}. Wait for it, "
                          "or press Ctrl-C there (lab.send('\\x03')).")

    def _interrupt(self, start: int) -> bool:
        """Ctrl-C in the terminal; whether the shell got back to its prompt."""
        self._checked(lambda: self.client.send(self.session_id, _CTRL_C))
        try:
            marker = self._stream.wait_marker(start, "e", time.monotonic() + self.interrupt_timeout)
        except LabEnded:
            return False
        if marker is None:
            return False
        self._stream.consume(marker.end)
        return True

    def run_lines(self, text: str, timeout: Optional[float] = 30, *,
                  each: bool = False, held: Optional[float] = None) -> Iterator[RunResult]:
        """Type the lines of ``text``, yielding a result per complete command, as ``%%lab``
        runs a cell (``run`` of several lines is this, with the results joined).

        ``timeout`` is for all of them, or for each one if ``each``. Blank and
        comment lines between commands are skipped (inside a here-document, kept).
        ``held`` (seconds): a command whose full-screen program (one that switched
        to the alternate screen or to application cursor keys: ``man``, ``less``,
        ``vim``, ``watch``, ``top``) has had the terminal that long is taken to wait
        for the keyboard: ``LabHeld`` is raised, the program left running, rather
        than Ctrl-C at the timeout.
        """
        lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
        if not has_command(text):
            raise ValueError(f"No command to run in {text!r}.")
        with self._lock:
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                self._ready(deadline, timeout)
                typed: List[str] = []
                start = 0
                for index, line in enumerate(lines):
                    if not typed and (not line.strip() or line.lstrip().startswith("#")):
                        continue
                    offset = self._type(line)
                    if not typed:
                        start = self._stream.pin = offset
                    typed.append(line)
                    marker = self._wait_end(offset, start, deadline, held)
                    if isinstance(marker, str):  # "held"
                        command = "\n".join(typed)
                        raise LabHeld(
                            f"{command!r} has had a full-screen program (a pager, an editor, watch, top) "
                            f"in the terminal for {held:g} s: it waits for keys. It is still running.",
                            command=command, output=self._stream.printed(start),
                            rest="\n".join(lines[index + 1:]))
                    if marker is None:
                        self._timed_out("\n".join(typed), start, timeout)
                    if marker.kind == "c":
                        continue
                    result = RunResult("\n".join(typed), self._stream.output(start, marker, len(typed)),
                                       marker.status or 0)
                    self._stream.pin = None
                    self._stream.consume(marker.end)
                    typed = []
                    yield result
                    if each and timeout is not None:
                        deadline = time.monotonic() + timeout
                if typed:
                    back = self._interrupt(start)
                    raise IncompleteCommand(
                        f"The shell still wanted more lines after {typed[-1]!r} (an open quote, a "
                        "for/if/while without its end, or a here-document without its last line); "
                        + ("it was cancelled with Ctrl-C." if back else "Ctrl-C did not cancel it."))
            except KeyboardInterrupt:
                # The kernel was interrupted: so is the command (as in a terminal).
                with contextlib.suppress(Exception):
                    self.client.send(self.session_id, _CTRL_C)
                raise
            finally:
                self._stream.pin = None

    def _wait_end(self, offset: int, start: int, deadline: Optional[float],
                  held: Optional[float]) -> Union[Marker, str, None]:
        """The next ``c`` or ``e`` marker after ``offset``; None at the deadline; with
        ``held``, "held" once the command typed from ``start`` has had a full-screen
        program in the terminal that long."""
        if held is None:
            return self._stream.wait_marker(offset, "ce", deadline)
        while True:
            until = time.monotonic() + held / 2
            marker = self._stream.wait_marker(offset, "ce", until if deadline is None else min(until, deadline))
            if marker is not None or (deadline is not None and time.monotonic() >= deadline):
                return marker
            since = self._stream.full_screen_since
            if since is not None and time.monotonic() - since >= held and self._stream.full_screen(start):
                return "held"

    def _timed_out(self, command: str, start: int, timeout: Optional[float]) -> NoReturn:
        seen = self._stream.printed(start)
        back = self._interrupt(start)
        after = ("Ctrl-C brought the shell back to its prompt." if back else
                 f"It did not stop on Ctrl-C within {self.interrupt_timeout:g} s: the terminal is still "
                 "busy; send keys to it (lab.send) or stop the session (lab.stop()).")
        shown = tail(seen)
        raise LabTimeout(f"{command!r} did not end within {timeout:g} s; it showed "
                         + (f"(last lines):\n{shown}\n" if shown.strip() else "nothing. ") + after,
                         output=seen, command=command, timeout=timeout, interrupted=back)

    # -- the scripting API ---------------------------------------------------------------------

    def run(self, command: str, timeout: Optional[float] = 30, *, check: bool = False) -> RunResult:
        """Type ``command`` into the terminal and wait for it; return its output and exit status.

        The learner sees the command typed and its output, as if typed by hand.
        ``output`` is what it printed, ANSI codes removed and ``\\r\\n`` as ``\\n``,
        without the echoed command line. Several lines are typed one by one (a
        ``for`` loop or here-document over lines works as typed by hand): the
        output is all of theirs, the status the last command's.

        ``timeout`` seconds (None: no limit): then Ctrl-C is pressed in the terminal
        and ``LabTimeout`` raised, naming what the command printed. ``check=True``
        raises ``CommandFailed`` for a non-zero status. A program running in the
        terminal (the learner's) is waited for within the same ``timeout``, then
        ``LabBusy`` raised. Raises ``LabEnded`` if the session has ended,
        ``IncompleteCommand`` if the shell wants more lines after the last one.
        """
        results = list(self.run_lines(command, timeout))
        result = results[0] if len(results) == 1 else RunResult(
            command, "".join(r.output for r in results), results[-1].exit_status)
        return result.check_returncode() if check else result

    def send(self, keys: str) -> None:
        """Write ``keys`` to the terminal as typed: ``"y\\n"``, ``"\\x03"`` (Ctrl-C), ``"\\x1b[A"``."""
        self._checked(lambda: self.client.send(self.session_id, keys))
        self._settle = True

    def wait_idle(self, timeout: Optional[float] = 30) -> Optional[int]:
        """Wait until no command runs in the terminal (the shell is back at its prompt),
        up to ``timeout``; return the exit status of the command that ended last, or
        None if one still runs (or none of this Lab's has ended yet).

        After ``send`` of keys that end a program (``q`` to a pager, Ctrl-C), this is
        how to know they did. Raises ``LabEnded`` if the session ends.
        """
        with self._lock:
            deadline = None if timeout is None else time.monotonic() + timeout
            self._stream.catch_up()
            self._stream.wait_idle(deadline)
            if not self._stream.live:
                raise self._ended_error()
            return None if self._stream.state in ("running", "unknown") else self._stream.last_status

    def expect(self, pattern: Union[str, Pattern[str]], timeout: Optional[float] = 30) -> "re.Match[str]":
        """Wait until ``pattern`` (a regex) matches the output new since the last ``expect`` or ``run``.

        The output is cleaned as ``run``'s is (no ANSI codes, ``\\n`` line ends);
        returns the match (``match.string`` is that output), and the next
        ``expect`` looks after it. A regex is tried as output arrives: end it with
        something unambiguous (``\\n``, a prompt). Raises ``LabTimeout`` naming what
        came, or ``LabEnded`` if the session ends first.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        with self._lock:
            deadline = None if timeout is None else time.monotonic() + timeout
            self._stream.catch_up()
            while True:
                match, text = self._stream.search(regex)
                if match is not None:
                    return match
                if not self._stream.live:
                    raise self._ended_error(f"\nBefore {regex.pattern!r} appeared it showed: {tail(text)}")
                if self._stream.fill_until(deadline) is None:
                    raise LabTimeout(f"{regex.pattern!r} did not appear within {timeout:g} s; the new "
                                     f"output was:\n{tail(text)}" if text.strip() else
                                     f"{regex.pattern!r} did not appear within {timeout:g} s; "
                                     "there was no new output.", output=text, timeout=timeout)

    def check(self, step: Optional[int] = None) -> CheckReport:
        """Run the lab's checks (of one step, counted from 1, or all); see ``CheckReport``.

        A step that passes may have the server type the next step's foreground
        script into the terminal: the next ``run`` lets it show, and waits for it.
        """
        report = CheckReport(self._checked(lambda: self.client.check(self.session_id, step)))
        self._settle = True
        if self._panel is not None:
            with contextlib.suppress(Exception):  # no front-end attached: nothing to tell
                self._panel.refresh()
        return report

    def stop(self) -> Dict[str, Any]:
        """Stop the session and every process it started; returns the session, now ended."""
        return self.client.stop(self.session_id)

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(LabError):
            self.stop()

    # -- the same, awaitable ------------------------------------------------------------------

    @classmethod
    async def create_async(cls, lab_id: Optional[str] = None, **kwargs: Any) -> "Lab":
        """``Lab(lab_id, **kwargs)`` without blocking the running event loop."""
        return await _in_thread(cls, lab_id, **kwargs)

    async def run_async(self, command: str, timeout: Optional[float] = 30, *,
                        check: bool = False) -> RunResult:
        """``run``, awaitable: the event loop stays free while the command runs."""
        return await _in_thread(self.run, command, timeout, check=check)

    async def send_async(self, keys: str) -> None:
        """``send``, awaitable."""
        return await _in_thread(self.send, keys)

    async def expect_async(self, pattern: Union[str, Pattern[str]],
                           timeout: Optional[float] = 30) -> "re.Match[str]":
        """``expect``, awaitable."""
        return await _in_thread(self.expect, pattern, timeout)

    async def check_async(self, step: Optional[int] = None) -> CheckReport:
        """``check``, awaitable."""
        return await _in_thread(self.check, step)

    async def stop_async(self) -> Dict[str, Any]:
        """``stop``, awaitable."""
        return await _in_thread(self.stop)
