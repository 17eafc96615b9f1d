"""The ``sandbox`` containment: root inside, nobody's root outside, the host out of reach.

What a learner (or a lab) in a sandboxed session must not be able to do, tried the
way they would, against a real server and real shells, as a root server (in this
process) and as an unprivileged one (a ``nobody`` subprocess): hold a capability in
the host's namespaces, see a host process (also after ``umount -l /proc``, or with a
new proc), read a server credential (``/proc/<server>/environ``, the runtime folder
and its ``jpserver-<pid>.json``), let ``jupyter server list`` delete the server's
runtime file, or leave a write to ``/etc``, ``/root`` or ``/tmp`` where the host or
another session sees it. What it must be able to do: be root, write there (it stays
in the session and goes with it), find its setup's and checks' ``/tmp`` and home
the same as its shell's. Every escape test of ``test_containment`` and
``test_labs_containment`` also runs under this mode (they loop over the modes).

Where user namespaces are refused, the server falls back to the next mode and says
why: tested with a server started in a user namespace whose
``user.max_user_namespaces`` is 0. That sysctl is per user namespace, so the kernel
refuses for real, and only that server: setting it on the host would break every
other server on the machine (other tests' included) while it is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from labkernel import containment
from labkernel.containment.procfs import server_mark
from labkernel.containment.sandbox import SandboxSettings, host_root, probe_sandbox
from support.api import PROMPT, eventually, run
from support.containment import escapes, nobody_server, start_escapes_on
from support.labs import check, lab_config, wait_running, write_lab
from support.processes import NS, printed_pid, survivors
from support.serverproc import ServerProcess

pytestmark = [
    pytest.mark.containment,
    pytest.mark.skipif(not containment.available("sandbox"),
                       reason="the sandbox does not work here: " + probe_sandbox(SandboxSettings().resolved()).reason),
]

TQ = "'''"  # a TOML multi-line literal string's quotes
#: CapEff of a process with every capability (of this kernel) in its own user namespace.
ALL_CAPS = f"{(1 << (int(Path('/proc/sys/kernel/cap_last_cap').read_text()) + 1)) - 1:016x}"


# -- the in-process server: root, home = its root folder (as under JupyterHub) ---------------


@pytest.fixture
def jp_home_dir(jp_root_dir: Path) -> Path:
    return jp_root_dir


@pytest.fixture
def jp_data_dir(jp_root_dir: Path) -> Path:
    (jp_root_dir / ".local/share/jupyter").mkdir(parents=True, exist_ok=True)
    return jp_root_dir / ".local/share/jupyter"


@pytest.fixture
def jp_runtime_dir(jp_data_dir: Path) -> Path:
    (jp_data_dir / "runtime").mkdir(exist_ok=True)
    return jp_data_dir / "runtime"


@pytest.fixture
def jp_config_dir(jp_root_dir: Path) -> Path:
    (jp_root_dir / ".jupyter").mkdir(exist_ok=True)
    return jp_root_dir / ".jupyter"


@pytest.fixture
def sandboxes(tmp_path: Path) -> Path:
    return tmp_path / "sandboxes"


@pytest.fixture
def labkernel_config(tmp_path: Path, sandboxes: Path) -> dict[str, Any]:
    return lab_config(tmp_path, containment="sandbox", sandbox_dir=str(sandboxes), kill_timeout=15.0,
                      cull_idle_timeout=3600.0, setup_timeout=30.0, check_timeout=15.0)


@pytest.fixture
def labs(tmp_path: Path) -> Path:
    return tmp_path / "labs"


async def say(api: Any, sid: str, line: str, name: str) -> str:
    """Run ``line`` and return what it printed between ``<name>[`` and ``]<name>``
    (one line; the command line typed, echoed, splits the start marker)."""
    match = await run(api, sid, f'echo "{name[0]}""{name[1:]}[$({line})]{name}"', rf"{name}\[(.*?)\]{name}",
                      timeout=60)
    return match.group(1)


def sandbox_folders(sandboxes: Path) -> list[str]:
    return sorted(p.name for p in sandboxes.iterdir()) if sandboxes.exists() else []


# -- root inside, nothing outside ------------------------------------------------------------


async def test_the_lab_is_root_in_its_namespace_and_nobodys_root_on_the_host(api, token, tmp_path):
    if not host_root():
        pytest.skip("a server that is host root: see the unprivileged test for the others")
    sid, _ = await api.shell()
    assert await say(api, sid, "id -u", "ID") == "0"
    assert await say(api, sid, "grep CapEff /proc/self/status | cut -f2", "CAPS") == ALL_CAPS
    match = await run(api, sid, f'echo "SHELL=[$${NS}]"', r"SHELL=\[\d+@pid:\[\d+\]\]")
    shell = printed_pid(match.group(0), "SHELL")

    # Seen from the host: another user namespace (capabilities in it are none in
    # ours: a process has capabilities in its own namespace and its descendants
    # only), and not host root by uid either (which passes checks that look at
    # the uid alone): the 65536 uids from sandbox_uid_base.
    assert os.readlink(f"/proc/{shell}/ns/user") != os.readlink("/proc/self/ns/user")
    uids = re.search(r"^Uid:\s+(.*)$", Path(f"/proc/{shell}/status").read_text(), re.MULTILINE).group(1).split()
    assert set(uids) == {str(SandboxSettings().uid_base)}

    # What host root could do and the lab's root cannot: write a host sysctl (uid 0
    # alone would pass that check), signal a host process of another uid, make a
    # mount the host sees.
    sysctl = "cat /proc/sys/vm/swappiness > /proc/sys/vm/swappiness"
    assert "Permission denied" in await say(api, sid, f"({sysctl}) 2>&1", "SYSCTL")
    outsider = await asyncio.create_subprocess_exec("sleep", f"600.{token}")  # root's, on the host
    try:
        assert await say(api, sid, f"kill -9 {outsider.pid} 2>/dev/null; echo $?", "KILL") == "1"
        assert outsider.returncode is None
    finally:
        outsider.kill()
        await outsider.wait()
    # /sys (cgroupfs with it) is read-only, for good: its mounts are locked.
    writable = "awk '$5 ~ \"^/sys(/|$)\" && $6 ~ \"^rw\"' /proc/self/mountinfo | wc -l"
    assert await say(api, sid, writable, "SYSRW") == "0"
    assert await say(api, sid, "mount -o remount,bind,rw /sys 2>/dev/null; echo $?", "REMOUNT") != "0"
    mounted = await say(api, sid, f"mount -t tmpfs lab /mnt && touch /mnt/inside-{token} && echo made", "MOUNT")
    assert mounted == "made"  # in its own mount namespace, where it is root
    assert not os.path.exists(f"/mnt/inside-{token}")
    assert f"inside-{token}" not in Path("/proc/self/mountinfo").read_text()


async def test_neither_umount_of_proc_nor_a_new_proc_shows_a_host_process(api):
    sid, _ = await api.shell()
    assert await say(api, sid, "umount -l /proc 2>/dev/null; echo $?", "UMOUNT") != "0"
    assert await say(api, sid, "mkdir -p /tmp/p && mount -t proc proc /tmp/p 2>/dev/null; echo $?", "NEWPROC") != "0"
    # Whatever is mounted where, only the session's processes are there.
    pids = await say(api, sid, "ls -d /proc/[0-9]* /tmp/p/[0-9]* 2>/dev/null | wc -l", "PIDS")
    assert int(pids) < 15
    seen = await say(api, sid, "cat /proc/[0-9]*/cmdline /tmp/p/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '",
                     "CMDLINES")
    assert "pytest" not in seen and "jupyter" not in seen
    assert await say(api, sid, f"test -e /proc/{os.getpid()}/environ && echo seen || echo gone", "SERVER") == "gone"


async def test_the_servers_credentials_and_runtime_file_are_out_of_reach(
        api, jp_serverapp, jp_root_dir, jp_runtime_dir, jp_config_dir):
    """Home, runtime, data and config folders inside the session's folder, as under
    JupyterHub: the folder is there, they are empty, and stay so."""
    jp_serverapp.write_server_info_file()  # what a running server has: jpserver-<pid>.json
    info = Path(jp_serverapp.info_file)
    assert info.parent == jp_runtime_dir and info.exists()
    (jp_config_dir / "jupyter_server_config.json").write_text('{"IdentityProvider": {"token": "secret"}}')
    (jp_root_dir / "work.txt").write_text("the learner's")
    sid, _ = await api.shell()
    inside = {"at its path": str(jp_runtime_dir), "in ~": "/root/.local/share/jupyter/runtime"}
    for where, path in inside.items():
        assert await say(api, sid, f"ls -A {path} | wc -l", "RUNTIME") == "0", where
        assert "No such file" in await say(api, sid, f"cat {path}/{info.name} 2>&1", "INFO")
        # The empty folder is a mount the lab cannot take away.
        await say(api, sid, f"umount -l {path} 2>/dev/null; umount {path} 2>/dev/null; true", "UMOUNT")
        assert await say(api, sid, f"ls -A {path} | wc -l", "RUNTIME") == "0", where
    assert await say(api, sid, f"ls -A {jp_config_dir} | wc -l", "CONFIG") == "0"
    assert await say(api, sid, "cat ~/work.txt", "WORK") == "the learner's"
    environ = await say(api, sid, f"cat /proc/{os.getpid()}/environ 2>&1", "ENVIRON")
    assert environ.endswith("No such file or directory"), environ

    # jupyter server list removes the runtime files of servers it cannot see: here it
    # finds none. Run by this environment's Python where the lab can see it: a checkout
    # under /tmp (CI's clone) is out of the lab's sight, behind its private /tmp, and
    # there the empty runtime folder above is all the lab has to delete from.
    python = sys.executable
    if await say(api, sid, f"test -x {python}; echo $?", "SEEN") == "0":
        listing = f"{python} -m jupyter_server list --json > /tmp/list 2>&1; echo $?"
        why = "tail -c 300 /tmp/list | tr -d '\\r\\n'"
        assert await say(api, sid, listing, "LIST") == "0", await say(api, sid, why, "WHY")
        assert await say(api, sid, "grep -c token /tmp/list", "LISTED") == "0"
    assert info.exists(), "the lab deleted the server's runtime file"


async def test_writes_to_etc_root_and_tmp_stay_in_the_session_and_go_with_it(api, labs, sandboxes, token):
    write_lab(labs, "scratchy", "scratch = true")  # its folder, /root, is removed with it too
    # An overlay's top folder is the session's; below it, host root's folders are
    # its own only for a root server's lab (one uid: read-only).
    places = ["/etc", "/root", "/tmp", "/var/tmp", "/opt", "/dev/shm", *(["/usr/local"] if host_root() else [])]
    first, _ = await api.shell(labId="scratchy")
    second, _ = await api.shell(labId="scratchy")
    made = await say(api, first, " && ".join(f"echo A > {p}/lk-{token}" for p in places) + " && echo made", "MADE")
    assert made == "made"
    assert await say(api, first, f"cat {' '.join(f'{p}/lk-{token}' for p in places)} | tr -d '\\n'",
                     "READ") == "A" * len(places)
    # Another session sees none of it, nor does the host.
    assert await say(api, second, f"ls {' '.join(f'{p}/lk-{token}' for p in places)} 2>/dev/null | wc -l",
                     "OTHER") == "0"
    for place in places:
        if place != "/root":  # the host's /root is not the lab's
            assert not os.path.exists(f"{place}/lk-{token}"), place
    # It is in the first session's sandbox folder, which goes with it.
    folder = sandboxes / f"{server_mark()}-{first}"
    assert (folder / "upper" / "etc" / f"lk-{token}").exists()
    await api.stop(first)
    await eventually(lambda: not folder.exists(), timeout=15)
    await api.stop(second)
    await eventually(lambda: sandbox_folders(sandboxes) == [], timeout=15)


async def test_absolute_asset_targets_land_in_the_sessions_own_filesystem(api, labs, sandboxes, token):
    """/etc, /opt and /usr/local are overlays of the session's (the files are in their
    upper layers), /tmp and /var/tmp fresh (copied in once mounted), /root the session's
    folder; the host has none of them, and a setup already sees them."""
    places = {f"/etc/lk-{token}.conf": "etc", f"/tmp/lk-{token}/nested.txt": "tmp",
              f"/var/tmp/lk-{token}": "vartmp", f"/opt/lk-{token}/bin/tool": "opt",
              "/root/lk-home.txt": "home"}
    assets = "".join(f"""
        [[assets]]
        source = "{content}.txt"
        target = "{target}"
        {'mode = "+x"' if content == "opt" else ''}
    """ for target, content in places.items())
    assets += f"""
        [[assets]]
        source = "site"
        target = "/usr/local/share/lk-{token}/"
    """
    files = {f"{content}.txt": content + "\n" for content in places.values()}
    files.update({"site/index.html": "site\n", "site/css/main.css": "css\n"})
    write_lab(labs, "placed", f"""
        scratch = true
        setup = "cat {' '.join(places)} > /tmp/setup-saw"
        {assets}
    """, files=files)
    sid, _ = await api.shell(labId="placed")
    seen = await say(api, sid, f"cat {' '.join(places)} | tr '\\n' ' '", "SEEN")
    assert seen.split() == list(places.values())
    setup_saw = await say(api, sid, "cat /tmp/setup-saw | tr '\\n' ' '", "SETUP")
    assert setup_saw.split() == list(places.values())
    assert await say(api, sid, f"test -x /opt/lk-{token}/bin/tool && echo x", "EXEC") == "x"
    site = f"/usr/local/share/lk-{token}/site"
    shown = await say(api, sid, f"cat {site}/index.html {site}/css/main.css | tr '\\n' ' '", "SITE")
    assert shown.strip() == "site css"
    assert await say(api, sid, "grep -c . /etc/passwd", "PASSWD") != "0"  # the host's /etc is still under it
    for target in [*places, site]:
        if not target.startswith("/root"):
            assert not os.path.exists(target), target
    assert (sandboxes / f"{server_mark()}-{sid}" / "upper" / "etc" / f"lk-{token}.conf").read_text() == "etc\n"


@pytest.mark.parametrize("target", ["/proc/lk-x", "/sys/lk-x", "/dev/lk-x", "/"])
async def test_an_asset_target_where_the_host_shows_through_is_refused(api, labs, target):
    write_lab(labs, "through", f"""
        [[assets]]
        source = "a.txt"
        target = "{target}"
    """, files={"a.txt": "a"})
    sid = (await api.start(labId="through"))["sessionId"]
    session = await wait_running(api, sid)
    assert session["status"] == "failed"
    assert "shows the host's own files" in (await api.output(sid))["data"]


async def test_an_asset_target_in_a_hidden_folder_is_refused(api, labs, jp_runtime_dir):
    write_lab(labs, "hidden", f"""
        [[assets]]
        source = "a.txt"
        target = "{jp_runtime_dir}/planted.json"
    """, files={"a.txt": "a"})
    sid = (await api.start(labId="hidden"))["sessionId"]
    assert (await wait_running(api, sid))["status"] == "failed"
    assert not (jp_runtime_dir / "planted.json").exists()


async def test_the_setup_the_shell_and_a_check_share_tmp_home_and_root(api, labs, jp_root_dir, token):
    write_lab(labs, "shared", f"""
        workdir = "work-{token}"
        setup = {TQ}
        echo setup > /tmp/setup-{token}
        echo setup > ~/setup-home
        echo "$(id -u) $HOME $(readlink /proc/self/ns/mnt) $(readlink /proc/self/ns/pid)" > /tmp/setup-where
        {TQ}
        [[assets]]
        source = "given.txt"
        target = "~/given.txt"
        [[steps]]
        title = "Share"
        check = {TQ}
        test "$(cat /tmp/shell-{token})" = shell || exit 1
        test "$(cat /root/setup-home)" = setup || exit 2
        test "$(cat ~/given.txt)" = given || exit 3
        echo "$(id -u) $HOME $(readlink /proc/self/ns/mnt) $(readlink /proc/self/ns/pid)"
        {TQ}
    """, files={"given.txt": "given"})
    sid, _ = await api.shell(labId="shared")
    assert await say(api, sid, f"cat /tmp/setup-{token} ~/setup-home ~/given.txt | tr '\\n' ' '",
                     "SEEN") == "setup setup given"
    shell_where = await say(api, sid, 'echo "$(id -u) $HOME $(readlink /proc/self/ns/mnt) '
                                      '$(readlink /proc/self/ns/pid)"', "WHERE")
    assert await say(api, sid, "cat /tmp/setup-where", "SETUP") == shell_where
    assert await say(api, sid, "pwd", "PWD") == str(jp_root_dir / f"work-{token}")
    await run(api, sid, f"echo shell > /tmp/shell-{token}; echo DO$((1))NE", r"DO1NE")
    (result,) = (await check(api, sid, 1))["results"]
    assert result["passed"] is True, result["message"]
    assert result["message"].strip() == shell_where
    assert shell_where.startswith("0 /root ")
    # The home is the session's folder: the asset and the setup's file are there.
    assert (jp_root_dir / f"work-{token}" / "given.txt").read_text() == "given"
    assert (jp_root_dir / f"work-{token}" / "setup-home").read_text() == "setup\n"


async def test_health_says_what_the_sandbox_gives_and_no_host_path(api, tmp_path):
    health = await api.ok("GET", "health")
    assert health["containment"] == "sandbox"
    sandbox = health["sandbox"]
    assert sandbox["inForce"] is sandbox["available"] is sandbox["rootInside"] is True
    assert {"/etc", "/usr", "/var"} <= set(sandbox["overlaid"])
    assert {"/tmp", "/var/tmp", "/run"} <= set(sandbox["fresh"])
    assert sandbox["home"] == "/root"
    root = host_root()
    assert (sandbox["uidsOutside"], sandbox["hostRootFiles"], sandbox["packageInstall"]) == (
        (65536, "own", True) if root else (1, "read-only", False))
    assert str(tmp_path) not in json.dumps(health)


async def test_the_lab_root_owns_what_host_root_owns_through_its_overlay(api, token):
    """A root server's lab: idmapped lower layers, so /etc/passwd is editable (in the
    overlay) and chown to another of its uids works, as dpkg needs."""
    if not host_root():
        pytest.skip("a server that is not root maps one uid: see the unprivileged test")
    sid, _ = await api.shell()
    edited = await say(api, sid, f"echo 'lk{token[:6]}:x:4242:4242::/:/bin/sh' >> /etc/passwd && "
                                 f"id -u lk{token[:6]}", "EDIT")
    assert edited == "4242"
    assert f"lk{token[:6]}" not in Path("/etc/passwd").read_text()
    chowned = await say(api, sid, f"touch /etc/lk-{token} && chown 4242:4 /etc/lk-{token} && "
                                  f"stat -c %u:%g /etc/lk-{token}", "CHOWN")
    assert chowned == "4242:4"


# -- a server killed, a server without user namespaces ------------------------------------


def test_a_killed_servers_sandbox_folders_are_removed_by_the_next_server(tmp_path):
    sandboxes = tmp_path / "sandboxes"
    config = {"containment": "sandbox", "sandbox_dir": str(sandboxes)}
    server = ServerProcess(tmp_path / "first", manager=config)
    try:
        sid, _ = server.shell()
        accepted = server.command(sid, "echo left > /etc/left-behind && echo WR$((1))OTE")
        server.read_until(sid, r"WR1OTE", accepted["offset"])
        # Named by the server's pid and start time: a pid reused later does not keep it.
        mark = server_mark(server.proc.pid)
        assert sandbox_folders(sandboxes) == [f"{mark}-{sid}"]
    finally:
        server.proc.kill()
        server.proc.wait()
    successor = ServerProcess(tmp_path / "second", manager=config)
    try:
        deadline = time.monotonic() + 20
        while f"{mark}-{sid}" in sandbox_folders(sandboxes):
            assert time.monotonic() < deadline, sandbox_folders(sandboxes)
            time.sleep(0.1)
        assert "removed 1 sandbox folder(s) a dead server left" in successor.log()
    finally:
        successor.terminate()


def test_without_user_namespaces_the_server_falls_back_and_says_why(tmp_path):
    """The server runs in a user namespace whose limit of nested ones is 0."""
    python = tmp_path / "python-without-user-namespaces"
    python.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        exec unshare --user --map-root-user sh -c \\
            'echo 0 > /proc/sys/user/max_user_namespaces && exec "$0" "$@"' {sys.executable} "$@"
    """))
    python.chmod(0o755)
    server = ServerProcess(tmp_path / "server", python=str(python))
    try:
        health = server.ok("GET", "health")
        assert health["containment"] != "sandbox"
        assert health["sandbox"]["inForce"] is health["sandbox"]["available"] is False
        assert "user" in health["sandbox"]["reason"].lower() or "space" in health["sandbox"]["reason"]
        log = server.log()
        assert "no sandbox for the sessions" in log, log
        assert f"session containment: {health['containment']}" in log
        sid, _ = server.shell()  # and sessions run, under the next mode
        assert server.ok("DELETE", "api", "labs", "session", sid)["status"] == "stopped"
    finally:
        server.terminate()


# -- an unprivileged server ---------------------------------------------------------------


def test_an_unprivileged_server_sandboxes_its_labs_as_root_inside_and_itself_outside(token):
    """nobody's server: the lab's root is nobody on the host, host root's files are
    read-only to it, the server's folders are out of sight, its checks run as root,
    and every escape ends at DELETE."""
    def prepare(base: Path) -> None:
        write_lab(base / "root" / "labs", "checked", f"""
            [[steps]]
            title = "Who"
            check = {TQ}test "$(id -u)" = 0 && test "$HOME" = /root && cat /tmp/shell-{token}{TQ}
        """)

    with nobody_server({"containment": "sandbox"}, prepare) as server:
        sandbox = server.ok("GET", "health")["sandbox"]
        assert server.ok("GET", "health")["containment"] == "sandbox"
        assert (sandbox["uidsOutside"], sandbox["hostRootFiles"], sandbox["packageInstall"]) == (1, "read-only",
                                                                                                 False)
        sid = server.ok("POST", "api", "labs", "start", body={"labId": "checked"}, expect=201)["sessionId"]
        server.read_until(sid, re.escape(PROMPT))

        def say_(line: str, name: str) -> str:
            accepted = server.command(sid, f'echo "{name[0]}""{name[1:]}[$({line})]{name}"')
            text, _ = server.read_until(sid, rf"{name}\[(.*?)\]{name}", accepted["offset"])
            return re.search(rf"{name}\[(.*?)\]{name}", text).group(1)

        assert say_("id -u", "ID") == "0"
        shell = printed_pid(say_(f'echo "SHELL=[$${NS}]"', "S"), "SHELL")
        assert os.stat(f"/proc/{shell}").st_uid == 65534
        assert "Permission denied" in say_("head -c 1 /etc/shadow 2>&1", "SHADOW")
        assert "Permission denied" in say_("(echo x >> /etc/passwd) 2>&1", "PASSWD")
        assert say_(f"echo new > /etc/lk-{token} && cat /etc/lk-{token}", "NEW") == "new"
        assert not os.path.exists(f"/etc/lk-{token}")
        runtime = server.root.parent / "runtime"
        assert "No such file" in say_(f"ls {runtime} 2>&1", "RUNTIME")
        assert "Permission denied" in say_("(cat /proc/sys/vm/swappiness > /proc/sys/vm/swappiness) 2>&1", "SYSCTL")
        say_(f"echo shell > /tmp/shell-{token}", "W")
        (result,) = server.ok("POST", "api", "labs", "session", sid, "check", body={"step": 1})["results"]
        assert result["passed"] is True, result["message"]

        start_escapes_on(server, sid, token, escapes(token, "sandbox"))
        assert server.ok("DELETE", "api", "labs", "session", sid)["unkilled"] == []
        assert survivors(token) == []
