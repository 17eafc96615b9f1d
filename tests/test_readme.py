"""The README's examples, run as written against a real server, so that they cannot rot.

Each example is the code block after its marker comment (``<!-- readme-example``,
``<!-- readme-curl``). They run in a process of their own, as a reader would run
them, with the server's URL and token where the README says they come from.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def block_after(marker: str) -> str:
    """The fenced code block that follows ``marker`` in the README."""
    match = re.search(re.escape(marker) + r"[^\n]*\n```\w*\n(.*?)\n```", README.read_text(), re.S)
    assert match, f"no code block after {marker!r} in the README"
    return match.group(1)


async def run(argv: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"{argv[0]} did not end within {timeout} s")
    return proc.returncode, out.decode(errors="replace")


async def test_the_readme_python_example_waits_for_the_output_and_ends(jp_serverapp: Any,
                                                                       server_url: str) -> None:
    code = block_after("<!-- readme-example")
    # As in a kernel the server started: LabClient() finds the server in its environment.
    env = {**os.environ, "LABKERNEL_URL": server_url,
           "LABKERNEL_TOKEN": jp_serverapp.identity_provider.token}
    status, out = await run([sys.executable, "-c", code], env)
    assert status == 0, out
    lines = out.splitlines()
    assert lines[0] == "the shell says 42"
    assert "Linux" in lines
    assert lines[-1] == "exit code: 3"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_the_readme_curl_flow_runs_from_start_to_stop(jp_serverapp: Any, server_url: str) -> None:
    script = block_after("<!-- readme-curl")
    # The reader sets URL and TOKEN by hand; here they come from the test server.
    script = re.sub(r"^(URL|TOKEN)=.*$", "", script, flags=re.M)
    env = {**os.environ, "URL": server_url.rstrip("/"), "TOKEN": jp_serverapp.identity_provider.token}
    status, out = await run(["bash", "-e", "-c", script], env)
    assert status == 0, out
    answers, decoder, at = [], json.JSONDecoder(), out.find("{")
    while at >= 0:  # curl prints each answer as is, with no newline between them
        answer, end = decoder.raw_decode(out, at)
        answers.append(answer)
        at = out.find("{", end)
    health, accepted, output, state, stopped = answers
    assert health["status"] == "ok"
    assert accepted["accepted"] is True
    assert output["sessionId"] == stopped["sessionId"] and "nextOffset" in output
    assert state["connected"] is True
    assert stopped["status"] == "stopped"
