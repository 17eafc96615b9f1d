"""Reading output as the contract says, with every answer checked, and looking at a
session's output log from inside the server (``manager`` fixture) without attaching
a reader."""

from __future__ import annotations

import base64
import re
from typing import Any

from .api import PROMPT, Api, eventually

KIB = 1024
PROMPT_RE = re.escape(PROMPT)
#: The end of the output once ``...; echo DO''NE`` has finished and the prompt is back
#: (bash announces bracketed paste before each prompt).
DONE_RE = re.compile(r"DONE\r\n(?:\x1b\[\?2004h)?" + PROMPT_RE + r"\Z")
DONE_BYTES_RE = re.compile(DONE_RE.pattern.encode())


class Reader:
    """A client reading one session's output as the contract says: always from nextOffset.

    Every answer is checked: it starts where the previous one said to continue, its
    data is exactly ``nextOffset - offset`` bytes, and it is never truncated.
    """

    def __init__(self, api: Api, sid: str, offset: int, encoding: str = "base64"):
        self.api, self.sid, self.offset, self.encoding = api, sid, offset, encoding
        #: The offset of the last poll: where flow control counts this reader to be.
        #: The server cannot know that an answer arrived until the next poll (a lost
        #: answer is asked for again), so it keeps the bytes from here on for it.
        self.asked = offset
        self.status = "running"

    async def read(self, max_bytes: int, wait: float = 5) -> Any:
        """One poll; returns the data (bytes for base64, str for utf-8) and checks the answer."""
        self.asked = self.offset
        answer = await self.api.output(self.sid, self.offset, wait=wait, max=max_bytes,
                                       encoding=self.encoding)
        assert answer["truncated"] is False, f"output lost at {self.offset}: {answer}"
        assert answer["offset"] == self.offset, (answer["offset"], self.offset)
        if self.encoding == "base64":
            data = base64.b64decode(answer["data"])
            size = len(data)
        else:
            data = answer["data"]
            # U+FFFD stands for invalid bytes of any count
            size = None if "\ufffd" in data else len(data.encode("utf-8"))
        if size is not None:
            assert answer["nextOffset"] - answer["offset"] == size
        else:
            size = answer["nextOffset"] - answer["offset"]
        # max bounds the bytes; in utf-8 mode one whole character may exceed a tiny max
        assert size <= max(max_bytes, 4)
        self.offset = answer["nextOffset"]
        self.status = answer["status"]
        return data


async def start_unattached(api: Api, manager: Any) -> tuple[str, int]:
    """Start a shell and wait for its prompt without polling, so no reader is attached."""
    sid = (await api.start())["sessionId"]
    log = manager.get(sid).output
    await eventually(lambda: log.read(0, log.end).data.endswith(PROMPT.encode()))
    return sid, log.end


def log_tail(log: Any, size: int = 200) -> bytes:
    """The newest bytes of an output log, read without attaching a reader."""
    return log.read(max(log.base, log.end - size), size).data
