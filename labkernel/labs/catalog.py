"""The lab catalog: finding lab folders on the search path, loading them, and the
snapshot (``LabCatalog``) the manager looks labs up in.

``scan`` is plain blocking code — a walk of a few folders and a ``stat`` of their
files — meant to run in an executor, never on the event loop. It keeps what it
loaded by folder with a fingerprint of the folder's files (names, sizes, mtimes),
so a rescan re-reads only the labs whose files changed: that is how definitions
are re-read without a restart, at the cost of a stat walk per rescan.
"""

from __future__ import annotations

import asyncio
import builtins
import difflib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Union

from ..credentials import is_credential
from ..errors import LabNotFound
from . import files
from .killercoda import load_scenario
from .labtoml import check_lab_id, load_lab_toml
from .model import SHELL, DefinitionError, Lab, LabProblem
from .workspace import ENV_REFERENCE

#: The files that make a folder a lab, in order of precedence.
DEFINITION_FILES = ("lab.toml", "index.json")
#: How deep a search path entry is searched for lab folders.
MAX_DEPTH = 6
#: The most files of one lab folder taken into its fingerprint.
MAX_FINGERPRINT_FILES = 2000
_SKIP_DIRS = {"node_modules", "__pycache__"}

Fingerprint = tuple
Loaded = Union[Lab, LabProblem]


#: How each kind of definition file is read into a ``Lab``: (folder, default id,
#: the search path entry it was found under).
LOADERS: dict[str, Callable[[Path, str, Path], Lab]] = {
    "lab.toml": lambda folder, lab_id, _entry: load_lab_toml(folder, lab_id),
    "index.json": load_scenario,
}


def default_ids(found: Iterable[tuple[str | Path, str | Path]]) -> dict[str, str]:
    """The id each lab folder's lab gets unless its definition names one: the
    folder's name, as before; where two folders have the same name (two
    repositories' ``code-actions``), or one is named as a built-in lab, each of them
    gets its path relative to the search path entry ``found`` with it, with '.'
    between the parts (``killercoda-examples.code-actions``), so that which one
    keeps the plain name depends on no order. ``found``: (folder, entry) pairs."""
    unique: dict[str, str] = {}  # folder -> the search path entry it was first found under
    for folder, entry in found:
        unique.setdefault(os.fspath(folder), os.fspath(entry))
    names: dict[str, int] = {}
    for folder in unique:
        name = os.path.basename(folder)
        names[name] = names.get(name, 0) + 1
    ids = {}
    for folder, entry in unique.items():
        lab_id = os.path.basename(folder)
        if names[lab_id] > 1 or lab_id == SHELL.id:
            relative = os.path.relpath(folder, entry)
            parts: tuple[str, ...] = () if relative.startswith("..") else Path(relative).parts
            if parts:
                lab_id = ".".join(re.sub(r"[^A-Za-z0-9._-]", "-", p) for p in parts).lstrip("._-") or lab_id
        ids[folder] = lab_id
    return ids


class Pacer:
    """Lets the event loop's thread have the interpreter lock while a scan runs in
    another thread: a short sleep every ``every`` seconds of scanning.

    A thread that runs Python code between quick syscalls keeps the lock: each stat
    releases it for a microsecond, too short for the loop's thread to wake and take
    it, so that one waits for the interpreter's switch interval (5 ms) at every turn
    of the loop, and a /health request, a few turns, took up to 180 ms while 10,000
    labs were walked (measured; this machine, 2 cores). A sleep hands the lock over.
    """

    def __init__(self, every: float = 0.002, pause: float = 0.0002):
        self.every, self.pause = every, pause
        self._last = time.monotonic()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            time.sleep(self.pause)  # a worker thread's, never the event loop's
            self._last = time.monotonic()


def definition_file(folder: Path | str) -> str | None:
    """The definition file that makes ``folder`` a lab, if any."""
    for name in DEFINITION_FILES:
        if os.path.isfile(os.path.join(folder, name)):
            return name
    return None


def find_lab_folders(entry: Path) -> list[Path]:
    """Lab folders at or under ``entry``, in a stable order.

    Hidden folders and node_modules are skipped, a lab folder is not searched
    further (its own files are its business), the depth is bounded, and a folder
    reached twice through symlinks counts once.
    """
    return [Path(folder) for folder in _lab_folders(os.fspath(entry))]


def _lab_folders(entry: str, pacer: Pacer | None = None) -> list[str]:
    """``find_lab_folders``, as strings. Every scan walks the whole search path, so it
    keeps no object the garbage collector tracks (no ``Path``, no tuple) while it runs:
    at 10,000 labs, those promoted by each scan brought a full collection, which held
    the server's interpreter lock for up to 0.6 s, every few scans."""
    found: list[str] = []
    seen: set[int] = set()  # (st_dev, st_ino) as one int: an int is not tracked

    def walk(folder: str, depth: int) -> None:
        if pacer is not None:
            pacer.tick()
        try:
            info = os.stat(folder)
        except OSError:
            return
        key = info.st_dev << 64 | info.st_ino
        if key in seen:
            return
        seen.add(key)
        if definition_file(folder):
            found.append(folder)
            return
        if depth >= MAX_DEPTH:
            return
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            if e.name.startswith(".") or e.name in _SKIP_DIRS:
                continue
            try:
                if e.is_dir():
                    walk(e.path, depth + 1)
            except OSError:
                continue

    if os.path.isdir(entry):
        walk(entry, 0)
    return found


def fingerprint(folder: Path | str) -> Fingerprint:
    """Names, sizes and mtimes of a lab folder's files: it changes when any of them does.

    A flat tuple (name, mtime, size, name, ...), hidden folders and node_modules left
    out, at most ``MAX_FINGERPRINT_FILES`` files. Made on every scan for every lab, so
    it is one ``scandir`` per folder and one ``stat`` per file, nothing more.
    """
    items: list[Any] = []
    stack = [os.fspath(folder)]
    while stack and len(items) < 3 * MAX_FINGERPRINT_FILES:
        path = stack.pop()
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError:
            continue
        subfolders = []
        for e in entries:
            try:
                if e.is_dir():
                    if not e.name.startswith(".") and e.name not in _SKIP_DIRS:
                        subfolders.append(e.path)
                    continue
                st = e.stat()
                items += (e.path, st.st_mtime_ns, st.st_size)
            except OSError:
                items += (e.path, -1, -1)
            if len(items) >= 3 * MAX_FINGERPRINT_FILES:
                break
        stack.extend(reversed(subfolders))
    return tuple(items)


def _display_path(path: Path, root: Path) -> str:
    """A path as authors see it: relative to the server's root when under it."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


@dataclass
class _Entry:
    fingerprint: Fingerprint
    loaded: Loaded
    #: The id the folder's lab got by default when it was read (see ``default_ids``).
    lab_id: str = ""


@dataclass
class ScanResult:
    labs: list[Lab]
    problems: list[LabProblem]
    #: Problems found by this scan that the previous one did not have: the ones to log.
    new_problems: list[LabProblem] = field(default_factory=list)
    #: Whether anything differs from the previous scan (the catalog is kept if not).
    changed: bool = True


class LabScanner:
    """Loads the labs of a search path, re-reading only folders whose files changed.

    Not thread-safe: one scan at a time (the manager makes sure of that).
    """

    def __init__(self, root_dir: str, lab_path: list[str], log: logging.Logger | None = None, *,
                 caps: files.Limits | None = None, sandbox: bool = True):
        self.root = Path(root_dir).resolve()
        self.lab_path = list(lab_path)
        self.log = log or logging.getLogger(__name__)
        #: The most a lab's definition, each of its files, and all of them may be (``files``).
        self.caps = caps or files.Limits()
        #: Whether sessions run in a sandbox (else labs with absolute asset targets get a note).
        self.sandbox = sandbox
        self._cache: dict[str, _Entry] = {}
        self._last_problems: set[LabProblem] = set()
        self._scans = 0

    def entries(self) -> list[Path]:
        return [(self.root / p) if not os.path.isabs(p) else Path(p) for p in self.lab_path]

    def _load(self, folder: Path, lab_id: str, entry: Path) -> Loaded:
        kind = definition_file(folder)
        display = _display_path(folder / (kind or DEFINITION_FILES[0]), self.root)
        if kind is None:  # removed between the walk and now
            return LabProblem(display, "lab.toml", "the definition file disappeared", lab_id)
        try:
            with files.limits(self.caps.definition, self.caps.text, self.caps.total):
                lab = LOADERS[kind](folder, lab_id, entry)
            check_lab_id(lab.id)
            credentials = sorted({name for var in lab.env for name in ENV_REFERENCE.findall(var.value)
                                  if is_credential(name)})
            if credentials:
                lab = _with_note(lab, f"its env names {', '.join(credentials)}: credentials of the server, "
                                      "which labs never get (they are empty in its sessions)")
            outside = [a.target for a in lab.assets if os.path.isabs(a.target)]
            if outside and not self.sandbox:
                lab = _with_note(lab, f"needs the sandbox: its asset target {outside[0]!r} is outside the "
                                      "session's folder, and only a sandbox has a filesystem of the session's "
                                      "own to put it in; its sessions cannot start on this server")
            if kind == "lab.toml" and (folder / "index.json").is_file():
                lab = _with_note(lab, "index.json is ignored: lab.toml takes precedence")
            return lab
        except DefinitionError as e:
            return LabProblem(display, e.field, e.reason, lab_id)
        except Exception as e:  # a loader bug must not take the catalog down
            self.log.exception("labkernel: loading the lab in %s failed", folder)
            return LabProblem(display, kind, f"could not be loaded: {e}", lab_id)

    def scan(self) -> ScanResult:
        """Walk the search path and load what changed. Blocking: run it in an executor.

        A folder whose fingerprint is unchanged keeps its entry, the very object: a
        scan that finds nothing new leaves nothing new behind either (at 10,000 labs,
        each scan's fresh objects made the garbage collector walk them all, pausing
        the server's thread for up to 0.6 s).
        """
        pacer = Pacer()
        found: list[tuple[str, str]] = []
        for entry in self.entries():
            where = os.fspath(entry)
            found.extend((folder, where) for folder in _lab_folders(where, pacer))
        ids = default_ids(found)
        cache: dict[str, _Entry] = {}
        labs: dict[str, Lab] = {SHELL.id: SHELL}
        owner: dict[str, str] = {}
        problems: list[LabProblem] = []
        changed = False
        for key, where in found:
            pacer.tick()
            if key in cache:  # the same folder on two search path entries
                continue
            # A lab whose default id changed (a namesake came or went) is read again.
            print_ = fingerprint(key)
            old = self._cache.get(key)
            if old is None or old.fingerprint != print_ or old.lab_id != ids[key]:
                old = _Entry(print_, self._load(Path(key), ids[key], Path(where)), ids[key])
                changed = True
            cache[key] = old
            loaded = old.loaded
            if isinstance(loaded, LabProblem):
                problems.append(loaded)
                continue
            lab = loaded
            if lab.id in labs:
                first = owner.get(lab.id)
                where = (f"the lab in {_display_path(Path(first), self.root)}" if first is not None
                         else "the built-in lab")
                problems.append(LabProblem(
                    _display_path(Path(key, definition_file(key) or "lab.toml"), self.root), "id",
                    f"the id {lab.id!r} is already taken by {where}; this folder's lab is left out",
                    lab.id))
                continue
            labs[lab.id] = lab
            owner[lab.id] = key
        changed = changed or cache.keys() != self._cache.keys() or self._scans == 0
        self._cache = cache
        self._scans += 1
        new = [p for p in problems if p not in self._last_problems]
        if new or len(problems) != len(self._last_problems):
            self._last_problems = set(problems)
        return ScanResult(list(labs.values()), problems, new, changed=changed)


def _with_note(lab: Lab, note: str) -> Lab:
    from dataclasses import replace
    return replace(lab, notes=lab.notes + (note,))


class LabCatalog:
    """The labs this server offers, looked up by id, and the definitions that failed.

    A snapshot: the manager replaces its contents after each scan of the search
    path (``update``), so that lookups never touch the filesystem. Its answer to
    ``GET /api/labs`` is made once per snapshot, off the event loop (``answer``): at
    10,000 labs, making it took 160 ms of the loop per request.
    """

    def __init__(self, labs: list[Lab] | None = None, problems: list[LabProblem] | None = None):
        self.update(labs if labs is not None else [SHELL], problems or [])

    def update(self, labs: list[Lab], problems: list[LabProblem]) -> None:
        """Replace the catalog's contents (after a scan)."""
        self._labs = {lab.id: lab for lab in labs}
        self._problems = list(problems)
        #: ``GET /api/labs``'s body per description of this server (``hosting.Here``).
        self._answers: dict[Any, asyncio.Future[bytes]] = {}

    def __contains__(self, lab_id: object) -> bool:
        return lab_id in self._labs

    def __len__(self) -> int:
        return len(self._labs)

    def get(self, lab_id: str) -> Lab:
        """The lab with this id; ``LabNotFound`` (``not_found``) if there is none."""
        try:
            return self._labs[lab_id]
        except KeyError:
            raise self.not_found(lab_id) from None

    def not_found(self, lab_id: str, close: builtins.list[str] | None = None) -> LabNotFound:
        """The error for an id the catalog does not have: bounded, however many labs
        there are (it listed all 10,000 before, 100,049 characters): the labs' ids
        when they are few, else their count and ``close`` matches (``close_matches``)."""
        shown = lab_id if len(lab_id) <= MAX_SHOWN_ID else lab_id[:MAX_SHOWN_ID] + "…"
        message = f"There is no lab {shown!r} here"
        if len(self._labs) <= MAX_LISTED:
            message += f"; the labs here are: {', '.join(sorted(self._labs))}."
        else:
            message += f" ({len(self._labs)} labs: GET api/labs lists them)"
            message += f"; did you mean {', '.join(close)}?" if close else "."
        return LabNotFound(message)

    def close_matches(self, lab_id: str, n: int = 3) -> builtins.list[str]:
        """Up to ``n`` ids like ``lab_id`` (a few ms per 1,000 labs: call it off the loop)."""
        wanted = lab_id[:MAX_SHOWN_ID]
        ids = builtins.list(self._labs)
        pacer, candidates = Pacer(), []
        for i in range(0, len(ids), 500):  # the best n of all are among each part's best n
            candidates += difflib.get_close_matches(wanted, ids[i:i + 500], n=n, cutoff=0.6)
            pacer.tick()
        found = difflib.get_close_matches(wanted, candidates, n=n, cutoff=0.6)
        if len(found) < n and wanted:
            found += [i for i in ids if wanted in i and i not in found][:n - len(found)]
        return found

    # ``list`` below names the method inside the class: the annotations say builtins.list.
    def list(self) -> builtins.list[Lab]:
        return list(self._labs.values())

    def problems(self) -> builtins.list[LabProblem]:
        """Definitions that could not be read, with the reason."""
        return list(self._problems)

    async def answer(self, here: Any = None) -> bytes:
        """``GET /api/labs``'s body for this snapshot (JSON), made in an executor the
        first time it is asked for, a few hundred labs per ``json.dumps`` (which holds
        the interpreter's lock for as long as it runs)."""
        made = self._answers.get(here)
        if made is None or (made.done() and (made.cancelled() or made.exception() is not None)):
            labs, problems = self.list(), self.problems()
            if len(self._answers) > 8:  # base URLs and met needs change rarely: keep a few
                self._answers.clear()
            made = self._answers[here] = asyncio.ensure_future(
                asyncio.get_running_loop().run_in_executor(None, _catalog_answer, labs, problems, here))
        return await asyncio.shield(made)


#: A lab id longer than this is cut in messages.
MAX_SHOWN_ID = 64
#: Up to this many labs, a 404's message lists them all.
MAX_LISTED = 10


def _catalog_answer(labs: builtins.list[Lab], problems: builtins.list[LabProblem], here: Any = None,
                    chunk: int = 200) -> bytes:
    parts, pacer = [], Pacer()
    for i in range(0, len(labs), chunk):
        parts.append(json.dumps([lab.summary(here) for lab in labs[i:i + chunk]])[1:-1])
        pacer.tick()
    errors = json.dumps([problem.model() for problem in problems])
    return ('{"labs": [' + ", ".join(p for p in parts if p) + '], "errors": ' + errors + "}").encode()
