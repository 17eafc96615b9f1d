"""Edge-triggered readiness for PTYs, multiplexed onto the IOLoop through one epoll fd.

Why not ``IOLoop.add_handler`` on each PTY: asyncio polls level-triggered, so after
every read the kernel polls the drained PTY again on the next loop turn, and Linux's
``n_tty_poll`` then waits for the tty's flush worker (``tty_buffer_flush_work``).
While a program floods its terminal that wait stalls the whole event loop, every
turn, for up to milliseconds (measured: epoll_wait(0) p99 270 µs, max 4.6 ms). An
edge-triggered registration is only polled after the tty signalled new data.

Edge-triggered means the handler hears of new data once: a reader that stops before
the PTY is drained (its budget ran out, flow control paused it) must come back by
itself (``IOLoop.add_callback``) rather than wait for another event.
"""

from __future__ import annotations

import select
import weakref
from typing import Callable

from tornado.ioloop import IOLoop
from tornado.log import app_log

Handler = Callable[[int, int], None]

_pollers: weakref.WeakKeyDictionary[IOLoop, EdgePoller] = weakref.WeakKeyDictionary()


class EdgePoller:
    """One epoll instance in edge-triggered mode, its fd watched by the IOLoop."""

    def __init__(self, loop: IOLoop):
        self._epoll = select.epoll()
        self._handlers: dict[int, Handler] = {}
        loop.add_handler(self._epoll.fileno(), self._dispatch, IOLoop.READ)

    def register(self, fd: int, handler: Handler) -> None:
        """Call ``handler(fd, events)`` (IOLoop.READ / WRITE bits) on each new edge."""
        self._handlers[fd] = handler
        self._epoll.register(fd, select.EPOLLIN | select.EPOLLOUT | select.EPOLLET)

    def unregister(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass  # already closed: the kernel dropped it

    def _dispatch(self, fd: int, events: int) -> None:
        for ready, mask in self._epoll.poll(0):
            handler = self._handlers.get(ready)
            if handler is None:
                continue
            # Hang-up and error are read as "readable": the read reports them.
            io_events = IOLoop.READ if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) else 0
            if mask & select.EPOLLOUT:
                io_events |= IOLoop.WRITE
            try:
                handler(ready, io_events)
            except Exception:  # noqa: BLE001 - logged below
                # An edge is reported once: one failing handler must not swallow
                # the events of the others in this batch.
                app_log.exception("labkernel: handling PTY %d failed", ready)


def edge_poller() -> EdgePoller:
    """The poller of the current IOLoop (one per loop, made on first use)."""
    loop = IOLoop.current()
    poller = _pollers.get(loop)
    if poller is None:
        poller = _pollers[loop] = EdgePoller(loop)
    return poller
