"""Bounded memory under abuse, judged by the server's RSS (psutil), not by Python objects.

Each case is one of issue 7's measurements, against a server in its own process so
that the test's allocations do not count. The bounds are generous (a noisy machine,
an allocator that keeps some memory); each one is far below what the case cost
before the fix, given in its docstring.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from support.serverproc import BASE_URL, ServerProcess

pytestmark = pytest.mark.server

MiB = 1024 * 1024
SIZE = 4 * MiB


def wait_until_ended(server: ServerProcess, count: int, timeout: float = 300) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        sessions = server.ok("GET", "api", "labs", "sessions")["sessions"]
        ended = [s for s in sessions if s["status"] != "running"]
        if len(ended) >= count and all(s["status"] != "running" for s in sessions):
            return sessions
        assert time.monotonic() < deadline, f"{len(ended)} of {count} sessions ended in time"
        time.sleep(0.5)


def settle(server: ServerProcess, seconds: float = 3.0) -> int:
    """The server's RSS once it has had time to trim its heap (a second after a release)."""
    time.sleep(seconds)
    return server.rss()


class PeakRss:
    """Samples a process's RSS in a thread, for the peak of a burst."""

    def __init__(self, server: ServerProcess):
        self.server, self.peak, self._stop = server, server.rss(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.server.rss())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


@pytest.fixture
def writer_server(tmp_path: Path) -> Iterator[ServerProcess]:
    # Every session writes 4 MiB and exits; nobody reads it.
    command = ["sh", "-c", f"head -c {SIZE} /dev/zero | tr '\\0' x"]
    with ServerProcess(tmp_path, manager={"shell_command": command}) as server:
        yield server


def test_ended_sessions_give_their_buffers_back(writer_server: ServerProcess) -> None:
    """Before: 100 sessions that wrote 4 MiB and exited, repeated: 85 -> 1,033 MiB."""
    server = writer_server
    server.ok("POST", "api", "labs", "start", body={}, expect=201)
    wait_until_ended(server, 1)
    baseline = settle(server)
    for _ in range(2):
        for _ in range(100):
            server.ok("POST", "api", "labs", "start", body={}, expect=201)
        sessions = wait_until_ended(server, 100)
        assert all(s["outputOffset"] == SIZE for s in sessions)
    grown = settle(server) - baseline
    print(f"RSS {baseline / MiB:.0f} MiB -> +{grown / MiB:.0f} MiB")  # shown with -s
    assert grown < 100 * MiB, f"RSS grew by {grown / MiB:.0f} MiB with no session running"
    # Ended sessions kept are capped in count, the oldest dropped first.
    assert len(server.ok("GET", "api", "labs", "sessions")["sessions"]) == 100


@pytest.fixture
def random_server(tmp_path: Path) -> Iterator[ServerProcess]:
    command = ["sh", "-c", f"head -c {SIZE} /dev/urandom; exec sleep 600"]
    with ServerProcess(tmp_path, manager={"shell_command": command}) as server:
        yield server


def raw_request(port: int, request: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.sendall(request)
    return sock


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Read one HTTP/1.1 answer to its end (Content-Length); return (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"connection closed before the answer's headers: {data[:200]!r}"
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers["content-length"])
    while len(body) < length:
        more = sock.recv(1024 * 1024)
        assert more, "connection closed in the middle of the answer"
        body += more
    return int(lines[0].split()[1]), body


def test_answers_of_binary_output_are_capped(random_server: ServerProcess) -> None:
    """Before: 20 clients asking max=4194304 of random bytes as text: +320 MiB."""
    server = random_server
    sid = server.ok("POST", "api", "labs", "start", body={}, expect=201)["sessionId"]
    deadline = time.monotonic() + 120
    while server.ok("GET", "api", "labs", "session", sid)["outputOffset"] < SIZE:
        assert time.monotonic() < deadline, "the session did not write its output"
        time.sleep(0.2)
    baseline = settle(server, 1.0)
    peak = PeakRss(server)
    request = (f"GET {BASE_URL}api/ws/output/{sid}?offset=0&max={SIZE} HTTP/1.1\r\n"
               f"Host: 127.0.0.1\r\nAuthorization: token {server.token}\r\n\r\n").encode()
    # Twenty clients that do not read yet: every answer waits in the server's buffers.
    socks = [raw_request(server.port, request) for _ in range(20)]
    time.sleep(3)
    answers = [read_response(sock) for sock in socks]
    grown = peak.stop() - baseline
    print(f"RSS {baseline / MiB:.0f} MiB, peak +{grown / MiB:.0f} MiB")  # shown with -s
    for sock in socks:
        sock.close()
    for status, body in answers:
        assert status == 200
        answer = json.loads(body)
        size = len(json.dumps(answer["data"])) - 2
        assert 0 < size <= 2 * MiB, f"an answer of {size} characters"
    assert grown < 100 * MiB, f"RSS grew by {grown / MiB:.0f} MiB"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the tests of refused bodies: none of them leaves anything behind."""
    with ServerProcess(tmp_path_factory.mktemp("bodies")) as server:
        yield server


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own, whose RSS no other test has grown."""
    with ServerProcess(tmp_path) as server:
        yield server


def test_a_body_over_the_limit_is_refused_from_its_content_length(server: ServerProcess) -> None:
    """The answer comes before a byte of the body is sent: nothing of it was read."""
    for path, status in [("api/labs/start", 413), ("api/ws/message", 413), ("api/labs/sessions", 413),
                         ("health", 413), ("api/labs/nothing", 404), ("api/ws/nothing", 404)]:
        sock = raw_request(server.port, (
            f"POST {BASE_URL}{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {200 * 1000 * 1000}\r\n\r\n").encode())
        sock.settimeout(30)
        with sock:
            answer = read_response(sock)
        assert answer[0] == status, (path, answer)
        assert json.loads(answer[1])["error"] in ("payload_too_large", "not_found")


def test_a_body_on_a_route_that_takes_none_is_refused_over_the_limit(server: ServerProcess) -> None:
    for method, path in [("GET", "api/labs/sessions"), ("DELETE", "api/labs/session/x"),
                         ("GET", "health")]:
        sock = raw_request(server.port, (
            f"{method} {BASE_URL}{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Length: {65 * 1024}\r\n\r\n").encode())
        sock.settimeout(30)
        with sock:
            status, body = read_response(sock)
        assert (status, json.loads(body)["error"]) == (413, "payload_too_large"), (method, path)


def push(sock: socket.socket, size: int, *, chunked: bool = False) -> int:
    """Send ``size`` bytes of body (or chunks); return how many the server took."""
    block, sent = b"x" * MiB, 0
    try:
        while sent < size:
            sock.sendall(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
            sent += len(block)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed the connection instead of reading the rest
    return sent


def test_huge_bodies_do_not_grow_the_server(fresh_server: ServerProcess) -> None:
    """Before: three 200 MB bodies without a token: +480 MiB."""
    server = fresh_server
    baseline = settle(server, 1.0)
    peak = PeakRss(server)
    size = 200 * MiB
    for _ in range(3):
        with raw_request(server.port, (
                f"POST {BASE_URL}api/labs/start HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Length: {size}\r\n\r\n").encode()) as sock:
            status, body = read_response(sock)
            assert (status, json.loads(body)["error"]) == (413, "payload_too_large")
            # The server reads none of it: what it took is what the sockets' buffers hold.
            assert push(sock, size) < 64 * MiB
    # Chunked, with no Content-Length to refuse it by, and with a token: read and dropped.
    with raw_request(server.port, (
            f"POST {BASE_URL}api/ws/message HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: token {server.token}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()) as sock:
        assert push(sock, size, chunked=True) == size
        status, body = read_response(sock)
    assert (status, json.loads(body)["error"]) == (413, "payload_too_large")
    grown = peak.stop() - baseline
    print(f"RSS {baseline / MiB:.0f} MiB, peak +{grown / MiB:.0f} MiB")  # shown with -s
    assert grown < 30 * MiB, f"RSS grew by {grown / MiB:.0f} MiB"
