"""The live server against its own contract, ``labkernel/openapi.yaml``, with schemathesis.

Schemathesis generates requests for every operation from the spec: valid ones
(every answer must then be documented and match its schema) and invalid ones
(no answer may be a 5xx). Both halves of the contract are checked at once: the
server against the spec, and the spec against what the server really does.

Schemathesis calls are synchronous (requests) while the pytest-jupyter server runs
on the test's own event loop, so the schemathesis loop runs in a worker thread and
the test awaits it, leaving the loop free to serve.
"""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

import labkernel

SPEC = pathlib.Path(labkernel.__file__).with_name("openapi.yaml")

#: Operations whose path names a session: most of their cases get a live session's id,
#: or every case would be a 404 and the 200 answers would go unchecked.
SESSION_PATH_OPS = {"getSession", "stopSession", "getStatus", "getOutput", "checkSession"}


@pytest.fixture
def labkernel_config() -> dict[str, Any]:
    return {
        # Generated start calls create real sessions: a low limit is reached, so 429
        # gets generated and checked, and the number of shells stays small.
        "max_sessions": 4,
        # Generated waits are random; a short cap keeps each long poll short.
        "max_wait": 0.2,
        # Generated messages are random text: have `cat` receive them rather than a
        # shell that would run them as commands. It still reads and writes a real
        # PTY, echoes, and ends on signals and Ctrl-D like any foreground program.
        "shell_command": ["cat"],
    }


def base_url_of(port: int, base: str) -> str:
    return f"http://127.0.0.1:{port}{base.rstrip('/')}"


def live_session(base_url: str, headers: dict[str, str]) -> str | None:
    """A running session's id, starting one if there is room (None when the limit is hit).

    Generated signals and Ctrl-D end sessions, and generated DELETEs stop them, so
    the id is looked for again before each case rather than kept.
    """
    sessions = requests.get(f"{base_url}/api/labs/sessions", headers=headers, timeout=30).json()["sessions"]
    for session in sessions:
        if session["status"] == "running":
            return session["sessionId"]
    answer = requests.post(f"{base_url}/api/labs/start", json={}, headers=headers, timeout=30)
    return answer.json()["sessionId"] if answer.status_code == 201 else None


def stop_all(base_url: str, headers: dict[str, str]) -> None:
    """Free the session slots, so that start keeps being tested beyond the limit and below it."""
    sessions = requests.get(f"{base_url}/api/labs/sessions", headers=headers, timeout=30).json()["sessions"]
    for session in sessions:
        if session["status"] == "running":
            url = f"{base_url}/api/labs/session/{session['sessionId']}"
            requests.delete(url, headers=headers, timeout=30)


def run_schemathesis(base_url: str, token: str, mode: GenerationMode, max_examples: int) -> list[str]:
    """Run every operation of the spec; returns the operations that had nothing to generate."""
    schema = schemathesis.openapi.from_path(SPEC)
    schema.validate()
    headers = {"Authorization": f"token {token}"}
    # A valid request must get a documented answer matching its schema; an invalid
    # one must at least not break the server.
    checks = [not_a_server_error, response_schema_conformance] if mode.is_positive else [not_a_server_error]
    health = requests.get(f"{base_url}/health", timeout=30)
    assert health.status_code == 200, f"wrong base URL {base_url}: {health.status_code}"

    skipped = []
    for result in schema.get_all_operations():
        operation = result.ok()
        name = operation.definition.raw.get("operationId", operation.label)

        @settings(max_examples=max_examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode), random_id=st.integers(0, 3))
        def check_operation(case: Any, random_id: int) -> None:
            # Negative mode also mangles the token header the spec declares; a wrong
            # token is test_api_errors' business, here every request gets in.
            case.headers = {**(case.headers or {}), **headers}
            if random_id != 3:  # mostly a live session; sometimes the generated id
                sid = live_session(base_url, headers)
                if sid is not None and name in SESSION_PATH_OPS:
                    case.path_parameters["sessionId"] = sid
                elif sid is not None and name == "sendMessage" and isinstance(case.body, dict):
                    case.body["sessionId"] = sid
                elif name == "startLab":
                    stop_all(base_url, headers)
            case.call_and_validate(base_url=base_url, headers=headers, checks=checks, timeout=35)

        try:
            check_operation()
        except Unsatisfiable:
            # e.g. negative mode on an operation with no input to make invalid
            skipped.append(name)
    return skipped


# Each test asks for ``api`` only for what it sets up: the HTTP server listening on
# ``jp_http_port`` (pytest-jupyter starts it with its fetch client).


@pytest.mark.slow  # fuzzing: 30 examples of every operation
async def test_every_operation_answers_valid_requests_as_documented(
        api: Any, jp_http_port: int, jp_base_url: str, jp_serverapp: Any) -> None:
    token = jp_serverapp.identity_provider.token
    skipped = await asyncio.to_thread(run_schemathesis, base_url_of(jp_http_port, jp_base_url), token,
                                      GenerationMode.POSITIVE, 30)
    assert skipped == [], f"nothing was generated for {skipped}"


@pytest.mark.slow  # fuzzing
async def test_no_invalid_request_gets_a_server_error(
        api: Any, jp_http_port: int, jp_base_url: str, jp_serverapp: Any) -> None:
    token = jp_serverapp.identity_provider.token
    skipped = await asyncio.to_thread(run_schemathesis, base_url_of(jp_http_port, jp_base_url), token,
                                      GenerationMode.NEGATIVE, 50)
    # Operations with no parameters and no body (health, the catalog, the session
    # list) have nothing to make invalid; every other one must have been fuzzed.
    assert set(skipped) <= {"getHealth", "listLabs", "listSessions"}, skipped


def run_stateful(base_url: str, token: str, max_examples: int) -> None:
    """Follow the spec's links (start → get, status, output, message, stop) with real ids.

    The per-operation runs above mostly see generated ids; this walks the sequences a
    client makes, so every answer about a live session is checked against the schema.
    """
    schema = schemathesis.openapi.from_path(SPEC)
    # Valid calls only: invalid ones are the negative run's business, and a mangled
    # token would make a step a 403 instead of exercising the session.
    schema.config.generation.update(modes=[GenerationMode.POSITIVE])
    headers = {"Authorization": f"token {token}"}

    class LinkedCalls(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base_url, "headers": headers, "timeout": 35}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None,
                              **kwargs: Any) -> None:
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance],
                                   headers=headers)

        def teardown(self) -> None:
            # Each scenario starts with free slots, so its start call gets a session.
            stop_all(base_url, headers)
            super().teardown()

    LinkedCalls.run(settings=settings(max_examples=max_examples, stateful_step_count=8, deadline=None,
                                      database=None, suppress_health_check=list(HealthCheck)))


async def test_linked_calls_on_live_sessions_answer_as_documented(
        api: Any, jp_http_port: int, jp_base_url: str, jp_serverapp: Any) -> None:
    token = jp_serverapp.identity_provider.token
    await asyncio.to_thread(run_stateful, base_url_of(jp_http_port, jp_base_url), token, 20)
