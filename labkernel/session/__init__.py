"""One lab session: a program on a PTY, its output log, its input, its processes."""

from .input import Accepted
from .session import Session, isoformat
from .settings import SessionSettings

__all__ = ["Accepted", "Session", "SessionSettings", "isoformat"]
