"""``Lab``: scripting a lab session from Python (``run``, ``send``, ``expect``, ``check``,
``stop``, the ``*_async`` twins) and the ``%%lab`` cell magic, against the real server
and real bash shells.

The server runs on the test's event loop and ``Lab``'s calls block (urllib), so the
tests use the ``*_async`` variants or a worker thread; the magic and the blocking
calls inside a running loop are tested in a real kernel through nbclient.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from labkernel import CheckReport, CommandFailed, IncompleteCommand, Lab, LabBusy, LabEnded, LabTimeout
from labkernel.client import LabClient, LabError
from labkernel.clients.results import RunResult
from labkernel.clients.screen import clean, cursor_column, keys_for

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
REPO = Path(__file__).resolve().parent.parent

GREET = """\
title = "Greeting"
description = "Leave a greeting."
scratch = true

[[steps]]
title = "Write hello.txt"
text = "Put the word hello into `hello.txt`."
check = "grep -qs hello hello.txt || { echo 'no hello in hello.txt yet'; exit 1; }"
solution = ["echo hello > hello.txt"]

[[steps]]
title = "Say goodbye"
text = "Put the word bye into `bye.txt`."
foreground = "echo step two begins; sleep 1; echo step two ready"
check = "grep -qs bye bye.txt"
"""


@pytest.fixture
def labkernel_config(tmp_path: Path) -> dict[str, Any]:
    """A server with a lab of our own, ``greet``, and the repository's (the README uses one)."""
    labs = tmp_path / "labs"
    (labs / "greet").mkdir(parents=True)
    (labs / "greet" / "lab.toml").write_text(GREET)
    return {"lab_path": [str(labs), str(REPO / "labs")], "lab_scan_interval": 0}


@pytest.fixture
def client(server_url: str, jp_serverapp: Any) -> Iterator[LabClient]:
    with LabClient(server_url, token=jp_serverapp.identity_provider.token) as lab_client:
        yield lab_client




async def raw_output(api: Any, sid: str) -> str:
    """Everything the session's terminal received, as the browser gets it."""
    return (await api.output(sid, 0))["data"]


# -- run -------------------------------------------------------------------------------


async def test_run_returns_the_output_and_status_and_the_terminal_shows_the_command(
        client: LabClient, api: Any) -> None:
    lab = await Lab.create_async(client=client)
    result = await lab.run_async("echo $((6*7)); printf '\\033[1;31mred\\033[0m\\n'")
    assert (result.output, result.exit_status, result.ok) == ("42\nred\n", 0, True)
    assert repr(result) == ("RunResult(\"echo $((6*7)); printf '\\\\033[1;31mred\\\\033[0m\\\\n'\", "
                            "exit_status=0, output='42\\nred\\n')")
    # In the learner's terminal the command appears as typed, after the prompt,
    # and the setup line erased its echo and left the shell's history.
    shown = clean(await raw_output(api, lab.session_id))
    assert "lab-prompt$ echo $((6*7)); printf" in shown
    history = await lab.run_async("history")
    assert "__lk_" not in history.output and "echo $((6*7))" in history.output


def screen(text: str, cols: int) -> list[str]:
    """What a terminal ``cols`` wide shows after ``text``: a small model of xterm
    (auto-wrap, CR, LF, BS, cursor up, erase in line and below; other sequences
    ignored), with no scrolling region, all rows kept."""
    rows: list[list[str]] = [[]]
    row = col = 0
    for m in re.finditer(r"\x1b\[([0-9;?]*)([@-~])|\x1b\][^\x07]*\x07|\x1b[()].|\x1b.|.", text, re.S):
        token, arg = m.group(), m.group(1) or ""
        if m.group(2):
            n = int(arg) if arg.isdigit() else 1
            if m.group(2) == "A":
                row, col = max(0, row - n), min(col, cols - 1)
            elif m.group(2) == "J" and arg in ("", "0"):
                rows[row] = rows[row][:col]
                del rows[row + 1:]
            elif m.group(2) == "K" and arg in ("", "0"):
                rows[row] = rows[row][:col]
        elif token == "\r":
            col = 0
        elif token == "\n":
            row += 1
        elif token == "\b":
            col = max(0, min(col, cols - 1) - 1)
        elif token >= " " and not token.startswith("\x1b"):
            if col == cols:  # the pending wrap of a full row
                row, col = row + 1, 0
            while len(rows) <= row:
                rows.append([])
            line = rows[row] + [" "] * (col - len(rows[row]))
            line[col:col + 1] = [token]
            rows[row], col = line, col + 1
        while len(rows) <= row:
            rows.append([])
    lines = ["".join(r).rstrip() for r in rows]
    while lines and not lines[-1]:
        lines.pop()
    return lines


@pytest.mark.parametrize("cols", [80, 37])
async def test_the_setup_line_erases_itself_from_the_screen(api: Any, client: LabClient, cols: int) -> None:
    sid, _ = await api.shell(cols=cols)
    await api.command(sid, "echo before")
    await api.read_until(sid, r"before\r\n.*\$ $")
    lab = await Lab.create_async(session_id=sid, client=client)
    assert (await lab.run_async("echo after")).output == "after\n"
    await lab.expect_async(r"\$ $")
    shown = screen(await raw_output(api, sid), cols)
    assert shown == ["lab-prompt$ echo before", "before", "lab-prompt$ echo after", "after", "lab-prompt$"]


async def test_a_non_zero_status_is_reported_and_check_raises(client: LabClient) -> None:
    lab = await Lab.create_async(client=client)
    result = await lab.run_async("ls /no/such/place")
    assert result.exit_status == 2 and not result.ok
    assert "No such file or directory" in result.output
    with pytest.raises(CommandFailed) as failed:
        result.check_returncode()
    assert (failed.value.returncode, failed.value.exit_status, failed.value.cmd) == (2, 2, "ls /no/such/place")
    assert "exited with status 2" in str(failed.value) and "No such file" in str(failed.value)
    with pytest.raises(CommandFailed) as failed:
        await lab.run_async("(exit 3)", check=True)
    assert failed.value.returncode == 3
    assert (await lab.run_async("true", check=True)).ok


async def test_output_that_looks_like_a_marker_does_not_end_the_command(client: LabClient) -> None:
    lab = await Lab.create_async(client=client)
    await lab.run_async("true")  # the markers are installed: the nonce is known
    nonce = lab._nonce
    result = await lab.run_async(
        # A marker with another nonce, and this Lab's nonce as plain text (as its
        # echo shows it), then more output after a pause.
        f"printf '\\033]7701;0123456789abcdef;0\\007\\033]7701;0123456789abcdef;s\\007'; "
        f"echo ']7701;{nonce};0' '\\e]7701;{nonce};1\\a'; sleep 0.5; echo after; (exit 4)")
    assert result.exit_status == 4
    assert result.output == f"]7701;{nonce};0 \\e]7701;{nonce};1\\a\nafter\n"


async def test_lines_are_typed_one_by_one_so_loops_and_here_documents_work(client: LabClient) -> None:
    lab = await Lab.create_async(client=client)
    result = await lab.run_async(textwrap.dedent("""\
        for i in 1 2
        do echo n$i
        done
        cat <<EOF
        first

        # not a comment here
        EOF
        echo	tab"""))
    assert result.output == "n1\nn2\nfirst\n\n# not a comment here\ntab\n"
    assert result.exit_status == 0
    syntax = await lab.run_async("echo )")
    assert syntax.exit_status == 2 and "syntax error" in syntax.output and "echo )" not in syntax.output


async def test_an_unfinished_command_is_cancelled_and_says_so(client: LabClient) -> None:
    lab = await Lab.create_async(client=client)
    with pytest.raises(IncompleteCommand, match="cancelled with Ctrl-C"):
        await lab.run_async("echo 'no closing quote", timeout=10)
    assert (await lab.run_async("echo usable")).output == "usable\n"


async def test_a_command_waiting_for_input_times_out_and_the_terminal_stays_usable(client: LabClient) -> None:
    lab = await Lab.create_async(client=client)
    started = time.monotonic()
    with pytest.raises(LabTimeout) as timeout:
        await lab.run_async("echo your name please; read name", timeout=1.5)
    assert time.monotonic() - started < 10
    assert isinstance(timeout.value, TimeoutError)
    assert timeout.value.interrupted and timeout.value.output == "your name please\n"
    assert "did not end within 1.5 s" in str(timeout.value)
    assert "your name please" in str(timeout.value) and "Ctrl-C" in str(timeout.value)
    # Ctrl-C ended `read`: the next command is not taken as its input.
    after = await lab.run_async("echo still here; echo ${name:-unset}")
    assert (after.output, after.exit_status) == ("still here\nunset\n", 0)


async def test_a_program_deaf_to_ctrl_c_keeps_the_terminal_busy_and_run_says_so(client: LabClient) -> None:
    lab = await Lab.create_async(client=client)
    lab.interrupt_timeout = 1
    with pytest.raises(LabTimeout) as timeout:
        await lab.run_async("bash -c \"trap '' INT; echo deaf; sleep 60\"", timeout=1)
    assert not timeout.value.interrupted and "still busy" in str(timeout.value)
    with pytest.raises(LabBusy, match="a program has been running in it for the last 1 s"):
        await lab.run_async("echo never typed", timeout=1)
    await lab.stop_async()


async def test_run_does_not_type_into_a_program_the_learner_runs(client: LabClient, api: Any) -> None:
    lab = await Lab.create_async(client=client)
    await lab.run_async("true")
    await api.command(lab.session_id, "sleep 60")  # the learner, in the terminal
    await api.read_until(lab.session_id, re.escape(f";{lab._nonce};s\x07"))
    with pytest.raises(LabBusy, match="a program has been running"):
        await lab.run_async("echo hi", timeout=1)
    await lab.send_async("\x03")  # Ctrl-C, as the learner would
    assert (await lab.run_async("echo free")).output == "free\n"
    # A program that ends soon is waited for, as a person at the keyboard would.
    await lab.send_async("sleep 1; echo learner done\r")
    result = await lab.run_async("echo mine")
    assert result.output == "mine\n"
    assert "learner done" in clean(await raw_output(api, lab.session_id))


async def test_run_clears_a_line_the_learner_half_typed(client: LabClient, api: Any) -> None:
    lab = await Lab.create_async(client=client)
    await lab.run_async("true")
    await api.send(lab.session_id, "rm -rf ")  # typed, not entered
    await api.read_until(lab.session_id, "rm -rf ")
    result = await lab.run_async("echo safe")
    assert (result.output, result.exit_status) == ("safe\n", 0)


async def test_run_on_an_ended_session_raises_a_clear_error(client: LabClient) -> None:
    lab = await Lab.create_async(client=client)
    await lab.stop_async()
    with pytest.raises(LabEnded) as ended:
        await lab.run_async("echo hi")
    assert ended.value.code == "session_ended"
    assert f"The session {lab.session_id} of lab 'shell' has ended (stopped" in str(ended.value)
    assert "Lab('shell')" in str(ended.value)
    with pytest.raises(LabEnded):
        await lab.send_async("x")


async def test_a_command_that_ends_the_session_says_so(client: LabClient) -> None:
    lab = await Lab.create_async(client=client)
    with pytest.raises(LabEnded, match=r"has ended \(exited, exit code 3\)"):
        await lab.run_async("exit 3")


async def test_an_unknown_lab_lists_the_labs_there(client: LabClient) -> None:
    with pytest.raises(LabError) as error:
        await Lab.create_async("nope", client=client)
    assert (error.value.status, error.value.code) == (404, "lab_not_found")
    assert "There is no lab 'nope'" in error.value.message
    listed = re.search(r"the labs there: (.*)\.$", error.value.message).group(1).split(", ")
    assert {"greet", "shell", "files-and-folders"} <= set(listed) and listed == sorted(listed)


async def test_a_lab_attaches_to_a_running_session(api: Any, client: LabClient) -> None:
    sid, _ = await api.shell()
    lab = await Lab.create_async(session_id=sid, client=client)
    assert (lab.session_id, lab.lab_id) == (sid, "shell")
    assert (await lab.run_async("echo attached")).output == "attached\n"
    assert len((await api.ok("GET", "api", "labs", "sessions"))["sessions"]) == 1
    with pytest.raises(LabError, match="There is no session 'no-such-session'"):
        await Lab.create_async(session_id="no-such-session", client=client)


async def test_a_lab_follows_the_session_its_panel_started_again(api: Any, client: LabClient) -> None:
    """The panel's "Start again" (and the terminal's "New session") start a session in
    the browser and set the widget's ``session_id``; the comm sets the trait in the
    kernel as this test does (the browser side is tested in tests/browser)."""
    lab = await Lab.create_async("greet", client=client)
    old = lab.session_id
    await lab.run_async("echo hello > hello.txt")
    panel, terminal = lab.panel, lab.terminal
    new = (await api.start(labId="greet"))["sessionId"]
    await asyncio.to_thread(setattr, panel, "session_id", new)  # the comm's thread, not the server's loop
    assert lab.session_id == new and terminal.session_id == new
    assert (await lab.run_async("ls hello.txt || echo fresh")).output.endswith("fresh\n")
    assert not (await lab.check_async()).passed  # the new session's check, not the old one's
    assert (await api.get(old))["status"] == "running"


# -- send, expect, check --------------------------------------------------------------


async def test_expect_matches_output_new_since_the_last_expect_or_run(client: LabClient) -> None:
    lab = await Lab.create_async(client=client)
    await lab.run_async("true")
    # al''pha: the echo of the typed line does not hold the word, its output does.
    await lab.send_async("echo al''pha; sleep 0.3; echo be''ta\r")
    first = await lab.expect_async(r"(?m)^alpha$")
    assert first.group() == "alpha"
    assert (await lab.expect_async(r"beta\n")).group() == "beta\n"
    with pytest.raises(LabTimeout, match="did not appear within 0.5 s"):
        await lab.expect_async("alpha", timeout=0.5)
    await lab.expect_async(r"lab-prompt\$ $")
    assert (await lab.run_async("echo after expect")).output == "after expect\n"


async def test_check_runs_the_labs_checks(client: LabClient, api: Any) -> None:
    lab = await Lab.create_async("greet", client=client)
    report = await lab.check_async()
    assert isinstance(report, CheckReport) and not report.passed
    assert [r["step"] for r in report.failed] == [1, 2] and report.current_step == 1
    assert str(report) == "✗ 1 Write hello.txt: no hello in hello.txt yet\n✗ 2 Say goodbye"
    await lab.run_async("echo hello > hello.txt", check=True)
    report = await lab.check_async(1)
    assert report.passed and report.current_step == 2
    assert str(report) == "✓ 1 Write hello.txt"
    # Step 2 began: the server typed its foreground into the terminal as the check
    # answered. The next run waits for it, and its output is its own.
    result = await lab.run_async("echo bye > bye.txt; cat bye.txt")
    assert (result.output, result.exit_status) == ("bye\n", 0)
    assert "step two ready" in clean(await raw_output(api, lab.session_id))
    report = await lab.check_async()
    assert report.passed and report.current_step is None
    assert str(report) == "✓ 1 Write hello.txt\n✓ 2 Say goodbye"


async def test_async_calls_leave_the_event_loop_free(client: LabClient) -> None:
    lab = await Lab.create_async(client=client)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    try:
        # The server runs on this loop too: a blocking call here would never return.
        result, report = await asyncio.gather(lab.run_async("sleep 1; echo slept"), lab.check_async())
    finally:
        ticker.cancel()
    assert result.output == "slept\n" and report.results == []
    assert ticks > 20


async def test_blocking_calls_work_from_a_thread_and_a_lab_shows_its_panel(client: LabClient) -> None:
    lab = await asyncio.to_thread(Lab, client=client)
    assert (await asyncio.to_thread(lab.run, "echo sync")).output == "sync\n"
    bundle, _ = lab._repr_mimebundle_()
    assert bundle[WIDGET_VIEW]["model_id"] == lab.panel.model_id  # its steps beside its terminal
    assert lab.panel.session_id == lab.session_id and lab.panel.kind == "lab"
    assert lab.terminal.session_id == lab.session_id
    assert bundle["text/plain"] == repr(lab) and lab.session_id in repr(lab)
    with lab:  # a with-block stops the session at its end
        pass
    assert (await asyncio.to_thread(lambda: lab.status)) == "stopped"


# -- %%lab in a real kernel -------------------------------------------------------------


def notebook(*cells: str) -> Any:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells])


def stream(cell: Any) -> str:
    return "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")


async def test_the_lab_magic_runs_a_cells_lines_and_stops_the_notebook_at_a_failure(
        server_url: str, api: Any, tmp_path: Path) -> None:
    nb = notebook(
        "%load_ext labkernel",
        """\
        from labkernel import Lab
        lab = Lab()  # blocking calls in the kernel's running loop
        r = lab.run("echo sync-$((6*7))")
        print(r.output, r.exit_status)""",
        """\
        r = await lab.run_async("echo async-ok")
        print(r.output.strip())""",
        """\
        %%lab
        echo one
        # a comment, skipped
        for i in 1 2
        do echo n$i
        done
        cat <<EOF
        heredoc line
        EOF""",
        "lab",
        """\
        %%lab
        echo before the failure
        ls /no/such/place
        echo not-reached""",
        "print('after')",
    )
    runner = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    with pytest.raises(CellExecutionError) as failure:
        await runner.async_execute()
    assert failure.value.ename == "CommandFailed"
    assert "'ls /no/such/place' exited with status 2" in failure.value.evalue
    cells = nb.cells
    assert stream(cells[1]) == "sync-42\n 0\n"
    assert stream(cells[2]) == "async-ok\n"
    assert stream(cells[3]) == "one\nn1\nn2\nheredoc line\n"
    view = next(out["data"] for out in cells[4].outputs if WIDGET_VIEW in out.get("data", {}))
    assert "before the failure\n" in stream(cells[5])
    error = next(out for out in cells[5].outputs if out.output_type == "error")
    assert error.ename == "CommandFailed"  # one line, no frames of the magic's machinery:
    assert error.traceback == ["\x1b[0;31mCommandFailed\x1b[0m: 'ls /no/such/place' exited with status 2"]
    assert cells[6].outputs == []  # the run stopped at the failure
    sessions = (await api.ok("GET", "api", "labs", "sessions"))["sessions"]
    assert len(sessions) == 1
    # The Lab shows the panel (steps and terminal) of its own session.
    model = runner.widget_state[view[WIDGET_VIEW]["model_id"]]  # as the kernel sent it
    assert model["session_id"] == sessions[0]["sessionId"]
    assert view["text/plain"].startswith("<Lab 'shell' session ")
    shown = clean(await raw_output(api, sessions[0]["sessionId"]))
    assert "lab-prompt$ ls /no/such/place" in shown and "not-reached" not in shown


async def test_interrupting_the_kernel_during_a_run_presses_ctrl_c_in_the_terminal(
        server_url: str, tmp_path: Path) -> None:
    nb = notebook(
        "from labkernel import Lab\nlab = Lab()\nlab.run('true').ok",
        "lab.run('sleep 60; echo too-late', timeout=None)",  # nbclient interrupts it
        "print(lab.run('echo next').output)",
    )
    runner = NotebookClient(nb, timeout=4, interrupt_on_timeout=True, allow_errors=True,
                            kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    await runner.async_execute()
    error = next(out for out in nb.cells[1].outputs if out.output_type == "error")
    assert error.ename == "KeyboardInterrupt"
    # The sleep was interrupted too: the next command runs at once, alone.
    assert stream(nb.cells[2]) == "next\n\n"


async def test_the_lab_magic_without_a_lab_says_how_to_start_one(server_url: str, tmp_path: Path) -> None:
    nb = notebook("%load_ext labkernel", "%%lab\necho hi")
    runner = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}})
    await runner.async_execute()
    shown = stream(nb.cells[1]) + "".join(
        "".join(out.get("traceback", [])) + out.get("evalue", "") for out in nb.cells[1].outputs)
    assert "no lab was started in this kernel" in shown
    assert 'lab = Lab("shell")' in shown and "%%lab <session id>" in shown


# -- the README -----------------------------------------------------------------------------


async def test_the_readme_lab_example_runs_as_written(server_url: str, jp_serverapp: Any) -> None:
    match = re.search(r"<!-- readme-lab[^\n]*\n```python\n(.*?)\n```", (REPO / "README.md").read_text(), re.S)
    assert match, "no code block after <!-- readme-lab in the README"
    # As in a kernel of the server: Lab() finds the server in its environment.
    env = {**os.environ, "LABKERNEL_URL": server_url, "LABKERNEL_TOKEN": jp_serverapp.identity_provider.token}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", match.group(1), env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()
    assert out.decode().splitlines() == ["inbox", "", "0 2", "", "✓ 1 Look around", "False"]


# -- the pieces -----------------------------------------------------------------------------


def test_clean_removes_escape_sequences_and_line_end_carriage_returns() -> None:
    assert clean("\x1b[?2004l\rhi\r\n\x1b]7701;x;0\x07\x1b[1;32mok\x1b(B\x1b[m\r\r\n") == "hi\nok\n"
    assert clean("50%\r100%\r\n") == "50%\r100%\n"  # a redrawn line stays as subprocess shows it
    assert clean("^C\x1b[?2004l\r\x1b[?2004h\x1b[?2004l\r\r\n") == "^C\n"
    assert clean("a\x07\x00b\x1b") == "ab"


def test_the_prompt_width_is_measured_where_the_cursor_is() -> None:
    assert cursor_column("old output\r\n\x1b[?2004hlab-prompt$ ") == 12
    assert cursor_column("x\r\nabc\rZ") == 1
    assert cursor_column("$ 日本") == 6
    assert cursor_column("done\r\n") == 0


def test_control_characters_are_typed_quoted() -> None:
    assert keys_for("a\tb") == "a\x16\tb"
    assert keys_for("plain") == "plain"


def test_a_run_result_reads_like_a_completed_process() -> None:
    result = RunResult("false", "", 1)
    assert (result.ok, result.returncode) == (False, 1)
    assert repr(result) == "RunResult('false', exit_status=1, output='')"
    with pytest.raises(CommandFailed, match=r"^'false' exited with status 1$"):
        result.check_returncode()
