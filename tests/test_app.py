"""The extension as installed: enabled on install, and off where terminals are off."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest


def test_installing_the_package_enables_the_extension() -> None:
    """jupyter-config/ puts the extension's switch where every Jupyter server reads it."""
    listing = subprocess.run(
        [sys.executable, "-m", "jupyter_server", "extension", "list"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    output = re.sub(r"\x1b\[[0-9;]*m", "", listing.stdout + listing.stderr)  # no colours
    lines = [line.strip() for line in output.splitlines()]
    assert "labkernel enabled" in lines, output
    assert any(re.fullmatch(r"labkernel [\d.]+ OK", line) for line in lines), output


class TestTerminalsDisabled:
    @pytest.fixture
    def jp_server_config(self, jp_server_config: Any) -> Any:
        jp_server_config.ServerApp.terminals_enabled = False
        return jp_server_config

    async def test_labs_are_refused_with_json_where_terminals_are_disabled(self, api: Any) -> None:
        for method, path in [("POST", ("api", "labs", "start")), ("GET", ("api", "labs")),
                             ("GET", ("api", "labs", "sessions")),
                             ("GET", ("api", "ws", "output", "some-id"))]:
            status, body = await api.call(method, *path)
            assert status == 403, (path, body)
            assert body["error"] == "forbidden"
            assert "disabled" in body["message"]

    async def test_health_still_answers_where_terminals_are_disabled(self, api: Any) -> None:
        status, body = await api.call("GET", "health")
        assert (status, body["status"]) == (200, "ok")
