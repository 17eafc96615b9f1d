"""Running a lab's hidden scripts (setup, checks) apart from the terminal, and step progress.

``run_script`` runs ``bash`` on a script's text inside the session's enclosure
(``containment.Enclosure.script``: its PID namespace, cgroup or subreaper), so that
a check sees the lab's processes and whatever a script starts ends with the session
at the latest. Within the enclosure the script keeps apart from the learner's
terminal: it runs in a process session of its own behind its *reaper*, a small
``sh`` that reports its exit status on a socket and then waits to be let go, with a
marker of its own in its environment. Its own end (and a deadline) kills the
script's tree, its process session and what carries its marker, never the
learner's processes; the reaper last, since where it is the script's subreaper it
holds the script's orphans. The output is read up to a limit while the rest is
drained (a check that prints megabytes neither fills the server's memory nor
blocks on a full pipe). Secrets are masked in what it returns, before truncation,
so a secret cut at the limit cannot leak by half.

``StepProgress`` is the pure part: which steps passed, which is current, which
step has just been entered (its setup and foreground are then due).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Collection, Iterable

from ..containment import Enclosure, members, read_procs, reaper_argv, signal_all
from ..containment.scripts import with_default_signals

#: Set in a hidden script's environment, to find what it started when it is killed.
SCRIPT_MARKER_ENV = "LABKERNEL_SCRIPT"
#: Shown in place of a secret's value.
MASK = "********"
#: Scripts longer than this go to bash through a file (an argument has a size limit).
_MAX_ARG = 100_000
_READ_SIZE = 65536


class Masker:
    """Replaces every secret value in a text with ``MASK``."""

    def __init__(self, values: Iterable[str] = ()):
        self.values = sorted({v for v in values if v}, key=len, reverse=True)

    def __call__(self, text: str, cut: bool = False) -> str:
        """``text`` with every secret masked; with ``cut`` (the text was cut short),
        also the start of a secret it may end with.

        Masking works on the characters any secret covers, overlapping ones
        included, so that masking one secret cannot break up another and leave
        part of it shown; each run of covered characters becomes one ``MASK``.
        """
        if not self.values:
            return text
        covered = bytearray(len(text))
        for value in self.values:
            start = text.find(value)
            while start >= 0:
                covered[start:start + len(value)] = b"\1" * len(value)
                start = text.find(value, start + 1)
        if cut:
            tail = max((n for value in self.values for n in range(len(value) - 1, 0, -1)
                        if text.endswith(value[:n])), default=0)
            if tail:
                covered[len(text) - tail:] = b"\1" * tail
        out, i = [], 0
        for run in re.finditer(rb"\x01+", covered):
            out += [text[i:run.start()], MASK]
            i = run.end()
        return "".join(out) + text[i:]

    @property
    def longest(self) -> int:
        return max((len(v.encode()) for v in self.values), default=0)


@dataclass(frozen=True)
class ScriptResult:
    """How a hidden script ended."""

    #: Its exit status (128 + n when killed by signal n); None when it timed out.
    exit_code: int | None
    #: stdout and stderr together, decoded, secrets masked, truncated at the limit.
    output: str
    duration: float
    timed_out: bool
    #: Bytes it wrote in all, shown or not.
    total_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def kill_script(pgid: int | None, marker: bytes | None, reapers: Collection[int] = ()) -> None:
    """SIGKILL a script: the tree of its ``reapers``, its process session (``pgid``)
    and, with ``marker``, the processes whose environment holds it (those that left
    the session with setsid).

    Blocking (/proc scans): run it in an executor. What is found is stopped first,
    and looked for again until nothing new turns up, so that nothing forks between
    the scan and the kill; the reapers are killed last, since a subreaper's dying
    would hand its orphans to init.
    """
    sid = pgid if pgid is not None and pgid > 1 else None
    reapers = set(reapers)
    known: set[int] = set()
    stopped: set[int] = set()
    for _ in range(100):
        procs, marked = read_procs(marker)
        # Once found, a process stays a root: an orphan may have left the tree.
        pids = members(procs, roots=[*reapers, *known], sid=sid, marked=marked)
        known |= pids
        if not pids:
            return
        if pids <= reapers:  # the script left nothing: no need to stop anything
            signal_all(pids, signal.SIGKILL)
            return
        if pids - stopped:
            signal_all(pids - stopped, signal.SIGSTOP)
            stopped |= pids
            continue
        signal_all((pids - reapers) or pids, signal.SIGKILL)
        time.sleep(0.01)  # in an executor thread, never on the loop


class _ScriptProtocol(asyncio.SubprocessProtocol):
    """A script's output and end, seen apart.

    asyncio's own ``Process.wait()`` waits until the script's pipes close too, so a
    check that leaves a job holding its stdout would look hung: here the exit is
    its own event. The first ``keep`` bytes are kept and the rest counted and
    dropped — read to the end all the same, since a script blocked on a full pipe
    would never finish.
    """

    def __init__(self, keep: int):
        loop = asyncio.get_running_loop()
        self.keep, self.kept, self.total = keep, bytearray(), 0
        self.exited: asyncio.Future[None] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.total += len(data)
        if len(self.kept) < self.keep:
            self.kept += data[: self.keep - len(self.kept)]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if not self.eof.done():
            self.eof.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


def _message(kept: bytes, total: int, limit: int, mask: Masker) -> str:
    """The message of a script's output: masked, then cut at ``limit`` bytes."""
    text = kept.decode("utf-8", "replace")
    if total > len(kept):
        # The output was cut while reading: its end may hold the start of a secret
        # (and of a character), which masking shortened text around it may have
        # pulled under the limit.
        text = mask(text.rstrip("\ufffd"), cut=True)
    else:
        text = mask(text)
    if total > limit or len(text.encode()) > limit:
        text = text.encode()[:limit].decode("utf-8", "ignore")
        text += f"\n[output truncated: {total} bytes in all, the first {limit} shown]"
    return text


async def run_script(script: str, *, env: dict[str, str], cwd: str, timeout: float, output_limit: int,
                     mask: Masker | None = None, keep_background: bool = False,
                     enclosure: Enclosure | None = None) -> ScriptResult:
    """Run ``script`` with bash inside ``enclosure`` (prepared; none: beside the
    server), in its own process session behind its reaper; see the module docstring.

    With ``keep_background`` (setup scripts) processes the script leaves running
    when it succeeds are kept — a setup may start a service for the lab — and end
    with the session's enclosure (where that needs the script's reaper, it keeps
    it: ``Enclosure.needs_reapers``); otherwise every process of the script ends
    when it does.
    """
    mask = mask or Masker()
    loop = asyncio.get_running_loop()
    value = secrets.token_hex(8)
    env = {**env, SCRIPT_MARKER_ENV: value}
    marker_bytes = f"{SCRIPT_MARKER_ENV}={value}\0".encode()
    script_file = None
    if len(script) > _MAX_ARG:
        fd, script_file = tempfile.mkstemp(prefix="labkernel-", suffix=".sh")
        await loop.run_in_executor(None, _write_and_close, fd, script)
        argv = ["bash", script_file]
    else:
        argv = ["bash", "-c", script, "labkernel-script"]
    argv = enclosure.script(argv, cwd) if enclosure is not None else reaper_argv(argv, cwd)
    argv = with_default_signals(argv)  # nothing the server was started ignoring
    # The reaper reports on its stdin, and waits there to be let go.
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    started = time.monotonic()
    try:
        # Keep a little more than the limit: masking may shorten it, and a secret cut
        # at the limit must be recognised whole to be masked.
        transport, out = await loop.subprocess_exec(
            lambda: _ScriptProtocol(output_limit + mask.longest), *argv, stdin=theirs.fileno(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env, cwd=cwd,
            start_new_session=True)  # no preexec_fn: a vfork (see containment.scripts.PRCTL_EXEC)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    pid = transport.get_pid()

    def let_go() -> None:
        """End the reaper (the EOF it waits for), and its transport once it has exited
        (closing a running one would kill it)."""
        ours.close()
        if out.exited.done():
            transport.close()
        else:
            out.exited.add_done_callback(lambda _: transport.close())

    def kill() -> Any:
        reapers = enclosure.reapers(pid) if enclosure is not None else {pid}
        return loop.run_in_executor(None, kill_script, pid, marker_bytes, reapers)

    if enclosure is not None:
        enclosure.track_reaper(pid, let_go)
    status = asyncio.ensure_future(_read_status(loop, ours))
    timed_out = kept = False
    try:
        either: list[asyncio.Future[Any]] = [status, out.exited]
        done, _ = await asyncio.wait(either, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            timed_out = True
            await kill()
            await out.exited
        elif status not in done or status.result() is None:
            await out.exited  # the reaper ended without a word (it could not enter the folder)
        duration = time.monotonic() - started
        if status.done() and status.result() is not None:
            code = status.result()
        else:
            returncode = transport.get_returncode()
            assert returncode is not None
            code = returncode if returncode >= 0 else 128 - returncode
        failed = timed_out or code != 0
        if not keep_background or failed:
            # Jobs the script left behind end with it, and close the pipe.
            await kill()
        else:
            # The setup's services stay: where only its reaper holds them, it stays too.
            kept = enclosure is not None and enclosure.needs_reapers
        # Output still in the pipe; a service a setup left running may hold it open.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(out.eof), 2.0 if failed or not keep_background else 0.2)
    except asyncio.CancelledError:
        # The session is stopping, and ends what is in its enclosure: where that needs
        # the reaper, it stays for it; else the script is killed now, and its process
        # waited for (briefly): a stop answers once the script is gone, nsenter in front
        # of it (outside the namespace, gone only after its child) included.
        kept = enclosure is not None and enclosure.needs_reapers
        if not kept:
            killing = kill()
            with contextlib.suppress(Exception, asyncio.CancelledError):  # re-raised below
                await asyncio.wait_for(asyncio.shield(killing), 2.0)
                await asyncio.wait_for(asyncio.shield(out.exited), 2.0)
        raise
    finally:
        status.cancel()
        if not kept:
            if enclosure is not None:
                enclosure.forget_reaper(pid)
            let_go()
        if script_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(script_file)
    return ScriptResult(None if timed_out else code, _message(bytes(out.kept), out.total, output_limit, mask),
                        duration, timed_out, out.total)


async def _read_status(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> int | None:
    """The exit status a script's reaper reports; None if it ends without one."""
    data = b""
    while not data.endswith(b"\n") and len(data) < 16:
        chunk = await loop.sock_recv(sock, 16)
        if not chunk:
            break
        data += chunk
    try:
        return int(data)
    except ValueError:
        return None


def _write_and_close(fd: int, text: str) -> None:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


class StepProgress:
    """Which steps of a lab have passed, and which one the learner is on.

    Steps count from 1, as in the API. A step passes when its check exits 0; a
    step without a check passes once it is checked (there is nothing to verify,
    the learner has read it and moved on). A later failing check turns a passed
    step back to failed: the state says what the last check found.
    """

    def __init__(self, count: int):
        self.states = ["pending"] * count
        self.entered: set[int] = set()

    def record(self, step: int, passed: bool | None) -> None:
        self.states[step - 1] = "failed" if passed is False else "passed"

    @property
    def current(self) -> int | None:
        """The first step not passed, or None when none is left (or there are none)."""
        for i, state in enumerate(self.states, 1):
            if state != "passed":
                return i
        return None

    def enter_current(self) -> int | None:
        """The current step if the learner has just reached it (its setup is due), else None."""
        step = self.current
        if step is None or step in self.entered:
            return None
        self.entered.add(step)
        return step

    def model(self, titles: list[str]) -> list[dict]:
        return [{"step": i, "title": title, "state": state}
                for i, (title, state) in enumerate(zip(titles, self.states), 1)]
