"""The lab catalog: finding lab folders on the search path, loading them, and the
snapshot (``LabCatalog``) the manager looks labs up in.

``scan`` is plain blocking code — a walk of a few folders and a ``stat`` of their
files — meant to run in an executor, never on the event loop. It keeps what it
loaded by folder with a fingerprint of the folder's files (names, sizes, mtimes),
so a rescan re-reads only the labs whose files changed: that is how definitions
are re-read without a restart, at the cost of a stat walk per rescan.
"""

from __future__ import annotations

import builtins
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

from ..errors import LabNotFound
from .killercoda import load_scenario
from .labtoml import check_lab_id, load_lab_toml
from .model import SHELL, DefinitionError, Lab, LabProblem

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


def default_ids(found: list[tuple[Path, Path]]) -> dict[str, str]:
    """The id each lab folder's lab gets unless its definition names one: the
    folder's name, as before; where two folders have the same name (two
    repositories' ``code-actions``), or one is named as a built-in lab, each of them
    gets its path relative to the search path entry ``found`` with it, with '.'
    between the parts (``killercoda-examples.code-actions``), so that which one
    keeps the plain name depends on no order. ``found``: (folder, entry) pairs."""
    unique = {str(folder): (folder, entry) for folder, entry in found}
    names: dict[str, int] = {}
    for folder, _ in unique.values():
        names[folder.name] = names.get(folder.name, 0) + 1
    ids = {}
    for key, (folder, entry) in unique.items():
        lab_id = folder.name
        if names[lab_id] > 1 or lab_id == SHELL.id:
            try:
                parts = folder.relative_to(entry).parts
            except ValueError:
                parts = ()
            if parts:
                lab_id = ".".join(re.sub(r"[^A-Za-z0-9._-]", "-", p) for p in parts).lstrip("._-") or lab_id
        ids[key] = lab_id
    return ids


def definition_file(folder: Path) -> str | None:
    """The definition file that makes ``folder`` a lab, if any."""
    for name in DEFINITION_FILES:
        if (folder / name).is_file():
            return name
    return None


def find_lab_folders(entry: Path) -> list[Path]:
    """Lab folders at or under ``entry``, in a stable order.

    Hidden folders and node_modules are skipped, a lab folder is not searched
    further (its own files are its business), the depth is bounded, and a folder
    reached twice through symlinks counts once.
    """
    found: list[Path] = []
    seen: set[str] = set()

    def walk(folder: Path, depth: int) -> None:
        try:
            real = os.path.realpath(folder)
        except OSError:
            return
        if real in seen:
            return
        seen.add(real)
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
                    walk(Path(e.path), depth + 1)
            except OSError:
                continue

    if entry.is_dir():
        walk(entry, 0)
    return found


def fingerprint(folder: Path) -> Fingerprint:
    """Names, sizes and mtimes of a lab folder's files: it changes when any of them does."""
    items = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:
                items.append((path, -1, -1))
                continue
            items.append((path, st.st_mtime_ns, st.st_size))
            if len(items) >= MAX_FINGERPRINT_FILES:
                return tuple(items)
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


@dataclass
class ScanResult:
    labs: list[Lab]
    problems: list[LabProblem]
    #: Problems found by this scan that the previous one did not have: the ones to log.
    new_problems: list[LabProblem] = field(default_factory=list)


class LabScanner:
    """Loads the labs of a search path, re-reading only folders whose files changed.

    Not thread-safe: one scan at a time (the manager makes sure of that).
    """

    def __init__(self, root_dir: str, lab_path: list[str], log: logging.Logger | None = None):
        self.root = Path(root_dir).resolve()
        self.lab_path = list(lab_path)
        self.log = log or logging.getLogger(__name__)
        self._cache: dict[str, _Entry] = {}
        self._last_problems: set[LabProblem] = set()

    def entries(self) -> list[Path]:
        return [(self.root / p) if not os.path.isabs(p) else Path(p) for p in self.lab_path]

    def _load(self, folder: Path, lab_id: str, entry: Path) -> Loaded:
        kind = definition_file(folder)
        display = _display_path(folder / (kind or DEFINITION_FILES[0]), self.root)
        if kind is None:  # removed between the walk and now
            return LabProblem(display, "lab.toml", "the definition file disappeared", lab_id)
        try:
            lab = LOADERS[kind](folder, lab_id, entry)
            check_lab_id(lab.id)
            if kind == "lab.toml" and (folder / "index.json").is_file():
                lab = _with_note(lab, "index.json is ignored: lab.toml takes precedence")
            return lab
        except DefinitionError as e:
            return LabProblem(display, e.field, e.reason, lab_id)
        except Exception as e:  # a loader bug must not take the catalog down
            self.log.exception("labkernel: loading the lab in %s failed", folder)
            return LabProblem(display, kind, f"could not be loaded: {e}", lab_id)

    def scan(self) -> ScanResult:
        """Walk the search path and load what changed. Blocking: run it in an executor."""
        found: list[tuple[Path, Path]] = []
        for entry in self.entries():
            found.extend((folder, entry) for folder in find_lab_folders(entry))
        ids = default_ids(found)
        cache: dict[str, _Entry] = {}
        labs: dict[str, Lab] = {SHELL.id: SHELL}
        owner: dict[str, Path] = {}
        problems: list[LabProblem] = []
        for folder, entry in found:
            key = str(folder)
            if key in cache:  # the same folder on two search path entries
                continue
            # A lab whose default id changed (a namesake came or went) is read again.
            print_ = (ids[key], str(entry), fingerprint(folder))
            old = self._cache.get(key)
            loaded = (old.loaded if old is not None and old.fingerprint == print_
                      else self._load(folder, ids[key], entry))
            cache[key] = _Entry(print_, loaded)
            if isinstance(loaded, LabProblem):
                problems.append(loaded)
                continue
            lab = loaded
            if lab.id in labs:
                first = owner.get(lab.id)
                where = (f"the lab in {_display_path(first, self.root)}" if first is not None
                         else "the built-in lab")
                problems.append(LabProblem(
                    _display_path(folder / (definition_file(folder) or "lab.toml"), self.root), "id",
                    f"the id {lab.id!r} is already taken by {where}; this folder's lab is left out",
                    lab.id))
                continue
            labs[lab.id] = lab
            owner[lab.id] = folder
        self._cache = cache
        new = [p for p in problems if p not in self._last_problems]
        self._last_problems = set(problems)
        return ScanResult(list(labs.values()), problems, new)


def _with_note(lab: Lab, note: str) -> Lab:
    from dataclasses import replace
    return replace(lab, notes=lab.notes + (note,))


class LabCatalog:
    """The labs this server offers, looked up by id, and the definitions that failed.

    A snapshot: the manager replaces its contents after each scan of the search
    path (``update``), so that lookups never touch the filesystem.
    """

    def __init__(self, labs: list[Lab] | None = None, problems: list[LabProblem] | None = None):
        self.update(labs if labs is not None else [SHELL], problems or [])

    def update(self, labs: list[Lab], problems: list[LabProblem]) -> None:
        """Replace the catalog's contents (after a scan)."""
        self._labs = {lab.id: lab for lab in labs}
        self._problems = list(problems)

    def __contains__(self, lab_id: object) -> bool:
        return lab_id in self._labs

    def get(self, lab_id: str) -> Lab:
        try:
            return self._labs[lab_id]
        except KeyError:
            known = ", ".join(sorted(self._labs)) or "none"
            raise LabNotFound(f"There is no lab {lab_id!r}; the labs here are: {known}.") from None

    # ``list`` below names the method inside the class: the annotations say builtins.list.
    def list(self) -> builtins.list[Lab]:
        return list(self._labs.values())

    def problems(self) -> builtins.list[LabProblem]:
        """Definitions that could not be read, with the reason."""
        return list(self._problems)
