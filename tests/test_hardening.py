"""Regression tests of issue 7's small cases: credentials, status, signals, messages."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from support.api import eventually, wait_ended
from support.serverproc import ServerProcess


def assert_error(answer: tuple[int, Any], status: int, code: str) -> str:
    got_status, body = answer
    assert (got_status, body["error"]) == (status, code), body
    return body["message"]


# -- no credential in a lab shell ----------------------------------------------------

SECRETS = {
    "JUPYTER_TOKEN": "secret-jupyter-token",
    "JUPYTERHUB_API_TOKEN": "secret-hub-token",
    "JPY_API_TOKEN": "secret-jpy-token",
    "LABKERNEL_TOKEN": "secret-stale-labkernel-token",
    "COURSE_DB_PASSWORD": "secret-configured-extra",
}


@pytest.mark.server
def test_a_lab_shell_sees_none_of_the_servers_credentials(tmp_path: Path) -> None:
    env = {**SECRETS, "LABKERNEL_VISIBLE": "plain-setting"}
    with ServerProcess(tmp_path, env=env, manager={"hidden_env": ["COURSE_DB_*"]}) as server:
        sid, offset = server.shell()
        server.command(sid, "env; echo END-$((6*7))")
        text, _ = server.read_until(sid, r"END-42\r\n", offset)
        assert "LABKERNEL_VISIBLE=plain-setting" in text  # env really ran, and the rest is there
        # The server's own token (exported for its kernels as LABKERNEL_TOKEN) is not either.
        for name, value in [*SECRETS.items(), ("server token", server.token)]:
            assert value not in text, f"{name} reached the lab shell"
        assert "LABKERNEL_URL=" in text  # kernels and scripts still find the server, without a key


# -- /api/ws/status of an ended session ---------------------------------------------


async def test_status_of_a_stopped_session_says_not_connected(api: Any) -> None:
    sid, _ = await api.shell()
    assert (await api.status(sid))["connected"] is True
    await api.stop(sid)
    status = await api.status(sid)
    assert (status["connected"], status["terminalActive"], status["status"]) == (False, False, "stopped")


async def test_status_of_an_exited_session_says_not_connected(api: Any) -> None:
    sid, _ = await api.shell()
    await api.command(sid, "exit 4")
    await wait_ended(api, sid)
    status = await api.status(sid)
    assert (status["connected"], status["status"], status["exitCode"]) == (False, "exited", 4)


# -- messages: missing fields, and resize or signal with input -----------------------


async def post_message(api: Any, body: Any) -> tuple[int, Any]:
    return await api.call("POST", "api", "ws", "message", body=body)


@pytest.mark.parametrize("body", [{"data": "x"}, {"command": "ls"}, {"type": "resize", "rows": 5, "cols": 5}])
async def test_a_message_without_session_id_says_it_is_missing(api: Any, body: dict[str, Any]) -> None:
    message = assert_error(await post_message(api, body), 400, "bad_request")
    assert message == "sessionId is missing."


async def test_a_signal_message_without_signal_says_it_is_missing(api: Any) -> None:
    sid, _ = await api.shell()
    message = assert_error(await post_message(api, {"sessionId": sid, "type": "signal"}), 400, "bad_request")
    assert message == "signal is missing."


async def test_a_present_session_id_of_the_wrong_type_says_so(api: Any) -> None:
    message = assert_error(await post_message(api, {"sessionId": 5, "data": "x"}), 400, "bad_request")
    assert message == "sessionId must be a string."


@pytest.mark.parametrize("extra", [{"type": "resize", "rows": 30, "cols": 90},
                                   {"type": "signal", "signal": "SIGINT"}])
@pytest.mark.parametrize("field", ["command", "data"])
async def test_a_resize_or_signal_carrying_input_is_refused_whole(api: Any, extra: dict[str, Any],
                                                                  field: str) -> None:
    sid, offset = await api.shell()
    body = {"sessionId": sid, **extra, field: "echo typed-$((6*7))" + ("\r" if field == "data" else "")}
    message = assert_error(await post_message(api, body), 400, "bad_request")
    assert field in message or "command or data" in message
    session = await api.get(sid)
    assert (session["rows"], session["cols"], session["status"]) == (24, 80, "running")
    # Nothing was typed: a marker command sent now is the first thing the shell runs.
    await api.command(sid, "echo marker-$((2*3))")
    text, _ = await api.read_until(sid, r"marker-6\r\n", offset)
    assert "typed-42" not in text


# -- a signal the kernel refuses ------------------------------------------------------


@pytest.mark.server
def test_a_signal_the_kernel_refuses_is_a_clear_error_not_a_500(tmp_path: Path) -> None:
    """The foreground program runs as another user and the server lacks CAP_KILL.

    Tests run as root here, and root may signal anything: so the server is started
    without CAP_KILL (setpriv), and the lab's foreground program changes its user.
    """
    prefix = ["setpriv", "--bounding-set=-kill"]
    # Not in a sandbox: there the server owns the lab's user namespace, and with it
    # every capability over the lab's processes, whatever their uid.
    with ServerProcess(tmp_path, prefix=prefix, manager={"containment": "pidns"}) as server:
        sid, offset = server.shell()
        marker = "labkernel-refused-signal-test"
        server.command(sid, f"setpriv --reuid=65534 --regid=65534 --clear-groups bash -c 'exec -a {marker} sleep 60'")
        deadline = time.monotonic() + 30
        while not (victims := [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == [marker, "60"]]):
            assert time.monotonic() < deadline, "the foreground program did not start"
            time.sleep(0.1)
        try:
            status, body = server.call("POST", "api/ws/message",
                                       body={"sessionId": sid, "type": "signal", "signal": "SIGTERM"})
            assert (status, body["error"]) == (409, "signal_refused"), body
            assert "another user" in body["message"]
            assert victims[0].is_running()
            # The terminal's own Ctrl-C still reaches it, as the message says.
            server.message(sid, data="\u0003")
            victims[0].wait(30)
        finally:
            for victim in victims:
                if victim.is_running():
                    victim.kill()
        assert "Traceback" not in server.log(tail=None)


# -- what an ended session keeps ---------------------------------------------------


class TestEndedSessions:
    @pytest.fixture
    def labkernel_config(self) -> dict[str, Any]:
        return {"retained_output": 1000, "max_ended_sessions": 2, "attach_timeout": 1.0, "max_wait": 0.5}

    async def test_an_ended_session_keeps_the_tail_once_its_reader_had_time(self, api: Any,
                                                                           manager: Any) -> None:
        sid, offset = await api.shell()  # polls: a reader attached, at the prompt
        session = manager.get(sid)
        await api.command(sid, "printf 'x%.0s' $(seq 5000); echo; echo LAST-$((6*7)); exit")
        # The reader stays attached, polling where it is, until the session has ended
        # (however long that takes on a slow machine: more than the attach timeout).
        deadline = time.monotonic() + 30
        while not session.closed:
            assert time.monotonic() < deadline, "the session did not end"
            await api.output(sid, offset, max=1)
            await asyncio.sleep(0.05)
        end = (await api.get(sid))["outputOffset"]
        # That reader had not read the output yet: it is all still there for it.
        answer = await api.output(sid, offset)
        assert not answer["truncated"] and answer["nextOffset"] == end
        assert answer["data"].count("x") >= 5000
        # One attach timeout later only the tail is left.
        await eventually(lambda: session.output.base == end - 1000, timeout=10)
        answer = await api.output(sid, offset)
        assert answer["truncated"] and answer["nextOffset"] == end
        assert answer["offset"] == end - 1000 and "LAST-42" in answer["data"]

    async def test_the_oldest_ended_sessions_are_forgotten_beyond_the_cap(self, api: Any, manager: Any) -> None:
        sids = []
        for _ in range(4):
            sid, _ = await api.shell()
            await api.command(sid, "exit")
            await eventually(lambda: manager.get(sid).closed)
            sids.append(sid)
        running, _ = await api.shell()
        for sid in sids[:2]:
            assert_error(await api.call("GET", "api", "labs", "session", sid), 404, "session_not_found")
        for sid in sids[2:] + [running]:
            await api.get(sid)


# -- a signal to a terminal without a foreground group --------------------------------


async def test_a_signal_when_the_terminal_has_no_foreground_group_never_reaches_the_server(
        api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a session's leader has exited, and before the server has seen it, its
    terminal has no foreground group and ``tcgetpgrp`` answers 0; ``killpg(0, sig)``
    signals the caller's own group, the server's (a schemathesis run stopped the
    in-process server with SIGTSTP). That moment cannot be had on demand, so
    ``tcgetpgrp`` answers 0 here (a mock), and the signal sent is SIGCONT, harmless
    if it were delivered: this process counts it."""
    sid, _ = await api.shell()
    received: list[int] = []
    previous = signal.signal(signal.SIGCONT, lambda signum, frame: received.append(signum))
    try:
        monkeypatch.setattr(os, "tcgetpgrp", lambda fd: 0)
        status, body = await post_message(api, {"sessionId": sid, "type": "signal", "signal": "SIGCONT"})
        assert status == 200, body
        await asyncio.sleep(0.2)  # a signal to this process is handled between bytecodes
        assert received == []
        monkeypatch.setattr(os, "tcgetpgrp", lambda fd: os.getpgrp())
        assert (await post_message(api, {"sessionId": sid, "type": "signal", "signal": "SIGCONT"}))[0] == 200
        await asyncio.sleep(0.2)
        assert received == []
    finally:
        signal.signal(signal.SIGCONT, previous)
