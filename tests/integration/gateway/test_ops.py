"""Ops endpoints and what the gateway writes about itself: health, readiness, admin, logs without secrets."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from gateway.telemetry.logs import JsonFormatter
from tests.integration.gateway.conftest import ADMIN_TOKEN, APP_PASSWORD, Deployment
from tests.support.servers import wait_until


def test_healthz_and_readyz(deployment: Deployment) -> None:
    with deployment.http() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_readyz_stays_ready_when_no_account_is_healthy_because_sends_are_queued(deployment: Deployment) -> None:
    """Taking every replica out of the Service would turn queued 202s into connection errors."""
    deployment.primary.set_mode("refuse")
    deployment.failover.set_mode("refuse")
    with deployment.http() as client:
        wait_until(lambda: client.get("/readyz").json()["healthy_accounts"] == [], timeout=10,
                   message="readyz to report no healthy account")
        ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True and ready.json()["store"] is True
    token = deployment.rest_token()
    assert deployment.send_email(token, "while-down@example.com").status_code == 202


def test_admin_endpoints_need_the_admin_token(deployment: Deployment) -> None:
    with deployment.http() as client:
        assert client.get("/admin/status").status_code == 401
        assert client.get("/admin/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
        refused = client.post("/admin/override", json={"account": "failover"})
        unknown = client.post("/admin/override", json={"account": "nope"},
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert refused.status_code == 401
    assert unknown.status_code == 400 and "nope" in unknown.json()["error"]
    assert deployment.admin_status()["active"] == "primary"


def test_manual_override_moves_traffic_and_back(deployment: Deployment) -> None:
    token = deployment.rest_token()
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with deployment.http() as client:
        client.post("/admin/override", json={"account": "failover"}, headers=auth).raise_for_status()
        assert deployment.send_email(token, "pinned@example.com").status_code == 200
        client.post("/admin/override", json={"account": None}, headers=auth).raise_for_status()
        assert deployment.send_email(token, "auto@example.com").status_code == 200
    assert [d.recipient for d in deployment.failover.deliveries()] == ["EMAIL_ADDRESS_:pinned@example.com"]
    assert [d.recipient for d in deployment.primary.deliveries()] == ["EMAIL_ADDRESS_:auto@example.com"]


def test_status_reports_outbox_and_logins(deployment: Deployment) -> None:
    token = deployment.rest_token()
    deployment.send_email(token, "status@example.com")
    status = deployment.admin_status()
    assert status["outbox"]["depth"] == 0
    assert status["upstream_logins"]["rest"] == {"primary": 1}
    assert set(status["failover"]["accounts"]) == {"primary", "failover"}


def test_logs_never_contain_secrets(deployment: Deployment, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = deployment.rest_token()
    deployment.send_email(token, "log@example.com")
    deployment.primary.invalidate()
    deployment.primary.set_mode("refuse")
    deployment.send_email(token, "log2@example.com")
    deployment.primary.set_mode("ok")
    upstream_tokens = list(deployment.failover.state._tokens) + list(deployment.primary.state._tokens)
    assert upstream_tokens  # the failover account issued a token during the refusal
    formatter = JsonFormatter()
    text = "\n".join(formatter.format(record) for record in caplog.records)
    assert "failover" in text  # the failover was logged: the check below looked at real lines
    for secret in (APP_PASSWORD, "primary-password", "failover-password", token, *upstream_tokens):
        assert secret not in text


def test_rate_limit_is_sized_from_the_vendor_at_start(make_deployment: Callable[..., Deployment]) -> None:
    deployment = make_deployment(start=False)
    accounts = deployment.raw_config("http://unused")["accounts"]
    accounts[0]["rate_limit"] = {"from_vendor": True, "headroom": 0.5}
    deployment.overrides = {"accounts": accounts}
    deployment.start_gateway()
    # the simulator's tightest send limit is 500/min; half of it is the gateway's own ceiling
    wait_until(lambda: deployment.admin_status()["rate_limits_per_minute"].get("primary") == 250.0,
               timeout=10, message="the primary's rate limit to be sized from the vendor")
