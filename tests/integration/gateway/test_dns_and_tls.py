"""No IP caching and a TLS floor, through the whole gateway: a real DNS server whose answer changes."""

from __future__ import annotations

import socket
import ssl
import warnings
from collections.abc import Callable
from typing import Any

import trustme

from gateway_tools.simulator.server import SimulatedAccount
from tests.integration.gateway.conftest import Deployment, delivered_to
from tests.support.servers import wait_until
from tests.support.tls import legacy_server_context, server_context


def test_dns_change_is_followed_on_the_next_request(start_extra_account: Callable[..., SimulatedAccount],
                                                    make_deployment: Callable[..., Deployment]) -> None:
    # Probes resolve names too; with one probe at start and none after, every query counted below
    # comes from the requests themselves.
    deployment = make_deployment(failover={"probe_interval": 3600.0})
    moved = start_extra_account(name="primary", host="127.0.0.4", hostname="primary.test",
                                port=deployment.primary.port, password="primary-password")
    assert moved.port == deployment.primary.port  # only the address differs
    token = deployment.rest_token()
    wait_until(lambda: deployment.dns.count("primary.test") >= 1 and deployment.dns.count("failover.test") >= 1,
               timeout=5, message="the start-up probes to have resolved both names")

    queries_before = deployment.dns.count("primary.test")
    assert deployment.send_email(token, "old-address@example.com").status_code == 200
    queries_after_first = deployment.dns.count("primary.test")
    deployment.dns.set("primary.test", ["127.0.0.4"])  # the old answer's TTL was 3600 s: it must be ignored
    second = deployment.send_email(token, "new-address@example.com")

    assert second.status_code == 200, second.text
    assert delivered_to(deployment.primary, "old-address@example.com") == 1
    assert delivered_to(moved, "new-address@example.com") == 1
    assert delivered_to(deployment.primary, "new-address@example.com") == 0
    assert len(moved.deliveries()) == 1
    # the probe at start had resolved the name already: a cache would have answered these requests
    assert queries_after_first > queries_before
    assert deployment.dns.count("primary.test") > queries_after_first
    assert deployment.admin_status()["active"] == "primary"  # a moved address is not a failover


def test_dns_change_back_returns_to_the_first_address(deployment: Deployment,
                                                      start_extra_account: Callable[..., SimulatedAccount]) -> None:
    moved = start_extra_account(name="primary", host="127.0.0.4", hostname="primary.test",
                                port=deployment.primary.port, password="primary-password")
    token = deployment.rest_token()
    deployment.dns.set("primary.test", ["127.0.0.4"])
    assert deployment.send_email(token, "there@example.com").status_code == 200
    deployment.dns.set("primary.test", ["127.0.0.2"])
    assert deployment.send_email(token, "back@example.com").status_code == 200
    assert delivered_to(moved, "there@example.com") == 1 and delivered_to(moved, "back@example.com") == 0
    assert delivered_to(deployment.primary, "back@example.com") == 1
    assert delivered_to(deployment.primary, "there@example.com") == 0


def _handshake_version(address: str, port: int, ca: trustme.CA) -> str | None:
    """The protocol a client without a floor negotiates with the listener (the control for the floor tests)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_connection((address, port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="primary.test") as tls:
        return tls.version()


def _assert_primary_refused_for_tls(deployment: Deployment, address: str) -> None:
    token = deployment.rest_token()
    responses = [deployment.send_email(token, f"{address}-{i}@example.com") for i in range(3)]
    assert [r.status_code for r in responses] == [200] * 3, [r.text for r in responses]
    assert all(r.json()[0]["success"] is True for r in responses)
    assert all(delivered_to(deployment.failover, f"{address}-{i}@example.com") == 1 for i in range(3))
    # the handshake never completed: the primary saw no HTTP request at all
    assert deployment.primary.deliveries() == []
    assert deployment.primary.stats()["rest_logins"] == 0
    assert deployment.primary.stats()["calls_by_status"] == {}
    status = deployment.admin_status()
    primary: dict[str, Any] = status["failover"]["accounts"]["primary"]
    assert status["active"] == "failover"
    assert primary["healthy"] is False
    assert "TLS" in primary["last_failure"], primary


def test_tls_1_1_only_primary_is_refused_and_the_failover_serves(
        make_deployment_with_primary_tls: Callable[[Any], Deployment], test_ca: trustme.CA) -> None:
    deployment = make_deployment_with_primary_tls(legacy_server_context(test_ca, "primary.test"))
    # Control: the listener really completes a TLS 1.1 handshake with a client that has no floor,
    # so the refusal below is the gateway's own floor, not this machine's OpenSSL policy.
    assert _handshake_version("127.0.0.2", deployment.primary.port, test_ca) == "TLSv1.1"
    _assert_primary_refused_for_tls(deployment, "tls11")


def test_untrusted_certificate_is_refused_and_the_failover_serves(
        make_deployment_with_primary_tls: Callable[[Any], Deployment], test_ca: trustme.CA) -> None:
    stranger = trustme.CA()
    deployment = make_deployment_with_primary_tls(server_context(stranger, "primary.test"))
    # Control: the certificate is valid for primary.test, only from a CA the gateway does not trust.
    assert _handshake_version("127.0.0.2", deployment.primary.port, stranger) is not None
    _assert_primary_refused_for_tls(deployment, "untrusted")
