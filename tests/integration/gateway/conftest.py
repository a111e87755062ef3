"""A whole deployment on loopback: two simulated accounts behind TLS, a DNS server, the gateway.

- `primary.test` resolves to 127.0.0.2, `failover.test` to 127.0.0.3, through a real DNS server whose
  answers a test may change; both accounts serve TLS with certificates from a test CA (trustme).
- The gateway runs under uvicorn in a thread on an ephemeral port with an SQLite store in `tmp_path`,
  and trusts only the test CA.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from gateway_tools.loopback_dns import LoopbackDNS
from gateway_tools.simulator.server import SimulatedAccount
from tests.support.certificate_login import key_pair
from tests.support.gateway import GatewayHost, merge_config, start_account
from tests.support.servers import ServerThread, wait_until

APP_USER, APP_PASSWORD = "app", "app-password"
ADMIN_TOKEN = "admin-token-for-tests-" + "0" * 32  # at least 32 bytes, as check-config requires
EMAIL_PATH = "/rest/api/v1.3/campaigns/welcome/email"


def email_body(address: str) -> bytes:
    recipient = {"emailAddress": address, "listName": {"folderName": "Demo", "objectName": "Contacts"},
                 "emailFormat": "HTML_FORMAT"}
    return json.dumps({"recipientData": [{"recipient": recipient, "optionalData": []}]}).encode()


@dataclass
class Deployment(GatewayHost):
    ca_file: str
    store_path: Path
    dns: LoopbackDNS
    primary: SimulatedAccount
    failover: SimulatedAccount
    overrides: dict[str, Any] = field(default_factory=dict)
    session_secret: str = field(default_factory=lambda: secrets.token_hex(16))  # 32 characters: the minimum
    gateway: ServerThread | None = None

    # --- the gateway -------------------------------------------------------------------------------

    def raw_config(self, public_url: str) -> dict[str, Any]:
        base: dict[str, Any] = {
            "public_url": public_url,
            "store": f"sqlite:///{self.store_path}",
            "session_secret": self.session_secret,
            "admin": {"token": ADMIN_TOKEN},
            "dns": {"nameservers": [self.dns.nameserver], "port": self.dns.port, "timeout": 1.0},
            "tls": {"ca_bundle": self.ca_file},
            "upstream": {"connect_timeout": 1.0, "read_timeout": 1.0},
            "requests": {"deadline": 3.0},
            "failover": {"failure_threshold": 3, "window": 10.0, "hold_time": 1.0, "probe_interval": 0.2},
            "retry": {"attempts": 8, "wait_initial": 0.05, "wait_max": 0.5},
            "outbox": {"max_age": 300.0},
            "clients": [{"user_name": APP_USER, "password": APP_PASSWORD}],
            "accounts": [
                {"name": "primary", "login_url": f"https://primary.test:{self.primary.port}",
                 "soap_url": f"https://primary.test:{self.primary.port}/webservices/services/ResponsysWSService",
                 "user_name": "api_primary", "password": "primary-password", "soap_sessions": 2},
                {"name": "failover", "login_url": f"https://failover.test:{self.failover.port}",
                 "soap_url": f"https://failover.test:{self.failover.port}/webservices/services/ResponsysWSService",
                 "user_name": "api_failover", "password": "failover-password", "soap_sessions": 2,
                 "api_prefix": "/rest/haApi"},
            ],
        }
        return merge_config(base, self.overrides)



    # --- an app's view -----------------------------------------------------------------------------

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=15.0, trust_env=False)

    def rest_token(self, user: str = APP_USER, password: str = APP_PASSWORD) -> str:
        with self.http() as client:
            response = client.post("/rest/api/v1.3/auth/token",
                                   data={"user_name": user, "password": password, "auth_type": "password"})
        response.raise_for_status()
        token: str = response.json()["authToken"]
        return token

    def send_email(self, token: str, address: str, *, key: str | None = None,
                   client: httpx.Client | None = None) -> httpx.Response:
        headers = {"Authorization": token, "Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        if client is not None:
            return client.post(EMAIL_PATH, content=email_body(address), headers=headers)
        with self.http() as own:
            return own.post(EMAIL_PATH, content=email_body(address), headers=headers)

    def admin_status(self) -> dict[str, Any]:
        with self.http() as client:
            response = client.get("/admin/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        response.raise_for_status()
        status: dict[str, Any] = response.json()
        return status

    def wait_active(self, account: str, timeout: float = 10.0) -> None:
        wait_until(lambda: self.admin_status()["active"] == account, timeout=timeout,
                   message=f"{account} to become the active account")


def delivered_to(account: SimulatedAccount, recipient_part: str) -> int:
    return sum(1 for d in account.deliveries() if recipient_part in d.recipient)


@pytest.fixture
def make_deployment(test_ca: trustme.CA, dns_server: LoopbackDNS, ca_file: str,
                    tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    """Build (and afterwards tear down) a deployment; keyword arguments override gateway config keys."""
    started: list[Deployment] = []
    accounts: list[SimulatedAccount] = []

    def build(*, start: bool = True, **overrides: Any) -> Deployment:
        primary = start_account(test_ca, name="primary", host="127.0.0.2", hostname="primary.test")
        accounts.append(primary)
        failover = start_account(test_ca, name="failover", host="127.0.0.3", hostname="failover.test",
                                 secondary=True)
        accounts.append(failover)
        dns_server.set("primary.test", ["127.0.0.2"])
        dns_server.set("failover.test", ["127.0.0.3"])
        deployment = Deployment(ca_file=ca_file, store_path=tmp_path / "gateway.db", dns=dns_server,
                                primary=primary, failover=failover, overrides=overrides)
        started.append(deployment)
        if start:
            deployment.start_gateway()
        return deployment

    yield build
    for deployment in started:
        deployment.stop_gateway()
    for account in accounts:
        account.stop()


@pytest.fixture
def deployment(make_deployment: Callable[..., Deployment]) -> Deployment:
    return make_deployment()


@pytest.fixture
def ha_deployment(make_deployment: Callable[..., Deployment]) -> Deployment:
    """A deployment whose failover account is AFTM's: sends there use the HA twins."""
    deployment = make_deployment(start=False)
    accounts = deployment.raw_config("http://unused")["accounts"]
    accounts[1]["soap_ha_operations"] = True
    deployment.overrides = {"accounts": accounts}
    deployment.start_gateway()
    return deployment


@pytest.fixture
def start_extra_account(test_ca: trustme.CA) -> Iterator[Callable[..., SimulatedAccount]]:
    """Start more simulated accounts (another address, another TLS setup); stopped after the test."""
    extra: list[SimulatedAccount] = []

    def start(**kwargs: Any) -> SimulatedAccount:
        account = start_account(test_ca, **kwargs)
        extra.append(account)
        return account

    yield start
    for account in extra:
        account.stop()


@pytest.fixture
def make_deployment_with_primary_tls(
        start_extra_account: Callable[..., SimulatedAccount],
        make_deployment: Callable[..., Deployment]) -> Callable[[Any], Deployment]:
    """A deployment whose primary (same name, address and credentials) listens with the given TLS context.

    The replacement primary comes from `start_extra_account`, requested first so that it is stopped
    after the gateway (fixtures tear down in reverse order).
    """

    def build(primary_context: Any) -> Deployment:  # an ssl.SSLContext for the listener
        deployment = make_deployment(start=False)
        deployment.primary.stop()  # stop() is idempotent: the fixture's teardown stops it again
        deployment.primary = start_extra_account(name="primary", host="127.0.0.2", hostname="primary.test",
                                                 ssl_context=primary_context)
        deployment.start_gateway()
        return deployment

    return build


CERT_APP = "certapp"  # a client that logs in with the vendor's certificate flow


@pytest.fixture
def cert_deployment(make_deployment: Callable[..., Deployment]) -> Deployment:
    """A deployment whose gateway holds a server key pair, with one password app and one certificate app."""
    server = key_pair("gateway-server")
    return make_deployment(
        server_key=server.key, server_certificate=server.certificate,
        clients=[{"user_name": APP_USER, "password": APP_PASSWORD},
                 {"user_name": CERT_APP, "certificate": key_pair(CERT_APP).certificate}])
