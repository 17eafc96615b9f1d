"""The project's own Killercoda-format scenarios (``tests/scenarios/``), run with
``labkernel test`` under every containment mode of this machine, one server per mode.

Each scenario exercises one cause of issue 14's "Real scenarios don't really run".
What each comes to, as ``labkernel test`` says it (verdict: verified / unverified /
failed steps); the test asserts exactly this per scenario and mode, and prints the
table of what it found at the end of the module:

======================  ==================  ==========================================
scenario                sandbox             pidns, cgroup, subreaper, scan
======================  ==================  ==========================================
home-and-root           passed 2/0/0        failed 0/0/2: ``~`` is the server's home
                                            and ``/root`` the host's, so the check of
                                            ``/root/kc-home`` sees neither the
                                            learner's file nor the setup's
tmp-marker              passed 1/0/0        passed 1/0/0 (the host's ``/tmp`` is
                                            cleaned of the marker before each mode)
tmp-marker-again        passed 1/0/0        failed 0/0/1: the first run's marker is in
                                            the shared ``/tmp``, so the check passes
                                            before the solution
background-handshake    passed 1/0/0 (x)    passed 1/0/0 (x)
background-fails        passed 1/0/0 (x)    passed 1/0/0 (x), with the session's note
placeholder             passed 1/0/0 (x)    passed 1/0/0 (x)
pager                   passed 1/0/0        passed 1/0/0; ``man`` and ``less`` named
                                            in the step's notes, ended with ``q``
heredoc-indented        passed 1/0/0 (x)    passed 1/0/0 (x)
root-only               passed 2/0/0        not run: a root server without a sandbox
                                            would write this machine's ``/etc`` and
                                            ``/opt`` and add a user to it
package-install         passed 2/0/0        not run: it would install a package on
                                            this machine
step-without-check      passed 1/1/0        passed 1/1/0: step 2 is entered after the
                                            unchecked step 1 (its setup runs)
needs-kubernetes        skipped (x)         skipped (x): needs kubernetes (``kubectl``
                                            here reaches no cluster)
======================  ==================  ==========================================

(x): what the Killercoda semantics of issue 14 (item 2) made pass: background
scripts beside the shell, a failing background as a note, placeholders as URLs,
fence indentation stripped, and ``needs`` in the catalog. Before them the
handshake's and the failing background's sessions failed at their setup,
``{{TRAFFIC_HOST1_8080}}`` was typed literally, the indented here-document's
``   EOF`` never ended it, and the Kubernetes scenario ran and failed. ``XFAIL``
holds a scenario expected to fail, with why; none is now.

Nothing of a sandboxed run reaches the host (no file in ``/tmp``, ``/root``,
``/opt``, ``/etc``, no user, no package): the per-mode test checks that too. In the
fallback modes the host's ``/tmp`` is shared, by design of those modes.

Runtime, measured on this 2-core VM at a load average of 8 to 12 (other engineers'
tests), before the other branch: 39 to 53 s per mode (server start ~6 s; the pager's
two held programs ~4 s), 4 min 20 s for the module. Of each mode's time ~11 s is
waiting out what the xfails lack (the handshake's 5 s setup timeout, 3 s each for
the placeholder's and the Kubernetes scenario's checks), and in the fallback modes
6 s more for home-and-root's two failing checks.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from labkernel.clients.cli import main
from support.api import FAST
from support.containment import MODE_PARAMS
from support.serverproc import ServerProcess

pytestmark = [pytest.mark.server, pytest.mark.containment]

SCENARIOS = Path(__file__).resolve().parent / "scenarios"

#: (verdict, verified, unverified, failed) per scenario: under the sandbox, and under
#: the fallback modes (None: not run there).
Expected = tuple[str, int, int, int]
EXPECTED: dict[str, tuple[Expected, Expected | None]] = {
    "home-and-root": (("passed", 2, 0, 0), ("failed", 0, 0, 2)),
    "tmp-marker": (("passed", 1, 0, 0), ("passed", 1, 0, 0)),
    "tmp-marker-again": (("passed", 1, 0, 0), ("failed", 0, 0, 1)),
    "background-handshake": (("passed", 1, 0, 0), ("passed", 1, 0, 0)),
    "background-fails": (("passed", 1, 0, 0), ("passed", 1, 0, 0)),
    "placeholder": (("passed", 1, 0, 0), ("passed", 1, 0, 0)),
    "pager": (("passed", 1, 0, 0), ("passed", 1, 0, 0)),
    "heredoc-indented": (("passed", 1, 0, 0), ("passed", 1, 0, 0)),
    "root-only": (("passed", 2, 0, 0), None),
    "package-install": (("passed", 2, 0, 0), None),
    "step-without-check": (("passed", 1, 1, 0), ("passed", 1, 1, 0)),
    "needs-kubernetes": (("skipped", 0, 0, 0), ("skipped", 0, 0, 0)),
}
#: Why a scenario is not run without the sandbox.
NOT_RUN = "not run without the sandbox: as root it would change this machine ({})"
HOST_CHANGES = {"root-only": "its /etc and /opt, a user", "package-install": "a package installed"}

XFAIL: dict[str, str] = {}

#: What the scenarios write outside their folder, as seen from the host.
HOST_PATHS = ("/tmp/labkernel-kc-*", "/root/kc-home", "/opt/kc-demo", "/etc/kc-demo.conf", "/usr/local/bin/kc-hello")
#: Of those, what the fallback modes leave by design: markers in the shared /tmp.
SHARED_TMP = "/tmp/labkernel-kc-"


@dataclass
class Outcome:
    """One lab's result, read from the JUnit file."""

    verdict: str
    verified: int = 0
    unverified: int = 0
    failed: int = 0
    skipped: int = 0
    #: The session's notes, and each step's.
    notes: str = ""
    step_notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> Expected:
        return (self.verdict, self.verified, self.unverified, self.failed)


@dataclass
class Run:
    mode: str
    exit_status: int
    output: str
    outcomes: dict[str, Outcome]
    seconds: float
    #: What was found on the host after the run (see HOST_PATHS).
    leftovers: list[str]


RUNS: dict[str, Run] = {}


def read_junit(path: Path) -> dict[str, Outcome]:
    outcomes = {}
    for suite in ET.parse(path).getroot().findall("testsuite"):
        verdict = suite.find("properties/property[@name='verdict']")
        assert verdict is not None, ET.tostring(suite, encoding="unicode")
        outcome = Outcome(verdict.get("value", ""), notes=suite.findtext("system-out") or "")
        for case in suite.findall("testcase"):
            if case.get("name") in ("start", "needs"):
                continue
            skipped = case.find("skipped")
            if case.find("failure") is not None:
                outcome.failed += 1
            elif skipped is not None:
                if skipped.get("message", "").startswith("unverified"):
                    outcome.unverified += 1
                else:
                    outcome.skipped += 1
            else:
                outcome.verified += 1
            outcome.step_notes.append(case.findtext("system-out") or "")
        outcomes[suite.get("name", "")] = outcome
    return outcomes


def host_leftovers() -> list[str]:
    found = sorted(p for pattern in HOST_PATHS for p in glob.glob(pattern))
    if subprocess.run(["id", "kc-demo"], capture_output=True).returncode == 0:
        found.append("user kc-demo")
    if subprocess.run(["dpkg-query", "-W", "kc-hello"], capture_output=True).returncode == 0:
        found.append("package kc-hello")
    return found


def clean_shared_tmp() -> None:
    """Remove the markers an earlier run in a fallback mode left in the host's /tmp."""
    for path in glob.glob(SHARED_TMP + "*"):
        os.unlink(path)


def table(runs: dict[str, Run]) -> str:
    """Each scenario's outcome per mode (verdict verified/unverified/failed), and each mode's time."""
    modes = list(runs)
    rows = [["scenario", *modes]]
    for name in EXPECTED:
        row = [name]
        for mode in modes:
            o = runs[mode].outcomes.get(name)
            row.append("not run" if o is None else f"{o.verdict} {o.verified}/{o.unverified}/{o.failed}")
        rows.append(row)
    rows.append(["seconds", *(f"{runs[m].seconds:.0f}" for m in modes)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


@pytest.fixture(scope="module", autouse=True)
def _print_table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if RUNS:
        text = ("labkernel test on tests/scenarios, per containment mode (verdict verified/unverified/failed):\n"
                + table(RUNS))
        # Printed past pytest's capture: the table is this module's report.
        capture: Any = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            print("\n" + text)


@pytest.fixture(scope="module", params=MODE_PARAMS)
def suite(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """``labkernel test`` on the scenarios, against one server in this containment mode."""
    mode: str = request.param
    if os.geteuid() != 0:
        pytest.skip("the scenarios are written for a server that is root (as Killercoda's machines are)")
    base = tmp_path_factory.mktemp(f"scenarios-{mode}")
    (base / "home").mkdir()
    labs = [name for name, expected in EXPECTED.items() if expected[mode != "sandbox"] is not None]
    clean_shared_tmp()
    started = time.monotonic()
    manager = {"containment": mode, "lab_path": [str(SCENARIOS)], "sandbox_dir": str(base / "sandboxes"),
               # A lab's shell as a deployment has it (a login bash), not the tests' bare one.
               "shell_command": ["bash", "-l"],
               # Quick to end, quick to give up where a part is missing (the xfails).
               **FAST, "setup_timeout": 5.0, "check_timeout": 15.0, "kill_timeout": 15.0}
    # HOME: what the fallback modes' labs take for ~, not this machine's /root.
    with ServerProcess(base / "server", manager=manager, env={"HOME": str(base / "home")}) as server:
        out = io.StringIO()
        junit = base / "results.xml"
        argv = ["test", "--url", server.url, "--token", server.token, "--timeout", "3", "--junit", str(junit)]
        status = main([*argv, *(a for name in labs for a in ("--lab", name))], out=out)
    run = Run(mode, status, out.getvalue(), read_junit(junit), time.monotonic() - started, host_leftovers())
    print(run.output)
    RUNS[mode] = run
    try:
        yield run
    finally:
        clean_shared_tmp()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("scenario", [pytest.param(name, marks=[pytest.mark.xfail(reason=XFAIL[name], strict=True)]
                                                   if name in XFAIL else []) for name in EXPECTED])
def test_each_scenario_comes_out_as_expected_in_each_mode(suite: Run, scenario: str) -> None:
    expected = EXPECTED[scenario][suite.mode != "sandbox"]
    if expected is None:
        pytest.skip(NOT_RUN.format(HOST_CHANGES[scenario]))
    outcome = suite.outcomes.get(scenario)
    assert outcome is not None, suite.output
    assert outcome.key == expected, suite.output
    if scenario == "pager":
        notes = " ".join(outcome.step_notes)
        assert "left man holding the terminal" in notes and "left less holding the terminal" in notes, notes
        assert notes.count("q ended it") == 2, notes
    if scenario == "background-fails":
        assert outcome.notes.strip(), "the failed background script is a note on the session, printed under it"
        assert "  note: " in suite.output
    if scenario == "needs-kubernetes":
        assert f"- {scenario}: skipped: needs kubernetes" in suite.output


def test_the_exit_status_says_what_the_report_and_junit_say_and_nothing_reached_the_host(suite: Run) -> None:
    verdicts = [o.verdict for o in suite.outcomes.values()]
    assert suite.exit_status == (1 if "failed" in verdicts else 0), suite.output
    last = suite.output.strip().splitlines()[-2]  # then "JUnit XML: FILE"
    assert last.startswith(f"{len(verdicts)} lab(s): {verdicts.count('passed')} passed, "
                           f"{verdicts.count('unverified')} unverified, {verdicts.count('skipped')} skipped, "
                           f"{verdicts.count('failed')} failed; steps: "), suite.output
    if suite.mode == "sandbox":
        assert suite.leftovers == [], "a sandboxed lab wrote to the host"
    else:
        # The shared /tmp is what these modes are; nothing else may be there (the
        # scenarios that would write elsewhere are not run).
        assert SHARED_TMP + "step1-applied" in suite.leftovers
        assert all(p.startswith(SHARED_TMP) for p in suite.leftovers), suite.leftovers
