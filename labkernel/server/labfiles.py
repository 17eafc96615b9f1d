"""``GET /api/labs/{labId}/files/{path}``: a lab's images, for the step text the panel shows.

A step's Markdown names its images relative to the lab's folder
(``![](./assets/diagram.png)``, Killercoda's habit); the panel fetches them here
with the page's credentials and shows them from memory. Only images are served:
the rest of a lab's folder (its definition, checks, solutions, setup scripts) is
not for the learner's browser. A path is refused unless it stays inside the lab's
folder once symlinks are resolved; hidden files (a segment starting with ``.``)
are not served either. SVG can hold scripts: every answer carries a
``sandbox`` content security policy and ``nosniff``, so an image opened on its own
runs nothing.

The file is found and read in the loop's executor, 64 KiB at a time, so a slow
disk or a large image never holds the event loop.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path, PurePosixPath
from typing import IO

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import BadRequest, LabError
from .handlers import LabHandler

#: Extensions served, and their types. Anything else in a lab's folder is not.
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".svg": "image/svg+xml",
    ".bmp": "image/bmp",
    ".ico": "image/x-icon",
}

_CHUNK = 64 * 1024


class FileNotServed(LabError):
    """No such file in the lab's folder, or not one that is served (same answer: no hint
    at which files exist)."""

    code, status = "not_found", 404


def lab_file(folder: str, path: str) -> tuple[Path, str]:
    """The file ``path`` names in the lab folder ``folder``, and its content type.

    Raises ``BadRequest`` for a path that is not a plain relative path (``..``, an
    absolute path, a NUL byte), ``FileNotServed`` for one that is missing, not an
    image, hidden, or leads out of the folder through a symlink. Touches the disk:
    call it in an executor.
    """
    if not path or "\x00" in path or "\\" in path:
        raise BadRequest("The file path must name a file inside the lab's folder.")
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or path.startswith("~"):
        raise BadRequest(f"The file path {path!r} must stay inside the lab's folder (no '..', not absolute).")
    missing = FileNotServed(f"The lab has no image {path!r} to show.")
    if not folder:
        raise missing  # a built-in lab has no folder
    if any(part.startswith(".") for part in rel.parts):
        raise missing
    kind = IMAGE_TYPES.get(rel.suffix.lower())
    if kind is None:
        raise FileNotServed(f"{path!r} is not an image; only a lab's images are served here.")
    root = Path(folder).resolve()
    try:
        target = (root / rel).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            raise missing
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a name too long
        raise missing from None
    return target, kind


class LabFileHandler(LabHandler):
    """``GET /api/labs/{labId}/files/{path}``: one image of a lab's folder."""

    @property
    def content_security_policy(self) -> str:
        # An SVG opened on its own must run nothing (APIHandler's policy has
        # default-src 'none' already; sandbox takes scripts and the origin away).
        return super().content_security_policy + "; sandbox"

    @web.authenticated
    @authorized("read")
    async def get(self, lab_id: str, path: str) -> None:
        lab = await self.manager.find_lab(lab_id)
        loop = asyncio.get_running_loop()
        target, kind = await loop.run_in_executor(None, lab_file, lab.source, path)
        try:
            handle: IO[bytes] = await loop.run_in_executor(None, open, target, "rb")
        except OSError:
            raise FileNotServed(f"The lab has no image {path!r} to show.") from None
        try:
            self.set_header("Content-Type", kind)
            self.set_header("Content-Length", str(os.fstat(handle.fileno()).st_size))
            self.set_header("X-Content-Type-Options", "nosniff")
            self.set_header("Cache-Control", "private, max-age=60")
            while chunk := await loop.run_in_executor(None, handle.read, _CHUNK):
                self.write(chunk)
                await self.flush()
        finally:
            handle.close()
        self.finish(set_content_type=kind)
