"""Killercoda semantics on a real server: background scripts beside the shell, notes on
the session, placeholders, needs, ids by path — with scenarios written here, in the
format of the public killercoda/scenario-examples repository.

The in-process server takes ``auto`` containment (the sandbox where user namespaces
work, as on this machine; else pidns or the next): what is said here holds in every
mode, since background scripts run in the session's enclosure as checks do.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from labkernel.labs import hosting
from support.api import PROMPT, eventually
from support.containment import MODE_PARAMS
from support.labs import check, lab_config, wait_running, write_lab
from support.processes import sleeping, with_token

#: Background scripts' timeout here (the server's setup_timeout).
TIMEOUT = 4.0


@pytest.fixture
def labkernel_config(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    # A test parametrized by ``mode`` gets that containment; the others ``auto``.
    callspec = getattr(request.node, "callspec", None)
    mode = callspec.params.get("mode") if callspec is not None else None
    return lab_config(tmp_path, setup_timeout=TIMEOUT, **({"containment": mode} if mode else {}))


def write_scenario(parent: Path, name: str, index: dict[str, Any], files: dict[str, str]) -> Path:
    folder = parent / name
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.json").write_text(json.dumps(index))  # last: a scan that sees it sees the rest
    return folder


def steps(*names: str, **keys: str) -> list[dict[str, str]]:
    """Step entries: ``text`` stepN.md, and each of ``keys`` (verify, background, …) as stepN/KEY.sh."""
    return [{"title": name, "text": f"step{n}.md",
             **{key: f"step{n}/{key}.sh" for key, only in keys.items() if str(n) in only}}
            for n, name in enumerate(names, 1)]


async def catalog_entry(api: Any, lab_id: str) -> dict[str, Any]:
    body = await api.ok("GET", "api", "labs")
    return next(lab for lab in body["labs"] if lab["id"] == lab_id)


async def start(api: Any, lab_id: str) -> tuple[dict[str, Any], float]:
    """Start a lab; returns the start's answer and when it was asked."""
    asked = time.monotonic()
    return await api.start(labId=lab_id), asked


# -- background scripts ------------------------------------------------------------------


async def test_a_background_that_waits_for_the_foregrounds_marker_works_and_the_prompt_comes_at_once(
        api: Any, labs: Path) -> None:
    # The handshake both ways: the background waits for the foreground's marker, then
    # writes its own, which the foreground waits for. A blocking background would hold
    # the foreground back until its timeout; beside the shell, both go on.
    write_scenario(labs, "handshake", {
        "title": "Handshake",
        "details": {"intro": {"text": "intro.md", "background": "bg.sh", "foreground": "fg.sh"},
                    "steps": [{"title": "One", "text": "step1.md"}]},
    }, {
        "intro.md": "Hello", "step1.md": "Go",
        "bg.sh": "until [ -f .fg-started ]; do sleep 0.1; done\necho from-bg > .initfinished\n",
        "fg.sh": ("touch .fg-started; until [ -f .initfinished ]; do sleep 0.1; done; "
                  "echo HANDSHAKE-$(cat .initfinished)\n"),
    })
    session, _ = await start(api, "handshake")
    assert session["status"] == "running" and session["notes"] == []
    sid = session["sessionId"]
    await api.read_until(sid, r"HANDSHAKE-from-bg")
    # A background that held the prompt could never have seen the foreground's marker:
    # it would have been stopped at its timeout, with a note.
    assert (await api.get(sid))["notes"] == []


async def test_a_long_background_holds_nothing_and_ends_with_the_session(
        api: Any, labs: Path, token: str) -> None:
    write_scenario(labs, "slowbg", {
        "title": "Slow background",
        "details": {"intro": {"background": "bg.sh"}, "steps": [{"title": "One", "text": "step1.md"}]},
    }, {"step1.md": "Go", "bg.sh": f"echo preparing; sleep 300.{token}\n"})
    session, asked = await start(api, "slowbg")
    sid = session["sessionId"]
    assert session["status"] == "running"
    await api.read_until(sid, re.escape(PROMPT))
    await eventually(lambda: len(sleeping(token)) == 1)
    # The shell answers while the background runs.
    accepted = await api.command(sid, "echo $((6*7))")
    await api.read_until(sid, r"\b42\b", accepted["offset"])
    stopped = await api.stop(sid)
    assert stopped["status"] == "stopped" and with_token(token) == []
    assert stopped["notes"] == []  # stopped by the learner: nothing went wrong


@pytest.mark.containment
@pytest.mark.parametrize("mode", MODE_PARAMS)
async def test_in_every_mode_a_background_sees_the_shell_leaves_a_service_and_ends_with_the_session(
        api: Any, labs: Path, token: str, mode: str) -> None:
    write_scenario(labs, "service", {
        "title": "Service",
        "details": {"intro": {"background": "bg.sh", "foreground": "fg.sh"},
                    "steps": [{"title": "One", "text": "step1.md"}]},
    }, {"step1.md": "Go",
        # Waits for the foreground's marker, starts a service that outlives it, says so.
        "bg.sh": (f"until [ -f .fg ]; do sleep 0.1; done\nnohup sleep 300.{token} >/dev/null 2>&1 &\n"
                  "echo $! > .service\n"),
        "fg.sh": "touch .fg; until [ -f .service ]; do sleep 0.1; done; kill -0 $(cat .service) && echo SERVICE-UP\n"})
    session, _ = await start(api, "service")
    sid = session["sessionId"]
    assert session["status"] == "running"
    await api.read_until(sid, r"SERVICE-UP")
    await eventually(lambda: len(sleeping(token)) == 1)  # the background ended; its service stays
    stopped = await api.stop(sid)
    assert stopped["status"] == "stopped" and stopped["notes"] == [] and with_token(token) == []


async def test_a_failing_background_is_a_note_with_its_output_not_a_failed_session(
        api: Any, labs: Path) -> None:
    write_scenario(labs, "badbg", {
        "title": "Bad background",
        "details": {"intro": {"background": "bg.sh"},
                    "steps": steps("One", verify="1")},
    }, {"step1.md": "Make `x`", "step1/verify.sh": "test -f x\n",
        "bg.sh": "echo trying to install; echo no such package >&2; exit 7\n"})
    session, _ = await start(api, "badbg")
    sid = session["sessionId"]
    deadline = time.monotonic() + 30
    while not (session := await api.get(sid))["notes"]:
        assert time.monotonic() < deadline, "no note came"
        await api.output(sid, session["outputOffset"], wait=0.5)
    assert session["status"] == "running"
    [note] = session["notes"]
    assert "background script failed with exit code 7" in note
    assert "trying to install" in note and "no such package" in note
    # The lab goes on: its checks work.
    accepted = await api.command(sid, "touch x")
    await api.read_until(sid, re.escape(PROMPT), accepted["offset"])
    answer = await check(api, sid, 1)
    assert answer["results"][0]["passed"] is True
    assert (await api.get(sid))["notes"] == [note]


@pytest.mark.slow  # waits out the 4 s timeout
async def test_a_background_past_the_timeout_is_stopped_and_noted(api: Any, labs: Path, token: str) -> None:
    write_scenario(labs, "hangbg", {
        "title": "Hanging background",
        "details": {"intro": {"background": "bg.sh"}, "steps": [{"title": "One", "text": "step1.md"}]},
    }, {"step1.md": "Go", "bg.sh": f"echo waiting for a cluster; sleep 300.{token}\n"})
    session, asked = await start(api, "hangbg")
    sid = session["sessionId"]
    await eventually(lambda: len(sleeping(token)) == 1)
    await eventually(lambda: not sleeping(token), timeout=TIMEOUT + 30)
    deadline = time.monotonic() + 30
    while not (session := await api.get(sid))["notes"]:
        assert time.monotonic() < deadline, "no note came"
        await api.output(sid, session["outputOffset"], wait=0.5)
    assert time.monotonic() - asked >= TIMEOUT - 0.5
    assert session["status"] == "running"
    assert f"did not finish within {TIMEOUT:g} s and was stopped" in session["notes"][0]
    assert "waiting for a cluster" in session["notes"][0]


async def test_a_steps_background_starts_on_entering_it_sees_the_shells_files_and_checks_do_not_wait(
        api: Any, labs: Path) -> None:
    write_scenario(labs, "stepbg", {
        "title": "Step background",
        "details": {"steps": steps("Make a file", "Use it", verify="12", background="2")},
    }, {
        "step1.md": "`echo hi > made.txt`{{exec}}", "step2.md": "Wait",
        "step1/verify.sh": "test -f made.txt\n",
        # Sees the learner's file; then waits until the test lets it finish.
        "step2/background.sh": "cp made.txt seen-by-bg.txt; until [ -f go ]; do sleep 0.1; done; touch prepared\n",
        "step2/verify.sh": "test -f prepared\n",
    })
    session, _ = await start(api, "stepbg")
    sid = session["sessionId"]
    _, offset = await api.read_until(sid, re.escape(PROMPT))
    accepted = await api.command(sid, "echo hi > made.txt")
    await api.read_until(sid, re.escape(PROMPT), accepted["offset"])
    first = await check(api, sid, 1)
    assert first["results"][0]["passed"] is True and first["currentStep"] == 2
    # The check of step 2 right away: the background is still at it, and the check says so.
    second = await check(api, sid, 2)
    result = second["results"][0]
    assert result["passed"] is False and "step 2's background script is still running" in result["message"]

    accepted = await api.command(sid, "touch go")
    await api.read_until(sid, re.escape(PROMPT), accepted["offset"])

    async def passes() -> bool:
        return (await check(api, sid, 2))["results"][0]["passed"] is True
    deadline = time.monotonic() + 30
    while not await passes():
        assert time.monotonic() < deadline
        await api.output(sid, offset, wait=0.3)
    accepted = await api.command(sid, "cat seen-by-bg.txt")
    await api.read_until(sid, r"\bhi\b", accepted["offset"])
    assert (await api.get(sid))["notes"] == []


async def test_a_lab_toml_setup_still_holds_the_prompt_and_a_timeout_quotes_its_output(
        api: Any, labs: Path) -> None:
    write_lab(labs, "blocking", "setup = 'echo SETUP-SAID-THIS; sleep 300'")
    session, asked = await start(api, "blocking")
    assert session["status"] == "starting"
    session = await wait_running(api, session["sessionId"], timeout=TIMEOUT + 30)
    assert session["status"] == "failed" and time.monotonic() - asked >= TIMEOUT - 0.5
    text = (await api.output(session["sessionId"]))["data"]
    assert "SETUP-SAID-THIS" in text and f"did not finish within {TIMEOUT:g} s" in text


# -- the catalog: placeholders, needs, ids ------------------------------------------------------


async def test_placeholders_become_local_addresses_in_code_and_scripts_and_unknown_ones_are_noted(
        api: Any, labs: Path, jp_base_url: str) -> None:
    write_scenario(labs, "ports", {
        "title": "Ports",
        "details": {"intro": {"text": "intro.md"},
                    "steps": [{"title": "Serve", "text": "step1.md", "verify": "verify.sh"}]},
    }, {
        "intro.md": "Open [the app]({{TRAFFIC_HOST1_8080}}) or {{TRAFFIC_HOST1_8080}}/books.",
        "step1.md": ("`curl -s {{TRAFFIC_HOST1_8080}}/books`{{exec}}\n\n"
                     "Katacoda: https://[[HOST_SUBDOMAIN]]-9090-[[KATACODA_HOST]].environments.katacoda.com/x "
                     "on [[HOST_IP]] and [[SOMETHING_ELSE]]\n"),
        "verify.sh": "curl -sf {{TRAFFIC_HOST1_8080}}/books\n",
    })
    hosting.forget()
    entry = await catalog_entry(api, "ports")
    step = entry["stepList"][0]
    assert step["solution"] == ["curl -s http://localhost:8080/books"]
    assert "`curl -s http://localhost:8080/books`{{exec}}" in step["text"]
    if hosting.here(jp_base_url, "").proxy:
        proxied = f"{jp_base_url}proxy/8080/"
        assert f"[the app]({proxied})" in entry["intro"] and f"[{proxied}books]({proxied}books)." in entry["intro"]
        assert f"{jp_base_url}proxy/9090/x" in step["text"]
    else:  # this server has no jupyter-server-proxy: the browser is sent to localhost
        assert entry["intro"] == "Open [the app](http://localhost:8080) or http://localhost:8080/books."
        assert "Katacoda: http://localhost:9090/x on 127.0.0.1" in step["text"]
    assert "TRAFFIC" not in json.dumps(entry["stepList"]) + entry["intro"]
    assert any("[[SOMETHING_ELSE]]" in note for note in entry["notes"])


async def test_needs_come_from_the_image_and_the_scripts_and_unmet_ones_are_listed(
        api: Any, labs: Path, manager: Any) -> None:
    write_scenario(labs, "kube", {
        "title": "Kube", "backend": {"imageid": "kubernetes-kubeadm-2nodes"},
        "details": {"steps": steps("Pods", verify="1")},
    }, {"step1.md": "`kubectl get pods`{{exec}}", "step1/verify.sh": "kubectl get pod web\n"})
    write_scenario(labs, "dock", {
        "title": "Dock", "backend": {"imageid": "ubuntu"},
        "details": {"intro": {"background": "bg.sh"}, "steps": steps("Run")},
    }, {"step1.md": "```\ndocker run --rm hello-world\n```{{exec}}",
        "bg.sh": "apt-get update && apt-get install -y jq\necho 'x' >> /etc/motd\n"})
    write_scenario(labs, "plain", {"title": "Plain", "backend": {"imageid": "ubuntu"},
                                   "details": {"steps": steps("Look")}},
                   {"step1.md": "`ls -l`{{exec}} and `cat /etc/os-release`{{exec}}"})
    write_lab(labs, "declared", 'needs = ["systemd", "docker"]\n')
    hosting.forget()
    kube, dock, plain, declared = [await catalog_entry(api, i) for i in ("kube", "dock", "plain", "declared")]
    assert kube["needs"] == ["kubernetes"]
    assert dock["needs"] == ["docker", "internet", "root"]
    assert plain["needs"] == [] and plain["unmetNeeds"] == []
    assert declared["needs"] == ["docker", "systemd"]
    here = hosting.here("/", manager.containment_mode)
    for lab in (kube, dock, declared):
        assert lab["unmetNeeds"] == [n for n in lab["needs"] if n not in here.met]
    # Root is met by the sandbox alone.
    assert ("root" in dock["unmetNeeds"]) == (manager.containment_mode != "sandbox")


async def test_two_repositories_scenarios_of_one_name_get_ids_from_their_paths(api: Any, labs: Path) -> None:
    index = {"title": "Code actions", "details": {"steps": [{"title": "One", "text": "step1.md"}]}}
    write_scenario(labs / "killercoda-examples", "code-actions", index, {"step1.md": "a"})
    write_scenario(labs / "someone" / "archive", "code-actions", index, {"step1.md": "b"})
    write_scenario(labs / "someone", "unique-name", index, {"step1.md": "c"})
    body = await api.ok("GET", "api", "labs")
    ids = {lab["id"] for lab in body["labs"]}
    assert {"killercoda-examples.code-actions", "someone.archive.code-actions", "unique-name"} <= ids
    assert "code-actions" not in ids and body["errors"] == []
    session = await api.start(labId="someone.archive.code-actions")
    assert session["labId"] == "someone.archive.code-actions"
    await api.stop(session["sessionId"])


async def test_an_indented_heredoc_from_the_catalog_runs_as_written(api: Any, labs: Path) -> None:
    write_scenario(labs, "heredoc", {"title": "Heredoc", "details": {"steps": steps("Write", verify="1")}}, {
        "step1.md": ("1. Write the file:\n\n"
                     "   ```\n   cat <<EOF > conf.txt\n   name: lab\n     indented: yes\n   EOF\n   ```{{exec}}\n\n"
                     "2. Done.\n"),
        "step1/verify.sh": "printf 'name: lab\\n  indented: yes\\n' | cmp - conf.txt\n",
    })
    entry = await catalog_entry(api, "heredoc")
    [command] = entry["stepList"][0]["solution"]
    assert command == "cat <<EOF > conf.txt\nname: lab\n  indented: yes\nEOF"
    session, _ = await start(api, "heredoc")
    sid = session["sessionId"]
    await api.read_until(sid, re.escape(PROMPT))
    accepted = await api.command(sid, command)
    await api.read_until(sid, re.escape(PROMPT) + r"(?![\s\S]*> )", accepted["offset"])
    assert (await check(api, sid, 1))["results"][0]["passed"] is True


@pytest.mark.server
def test_with_jupyter_server_proxy_a_port_link_in_prose_reaches_the_port(tmp_path: Path) -> None:
    # Runs where jupyter-server-proxy is importable (not a dependency of labkernel);
    # elsewhere the other placeholder test holds the localhost form.
    pytest.importorskip("jupyter_server_proxy", reason="jupyter-server-proxy is not installed here")
    import subprocess
    import sys
    import urllib.request

    from labkernel.clients.localserver import JupyterServer, free_port

    site = tmp_path / "site"
    site.mkdir()
    (site / "hello.txt").write_text("hello through the proxy")
    port = free_port()
    web = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                           cwd=site, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    labs = tmp_path / "root" / "labs"
    placeholder = f"{{{{TRAFFIC_HOST1_{port}}}}}"
    write_scenario(labs, "proxied", {"title": "Proxied", "details": {"steps": [{"title": "Look", "text": "s.md"}]}},
                   {"s.md": f"Open {placeholder}/hello.txt or `curl {placeholder}`{{{{exec}}}}"})
    config = {"ServerApp": {"jpserver_extensions": {"labkernel": True, "jupyter_server_proxy": True}},
              "LabSessionManager": {"lab_path": [str(labs)]}}
    try:
        with JupyterServer(tmp_path, config, base_url="/a%40b/", isolated=True) as server:
            headers = {"Authorization": f"token {server.token}"}

            def get(path: str) -> bytes:
                request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", headers=headers)
                with urllib.request.urlopen(request, timeout=30) as answer:
                    return answer.read()

            body = json.loads(get("/a%40b/api/labs"))
            [lab] = [lab for lab in body["labs"] if lab["id"] == "proxied"]
            link = f"/a%40b/proxy/{port}/hello.txt"
            assert lab["stepList"][0]["text"] == (f"Open [{link}]({link}) or "
                                                  f"`curl http://localhost:{port}`{{{{exec}}}}")
            assert get(link) == b"hello through the proxy"
    finally:
        web.kill()
        web.wait()
