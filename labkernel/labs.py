"""Lab definitions: what a session runs, and the catalog clients choose from.

For now there is one lab, ``shell``: the user's shell in the server's root
directory. Lab definitions with steps and checks plug in behind ``LabCatalog``:
the manager only ever calls ``get`` and ``list``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import LabNotFound


@dataclass(frozen=True)
class Lab:
    """A lab a session can be started from."""

    id: str
    title: str
    description: str = ""
    steps: tuple[Any, ...] = ()
    #: The program to run; empty means the manager's shell command.
    argv: tuple[str, ...] = ()
    #: Extra environment for the session, on top of the server's.
    env: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The lab's entry in ``GET /api/labs``."""
        return {"id": self.id, "title": self.title, "description": self.description,
                "steps": len(self.steps)}


SHELL = Lab(
    id="shell",
    title="Shell",
    description="A plain shell in the server's working directory.",
)


class LabCatalog:
    """The labs this server offers, looked up by id."""

    def __init__(self, labs: list[Lab] | None = None):
        self._labs = {lab.id: lab for lab in (labs if labs is not None else [SHELL])}

    def get(self, lab_id: str) -> Lab:
        try:
            return self._labs[lab_id]
        except KeyError:
            known = ", ".join(sorted(self._labs)) or "none"
            raise LabNotFound(f"There is no lab {lab_id!r}; the labs here are: {known}.") from None

    def list(self) -> list[Lab]:
        return list(self._labs.values())
