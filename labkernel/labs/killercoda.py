"""Killercoda and Katacoda scenarios, read as they are.

A scenario is a folder with an ``index.json`` (Killercoda's format, or the older
Katacoda spellings) and the Markdown and shell files it names. ``load_scenario``
turns one into a ``Lab`` without any conversion step by the author:

============================================  ==========================================
index.json                                    Lab
============================================  ==========================================
``title``, ``description``                    ``title``, ``description``
``details.intro.text``                        ``intro`` (Markdown)
``details.intro.background`` / ``courseData`` ``setup`` (hidden, before the prompt)
``details.intro.foreground`` / ``code``       ``foreground`` (typed into the terminal)
``details.steps[i].title`` / ``text``         ``Step.title`` / ``Step.text``
``details.steps[i].verify``                   ``Step.check`` (exit 0: done)
``details.steps[i].background`` / courseData  ``Step.setup`` (when the step is entered)
``details.steps[i].foreground`` / ``code``    ``Step.foreground``
``details.steps[i].hint``                     ``Step.hint`` (a file, or inline text)
``details.steps[i].answer`` (Katacoda)        appended to ``Step.hint`` in a
                                              ``<details>`` Solution block; its
                                              ``{{exec}}`` blocks become the solution
``{{exec}}`` blocks in the step text          ``Step.solution``, one entry per block
``details.finish.text``                       ``finish``
``details.assets.host01``                     ``assets``
============================================  ==========================================

Decisions, for authors and for the code that runs a ``Lab``:

- **Markers stay in the text.** ``Step.text`` is the Markdown as the author wrote it
  (byte-order mark dropped, CRLF turned into LF), markers included: the panel renders
  `` `cmd`{{exec}} `` as a run button and ``{{copy}}`` as a copy button, in either
  spelling (Killercoda's ``exec``, Katacoda's ``execute``).
- **Solutions.** Each code span or fenced block followed by ``{{exec}}``,
  ``{{exec interrupt}}``, ``{{execute}}`` or ``{{execute T2}}``/``HOST1`` (one
  terminal here) is one solution entry, in the order of the text. A fenced block is
  one entry with its lines joined by newlines, typed as one paste, so a here-document
  or a multi-line loop stays whole. An ``interrupt`` entry starts with ``\\x03``:
  whoever types it sends Ctrl-C first, lets the program end, then types the rest.
  ``{{copy}}``, ``{{}}``, ``{{open}}`` and Katacoda's keystroke markers
  (``ctrl-seq``, ``no-newline``) are not solutions. Examples inside ``<pre>`` HTML
  blocks are Markdown shown as code, not markers. A step with an ``answer`` page
  takes its solution from the answer's blocks (the author's answer, not the
  exploratory commands of the text) when there are any.
- **Where things run.** Killercoda gives each learner a fresh machine and runs every
  script as root with the working folder and ``~`` at ``/root``. Here a scenario is
  a ``scratch`` lab: each session gets a fresh folder, removed with it, which plays
  the part of ``/root``: the shell, the scripts and the checks start in it, and an
  asset target of ``~`` or ``/root`` (or below them) is taken relative to it
  (``./``). Everything runs as the server's user, and ``HOME`` stays that user's:
  a script that writes to ``~`` or ``/root`` by name, installs packages or needs
  docker or kubectl must be adapted. Other absolute targets stay as written.
- **Scripts** are stored as text and meant to run as ``bash FILE`` would: most lack
  a shebang or the exec bit.
- **Ignored**, each with a sentence in ``Lab.notes``: ``backend`` (the image: the lab
  runs in this server's shell), ``environment`` and ``interface`` (UI layout),
  assets of hosts other than ``host01``, ``finish`` scripts, the intro's ``credits``,
  and keys this loader does not know. ``time``, ``difficulty``, ``icon``,
  ``pathwayTitle`` and ``noindex`` are catalog decoration and dropped silently.
  Killercoda's ``structure.json`` and Katacoda's ``*-pathway.json`` (course
  grouping) are not read: each scenario folder is a lab of its own.
- **Errors** are ``DefinitionError(field, reason)``, the field as a JSON path with
  zero-based indexes (``details.steps[2].verify``). Every file a scenario names must
  exist, be a regular file, and stay inside its folder once symlinks are resolved.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import read_text as read_capped
from .model import Asset, DefinitionError, Lab, Step

#: The file that makes a folder a Killercoda/Katacoda scenario.
INDEX = "index.json"

#: Top-level keys that only decorate a catalog entry: nothing to note.
_SILENT_TOP = {"time", "difficulty", "icon", "pathwayTitle", "noindex"}
_NOTED_TOP = {
    "environment": "The environment settings (UI layout, dashboards) are ignored: the lab page has its own layout.",
    "interface": "The interface layout is ignored: the lab page has its own layout.",
    "files": "The editor file list (files) is ignored: there is no built-in editor.",
    "type": "The scenario type is ignored: every scenario runs as steps with checks.",
}
#: (Killercoda key, Katacoda alias) for hidden setup and for what is typed in.
_BACKGROUND = ("background", "courseData")
_FOREGROUND = ("foreground", "code")


# -- markers ----------------------------------------------------------------------

@dataclass(frozen=True)
class Action:
    """A code span or fenced block of step Markdown, with the marker after it."""

    #: "exec", "copy", "nocopy" (``{{}}``), "open", or "other" (a marker we do not know).
    kind: str
    #: The code: a span's content, or a block's lines joined with "\n".
    code: str
    #: The marker's words after the first, e.g. ("interrupt",) or ("T2",).
    flags: tuple[str, ...] = ()
    #: True for a fenced block, False for an inline code span.
    block: bool = False

    @property
    def runnable(self) -> bool:
        """Whether typing ``code`` and Enter into a shell is what the marker means."""
        return self.kind == "exec" and not {"ctrl-seq", "no-newline"} & {f.lower() for f in self.flags}

    @property
    def interrupt(self) -> bool:
        return "interrupt" in (f.lower() for f in self.flags)


_MARKER = re.compile(r"\{\{([^{}\n]*)\}\}")
_FENCE_OPEN = re.compile(r"^[ \t]*(`{3,}|~{3,})(.*)$")
#: A ``<pre>`` HTML block: the Markdown inside is shown as written, so no marker counts.
_PRE_OPEN = re.compile(r"^[ \t]*<pre(?:[\s>]|$)", re.IGNORECASE)
_PRE_CLOSE = re.compile(r"</pre\s*>", re.IGNORECASE)
_MAGIC = re.compile(r"[*?[]")


def _marker_action(content: str, code: str, block: bool) -> Action:
    words = content.split()
    head = words[0].lower() if words else ""
    kind = {"exec": "exec", "execute": "exec", "copy": "copy", "": "nocopy", "open": "open"}.get(head, "other")
    return Action(kind, code, tuple(words[1:]), block)


def _inline_actions(text: str) -> list[Action]:
    """Code spans (CommonMark backtick runs) directly followed by a ``{{marker}}``."""
    actions, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2  # an escaped backtick is a literal, not a span opener
            continue
        if c != "`":
            i += 1
            continue
        j = i
        while j < n and text[j] == "`":
            j += 1
        run = j - i
        # The closing run is exactly as long as the opening one.
        close = re.compile(r"(?<!`)" + "`" * run + r"(?!`)")
        m = close.search(text, j)
        if m is None:
            i = j  # no closer: the backticks are literal
            continue
        code = text[j:m.start()].replace("\n", " ")
        if len(code) >= 2 and code[0] == " " and code[-1] == " " and code.strip(" "):
            code = code[1:-1]
        i = m.end()
        marker = _MARKER.match(text, i)
        if marker:
            actions.append(_marker_action(marker.group(1), code, block=False))
            i = marker.end()
    return actions


def find_actions(markdown: str) -> list[Action]:
    """Every marked code span and fenced block of ``markdown``, in order.

    Never raises, whatever the input: an unclosed fence runs to the end of the
    text and is unmarked; an unclosed code span is literal text.
    """
    lines = markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    actions: list[Action] = []
    prose: list[str] = []
    i = 0
    while i < len(lines):
        if _PRE_OPEN.match(lines[i]):
            actions.extend(_inline_actions("\n".join(prose)))
            prose = []
            while i < len(lines) and not _PRE_CLOSE.search(lines[i]):
                i += 1
            i += 1
            continue
        opening = _FENCE_OPEN.match(lines[i])
        if opening is None or (opening.group(1)[0] == "`" and "`" in opening.group(2)):
            prose.append(lines[i])
            i += 1
            continue
        actions.extend(_inline_actions("\n".join(prose)))
        prose = []
        fence = opening.group(1)
        closing = re.compile(r"^[ \t]*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*"
                             r"(?:\{\{([^{}\n]*)\}\})?[ \t]*$")
        body: list[str] = []
        i += 1
        while i < len(lines):
            m = closing.match(lines[i])
            if m:
                if m.group(1) is not None:
                    code = "\n".join(line.rstrip() for line in body).strip("\n")
                    actions.append(_marker_action(m.group(1), code, block=True))
                break
            body.append(lines[i])
            i += 1
        i += 1
    actions.extend(_inline_actions("\n".join(prose)))
    return actions


def solution_commands(markdown: str) -> list[str]:
    """The ``{{exec}}``-marked code of ``markdown`` as solution entries (see the module
    docstring): one per span or block, ``\\x03`` first for an interrupt."""
    return [("\x03" if a.interrupt else "") + a.code
            for a in find_actions(markdown) if a.runnable and a.code.strip()]


# -- files ------------------------------------------------------------------------

class _Folder:
    """Reads the files a scenario names, refusing anything outside its folder."""

    def __init__(self, folder: Path):
        self.path = folder
        self.root = folder.resolve()

    def locate(self, field: str, ref: Any, *, base: str = "") -> Path:
        if not isinstance(ref, str) or not ref.strip():
            raise DefinitionError(field, f"must name a file in the scenario's folder, got {ref!r}")
        if os.path.isabs(ref) or ref.startswith("~"):
            raise DefinitionError(field, f"{ref!r} must be a path relative to the scenario's folder")
        path = self.path / base / ref
        try:
            resolved = path.resolve()
            if not resolved.is_relative_to(self.root):
                how = "leads out of" if ".." in Path(base, ref).parts else "is a symlink out of"
                raise DefinitionError(field, f"{ref!r} {how} the scenario's folder")
            if not path.exists():
                raise DefinitionError(field, f"the file {str(Path(base, ref))!r} does not exist")
            if not resolved.is_file():
                raise DefinitionError(field, f"{str(Path(base, ref))!r} is not a file")
        except (OSError, ValueError, RuntimeError) as e:  # a NUL byte, a name too long, a symlink loop
            raise DefinitionError(field, f"{ref!r} is not a usable file name ({e})") from None
        return resolved

    def text(self, field: str, ref: Any) -> str:
        path = self.locate(field, ref)
        try:
            text = read_capped(path, field, shown=str(ref))
        except UnicodeDecodeError as e:
            raise DefinitionError(field, f"{ref!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
        except OSError as e:
            raise DefinitionError(field, f"{ref!r} cannot be read: {e.strerror}") from None
        return text.replace("\r\n", "\n")


def _object(field: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DefinitionError(field, f"must be a JSON object, got {_json_type(value)}")
    return value


def _string(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise DefinitionError(field, f"must be a string, got {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _script(folder: _Folder, obj: dict[str, Any], where: str, keys: tuple[str, str],
            notes: list[str]) -> str | None:
    """The script named by a key or its Katacoda alias (the Killercoda key wins)."""
    main, alias = keys
    given = [k for k in keys if obj.get(k) not in (None, "")]
    if not given:
        return None
    if len(given) == 2:
        notes.append(f"{where} names both {main} and its Katacoda alias {alias}; {alias} is ignored.")
    return folder.text(f"{where}.{given[0]}", obj[given[0]])


def _note_unknown(obj: dict[str, Any], where: str, known: set[str], notes: list[str]) -> None:
    for key in obj:
        if key not in known:
            notes.append(f"{where}.{key} is not a key this loader knows; it is ignored.")


# -- the loader ---------------------------------------------------------------------

def load_scenario(folder: Path, default_id: str) -> Lab:
    """Read the Killercoda/Katacoda scenario in ``folder`` as a ``Lab`` with id ``default_id``.

    Raises ``DefinitionError(field, reason)`` naming the first thing wrong.
    """
    folder = Path(folder)
    files = _Folder(folder)
    index = folder / INDEX
    if not index.is_file():
        raise DefinitionError(INDEX, f"there is no {INDEX} in {folder}")
    try:
        data = json.loads(read_capped(index, INDEX, definition=True))
    except UnicodeDecodeError as e:
        raise DefinitionError(INDEX, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise DefinitionError(INDEX, f"not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except RecursionError:
        raise DefinitionError(INDEX, "not valid JSON: nested too deeply") from None
    top = _object(INDEX, data)
    notes: list[str] = []

    title = _string("title", top["title"]) if "title" in top else default_id
    description = _string("description", top.get("description", ""))
    if "details" not in top:
        raise DefinitionError("details", "missing: a scenario needs details.steps")
    details = _object("details", top["details"])

    backend = top.get("backend")
    if backend is not None:
        image = backend.get("imageid") if isinstance(backend, dict) else None
        notes.append(f"The backend image {image!r} is ignored: the lab runs in this server's shell, "
                     "so tools it provided (docker, kubectl, …) must be installed here."
                     if image else "The backend settings are ignored: the lab runs in this server's shell.")
    for key, note in _NOTED_TOP.items():
        if key in top:
            notes.append(note)
    _note_unknown(top, "(top level)", {"title", "description", "details", "backend", *_NOTED_TOP, *_SILENT_TOP},
                  notes)
    _note_unknown(details, "details", {"intro", "steps", "finish", "assets"}, notes)

    intro_text, setup, foreground = "", None, None
    if "intro" in details:
        intro = _object("details.intro", details["intro"])
        if intro.get("text") not in (None, ""):
            intro_text = files.text("details.intro.text", intro["text"])
        setup = _script(files, intro, "details.intro", _BACKGROUND, notes)
        foreground = _script(files, intro, "details.intro", _FOREGROUND, notes)
        if intro.get("credits"):
            notes.append("details.intro.credits is not shown.")
        _note_unknown(intro, "details.intro", {"text", "title", "credits", *_BACKGROUND, *_FOREGROUND}, notes)

    if "steps" not in details:
        raise DefinitionError("details.steps", "missing: a scenario needs at least one step")
    raw_steps = details["steps"]
    if not isinstance(raw_steps, list):
        raise DefinitionError("details.steps", f"must be an array of steps, got {_json_type(raw_steps)}")
    if not raw_steps:
        raise DefinitionError("details.steps", "is empty: a scenario needs at least one step")
    steps = tuple(_step(files, raw, i, notes) for i, raw in enumerate(raw_steps))

    finish_text = ""
    if "finish" in details:
        finish = _object("details.finish", details["finish"])
        if finish.get("text") not in (None, ""):
            finish_text = files.text("details.finish.text", finish["text"])
        for key in (*_BACKGROUND, *_FOREGROUND):
            if finish.get(key):
                files.locate(f"details.finish.{key}", finish[key])  # still must exist
                notes.append(f"details.finish.{key} is not run: a lab has no script after its last step.")
        _note_unknown(finish, "details.finish", {"text", "title", *_BACKGROUND, *_FOREGROUND}, notes)

    assets = _assets(files, details.get("assets"), notes) if "assets" in details else ()

    # A fresh folder per session, as Killercoda gives each learner a fresh machine.
    return Lab(id=default_id, title=title, description=description, steps=steps, setup=setup,
               foreground=foreground, assets=assets, scratch=True, intro=intro_text, finish=finish_text,
               source=str(folder), kind="killercoda", notes=tuple(notes))


def _step(files: _Folder, raw: Any, i: int, notes: list[str]) -> Step:
    where = f"details.steps[{i}]"
    obj = _object(where, raw)
    title = _string(f"{where}.title", obj["title"]) if "title" in obj else f"Step {i + 1}"
    text = files.text(f"{where}.text", obj["text"]) if obj.get("text") not in (None, "") else ""
    check = files.text(f"{where}.verify", obj["verify"]) if obj.get("verify") not in (None, "") else None
    hint = ""
    if obj.get("hint") not in (None, ""):
        hint = _hint(files, f"{where}.hint", obj["hint"])
    solution = solution_commands(text)
    elsewhere = sorted({f for a in find_actions(text) if a.runnable for f in a.flags
                        if re.fullmatch(r"(?i)(t|host)\d+", f) and f.upper() not in ("T1", "HOST1")})
    if elsewhere:
        notes.append(f"{where} runs commands in {', '.join(elsewhere)}; here they run in the lab's one terminal.")
    if obj.get("answer") not in (None, ""):
        answer = files.text(f"{where}.answer", obj["answer"])
        solution = solution_commands(answer) or solution
        block = f"<details><summary>Solution</summary>\n\n{answer.strip()}\n\n</details>\n"
        hint = f"{hint.rstrip()}\n\n{block}" if hint.strip() else block
    _note_unknown(obj, where, {"title", "text", "verify", "hint", "answer", *_BACKGROUND, *_FOREGROUND}, notes)
    return Step(title=title, text=text, check=check, hint=hint, solution=tuple(solution),
                setup=_script(files, obj, where, _BACKGROUND, notes),
                foreground=_script(files, obj, where, _FOREGROUND, notes))


def _hint(files: _Folder, field: str, value: Any) -> str:
    """A hint is a Markdown file when it names one (or looks like a file name), else the text itself."""
    value = _string(field, value)
    looks_like_file = "\n" not in value and re.fullmatch(r"[\w./-]+\.(md|markdown|txt)", value.strip())
    if looks_like_file or (files.path / value).is_file():
        return files.text(field, value.strip())
    return value


_CHMOD = re.compile(r"[0-7]{3,4}|[ugoa]*[-+=][rwxXst]*(,[ugoa]*[-+=][rwxXst]*)*")


def _assets(files: _Folder, raw: Any, notes: list[str]) -> tuple[Asset, ...]:
    hosts = _object("details.assets", raw)
    out: list[Asset] = []
    for host, items in hosts.items():
        where = f"details.assets.{host}"
        if host != "host01":
            notes.append(f"Assets for {host} are ignored: a lab here has one host, host01.")
            continue
        if not isinstance(items, list):
            raise DefinitionError(where, f"must be an array of assets, got {_json_type(items)}")
        for j, item in enumerate(items):
            out.extend(_asset(files, _object(f"{where}[{j}]", item), f"{where}[{j}]", notes))
    return tuple(out)


def _asset(files: _Folder, item: dict[str, Any], where: str, notes: list[str]) -> list[Asset]:
    pattern = _string(f"{where}.file", item.get("file")) if "file" in item else None
    if not pattern:
        raise DefinitionError(f"{where}.file", "missing: an asset names a file under assets/")
    target = _string(f"{where}.target", item["target"]) if "target" in item else ""
    if not target:
        raise DefinitionError(f"{where}.target", "missing: an asset names the folder it goes to")
    mode = _string(f"{where}.chmod", item.get("chmod", ""))
    if mode and not _CHMOD.fullmatch(mode):
        raise DefinitionError(f"{where}.chmod", f"{mode!r} is not a chmod mode such as +x or 0755")
    _note_unknown(item, where, {"file", "target", "chmod"}, notes)
    if not (target.startswith("/") or target.startswith("~")):
        raise DefinitionError(f"{where}.target", f"{target!r} must be absolute or start with ~")
    # Killercoda's home and working folder are both /root; here the session's
    # folder plays that part (a relative target is taken in it).
    for home in ("~", "/root"):
        if target == home or target.startswith(home + "/"):
            target = "." + target[len(home):]
    target = target.rstrip("/") + "/"

    pattern = pattern[2:] if pattern.startswith("./") else pattern
    if not _MAGIC.search(pattern):
        path = files.locate(f"{where}.file", pattern, base="assets")
        return [Asset(source=str(path), target=target, mode=mode)]
    if os.path.isabs(pattern) or ".." in Path(pattern).parts:
        raise DefinitionError(f"{where}.file", f"{pattern!r} leads out of the scenario's assets folder")
    base = files.path / "assets"
    # The folders before the first wildcard are dropped; those after it are kept
    # under the target, so a `conf/**/*.yaml` asset keeps its tree.
    fixed = Path(*[p for p in Path(pattern).parts[:_first_magic(pattern)]])
    try:
        matches = sorted(p for p in base.glob(pattern) if p.is_file() or p.is_symlink())
    except (OSError, ValueError) as e:  # e.g. "**" inside a name
        raise DefinitionError(f"{where}.file", f"{pattern!r} is not a usable pattern ({e})") from None
    if not matches:
        raise DefinitionError(f"{where}.file", f"{pattern!r} matches no file under assets/")
    out = []
    for match in matches:
        rel = match.relative_to(base)
        path = files.locate(f"{where}.file", str(rel), base="assets")
        sub = rel.parent.relative_to(fixed) if rel.parent.is_relative_to(fixed) else Path()
        out.append(Asset(source=str(path), target=target + ("" if sub == Path() else f"{sub}/"), mode=mode))
    return out


def _first_magic(pattern: str) -> int:
    parts = Path(pattern).parts
    return next((k for k, p in enumerate(parts) if _MAGIC.search(p)), len(parts))
