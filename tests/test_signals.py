"""A lab's programs start with every signal at its default, in every containment mode.

Ignored signals survive exec, and Python ignores SIGPIPE and SIGXFSZ when it starts:
anything of ours in Python between the server and a lab's program (the sandbox's
builder, the subreaper's prctl helper) must put them back, or `yes | head` in a lab
prints "yes: standard output: Broken pipe" and a program killed by SIGPIPE on a real
terminal lives on.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.api import run
from support.containment import MODE_PARAMS
from support.labs import check, lab_config, write_lab

pytestmark = pytest.mark.containment

#: A child of the shell (or of the check's bash) prints the signals it ignores, as a
#: hex mask: only what it inherited, since bash resets its own ignores for children.
IGNORED = "grep SigIgn /proc/self/status"


@pytest.fixture(params=MODE_PARAMS)
def labkernel_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    return lab_config(tmp_path, containment=request.param)


@pytest.fixture(params=[False, True], ids=["as-started", "server-ignores-hup-and-quit"])
def server_ignores(request: pytest.FixtureRequest) -> Iterator[None]:
    """The server (this process: the test's server runs in it) started as ``nohup``
    and a background ``&`` leave it: SIGHUP and SIGQUIT ignored, which its children
    inherit unless something puts them back."""
    if not request.param:
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGHUP, signal.SIGQUIT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@pytest.mark.usefixtures("server_ignores")
async def test_a_lab_shell_and_its_check_ignore_no_signal(api: Any, labs: Path) -> None:
    write_lab(labs, "signals", f"""
        id = "signals"
        title = "Signals"
        [[steps]]
        title = "Nothing ignored"
        check = "{IGNORED}; yes | head -c 4 >/dev/null"
    """)
    sid, offset = await api.shell(labId="signals")
    match = await run(api, sid, f"{IGNORED}; yes | head -c 4", r"SigIgn:\s+(\w+)[\s\S]*y\r\ny\r\n", timeout=30)
    assert int(match.group(1), 16) == 0, match.group(0)
    assert "Broken pipe" not in match.group(0)
    result = (await check(api, sid))["results"][0]
    assert "SigIgn:\t0000000000000000" in result["message"], result
    assert "Broken pipe" not in result["message"]
