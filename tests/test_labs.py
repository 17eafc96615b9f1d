"""Lab definitions on a real server: the catalog, and what starting a defined lab does.

Each test gets lab folders of its own under ``tmp_path`` (never the repository's
``labs/``), and a server that re-reads them on every request.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from support.api import PROMPT, eventually
from support.labs import lab_config, started, wait_running, write_lab
from support.processes import sleeping, with_token

SECRET = "s3cr3t-value-4711"


@pytest.fixture
def labkernel_config(tmp_path: Path) -> dict[str, Any]:
    return lab_config(tmp_path, setup_timeout=5.0)


async def catalog(api: Any) -> dict[str, Any]:
    return await api.ok("GET", "api", "labs")


async def run(api: Any, sid: str, line: str, offset: int) -> tuple[str, int]:
    """Type a line and read until the next prompt."""
    await api.command(sid, line)
    return await api.read_until(sid, re.escape(PROMPT) + r"$|" + re.escape(PROMPT) + r"\x1b", offset)


# -- the catalog ---------------------------------------------------------------------------------


async def test_the_catalog_lists_defined_labs_with_their_steps_and_the_broken_ones_as_errors(
        api: Any, labs: Path) -> None:
    write_lab(labs, "intro", """
        title = "Intro"
        description = "A first lab."
        intro = "Welcome."
        finish = "Done."
        [[steps]]
        title = "Say hello"
        text = "Type `echo hello`."
        check = "true"
        hint = "echo"
        solution = ["echo hello"]
    """)
    write_lab(labs, "broken", "title = 'unclosed")
    write_lab(labs, "mistyped", "[[steps]]\ntitle = 3\n")
    body = await catalog(api)
    by_id = {lab["id"]: lab for lab in body["labs"]}
    assert set(by_id) == {"shell", "intro"}
    intro = by_id["intro"]
    assert (intro["title"], intro["description"], intro["steps"]) == ("Intro", "A first lab.", 1)
    assert intro["stepList"] == [{"title": "Say hello", "text": "Type `echo hello`.", "hint": "echo",
                                  "solution": ["echo hello"], "hasCheck": True}]
    assert (intro["intro"], intro["finish"], intro["notes"]) == ("Welcome.", "Done.", [])
    errors = {e["labId"]: e for e in body["errors"]}
    assert errors["broken"]["field"] == "lab.toml" and "not valid TOML" in errors["broken"]["reason"]
    assert errors["broken"]["path"].endswith("broken/lab.toml")
    assert errors["mistyped"]["field"] == "steps[1].title" and "must be a string" in errors["mistyped"]["reason"]
    # the others are served all the same
    sid, _ = await started(api, "intro")
    assert (await api.get(sid))["labId"] == "intro"


async def test_definitions_are_read_again_when_they_change_without_a_restart(api: Any, labs: Path) -> None:
    folder = write_lab(labs, "changing", "title = 'Before'")
    assert {lab["id"]: lab["title"] for lab in (await catalog(api))["labs"]}["changing"] == "Before"
    (folder / "lab.toml").write_text("title = 'After, a longer title'")
    write_lab(labs, "new", "title = 'New'")
    titles = {lab["id"]: lab["title"] for lab in (await catalog(api))["labs"]}
    assert titles["changing"] == "After, a longer title" and titles["new"] == "New"
    (folder / "lab.toml").write_text("title = ")
    body = await catalog(api)
    assert "changing" not in {lab["id"] for lab in body["labs"]}
    assert [e["labId"] for e in body["errors"]] == ["changing"]


async def test_a_duplicate_id_is_an_error_naming_both_folders(api: Any, labs: Path) -> None:
    write_lab(labs, "a", "id = 'twin'\ntitle = 'A'")
    write_lab(labs, "b", "id = 'twin'\ntitle = 'B'")
    body = await catalog(api)
    assert [lab["title"] for lab in body["labs"] if lab["id"] == "twin"] == ["A"]
    (error,) = body["errors"]
    assert error["labId"] == "twin" and error["path"].endswith("b/lab.toml") and "/a" in error["reason"]


async def test_the_scan_never_runs_on_the_event_loop(api: Any, labs: Path, manager: Any) -> None:
    import threading
    threads = []
    original = manager._scanner.scan if manager._scanner else None
    assert original is not None  # the server read its labs at start
    manager._scanner.scan = lambda: (threads.append(threading.current_thread()), original())[1]
    # A scan may be in flight that started before the patch (the first request's
    # own, with lab_scan_interval 0): the second request starts one of its own.
    await catalog(api)
    await catalog(api)
    assert threads and all(t is not threading.main_thread() for t in threads)


# -- starting a defined lab ----------------------------------------------------------------------


async def test_setup_runs_hidden_before_the_prompt_while_the_session_is_starting(
        api: Any, labs: Path, jp_root_dir: Path) -> None:
    write_lab(labs, "prepared", """
        workdir = "work"
        setup = "sleep 0.5; echo SETUP-WAS-HERE; echo made > made.txt"
    """)
    session = await api.start(labId="prepared")
    assert session["status"] == "starting" and session["terminalActive"] is False
    sid = session["sessionId"]
    text, offset = await api.read_until(sid, re.escape(PROMPT))
    assert "SETUP-WAS-HERE" not in text  # hidden
    assert (await api.get(sid))["status"] == "running"
    text, _ = await run(api, sid, "pwd; cat made.txt", offset)
    assert str(jp_root_dir / "work") in text and "made" in text


async def test_a_failing_setup_fails_the_session_with_its_output_and_a_clear_message(
        api: Any, labs: Path) -> None:
    write_lab(labs, "fails", "setup = 'echo trying; echo no such thing >&2; exit 3'")
    write_lab(labs, "fine", "")
    sid = (await api.start(labId="fails"))["sessionId"]
    session = await wait_running(api, sid)
    assert session["status"] == "failed" and session["terminalActive"] is False
    text = (await api.output(sid))["data"]
    assert "trying" in text and "no such thing" in text
    assert "setup of lab 'fails' failed with exit code 3" in text
    # the other labs keep working
    await started(api, "fine")


@pytest.mark.slow  # waits out the 5 s setup_timeout
async def test_a_hanging_setup_is_stopped_after_the_setup_timeout(api: Any, labs: Path) -> None:
    write_lab(labs, "hangs", "setup = 'echo started; sleep 600'")
    started = time.monotonic()
    sid = (await api.start(labId="hangs"))["sessionId"]
    session = await wait_running(api, sid)
    assert session["status"] == "failed" and 4 < time.monotonic() - started < 20
    assert "did not finish within 5 s" in (await api.output(sid))["data"]


async def test_stopping_a_starting_session_ends_its_setup_and_what_it_started(
        api: Any, labs: Path, token: str) -> None:
    write_lab(labs, "slow", f"setup = 'sleep 300.{token} & setsid sleep 301.{token} & wait'")
    sid = (await api.start(labId="slow"))["sessionId"]
    await eventually(lambda: len(sleeping(token)) == 2)
    stopped = await api.stop(sid)
    assert stopped["status"] == "stopped" and stopped["unkilled"] == []
    assert with_token(token) == []  # the DELETE answering is the promise


async def test_a_secret_never_appears_in_answers_and_is_masked_in_setup_output(
        api: Any, labs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_TEST_SECRET", SECRET)
    write_lab(labs, "secretive", """
        title = "Secretive"
        setup = 'echo "the key is $API_KEY"; exit 1'
        [env]
        API_KEY = { value = "${LAB_TEST_SECRET}", secret = true }
    """)
    sid = (await api.start(labId="secretive"))["sessionId"]
    await wait_running(api, sid)
    text = (await api.output(sid))["data"]
    assert "the key is ********" in text and SECRET not in text
    answers = [await catalog(api), await api.get(sid), await api.ok("GET", "api", "labs", "sessions")]
    assert SECRET not in json.dumps(answers)


async def test_env_takes_values_from_the_server_environment_and_no_credentials(
        api: Any, labs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_TEST_REGION", "eu-north")
    monkeypatch.setenv("LABKERNEL_TOKEN", "server-token-must-not-leak")
    write_lab(labs, "envy", """
        [env]
        REGION = "region-${LAB_TEST_REGION}-${LAB_TEST_UNSET}"
        PLAIN = "plain value"
    """)
    sid, offset = await started(api, "envy")
    text, _ = await run(api, sid, 'echo "[$REGION] [$PLAIN] [$LABKERNEL_TOKEN]"', offset)
    assert "[region-eu-north-] [plain value] []" in text


async def test_a_scratch_folder_is_fresh_per_session_and_removed_with_it(
        api: Any, labs: Path, tmp_path: Path, manager: Any) -> None:
    (tmp_path / "scratch").mkdir()
    manager.scratch_dir = str(tmp_path / "scratch")
    write_lab(labs, "scratchy", "scratch = true\nsetup = 'touch from-setup'")
    folders = []
    for _ in range(2):
        sid = (await api.start(labId="scratchy"))["sessionId"]
        _, offset = await api.read_until(sid, re.escape(PROMPT))
        text, _ = await run(api, sid, "ls; echo DIR=$(pwd)", offset)
        assert "from-setup" in text
        folders.append((sid, Path(re.search(r"DIR=(/\S+)", text)[1])))
    (sid1, dir1), (sid2, dir2) = folders
    assert dir1 != dir2 and dir1.is_dir() and dir2.is_dir()
    assert dir1.parent == tmp_path / "scratch"
    await api.stop(sid1)
    await eventually(lambda: not dir1.exists())
    assert dir2.is_dir()


async def test_a_workdir_leading_out_of_the_root_through_a_symlink_fails_clearly(
        api: Any, labs: Path, jp_root_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", jp_root_dir / "escape")
    write_lab(labs, "escapes", "workdir = 'escape/deeper'")
    session = await api.start(labId="escapes")
    assert session["status"] == "failed"
    text = (await api.output(session["sessionId"]))["data"]
    assert "lab 'escapes' cannot start" in text and "leads out of the server's root" in text
    assert not (tmp_path / "outside" / "deeper").exists()


async def test_the_foreground_script_is_typed_into_the_terminal(api: Any, labs: Path) -> None:
    write_lab(labs, "typed", "foreground = 'echo FORE$((40+2))GROUND'")
    sid = (await api.start(labId="typed"))["sessionId"]
    await api.read_until(sid, "FORE42GROUND")


async def test_a_lab_sets_its_own_lifetime_and_idle_timeout(api: Any, labs: Path) -> None:
    write_lab(labs, "short", "lifetime = 120\nidle_timeout = 0.5")
    session = await api.start(labId="short")
    created = time.mktime(time.strptime(session["createdAt"], "%Y-%m-%dT%H:%M:%SZ"))
    expires = time.mktime(time.strptime(session["expiresAt"], "%Y-%m-%dT%H:%M:%SZ"))
    assert expires - created == 120
    # nobody polls: the lab's idle timeout, not the server's 900 s, ends it
    deadline = time.monotonic() + 15
    while (await api.status(session["sessionId"]))["status"] == "running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert (await api.get(session["sessionId"]))["status"] == "expired"


async def test_assets_are_copied_before_setup(api: Any, labs: Path) -> None:
    write_lab(labs, "assets", """
        scratch = true
        setup = "test -x bin/tool.sh && ./bin/tool.sh > out.txt"
        [[assets]]
        source = "files/tool.sh"
        target = "bin/"
        mode = "+x"
    """, {"files/tool.sh": "#!/bin/sh\necho from the asset\n"})
    sid = (await api.start(labId="assets"))["sessionId"]
    _, offset = await api.read_until(sid, re.escape(PROMPT))
    text, _ = await run(api, sid, "cat out.txt", offset)
    assert "from the asset" in text


async def test_input_and_resize_sent_while_starting_are_applied_once_the_shell_runs(
        api: Any, labs: Path) -> None:
    write_lab(labs, "early", "setup = 'sleep 1'")
    session = await api.start(labId="early")
    sid = session["sessionId"]
    assert session["status"] == "starting"
    await api.message(sid, type="resize", rows=33, cols=111, seq=1)
    await api.send(sid, "echo EARLY-$((3*3))\r", seq=2)
    assert (await api.send(sid, "echo EARLY-$((3*3))\r", seq=2))["duplicate"] is True
    await api.command(sid, "stty size")
    text, _ = await api.read_until(sid, r"33 111\r\n")
    assert text.count("EARLY-9\r\n") == 1
    assert (await api.get(sid))["rows"] == 33


async def test_a_service_a_setup_leaves_running_lives_and_ends_with_the_session(
        api: Any, labs: Path, token: str) -> None:
    # One service with its output redirected, one still holding the setup's pipe.
    write_lab(labs, "service", f"""
        setup = '''
        setsid sleep 300.{token} > /dev/null 2>&1 &
        sleep 301.{token} &
        echo set up
        '''
    """)
    sid = (await api.start(labId="service"))["sessionId"]
    await api.read_until(sid, re.escape(PROMPT))
    assert len(sleeping(token)) == 2
    await api.stop(sid)
    assert with_token(token) == []


async def test_server_shutdown_ends_a_session_still_in_setup(api: Any, labs: Path, manager: Any,
                                                             token: str) -> None:
    write_lab(labs, "slow", f"setup = 'sleep 300.{token} & wait'")
    sid = (await api.start(labId="slow"))["sessionId"]
    await eventually(lambda: len(sleeping(token)) == 1)
    await manager.shutdown()
    assert manager.get(sid).status == "stopped"
    assert with_token(token) == []
