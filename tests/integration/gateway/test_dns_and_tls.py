"""No IP caching and a TLS floor, through the whole gateway: a real DNS server whose answer changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trustme

from gateway.simulator.server import SimulatedAccount
from tests.integration.gateway.conftest import Deployment, delivered_to
from tests.support.tls import legacy_server_context, server_context


def test_dns_change_is_followed_on_the_next_request(deployment: Deployment,
                                                    start_extra_account: Callable[..., SimulatedAccount]) -> None:
    moved = start_extra_account(name="primary", host="127.0.0.4", hostname="primary.test",
                                port=deployment.primary.port, password="primary-password")
    token = deployment.rest_token()
    queries_before = deployment.dns.count("primary.test")
    assert deployment.send_email(token, "old-address@example.com").status_code == 200
    deployment.dns.set("primary.test", ["127.0.0.4"])  # the answer's TTL is 3600: it must be ignored
    assert deployment.send_email(token, "new-address@example.com").status_code == 200
    assert delivered_to(deployment.primary, "old-address@example.com") == 1
    assert delivered_to(moved, "new-address@example.com") == 1
    assert delivered_to(deployment.primary, "new-address@example.com") == 0
    # at least one fresh query per request (the login and each send resolve the name afresh)
    assert deployment.dns.count("primary.test") - queries_before >= 2


def _deployment_with_primary(make_deployment: Callable[..., Deployment], test_ca: trustme.CA,
                             context_for_primary: Any) -> Deployment:
    deployment = make_deployment(start=False)
    # Replace the primary by one listening with the given TLS context, same name, same credentials.
    deployment.primary.stop()
    deployment.primary = SimulatedAccount(name="primary", user_name="api_primary", password="primary-password",
                                          host="127.0.0.2", ssl_context=context_for_primary).start()
    deployment.start_gateway()
    return deployment


def test_tls_1_1_only_primary_is_refused_and_the_failover_serves(
        make_deployment: Callable[..., Deployment], test_ca: trustme.CA) -> None:
    deployment = _deployment_with_primary(make_deployment, test_ca, legacy_server_context(test_ca, "primary.test"))
    try:
        token = deployment.rest_token()
        response = deployment.send_email(token, "tls@example.com")
        assert response.status_code == 200, response.text
        assert delivered_to(deployment.failover, "tls@example.com") == 1
        assert deployment.primary.deliveries() == [] and deployment.primary.stats()["rest_logins"] == 0
        primary = deployment.admin_status()["failover"]["accounts"]["primary"]
        assert primary["healthy"] is False
        assert "TLS" in primary["last_failure"]
    finally:
        deployment.primary.stop()


def test_untrusted_certificate_is_refused_and_the_failover_serves(
        make_deployment: Callable[..., Deployment], test_ca: trustme.CA) -> None:
    stranger = trustme.CA()
    deployment = _deployment_with_primary(make_deployment, test_ca, server_context(stranger, "primary.test"))
    try:
        token = deployment.rest_token()
        assert deployment.send_email(token, "untrusted@example.com").status_code == 200
        assert delivered_to(deployment.failover, "untrusted@example.com") == 1
        assert deployment.primary.stats()["rest_logins"] == 0
        assert "TLS" in deployment.admin_status()["failover"]["accounts"]["primary"]["last_failure"]
    finally:
        deployment.primary.stop()
