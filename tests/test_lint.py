"""ruff and mypy, as configured in pyproject.toml, find nothing.

Run as tests so that the README's one test command keeps the tree clean: a lint
finding fails CI like a broken behaviour does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing() -> None:
    # Its cache goes to a temporary place: the tests never write into the tree.
    result = _run("mypy", "--cache-dir=/dev/null")
    assert result.returncode == 0, result.stdout + result.stderr
