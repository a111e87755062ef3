"""Unmodified WSDL-loading SOAP clients from three ecosystems, through the gateway only.

Each client (Python's zeep, Node's `soap` package, PHP's SoapClient) loads the WSDL from the gateway at
run time, with the schemas the WSDL imports by relative location, logs in and sends `mergeTriggerEmail`
through an invalidated upstream session and then a primary that dies. Each one's HTTP refuses any URL
but the gateway's and reports what it fetched. Node's and PHP's run as subprocesses driven line by line
(tests/clients/*/drive.*): `scripts/soap-clients` installs the npm package, `scripts/system-packages`
php-cli and php-soap. Without them these tests fail, never skip.
"""

from __future__ import annotations

import json
import select
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
import zeep
import zeep.exceptions
from zeep.transports import Transport

from tests.integration.gateway.conftest import APP_PASSWORD, APP_USER, Deployment
from tests.integration.gateway.test_soap_documents import FAULTS, TYPES, WSDL, GatewayOnlySession
from tests.support.certificate_login import (
    decrypt_with_certificate,
    encrypt_with_private_key,
    key_pair,
    new_client_challenge,
    signed_bytes,
    unsigned_bytes,
)
from tests.support.responsys_clients import merge_trigger_email_args as merge_args
from tests.support.responsys_clients import soap_session_header as header

CLIENTS = Path(__file__).resolve().parents[2] / "clients"
SERVICE_WSDL = "/webservices/services/ResponsysWSService?wsdl"
_ANSWER_TIMEOUT = 30.0


class Driver(Protocol):
    """An app on one SOAP stack: each step answers a dict with `ok`, and `fetched` (what it GET/POSTed)."""

    def command(self, op: str, **arguments: Any) -> dict[str, Any]: ...


class ZeepDriver:
    def __init__(self, base: str, wsdl_path: str) -> None:
        self.session = GatewayOnlySession(base)
        self.base, self.wsdl_path = base, wsdl_path
        self.client: zeep.Client | None = None
        self.session_id = ""

    def command(self, op: str, **arguments: Any) -> dict[str, Any]:
        answer: dict[str, Any] = {"ok": True}
        try:
            if op == "load":
                self.client = zeep.Client(self.base + self.wsdl_path,
                                          transport=Transport(session=self.session, timeout=15, operation_timeout=15))
                port = self.client.wsdl.services["ResponsysWSService"].ports["ResponsysWS"]
                answer["operations"] = sorted(port.binding._operations)
            elif op == "login":
                assert self.client is not None
                self.session_id = self.client.service.login(username=APP_USER, password=APP_PASSWORD)
                answer["session"] = bool(self.session_id)
            elif op == "certificate_login":
                assert self.client is not None
                answer.update(self._certificate_login(arguments["user"], Path(arguments["key_file"]).read_text(),
                                                      Path(arguments["certificate_file"]).read_text()))
            elif op == "send":
                assert self.client is not None
                results = self.client.service.mergeTriggerEmail(**merge_args(arguments["email"]),
                                                                _soapheaders=header(self.session_id))
                answer["success"] = [r.success for r in results]
        except zeep.exceptions.Fault as exc:
            answer = {"ok": False, "error": exc.message}
        answer["fetched"], self.session.fetched = self.session.fetched, []
        return answer

    def _certificate_login(self, user: str, key: str, server_certificate: str) -> dict[str, Any]:
        assert self.client is not None
        challenge = new_client_challenge()
        server = self.client.service.authenticateServer(username=user, clientChallenge=signed_bytes(challenge))
        decrypted = decrypt_with_certificate(server_certificate, unsigned_bytes(server.encryptedClientChallenge))
        encrypted = encrypt_with_private_key(key, unsigned_bytes(server.serverChallenge))
        self.session_id = self.client.service.loginWithCertificate(
            encryptedServerChallenge=signed_bytes(encrypted),
            _soapheaders={"AuthSessionHeader": {"authSessionId": server.authSessionId}})
        return {"server_proved": decrypted == challenge, "session": bool(self.session_id)}

    def close(self) -> None:
        self.session.close()


class SubprocessDriver:
    """A client script that reads one JSON command a line and answers one JSON line."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, bufsize=1)

    def command(self, op: str, **arguments: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + _ANSWER_TIMEOUT
        while not select.select([self.process.stdout], [], [], 0.5)[0]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"client gave no answer to {op}: {self._stderr()}")
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"client ended on {op}: {self._stderr()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _stderr(self) -> str:
        if self.process.poll() is None:
            self.process.kill()
        return (self.process.communicate(timeout=10)[1] or "")[-2000:]

    def close(self) -> None:
        if self.process.returncode is not None:
            return
        try:  # closes stdin (the client's end of input), then reads and closes its outputs
            self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate(timeout=10)


def node_driver(base: str, wsdl_path: str) -> SubprocessDriver:
    folder = CLIENTS / "node"
    assert (folder / "node_modules" / "soap").is_dir(), "run scripts/soap-clients to install the npm soap package"
    return SubprocessDriver(["node", "drive.mjs", base, wsdl_path, APP_USER, APP_PASSWORD], folder)


def php_driver(base: str, wsdl_path: str) -> SubprocessDriver:
    return SubprocessDriver(["php", "-d", "display_errors=stderr", "drive.php", base, wsdl_path, APP_USER,
                             APP_PASSWORD], CLIENTS / "php")


DRIVERS: dict[str, Callable[[str, str], Any]] = {"zeep": ZeepDriver, "node-soap": node_driver,
                                                 "php-soapclient": php_driver}


@pytest.fixture(params=sorted(DRIVERS))
def client_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def make_driver(client_name: str) -> Iterator[Callable[[str, str], Driver]]:
    started: list[Any] = []

    def make(base: str, wsdl_path: str) -> Driver:
        driver = DRIVERS[client_name](base, wsdl_path)
        started.append(driver)
        return driver  # type: ignore[no-any-return]

    yield make
    for driver in started:
        driver.close()


def deliveries(deployment: Deployment, email: str) -> list[tuple[str, str]]:
    return [(account.name, d.operation) for account in (deployment.primary, deployment.failover)
            for d in account.deliveries() if d.protocol == "soap" and email in d.recipient]


@pytest.mark.parametrize("wsdl_path", [WSDL, SERVICE_WSDL])
def test_an_unmodified_wsdl_loading_client_sends_through_invalidation_and_a_dead_primary(
        ha_deployment: Deployment, make_driver: Callable[[str, str], Driver], client_name: str,
        wsdl_path: str) -> None:
    deployment = ha_deployment
    client = make_driver(deployment.url, wsdl_path)

    loaded = client.command("load")
    assert loaded["ok"], loaded
    assert {f"GET {wsdl_path}", f"GET {TYPES}", f"GET {FAULTS}"} <= set(loaded["fetched"]), loaded["fetched"]
    assert {"login", "mergeTriggerEmail", "HaMergeTriggerEmail", "HaMergeTriggerSms"} <= set(loaded["operations"])
    logged_in = client.command("login")
    assert logged_in["ok"] and logged_in["session"], logged_in

    sent = [client.command("send", email="c1@example.com")]
    deployment.primary.invalidate()  # the gateway's upstream session dies: the app must not notice
    sent.append(client.command("send", email="c2@example.com"))
    deployment.primary.set_mode("refuse")  # the primary dies: the failover account's HA twin takes the send
    sent.append(client.command("send", email="c3@example.com"))

    assert [(s["ok"], s.get("success")) for s in sent] == [(True, [True])] * 3, sent
    assert deliveries(deployment, "c1@") == [("primary", "mergeTriggerEmail")]
    assert deliveries(deployment, "c2@") == [("primary", "mergeTriggerEmail")]
    assert deliveries(deployment, "c3@") == [("failover", "HaMergeTriggerEmail")]
    calls = [line for step in (logged_in, *sent) for line in step["fetched"]]
    # ext/soap POSTs through its own HTTP code, not the stream wrapper that sees (and confines) its GETs.
    expected = [] if client_name == "php-soapclient" else ["POST /webservices/services/ResponsysWSService"] * 4
    assert calls == expected


def test_an_unmodified_wsdl_loading_client_logs_in_with_its_certificate_and_sends(
        make_deployment: Callable[..., Deployment], make_driver: Callable[[str, str], Driver],
        tmp_path: Path) -> None:
    """The vendor's certificate flow as each ecosystem's app writes it, with that ecosystem's own RSA (PHP's
    openssl_private_encrypt, Node's crypto.privateEncrypt) and its SOAP stack's byte arrays (xsd:byte)."""
    server, app = key_pair("gateway-server"), key_pair("certapp")
    deployment = make_deployment(server_key=server.key, server_certificate=server.certificate,
                                 clients=[{"user_name": "certapp", "certificate": app.certificate}])
    (key_file := tmp_path / "app-key.pem").write_text(app.key)
    (certificate_file := tmp_path / "server-certificate.pem").write_text(server.certificate)
    client = make_driver(deployment.url, SERVICE_WSDL)
    assert client.command("load")["ok"]
    logged_in = client.command("certificate_login", user="certapp", key_file=str(key_file),
                               certificate_file=str(certificate_file))
    assert logged_in["ok"] and logged_in["server_proved"] and logged_in["session"], logged_in
    sent = client.command("send", email="cert-client@example.com")
    assert (sent["ok"], sent.get("success")) == (True, [True]), sent
    assert deliveries(deployment, "cert-client@") == [("primary", "mergeTriggerEmail")]
