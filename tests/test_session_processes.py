"""Every process of a session ends with it, against real servers and real shells.

Every way a session ends takes all of its processes with it (stop, lifetime, idle
culling, the shell's own exit, server shutdown), daemons that left the shell's
session included; Ctrl-C with a server that ignores SIGINT; job-control signals.

Processes of a session are found by having the shell print their pids, never by
searching the machine's process list (other tests run sessions in parallel). A
process counts as gone when it no longer exists or is a zombie: this machine's PID 1
may not reap orphans.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from support.api import FAST, PROMPT, eventually, run, wait_ended
from support.processes import NS, printed_pid
from support.serverproc import ServerProcess

SIGINT_BIT = 1 << (signal.SIGINT - 1)


@pytest.fixture
def labkernel_config() -> dict[str, Any]:
    """Every test of this module runs with quick culling and killing; ``@pytest.mark.labkernel``
    adds to it."""
    return dict(FAST)


# -- helpers ----------------------------------------------------------------------


def gone(proc: psutil.Process) -> bool:
    """True when the process no longer exists (or its pid is another's now) or is a zombie."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def still_there(procs: dict[str, psutil.Process]) -> list[str]:
    return [f"{name} (pid {p.pid})" for name, p in procs.items() if not gone(p)]


def sig_ignored(pid: int) -> int:
    """The SigIgn mask of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^SigIgn:\s*([0-9a-f]+)$", status, re.M).group(1), 16)


# The jobs a learner leaves behind: a background job, a nohup'd one (ignores SIGHUP)
# and a stopped one (sees SIGHUP only once continued).
JOB_LINES = [
    ("BG", f'sleep 999 & echo "BG=[$!{NS}]"'),
    ("NOHUP", f'nohup sleep 999 >/dev/null 2>&1 & echo "NOHUP=[$!{NS}]"'),
    ("STOPPED", f'sleep 998 & kill -STOP $!; echo "STOPPED=[$!{NS}]"'),
    ("SHELL", f'echo "SHELL=[$${NS}]"'),
]


def _check_jobs(text: str) -> dict[str, psutil.Process]:
    pids = {name: printed_pid(text, name) for name, _ in JOB_LINES}
    procs = {name: psutil.Process(pid) for name, pid in pids.items()}
    for name, proc in procs.items():
        assert not gone(proc), f"{name} is not running"
        # They all belong to the shell's session: what stopping it must end.
        assert os.getsid(proc.pid) == os.getsid(pids["SHELL"])
    return procs


async def start_jobs(api: Any, sid: str) -> dict[str, psutil.Process]:
    """Leave the three kinds of jobs in a session; returns them and the shell by name."""
    first = None
    for _, line in JOB_LINES:
        accepted = await api.command(sid, line)
        first = accepted["offset"] if first is None else first
    text, _ = await api.read_until(sid, r"SHELL=\[\d+@", first)
    procs = _check_jobs(text)
    await eventually(lambda: procs["STOPPED"].status() == psutil.STATUS_STOPPED, timeout=10)
    return procs


# -- every process of a session ends with it ----------------------------------------


async def test_delete_answers_only_once_every_process_of_the_session_is_gone(api):
    sid, _ = await api.shell()
    procs = await start_jobs(api, sid)
    stopped = await api.stop(sid)
    # No waiting: the DELETE answering is the promise.
    assert still_there(procs) == []
    assert stopped["status"] == "stopped"
    assert stopped["terminalActive"] is False


@pytest.mark.labkernel(lifetime=2.5)
async def test_session_expires_after_its_lifetime_with_every_process(api):
    sid, _ = await api.shell()
    procs = await start_jobs(api, sid)
    # A client keeps polling: the lifetime applies however busy the session is.
    _, last = await wait_ended(api, sid)
    assert last["status"] == "expired"
    session = await api.get(sid)
    assert session["status"] == "expired"
    assert session["terminalActive"] is False
    await eventually(lambda: not still_there(procs))


@pytest.mark.labkernel(cull_idle_timeout=1.0)
async def test_idle_session_is_culled_with_every_process_while_a_polled_one_survives(api):
    idle, _ = await api.shell()
    procs = await start_jobs(api, idle)
    busy, busy_offset = await api.shell()

    deadline = time.monotonic() + 30
    while (await api.get(idle))["status"] == "running":  # GET does not count as activity
        assert time.monotonic() < deadline, "the idle session was never culled"
        answer = await api.output(busy, busy_offset, wait=0.2)
        busy_offset = answer["nextOffset"]

    assert (await api.get(idle))["status"] == "expired"
    assert (await api.get(busy))["status"] == "running"
    await eventually(lambda: not still_there(procs))


async def test_jobs_left_behind_end_when_the_shell_exits_by_itself(api):
    sid, _ = await api.shell()
    procs = await start_jobs(api, sid)
    # bash refuses the first exit while a job is stopped.
    await run(api, sid, "exit 5", r"stopped jobs")
    await api.command(sid, "exit 5")
    _, last = await wait_ended(api, sid)
    assert (last["status"], last["exitCode"]) == ("exited", 5)
    await eventually(lambda: not still_there(procs))


async def test_daemons_that_leave_the_shells_session_are_stopped_with_it(api):
    """A program that calls setsid (a tmux server, a daemon) still ends with the lab."""
    sid, offset = await api.shell()
    await api.command(sid, f"setsid sh -c 'echo DAEMON=[$${NS}]; exec sleep 997' &")
    text, _ = await api.read_until(sid, r"DAEMON=\[\d+@pid:\[\d+\]\]", offset)
    daemon = psutil.Process(printed_pid(text, "DAEMON"))
    assert os.getsid(daemon.pid) == daemon.pid, "the daemon left the shell's session"
    await api.stop(sid)
    assert gone(daemon)


# -- a real server in its own process ---------------------------------------------


def start_jobs_on(server: ServerProcess, sid: str) -> dict[str, psutil.Process]:
    """``start_jobs`` in a subprocess server's session."""
    first = None
    for _, line in JOB_LINES:
        accepted = server.command(sid, line)
        first = accepted["offset"] if first is None else first
    text, _ = server.read_until(sid, r"SHELL=\[\d+@", first)
    return _check_jobs(text)


@pytest.mark.server
def test_server_shutdown_ends_every_process_of_every_session(tmp_path):
    server = ServerProcess(tmp_path, manager=FAST)
    try:
        procs: dict[str, psutil.Process] = {}
        for n in range(2):
            sid, _ = server.shell()
            procs.update({f"{name}{n}": p for name, p in start_jobs_on(server, sid).items()})
        assert len(still_there(procs)) == len(procs) == 8  # two shells and their jobs, running
    finally:
        server.terminate()
    # The server stops its extension and waits for it before it exits: no waiting here.
    assert still_there(procs) == [], server.log()


@pytest.fixture(scope="module")
def sigint_ignoring_server(tmp_path_factory):
    """A server started as ``jupyter server &`` from a script would be: SIGINT ignored."""
    server = ServerProcess(tmp_path_factory.mktemp("sigint"), manager=FAST, ignore_sigint=True)
    try:
        assert sig_ignored(server.proc.pid) & SIGINT_BIT, "the test server should ignore SIGINT"
        yield server
    finally:
        server.terminate()


def _foreground_sleep(server: ServerProcess, sid: str) -> tuple[psutil.Process, int]:
    accepted = server.command(sid, f"""bash -c 'echo "FG=[$${NS}]"; exec sleep 30'""")
    text, offset = server.read_until(sid, r"FG=\[\d+@pid:\[\d+\]\]", accepted["offset"])
    proc = psutil.Process(printed_pid(text, "FG"))
    # exec has happened once the process runs sleep; until then it may still be bash.
    deadline = time.monotonic() + 10
    while proc.name() != "sleep":
        assert time.monotonic() < deadline, proc.name()
        time.sleep(0.01)
    return proc, offset


@pytest.mark.server
@pytest.mark.parametrize("interrupt", [
    pytest.param({"data": "\u0003"}, id="ctrl-c-keystroke"),
    pytest.param({"type": "signal", "signal": "SIGINT"}, id="sigint-message"),
])
def test_interrupt_stops_the_foreground_program_when_the_server_ignores_sigint(
        sigint_ignoring_server, interrupt):
    server = sigint_ignoring_server
    sid, offset = server.shell()
    accepted = server.command(sid, f'echo "SH=[$${NS}]"')
    text, offset = server.read_until(sid, r"SH=\[\d+@pid:\[\d+\]\]", accepted["offset"])
    shell_pid = printed_pid(text, "SH")
    assert not sig_ignored(shell_pid) & SIGINT_BIT, "the shell inherited an ignored SIGINT"
    trap = server.command(sid, 'echo "TRAP=[$(trap -p INT)]"')
    text, offset = server.read_until(sid, r"TRAP=\[[^$\]]*\]", trap["offset"])
    assert "TRAP=[]" in text, "SIGINT is trapped or ignored in the shell"

    sleeper, offset = _foreground_sleep(server, sid)
    assert not sig_ignored(sleeper.pid) & SIGINT_BIT, "the foreground program ignores SIGINT"

    server.message(sid, **interrupt)
    # The prompt is back well before the 30 s sleep would have ended.
    server.read_until(sid, re.escape(PROMPT), offset, timeout=15)
    assert gone(sleeper)
    status = server.command(sid, 'echo "RC=[$?]"')
    server.read_until(sid, r"RC=\[130\]", status["offset"])
    server.ok("DELETE", "api", "labs", "session", sid)


# -- job control signals -----------------------------------------------------------


async def test_sigtstp_message_stops_the_foreground_job(api):
    sid, offset = await api.shell()
    accepted = await api.command(sid, f"""bash -c 'echo "FG=[$${NS}]"; exec sleep 30'""")
    text, offset = await api.read_until(sid, r"FG=\[\d+@pid:\[\d+\]\]", accepted["offset"])
    sleeper = psutil.Process(printed_pid(text, "FG"))

    await api.message(sid, type="signal", signal="SIGTSTP")
    await api.read_until(sid, re.escape(PROMPT), offset, timeout=15)
    assert sleeper.status() == psutil.STATUS_STOPPED
    await run(api, sid, "jobs", r"Stopped")
    await api.stop(sid)
    assert gone(sleeper)


async def test_sigtstp_and_sigcont_messages_stop_and_continue_the_foreground_group(api):
    sid, offset = await api.shell()
    # A foreground group whose leader ignores SIGTSTP (so the shell does not take the
    # terminal back) and whose sleep does not: SIGCONT then reaches the stopped sleep.
    line = f"""bash -c 'sleep 30 & echo "BG=[$!{NS}]"; trap "" TSTP; echo "ARM""ED"; wait'"""
    accepted = await api.command(sid, line)
    text, offset = await api.read_until(sid, r"ARMED", accepted["offset"])
    sleeper = psutil.Process(printed_pid(text, "BG"))
    await eventually(lambda: sleeper.status() == psutil.STATUS_SLEEPING, timeout=10)

    await api.message(sid, type="signal", signal="SIGTSTP")
    await eventually(lambda: sleeper.status() == psutil.STATUS_STOPPED, timeout=10)
    await api.message(sid, type="signal", signal="SIGCONT")
    await eventually(lambda: sleeper.status() == psutil.STATUS_SLEEPING, timeout=10)

    await api.message(sid, type="signal", signal="SIGTERM")
    await api.read_until(sid, re.escape(PROMPT), offset, timeout=15)
    await eventually(lambda: gone(sleeper), timeout=10)
