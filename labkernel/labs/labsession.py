"""A session of a defined lab: its folder, environment, setup, steps and checks.

``LabSession`` holds a ``Session`` (``.session``: the PTY, output, input and the
ending of processes stay there) and adds what a lab definition brings around it:

- before the program starts: the working folder and files (see ``workspace``),
  the hidden setup and the first step's setup, run in the session's enclosure —
  the session is ``starting`` meanwhile (what the learner sends is held by the
  session, see ``Session.release_input``), and ``failed`` with the setup's output
  and a clear last line if one fails;
- after: the background scripts started beside the terminal (Killercoda's: waited
  for by nothing; one that fails or times out is a note in ``notes``, never a
  failed session), the foreground scripts typed into the terminal, step progress,
  checks run one at a time apart from the terminal (they do not wait for a
  background script), and the next step's setup, background and foreground when a
  step passes.

Why it holds a session rather than being one: the lab layer needs a few moments
of the session's life (an enclosure before the program, the program started
late, held input let go after the lab's own typing, the close) and nothing of how
the PTY is read or the processes ended; as a subclass it reached into those
privates and kept a drifted copy of the input rules. The session's side is the
set of hooks ``Session`` documents; the manager and the handlers see a
``LabSession`` and call the same methods on it as on a session (forwarded below).

Secret values of the lab's environment are masked in everything it reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..containment import Enclosure
from ..errors import BadRequest, SessionEnded
from ..session import Accepted, Session, SessionSettings
from ..session.input import DEFAULT_CLIENT
from ..session.output import Chunk, OutputLog
from .checks import ScriptResult, StepProgress, run_script
from .model import Lab
from .workspace import copy_assets, expand_env, prepare_folder, server_environment

#: The most notes a session keeps (one per background script is the most a lab makes).
_MAX_NOTES = 100
#: What of a failed background script's output a note quotes: its last lines.
_TAIL_LINES, _TAIL_CHARS = 20, 2000


def _tail(output: str) -> str:
    lines = output.strip("\n").split("\n")[-_TAIL_LINES:]
    return "\n".join(lines)[-_TAIL_CHARS:]


def needs_launch(lab: Lab) -> bool:
    """True when starting the lab runs something first (the session is ``starting``)."""
    first = lab.steps[0] if lab.steps else None
    return bool(lab.setup or lab.assets or (first is not None and first.setup))


@dataclass(frozen=True)
class LabSettings:
    """The manager's settings for hidden scripts."""

    root_dir: str
    setup_timeout: float
    check_timeout: float
    output_limit: int
    scratch_dir: str = ""
    #: Names (fnmatch patterns) withheld from labs besides the credentials.
    hidden_env: tuple[str, ...] = ()


class LabSession:
    """A session of a lab definition; see the module docstring."""

    def __init__(self, lab: Lab, *, rows: int, cols: int, lifetime: float, settings: SessionSettings,
                 log: Any, lab_settings: LabSettings, argv: list[str],
                 enclose: Callable[[str, str], Enclosure] | None = None):
        self.session = Session(lab, rows=rows, cols=cols, lifetime=lifetime, settings=settings, log=log)
        self.id = self.session.id
        self.lab = lab
        self.output: OutputLog = self.session.output
        self.log = log
        self.lab_settings = lab_settings
        #: Makes the enclosure (see ``containment``) that holds the session's processes.
        self._enclose = enclose
        self.argv = argv
        self.lab_env, self.mask = expand_env(lab, log, lab_settings.hidden_env)
        self.progress = StepProgress(len(lab.steps))
        self.cwd = lab_settings.root_dir
        self.scratch: str | None = None
        self._launch: asyncio.Task[None] | None = None
        #: Hidden scripts running now (setup, checks, background scripts), to stop with the session.
        self._scripts: set[asyncio.Future[ScriptResult]] = set()
        #: Background scripts running beside the terminal, by step (0: the lab's own).
        self._backgrounds: dict[int, asyncio.Task[None]] = {}
        #: What went wrong beside the learner's terminal (a background script that
        #: failed), one sentence or so each; ``notes`` in the session object.
        self.notes: list[str] = []
        self._check_lock = asyncio.Lock()
        #: Done once the session's leftovers and scratch folder are gone (after it closes).
        self.cleaned: asyncio.Task[None] | None = None
        self.session.on_close(self._on_closed)

    # -- the session, as the manager and handlers see it --------------------------

    @property
    def status(self) -> str:
        return self.session.status

    @property
    def running(self) -> bool:
        return self.session.running

    @property
    def closed(self) -> bool:
        return self.session.closed

    @property
    def pid(self) -> int:
        return self.session.pid

    @property
    def rows(self) -> int:
        return self.session.rows

    @property
    def cols(self) -> int:
        return self.session.cols

    @property
    def exit_code(self) -> int | None:
        return self.session.exit_code

    @property
    def unkilled(self) -> list[int]:
        return self.session.unkilled

    @property
    def released(self) -> asyncio.Future[None] | None:
        return self.session.released

    @property
    def ended_at(self) -> float | None:
        return self.session.ended_at

    @property
    def last_output(self) -> float:
        return self.session.last_output

    @property
    def expires_at(self) -> float:
        return self.session.expires_at

    @expires_at.setter
    def expires_at(self, when: float) -> None:
        self.session.expires_at = when

    @property
    def last_activity(self) -> float:
        return self.session.last_activity

    @last_activity.setter
    def last_activity(self, when: float) -> None:
        self.session.last_activity = when

    def read(self, offset: int, max_bytes: int, *, utf8: bool, reader: str = DEFAULT_CLIENT) -> Chunk:
        return self.session.read(offset, max_bytes, utf8=utf8, reader=reader)

    def write(self, data: bytes, *, client: str | None = None, seq: int | None = None) -> Accepted:
        return self.session.write(data, client=client, seq=seq)

    def resize(self, rows: int, cols: int, *, client: str | None = None, seq: int | None = None) -> Accepted:
        return self.session.resize(rows, cols, client=client, seq=seq)

    def signal(self, name: str, *, client: str | None = None, seq: int | None = None) -> Accepted:
        return self.session.signal(name, client=client, seq=seq)

    def on_close(self, callback: Callable[[LabSession], None]) -> None:
        """Call ``callback(lab_session)`` once the session has closed (soon, if it has)."""
        self.session.on_close(lambda _: callback(self))

    def status_model(self) -> dict[str, Any]:
        return self.session.status_model()

    def model(self) -> dict[str, Any]:
        """The session object of the contract, with the lab's steps and notes."""
        return {**self.session.model(), **self._progress_model(), "notes": list(self.notes)}

    def _progress_model(self) -> dict[str, Any]:
        return {"currentStep": self.progress.current,
                "steps": self.progress.model([s.title for s in self.lab.steps])}

    # -- starting ----------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        return {**server_environment(self.lab_settings.root_dir, self.lab_settings.hidden_env), **self.lab_env}

    def launch(self) -> None:
        """Start the lab: at once if nothing runs first, else in the background (``starting``).

        The session's enclosure is made first: the hidden setup runs inside it, as
        the shell and the checks do later (see ``_run``).
        """
        try:
            self.cwd, self.scratch = prepare_folder(self.lab, self.lab_settings.root_dir,
                                                    self.lab_settings.scratch_dir)
            # The enclosure knows the folder: a sandbox makes it the session's home.
            self.session.enclose(self._enclose(self.id, self.cwd) if self._enclose is not None else None)
        except (OSError, ValueError) as e:
            self.session.end_unstarted("failed", f"labkernel: lab {self.lab.id!r} cannot start: {e}")
            return
        if needs_launch(self.lab):
            self._launch = asyncio.ensure_future(self._launch_in_background())
        else:
            self._spawn()

    async def _launch_in_background(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self.lab.assets:
                enclosure = self.session.enclosure
                home = enclosure.home if enclosure is not None else None
                await loop.run_in_executor(None, copy_assets, self.lab.assets, self.cwd, home, enclosure)
            if self.lab.setup and not await self._setup(self.lab.setup, "setup"):
                return
            first = self.progress.enter_current()
            if first is not None:
                step = self.lab.steps[first - 1]
                if step.setup and not await self._setup(step.setup, f"step {first}'s setup"):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever went wrong, the session fails saying so
            self.log.error("labkernel: lab %s could not start: %s", self.lab.id, self.mask(str(e)))
            self.session.end_unstarted(
                "failed", f"labkernel: lab {self.lab.id!r} could not start: {self.mask(str(e))}")
            return
        if self.status == "starting":
            self._spawn()

    async def _setup(self, script: str, what: str) -> bool:
        """Run a hidden setup script; on failure end the session with its output and why."""
        result = await self._run(script, self.lab_settings.setup_timeout, keep_background=True)
        if result.ok:
            self.log.debug("labkernel: lab %s %s done in %.2f s", self.lab.id, what, result.duration)
            return True
        if result.timed_out:
            why = f"did not finish within {self.lab_settings.setup_timeout:g} s and was stopped"
        else:
            why = f"failed with exit code {result.exit_code}"
        self.log.warning("labkernel: lab %s: the %s %s; its output:\n%s", self.lab.id, what, why,
                         result.output[-2000:])
        output = result.output.replace("\r\n", "\n").replace("\n", "\r\n")
        if output and not output.endswith("\r\n"):
            output += "\r\n"
        self.session.end_unstarted("failed", f"{output}labkernel: the {what} of lab {self.lab.id!r} {why}; "
                                             "the lab cannot start. Its output is above.")
        return False

    def _spawn(self) -> None:
        try:
            self.session.start(list(self.argv), self.environment(), self.cwd)
        except Exception as e:  # noqa: BLE001 - whatever the spawn raised, the session fails saying so
            self.log.error("labkernel: could not start lab %s: %s", self.lab.id, e)
            self.session.end_unstarted("failed", f"labkernel: could not start the lab: {e}")
            return
        # Background scripts start beside the shell, as the prompt comes; nothing waits
        # for them. Then the lab's own typing, then what the learner typed while it started.
        if self.lab.background:
            self._start_background(0, self.lab.background)
        self.progress.enter_current()  # step 1, unless its setup already entered it
        first = self.lab.steps[0] if 1 in self.progress.entered else None
        if first is not None and first.background:
            self._start_background(1, first.background)
        if self.lab.foreground:
            self._type(self.lab.foreground)
        if first is not None and first.foreground:
            self._type(first.foreground)
        self.session.release_input()

    def _type(self, script: str) -> None:
        with contextlib.suppress(SessionEnded, BadRequest):
            self.session.write((script if script.endswith("\n") else script + "\n").encode())

    def hand_out(self, rows: int, cols: int, lifetime: float) -> None:
        """Give a pooled session to a learner: their terminal size, and its lifetime
        (and idle time) counted from now."""
        session, now = self.session, time.time()
        session.created_at, session.expires_at, session.last_activity = now, now + lifetime, now
        if (rows, cols) != (session.rows, session.cols):
            session.resize(rows, cols)

    # -- hidden scripts ----------------------------------------------------------

    async def _run(self, script: str, timeout: float, *, keep_background: bool = False) -> ScriptResult:
        """Run a script of the lab apart from the terminal but inside the session's
        enclosure (its PID namespace, cgroup or subreaper; before the shell exists
        too), so that whatever it starts ends with the session and a check sees the
        lab's processes; stopping the session stops it."""
        enclosure = self.session.enclosure
        assert enclosure is not None
        try:
            await enclosure.prepare()
        except OSError as e:
            raise SessionEnded(f"This session's processes are gone ({e}); start a new one.") from None
        env = {**self.environment(), **enclosure.env()}
        script_task = asyncio.ensure_future(run_script(
            script, env=env, cwd=self.cwd, timeout=timeout, output_limit=self.lab_settings.output_limit,
            mask=self.mask, keep_background=keep_background, enclosure=enclosure))
        self._scripts.add(script_task)
        try:
            await asyncio.wait([script_task])
        except asyncio.CancelledError:
            script_task.cancel()
            raise
        finally:
            self._scripts.discard(script_task)
        if script_task.cancelled():
            raise SessionEnded(f"This session has {self.status}; its scripts were stopped with it.")
        return script_task.result()

    async def check(self, step: int | None = None) -> dict[str, Any]:
        """Run the check of one step (from 1) or of all; the answer of ``POST .../check``."""
        steps = self.lab.steps
        if step is not None and not 1 <= step <= len(steps):
            raise BadRequest(f"Lab {self.lab.id!r} has steps 1 to {len(steps)}; there is no step {step}."
                             if steps else f"Lab {self.lab.id!r} has no steps to check.")
        if self.status == "starting" and self._launch is not None:
            # Asked right after the start (a notebook's next cell, a learner's first
            # click): answer once the lab runs, or say why it did not. The launch
            # itself is bounded by the setup's timeout, and is not ours to cancel.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._launch)
        async with self._check_lock:
            self._must_run()
            results = [await self._check_one(i) for i in ([step] if step else range(1, len(steps) + 1))]
            entered = self.progress.enter_current()
            if entered is not None and self.running:
                await self._enter_step(entered)
        return {"sessionId": self.id, "results": results, **self._progress_model()}

    def _must_run(self) -> None:
        if self.status == "starting":
            raise SessionEnded("This session is still starting; check again once it runs.")
        if not self.running:
            raise SessionEnded(f"This session has {self.status}; start a new one to check your work.")

    async def _check_one(self, index: int) -> dict[str, Any]:
        step = self.lab.steps[index - 1]
        if step.check is None:
            self.progress.record(index, None)
            return {"step": index, "title": step.title, "passed": None,
                    "message": "This step has no check.", "durationMs": 0, "timedOut": False}
        self._must_run()
        timeout = self.lab_settings.check_timeout
        result = await self._run(step.check, timeout)
        self.progress.record(index, result.ok)
        message = result.output
        if result.timed_out:
            message += f"\n[the check did not finish within {timeout:g} s and was stopped]"
        preparing = [n for n in (0, index) if n in self._backgrounds]
        if not result.ok and preparing:
            # Checks do not wait for background scripts (nor do Killercoda's): say so.
            whose = "the lab's" if preparing == [0] else f"step {index}'s"
            message += (f"\n[{whose} background script is still running: what it prepares may not "
                        "be there yet]")
        self.log.info("labkernel: session %s lab %s step %d check %s in %.0f ms", self.id, self.lab.id,
                      index, "passed" if result.ok else "timed out" if result.timed_out else "failed",
                      result.duration * 1000)
        return {"step": index, "title": step.title, "passed": result.ok, "message": message,
                "durationMs": round(result.duration * 1000, 1), "timedOut": result.timed_out}

    async def _enter_step(self, index: int) -> None:
        """The learner reached a step: run its hidden setup, start its background
        script, type its foreground."""
        step = self.lab.steps[index - 1]
        if step.setup:
            result = await self._run(step.setup, self.lab_settings.setup_timeout, keep_background=True)
            if not result.ok:
                self.log.warning("labkernel: lab %s: step %d's setup failed (exit %s); its output:\n%s",
                                 self.lab.id, index, result.exit_code, result.output[-2000:])
        if step.background and self.running:
            self._start_background(index, step.background)
        if step.foreground and self.running:
            self._type(step.foreground)

    # -- background scripts --------------------------------------------------------

    def _start_background(self, step: int, script: str) -> None:
        """Run a background script (step 0: the lab's own) beside the terminal: in the
        session's enclosure, as a check is, so that it sees the shell's files and
        processes and ends with the session; what it leaves running stays."""
        task = asyncio.ensure_future(self._background(step, script))
        self._backgrounds[step] = task
        task.add_done_callback(lambda done: self._backgrounds.pop(step, None)
                               if self._backgrounds.get(step) is done else None)

    async def _background(self, step: int, script: str) -> None:
        what = "the lab's background script" if step == 0 else f"step {step}'s background script"
        timeout = self.lab_settings.setup_timeout
        try:
            result = await self._run(script, timeout, keep_background=True)
        except SessionEnded:
            return
        except Exception as e:  # noqa: BLE001 - a note on the session, never an error of it
            self.log.error("labkernel: lab %s: %s could not run: %s", self.lab.id, what, self.mask(str(e)))
            self._note(f"{what[0].upper()}{what[1:]} could not run: {self.mask(str(e))}")
            return
        if not self.running:
            return  # it ended with the session
        if result.ok:
            self.log.debug("labkernel: lab %s: %s done in %.2f s; its output:\n%s", self.lab.id, what,
                           result.duration, result.output[-2000:])
            return
        why = (f"did not finish within {timeout:g} s and was stopped" if result.timed_out
               else f"failed with exit code {result.exit_code}")
        self.log.warning("labkernel: lab %s session %s: %s %s; its output:\n%s", self.lab.id, self.id, what,
                         why, result.output[-2000:])
        tail = _tail(result.output)
        self._note(f"{what[0].upper()}{what[1:]} {why}" + (f"; the end of its output:\n{tail}" if tail
                                                          else "; it printed nothing."))

    def _note(self, note: str) -> None:
        if len(self.notes) < _MAX_NOTES:
            self.notes.append(note)

    # -- ending ------------------------------------------------------------------

    async def stop(self, status: str = "stopped") -> None:
        """End the lab's scripts, then the session (a session still in its setup ends
        there, with what the setup started); return once its folder is cleaned."""
        for script in list(self._scripts):
            script.cancel()
        for task in list(self._backgrounds.values()):
            task.cancel()
        if self._launch is not None and not self._launch.done():
            self._launch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._launch
        await self.session.stop(status)
        await asyncio.sleep(0)  # let the close callback start the cleanup
        if self.cleaned is not None:
            await asyncio.shield(self.cleaned)

    def _on_closed(self, _: Session) -> None:
        # Background scripts end with the session (its enclosure ends their processes).
        for task in list(self._backgrounds.values()):
            task.cancel()
        self.cleaned = asyncio.ensure_future(self._cleanup())

    async def _cleanup(self) -> None:
        """Once the session has ended and its processes are gone (what its scripts
        started among them: they ran in its enclosure), remove its scratch folder."""
        with contextlib.suppress(Exception):
            await self.session.processes_ended()
        if self.scratch:
            scratch, self.scratch = self.scratch, None
            await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, scratch, True)
