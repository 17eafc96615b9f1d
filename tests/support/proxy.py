"""An HTTP proxy on 127.0.0.1 that buffers answers, as some proxies in front of Jupyter do,
or drops the network for a while.

Each answer's body is held back until the proxy has ``hold`` bytes of it (then sent
on, and the next ``hold`` bytes held) or the answer ends: a long poll's answer, which
ends, gets through whole; a stream of small events never does until it has a
``hold``'s worth. That is what a page behind nginx with ``proxy_buffering`` and no
``X-Accel-Buffering`` honoured, or a corporate proxy that scans bodies, sees.

With ``hold=0`` it passes answers on as they come; ``drop(seconds)`` then cuts every
connection it has open and refuses new ones for that long, as a network that goes
away does (a connection reset, which Chromium's offline mode does not do to an
answer already streaming).

Requests go upstream as they came (the Host header too, so Jupyter's origin checks
see the address the browser used); every answer closes its connection. No
WebSocket: pages through it use the lab page, which needs none.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Headers about one hop, not passed on.
HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
       "transfer-encoding", "upgrade", "content-length"}


class BufferingProxy:
    """``BufferingProxy(upstream_port, hold).start()``; ``url`` is where the browser goes."""

    def __init__(self, upstream_port: int, hold: int = 64 * 1024):
        self.upstream_port = upstream_port
        self.hold = hold
        self.paths: Counter[str] = Counter()  # requests seen, by path (no query)
        self._server: ThreadingHTTPServer | None = None
        self._open: set[socket.socket] = set()  # the browser's connections in use
        self._lock = threading.Lock()
        self._down_until = 0.0

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def start(self) -> BufferingProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass  # quiet

            def setup(self) -> None:
                super().setup()
                if time.monotonic() < proxy._down_until:
                    self.connection.close()  # the network is down: a reset, no answer
                with proxy._lock:
                    proxy._open.add(self.connection)

            def finish(self) -> None:
                with proxy._lock:
                    proxy._open.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def handle(self) -> None:
                if self.connection.fileno() < 0:
                    return
                try:
                    super().handle()
                except OSError:
                    pass

            def _forward(self) -> None:
                proxy.paths[self.path.split("?")[0]] += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    self.send_response_only(answer.status, answer.reason)
                    for name, value in answer.getheaders():
                        if name.lower() not in HOP:
                            self.send_header(name, value)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    held = b""
                    while True:
                        data = answer.read1(65536)
                        if not data:
                            break
                        held += data
                        if len(held) >= proxy.hold or time.monotonic() < proxy._down_until:
                            self.wfile.write(held)
                            self.wfile.flush()
                            held = b""
                    self.wfile.write(held)
                    self.wfile.flush()
                except (OSError, http.client.HTTPException):
                    pass  # the browser or the server went away
                finally:
                    upstream.close()
                    self.close_connection = True

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def drop(self, seconds: float) -> None:
        """Cut every open connection, and refuse new ones for ``seconds``."""
        self._down_until = time.monotonic() + seconds
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def url(self, base_url: str, path: str, token: str) -> str:
        """``path`` under ``base_url`` through the proxy, signed in by ``token``."""
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}{base_url}{path}{sep}token={token}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
