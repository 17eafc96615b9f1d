"""``labkernel test``: run each lab's steps as a learner would, and say what was verified.

For every lab, a session is started; for every step, the step's check must fail
before its solution is typed (a check that passes on a fresh lab would pass a
learner who did nothing), then the solution's commands are run in the terminal
through ``Lab.run_lines`` (its prompt markers, which no command's output can fake):
each line is typed only when the shell is back at its prompt (or asks for the next
line of a here-document or loop), and each command's exit status is read. Then the
check is polled until it passes or the step's time runs out.

What a step comes to:

- **verified**: its check failed before the solution and passed after it;
- **unverified**: it has no check; its solution ran and every command exited 0.
  The tester then marks it done (``POST …/check`` of that step, as the panel's
  "Mark done" does), so the server enters the next step: its setup runs and its
  foreground is typed, as for a learner;
- **failed**: the check passed before the solution, or never passed after it; a
  solution command that did not end, could not be typed whole (a here-document that
  never ends), or — in a step without a check — exited non-zero;
- **skipped**: a check but no solution to type, or the lab stopped before it.

A lab is *passed* when no step failed and at least one was verified, *unverified*
when none failed and none was verified (nothing about it was checked), *failed*
when a step failed or it could not start, and *skipped* when it needs what this
server lacks (its catalog entry's ``needs``: ``kubernetes``, ``docker``,
``systemd``, ``internet``, ``root``; looked for once, in a session of the plain
``shell`` lab, see ``Needs``). ``strict`` turns unverified and skipped steps into
failures. The exit status and the JUnit XML say the same as the report.

A full-screen program left running by a solution (``man``, ``less``, ``vim``,
``watch``, ``top``: ``Lab.run_lines(held=…)`` sees it take the terminal) is
reported on the step, naming it, and ended as a learner would: ``q``, then
Ctrl-C, then Esc ``:q!`` Enter, each given a moment; the solution's later lines
are typed once the prompt is back. If none of them ends it, the lab ends there,
failed, naming the program. The API does not say which process has the
terminal, so the program is named from the command (``ls | less``: ``less``).

The pieces, so that each can be tested on its own:

- ``LabResult`` / ``StepResult``: what happened, with timings and the output that
  explains a failure; ``format_step``, ``format_report`` and ``junit_xml`` turn them
  into the progress lines, the closing report and JUnit XML (pure functions).
- ``LabTester``: the step loop, talking to a server through a ``LabClient``.
- ``LocalServer``: a ``jupyter server`` subprocess with labkernel on a free port and
  a random token, its log captured to show when it fails to start
  (``localserver.JupyterServer`` for the labs given).
"""

from __future__ import annotations

import re
import shlex
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TextIO

from .client import LabClient, LabError
from .lab import Lab, LabHeld
from .localserver import JupyterServer
from .localserver import ServerFailed as ServerFailed  # where cli.py and callers catch it
from .results import IncompleteCommand, LabBusy, LabEnded, LabTimeout
from .screen import has_command

# What a step comes to.
VERIFIED, UNVERIFIED, FAILED, SKIPPED = "verified", "unverified", "failed", "skipped"
# What a lab comes to (besides FAILED, UNVERIFIED and SKIPPED).
PASSED = "passed"
_MARK = {VERIFIED: "✓", PASSED: "✓", UNVERIFIED: "·", FAILED: "✗", SKIPPED: "-"}
#: How much of a check's or terminal's output a report quotes.
_QUOTE_CHARS = 4000
#: The keys that end a full-screen program, tried in this order: less, man, top (q);
#: watch and most others (Ctrl-C); vi and vim (Esc :q! Enter).
_RECOVERY_KEYS = (("q", "q"), ("\x03", "Ctrl-C"), ("\x1b:q!\r", "Esc :q! Enter"))
#: The echo of the line that installs ``Lab``'s markers (``screen.setup_line``), to its end.
_SETUP_LINE = re.compile(r"[^\n]*__lk_[0-9a-f]{16}\(\)\{[^\n]*\n?")
#: Programs that take the keyboard, to name in a command (``ls | less`` → less).
_INTERACTIVE = {"less", "more", "most", "man", "vi", "vim", "view", "nvim", "nano", "emacs", "watch",
                "top", "htop", "tmux", "screen", "mc", "pager", "journalctl", "systemctl", "git"}


# -- results ------------------------------------------------------------------------

@dataclass
class StepResult:
    """One step of one lab."""

    number: int
    title: str
    status: str
    seconds: float = 0.0
    #: One sentence: why it failed, was skipped, or is unverified.
    message: str = ""
    #: The check's last output, or the failing command's, for a failure.
    output: str = ""
    #: What happened on the way that did not decide the step (a pager ended with q,
    #: a command of a checked step that exited non-zero).
    notes: list[str] = field(default_factory=list)


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
    #: Why it was not run ("needs kubernetes"); "" if it was.
    skipped: str = ""
    #: The session's notes (``GET …/session/{id}``: a background script that failed).
    notes: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(s.status == status for s in self.steps)

    def verdict(self, strict: bool = False) -> str:
        """``passed``, ``unverified``, ``skipped`` or ``failed`` (see the module docstring)."""
        if self.error or self.count(FAILED) or (strict and (self.count(UNVERIFIED) or self.count(SKIPPED))):
            return FAILED
        if self.skipped:
            return SKIPPED
        return PASSED if self.count(VERIFIED) else UNVERIFIED

    def failed(self, strict: bool = False) -> bool:
        return self.verdict(strict) == FAILED


def format_step(lab_id: str, step: StepResult) -> str:
    """The progress line of a step."""
    line = f"  {_MARK[step.status]} {step.number}. {step.title}  ({step.seconds:.1f} s)"
    if step.status != VERIFIED and step.message:
        line += f": {step.message}"
    for note in step.notes:
        line += f"\n      note: {note}"
    return line


def format_lab_error(result: LabResult) -> str:
    """The progress line of a lab that could not be run."""
    where = f" ({result.path})" if result.path else ""
    return f"✗ {result.lab_id}{where}: {result.error}"


def format_verdict(result: LabResult, strict: bool = False) -> str:
    """A lab's line in the closing report: its verdict and its step counts."""
    verdict = result.verdict(strict)
    if result.skipped and verdict == SKIPPED:
        return f"{_MARK[SKIPPED]} {result.lab_id}: skipped: {result.skipped}"
    if result.error:
        return f"{_MARK[FAILED]} {result.lab_id}: failed: {result.error}"
    counts = ", ".join(f"{result.count(k)} {k}" for k in (VERIFIED, UNVERIFIED, FAILED, SKIPPED)
                       if result.count(k) or k == VERIFIED)
    why = {UNVERIFIED: ": no step of it was verified (no check ran)",
           FAILED: ": unverified or skipped steps fail under --strict" if strict and not result.count(FAILED)
           else ""}.get(verdict, "")
    return f"{_MARK[verdict]} {result.lab_id}: {verdict} ({counts}){why}"


def _quote(text: str, indent: str = "    | ") -> str:
    text = strip_ansi(text).rstrip()
    if len(text) > _QUOTE_CHARS:
        text = "…" + text[-_QUOTE_CHARS:]
    return "\n".join(indent + line for line in text.splitlines()) if text else indent + "(no output)"


def summary(results: list[LabResult], strict: bool = False) -> str:
    """The last line of the report: labs by verdict, steps by status."""
    labs = {k: sum(r.verdict(strict) == k for r in results) for k in (PASSED, UNVERIFIED, SKIPPED, FAILED)}
    steps = {k: sum(r.count(k) for r in results) for k in (VERIFIED, UNVERIFIED, FAILED, SKIPPED)}
    return (f"{len(results)} lab(s): " + ", ".join(f"{n} {k}" for k, n in labs.items())
            + "; steps: " + ", ".join(f"{n} {k}" for k, n in steps.items()))


def format_report(results: list[LabResult], strict: bool = False) -> str:
    """The closing report: each lab's verdict, every failure with the output that
    explains it, then the counts."""
    lines = [format_verdict(r, strict) for r in results] + [""]
    for r in results:
        if r.error:
            lines.append(format_lab_error(r))
            if r.output:
                lines.append(_quote(r.output))
        for s in r.steps:
            if s.status == FAILED:
                lines.append(f"✗ {r.lab_id} › {s.number}. {s.title}: {s.message}")
                if s.output:
                    lines.append(_quote(s.output))
        if not r.error and r.output and r.count(FAILED):
            lines.append("  end of the terminal's output:")
            lines.append(_quote(r.output[-1500:]))
        if lines[-1]:
            lines.append("")
    lines.append(summary(results, strict))
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


def junit_xml(results: list[LabResult], strict: bool = False) -> str:
    """JUnit XML: a testsuite per lab (its verdict as the property ``verdict``), a
    testcase per step; a lab that could not run has one case, ``start``, failed, and
    a skipped lab one, ``needs``, skipped. An unverified step is ``<skipped>`` (a
    ``<failure>`` under ``strict``), so the file fails exactly when the exit status does."""
    root = ET.Element("testsuites", name="labkernel test")
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    total_time = 0.0
    for r in results:
        suite = ET.SubElement(root, "testsuite", name=r.lab_id)
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="verdict", value=r.verdict(strict))
        if r.path:
            ET.SubElement(props, "property", name="path", value=r.path)
        cases = failures = skipped = 0

        def case(name: str, seconds: float) -> ET.Element:
            return ET.SubElement(suite, "testcase", classname=r.lab_id, name=_xml_text(name), time=f"{seconds:.3f}")

        if r.error:
            failure = ET.SubElement(case("start", r.seconds), "failure", message=_xml_text(r.error))
            failure.text = _xml_text(r.output)
            cases, failures = cases + 1, failures + 1
        elif r.skipped:
            ET.SubElement(case("needs", 0.0), "skipped", message=_xml_text(f"skipped: {r.skipped}"))
            cases, skipped = cases + 1, skipped + 1
        for s in r.steps:
            element = case(f"{s.number}. {s.title}", s.seconds)
            cases += 1
            message = _xml_text(f"{s.status}: {s.message}" if s.message else s.status)
            if s.status == FAILED or (strict and s.status in (UNVERIFIED, SKIPPED)):
                failure = ET.SubElement(element, "failure", message=message)
                failure.text = _xml_text(s.output)
                failures += 1
            elif s.status in (UNVERIFIED, SKIPPED):
                ET.SubElement(element, "skipped", message=message)
                skipped += 1
            if s.notes:
                ET.SubElement(element, "system-out").text = _xml_text("\n".join(s.notes))
        if r.notes:
            ET.SubElement(suite, "system-out").text = _xml_text("\n".join(r.notes))
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


# -- what a lab needs ---------------------------------------------------------------------

#: How to tell, in a lab shell of the server, that a need is met: a command that exits 0.
NEED_PROBES = {
    "root": '[ "$(id -u)" = 0 ]',
    "kubernetes": "command -v kubectl >/dev/null && timeout 15 kubectl get nodes >/dev/null 2>&1",
    "docker": ("{ command -v docker >/dev/null && timeout 15 docker info >/dev/null 2>&1; } || "
               "{ command -v podman >/dev/null && timeout 15 podman info >/dev/null 2>&1; }"),
    "systemd": "[ -d /run/systemd/system ] && command -v systemctl >/dev/null",
    # Where the scenarios download from most (GitHub releases, raw files).
    "internet": "timeout 10 bash -c 'exec 3<>/dev/tcp/github.com/443' 2>/dev/null",
}


class Needs:
    """Which needs of labs this server meets, found out once each.

    ``have`` are taken as met without looking (``--have``). The others are looked
    for by running ``NEED_PROBES``' command in a session of the plain ``shell`` lab
    (what a lab's shell sees: the same containment, user and network), started on
    first use and stopped by ``close``. A need without a probe is not met.
    """

    def __init__(self, client: LabClient, have: Iterable[str] = (), timeout: float = 60.0):
        self.client, self.timeout = client, timeout
        self.found: dict[str, bool] = {name: True for name in have}
        self.why: dict[str, str] = {}
        self._lab: Lab | None = None

    def met(self, need: str) -> bool:
        if need not in self.found:
            self.found[need] = self._probe(need)
        return self.found[need]

    def missing(self, needs: Iterable[str]) -> list[str]:
        return [n for n in needs if not self.met(n)]

    def _probe(self, need: str) -> bool:
        probe = NEED_PROBES.get(need)
        if probe is None:
            self.why[need] = "labkernel test cannot look for it; --have it if this server has it"
            return False
        try:
            if self._lab is None:
                self._lab = Lab("shell", client=self.client)
            return self._lab.run(probe, self.timeout).exit_status == 0
        except (LabError, LabTimeout, LabBusy, IncompleteCommand, ValueError) as e:
            self.why[need] = f"could not look for it: {e}"
            return False

    def describe(self, needs: list[str]) -> str:
        return "needs " + ", ".join(n + (f" ({self.why[n]})" if n in self.why else "") for n in needs)

    def close(self) -> None:
        if self._lab is not None:
            try:
                self._lab.stop()
            except LabError:
                pass
            self._lab = None


# -- the step loop ---------------------------------------------------------------------

class NoChecksApi(Exception):
    """The server answers 404 ``not_found`` for the checks route: its labkernel predates it."""


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


def program_of(command: str) -> str:
    """The program of ``command`` that most likely holds the terminal: a known
    interactive one (``ls | less`` → ``less``), else the last pipeline's first word."""
    words: list[str] = []
    for part in re.split(r"\|\|?|&&|;|\n", command):
        try:
            tokens = shlex.split(part)
        except ValueError:
            tokens = part.split()
        while tokens and (re.match(r"^\w+=", tokens[0]) or tokens[0] in ("sudo", "env", "exec", "time", "nohup")):
            tokens = tokens[1:]
        if tokens:
            words.append(Path(tokens[0]).name)
    for word in reversed(words):
        if word in _INTERACTIVE:
            return word
    return words[-1] if words else command.strip()


@dataclass
class _Typed:
    """How typing a step's solution went."""

    #: Why it went wrong in a way that fails the step (a command that did not end,
    #: could not be typed whole); "" if every command ran to its end.
    failure: str = ""
    #: The first command that exited non-zero, with its status; "" if none did.
    nonzero: str = ""
    #: The output that explains ``failure`` or ``nonzero``.
    output: str = ""
    #: The session ended, or the terminal stayed held: the lab cannot go on.
    fatal: bool = False


class LabTester:
    """Runs the steps of labs against one server, reporting each step as it ends."""

    #: Seconds a full-screen program may have the terminal before it counts as held.
    held = 1.5
    #: Seconds each recovery key (q, Ctrl-C, Esc :q!) is given to end a held program.
    recover_wait = 3.0

    def __init__(self, client: LabClient, *, step_timeout: float = 60.0, start_timeout: float = 120.0,
                 command_timeout: float = 120.0, have: Iterable[str] = (),
                 on_line: Callable[[str], None] = print):
        self.client = client
        self.step_timeout, self.start_timeout, self.command_timeout = step_timeout, start_timeout, command_timeout
        self.needs = Needs(client, have)
        self.say = on_line

    def run(self, selected: Iterable[str] = ()) -> list[LabResult]:
        labs, results = plan(self.client.catalog(), selected)
        for r in results:
            self.say(format_lab_error(r))
        try:
            for lab in labs:
                results.append(self.test_lab(lab))
        finally:
            self.needs.close()
        return results

    def test_lab(self, lab: dict[str, Any]) -> LabResult:
        """Start a session of ``lab`` (a catalog entry), test each step, stop it."""
        result = LabResult(lab_id=lab["id"], title=lab.get("title", ""))
        self.say(f"{lab['id']}  {lab.get('title', '')}")
        started = time.monotonic()
        needs = lab.get("needs") or []
        missing = self.needs.missing([needs] if isinstance(needs, str) else needs)
        if missing:
            result.skipped = self.needs.describe(missing)
            self.say(f"  {_MARK[SKIPPED]} skipped: {result.skipped}")
            return result
        steps = lab.get("stepList")
        if steps is None and lab.get("steps"):
            result.error = "the server lists the lab's steps only as a count: its labkernel predates steps"
            self.say(format_lab_error(result))
            return result
        session: Lab | None = None
        try:
            session = Lab(lab["id"], client=self.client)
            problem = self._wait_started(session)
            if problem:
                result.error, result.output = problem, self._transcript(session)
                self.say(format_lab_error(result))
                return result
            for number, step in enumerate(steps or [], start=1):
                step_result, fatal = self._step(session, number, step)
                result.steps.append(step_result)
                self.say(format_step(lab["id"], step_result))
                if fatal:
                    break
        except NoChecksApi as e:
            result.error = str(e)
            self.say(format_lab_error(result))
        except (LabError, TimeoutError, OSError) as e:
            result.error = f"the test could not go on: {e}"
            self.say(format_lab_error(result))
        finally:
            if session is not None:
                result.notes = self._notes(session)
                for note in result.notes:
                    self.say(f"  note: {note}")
                if result.failed() and not result.output:
                    result.output = self._transcript(session)
                try:
                    session.stop()
                except LabError:
                    pass  # it may have ended already; the report says what matters
            result.seconds = time.monotonic() - started
        return result

    # -- one session -------------------------------------------------------------------------

    def _wait_started(self, session: Lab) -> str:
        """Wait for the lab's setup; return why it did not start, or ""."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            model = self.client.get(session.session_id)
            status = model["status"]
            if status == "running":
                return ""
            if status != "starting":
                code = model.get("exitCode")
                return (f"the session is {status} before the first step"
                        f"{f' (exit code {code})' if code is not None else ''}; the setup's output follows")
            if time.monotonic() > deadline:
                return f"the session was still starting (setup running) after {self.start_timeout:g} s"
            time.sleep(0.2)

    def _transcript(self, session: Lab) -> str:
        """The end of the terminal's output, as the report quotes it (without the line
        that installed ``Lab``'s markers: on a screen it erases itself)."""
        try:
            end = int(self.client.get(session.session_id).get("outputOffset", 0))
            text = self.client.read(session.session_id, max(0, end - 64 * 1024))["data"]
        except (LabError, OSError):
            return ""
        return _SETUP_LINE.sub("", text)

    def _notes(self, session: Lab) -> list[str]:
        try:
            notes = self.client.get(session.session_id).get("notes") or []
        except (LabError, OSError):
            return []
        return [str(n) for n in notes]

    def _check(self, session: Lab, number: int) -> dict[str, Any]:
        """``POST …/check`` of one step: that step's result. For a step without a
        check this is what the panel's "Mark done" does: the step passes and the server
        enters the next one."""
        try:
            report = session.check(number)
        except LabError as e:
            if e.status == 404 and e.code == "not_found":
                raise NoChecksApi("the server has no checks API (POST …/check answered 404 not_found): "
                                  "its labkernel is older than this command") from e
            raise
        for result in report.results:
            if result.get("step") == number:
                return result
        raise LabError(None, "bad_response", f"the check answer has no result for step {number}: {report.answer}")

    def _step(self, session: Lab, number: int, step: dict[str, Any]) -> tuple[StepResult, bool]:
        """Test one step; returns its result and whether the lab cannot go on."""
        title, solution = step.get("title") or f"Step {number}", list(step.get("solution") or [])
        started = time.monotonic()
        notes: list[str] = []

        def done(status: str, message: str = "", output: str = "", fatal: bool = False) -> tuple[StepResult, bool]:
            return StepResult(number, title, status, time.monotonic() - started, message, output, notes), fatal

        try:
            has_check, early = bool(step.get("hasCheck")), None
            if has_check:
                before = self._check(session, number)
                if before.get("passed") is None:
                    has_check = False  # the server says it has no check after all
                elif before.get("passed"):
                    early = before
                elif not solution:
                    return done(SKIPPED, "a check but no solution to type ({{exec}} blocks or solution commands)")
            typed = self._type(session, solution, notes)
            if typed.fatal:
                return done(FAILED, typed.failure, typed.output, fatal=True)
            if early is not None:
                return done(FAILED, "the check passes before the solution is typed: it would pass a learner "
                                    "who did nothing", early.get("message", ""))
            if not has_check:
                # Marked done even when its solution failed, as a learner would click on:
                # the next step is entered (its setup runs, its foreground is typed).
                self._check(session, number)
                if typed.failure or typed.nonzero:
                    return done(FAILED, typed.failure or typed.nonzero, typed.output)
                if not solution:
                    return done(UNVERIFIED, "no check and no solution: nothing was run or verified")
                return done(UNVERIFIED, "no check; its solution ran and exited 0")
            if typed.failure:
                return done(FAILED, typed.failure, typed.output)
            if typed.nonzero:
                notes.append(typed.nonzero)
            deadline, interval = time.monotonic() + self.step_timeout, 0.2
            while True:
                last = self._check(session, number)
                if last.get("passed") is True:
                    return done(VERIFIED)
                if time.monotonic() >= deadline:
                    why = "timed out" if last.get("timedOut") else "still fails"
                    return done(FAILED, f"the check {why} {self.step_timeout:g} s after the solution ran",
                                last.get("message", ""))
                time.sleep(interval)
                interval = min(interval * 1.5, 2.0)
        except LabEnded as e:
            return done(FAILED, f"the session ended: {e.message}", fatal=True)

    def _type(self, session: Lab, entries: list[str], notes: list[str]) -> _Typed:
        """Run the solution entries in the terminal, each command once the prompt is back."""
        typed = _Typed()
        for entry in entries:
            if entry.startswith("\x03"):  # {{exec interrupt}}: Ctrl-C first; run_lines waits for the prompt
                session.send("\x03")
                entry = entry[1:]
            text = entry
            while has_command(text):
                try:
                    for ran in session.run_lines(text, self.command_timeout, each=True, held=self.held):
                        if ran.exit_status != 0 and not typed.nonzero:
                            typed.nonzero = f"`{ran.command}` exited with status {ran.exit_status}"
                            typed.output = ran.output
                    text = ""
                except LabHeld as e:
                    program = program_of(e.command)
                    how = self._recover(session)
                    if how is None:
                        typed.output = e.output
                        return self._held(session, typed, f"{program} (`{e.command}`)")
                    notes.append(f"`{e.command}` left {program} holding the terminal (a full-screen program "
                                 f"waiting for keys); {how} ended it")
                    text = e.rest
                except LabTimeout as e:
                    if e.command is None:  # the markers' setup line was not taken: nothing can be typed
                        typed.failure, typed.output, typed.fatal = str(e), e.output, True
                        return typed
                    typed.failure = f"`{e.command}` did not end within {self.command_timeout:g} s"
                    typed.output = e.output
                    if e.interrupted:
                        typed.failure += "; Ctrl-C ended it"
                        return typed
                    how = self._recover(session)
                    if how is None:
                        return self._held(session, typed, f"{program_of(e.command or '')} (`{e.command}`)")
                    typed.failure += f"; {how} ended it"
                    return typed
                except IncompleteCommand as e:
                    typed.failure = f"the solution could not be typed whole: {e}"
                    return typed
                except LabBusy as e:  # held before our first line: a foreground script, say
                    how = self._recover(session)
                    if how is None:
                        return self._held(session, typed, "a program (the lab's foreground script?)")
                    typed.failure = f"{e} ({how} ended it)"
                    return typed
        return typed

    def _recover(self, session: Lab) -> str | None:
        """End a program that holds the terminal as a learner would; returns the keys
        that did it, or None if the prompt did not come back."""
        for keys, name in _RECOVERY_KEYS:
            session.send(keys)
            if session.wait_idle(self.recover_wait) is not None:
                return name
        return None

    def _held(self, session: Lab, typed: _Typed, what: str) -> _Typed:
        typed.failure = (f"{what} holds the terminal: q, Ctrl-C and Esc :q! did not end it, so no "
                         "further command can be typed; the lab ends here")
        typed.fatal = True
        return typed


# -- a server of our own -----------------------------------------------------------------

class LocalServer(JupyterServer):
    """A ``jupyter server`` with labkernel for the labs in ``lab_paths``, as a context manager.

    It listens on 127.0.0.1 on a free port with a random token, in ``root_dir``
    (default: a fresh temporary folder, so that nothing but the given labs is in its
    catalog). Its log goes to a file, shown by ``log()`` when something fails; the
    temporary folder with it is removed when the block ends. ``env`` adds to its
    environment.
    """

    def __init__(self, lab_paths: list[Path], *, root_dir: Path | None = None, startup_timeout: float = 90.0,
                 extra_config: dict[str, Any] | None = None, env: Mapping[str, str] | None = None):
        self.lab_paths = [str(Path(p).resolve()) for p in lab_paths]
        super().__init__("", {"LabSessionManager": {"lab_path": self.lab_paths}}, root_dir=root_dir,
                         startup_timeout=startup_timeout, env=env)
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


def run_tests(client: LabClient, selected: Iterable[str], *, out: TextIO, step_timeout: float = 60.0,
              start_timeout: float = 120.0, command_timeout: float = 120.0,
              have: Iterable[str] = ()) -> list[LabResult]:
    """Test the selected labs (default: all but ``shell``) and print progress to ``out``
    (the verdicts, ``--strict`` or not, are the report's: ``LabResult.verdict``)."""
    def say(line: str) -> None:
        print(line, file=out, flush=True)
    return LabTester(client, step_timeout=step_timeout, start_timeout=start_timeout,
                     command_timeout=command_timeout, have=have, on_line=say).run(selected)
