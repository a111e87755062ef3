"""The listener's limits, over real sockets, against the server `aftm-gateway serve` builds.

Each test talks raw HTTP/1.1 on a socket: the limits hold before any route or authentication runs,
so no client library must smooth over what the server does with a hostile head.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import serve_as_cli
from tests.support.raw_http import read_response
from tests.support.servers import ServerThread, wait_until

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n"


def raw_config(tmp_path: Path, **listen: Any) -> dict[str, Any]:
    return {
        "listen": listen,
        "store": f"sqlite:///{tmp_path / 'gateway.db'}",
        "session_secret": "0" * 32,
        # never reached: these tests stop at the listener or at /healthz
        "accounts": [{"name": "primary", "login_url": "http://127.0.0.1:9", "user_name": "u", "password": "p"}],
    }


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def start(**listen: Any) -> ServerThread:
        server = serve_as_cli(raw_config(tmp_path, **listen))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def connect(server: ServerThread) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_answer(sock: socket.socket, *, within: float = 5.0) -> bytes:
    """Everything the server sends until it closes (or resets) the connection, within a deadline."""
    deadline = time.monotonic() + within
    received = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        received += chunk
    return received


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True once the peer closed (EOF or reset) before `seconds` passed."""
    readable, _, _ = select.select([sock], [], [], seconds)
    if not readable:
        return False
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def drip_until_closed(sock: socket.socket, data: bytes, *, every: float = 0.2, give_up: float = 5.0) -> float | None:
    """Send `data` one byte every `every` seconds; the seconds until the server closed, or None if it never did."""
    started = time.monotonic()
    for byte in data:
        if closed_within(sock, every):
            return time.monotonic() - started
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
        if time.monotonic() - started > give_up:
            return None
    return None


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def test_a_head_over_max_header_bytes_is_answered_431_and_closed(start_gateway: Callable[..., ServerThread]) -> None:
    server = start_gateway(max_header_bytes=4096)
    with connect(server) as sock:
        sock.sendall(HEALTHZ + b"X-Big: " + b"a" * 8192 + b"\r\n\r\n")
        answer = read_answer(sock)
    assert status_of(answer) == 431, answer[:200]
    assert b"connection: close" in answer.lower()


def test_more_than_max_headers_headers_are_answered_431(start_gateway: Callable[..., ServerThread]) -> None:
    server = start_gateway(max_headers=100)
    with connect(server) as sock:
        sock.sendall(HEALTHZ + b"".join(b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n")
        answer = read_answer(sock)
    assert status_of(answer) == 431, answer[:200]
    with connect(server) as sock:  # 100 headers in all (Host, Connection and 98 more) is a request like any other
        sock.sendall(HEALTHZ + b"Connection: close\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(98)) + b"\r\n")
        answer = read_answer(sock)
    assert status_of(answer) == 200, answer[:200]


def test_a_50_mb_header_line_is_refused_without_the_server_reading_it_all(
        start_gateway: Callable[..., ServerThread]) -> None:
    server = start_gateway()
    total, chunk = 50 * 1024 * 1024, b"a" * 262_144
    sent = 0
    started = time.monotonic()
    with connect(server) as sock:
        sock.sendall(HEALTHZ + b"X-Big: ")
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
            sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # refused: the server answered 431 and closed while the client still sent
        answer = read_answer(sock)
    assert status_of(answer) in (431, 0), answer[:200]  # a reset may discard the 431 on its way
    assert sent < total // 4, f"the server took {sent} bytes of a header line"  # socket buffers, no more
    assert time.monotonic() - started < 10


def test_100000_headers_are_refused(start_gateway: Callable[..., ServerThread]) -> None:
    server = start_gateway()
    head = HEALTHZ + b"".join(b"X-H%d: v\r\n" % i for i in range(100_000)) + b"\r\n"
    with connect(server) as sock:
        try:
            sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_answer(sock)
    assert status_of(answer) in (431, 0), answer[:200]
    assert status_of(answer) != 200


def test_a_head_dripped_byte_by_byte_is_closed_after_header_timeout(
        start_gateway: Callable[..., ServerThread]) -> None:
    server = start_gateway(header_timeout=1.0)
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        held = drip_until_closed(sock, b"X-Slow: " + b"z" * 200)
    assert held is not None, "the dripping connection was still open after 5 s"
    assert 0.7 <= held < 3.0, held  # header_timeout counts from the connection's opening


def test_a_connection_that_sends_nothing_is_closed_after_header_timeout(
        start_gateway: Callable[..., ServerThread]) -> None:
    server = start_gateway(header_timeout=1.0)
    with connect(server) as sock:
        assert closed_within(sock, 3.0)


def test_a_kept_alive_connection_idle_longer_than_header_timeout_still_serves(
        start_gateway: Callable[..., ServerThread]) -> None:
    server = start_gateway(header_timeout=1.0)
    with connect(server) as sock:
        sock.sendall(HEALTHZ + b"\r\n")
        assert read_response(sock).status == 200  # the whole answer: a recv may hold part of one
        assert not closed_within(sock, 1.5)  # idle between requests: uvicorn's keep-alive timer, not ours
        sock.sendall(HEALTHZ + b"\r\n")
        assert read_response(sock).status == 200


def test_the_next_head_dripped_on_a_kept_alive_connection_is_closed_after_header_timeout(
        start_gateway: Callable[..., ServerThread]) -> None:
    server = start_gateway(header_timeout=1.0)
    with connect(server) as sock:
        sock.sendall(HEALTHZ + b"\r\n")
        assert read_response(sock).status == 200
        assert not closed_within(sock, 1.2)  # idle longer than header_timeout: still open
        held = drip_until_closed(sock, HEALTHZ + b"X-Slow: " + b"z" * 200)
    assert held is not None and 0.9 <= held < 3.0, held


def test_ordinary_requests_with_many_headers_are_unaffected(start_gateway: Callable[..., ServerThread]) -> None:
    server = start_gateway(header_timeout=1.0)
    headers = {f"x-h{i}": "v" * 100 for i in range(90)}  # ~10 KiB, under 16 KiB and 100 headers
    with httpx.Client(base_url=server.url, trust_env=False, timeout=5) as client:
        for _ in range(3):
            assert client.get("/healthz", headers=headers).status_code == 200


def test_past_limit_concurrency_connections_are_answered_503(start_gateway: Callable[..., ServerThread]) -> None:
    server = start_gateway(limit_concurrency=3)
    idle = [connect(server) for _ in range(3)]
    try:
        def refused() -> bool:
            with httpx.Client(base_url=server.url, trust_env=False, timeout=5) as client:
                return client.get("/healthz").status_code == 503

        wait_until(refused, timeout=5, message="a request past limit_concurrency to be answered 503")
    finally:
        for sock in idle:
            sock.close()
    with httpx.Client(base_url=server.url, trust_env=False, timeout=5) as client:
        wait_until(lambda: client.get("/healthz").status_code == 200, timeout=5,
                   message="the listener to serve again once the idle connections closed")


def answered_early(sock: socket.socket, declared: int) -> int:
    """POST to a path with no route (404, before any body is read) declaring `declared` body bytes."""
    sock.sendall(b"POST /no-such-route HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % declared)
    return read_response(sock, method="POST").status  # the whole answer: what follows is the server's doing


def test_a_body_dripped_after_its_request_was_answered_is_cut_after_header_timeout(
        start_gateway: Callable[..., ServerThread]) -> None:
    server = start_gateway(header_timeout=1.0)
    with connect(server) as sock:
        assert answered_early(sock, 1_000_000_000) == 404
        held = drip_until_closed(sock, b"x" * 200)
    assert held is not None, "a body the gateway had already answered was still being read after 5 s"
    assert 0.7 <= held < 3.0, held


def test_a_connection_whose_answered_body_then_ends_is_closed_not_kept_idle(
        start_gateway: Callable[..., ServerThread]) -> None:
    server = start_gateway(header_timeout=1.0)
    with connect(server) as sock:
        assert answered_early(sock, 10) == 404
        sock.sendall(b"0123456789")
        assert closed_within(sock, 3.0), "the connection stayed open with no timer after its body ended"


def test_connections_answered_before_their_bodies_cannot_hold_limit_concurrency(
        start_gateway: Callable[..., ServerThread]) -> None:
    server = start_gateway(limit_concurrency=4, header_timeout=1.0)
    held = [connect(server) for _ in range(3)]  # with a fourth connection: the limit
    try:
        for sock in held:
            assert answered_early(sock, 10) == 404
            sock.sendall(b"0123456789")  # the body ends: nothing more is sent, nothing more is due
        with httpx.Client(base_url=server.url, trust_env=False, timeout=5) as client:
            wait_until(lambda: client.get("/healthz").status_code == 200, timeout=5,
                       message="the listener to serve again while three answered connections sat silent")
    finally:
        for sock in held:
            sock.close()


def test_a_body_sent_whole_with_its_head_keeps_the_connection_alive_after_an_early_answer(
        start_gateway: Callable[..., ServerThread]) -> None:
    server = start_gateway(header_timeout=1.0)
    with connect(server) as sock:
        sock.sendall(b"POST /no-such-route HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello")
        assert read_response(sock, method="POST").status == 404  # whole answers: a recv may hold part of one
        sock.sendall(HEALTHZ + b"\r\n")
        assert read_response(sock).status == 200


@pytest.mark.parametrize("path", [b"/portal/login", b"/rest/api/v1.3/auth/token"])
def test_a_client_sending_its_whole_body_before_reading_gets_the_413_not_a_reset(
        start_gateway: Callable[..., ServerThread], path: bytes) -> None:
    # The way httpx and most clients send: all of the body, then read the answer. The gateway answers 413
    # from the declared length alone and closes; closing with the body unread made the kernel reset the
    # connection, which could destroy the answer before the client read it ("Connection reset by peer").
    server = start_gateway()
    size = 4 * 1024 * 1024  # over the 16 KiB login limit, and more than the socket buffers hold
    with connect(server) as sock:
        sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded"
                     b"\r\nContent-Length: " + str(size).encode() + b"\r\n\r\n")
        sock.sendall(b"x" * size)
        response = read_response(sock)
    assert response.status == 413, response
