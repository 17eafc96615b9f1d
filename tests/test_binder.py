"""``binder/``: the environment mybinder.org builds, built here as repo2docker builds it.

repo2docker's Python buildpack (``repo2docker/buildpacks/python/__init__.py``) runs
``${KERNEL_PYTHON_PREFIX}/bin/pip install --no-cache-dir -r "binder/requirements.txt"``
from the repository's root, after copying the whole repository when the file names a
local path (our ``.``), then ``binder/postBuild`` if there is one. Its base
environment (``buildpacks/conda/environment.py-3.*.yml``) holds JupyterLab 4,
Notebook 7, ipywidgets 8 and ``nodejs``, which our package build needs for the
browser bundle. Here: the repository as a clone has it (tracked and new files, none
ignored: no ``labkernel/static/``, no ``node_modules``), copied to ``tmp_path``; a
fresh virtual environment; the same pip command from the copy's root; postBuild if
any. Then the extension must be enabled and load, and the widget's JavaScript be in
the installed package. Packages come from PyPI and npm: slow, a minute or two.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BINDER = REPO / "binder"

pytestmark = [pytest.mark.server, pytest.mark.timeout(900)]


def clone_files() -> list[str]:
    """The files a clone of the working tree would hold: tracked ones and new ones not ignored."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, check=True, capture_output=True).stdout
    return [name for name in out.decode().split("\0") if name and (REPO / name).is_file()]


def clean_env(tmp_path: Path, venv: Path) -> dict[str, str]:
    """An environment with nothing of this test run's Python or Jupyter in it."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "http_proxy", "https_proxy", "no_proxy",
            "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "PIP_INDEX_URL", "npm_config_registry")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # The user's own Jupyter folders must not enable anything: only the venv's may.
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        env[name] = str(tmp_path / "jupyter-home" / name.split("_")[1].lower())
    return env


def test_binder_builds_an_environment_with_labkernel_enabled_and_its_widget(tmp_path: Path) -> None:
    if not shutil.which("npm"):
        pytest.skip("npm is not installed: the package build needs it (Binder's image has it)")
    requirements = BINDER / "requirements.txt"
    assert requirements.is_file()
    # Only requirements.txt: a postBuild or environment.yml added later must be built here too.
    assert sorted(p.name for p in BINDER.iterdir()) == ["requirements.txt"]

    repo = tmp_path / "repo"
    for name in clone_files():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, repo / name)
    assert not (repo / "labkernel" / "static").exists()  # built by the install, not copied

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = clean_env(tmp_path, venv)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-input", "-r", "binder/requirements.txt"],
                             cwd=repo, env=env, capture_output=True, text=True)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    post_build = repo / "binder" / "postBuild"
    if post_build.exists():
        subprocess.run([str(post_build)], cwd=repo, env=env, check=True)

    # Anywhere but the copy's root, so that `labkernel` is the installed package.
    listed = subprocess.run([str(venv / "bin" / "jupyter"), "server", "extension", "list"],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    shown = re.sub(r"\x1b\[[0-9;]*m", "", listed.stdout + listed.stderr)
    assert listed.returncode == 0, shown
    # Enabled by the package's own file in the venv's etc/jupyter, and it loads.
    blocks = {block.split("\n", 1)[0].strip(): block for block in re.split(r"^Config dir: ", shown, flags=re.M)[1:]}
    venv_block = blocks.get(str(venv / "etc" / "jupyter"), "")
    lines = [line.strip() for line in venv_block.splitlines()]
    assert "labkernel enabled" in lines, shown
    assert "- Validating labkernel..." in lines, shown
    assert any(re.fullmatch(r"labkernel \S+ OK", line) for line in lines), shown
    assert "labkernel" not in "".join(b for k, b in blocks.items() if k != str(venv / "etc" / "jupyter")), shown

    where = "import labkernel, pathlib; print(pathlib.Path(labkernel.__file__).parent)"
    found = subprocess.run(
        [str(venv / "bin" / "python"), "-c", where],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    package = Path(found)
    assert package.is_relative_to(venv), package
    static = package / "static"
    for name in ("widget.js", "widget.css", "page.js", "page.css"):
        assert (static / name).stat().st_size > 1000, name
    assert "labkernel" in (static / "widget.js").read_text()
    assert (venv / "etc" / "jupyter" / "jupyter_server_config.d" / "labkernel.json").is_file()
    # The console script the author notebook's `!labkernel test` runs.
    assert (venv / "bin" / "labkernel").is_file()
