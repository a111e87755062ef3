"""Every body is bounded in size and time before it is read, on every route, and nothing of it goes upstream."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable

import pytest

from tests.integration.gateway.conftest import ADMIN_TOKEN, EMAIL_PATH, Deployment
from tests.support.raw_http import RawResponse, read_response, request_head

SOAP_PATH = "/webservices/services/ResponsysWSService"
HUGE = 300 * 1024 * 1024


def connect(deployment: Deployment) -> socket.socket:
    host, port = deployment.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def answered(sock: socket.socket, wait: float) -> bool:
    return bool(select.select([sock], [], [], wait)[0])


def routes(deployment: Deployment) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    form = ("Content-Type", "application/x-www-form-urlencoded")
    return {
        "portal login": ("/portal/login", [form]),
        "admin override": ("/admin/override", [("Authorization", f"Bearer {ADMIN_TOKEN}"),
                                               ("Content-Type", "application/json")]),
        "rest login": ("/rest/api/v1.3/auth/token", [form]),
        "rest send": (EMAIL_PATH, [("Authorization", deployment.rest_token()), ("Content-Type", "application/json")]),
        "soap": (SOAP_PATH, [("Content-Type", "text/xml; charset=utf-8")]),
    }


def assert_nothing_forwarded(deployment: Deployment) -> None:
    for account in (deployment.primary, deployment.failover):
        assert account.deliveries() == []
        assert account.forwarded() == []


@pytest.mark.parametrize("route", ["portal login", "admin override"])
def test_declared_300mb_body_is_refused_before_it_is_sent(deployment: Deployment, route: str) -> None:
    path, headers = routes(deployment)[route]
    with connect(deployment) as sock:
        sock.sendall(request_head("POST", path.encode(), [*headers, ("Content-Length", str(HUGE))]))
        sock.sendall(b"x" * 65_536)  # 0.02 % of what was announced
        assert answered(sock, 5.0), "the gateway waited for a body it should refuse unread"
        response = read_response(sock)
    assert response.status == 413, response
    assert response.headers.get("connection") == "close"


@pytest.mark.parametrize("route", ["portal login", "admin override"])
def test_endless_chunked_body_is_cut_at_the_routes_limit(deployment: Deployment, route: str) -> None:
    path, headers = routes(deployment)[route]
    chunk = b"%x\r\n%s\r\n" % (16_384, b"x" * 16_384)
    sent = 0
    with connect(deployment) as sock:
        sock.sendall(request_head("POST", path.encode(), [*headers, ("Transfer-Encoding", "chunked")]))
        while not answered(sock, 0) and sent < 64 * 1024 * 1024:
            try:
                sock.sendall(chunk)
            except OSError:  # the gateway answered and closed while this was still sending
                break
            sent += len(chunk)
        assert answered(sock, 5.0)
        response = read_response(sock)
    assert response.status == 413, response
    # The limit is 16 KiB; socket buffers hold a few MB at most. Unbounded, all 64 MB would go in.
    assert sent < 8 * 1024 * 1024, f"{sent} bytes were sent before the answer"


def test_rest_login_form_is_limited_to_a_form_not_to_a_send(deployment: Deployment) -> None:
    path, headers = routes(deployment)["rest login"]
    form = b"auth_type=password&user_name=app&password=" + b"x" * 100_000
    with connect(deployment) as sock:
        sock.sendall(request_head("POST", path.encode(), [*headers, ("Content-Length", str(len(form)))]) + form)
        response = read_response(sock)
    assert response.status == 413, response
    assert b"REQUEST_TOO_LARGE" in response.body


def drip(deployment: Deployment, path: str, headers: list[tuple[str, str]], *, give_up: float) -> tuple[RawResponse,
                                                                                                      float, int]:
    """Announce 1000 bytes, send one every 0.1 s; the answer, when it came, and how many bytes went."""
    started, sent = time.monotonic(), 0
    with connect(deployment) as sock:
        sock.sendall(request_head("POST", path.encode(), [*headers, ("Content-Length", "1000")]))
        # select's timeout paces the drip: each wait ends early if the gateway answers.
        while not answered(sock, 0.1):
            assert time.monotonic() - started < give_up, "the slow body was never cut off"
            sock.sendall(b"<")
            sent += 1
        return read_response(sock), time.monotonic() - started, sent


@pytest.mark.parametrize("route", ["portal login", "admin override", "rest login", "rest send", "soap"])
def test_body_sent_one_byte_at_a_time_is_cut_after_the_body_timeout(
        make_deployment: Callable[..., Deployment], route: str) -> None:
    deployment = make_deployment(requests={"deadline": 3.0, "body_timeout": 1.0})
    path, headers = routes(deployment)[route]
    response, elapsed, sent = drip(deployment, path, headers, give_up=8.0)
    assert response.status == 408, response
    assert response.headers.get("connection") == "close"
    assert 0.9 < elapsed < 4.0 and sent < 1000
    assert_nothing_forwarded(deployment)
