"""Reading a lab folder's ``lab.toml`` into a ``Lab``.

The format, for authors (the README's "Authoring labs" has the long form)::

    id = "git-basics"                 # optional: the folder's name
    title = "Git basics"
    description = "Init, commit, branch."
    command = ["bash", "-l"]          # optional: the server's shell
    workdir = "projects/demo"         # under the server's root; or:
    scratch = true                    # a fresh folder per session, removed with it
    setup = "git config --global init.defaultBranch main"   # or setup_file = "setup.sh"
    foreground = "clear"              # typed into the terminal; or foreground_file
    lifetime = 3600                   # seconds; idle_timeout likewise
    pool = 2                          # sessions kept warm for an instant start
    needs = ["docker"]                # of kubernetes, docker, systemd, internet, root
    intro = "…" / intro_file, finish = "…" / finish_file

    [env]
    GREETING = "hello"
    TOKEN = { value = "${API_TOKEN}", secret = true }

    [[steps]]
    title = "Make a folder"
    text = "Create `demo/`."         # or text_file = "steps/1.md"
    check = "test -d demo"            # or check_file = "checks/1.sh"
    hint = "`mkdir`"
    solution = ["mkdir demo"]         # commands, typed as a learner would
    setup = "…" / setup_file, foreground = "…" / foreground_file   # on entering the step

    [[assets]]
    source = "files/data.csv"         # in the lab's folder
    target = "data.csv"               # relative: the session's workdir; ~/…: home;
                                      # /etc/…: absolute, only in a sandbox

Unknown keys are errors, not notes: a misspelt ``chek`` would otherwise drop a
check without a word, and the lab would pass ``labkernel test`` for the wrong reason.
Every file a definition names must stay inside the lab's folder, through symlinks
too (``lab.toml`` itself included): a lab is something an author hands over, and must
not read the server's files. Each is read within the server's caps, a byte-order mark
tolerated (``files``).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older Pythons only
    import tomli as tomllib

from . import files
from .model import NEEDS, Asset, DefinitionError, EnvVar, Lab, Step

#: What a lab id may look like: it appears in URLs, logs and folder names.
LAB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_LAB_KEYS = {
    "id", "title", "description", "command", "workdir", "scratch", "env", "setup", "setup_file",
    "foreground", "foreground_file", "lifetime", "idle_timeout", "pool", "intro", "intro_file",
    "finish", "finish_file", "steps", "assets", "needs",
}
_STEP_KEYS = {
    "title", "text", "text_file", "check", "check_file", "hint", "hint_file", "solution",
    "setup", "setup_file", "foreground", "foreground_file",
}
_ASSET_KEYS = {"source", "target", "mode"}
_ENV_KEYS = {"value", "secret"}


def check_lab_id(value: Any, field: str = "id") -> str:
    """``value`` if it is a valid lab id; DefinitionError otherwise."""
    if not isinstance(value, str) or not LAB_ID.match(value):
        raise DefinitionError(field, f"{value!r} is not a lab id: use letters, digits, '.', '_' "
                                     "and '-', starting with a letter or digit")
    return value


def inside(folder: Path, relative: str, field: str) -> Path:
    """The real path of ``relative`` under ``folder``; DefinitionError if it leaves it.

    Both the written path (no absolute path, no ``..``) and the resolved one (no
    symlink pointing out) must stay inside, so that neither trick reads the
    server's files into a catalog answer or a session.
    """
    if not relative or os.path.isabs(relative) or relative.startswith("~"):
        raise DefinitionError(field, f"{relative!r} must be a path relative to the lab's folder")
    if ".." in Path(relative).parts:
        raise DefinitionError(field, f"{relative!r} leaves the lab's folder ('..')")
    # os.path rather than Path.resolve: half the cost, and a scan calls this for
    # every file of every lab.
    base = os.path.realpath(folder)
    target = os.path.realpath(os.path.join(base, relative))
    if target != base and not target.startswith(base.rstrip("/") + "/"):
        raise DefinitionError(field, f"{relative!r} leads out of the lab's folder (through a symlink)")
    return Path(target)


def read_text(folder: Path, relative: str, field: str) -> str:
    """The text of a file the definition names, checked to be inside the lab's folder,
    within the caps (``files``)."""
    path = inside(folder, relative, field)
    if not path.is_file():
        raise DefinitionError(field, f"{relative!r} does not exist in the lab's folder or is not a file")
    return files.read_text(path, field, shown=relative)


class _Table:
    """Typed access to one TOML table, naming the field at fault in every error."""

    def __init__(self, data: dict[str, Any], prefix: str, folder: Path, known: set[str]):
        self.data, self.prefix, self.folder = data, prefix, folder
        unknown = sorted(set(data) - known)
        if unknown:
            raise DefinitionError(self.name(unknown[0]),
                                  f"unknown key (known keys: {', '.join(sorted(known))})")

    def name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, what: str = "") -> Any:
        value = self.data.get(key, default)
        if value is default:
            return value
        # TOML booleans are not numbers, whatever Python thinks of bool.
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
            raise DefinitionError(self.name(key), f"must be {what or _kind_name(kind)}, not {_toml_type(value)}")
        return value

    def text(self, key: str, required: bool = False) -> str | None:
        """A string given inline (``key``) or as a file (``key_file``), not both."""
        inline = self.get(key, str)
        file_key = f"{key}_file"
        relative = self.get(file_key, str) if file_key in self.data else None
        if inline is not None and relative is not None:
            raise DefinitionError(self.name(key), f"give either {key} or {file_key}, not both")
        if relative is not None:
            return read_text(self.folder, relative, self.name(file_key))
        if inline is None and required:
            raise DefinitionError(self.name(key), "is required")
        return inline

    def number(self, key: str) -> float | None:
        value = self.get(key, (int, float), what="a number of seconds")
        if value is not None and not value > 0:
            raise DefinitionError(self.name(key), f"must be more than 0 (got {value})")
        return None if value is None else float(value)


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", bool: "true or false", int: "a whole number", float: "a number",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in _tuple(kind))


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {str: "a string", int: "a whole number", float: "a number", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _strings(table: _Table, key: str) -> tuple[str, ...]:
    """A list of strings; a single string is one item (a one-line solution)."""
    value = table.get(key, (list, str), default=[], what="a list of strings")
    if isinstance(value, str):
        return (value,)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise DefinitionError(f"{table.name(key)}[{i + 1}]", f"must be a string, not {_toml_type(item)}")
    return tuple(value)


def _env(table: _Table) -> tuple[EnvVar, ...]:
    raw = table.get("env", dict, default={})
    out = []
    for name, spec in raw.items():
        field = f"env.{name}"
        if not _ENV_NAME.match(name):
            raise DefinitionError(field, "is not a valid environment variable name")
        if isinstance(spec, str):
            out.append(EnvVar(name, spec))
            continue
        if not isinstance(spec, dict):
            raise DefinitionError(field, f"must be a string or a table {{ value = …, secret = true }}, "
                                         f"not {_toml_type(spec)}")
        var = _Table(spec, f"{field}.", table.folder, _ENV_KEYS)
        value = var.get("value", str)
        if value is None:
            raise DefinitionError(var.name("value"), "is required")
        out.append(EnvVar(name, value, secret=var.get("secret", bool, default=False)))
    return tuple(out)


def _array_entry(data: Any, array: str, index: int, folder: Path, keys: set[str]) -> _Table:
    """Entry ``index`` of an array of tables (``[[steps]]``, ``[[assets]]``)."""
    if not isinstance(data, dict):
        raise DefinitionError(f"{array}[{index}]", f"must be a table ([[{array}]]), not {_toml_type(data)}")
    return _Table(data, f"{array}[{index}].", folder, keys)


def _step(data: Any, index: int, folder: Path) -> Step:
    t = _array_entry(data, "steps", index, folder, _STEP_KEYS)
    title = t.get("title", str)
    if not title:
        raise DefinitionError(t.name("title"), "is required")
    return Step(
        title=title, text=t.text("text") or "", check=t.text("check"), hint=t.text("hint") or "",
        solution=_strings(t, "solution"), setup=t.text("setup"), foreground=t.text("foreground"),
    )


def _asset(data: Any, index: int, folder: Path) -> Asset:
    t = _array_entry(data, "assets", index, folder, _ASSET_KEYS)
    source = t.get("source", str)
    if not source:
        raise DefinitionError(t.name("source"), "is required")
    path = inside(folder, source, t.name("source"))
    if not path.exists():
        raise DefinitionError(t.name("source"), f"{source!r} does not exist in the lab's folder")
    target = t.get("target", str) or os.path.basename(source)
    if ".." in Path(target).parts:
        raise DefinitionError(t.name("target"), f"{target!r} may not contain '..'")
    mode = t.get("mode", str, default="")
    if mode and not re.fullmatch(r"0?[0-7]{3}|[ugoa]*[+-][rwx]+", mode):
        raise DefinitionError(t.name("mode"), f"{mode!r} is not a mode such as '0755' or '+x'")
    return Asset(source=str(path), target=target, mode=mode)


def _list_of_tables(t: _Table, key: str, parse: Callable[[Any, int, Path], Any]) -> tuple[Any, ...]:
    raw = t.get(key, list, default=[], what=f"a list of tables ([[{key}]])")
    return tuple(parse(item, i + 1, t.folder) for i, item in enumerate(raw))


def load_lab_toml(folder: Path, default_id: str) -> Lab:
    """Read ``folder/lab.toml``; raises DefinitionError naming the field and the reason.

    Blocking file I/O: call it off the event loop (the catalog scans in an executor).
    """
    # Its size is capped, a byte-order mark dropped (files.py); and it may not be a
    # symlink out of the folder, as no file it names may.
    path = folder / "lab.toml"
    if os.path.islink(path):
        path = inside(folder, "lab.toml", "lab.toml")
    text = files.read_text(path, "lab.toml", definition=True)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DefinitionError("lab.toml", f"is not valid TOML: {e}") from None
    t = _Table(data, "", folder, _LAB_KEYS)
    lab_id = check_lab_id(t.get("id", str, default=default_id))
    command = t.get("command", list, default=[], what="a list of strings (argv)")
    for i, arg in enumerate(command):
        if not isinstance(arg, str):
            raise DefinitionError(f"command[{i + 1}]", f"must be a string, not {_toml_type(arg)}")
    workdir = t.get("workdir", str, default="")
    if workdir and (os.path.isabs(workdir) or ".." in Path(workdir).parts):
        raise DefinitionError("workdir", f"{workdir!r} must be a path under the server's root, "
                                         "relative to it, without '..'")
    scratch = t.get("scratch", bool, default=False)
    if scratch and workdir:
        raise DefinitionError("scratch", "give either workdir or scratch = true, not both")
    needs = _strings(t, "needs")
    for i, need in enumerate(needs):
        if need not in NEEDS:
            raise DefinitionError(f"needs[{i + 1}]", f"{need!r} is not a need (known: {', '.join(NEEDS)})")
    pool = t.get("pool", int, default=0)
    if pool < 0:
        raise DefinitionError("pool", f"must be 0 or more (got {pool})")
    return Lab(
        id=lab_id,
        title=t.get("title", str, default="") or lab_id,
        description=t.get("description", str, default=""),
        steps=_list_of_tables(t, "steps", _step),
        argv=tuple(command),
        env=_env(t),
        workdir=workdir,
        scratch=scratch,
        setup=t.text("setup"),
        foreground=t.text("foreground"),
        assets=_list_of_tables(t, "assets", _asset),
        lifetime=t.number("lifetime"),
        idle_timeout=t.number("idle_timeout"),
        pool=pool,
        intro=t.text("intro") or "",
        finish=t.text("finish") or "",
        source=str(folder),
        kind="lab.toml",
        needs=tuple(n for n in NEEDS if n in needs),
    )
