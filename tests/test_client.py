"""LabClient against the real server, and from inside a kernel that server started.

LabClient is synchronous and the test server runs on the test's own event loop, so
every client call runs in a worker thread (``asyncio.to_thread``) while the loop
serves it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from typing import Any

import pytest

from labkernel.client import LabClient, LabError
from support.api import PROMPT


@pytest.fixture
def client(server_url: str, jp_serverapp: Any) -> LabClient:
    with LabClient(server_url, token=jp_serverapp.identity_provider.token) as lab:
        yield lab


def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return asyncio.to_thread(fn, *args, **kwargs)


async def test_client_runs_a_session_from_start_to_stop(client: LabClient) -> None:
    assert (await run(client.health))["status"] == "ok"
    assert [lab["id"] for lab in await run(client.labs)] == ["shell"]
    session = await run(client.start, rows=30, cols=100)
    sid = session["sessionId"]
    assert (session["rows"], session["cols"]) == (30, 100)
    _, offset = await run(client.wait_for, sid, PROMPT)
    await run(client.command, sid, "stty size")
    text, offset = await run(client.wait_for, sid, re.compile(r"(\d+) (\d+)\r\n"), offset)
    assert text.groups() == ("30", "100")
    await run(client.resize, sid, 40, 120)
    await run(client.command, sid, "stty size")
    await run(client.wait_for, sid, "40 120\r\n", offset)
    assert sid in [s["sessionId"] for s in await run(client.list)]
    assert (await run(client.status, sid))["terminalActive"] is True
    stopped = await run(client.stop, sid)
    assert stopped["status"] == "stopped"
    with pytest.raises(LabError) as error:
        await run(client.send, sid, "echo too late\r")
    assert (error.value.status, error.value.code) == (409, "session_ended")


async def test_iter_output_follows_the_session_to_its_end(client: LabClient) -> None:
    sid = (await run(client.start))["sessionId"]
    await run(client.command, sid, "seq 1 3000; exit 7")

    def collect() -> str:
        return "".join(chunk["data"] for chunk in client.iter_output(sid))

    text = await run(collect)
    assert "\r\n3000\r\n" in text
    session = await run(client.get, sid)
    assert (session["status"], session["exitCode"]) == ("exited", 7)


async def test_read_in_base64_returns_the_exact_bytes(client: LabClient) -> None:
    sid = (await run(client.start))["sessionId"]
    _, offset = await run(client.wait_for, sid, PROMPT)
    await run(client.command, sid, r"printf 'A\000\377B\n'")
    match, _ = await run(client.wait_for, sid, re.compile(r"B\r\n"), offset)
    data = b""
    while b"A\x00\xffB" not in data:
        answer = await run(client.read, sid, offset, wait=5, encoding="base64")
        data += answer["data"]
        offset = answer["nextOffset"]
    assert isinstance(answer["data"], bytes)


async def test_errors_carry_the_contract_code(client: LabClient, server_url: str) -> None:
    with pytest.raises(LabError) as error:
        await run(client.get, "no-such-session")
    assert (error.value.status, error.value.code) == (404, "session_not_found")
    with pytest.raises(LabError) as error:
        await run(client.start, "no-such-lab")
    assert (error.value.status, error.value.code) == (404, "lab_not_found")
    with LabClient(server_url, token="wrong") as stranger:
        with pytest.raises(LabError) as error:
            await run(stranger.list)
    assert (error.value.status, error.value.code) == (403, "forbidden")


async def test_a_long_poll_in_one_thread_does_not_hold_up_input_from_another(client: LabClient) -> None:
    sid = (await run(client.start))["sessionId"]
    _, offset = await run(client.wait_for, sid, PROMPT)
    # The poll waits for output that only the input below can cause.
    poll = asyncio.ensure_future(run(client.read, sid, offset, wait=20))
    await asyncio.sleep(0.2)
    assert not poll.done()
    await run(client.send, sid, "x")
    answer = await asyncio.wait_for(poll, 20)
    assert "x" in answer["data"]


async def test_the_server_tells_its_kernels_how_to_reach_it(jp_serverapp: Any, server_url: str) -> None:
    await asyncio.sleep(0)  # the extension exports its URL once the loop runs
    assert os.environ["LABKERNEL_URL"] == jp_serverapp.connection_url
    assert os.environ["LABKERNEL_TOKEN"] == jp_serverapp.identity_provider.token


async def test_labclient_needs_no_arguments_inside_a_kernel(jp_serverapp: Any, server_url: str) -> None:
    """A real kernel started by the server runs ``LabClient()`` with no arguments."""
    kernel_manager = jp_serverapp.kernel_manager
    kernel_id = await kernel_manager.start_kernel(kernel_name="python3")
    kernel_client = kernel_manager.get_kernel(kernel_id).client()
    kernel_client.start_channels()
    try:
        await kernel_client.wait_for_ready(timeout=60)
        code = (
            "import json\n"
            "from labkernel.client import LabClient\n"
            "lab = LabClient()\n"
            "s = lab.start()\n"
            "lab.command(s['sessionId'], 'echo from-kernel-$((40+2))')\n"
            "lab.wait_for(s['sessionId'], 'from-kernel-42')\n"
            "print(json.dumps(lab.stop(s['sessionId'])))\n"
        )
        stdout: list[str] = []

        def collect(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                stdout.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                stdout.append("\n".join(msg["content"]["traceback"]))

        reply = await kernel_client.execute_interactive(code, output_hook=collect, timeout=60)
        assert reply["content"]["status"] == "ok", "".join(stdout)
        assert json.loads("".join(stdout))["status"] == "stopped"
    finally:
        kernel_client.stop_channels()
        await kernel_manager.shutdown_kernel(kernel_id)
