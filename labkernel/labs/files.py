"""Reading a lab's files: at most a cap, never more, and a byte-order mark tolerated.

Every file a definition brings into the server — ``lab.toml``, a Killercoda
``index.json``, step texts, scripts, intro and finish — is read here. A file is
opened without blocking (a FIFO named ``lab.toml`` would hold a scan thread for
ever), must be a regular file, and is refused by its size before a byte is read,
then read up to the cap only (a file that grows meanwhile, or a procfs file that
says it is empty, is cut there and refused). A sparse 500 MB ``lab.toml`` took a
server from 97 to 1,097 MiB and stalled it for 14 s before this; now it is a
problem in the catalog's ``errors``, and the server reads nothing of it.

The caps are the server's settings (``LabSessionManager.max_definition_size``,
``max_lab_file_size``, ``max_lab_size``); the catalog sets them around each load
(``limits``), so the loaders, which run in the scan's executor thread, need no
argument for them. ``max_lab_size`` bounds what one lab reads in all: a scenario of
10,000 steps of 4 MiB each is one lab too.

UTF-8 with or without a byte-order mark (editors on Windows write one), CRLF line
ends as they are: what the text means is the loaders' business.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .model import DefinitionError

_MiB = 1024 * 1024


@dataclass
class Limits:
    """The caps in force for one lab's load, and what it has read so far."""

    #: A definition file: ``lab.toml``, ``index.json``.
    definition: int = 1 * _MiB
    #: Any other file the definition names: a step's text, a script.
    text: int = 4 * _MiB
    #: Everything one lab reads, definition included.
    total: int = 16 * _MiB
    #: Bytes read so far by this load.
    used: int = 0


_LIMITS: contextvars.ContextVar[Limits | None] = contextvars.ContextVar("labkernel_file_limits", default=None)


@contextlib.contextmanager
def limits(definition: int, text: int, total: int) -> Iterator[Limits]:
    """Caps for the reads of the code inside the ``with`` (one lab's load), in this
    thread (a context variable): the loaders take no argument for them."""
    current = Limits(definition, text, total)
    token = _LIMITS.set(current)
    try:
        yield current
    finally:
        _LIMITS.reset(token)


def current_limits() -> Limits:
    found = _LIMITS.get()
    if found is None:  # a load outside the catalog (a test, labkernel test): the defaults, per call
        return Limits()
    return found


def read_bytes(path: Path | str, field: str, *, definition: bool = False, shown: str = "") -> bytes:
    """The bytes of a lab's file, within the caps; ``DefinitionError(field, ...)`` if it
    is missing, not a regular file, or over a cap. ``definition``: the cap of a
    definition file, else that of a text. ``shown``: how the file is named in the
    error (its name as the author wrote it), else its file name."""
    caps = current_limits()
    name = shown or os.path.basename(str(path))
    cap = caps.definition if definition else caps.text
    setting = "max_definition_size" if definition else "max_lab_file_size"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise DefinitionError(field, f"{name!r} cannot be read: {e.strerror or e}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DefinitionError(field, f"{name!r} is not a regular file")
        if info.st_size > cap:
            raise DefinitionError(field, _too_large(name, f"{info.st_size} bytes", cap, setting))
        left = caps.total - caps.used
        if info.st_size > left:
            raise DefinitionError(field, _over_total(name, caps))
        data = bytearray()
        # One byte more than the cap: a file that grew after the stat (or a procfs
        # file, whose size says 0) is refused, not read on.
        want = min(cap, left) + 1
        while len(data) < want:
            chunk = os.read(fd, min(want - len(data), 256 * 1024))
            if not chunk:
                break
            data += chunk
    except BlockingIOError:
        raise DefinitionError(field, f"{name!r} is not a regular file") from None
    except OSError as e:
        raise DefinitionError(field, f"{name!r} cannot be read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > cap:
        raise DefinitionError(field, _too_large(name, "more bytes than that", cap, setting))
    if len(data) > left:
        raise DefinitionError(field, _over_total(name, caps))
    caps.used += len(data)
    return bytes(data)


def read_text(path: Path | str, field: str, *, definition: bool = False, shown: str = "") -> str:
    """``read_bytes`` decoded as UTF-8, a byte-order mark dropped; ``DefinitionError``
    if it is not UTF-8."""
    data = read_bytes(path, field, definition=definition, shown=shown)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        name = shown or os.path.basename(str(path))
        raise DefinitionError(field, f"{name!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def _too_large(name: str, size: str, cap: int, setting: str) -> str:
    return (f"{name!r} is {size}; the limit is {cap} bytes (LabSessionManager.{setting}): "
            "it was not read")


def _over_total(name: str, caps: Limits) -> str:
    return (f"{name!r} would take the lab's files over {caps.total} bytes in all "
            "(LabSessionManager.max_lab_size): it was not read")
