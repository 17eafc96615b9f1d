"""What a lab session starts with: its folder, the lab's files copied in, its
environment (the server's, less credentials, plus the lab's variables, secrets
masked).

The folder is the lab's ``workdir`` under the server's root (never out of it, not
through a symlink either), or with ``scratch = true`` a fresh folder removed with
the session; else the root itself.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from typing import Any

from ..credentials import is_credential, without_credentials
from .checks import Masker
from .model import Asset, Lab

#: ``${NAME}`` in a lab's env: the server's variable NAME.
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def server_environment(root_dir: str, hidden: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment every session starts from: the server's, less its credentials
    (see ``credentials``) and the ``hidden`` names."""
    env = without_credentials(os.environ, hidden)
    env.update(TERM="xterm-256color", JUPYTER_SERVER_ROOT=root_dir)
    return env


def expand_env(lab: Lab, log: Any = None, hidden: tuple[str, ...] = ()) -> tuple[dict[str, str], Masker]:
    """The lab's variables with ``${NAME}`` taken from the server's environment less
    its credentials (``credentials``, and the ``hidden`` names), and a masker for the
    secret ones.

    ``${LABKERNEL_TOKEN}`` or ``${JUPYTERHUB_API_TOKEN}`` in a ``lab.toml`` must not
    put the server's token in the shell: a credential expands to nothing, as an unset
    variable does, and the log says which.
    """
    source = without_credentials(os.environ, hidden)
    values, secret_values = {}, []
    for var in lab.env:
        def take(m: re.Match[str], name: str = var.name) -> str:
            if m[1] in source:
                return source[m[1]]
            if log is not None:
                if m[1] in os.environ or is_credential(m[1], hidden):
                    log.warning("labkernel: lab %s: ${%s} in env.%s names a credential of the server, "
                                "which labs never get; it is empty in the session", lab.id, m[1], name)
                else:
                    log.warning("labkernel: lab %s: ${%s} in env.%s is not set on the server; "
                                "it is empty in the session", lab.id, m[1], name)
            return ""
        values[var.name] = ENV_REFERENCE.sub(take, var.value)
        if var.secret:
            secret_values.append(values[var.name])
    return values, Masker(secret_values)


def prepare_folder(lab: Lab, root_dir: str, scratch_dir: str = "") -> tuple[str, str | None]:
    """The folder a session of ``lab`` starts in, made if need be, and its scratch
    folder (the same) if it has one. Raises ValueError for a workdir that leads out
    of the root, OSError when a folder cannot be made."""
    root = os.path.realpath(root_dir)
    if lab.scratch:
        scratch = tempfile.mkdtemp(prefix=f"labkernel-{lab.id}-", dir=scratch_dir or None)
        return scratch, scratch
    if not lab.workdir:
        return root, None
    cwd = os.path.realpath(os.path.join(root, lab.workdir))
    if cwd != root and not cwd.startswith(root + os.sep):
        raise ValueError(f"its workdir {lab.workdir!r} leads out of the server's root folder")
    os.makedirs(cwd, exist_ok=True)
    return cwd, None


#: chmod's symbolic permission bits, by who and what.
_BITS = {(w, p): getattr(stat, f"S_I{p.upper()}{who}") for w, who in (("u", "USR"), ("g", "GRP"), ("o", "OTH"))
         for p in "rwx"}


def _chmod(path: str, mode: str) -> None:
    """Apply a mode given as octal (``0755``) or symbolically (``+x``, ``u+rw``)."""
    if not mode:
        return
    if mode.isdigit():
        os.chmod(path, int(mode, 8))
        return
    match = re.fullmatch(r"([ugoa]*)([+-])([rwx]+)", mode)
    if match is None:
        raise ValueError(f"{mode!r} is not a mode")
    who, op, perms = match.groups()
    who = who.replace("a", "ugo") or "ugo"
    bits = 0
    for w in who:
        for p in perms:
            bits |= _BITS[w, p]
    current = stat.S_IMODE(os.stat(path).st_mode)
    os.chmod(path, current | bits if op == "+" else current & ~bits)


def copy_assets(assets: tuple[Asset, ...], cwd: str, home: str | None = None) -> None:
    """Copy a lab's files into place (blocking: run it in an executor).

    A target is taken relative to the session's folder, or to the home folder with
    ``~``: the session's ``home`` if it has one of its own (a sandbox's home is its
    folder), else the server's. One ending in ``/`` or naming a folder receives the
    source inside it. Symlinks in a copied folder are copied as links, never followed.
    """
    for asset in assets:
        if home and (asset.target == "~" or asset.target.startswith("~/")):
            target = home + asset.target[1:]
        else:
            target = os.path.expanduser(asset.target)
        if not os.path.isabs(target):
            target = os.path.join(cwd, target)
        if asset.target.endswith("/") or os.path.isdir(target):
            target = os.path.join(target, os.path.basename(asset.source.rstrip("/")))
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        if os.path.isdir(asset.source):
            shutil.copytree(asset.source, target, symlinks=True, dirs_exist_ok=True)
            for dirpath, _dirs, files in os.walk(target):
                for name in files:
                    _chmod(os.path.join(dirpath, name), asset.mode)
        else:
            shutil.copy2(asset.source, target)
            _chmod(target, asset.mode)
