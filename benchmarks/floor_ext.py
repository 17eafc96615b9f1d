"""The floor of this stack: labkernel's REST routes in about 100 lines (benchmark only).

Loaded by ``bench.py`` as a second Jupyter server extension, under ``<base>/floor/``,
so that ``LabClient(<base>/floor/)`` drives it exactly as it drives labkernel: bash
on ``ptyprocess``, the PTY fd on the IOLoop with ``add_handler`` (level-triggered,
one 64 KiB read per callback, as terminado does), a byte buffer with absolute
offsets, long polls, and just enough flow control that an attached reader never
loses a byte. No limits, no batching, no process cleanup beyond the shell, one
reader per session: what is left is the cost of Jupyter's handler stack and the
PTY, the least any design of these routes on this server can pay.
"""
from __future__ import annotations

import json
import os
import secrets
import signal

import ptyprocess
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.ioloop import IOLoop

LIMIT, READ = 4 * 1024 * 1024, 65536
TERMS: dict[str, "Term"] = {}


class Term:
    def __init__(self) -> None:
        env = dict(os.environ, TERM="xterm-256color")
        self.proc = ptyprocess.PtyProcess.spawn([os.environ.get("SHELL", "bash"), "-l"],
                                                env=env, dimensions=(24, 80))
        self.fd, self.buf, self.base, self.waiters = self.proc.fd, bytearray(), 0, set()
        self.status, self.reader, self.paused = "running", None, False
        self.loop = IOLoop.current()
        os.set_blocking(self.fd, False)
        self.loop.add_handler(self.fd, self.on_read, IOLoop.READ)

    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    def on_read(self, fd: int, events: int) -> None:
        try:
            data = os.read(fd, READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            return self.stop("exited")
        self.buf += data
        if len(self.buf) > LIMIT:
            self.base += len(self.buf) - LIMIT
            del self.buf[:len(self.buf) - LIMIT]
        self.wake()
        if self.reader is not None and self.end - self.reader > LIMIT - READ:
            self.loop.remove_handler(fd)  # the reader lags: let the program block
            self.paused = True

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def polled(self, offset: int) -> None:
        self.reader = offset
        if self.paused and self.fd >= 0 and self.end - offset <= LIMIT // 2:
            self.paused = False
            self.loop.add_handler(self.fd, self.on_read, IOLoop.READ)

    def stop(self, status: str = "stopped") -> None:
        if self.fd >= 0:
            if not self.paused:
                self.loop.remove_handler(self.fd)
            self.proc.fileobj.close()  # hangs the terminal up: its jobs get SIGHUP
            self.proc.closed, self.fd, self.status = True, -1, status
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.reap()
        self.wake()

    def reap(self) -> None:
        try:
            if os.waitpid(self.proc.pid, os.WNOHANG)[0] == 0:
                self.loop.call_later(0.05, self.reap)
        except ChildProcessError:
            pass


class Base(APIHandler):
    def term(self, tid: str) -> Term:
        if tid not in TERMS:
            raise web.HTTPError(404)
        return TERMS[tid]

    def answer(self, model: dict, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(model))


class Start(Base):
    @web.authenticated
    def post(self) -> None:
        tid = secrets.token_urlsafe(16)
        TERMS[tid] = Term()
        self.answer({"sessionId": tid, "status": "running", "outputOffset": 0}, 201)


class Session(Base):
    @web.authenticated
    def get(self, tid: str) -> None:
        t = self.term(tid)
        self.answer({"sessionId": tid, "status": t.status, "outputOffset": t.end})

    @web.authenticated
    def delete(self, tid: str) -> None:
        t = TERMS.pop(tid, None) or self.term(tid)
        t.stop()
        self.answer({"sessionId": tid, "status": t.status, "outputOffset": t.end})


class Message(Base):
    @web.authenticated
    def post(self) -> None:
        body = json.loads(self.request.body)
        t = self.term(body["sessionId"])
        text = body["command"] + "\r" if "command" in body else body.get("data", "")
        if t.fd >= 0:
            os.write(t.fd, text.encode())
        self.answer({"accepted": True, "offset": t.end, "duplicate": False})


class Output(Base):
    @web.authenticated
    async def get(self, tid: str) -> None:
        t = self.term(tid)
        offset = int(self.get_argument("offset", "0"))
        wait = min(float(self.get_argument("wait", "0")), 25.0)
        limit = int(self.get_argument("max", str(1 << 20)))
        t.polled(offset)
        if offset >= t.end and wait > 0 and t.status == "running":
            fut = t.loop.asyncio_loop.create_future()
            t.waiters.add(fut)
            timer = t.loop.call_later(wait, lambda: fut.done() or fut.set_result(None))
            await fut
            t.loop.remove_timeout(timer)
        start = max(offset, t.base)
        stop = min(start + limit, t.end)
        data = bytes(t.buf[start - t.base:stop - t.base])
        self.answer({"sessionId": tid, "data": data.decode("utf-8", "replace"), "offset": start,
                     "nextOffset": stop, "truncated": start > offset, "status": t.status,
                     "exitCode": None})


def _jupyter_server_extension_points():
    return [{"module": "floor_ext"}]


def _load_jupyter_server_extension(serverapp) -> None:
    base = url_path_join(serverapp.base_url, "floor")
    serverapp.web_app.add_handlers(".*$", [
        (url_path_join(base, r"api/labs/start"), Start),
        (url_path_join(base, r"api/labs/session/([^/]+)"), Session),
        (url_path_join(base, r"api/ws/message"), Message),
        (url_path_join(base, r"api/ws/output/([^/]+)"), Output),
    ])
