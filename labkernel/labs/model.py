"""The data model of lab definitions: what a session runs.

A ``Lab`` is the parsed, validated form of a definition, whatever its source: the
built-in ``shell`` lab, a folder with a ``lab.toml``, or a Killercoda/Katacoda
scenario (a folder with an ``index.json``). Loaders turn files into ``Lab``s; the
catalog (``catalog.LabCatalog``) holds them.

Scripts (setup, foreground, checks) are kept as their text, read when the
definition is loaded, so that a session runs what the catalog showed even if the
file changes under it; paths in a definition are relative to its folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hosting import Here

#: What a lab may need of the machine beyond a plain shell, in the order shown.
NEEDS = ("kubernetes", "docker", "systemd", "internet", "root")


@dataclass(frozen=True)
class Step:
    """One step of a lab: instructions, and how to tell that the learner did it."""

    title: str
    #: Markdown shown to the learner.
    text: str = ""
    #: A shell script run apart from the terminal, in the lab's env and workdir:
    #: exit 0 means the step is done; its output is the message. None: no check.
    check: str | None = None
    #: Markdown: a nudge without giving the answer away.
    hint: str = ""
    #: Commands that do the step, typed into the terminal as a learner would.
    solution: tuple[str, ...] = ()
    #: A hidden script run when the learner enters the step, before the step's
    #: foreground is typed (it holds them back); its output is logged, not shown.
    setup: str | None = None
    #: A hidden script started when the learner enters the step and run beside the
    #: terminal, waited for by nothing (Killercoda's ``background``); its failure or
    #: timeout is a note on the session, never a failed step.
    background: str | None = None
    #: A script typed into the terminal when the learner enters the step
    #: (Killercoda's ``foreground``).
    foreground: str | None = None

    def summary(self, here: Here | None = None) -> dict[str, Any]:
        """The step's entry in the catalog (``GET /api/labs``); with ``here``, its
        port placeholders made this server's links (see ``hosting``)."""
        text, hint = (self.text, self.hint) if here is None else (here.links(self.text), here.links(self.hint))
        return {"title": self.title, "text": text, "hint": hint,
                "solution": list(self.solution), "hasCheck": self.check is not None}


@dataclass(frozen=True)
class Asset:
    """A file copied into the session's filesystem before it starts (Killercoda assets)."""

    #: Absolute path of the file in the lab's folder (already checked to be inside it).
    source: str
    #: Where it goes: an absolute path, or one starting with ``~`` for the session's home.
    target: str
    #: A chmod mode string such as ``+x`` or ``0755``; empty: leave as copied.
    mode: str = ""


@dataclass(frozen=True)
class EnvVar:
    """One variable of a lab's environment."""

    name: str
    #: The value; ``${NAME}`` takes NAME from the server's environment when a
    #: session starts.
    value: str
    #: A secret's value never appears in an API answer, a log line or a check
    #: message: it is masked wherever it would.
    secret: bool = False


@dataclass(frozen=True)
class Lab:
    """A lab a session can be started from."""

    id: str
    title: str
    description: str = ""
    steps: tuple[Step, ...] = ()
    #: The program to run; empty means the manager's shell command.
    argv: tuple[str, ...] = ()
    #: Extra environment for the session, on top of the server's (less its credentials).
    env: tuple[EnvVar, ...] = ()
    #: Where the session starts: a path under the server's root, relative to it;
    #: "" is the root itself. Ignored when ``scratch`` is set.
    workdir: str = ""
    #: A fresh empty folder per session, removed with it.
    scratch: bool = False
    #: A hidden script that runs before the learner gets the prompt; if it fails,
    #: the session is ``failed`` and its output says why.
    setup: str | None = None
    #: A hidden script started with the session and run beside its terminal, waited
    #: for by nothing (Killercoda's intro ``background``): the prompt comes at once,
    #: and its failure or timeout is a note on the session, not a failed session.
    background: str | None = None
    #: A script typed into the terminal once the prompt is there.
    foreground: str | None = None
    #: Files copied in before setup runs.
    assets: tuple[Asset, ...] = ()
    #: Seconds a session may run / may stay idle; None: the manager's default.
    lifetime: float | None = None
    idle_timeout: float | None = None
    #: Sessions kept started (setup done) for an instant start; 0: none.
    pool: int = 0
    #: Markdown shown before the first step and after the last.
    intro: str = ""
    finish: str = ""
    #: The folder the lab was read from ("" for built-in labs).
    source: str = ""
    #: "builtin", "lab.toml" or "killercoda".
    kind: str = "builtin"
    #: What a loader ignored or adapted, one sentence each (e.g. an unknown key).
    notes: tuple[str, ...] = ()
    #: What the lab needs of the machine beyond a plain shell, a subset of ``NEEDS``
    #: in that order: declared (lab.toml's ``needs``) or found in its scripts and
    #: image (Killercoda).
    needs: tuple[str, ...] = ()
    #: Whether its Markdown holds port placeholders (``{{TRAFFIC_HOST1_80}}``) for
    #: the catalog to make this server's links; only such labs pay for it.
    links: bool = False

    def summary(self, here: Here | None = None) -> dict[str, Any]:
        """The lab's entry in ``GET /api/labs``; with ``here`` (what this server
        offers), links made for it and the needs it does not meet.

        ``steps`` stays the number of steps, as in the contract's first version
        (existing clients show it); ``stepList`` carries the steps themselves.
        """
        links = here if here is not None and self.links else None
        intro, finish = (self.intro, self.finish) if links is None else (links.links(self.intro),
                                                                         links.links(self.finish))
        return {"id": self.id, "title": self.title, "description": self.description,
                "steps": len(self.steps), "stepList": [s.summary(links) for s in self.steps],
                "intro": intro, "finish": finish, "notes": list(self.notes), "needs": list(self.needs),
                "unmetNeeds": [] if here is None else here.unmet(self.needs)}


SHELL = Lab(
    id="shell",
    title="Shell",
    description="A plain shell in the server's working directory.",
)


class DefinitionError(Exception):
    """A definition that cannot be loaded: the field at fault and why, for an author."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class LabProblem:
    """An invalid definition: which file, which field, and why. It never breaks the
    rest of the catalog; it is logged and listed in ``GET /api/labs``'s ``errors``."""

    path: str
    field: str
    reason: str
    lab_id: str = ""

    def model(self) -> dict[str, Any]:
        return {"path": self.path, "field": self.field, "reason": self.reason, "labId": self.lab_id}
