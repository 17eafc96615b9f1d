"""A session of a defined lab: its folder, environment, setup, steps and checks.

``LabSession`` is a ``Session`` (the PTY, output, input and process cleanup stay
there) with what a lab definition adds around it:

- before the shell starts: the working folder and files (see ``workspace``),
  the hidden setup and the first step's setup — the session is ``starting``
  meanwhile, and ``failed`` with the setup's output and a clear last line if one
  fails;
- after: the foreground scripts typed into the terminal, step progress, checks
  run one at a time apart from the terminal, and the next step's setup and
  foreground when a step passes.

Secret values of the lab's environment are masked in everything it reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..containment import Enclosure, ScanEnclosure
from ..errors import BadRequest, LabError, PayloadTooLarge, SessionEnded
from ..session import Accepted, Session, SessionSettings
from .checks import ScriptResult, StepProgress, run_script
from .model import Lab
from .workspace import copy_assets, expand_env, prepare_folder, server_environment

#: The most messages held for a session whose setup still runs.
_MAX_HELD = 1000


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


class LabSession(Session):
    """A session of a lab definition; see the module docstring."""

    def __init__(self, lab: Lab, *, rows: int, cols: int, lifetime: float, settings: SessionSettings,
                 log: Any, lab_settings: LabSettings, argv: list[str],
                 enclose: Callable[[str], Enclosure] | None = None):
        super().__init__(lab, rows=rows, cols=cols, lifetime=lifetime, settings=settings, log=log)
        self.lab_settings = lab_settings
        #: Makes the enclosure (see ``containment``) that holds the shell's processes.
        self._enclose = enclose
        self.argv = argv
        self.lab_env, self.mask = expand_env(lab, log)
        self.progress = StepProgress(len(lab.steps))
        self.cwd = lab_settings.root_dir
        self.scratch: str | None = None
        self._launch: asyncio.Task[None] | None = None
        self._script: asyncio.Future[ScriptResult] | None = None
        self._check_lock = asyncio.Lock()
        #: Done once the session's leftovers and scratch folder are gone (after it closes).
        self.cleaned: asyncio.Task[None] | None = None
        self._held: list[Any] = []
        self._closed.add_done_callback(self._on_closed)

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
            self._enclosure = (self._enclose(self.id) if self._enclose is not None
                               else ScanEnclosure(self.id, max_processes=0, log=self.log))
        except (OSError, ValueError) as e:
            self.end_unstarted("failed", f"labkernel: lab {self.lab.id!r} cannot start: {e}")
            return
        if needs_launch(self.lab):
            self._launch = asyncio.ensure_future(self._launch_in_background())
        else:
            self._spawn()

    async def _launch_in_background(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self.lab.assets:
                await loop.run_in_executor(None, copy_assets, self.lab.assets, self.cwd)
            if self.lab.setup and not await self._setup(self.lab.setup, "setup"):
                return
            first = self.progress.enter_current()
            if first is not None:
                step = self.lab.steps[first - 1]
                if step.setup and not await self._setup(step.setup, f"step {first}'s setup"):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.log.error("labkernel: lab %s could not start: %s", self.lab.id, self.mask(str(e)))
            self.end_unstarted("failed", f"labkernel: lab {self.lab.id!r} could not start: {self.mask(str(e))}")
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
        self.end_unstarted("failed", f"{output}labkernel: the {what} of lab {self.lab.id!r} {why}; "
                                         "the lab cannot start. Its output is above.")
        return False

    def _spawn(self) -> None:
        try:
            self.start(list(self.argv), self.environment(), self.cwd, self._enclosure)
        except Exception as e:
            self.log.error("labkernel: could not start lab %s: %s", self.lab.id, e)
            self.end_unstarted("failed", f"labkernel: could not start the lab: {e}")
            return
        # The lab's own typing first, then what the learner typed while it started.
        if self.lab.foreground:
            self._type(self.lab.foreground)
        self.progress.enter_current()  # step 1, unless its setup already entered it
        if 1 in self.progress.entered and self.lab.steps[0].foreground:
            self._type(self.lab.steps[0].foreground)
        held, self._held = self._held, []
        for apply in held:
            with contextlib.suppress(LabError):
                apply()

    def _type(self, script: str) -> None:
        with contextlib.suppress(SessionEnded, BadRequest):
            self.write((script if script.endswith("\n") else script + "\n").encode())

    def _deliver(self, client: str | None, seq: int | None, apply: Any) -> Accepted:
        """While the setup runs there is no terminal yet: messages (keys, a resize)
        are held and applied in order once the shell has started, as keys typed
        before a program reads them wait in a terminal."""
        if self.status != "starting":
            return super()._deliver(client, seq, apply)
        key = "" if client is None else client
        if seq is not None and self._seqs.get(key, -1) >= seq:
            return Accepted(self.output.end, True)
        if len(self._held) >= _MAX_HELD:
            raise PayloadTooLarge("This session is still starting and holds too much input already.")
        self._held.append(apply)
        if seq is not None:
            self._seqs[key] = seq
        return Accepted(self.output.end, False)

    def adopt(self, rows: int, cols: int, lifetime: float) -> None:
        """Hand a pooled session to a learner: their size, and its lifetime starting now."""
        now = time.time()
        self.created_at, self.expires_at, self.last_activity = now, now + lifetime, now
        if (rows, cols) != (self.rows, self.cols) and self._proc is not None:
            self._proc.setwinsize(rows, cols)
            self.rows, self.cols = rows, cols

    # -- hidden scripts ----------------------------------------------------------

    async def _run(self, script: str, timeout: float, *, keep_background: bool = False) -> ScriptResult:
        """Run a script of the lab apart from the terminal but inside the session's
        enclosure (its PID namespace, cgroup or subreaper; before the shell exists
        too), so that whatever it starts ends with the session and a check sees the
        lab's processes; stopping the session stops it."""
        enclosure = self._enclosure
        assert enclosure is not None
        try:
            await enclosure.prepare()
        except OSError as e:
            raise SessionEnded(f"This session's processes are gone ({e}); start a new one.") from None
        env = {**self.environment(), **enclosure.env()}
        self._script = asyncio.ensure_future(run_script(
            script, env=env, cwd=self.cwd, timeout=timeout, output_limit=self.lab_settings.output_limit,
            mask=self.mask, keep_background=keep_background, enclosure=enclosure))
        try:
            await asyncio.wait([self._script])
        except asyncio.CancelledError:
            self._script.cancel()
            raise
        script_task, self._script = self._script, None
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
        self.log.info("labkernel: session %s lab %s step %d check %s in %.0f ms", self.id, self.lab.id,
                      index, "passed" if result.ok else "timed out" if result.timed_out else "failed",
                      result.duration * 1000)
        return {"step": index, "title": step.title, "passed": result.ok, "message": message,
                "durationMs": round(result.duration * 1000, 1), "timedOut": result.timed_out}

    async def _enter_step(self, index: int) -> None:
        """The learner reached a step: run its hidden setup, type its foreground."""
        step = self.lab.steps[index - 1]
        if step.setup:
            result = await self._run(step.setup, self.lab_settings.setup_timeout, keep_background=True)
            if not result.ok:
                self.log.warning("labkernel: lab %s: step %d's setup failed (exit %s); its output:\n%s",
                                 self.lab.id, index, result.exit_code, result.output[-2000:])
        if step.foreground and self.running:
            self._type(step.foreground)

    # -- ending ------------------------------------------------------------------

    async def stop(self, status: str = "stopped") -> None:
        if self._script is not None:
            self._script.cancel()
        if self._launch is not None and not self._launch.done():
            self._launch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._launch
        if self.status == "starting" and self._proc is None:
            self.end_unstarted(status, "")  # and ends what the setup started
        else:
            await super().stop(status)
        await asyncio.sleep(0)  # let the close callback start the cleanup
        if self.cleaned is not None:
            await asyncio.shield(self.cleaned)

    def _on_closed(self, _: Any) -> None:
        self.cleaned = asyncio.ensure_future(self._cleanup())

    async def _cleanup(self) -> None:
        """Once the session has ended and its processes are gone (what its scripts
        started among them: they ran in its enclosure), remove its scratch folder."""
        if self._stopping is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._stopping)
        if self.scratch:
            scratch, self.scratch = self.scratch, None
            await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, scratch, True)

    # -- views -------------------------------------------------------------------

    def _progress_model(self) -> dict[str, Any]:
        return {"currentStep": self.progress.current,
                "steps": self.progress.model([s.title for s in self.lab.steps])}

    def model(self) -> dict[str, Any]:
        return {**super().model(), **self._progress_model()}
