"""Killercoda and Katacoda scenarios, read as they are.

A scenario is a folder with an ``index.json`` (Killercoda's format, or the older
Katacoda spellings) and the Markdown and shell files it names. ``load_scenario``
turns one into a ``Lab`` without any conversion step by the author:

============================================  ==========================================
index.json                                    Lab
============================================  ==========================================
``title``, ``description``                    ``title``, ``description``
``details.intro.text``                        ``intro`` (Markdown)
``details.intro.background`` / ``courseData`` ``background`` (hidden, beside the shell)
``details.intro.foreground`` / ``code``       ``foreground`` (typed into the terminal)
``details.steps[i].title`` / ``text``         ``Step.title`` / ``Step.text``
``details.steps[i].verify``                   ``Step.check`` (exit 0: done)
``details.steps[i].background`` / courseData  ``Step.background`` (on entering the step)
``details.steps[i].foreground`` / ``code``    ``Step.foreground``
``details.steps[i].hint``                     ``Step.hint`` (a file, or inline text)
``details.steps[i].answer`` (Katacoda)        appended to ``Step.hint`` in a
                                              ``<details>`` Solution block; its
                                              ``{{exec}}`` blocks become the solution
``{{exec}}`` blocks in the step text          ``Step.solution``, one entry per block
``details.finish.text``                       ``finish``
``details.assets.host01``                     ``assets``
``backend.imageid``, what scripts run         ``needs`` (see ``scenario_needs``)
============================================  ==========================================

Decisions, for authors and for the code that runs a ``Lab``:

- **Markers stay in the text.** ``Step.text`` is the Markdown as the author wrote it
  (byte-order mark dropped, CRLF turned into LF), markers included: the panel renders
  `` `cmd`{{exec}} `` as a run button and ``{{copy}}`` as a copy button, in either
  spelling (Killercoda's ``exec``, Katacoda's ``execute``).
- **Background scripts run beside the shell**, as on Killercoda: the intro's when
  the session starts, a step's when the learner enters it, both in the session's
  enclosure (as checks are) and waited for by nothing, so the prompt comes at once,
  the foreground is typed, and a foreground that waits for a marker the background
  writes (or the other way round) works. Failure or timeout (the setup timeout) is a
  note on the session, not a failed session (``LabSession``).
- **Placeholders.** Port links (``{{TRAFFIC_HOST1_8080}}``, Katacoda's
  ``https://[[HOST_SUBDOMAIN]]-8080-[[KATACODA_HOST]].environments.katacoda.com``)
  and ``[[HOST_IP]]`` stand for this machine: in scripts and in the code of the
  Markdown they become ``http://localhost:8080`` and ``127.0.0.1`` here, as the
  lab's shell reaches them; in prose they stay for the catalog to make links for the
  learner's browser (``hosting.Here``). Other hosts' (``HOST2``) are this machine's
  too, with a note; Killercoda's port chooser (``{{TRAFFIC_SELECTOR}}``) and
  placeholders this loader does not know are left with a note.
- **Fenced blocks** lose their opening fence's indentation (up to that many blanks
  per line, as CommonMark does): a block in a list item is the code as meant, and a
  here-document's ``EOF`` ends it.
- **Solutions.** Each code span or fenced block followed by ``{{exec}}``,
  ``{{exec interrupt}}``, ``{{execute}}`` or ``{{execute T2}}``/``HOST1`` (one
  terminal here) is one solution entry, in the order of the text. A fenced block is
  one entry with its lines joined by newlines, typed as one paste, so a here-document
  or a multi-line loop stays whole. An ``interrupt`` entry starts with ``\\x03``:
  whoever types it sends Ctrl-C first, lets the program end, then types the rest;
  `` `^C`{{execute ctrl-seq}} `` is the entry ``\\x03`` alone (Ctrl-C, nothing
  typed after it). ``{{copy}}``, ``{{}}``, ``{{open}}``, other keystrokes
  (``ctrl-seq``) and half commands (``no-newline``) are not solutions; the panel
  sends them as keys, without Enter. Examples inside ``<pre>`` HTML
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
  docker or kubectl must be adapted, or run in the ``sandbox`` containment mode
  (root in a throwaway overlay of the machine, the folder at ``/root``). Other
  absolute targets stay as written. What a scenario needs of the machine is its
  ``needs``: the catalog says which of them this server does not meet.
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
  exist, be a regular file, and be named inside its folder (no ``..`` out of it); a
  symlink may lead elsewhere in the scenario's repository (``repository``: the
  nearest folder with a ``.git``, no higher than the search path entry), where
  public scenarios keep shared material. An asset missing from ``assets/`` that
  nothing in the scenario names (a platform's own helper) is left out with a note,
  as is a glob that matches nothing; a trailing ``**`` matches every file below.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from .files import read_text as read_capped
from .model import NEEDS, Asset, DefinitionError, Lab, Step

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

    @property
    def keystroke(self) -> str | None:
        """For ``{{execute ctrl-seq}}``: the control character its code names
        (``^C``, ``ctrl+c``), else the code itself; None for other markers."""
        if "ctrl-seq" not in (f.lower() for f in self.flags):
            return None
        m = re.fullmatch(r"\s*(?:\^|ctrl[+-])([a-z@\[\\\]^_])\s*", self.code, re.IGNORECASE)
        return chr(ord(m[1].upper()) & 0x1F) if m else self.code


_MARKER = re.compile(r"\{\{([^{}\n]*)\}\}")
_FENCE_OPEN = re.compile(r"^([ \t]*)(`{3,}|~{3,})(.*)$")
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


def _split_blocks(markdown: str) -> list[tuple[str, str, Any]]:
    """``markdown`` cut into pieces: ``("prose", text, "")``, ``("pre", text, "")`` (a
    ``<pre>`` HTML block, whole) and ``("fence", body, marker)`` for a fenced block
    (``body`` its content without the fence's own indentation: up to that many
    leading blanks are taken off each line, as CommonMark does, so that a block
    inside a list item is the code as meant and a here-document's ``EOF`` ends it;
    ``marker`` the ``{{…}}`` after its closing fence, "" without one, None when
    unmarked). The scanner behind ``find_actions`` and ``map_code``.
    """
    lines = markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    pieces: list[tuple[str, str, Any]] = []
    prose: list[str] = []

    def flush() -> None:
        if prose:
            pieces.append(("prose", "\n".join(prose), None))
            prose.clear()

    i = 0
    while i < len(lines):
        if _PRE_OPEN.match(lines[i]):
            flush()
            start = i
            while i < len(lines) and not _PRE_CLOSE.search(lines[i]):
                i += 1
            pieces.append(("pre", "\n".join(lines[start:i + 1]), None))
            i += 1
            continue
        opening = _FENCE_OPEN.match(lines[i])
        if opening is None or (opening.group(2)[0] == "`" and "`" in opening.group(3)):
            prose.append(lines[i])
            i += 1
            continue
        flush()
        indent, fence = len(opening.group(1)), opening.group(2)
        closing = re.compile(r"^[ \t]*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*"
                             r"(?:\{\{([^{}\n]*)\}\})?[ \t]*$")
        body: list[str] = []
        marker, head, start, closed = None, lines[i], i + 1, None
        i += 1
        while i < len(lines):
            m = closing.match(lines[i])
            if m:
                marker, closed = m.group(1), lines[i]
                break
            line = lines[i]
            strip = len(line) - len(line.lstrip(" \t"))
            body.append(line[min(strip, indent):])
            i += 1
        pieces.append(("fence", "\n".join(body), (marker, head, lines[start:i], closed)))
        i += 1
    flush()
    return pieces


def find_actions(markdown: str) -> list[Action]:
    """Every marked code span and fenced block of ``markdown``, in order.

    Never raises, whatever the input: an unclosed fence runs to the end of the
    text and is unmarked; an unclosed code span is literal text.
    """
    actions: list[Action] = []
    for kind, text, extra in _split_blocks(markdown):
        if kind == "prose":
            actions.extend(_inline_actions(text))
        elif kind == "fence" and extra[0] is not None:
            code = "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")
            actions.append(_marker_action(extra[0], code, block=True))
    return actions


def map_code(markdown: str, change: Callable[[str], str]) -> str:
    """``markdown`` with ``change`` applied to its code (code spans, fenced blocks'
    content, ``<pre>`` blocks) and its prose left as written. Line ends become LF."""
    out = []
    for kind, text, extra in _split_blocks(markdown):
        if kind == "prose":
            out.append(_map_spans(text, change))
        elif kind == "pre":
            out.append(change(text))
        else:
            _marker, head, raw, closed = extra
            lines = [head, *(change(line) for line in raw)]
            if closed is not None:
                lines.append(closed)
            out.append("\n".join(lines))
    return "\n".join(out)


def _map_spans(text: str, change: Callable[[str], str]) -> str:
    """``text`` (prose) with ``change`` applied to the content of its code spans."""
    out, i, n, last = [], 0, len(text), 0
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c != "`":
            i += 1
            continue
        j = i
        while j < n and text[j] == "`":
            j += 1
        m = re.compile(r"(?<!`)" + "`" * (j - i) + r"(?!`)").search(text, j)
        if m is None:
            i = j
            continue
        out += [text[last:j], change(text[j:m.start()])]
        last = i = m.start()
        i = m.end()
    out.append(text[last:])
    return "".join(out)


def solution_commands(markdown: str) -> list[str]:
    """The ``{{exec}}``-marked code of ``markdown`` as solution entries (see the module
    docstring): one per span or block, ``\\x03`` first for an interrupt, and ``\\x03``
    alone for a ``^C`` keystroke (``{{execute ctrl-seq}}``)."""
    out = []
    for a in find_actions(markdown):
        if a.runnable and a.code.strip():
            out.append(("\x03" if a.interrupt else "") + a.code)
        elif a.kind == "exec" and a.keystroke == "\x03":
            out.append("\x03")
    return out


# -- placeholders -------------------------------------------------------------------

#: A link to a port of the lab's machine: Killercoda's ``{{TRAFFIC_HOST1_8080}}``, or
#: Katacoda's ``https://[[HOST_SUBDOMAIN]]-8080-[[KATACODA_HOST]].environments.katacoda.com``
#: (whose scheme and a route's host name in front are ``_URL_HEAD``, found backwards:
#: a regex that begins with them tries every word of a text, 10 times slower);
#: ``rest`` is the path after it.
PORT_URL = re.compile(
    r"(?:\{\{TRAFFIC_HOST(?P<host>\d+)_(?P<port>\d{1,5})\}\}"
    r"|\[\[HOST(?P<khost>\d*)_SUBDOMAIN\]\]-(?P<kport>\d{1,5})-"
    r"\[\[KATACODA_HOST\]\](?:\.environments\.katacoda\.com|\.\[\[KATACODA_DOMAIN\]\])?)"
    r"(?P<rest>/[^\s()<>\"'`\[\]]*)?")
_URL_HEAD = re.compile(r"(?:https?://)?(?:[A-Za-z0-9-]+\.)*\Z")
#: Katacoda's address of a host: this machine's.
HOST_IP = re.compile(r"\[\[HOST(\d*)_IP\]\]")
#: Any placeholder of either platform: what is left after the ones above is unknown here.
_PLACEHOLDER = re.compile(r"\{\{[A-Z][A-Z0-9_]*\}\}|\[\[[A-Z][A-Z0-9_]*\]\]")
#: Killercoda's page for choosing a port: nothing here stands for it.
TRAFFIC_SELECTOR = "{{TRAFFIC_SELECTOR}}"


def port_links(text: str, url: Callable[[int], str], *, wrap: bool = False) -> str:
    """``text`` with each port placeholder made ``url(port)`` followed by its path
    (a ``url`` ending in ``/`` takes the path's own ``/`` off), and ``[[HOST_IP]]``
    made 127.0.0.1. With ``wrap``, a placeholder standing on its own in prose
    (not a link's target or an HTML attribute) becomes a Markdown link to itself:
    CommonMark links only absolute URLs by themselves."""
    out: list[str] = []
    last = 0
    for m in PORT_URL.finditer(text):
        number = int(m["port"] or m["kport"])
        if not 0 < number < 65536:
            continue
        start = m.start()
        if m["kport"]:  # Katacoda's scheme and route name in front belong to the address
            head = _URL_HEAD.search(text, last, start)
            start = head.start() if head else start
        before = text[last:start]
        rest = m["rest"] or ""
        trail = len(rest) - len(rest.rstrip(".,;:!?"))
        rest, after = rest[:len(rest) - trail], rest[len(rest) - trail:]
        link = url(number)
        if link.endswith("/") and rest.startswith("/"):
            rest = rest[1:]
        link += rest
        if wrap and (start == 0 or text[start - 1] not in "([\"'=<`"):
            link = f"[{link}]({link})"
        out += [before, link, after]
        last = m.end()
    out.append(text[last:])
    return HOST_IP.sub("127.0.0.1", "".join(out))


def localhost(port: int) -> str:
    """A port of the lab's machine as its own shell reaches it."""
    return f"http://localhost:{port}"


def _placeholder_notes(texts: list[str], notes: list[str]) -> None:
    """Notes on the placeholders of ``texts`` (as written) that are not made this
    server's: a second host's, Killercoda's port chooser, unknown ones."""
    others = sorted({f"HOST{h}" for t in texts for m in PORT_URL.finditer(t)
                     for h in [m["host"] or m["khost"]] if h not in ("", "1")}
                    | {f"HOST{m[1]}" for t in texts for m in HOST_IP.finditer(t) if m[1] not in ("", "1")})
    if others:
        notes.append(f"The scenario names {', '.join(others)}: a lab here has one machine, whose ports and "
                     "address stand for every host's.")
    left = [p for t in texts for p in _PLACEHOLDER.findall(HOST_IP.sub("", PORT_URL.sub("", t)))]
    if TRAFFIC_SELECTOR in left:
        notes.append(f"{TRAFFIC_SELECTOR} (Killercoda's page for choosing a port) has no counterpart here: "
                     "its link leads nowhere.")
    unknown = sorted(set(left) - {TRAFFIC_SELECTOR})
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        notes.append(f"Placeholders this server does not know are left as written: {shown}.")


# -- needs --------------------------------------------------------------------------

#: What a scenario's commands need, by what they run (first match per need).
#: Heuristics over its scripts and the code of its text; see ``scenario_needs``.
_NEED_COMMANDS = {
    "kubernetes": re.compile(r"\b(kubectl|kubeadm|helm|minikube|k3s|k3d|kind\s+create|crictl)\b"
                             r"|\boc\s+(get|apply|create|new-app|login|project|rsync|expose|rollout)\b"),
    "docker": re.compile(r"\b(docker|docker-compose|podman|nerdctl)\b"),
    "systemd": re.compile(r"\b(systemctl|journalctl)\b"),
    "internet": re.compile(
        # A package from the repository's mirrors; not a local file (``apt-get install ./x.deb``).
        r"\b(apt(-get)?|yum|dnf|zypper)\s+(-\S+\s+)*(install|update|upgrade)\b(?!(\s+-\S+)*\s+\.{0,2}/)"
        r"|\bapk\s+add\b"
        r"|\b(pip3?|pipx|npm|yarn|gem|cargo|go)\s+(install|add|get)\b|\bgit\s+clone\b"
        r"|\b(curl|wget)\b[^\n]*\bhttps?://(?!localhost\b|127\.|0\.0\.0\.0|\[::1\])"),
    # Writes where only root may write (the home, /root, is the session's folder here,
    # but not by that name outside the sandbox), or what only root does.
    "root": re.compile(
        r"(>>?|\btee\s+(-a\s+)?|\b(cp|mv|install|ln|touch|mkdir|rm|chmod|sed\s+-i\S*)\s[^\n;|&]*?)\s*"
        r"/(etc|usr|opt|var|boot|root|lib|lib64|bin|sbin|srv|ks)/"
        r"|\b(useradd|adduser|groupadd|usermod|userdel|chown|mount|umount|sysctl|modprobe|sudo|dpkg\s+-i)\b"
        r"|\b(apt(-get)?|yum|dnf|zypper)\s+(-\S+\s+)*install\b|\bapk\s+add\b"),
}


def image_needs(image: str) -> set[str]:
    """What Killercoda's ``backend.imageid`` provides that a plain shell does not."""
    image = image.lower()
    needs = set()
    if re.search(r"kubernetes|k3s|k8s|openshift|kind|minikube", image):
        needs.add("kubernetes")
    if re.search(r"docker|podman", image):
        needs.add("docker")
    return needs


def scenario_needs(image: str, code: list[str], targets: list[str]) -> tuple[str, ...]:
    """The needs (``model.NEEDS``) of a scenario: its image's, what its ``code``
    (scripts, and the code of its Markdown) runs, and root for asset ``targets``
    outside the home and ``/tmp``."""
    found = image_needs(image)
    for need, pattern in _NEED_COMMANDS.items():
        if any(pattern.search(text) for text in code):
            found.add(need)
    if any(t.startswith("/") and not re.match(r"/(tmp|var/tmp)(/|$)", t) for t in targets):
        found.add("root")
    return tuple(n for n in NEEDS if n in found)


# -- files ------------------------------------------------------------------------

class _Folder:
    """Reads the files a scenario names, refusing anything outside its folder."""

    def __init__(self, folder: Path, within: Path | None = None):
        self.path = folder
        self.root = folder.resolve()
        #: Where symlinks may lead: the scenario's repository (see ``repository``).
        self.within = within.resolve() if within is not None else self.root

    def locate(self, field: str, ref: Any, *, base: str = "") -> Path:
        if not isinstance(ref, str) or not ref.strip():
            raise DefinitionError(field, f"must name a file in the scenario's folder, got {ref!r}")
        if os.path.isabs(ref) or ref.startswith("~"):
            raise DefinitionError(field, f"{ref!r} must be a path relative to the scenario's folder")
        path = self.path / base / ref
        try:
            if os.path.normpath(Path(base, ref)).split(os.sep)[0] == "..":
                raise DefinitionError(field, f"{ref!r} leads out of the scenario's folder")
            resolved = path.resolve()
            if not resolved.is_relative_to(self.within):
                where = "folder" if self.within == self.root else "repository"
                raise DefinitionError(field, f"{ref!r} is a symlink out of the scenario's {where}")
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

def repository(folder: Path, scanned: Path | None) -> Path:
    """Where a scenario's symlinks may lead: the nearest folder at or above ``folder``
    with a ``.git`` (the repository it was cloned in), looked for no higher than
    ``scanned`` (the search path entry it was found under), else ``scanned`` itself;
    ``folder`` alone when it is not under ``scanned`` or there is none."""
    folder = folder.resolve()
    if scanned is None:
        return folder
    top = scanned.resolve()
    if not folder.is_relative_to(top):
        return folder
    for parent in (folder, *folder.parents):
        if (parent / ".git").exists():
            return parent
        if parent == top:
            break
    return top


def load_scenario(folder: Path, default_id: str, scanned: Path | None = None) -> Lab:
    """Read the Killercoda/Katacoda scenario in ``folder`` as a ``Lab`` with id ``default_id``;
    ``scanned``: the search path entry it was found under (see ``repository``).

    Raises ``DefinitionError(field, reason)`` naming the first thing wrong.
    """
    folder = Path(folder)
    files = _Folder(folder, repository(folder, scanned))
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
    image = None
    if backend is not None:
        image = backend.get("imageid") if isinstance(backend, dict) else None
        notes.append(f"The backend image {image!r} is ignored: the lab runs in this server's shell, "
                     "so what it provided (its needs: docker, a cluster, root…) must be there."
                     if image else "The backend settings are ignored: the lab runs in this server's shell.")
    for key, note in _NOTED_TOP.items():
        if key in top:
            notes.append(note)
    _note_unknown(top, "(top level)", {"title", "description", "details", "backend", *_NOTED_TOP, *_SILENT_TOP},
                  notes)
    _note_unknown(details, "details", {"intro", "steps", "finish", "assets"}, notes)

    intro_text, background, foreground = "", None, None
    if "intro" in details:
        intro = _object("details.intro", details["intro"])
        if intro.get("text") not in (None, ""):
            intro_text = files.text("details.intro.text", intro["text"])
        background = _script(files, intro, "details.intro", _BACKGROUND, notes)
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

    scripts = [t for t in (background, foreground) if t] + [
        t for step in steps for t in (step.check, step.background, step.foreground) if t]
    texts = [intro_text, finish_text, *(t for step in steps for t in (step.text, step.hint))]
    assets = _assets(files, details.get("assets"), notes, "\n".join(scripts + texts)) if "assets" in details else ()
    _placeholder_notes(scripts + texts, notes)

    # Port placeholders in code and scripts are for the lab's shell (localhost); in
    # prose they are for the learner's browser, made links by the catalog
    # (``hosting.Here``), which knows the server's address.
    def shell(script: str | None) -> str | None:
        return None if script is None else port_links(script, localhost)

    def code_here(code: str) -> str:
        return port_links(code, localhost)

    def markdown(text: str) -> str:
        return map_code(text, code_here) if text and ("{{" in text or "[[" in text) else text

    steps = tuple(replace(step, text=markdown(step.text), hint=markdown(step.hint), check=shell(step.check),
                          background=shell(step.background), foreground=shell(step.foreground),
                          solution=tuple(port_links(c, localhost) for c in step.solution)) for step in steps)
    intro_text, finish_text = markdown(intro_text), markdown(finish_text)
    prose = [intro_text, finish_text, *(t for step in steps for t in (step.text, step.hint))]
    code = [*scripts, *(c for t in texts for c in _code_of(t))]
    needs = scenario_needs(image if isinstance(image, str) else "", [port_links(c, localhost) for c in code],
                           [a.target for a in assets])

    # A fresh folder per session, as Killercoda gives each learner a fresh machine.
    return Lab(id=default_id, title=title, description=description, steps=steps,
               background=shell(background), foreground=shell(foreground), assets=assets, scratch=True,
               intro=intro_text, finish=finish_text, source=str(folder), kind="killercoda", notes=tuple(notes),
               needs=needs, links=any(PORT_URL.search(t) or HOST_IP.search(t) for t in prose))


def _code_of(markdown: str) -> list[str]:
    """The code of ``markdown``: its code spans and blocks, marked or not."""
    found: list[str] = []

    def take(code: str) -> str:
        found.append(code)
        return code

    map_code(markdown, take)
    return found


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
                background=_script(files, obj, where, _BACKGROUND, notes),
                foreground=_script(files, obj, where, _FOREGROUND, notes))


def _hint(files: _Folder, field: str, value: Any) -> str:
    """A hint is a Markdown file when it names one (or looks like a file name), else the text itself."""
    value = _string(field, value)
    looks_like_file = "\n" not in value and re.fullmatch(r"[\w./-]+\.(md|markdown|txt)", value.strip())
    if looks_like_file or (files.path / value).is_file():
        return files.text(field, value.strip())
    return value


_CHMOD = re.compile(r"[0-7]{3,4}|[ugoa]*[-+=][rwxXst]*(,[ugoa]*[-+=][rwxXst]*)*")


def _assets(files: _Folder, raw: Any, notes: list[str], used: str) -> tuple[Asset, ...]:
    """The assets of host01; ``used``: the scenario's scripts and texts, where a
    missing asset's name would appear if anything used it."""
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
            out.extend(_asset(files, _object(f"{where}[{j}]", item), f"{where}[{j}]", notes, used))
    return tuple(out)


def _asset(files: _Folder, item: dict[str, Any], where: str, notes: list[str], used: str) -> list[Asset]:
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
        # A file missing from assets/ that no script or text names (a platform's own
        # helper, such as Killercoda's k8s.sh) is left out with a note; one that
        # something names is an error, as the lab would not work without it.
        name = os.path.basename(pattern.rstrip("/"))
        with contextlib.suppress(OSError, ValueError):
            inside = os.path.normpath(pattern).split(os.sep)[0] != ".." and not os.path.isabs(pattern)
            if inside and not os.path.lexists(files.path / "assets" / pattern) and name and name not in used:
                notes.append(f"{where}.file {pattern!r} is missing from assets/ and nothing in the scenario "
                             "names it; it is left out.")
                return []
        path = files.locate(f"{where}.file", pattern, base="assets")
        return [Asset(source=str(path), target=target, mode=mode)]
    if os.path.isabs(pattern) or ".." in Path(pattern).parts:
        raise DefinitionError(f"{where}.file", f"{pattern!r} leads out of the scenario's assets folder")
    base = files.path / "assets"
    # The folders before the first wildcard are dropped; those after it are kept
    # under the target, so a `conf/**/*.yaml` asset keeps its tree.
    fixed = Path(*[p for p in Path(pattern).parts[:_first_magic(pattern)]])
    # A trailing ** means every file below (Killercoda's glob); Python 3.11's matches
    # only folders with it.
    search = f"{pattern}/*" if Path(pattern).name == "**" else pattern
    try:
        matches = sorted(p for p in base.glob(search) if p.is_file() or p.is_symlink())
    except (OSError, ValueError) as e:  # e.g. "**" inside a name
        raise DefinitionError(f"{where}.file", f"{pattern!r} is not a usable pattern ({e})") from None
    if not matches:
        notes.append(f"{where}.file {pattern!r} matches no file under assets/; nothing is copied for it.")
        return []
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
