"""Issue 14's security findings, each held by a test that tries what the finding did.

- a lab's ``[env]`` that names a server credential (``${LABKERNEL_TOKEN}``,
  ``${JUPYTERHUB_API_TOKEN}``...) gets nothing, in every containment mode;
- a sparse 500 MB ``lab.toml`` costs the server no memory and no time: it is refused
  by its size, unread (the caps themselves, the byte-order mark and FIFOs are
  ``test_definitions``' tests);
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Iterator

import pytest

from labkernel.credentials import CREDENTIAL_ENV
from support.api import FAST, run
from support.containment import MODE_PARAMS
from support.labs import lab_config, started, write_lab
from support.serverproc import ServerProcess


class Collected(logging.Handler):
    """The records a logger emits while attached."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


@pytest.fixture
def server_log(manager: Any) -> Iterator[Collected]:
    handler = Collected()
    manager.log.addHandler(handler)
    yield handler
    manager.log.removeHandler(handler)


def peak_rss(pid: int) -> int:
    """A process's peak resident set size (VmHWM), in bytes."""
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1)) * 1024


# -- ${CREDENTIAL} in a lab's env ----------------------------------------------------------

#: Every credential the server withholds, set in its environment (LABKERNEL_TOKEN is
#: the in-process server's own, exported for its kernels).
CREDENTIALS = {name: f"secret-{name.lower()}" for name in CREDENTIAL_ENV if name != "LABKERNEL_TOKEN"}


@pytest.mark.containment
@pytest.mark.parametrize("mode", MODE_PARAMS)
class TestLabEnvGetsNoCredential:
    @pytest.fixture
    def labkernel_config(self, tmp_path: Path, mode: str) -> dict[str, Any]:
        return lab_config(tmp_path, containment=mode, hidden_env=["COURSE_*"], **FAST)

    async def test_a_credential_named_in_env_expands_to_nothing_and_the_log_says_so(
            self, api: Any, labs: Path, monkeypatch: pytest.MonkeyPatch, server_log: Collected,
            jp_serverapp: Any) -> None:
        for name, value in {**CREDENTIALS, "COURSE_DB_PASSWORD": "secret-course", "LAB_PLAIN": "plain"}.items():
            monkeypatch.setenv(name, value)
        token = jp_serverapp.identity_provider.token
        names = [*CREDENTIAL_ENV, "COURSE_DB_PASSWORD"]
        env = "\n".join(f'V{i} = "[${{{name}}}]"' for i, name in enumerate(names))
        write_lab(labs, "greedy", f"""
            [env]
            {env}
            PLAIN = "${{LAB_PLAIN}}"
            HIDDEN = {{ value = "${{LABKERNEL_TOKEN}}", secret = true }}
        """)
        sid, offset = await started(api, "greedy")
        shown = " ".join(f"$V{i}" for i in range(len(names)))
        match = await run(api, sid, f'echo "GOT {shown} $PLAIN <$HIDDEN>"', r"GOT (\[[^\r\n]*)\r\n")
        assert match.group(1) == " ".join(["[]"] * len(names)) + " plain <>", match.group(1)
        text = (await api.output(sid, offset))["data"]
        for value in [token, *CREDENTIALS.values(), "secret-course"]:
            assert value not in text
        for name in names:
            assert any(f"${{{name}}}" in r and "credential" in r for r in server_log.records), name


# -- a sparse definition ---------------------------------------------------------------------


@pytest.mark.server
def test_a_sparse_500_mb_definition_costs_the_server_neither_memory_nor_time(tmp_path: Path) -> None:
    """Before: the server's peak RSS went from 90 to 1,090 MiB, its catalog took 2.7 s
    and /health waited up to 0.8 s meanwhile (measured here, same run)."""
    with ServerProcess(tmp_path, manager={"lab_scan_interval": 0.0}) as server:
        write_lab(server.root / "labs", "good", "title = 'Good'")
        server.ok("GET", "api", "labs")
        peak = peak_rss(server.proc.pid)
        huge = server.root / "labs" / "huge"
        huge.mkdir()
        with open(huge / "lab.toml", "wb") as f:
            f.truncate(500 * 1024 * 1024)
        body = server.ok("GET", "api", "labs")
        assert [lab["id"] for lab in body["labs"]] == ["shell", "good"]
        (error,) = body["errors"]
        assert error["path"] == "labs/huge/lab.toml" and "524288000 bytes" in error["reason"]
        assert peak_rss(server.proc.pid) - peak < 32 * 1024 * 1024
        server.terminate()
