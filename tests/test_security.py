"""Issue 14's security findings, each held by a test that tries what the finding did.

- a lab's ``[env]`` that names a server credential (``${LABKERNEL_TOKEN}``,
  ``${JUPYTERHUB_API_TOKEN}``...) gets nothing, in every containment mode;
- a sparse 500 MB ``lab.toml`` costs the server no memory and no time: it is refused
  by its size, unread (the caps themselves, the byte-order mark and FIFOs are
  ``test_definitions``' tests);
- an absolute asset target (``/tmp/x``, ``/etc/x``) is never written on the host: outside
  a sandbox the session fails saying why and the catalog notes it (inside one it lands
  in the session's own filesystem: ``test_sandbox``), and no asset is written through
  a symlink the learner left in the session's folder, in any mode;
- a session that allocates more than ``max_memory`` is stopped in its own memory
  cgroup, where one may be made (the process limit and the fork bomb, as root and
  as nobody: ``test_attacks``);
- a server killed with SIGKILL leaves scratch folders that the next server removes,
  by the dead server's pid and start time;
- under ``pidns`` (bwrap), ``jupyter server list`` in a lab no longer deletes the
  server's runtime file (in the sandbox: ``test_sandbox``, ``test_attacks``).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from labkernel import containment
from labkernel.containment import procfs
from labkernel.credentials import CREDENTIAL_ENV
from labkernel.labs.workspace import remove_stale_scratch
from support.api import FAST, run
from support.containment import MODE_PARAMS
from support.labs import lab_config, started, wait_running, write_lab
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


# -- asset targets -----------------------------------------------------------------------------


async def failed_with(api: Any, sid: str) -> str:
    session = await wait_running(api, sid)
    assert session["status"] == "failed", session
    return (await api.output(sid))["data"]


@pytest.mark.containment
@pytest.mark.parametrize("mode", [m for m in MODE_PARAMS if m.values[0] != "sandbox"])
class TestAbsoluteAssetTargetsOutsideTheSandbox:
    @pytest.fixture
    def labkernel_config(self, tmp_path: Path, mode: str) -> dict[str, Any]:
        return lab_config(tmp_path, containment=mode, **FAST)

    async def test_an_absolute_target_fails_the_start_and_writes_nothing_on_the_host(
            self, api: Any, labs: Path, token: str) -> None:
        target = f"/tmp/lk-asset-{token}"
        write_lab(labs, "absolute", f"""
            [[assets]]
            source = "data.txt"
            target = "{target}"
        """, files={"data.txt": "from the lab"})
        body = await api.ok("GET", "api", "labs")
        (lab,) = [lab for lab in body["labs"] if lab["id"] == "absolute"]
        assert any("needs the sandbox" in note and target in note for note in lab["notes"]), lab["notes"]
        sid = (await api.start(labId="absolute"))["sessionId"]
        text = await failed_with(api, sid)
        assert "absolute targets are placed only in a sandbox" in text and target in text
        assert not os.path.exists(target)


@pytest.mark.containment
@pytest.mark.parametrize("mode", MODE_PARAMS)
class TestNoAssetThroughALearnersSymlink:
    @pytest.fixture
    def labkernel_config(self, tmp_path: Path, mode: str) -> dict[str, Any]:
        return lab_config(tmp_path, containment=mode, **FAST)

    @pytest.mark.parametrize("target", ["data/x.txt", "data/", "~/data/x.txt", "x.txt", "tree/"])
    async def test_a_symlink_left_in_the_folder_is_not_followed(
            self, api: Any, labs: Path, jp_root_dir: Path, tmp_path: Path, target: str, mode: str) -> None:
        """The learner (root in a sandbox, and the folder is theirs) plants
        ``data -> /etc`` or ``x.txt -> /etc/passwd``; the next session's copy, by the
        server's user (maybe host root), must not write there."""
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "x.txt").write_text("the host's")
        work = jp_root_dir / "work"
        work.mkdir()
        (work / "data").symlink_to(outside)
        (work / "x.txt").symlink_to(outside / "x.txt")
        (work / "tree").mkdir()
        (work / "tree" / "files").symlink_to(outside)
        if target.startswith("~") and mode != "sandbox":
            pytest.skip("~ is the server's own home outside a sandbox, not the session's folder")
        write_lab(labs, "planted", f"""
            workdir = "work"
            [[assets]]
            source = "{'files' if target == 'tree/' else 'x.txt'}"
            target = "{target}"
        """, files={"x.txt": "from the lab", "files/x.txt": "from the lab"})
        sid = (await api.start(labId="planted"))["sessionId"]
        text = await failed_with(api, sid)
        assert "symlink" in text, text
        assert sorted(p.name for p in outside.iterdir()) == ["x.txt"]
        assert (outside / "x.txt").read_text() == "the host's"


@pytest.mark.containment
@pytest.mark.parametrize("mode", MODE_PARAMS)
class TestNoAssetInTheServersFolders:
    @pytest.fixture
    def jp_runtime_dir(self, jp_root_dir: Path) -> Path:
        (jp_root_dir / "runtime").mkdir(exist_ok=True)
        return jp_root_dir / "runtime"  # under the session's folder, as a home-based setup has it

    @pytest.fixture
    def labkernel_config(self, tmp_path: Path, mode: str) -> dict[str, Any]:
        return lab_config(tmp_path, containment=mode, **FAST)

    async def test_an_asset_aimed_at_the_runtime_folder_is_refused(
            self, api: Any, labs: Path, jp_runtime_dir: Path) -> None:
        write_lab(labs, "planter", """
            [[assets]]
            source = "fake.json"
            target = "runtime/jpserver-1.json"
        """, files={"fake.json": "{}"})
        sid = (await api.start(labId="planter"))["sessionId"]
        assert "a folder of the server's own" in await failed_with(api, sid)
        assert not (jp_runtime_dir / "jpserver-1.json").exists()


# -- per-session memory --------------------------------------------------------------------------


@pytest.mark.containment
@pytest.mark.skipif(containment.cgroup_dirs().memory is None, reason="no memory cgroup may be made here")
@pytest.mark.parametrize("mode", MODE_PARAMS)
class TestMemoryLimit:
    @pytest.fixture
    def labkernel_config(self, tmp_path: Path, mode: str) -> dict[str, Any]:
        return {**FAST, "containment": mode, "max_memory": 64 * 1024 * 1024}

    async def test_a_session_over_its_memory_is_stopped_there_and_the_server_is_not(
            self, api: Any, manager: Any) -> None:
        health = await api.ok("GET", "health")
        assert health["limits"]["memory"] == {"max": 64 * 1024 * 1024, "perSession": True, "how": "memory cgroup"}
        greedy, _ = await api.shell()
        other, _ = await api.shell()
        # 256 MiB, touched page by page: the kernel's OOM killer ends it in its cgroup.
        line = ("/usr/bin/python3 -c 'b = bytearray(256 << 20); b[::4096] = b\"x\" * len(b[::4096]); "
                "print(\"KEPT\")'; echo RC=$?")
        match = await run(api, greedy, line, r"RC=(\d+)", timeout=60)
        assert match.group(1) == "137"  # SIGKILL
        text = (await api.output(greedy))["data"]
        assert "\nKEPT\r\n" not in text and "Killed" in text
        assert (await run(api, greedy, "echo still-$((6*7))", r"still-42")).group(0)
        assert (await run(api, other, "echo other-$((6*7))", r"other-42")).group(0)


# -- a killed server's scratch folders ------------------------------------------------------------


def test_scratch_folders_of_dead_servers_are_removed_and_no_others(tmp_path: Path) -> None:
    """By their mark (pid and start time), never by age or pid alone: a pid reused by
    a live process does not keep a dead server's folder, and a live server's folder,
    another user's or one that is not a scratch folder stays."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    alive = procfs.server_mark()
    ticks = int(alive.partition(".")[2])
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        folders = {
            "dead": f"labkernel-scratch-{sleeper.pid}.{ticks + 12345}-lab-a1",  # its pid, not its start
            "gone": "labkernel-scratch-4194000.5-lab-b2",  # no such pid
            "live": f"labkernel-scratch-{alive}-lab-c3",
            "other": "labkernel-scratch-4194001.5-lab-d4",
            "unmarked": "labkernel-lab-e5",  # an old server's name: not judged
        }
        for name in folders.values():
            (scratch / name / "inside").mkdir(parents=True)
            (scratch / name / "inside" / "file").write_text("x")
        (scratch / folders["dead"] / "inside").chmod(0)  # a lab may close its folders
        os.chown(scratch / folders["other"], 65534, 65534)
        removed = remove_stale_scratch(str(scratch), logging.getLogger("test"))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sorted(os.path.basename(p) for p in removed) == sorted([folders["dead"], folders["gone"]])
    assert sorted(p.name for p in scratch.iterdir()) == sorted([folders["live"], folders["other"],
                                                                folders["unmarked"]])


@pytest.mark.server
def test_a_killed_servers_scratch_folders_are_removed_by_the_next_server(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    config = {"scratch_dir": str(scratch), "lab_scan_interval": 0.0}
    first = ServerProcess(tmp_path / "first", manager=config)
    try:
        write_lab(first.root / "labs", "scratchy", "scratch = true")
        sid, _ = first.shell(labId="scratchy")
        accepted = first.command(sid, "mkdir -p deep/er && echo x > deep/er/file && chmod 0 deep && echo MA$((1))DE")
        first.read_until(sid, r"MA1DE", accepted["offset"])
        (left,) = list(scratch.iterdir())
        assert left.name.startswith(f"labkernel-scratch-{first.proc.pid}.")
    finally:
        first.proc.kill()
        first.proc.wait()
    successor = ServerProcess(tmp_path / "second", manager=config)
    try:
        deadline = time.monotonic() + 30
        while left.exists():
            assert time.monotonic() < deadline, list(scratch.iterdir())
            time.sleep(0.1)
        assert "removed 1 scratch folder(s) a dead server left" in successor.log()
    finally:
        successor.terminate()


# -- the runtime folder under pidns -------------------------------------------------------------------


@pytest.mark.containment
@pytest.mark.skipif(not containment.available("pidns-bwrap"), reason="bwrap makes no PID namespace here")
class TestRuntimeFolderUnderPidns:
    """The PID namespace hides the server's pid: ``jupyter server list`` in a lab took
    the server for dead and deleted its runtime file. Under bwrap the folder is an
    empty tmpfs in the lab (the sandbox's own test: ``test_sandbox``)."""

    @pytest.fixture
    def labkernel_config(self) -> dict[str, Any]:
        return {**FAST, "containment": "pidns-bwrap"}

    async def test_the_runtime_folder_is_empty_and_server_list_deletes_nothing(
            self, api: Any, jp_serverapp: Any, jp_runtime_dir: Path) -> None:
        jp_serverapp.write_server_info_file()
        info = Path(jp_serverapp.info_file)
        assert info.parent == jp_runtime_dir and info.exists()
        sid, _ = await api.shell()
        assert (await run(api, sid, f"ls -A {jp_runtime_dir} | wc -l; echo L$((1))S", r"(\d+)\r\nL1S")).group(1) == "0"
        line = (f"JUPYTER_RUNTIME_DIR={jp_runtime_dir} {sys.executable} -m jupyter_server list --json "
                "| grep -c token; echo LI$((1))ST")
        assert (await run(api, sid, line, r"(\d+)\r\nLI1ST", timeout=60)).group(1) == "0"
        assert info.exists(), "jupyter server list in the lab deleted the server's runtime file"
