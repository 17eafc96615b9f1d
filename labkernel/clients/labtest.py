"""``labkernel test``: run each lab's steps as a learner would, and check the checks.

For every lab, a session is started; for every step, the step's check must fail
before its solution is typed (a check that passes on a fresh lab would pass a
learner who did nothing), then the solution commands are typed into the terminal
one by one, as a learner pastes them, and the check is polled until it passes or
the step's time runs out. A lab whose setup fails, or whose definition the catalog
could not read, fails as a whole with the reason.

The pieces, so that each can be tested on its own:

- ``LabResult`` / ``StepResult``: what happened, with timings and the output that
  explains a failure; ``format_step``, ``format_report`` and ``junit_xml`` turn them
  into the progress lines, the closing report and JUnit XML (pure functions).
- ``LabTester``: the step loop, talking to a server through ``Api`` (a thin layer
  over ``LabClient`` plus the checks route).
- ``LocalServer``: a ``jupyter server`` subprocess with labkernel on a free port and
  a random token, its log captured to show when it fails to start
  (``localserver.JupyterServer`` for the labs given).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

from .client import LabClient, LabError
from .localserver import JupyterServer
from .localserver import ServerFailed as ServerFailed  # where cli.py and callers catch it

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
_MARK = {PASSED: "✓", FAILED: "✗", SKIPPED: "-"}
#: How much of a check's or terminal's output a report quotes.
_QUOTE_CHARS = 4000


# -- results ------------------------------------------------------------------------

@dataclass
class StepResult:
    """One step of one lab."""

    number: int
    title: str
    status: str
    seconds: float = 0.0
    #: One sentence: why it failed or was skipped.
    message: str = ""
    #: The check's last output, for a failure.
    output: str = ""


@dataclass
class LabResult:
    """One lab: its steps, or the reason it could not be run at all."""

    lab_id: str
    title: str = ""
    steps: list[StepResult] = field(default_factory=list)
    #: Why the lab as a whole failed (a definition error, a failed setup); "" if it ran.
    error: str = ""
    #: What explains ``error`` (the setup's output), or the end of the terminal's output.
    output: str = ""
    seconds: float = 0.0
    #: The definition's file, for a lab the catalog could not read.
    path: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.error) or any(s.status == FAILED for s in self.steps)


def format_step(lab_id: str, step: StepResult) -> str:
    """The progress line of a step."""
    line = f"  {_MARK[step.status]} {step.number}. {step.title}  ({step.seconds:.1f} s)"
    if step.status != PASSED and step.message:
        line += f": {step.message}"
    return line


def format_lab_error(result: LabResult) -> str:
    """The progress line of a lab that could not be run."""
    where = f" ({result.path})" if result.path else ""
    return f"✗ {result.lab_id}{where}: {result.error}"


def _quote(text: str, indent: str = "    | ") -> str:
    text = strip_ansi(text).rstrip()
    if len(text) > _QUOTE_CHARS:
        text = "…" + text[-_QUOTE_CHARS:]
    return "\n".join(indent + line for line in text.splitlines()) if text else indent + "(no output)"


def format_report(results: list[LabResult]) -> str:
    """The closing report: every failure with the output that explains it, then the count."""
    failed = [r for r in results if r.failed]
    steps = [s for r in results for s in r.steps]
    counts = {k: sum(s.status == k for s in steps) for k in (PASSED, FAILED, SKIPPED)}
    lines = []
    for r in failed:
        if r.error:
            lines.append(format_lab_error(r))
            if r.output:
                lines.append(_quote(r.output))
        for s in r.steps:
            if s.status == FAILED:
                lines.append(f"✗ {r.lab_id} › {s.number}. {s.title}: {s.message}")
                lines.append("  check output:")
                lines.append(_quote(s.output))
        if not r.error and r.output:
            lines.append("  end of the terminal's output:")
            lines.append(_quote(r.output[-1500:]))
        lines.append("")
    lines.append(f"{len(results)} lab(s): {len(results) - len(failed)} passed, {len(failed)} failed; "
                 f"steps: {counts[PASSED]} passed, {counts[FAILED]} failed, {counts[SKIPPED]} skipped")
    return "\n".join(lines)


_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
#: Characters XML 1.0 cannot carry, even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def strip_ansi(text: str) -> str:
    """Terminal output as plain text, roughly as the screen showed it: escape sequences
    removed, and a line rewritten after a bare carriage return (a progress bar) kept
    as its last version."""
    text = re.sub(r"\r+\n", "\n", _ANSI.sub("", text))
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", strip_ansi(text))


def junit_xml(results: list[LabResult]) -> str:
    """JUnit XML: a testsuite per lab, a testcase per step (and one for a lab that could not run)."""
    root = ET.Element("testsuites", name="labkernel test")
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    total_time = 0.0
    for r in results:
        suite = ET.SubElement(root, "testsuite", name=r.lab_id)
        if r.path:
            props = ET.SubElement(suite, "properties")
            ET.SubElement(props, "property", name="path", value=r.path)
        cases = 0
        failures = int(bool(r.error)) + sum(s.status == FAILED for s in r.steps)
        skipped = sum(s.status == SKIPPED for s in r.steps)
        if r.error:
            case = ET.SubElement(suite, "testcase", classname=r.lab_id, name="start", time=f"{r.seconds:.3f}")
            failure = ET.SubElement(case, "failure", message=_xml_text(r.error))
            failure.text = _xml_text(r.output)
            cases += 1
        for s in r.steps:
            case = ET.SubElement(suite, "testcase", classname=r.lab_id, name=f"{s.number}. {_xml_text(s.title)}",
                                 time=f"{s.seconds:.3f}")
            if s.status == FAILED:
                failure = ET.SubElement(case, "failure", message=_xml_text(s.message))
                failure.text = _xml_text(s.output)
            elif s.status == SKIPPED:
                ET.SubElement(case, "skipped", message=_xml_text(s.message))
            cases += 1
        suite.set("tests", str(cases))
        suite.set("failures", str(failures))
        suite.set("errors", "0")
        suite.set("skipped", str(skipped))
        suite.set("time", f"{r.seconds:.3f}")
        totals["tests"] += cases
        totals["failures"] += failures
        totals["skipped"] += skipped
        total_time += r.seconds
    for k, v in totals.items():
        root.set(k, str(v))
    root.set("errors", "0")
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# -- talking to the server -------------------------------------------------------------

class NoChecksApi(Exception):
    """The server answers 404 ``not_found`` for the checks route: its labkernel predates it."""


class Api:
    """The calls the tester makes: ``LabClient``'s, plus the catalog's full answer and
    one step's check result, with a clear error from a server that has no checks API."""

    def __init__(self, client: LabClient):
        self.client = client

    def catalog(self) -> dict[str, Any]:
        """``GET /api/labs`` as it answers: ``labs``, and ``errors`` where the server has them."""
        return self.client._request("GET", "api/labs")

    def check(self, session_id: str, step: int) -> dict[str, Any]:
        """``POST /api/labs/session/{id}/check`` for one step (from 1): that step's result."""
        try:
            answer = self.client.check(session_id, step)
        except LabError as e:
            if e.status == 404 and e.code == "not_found":
                raise NoChecksApi("the server has no checks API (POST …/check answered 404 not_found): "
                                  "its labkernel is older than this command") from e
            raise
        for result in answer.get("results", []):
            if result.get("step") == step:
                return result
        raise LabError(None, "bad_response", f"the check answer has no result for step {step}: {answer}")

    def __getattr__(self, name: str) -> Any:
        # start, get, stop, command, send, read: as LabClient has them.
        return getattr(self.client, name)


# -- the step loop ---------------------------------------------------------------------

def plan(catalog: dict[str, Any], selected: Iterable[str] = ()) -> tuple[list[dict[str, Any]], list[LabResult]]:
    """The labs to test from a ``GET /api/labs`` answer, and a failed result per catalog error.

    The built-in ``shell`` lab has nothing to test and is left out unless asked for.
    With ``selected`` ids, only those labs (and errors naming them) count; an id the
    catalog lacks is a failure.
    """
    chosen = list(selected)
    labs = [lab for lab in catalog.get("labs", []) if (lab["id"] in chosen if chosen else lab["id"] != "shell")]
    errors = [LabResult(lab_id=e.get("labId") or Path(e.get("path", "?")).parent.name or "?",
                        error=f"invalid definition: {e.get('field', '?')}: {e.get('reason', '?')}",
                        path=e.get("path", ""))
              for e in catalog.get("errors", []) if not chosen or e.get("labId") in chosen]
    found = {lab["id"] for lab in labs} | {r.lab_id for r in errors}
    errors += [LabResult(lab_id=i, error="no lab with this id in the server's catalog")
               for i in chosen if i not in found]
    return labs, errors


class LabTester:
    """Runs the steps of labs against one server, reporting each step as it ends."""

    def __init__(self, api: Any, *, step_timeout: float = 60.0, start_timeout: float = 120.0,
                 settle: float = 0.3, on_line: Callable[[str], None] = print):
        self.api = api
        self.step_timeout, self.start_timeout, self.settle = step_timeout, start_timeout, settle
        self.say = on_line

    def run(self, selected: Iterable[str] = ()) -> list[LabResult]:
        labs, results = plan(self.api.catalog(), selected)
        for r in results:
            self.say(format_lab_error(r))
        for lab in labs:
            results.append(self.test_lab(lab))
        return results

    def test_lab(self, lab: dict[str, Any]) -> LabResult:
        """Start a session of ``lab`` (a catalog entry), test each step, stop it."""
        result = LabResult(lab_id=lab["id"], title=lab.get("title", ""))
        self.say(f"{lab['id']}  {lab.get('title', '')}")
        started = time.monotonic()
        steps = lab.get("stepList")
        if steps is None and lab.get("steps"):
            result.error = "the server lists the lab's steps only as a count: its labkernel predates steps"
            self.say(format_lab_error(result))
            return result
        session = _Session(self.api, self.settle)
        try:
            problem = session.start(lab["id"], self.start_timeout)
            if problem:
                result.error, result.output = problem, session.transcript
                self.say(format_lab_error(result))
                return result
            for number, step in enumerate(steps or [], start=1):
                step_result = self._step(session, number, step)
                result.steps.append(step_result)
                self.say(format_step(lab["id"], step_result))
                if step_result.message.startswith("the session ended"):
                    break
        except NoChecksApi as e:
            result.error = str(e)
            self.say(format_lab_error(result))
        except (LabError, TimeoutError, OSError) as e:
            result.error = f"the test could not go on: {e}"
            self.say(format_lab_error(result))
        finally:
            session.stop()
            result.seconds = time.monotonic() - started
            if result.failed and not result.output:
                result.output = session.transcript
        return result

    def _step(self, session: "_Session", number: int, step: dict[str, Any]) -> StepResult:
        title, solution = step.get("title") or f"Step {number}", list(step.get("solution") or [])
        started = time.monotonic()

        def done(status: str, message: str = "", output: str = "") -> StepResult:
            return StepResult(number, title, status, time.monotonic() - started, message, output)

        if not step.get("hasCheck"):
            session.type(solution)  # later steps may build on what this one does
            return done(SKIPPED, "no check")
        before = self.api.check(session.id, number)
        if before.get("passed") is True:
            session.type(solution)
            return done(FAILED, "the check passes before the solution is typed: it would pass a learner "
                                "who did nothing", before.get("message", ""))
        if before.get("passed") is None:
            session.type(solution)
            return done(SKIPPED, f"the check was not run: {before.get('message') or 'no reason given'}")
        if not solution:
            return done(SKIPPED, "a check but no solution to type ({{exec}} blocks or solution commands)")
        session.type(solution)
        deadline, interval, last = time.monotonic() + self.step_timeout, 0.2, before
        while True:
            last = self.api.check(session.id, number)
            if last.get("passed") is True:
                return done(PASSED)
            if not session.alive():
                return done(FAILED, "the session ended before the check passed", last.get("message", ""))
            if time.monotonic() >= deadline:
                why = "timed out" if last.get("timedOut") else "still fails"
                return done(FAILED, f"the check {why} {self.step_timeout:g} s after the solution was typed",
                            last.get("message", ""))
            time.sleep(interval)
            interval = min(interval * 1.5, 2.0)


class _Session:
    """One lab session seen from the keyboard: types lines, keeps the terminal's output."""

    def __init__(self, api: Any, settle: float):
        self.api, self.settle = api, settle
        self.id = ""
        self.offset = 0
        self.status = ""
        self.transcript = ""

    def start(self, lab_id: str, timeout: float) -> str:
        """Start the lab and wait for its setup; return why it failed, or ""."""
        session = self.api.start(lab_id)
        self.id, self.status = session["sessionId"], session["status"]
        deadline = time.monotonic() + timeout
        while self.status == "starting":
            if time.monotonic() > deadline:
                return f"the session was still starting (setup running) after {timeout:g} s"
            time.sleep(0.2)
            session = self.api.get(self.id)
            self.status = session["status"]
        if self.status != "running":
            self._drain(0)
            reason = session.get("message") or session.get("error") or ""
            return (f"the session is {self.status} before the first step"
                    f"{' (exit code %s)' % session.get('exitCode') if session.get('exitCode') is not None else ''}"
                    f"{': ' + reason if reason else ''}; the setup's output follows")
        # A learner starts typing once the prompt is there.
        self._drain(min(timeout, 30.0), need_output=True)
        return ""

    def type(self, entries: list[str]) -> None:
        """Type solution entries as a learner pastes them, each once the terminal is quiet."""
        for entry in entries:
            if entry.startswith("\x03"):
                self.api.send(self.id, "\x03")
                self._drain(5.0)
                entry = entry[1:]
            if entry:
                self.api.command(self.id, entry)
                self._drain(10.0)

    def _drain(self, limit: float, need_output: bool = False) -> None:
        """Read output until the terminal has been quiet for ``settle`` s (or ``limit`` passes).

        It reads at least once, so ``limit=0`` takes what is there, even from a
        session that has ended.
        """
        deadline, seen = time.monotonic() + limit, False
        while True:
            left = max(0.0, deadline - time.monotonic())
            live = self.status in ("starting", "running")
            wait = 0.0 if not live else min(left, 5.0) if need_output and not seen else min(left, self.settle)
            out = self.api.read(self.id, self.offset, wait=round(wait, 3))
            self.transcript = (self.transcript + out["data"])[-64 * 1024:]
            self.offset, self.status = out["nextOffset"], out["status"]
            if out["data"]:
                seen = True
            elif seen or not need_output or not live:
                return
            if time.monotonic() >= deadline:
                return

    def alive(self) -> bool:
        self._drain(0.0)
        return self.status in ("starting", "running")

    def stop(self) -> None:
        if self.id:
            try:
                self._drain(0.0)
                self.api.stop(self.id)
            except (LabError, OSError):
                pass  # it may have ended already; the report says what matters


# -- a server of our own -----------------------------------------------------------------

class LocalServer(JupyterServer):
    """A ``jupyter server`` with labkernel for the labs in ``lab_paths``, as a context manager.

    It listens on 127.0.0.1 on a free port with a random token, in ``root_dir``
    (default: a fresh temporary folder, so that nothing but the given labs is in its
    catalog). Its log goes to a file, shown by ``log()`` when something fails; the
    temporary folder with it is removed when the block ends.
    """

    def __init__(self, lab_paths: list[Path], *, root_dir: Path | None = None, startup_timeout: float = 90.0,
                 extra_config: dict[str, Any] | None = None):
        self.lab_paths = [str(Path(p).resolve()) for p in lab_paths]
        super().__init__("", {"LabSessionManager": {"lab_path": self.lab_paths}}, root_dir=root_dir,
                         startup_timeout=startup_timeout)
        for section, values in (extra_config or {}).items():
            self.extra_config.setdefault(section, {}).update(values)
        self._tmp: str | None = None

    def __enter__(self) -> "LocalServer":
        self._tmp = tempfile.mkdtemp(prefix="labkernel-test-")
        self.workdir = Path(self._tmp)
        try:
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def run_tests(api: Any, selected: Iterable[str], *, out: TextIO, step_timeout: float,
              start_timeout: float) -> list[LabResult]:
    """Test the selected labs (default: all but ``shell``) and print progress to ``out``."""
    def say(line: str) -> None:
        print(line, file=out, flush=True)
    return LabTester(api, step_timeout=step_timeout, start_timeout=start_timeout, on_line=say).run(selected)
