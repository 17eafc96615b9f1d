"""The checks API on a real server: steps, their state, checks run apart from the terminal.

Checks are real bash scripts; the labs are written per test under ``tmp_path``
(the repository's sample labs are copied there too, and solved as a learner would).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from support.api import PROMPT, eventually
from support.labs import check, lab_config, started, write_lab
from support.processes import sleeping, with_token

REPO_LABS = Path(__file__).resolve().parent.parent / "labs"
SECRET = "hunter2-but-longer-0815"

THREE_STEPS = """
    title = "Three steps"
    scratch = true
    [[steps]]
    title = "Make a"
    check = "test -d a || { echo 'no folder a'; exit 1; }; echo 'a is there'"
    solution = ["mkdir a"]
    [[steps]]
    title = "Read along"
    text = "Nothing to check here."
    [[steps]]
    title = "Make b"
    check = "test -f b"
    solution = ["touch b"]
"""


@pytest.fixture
def labkernel_config(tmp_path: Path) -> dict[str, Any]:
    return lab_config(tmp_path, check_timeout=2.0, check_output_limit=4096)


async def type_line(api: Any, sid: str, line: str, offset: int) -> int:
    """Type a command as a learner would and wait for the next prompt."""
    await api.command(sid, line)
    _, offset = await api.read_until(sid, re.escape(PROMPT), offset)
    return offset


async def test_checks_fail_before_the_solution_and_pass_after_with_steps_and_current_step(
        api: Any, labs: Path) -> None:
    write_lab(labs, "three", THREE_STEPS)
    sid, offset = await started(api, "three")
    session = await api.get(sid)
    assert session["currentStep"] == 1
    assert session["steps"] == [{"step": 1, "title": "Make a", "state": "pending"},
                                {"step": 2, "title": "Read along", "state": "pending"},
                                {"step": 3, "title": "Make b", "state": "pending"}]

    answer = await check(api, sid, 1)
    (result,) = answer["results"]
    assert (result["step"], result["title"], result["passed"], result["timedOut"]) == (1, "Make a", False, False)
    assert result["message"].strip() == "no folder a" and result["durationMs"] >= 0
    assert answer["sessionId"] == sid and answer["currentStep"] == 1
    assert answer["steps"][0]["state"] == "failed"

    offset = await type_line(api, sid, "mkdir a", offset)
    answer = await check(api, sid, 1)
    assert answer["results"][0]["passed"] is True and answer["results"][0]["message"].strip() == "a is there"
    assert answer["currentStep"] == 2

    # all steps at once: a step with no check reports null and counts as done once checked
    answer = await check(api, sid)
    assert [(r["step"], r["passed"]) for r in answer["results"]] == [(1, True), (2, None), (3, False)]
    assert answer["currentStep"] == 3
    await type_line(api, sid, "touch b", offset)
    answer = await check(api, sid, 3)
    assert answer["currentStep"] is None
    session = await api.get(sid)
    assert session["currentStep"] is None and {s["state"] for s in session["steps"]} == {"passed"}


async def test_a_lab_without_steps_has_no_current_step(api: Any) -> None:
    sid, _ = await started(api, "shell")
    session = await api.get(sid)
    assert session["steps"] == [] and session["currentStep"] is None
    answer = await check(api, sid)
    assert answer["results"] == [] and answer["currentStep"] is None


async def test_a_step_out_of_range_or_mistyped_is_a_bad_request(api: Any, labs: Path) -> None:
    write_lab(labs, "three", THREE_STEPS)
    sid, _ = await started(api, "three")
    for body in ({"step": 4}, {"step": 0}, {"step": "1"}, {"step": True}, {"step": 1.5}):
        status, answer = await api.call("POST", "api", "labs", "session", sid, "check", body=body)
        assert (status, answer["error"]) == (400, "bad_request"), body
    status, answer = await api.call("POST", "api", "labs", "session", sid, "check", raw_body="[1]")
    assert (status, answer["error"]) == (400, "bad_request")
    assert "steps 1 to 3" in (await api.call("POST", "api", "labs", "session", sid, "check",
                                             body={"step": 4}))[1]["message"]


async def test_checking_an_ended_or_unknown_session_is_refused(api: Any, labs: Path) -> None:
    write_lab(labs, "three", THREE_STEPS)
    sid, _ = await started(api, "three")
    await api.stop(sid)
    status, answer = await api.call("POST", "api", "labs", "session", sid, "check", body={})
    assert (status, answer["error"]) == (409, "session_ended")
    status, answer = await api.call("POST", "api", "labs", "session", "nope" * 6, "check", body={})
    assert (status, answer["error"]) == (404, "session_not_found")


async def test_a_hanging_check_is_killed_with_its_children_and_reported_as_timed_out(
        api: Any, labs: Path, token: str) -> None:
    write_lab(labs, "hangs", f"""
        [[steps]]
        title = "Hang"
        check = '''
        echo before the hang
        sleep 600.{token} &
        setsid sleep 601.{token} &
        sleep 602.{token}
        '''
    """)
    sid, _ = await started(api, "hangs")
    begun = time.monotonic()
    checking = asyncio.ensure_future(check(api, sid, 1))
    await eventually(lambda: len(sleeping(token)) == 3)
    (result,) = (await checking)["results"]
    assert 1.5 < time.monotonic() - begun < 15
    assert result["passed"] is False and result["timedOut"] is True
    assert "before the hang" in result["message"] and "did not finish within 2 s" in result["message"]
    await eventually(lambda: not with_token(token))
    # the session itself is untouched
    assert (await api.get(sid))["status"] == "running"


async def test_a_check_printing_megabytes_gives_a_truncated_message(api: Any, labs: Path) -> None:
    write_lab(labs, "loud", """
        [[steps]]
        title = "Loud"
        check = "head -c 5000000 /dev/zero | tr '\\\\0' x; echo; exit 0"
    """)
    sid, _ = await started(api, "loud")
    (result,) = (await check(api, sid, 1))["results"]
    assert result["passed"] is True  # the whole output was drained: it ran to its end
    assert result["message"].startswith("x" * 4096)
    assert len(result["message"]) < 4096 + 200
    assert "output truncated: 5000001 bytes in all, the first 4096 shown" in result["message"]


async def test_a_secret_echoed_by_a_check_is_masked(api: Any, labs: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_CHECK_SECRET", SECRET)
    write_lab(labs, "secretive", """
        [env]
        TOKEN = { value = "${LAB_CHECK_SECRET}", secret = true }
        [[steps]]
        title = "Leak"
        check = 'echo "token=$TOKEN"; printf %s "$TOKEN" | rev; echo; exit 1'
    """)
    sid, _ = await started(api, "secretive")
    (result,) = (await check(api, sid, 1))["results"]
    assert "token=********" in result["message"] and SECRET not in result["message"]


async def test_checks_of_one_session_run_one_at_a_time(api: Any, labs: Path, jp_root_dir: Path) -> None:
    log = jp_root_dir / "log"  # in the session's folder: a sandboxed check writes nowhere else on the host
    write_lab(labs, "serial", f"""
        [[steps]]
        title = "Slow"
        check = "echo start >> {log}; sleep 0.3; echo end >> {log}"
    """)
    sid, _ = await started(api, "serial")
    answers = await asyncio.gather(*(check(api, sid, 1) for _ in range(3)))
    assert all(a["results"][0]["passed"] for a in answers)
    assert log.read_text().split() == ["start", "end"] * 3


async def test_checks_run_apart_from_the_terminal_in_the_labs_env_and_folder(
        api: Any, labs: Path, jp_root_dir: Path) -> None:
    write_lab(labs, "apart", """
        workdir = "apart-work"
        [env]
        GREETING = "hello from env"
        [[steps]]
        title = "Where"
        check = 'echo "$GREETING in $(pwd)"; tty || true'
    """)
    sid, offset = await started(api, "apart")
    (result,) = (await check(api, sid, 1))["results"]
    assert f"hello from env in {jp_root_dir / 'apart-work'}" in result["message"]
    assert "not a tty" in result["message"]
    # nothing of the check reached the terminal
    answer = await api.output(sid, offset)
    assert "hello from env" not in answer["data"]


async def test_passing_a_step_runs_the_next_steps_setup_and_types_its_foreground(
        api: Any, labs: Path) -> None:
    write_lab(labs, "entering", """
        scratch = true
        [[steps]]
        title = "First"
        check = "true"
        foreground = "echo FIRST-$((1+1))"
        [[steps]]
        title = "Second"
        setup = "echo prepared > second.txt"
        foreground = "echo SECOND-$((2+2))"
        check = "test -f second.txt"
    """)
    sid = (await api.start(labId="entering"))["sessionId"]
    _, offset = await api.read_until(sid, "FIRST-2")
    text = (await api.output(sid, 0))["data"]
    assert "SECOND-4" not in text
    answer = await check(api, sid, 1)
    assert answer["currentStep"] == 2
    await api.read_until(sid, "SECOND-4", offset)
    (result,) = (await check(api, sid, 2))["results"]
    assert result["passed"] is True


async def test_a_step_setup_running_at_start_comes_before_the_prompt(api: Any, labs: Path) -> None:
    write_lab(labs, "first-setup", """
        scratch = true
        [[steps]]
        title = "Look"
        setup = "echo ready > ready.txt"
        check = "test -f ready.txt"
    """)
    session = await api.start(labId="first-setup")
    assert session["status"] == "starting"
    sid = session["sessionId"]
    await api.read_until(sid, re.escape(PROMPT))
    assert (await check(api, sid, 1))["results"][0]["passed"] is True


async def test_a_check_asked_while_the_setup_runs_is_answered_once_the_lab_runs(
        api: Any, labs: Path) -> None:
    """As the welcome notebook does: start a lab, check in the next cell."""
    write_lab(labs, "slow-setup", """
        scratch = true
        setup = "sleep 1; echo ready > ready.txt"
        [[steps]]
        title = "Look"
        check = "test -f ready.txt"
    """)
    session = await api.start(labId="slow-setup")
    assert session["status"] == "starting"
    answer = await check(api, session["sessionId"], 1)
    assert answer["results"][0]["passed"] is True
    assert (await api.get(session["sessionId"]))["status"] == "running"


async def test_a_check_asked_while_a_failing_setup_runs_says_the_session_failed(
        api: Any, labs: Path) -> None:
    write_lab(labs, "bad-setup", """
        setup = "sleep 0.5; exit 3"
        [[steps]]
        title = "Look"
        check = "true"
    """)
    session = await api.start(labId="bad-setup")
    assert session["status"] == "starting"
    body = await check(api, session["sessionId"], expect=409)
    assert body["error"] == "session_ended"
    assert "failed" in body["message"]


@pytest.mark.parametrize("lab_id", ["files-and-folders", "git-basics"])
async def test_the_sample_labs_fail_before_each_solution_and_pass_after(
        api: Any, labs: Path, lab_id: str) -> None:
    shutil.copytree(REPO_LABS / lab_id, labs / lab_id)
    catalog = await api.ok("GET", "api", "labs")
    (lab,) = [lab for lab in catalog["labs"] if lab["id"] == lab_id]
    sid, offset = await started(api, lab_id)
    for number, step in enumerate(lab["stepList"], 1):
        (before,) = (await check(api, sid, number))["results"]
        assert before["passed"] is False, f"step {number} passes before its solution: {before}"
        for line in step["solution"]:
            offset = await type_line(api, sid, line, offset)
        (after,) = (await check(api, sid, number))["results"]
        assert after["passed"] is True, f"step {number} fails after its solution: {after['message']}"
    assert (await api.get(sid))["currentStep"] is None


async def test_lab_client_check(api: Any, labs: Path, server_url: str, jp_serverapp: Any) -> None:
    from labkernel.client import LabClient, LabError
    write_lab(labs, "three", THREE_STEPS)
    sid, _ = await started(api, "three")
    client = LabClient(server_url, token=jp_serverapp.identity_provider.token)
    answer = await asyncio.to_thread(client.check, sid, 1)
    assert answer["results"][0]["passed"] is False and answer["currentStep"] == 1
    answer = await asyncio.to_thread(client.check, sid)
    assert [r["step"] for r in answer["results"]] == [1, 2, 3]
    with pytest.raises(LabError) as error:
        await asyncio.to_thread(client.check, sid, 9)
    assert (error.value.status, error.value.code) == (400, "bad_request")


async def test_a_check_that_exits_leaving_a_job_behind_passes_and_the_job_ends(
        api: Any, labs: Path, token: str) -> None:
    write_lab(labs, "leaves", f"""
        [[steps]]
        title = "Leave a job"
        check = "sleep 300.{token} & kill -0 $! && echo done"
    """)
    sid, _ = await started(api, "leaves")
    (result,) = (await check(api, sid, 1))["results"]
    assert (result["passed"], result["timedOut"]) == (True, False) and "done" in result["message"]
    assert result["durationMs"] < 1500  # not held until the 2 s timeout by the job's open stdout
    await eventually(lambda: not with_token(token))


@pytest.mark.parametrize("denied_actions", [["execute"]])
async def test_checking_needs_execute_on_terminals(api: Any, labs: Path) -> None:
    write_lab(labs, "three", THREE_STEPS)
    sid, _ = await started(api, "three")
    status, answer = await api.call("POST", "api", "labs", "session", sid, "check", body={})
    assert (status, answer["error"]) == (403, "forbidden")
    assert (await api.get(sid))["steps"][0]["state"] == "pending"
