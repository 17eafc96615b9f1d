"""One lab session: a program on a PTY, its output log, its input, its processes."""

from .session import Accepted, Session, SessionSettings, isoformat

__all__ = ["Accepted", "Session", "SessionSettings", "isoformat"]
