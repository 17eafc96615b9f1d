"""A TCP proxy on 127.0.0.1 that adds a delay to every chunk, each way, keeping order.

What a learner far from the server feels, on one machine: put it between the browser
and Jupyter and every byte reaches the other side ``delay`` ms after the proxy read
it, in both directions, in order. It works at the TCP level, so HTTP long polls,
streamed answers, Server-Sent Events and WebSockets are all delayed alike (the
browser benchmark puts it in front of labkernel's transport and JupyterLab's
terminal at once). Both sockets have ``TCP_NODELAY``; a chunk is whatever one
``read`` returned (at most 64 KiB), and at most ``max_buffer`` bytes wait per
direction (then the proxy stops reading, so TCP's flow control still holds).

    python benchmarks/delayproxy.py --target 127.0.0.1:8888 --delay-ms 50

It prints ``listening PORT`` on stdout, then reads commands on stdin, one a line:
``delay MS`` changes the delay for chunks read from then on (answered ``ok MS``;
chunks already waiting keep their time, and none overtakes an earlier one), and
the proxy exits when stdin closes. ``DelayProxyProcess`` runs it for a Python
caller; ``DelayProxy`` is the proxy itself, for an asyncio program.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Optional

CHUNK = 65536


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class DelayProxy:
    """Listens on ``host:port`` and forwards each connection to ``target``, ``delay_ms`` late."""

    def __init__(self, target_host: str, target_port: int, delay_ms: float = 0.0,
                 max_buffer: int = 8 * 1024 * 1024):
        self.target = (target_host, target_port)
        self.delay = delay_ms / 1000
        self.max_buffer = max_buffer
        self.server: Optional[asyncio.base_events.Server] = None
        self.connections = 0

    def set_delay(self, delay_ms: float) -> None:
        self.delay = max(0.0, delay_ms) / 1000

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self.server = await asyncio.start_server(self._serve, host, port)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        _nodelay(client_w)
        _nodelay(upstream_w)
        pipes = [asyncio.ensure_future(self._pipe(client_r, upstream_w)),
                 asyncio.ensure_future(self._pipe(upstream_r, client_w))]
        try:
            # An end of file is passed on and the other way goes on (a half close); a
            # reset or an error on either side ends both.
            await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            pass  # the proxy is shutting down
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in (client_w, upstream_w):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Copy ``src`` to ``dst``, each chunk sent ``delay`` after it was read, in order."""
        loop = asyncio.get_running_loop()
        waiting: deque[tuple[float, bytes]] = deque()
        queued = asyncio.Event()
        room = asyncio.Event()
        room.set()
        size = 0
        ended = False

        async def send() -> None:
            nonlocal size
            while True:
                while not waiting:
                    if ended:
                        with contextlib.suppress(OSError, RuntimeError):
                            if dst.can_write_eof():
                                dst.write_eof()
                        return
                    queued.clear()
                    await queued.wait()
                due, data = waiting[0]
                pause = due - loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
                waiting.popleft()
                dst.write(data)
                await dst.drain()
                size -= len(data)
                if size <= self.max_buffer:
                    room.set()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                await room.wait()
                data = await src.read(CHUNK)
                if not data:
                    break
                waiting.append((loop.time() + self.delay, data))
                size += len(data)
                if size > self.max_buffer:
                    room.clear()
                queued.set()
        except BaseException:
            sender.cancel()
            raise
        ended = True
        queued.set()
        await sender


class DelayProxyProcess:
    """``delayproxy.py`` as a subprocess (its own interpreter: no GIL shared with the caller)."""

    def __init__(self, target_host: str, target_port: int, delay_ms: float = 0.0):
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--target", f"{target_host}:{target_port}",
             "--delay-ms", str(delay_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "listening":
            self.close()
            raise RuntimeError(f"delayproxy did not start: {line}")
        self.port = int(line[1])
        self.delay_ms = delay_ms

    def set_delay(self, delay_ms: float) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"delay {delay_ms}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().split()
        if answer[:1] != ["ok"]:
            raise RuntimeError(f"delayproxy did not take the delay: {answer}")
        self.delay_ms = delay_ms

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                if self.proc.stdin:
                    self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


async def _set(proxy: DelayProxy, ms: float) -> None:
    proxy.set_delay(ms)


async def _main(args: argparse.Namespace) -> None:
    host, _, port = args.target.rpartition(":")
    proxy = DelayProxy(host or "127.0.0.1", int(port), args.delay_ms)
    listening = await proxy.start(args.host, args.port)
    print(f"listening {listening}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def commands() -> None:
        for line in sys.stdin:
            words = line.split()
            if len(words) == 2 and words[0] == "delay":
                try:
                    ms = float(words[1])
                except ValueError:
                    print("error: delay MS", flush=True)
                    continue
                # Answered once the loop has it: chunks read after the answer get it.
                asyncio.run_coroutine_threadsafe(_set(proxy, ms), loop).result()
                print(f"ok {ms:g}", flush=True)
            elif words:
                print("error: unknown command", flush=True)
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=commands, daemon=True).start()
    await stop.wait()
    await proxy.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="added to each chunk, each way")
    parser.add_argument("--host", default="127.0.0.1", help="where to listen")
    parser.add_argument("--port", type=int, default=0, help="where to listen (0: a free port)")
    asyncio.run(_main(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
