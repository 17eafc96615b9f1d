"""Issue 14's "Done when" attacks, tried as a learner would, against a server running as
root and one running as an unprivileged user (``nobody``), each in a process of its own.

For each server the lab shell must have no capability on the host, see no host process
after ``umount -l /proc``, read no credential of the server by any path the issue
found (its environment and command line through ``/proc``, its runtime folder and
``jpserver-<pid>.json``, its configuration file with the token, the hub's token), let
``jupyter server list`` delete nothing of the server's, and not stop another session
with a fork bomb (bounded here: it forks at most four times the session's limit, and
its children end within a minute or with the session).

On this machine both servers run their sessions in the ``sandbox`` (user namespaces
work, also unprivileged): these tests assert it, so that a host where they do not is
seen, not silently tested in a weaker mode. Where the sandbox is refused, the server
falls back to ``pidns`` or the next (``test_sandbox``'s fallback test), in which a
root server's lab is host root: none of the attacks below is then held off but the
fork bomb, by a pids cgroup, where one may be made.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from labkernel import containment
from support.api import FAST, PROMPT
from support.containment import nobody_server
from support.labs import write_lab
from support.processes import NS, printed_pid
from support.serverproc import ServerProcess

pytestmark = [
    pytest.mark.containment, pytest.mark.server,
    pytest.mark.skipif(os.geteuid() != 0, reason="starts servers as root and as nobody: needs root"),
]

#: Each session's process limit in these servers: low, so the bomb is small.
MAX_PROCESSES = 64
#: CapEff of a process with every capability of this kernel, in its own user namespace.
ALL_CAPS = f"{(1 << (int(Path('/proc/sys/kernel/cap_last_cap').read_text()) + 1)) - 1:016x}"
HUB_TOKEN = f"hub-{secrets.token_hex(12)}"

#: Forks until refused (or at most four times the limit); each child sleeps a minute.
FORKS = f"""import os, time
n, why = 0, 0
for i in range({4 * MAX_PROCESSES}):
    try:
        pid = os.fork()
    except OSError as e:
        why = e.errno
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    n += 1
print('FORKED=%d REFUSED=%d' % (n, why), flush=True)
time.sleep(60)
"""


def prepare(base: Path) -> None:
    """The server's folder: a lab whose check forks (as any check does: nsenter, sh)."""
    write_lab(base / "root" / "labs", "checked", """
        [[steps]]
        title = "Fine"
        check = "sh -c 'echo checked' && ls / > /dev/null"
    """, files={"forks.py": FORKS})
    (base / "root" / "forks.py").write_text(FORKS)


@pytest.fixture(scope="module", params=["root", "nobody"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = {**FAST, "max_processes": MAX_PROCESSES, "cull_idle_timeout": 3600.0, "kill_timeout": 15.0}
    env = {"JUPYTERHUB_API_TOKEN": HUB_TOKEN, "JPY_API_TOKEN": HUB_TOKEN}
    if request.param == "nobody":
        with nobody_server(config, prepare, env=env) as unprivileged:
            yield unprivileged
        return
    base = tmp_path_factory.mktemp("root-server")
    (base / "root").mkdir()
    prepare(base)
    with ServerProcess(base, manager=config, env=env) as root:
        yield root
        root.terminate()


class Shell:
    """One session of ``server``, driven as a learner types."""

    def __init__(self, server: ServerProcess, lab: str = "checked"):
        self.server = server
        self.sid = server.ok("POST", "api", "labs", "start", body={"labId": lab}, expect=201)["sessionId"]
        _, self.offset = server.read_until(self.sid, re.escape(PROMPT))

    def say(self, line: str, name: str = "OUT", timeout: float = 60) -> str:
        """What ``line`` printed, on one line, between ``name[`` and ``]name``."""
        accepted = self.server.command(self.sid, f'echo "{name[0]}""{name[1:]}[$({line})]{name}"')
        text, self.offset = self.server.read_until(self.sid, rf"{name}\[(.*?)\]{name}", accepted["offset"],
                                                   timeout=timeout)
        return re.search(rf"{name}\[(.*?)\]{name}", text).group(1)

    def stop(self) -> dict[str, Any]:
        return self.server.ok("DELETE", "api", "labs", "session", self.sid)


def test_sessions_run_in_the_sandbox_with_limits_of_their_own(server: ServerProcess) -> None:
    health = server.ok("GET", "health")
    assert health["containment"] == "sandbox", health
    processes, memory = health["limits"]["processes"], health["limits"]["memory"]
    assert (processes["max"], processes["perSession"]) == (MAX_PROCESSES, True), processes
    if server.user is None:  # root here may make memory cgroups (v1)
        assert memory["perSession"] is (containment.cgroup_dirs().memory is not None), memory
    else:  # nobody may not: said, with why
        assert (memory["max"], memory["perSession"], memory["how"]) == (None, False, "none")
        assert "memory cgroup" in memory["why"]


def test_the_lab_shell_has_no_capability_on_the_host(server: ServerProcess, token: str) -> None:
    shell = Shell(server)
    try:
        assert shell.say("id -u", "ID") == "0"
        assert shell.say("grep CapEff /proc/self/status | cut -f2", "CAPS") == ALL_CAPS  # in its own namespace
        pid = printed_pid(shell.say(f'echo "SHELL=[$${NS}]"', "S"), "SHELL")
        # From the host: another user namespace (capabilities there are none here), and
        # not host root by uid either.
        assert os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")
        uids = re.search(r"^Uid:\s+(.*)$", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE).group(1)
        assert "0" not in uids.split(), uids
        # What a capability in the host's namespaces would allow.
        sysctl = "(cat /proc/sys/vm/swappiness > /proc/sys/vm/swappiness) 2>&1"
        assert "Permission denied" in shell.say(sysctl, "SYSCTL")
        assert "Permission denied" in shell.say("nice -n -5 true 2>&1", "NICE")  # CAP_SYS_NICE
        outsider = subprocess.Popen(["sleep", f"600.{token}"])  # root's, on the host
        try:
            assert shell.say(f"kill -9 {outsider.pid} 2>/dev/null; echo $?", "KILL") == "1"
            assert outsider.poll() is None
        finally:
            outsider.kill()
            outsider.wait()
        made = shell.say(f"mount -t tmpfs lab /mnt && touch /mnt/in-{token} && echo made", "MOUNT")
        assert made == "made" and not os.path.exists(f"/mnt/in-{token}")  # its own mount namespace
    finally:
        shell.stop()


def test_no_host_process_shows_after_umount_of_proc(server: ServerProcess) -> None:
    shell = Shell(server)
    try:
        assert shell.say("umount -l /proc 2>/dev/null; echo $?", "UMOUNT") != "0"
        assert shell.say("mkdir -p /tmp/p && mount -t proc proc /tmp/p 2>/dev/null; echo $?", "NEWPROC") != "0"
        assert int(shell.say("ls -d /proc/[0-9]* /tmp/p/[0-9]* 2>/dev/null | wc -l", "PIDS")) < 15
        seen = shell.say("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '", "CMDLINES")
        assert "jupyter" not in seen and "pytest" not in seen
        assert shell.say(f"test -e /proc/{server.proc.pid}/environ && echo seen || echo gone", "SERVER") == "gone"
    finally:
        shell.stop()


def test_no_server_credential_is_readable_and_server_list_deletes_nothing(server: ServerProcess) -> None:
    runtime = server.workdir / "runtime"
    deadline = time.monotonic() + 30
    while not (info := sorted(runtime.glob("jpserver-*.json"))):
        assert time.monotonic() < deadline, "the server wrote no runtime file"
        time.sleep(0.1)
    secrets_ = {"server token": server.token, "hub token": HUB_TOKEN}
    shell = Shell(server)
    try:
        for name, value in secrets_.items():
            # A pattern that matches the value and not itself: grep's own command line
            # is among those searched.
            pattern = f"{value[0]}[{value[1]}]{value[2:]}"
            # Its own environment, every process it can see (environ and command line).
            assert shell.say(f"env | grep -c '{pattern}'", "ENV") == "0", name
            found = shell.say(f"cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' "
                              f"| grep -c '{pattern}'", "PROC")
            assert found == "0", name
            # The usual places for a token: a search of where a lab can write or read.
            found = shell.say(f"grep -rls '{pattern}' /etc /run /tmp /var/tmp /root /dev/shm {server.workdir} "
                              "2>/dev/null | head -3 | tr '\\n' ' '", "FILES", timeout=120)
            assert found == "", name
        # The runtime folder and the token's file, where they are on the host.
        assert "No such file" in shell.say(f"ls {runtime}/ 2>&1", "RUNTIME")
        assert "No such file" in shell.say(f"cat {info[0]} 2>&1", "INFO")
        assert "No such file" in shell.say(f"cat {server.workdir}/jupyter_server_config.json 2>&1", "CONFIG")
        # jupyter server list removes the runtime files of servers it cannot see running.
        listing = shell.say(f"JUPYTER_RUNTIME_DIR={runtime} {server.python} -m jupyter_server list --json "
                            "2>&1 | grep -c token", "LIST")
        assert listing == "0"
        assert info[0].exists(), "the lab's jupyter server list deleted the server's runtime file"
    finally:
        shell.stop()


def test_a_fork_bomb_in_one_session_does_not_stop_another(server: ServerProcess) -> None:
    """The other session holds half its limit in processes first: where the limit
    counted every process of the server's user (RLIMIT_NPROC set before the user
    namespace), the bomb then ran out early and the other session could fork no more."""
    bomb_beside_another(server)


@pytest.mark.parametrize("mode", ["pidns-bwrap", "pidns-unshare"])
def test_without_the_sandbox_an_unprivileged_servers_pidns_holds_a_fork_bomb_too(mode: str) -> None:
    """pidns without root makes a user namespace per session too (bwrap's or
    unshare's): the limit goes in it, as in the sandbox."""
    if not containment.available(mode):
        pytest.skip(f"{mode} does not work here")
    config = {**FAST, "containment": mode, "max_processes": MAX_PROCESSES, "cull_idle_timeout": 3600.0,
              "kill_timeout": 15.0}
    with nobody_server(config, prepare) as server:
        health = server.ok("GET", "health")
        assert health["containment"] == "pidns"
        assert health["limits"]["processes"] == {"max": MAX_PROCESSES, "perSession": True,
                                                 "how": "RLIMIT_NPROC in the session's user namespace"}
        bomb_beside_another(server)


def test_an_unprivileged_server_without_namespaces_says_its_process_limit_is_shared() -> None:
    with nobody_server({"containment": "scan", "max_processes": MAX_PROCESSES}) as server:
        processes = server.ok("GET", "health")["limits"]["processes"]
        assert (processes["max"], processes["perSession"], processes["how"]) == (MAX_PROCESSES, False,
                                                                                  "RLIMIT_NPROC")
        assert "fork bomb" in processes["why"]


def bomb_beside_another(server: ServerProcess) -> None:
    bomb, other = Shell(server), Shell(server)
    try:
        held = MAX_PROCESSES // 2
        assert other.say(f"for i in $(seq {held}); do sleep 90 >/dev/null 2>&1 & done; echo held", "HELD") == "held"
        # In the background: its children sleep on while the other session is tried.
        # It reports in the session's folder, read from here: its own shell cannot
        # fork a cat any more, as it should not.
        report = server.root / "bomb.out"
        report.unlink(missing_ok=True)
        server.command(bomb.sid, "/usr/bin/python3 forks.py > bomb.out &")
        deadline = time.monotonic() + 120
        while not (report.exists() and (forked := report.read_text().strip())):
            assert time.monotonic() < deadline, "the bomb did not report"
            time.sleep(0.5)
        n, refused = (int(x) for x in re.fullmatch(r"FORKED=(\d+) REFUSED=(\d+)", forked).groups())
        # Refused at its own limit (EAGAIN), with its whole budget: the other's do not count.
        assert MAX_PROCESSES - 16 < n < MAX_PROCESSES and refused == 11, forked
        assert other.say("echo alive-$((6*7))", "ALIVE") == "alive-42"
        assert other.say("for i in 1 2 3 4 5 6 7 8; do sh -c true & done; wait; echo forked", "FORK") == "forked"
        (result,) = server.ok("POST", "api", "labs", "session", other.sid, "check", body={"step": 1})["results"]
        assert result["passed"] is True, result["message"]
        # A new session still starts (before: "bwrap: Creating new namespace failed").
        third = Shell(server)
        assert third.say("echo third", "THIRD") == "third"
        third.stop()
        # The bomb's session is still there, at its limit, and its stop ends it all.
        assert bomb.stop()["unkilled"] == []
    finally:
        other.stop()
