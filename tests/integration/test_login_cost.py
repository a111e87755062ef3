"""What a wrong password costs the gateway, over real sockets, against the server `serve` builds.

A password check is a PBKDF2 run (tens of milliseconds): it must never run on the event loop, must
cost the same for an unknown user name, and a source that keeps failing must be told to wait, in each
surface's own throttling answer, without locking out the app logging in from another address.
"""

from __future__ import annotations

import hashlib
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import hash_password
from gateway.edge.clients import SOURCE_CHECKS, SOURCE_MAX_FAILURES
from policies.login_throttle import ThrottleSettings
from tests.support.gateway import serve_as_cli
from tests.support.raw_http import read_response
from tests.support.servers import ServerThread

APP, PASSWORD = "app", "the-right-password"
LOGIN = "/rest/api/v1.3/auth/token"
SOAP = "/webservices/services/ResponsysWSService"
MAX_FAILURES = ThrottleSettings().max_failures


@pytest.fixture(scope="module")
def password_hash() -> str:
    return hash_password(PASSWORD)  # the default cost, as an operator's hash would have


@pytest.fixture
def gateway(tmp_path: Path, password_hash: str) -> Iterator[ServerThread]:
    raw: dict[str, Any] = {
        "store": f"sqlite:///{tmp_path / 'gateway.db'}",
        "session_secret": "0" * 32,
        "accounts": [{"name": "primary", "login_url": "http://127.0.0.1:9", "user_name": "u", "password": "p"}],
        "clients": [{"user_name": APP, "password_hash": password_hash}],
    }
    server = serve_as_cli(raw)
    yield server
    server.stop()


class PasswordChecks:
    """Counts PBKDF2 runs and the threads they ran on (hashlib is patched for the test's duration)."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self._lock = threading.Lock()

    def wrap(self, real: Callable[..., bytes]) -> Callable[..., bytes]:
        def counted(*args: Any, **kwargs: Any) -> bytes:
            with self._lock:
                self.threads.append(threading.current_thread().name)
            return real(*args, **kwargs)
        return counted

    def count(self) -> int:
        with self._lock:
            return len(self.threads)


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> PasswordChecks:
    counter = PasswordChecks()
    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counter.wrap(hashlib.pbkdf2_hmac))
    return counter


def client_from(gateway: ServerThread, address: str = "127.0.0.1") -> httpx.Client:
    """An HTTP client whose connections come from `address` (any of 127.0.0.0/8 on loopback)."""
    return httpx.Client(base_url=gateway.url, trust_env=False, timeout=15,
                        transport=httpx.HTTPTransport(local_address=address))


def rest_login(client: httpx.Client, user: str, password: str) -> httpx.Response:
    return client.post(LOGIN, data={"user_name": user, "password": password, "auth_type": "password"})


def healthz_latencies(client: httpx.Client, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        latencies.append(time.perf_counter() - started)
    return latencies


def test_password_checks_run_off_the_event_loop_while_wrong_passwords_hammer_logins(
        gateway: ServerThread, checks: PasswordChecks) -> None:
    stop = threading.Event()

    def hammer(n: int) -> int:
        """Wrong passwords for the real app, moving to a new source address before the throttle answers."""
        sent = 0
        while not stop.is_set():
            with client_from(gateway, f"127.{n + 1}.{sent // 256 % 256}.{sent % 256 + 1}") as client:
                for _ in range(MAX_FAILURES - 1):
                    assert rest_login(client, APP, "wrong").status_code == 401
                    sent += 1
        return sent

    with client_from(gateway) as probe:
        baseline = healthz_latencies(probe, 30)
        with ThreadPoolExecutor(4) as pool:
            hammering = [pool.submit(hammer, n) for n in range(4)]
            deadline = time.monotonic() + 10
            while checks.count() < 4 and time.monotonic() < deadline:
                probe.get("/healthz")  # wait until the storm is on, with a deadline
            loaded = healthz_latencies(probe, 30)
            stop.set()
            attempts = sum(f.result() for f in hammering)
    assert attempts >= 4 and checks.count() >= 4
    assert all(name.startswith("aftm-login") for name in checks.threads), set(checks.threads)
    # Generous: on the event loop, each /healthz waited behind several 45-85 ms checks.
    assert statistics.median(loaded) < statistics.median(baseline) + 0.040, (baseline, loaded)


def test_an_unknown_user_costs_the_same_password_check_as_a_wrong_password(
        gateway: ServerThread, checks: PasswordChecks) -> None:
    with client_from(gateway) as client:
        assert rest_login(client, APP, "wrong").status_code == 401
        wrong_password = checks.count()
        assert rest_login(client, "nobody", "wrong").status_code == 401
        unknown_user = checks.count() - wrong_password
    assert wrong_password == unknown_user == 1


def test_a_right_password_is_remembered_so_the_next_login_costs_no_check(
        gateway: ServerThread, checks: PasswordChecks) -> None:
    with client_from(gateway) as client:
        assert rest_login(client, APP, PASSWORD).status_code == 200
        assert checks.count() == 1
        assert rest_login(client, APP, PASSWORD).status_code == 200
        assert rest_login(client, APP, PASSWORD + "x").status_code == 401  # a different password is checked
    assert checks.count() == 2


def test_failed_logins_from_one_address_are_throttled_in_each_surfaces_shape_while_another_address_logs_in(
        gateway: ServerThread, checks: PasswordChecks) -> None:
    with client_from(gateway, "127.0.0.1") as attacker:
        for _ in range(MAX_FAILURES):
            assert rest_login(attacker, APP, "guess").status_code == 401
        checked = checks.count()
        throttled = rest_login(attacker, APP, "guess")
        assert throttled.status_code == 429, throttled.text
        assert throttled.json()["errorCode"] == "API_LIMIT_EXCEEDED"
        assert int(throttled.headers["retry-after"]) >= 1
        assert rest_login(attacker, APP, PASSWORD).status_code == 429  # no oracle: not even checked
        soap = attacker.post(SOAP, content=soap_login(APP, "guess"), headers={"Content-Type": "text/xml"})
        assert b"API_LIMIT_EXCEEDED" in soap.content and "retry-after" in soap.headers, soap.text
        api = attacker.get("/api/failures", auth=(APP, "guess"))
        assert api.status_code == 429 and "retry-after" in api.headers, api.text
        assert checks.count() == checked  # a throttled attempt costs no PBKDF2 run
    with client_from(gateway, "127.0.0.2") as real_app:
        answer = rest_login(real_app, APP, PASSWORD)
        assert answer.status_code == 200, answer.text
    with client_from(gateway, "127.0.0.1") as same_address:  # a remembered success is never throttled
        assert rest_login(same_address, APP, PASSWORD).status_code == 200


def soap_login(user: str, password: str) -> bytes:
    return (f'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            f'xmlns:urn="urn:ws.rsys.com"><soapenv:Body><urn:login><urn:username>{user}</urn:username>'
            f'<urn:password>{password}</urn:password></urn:login></soapenv:Body></soapenv:Envelope>').encode()


def raw_login(user: str, password: str) -> bytes:
    form = f"user_name={user}&password={password}&auth_type=password".encode()
    return (b"POST " + LOGIN.encode() + b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(form) + form)


def test_a_login_storm_from_one_address_rotating_user_names_cannot_lock_the_app_out(
        gateway: ServerThread, checks: PasswordChecks) -> None:
    """40 wrong logins at once from one address used to fill the check queue: the app's login was a 429."""
    storm = []
    try:
        for n in range(40):
            sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=15, source_address=("127.0.0.2", 0))
            sock.sendall(raw_login(f"guess{n}", "wrong"))
            storm.append(sock)
        # The storm is in: the gateway has refused some of it (before the fix: those past its queue).
        refused = [read_response(sock, method="POST").status for sock in storm[-4:]]
        assert refused == [429] * 4, refused
        with client_from(gateway, "127.0.0.1") as real_app:
            answer = rest_login(real_app, APP, PASSWORD)
        assert answer.status_code == 200, answer.text
        answers = [read_response(sock, method="POST").status for sock in storm[:-4]]
    finally:
        for sock in storm:
            sock.close()
    assert answers.count(401) <= SOURCE_CHECKS, answers  # the rest was refused unchecked
    assert checks.count() <= SOURCE_CHECKS + 1


def test_one_address_is_throttled_after_source_max_failures_whatever_user_names_it_tries(
        gateway: ServerThread, checks: PasswordChecks) -> None:
    with client_from(gateway, "127.0.0.2") as attacker:
        statuses = [rest_login(attacker, f"name{n}", "wrong").status_code for n in range(SOURCE_MAX_FAILURES + 3)]
    assert statuses[:SOURCE_MAX_FAILURES] == [401] * SOURCE_MAX_FAILURES, statuses
    assert statuses[SOURCE_MAX_FAILURES:] == [429] * 3, statuses
    assert checks.count() == SOURCE_MAX_FAILURES
    with client_from(gateway, "127.0.0.3") as real_app:
        assert rest_login(real_app, APP, PASSWORD).status_code == 200


def test_an_apps_burst_of_identical_logins_costs_one_password_check(
        gateway: ServerThread, checks: PasswordChecks) -> None:
    with ThreadPoolExecutor(10) as pool, client_from(gateway) as app:
        statuses = list(pool.map(lambda _: rest_login(app, APP, PASSWORD).status_code, range(10)))
    assert statuses == [200] * 10
    assert checks.count() == 1
