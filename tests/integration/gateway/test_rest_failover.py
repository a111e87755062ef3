"""REST through the gateway: sessions are the gateway's, failover and failback are invisible."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx

from tests.integration.gateway.conftest import (
    ADMIN_TOKEN,
    APP_PASSWORD,
    APP_USER,
    EMAIL_PATH,
    Deployment,
    delivered_to,
    email_body,
)


def test_login_is_answered_by_the_gateway_with_its_own_endpoint(deployment: Deployment) -> None:
    with deployment.http() as client:
        response = client.post("/rest/api/v1.3/auth/token",
                               data={"user_name": APP_USER, "password": APP_PASSWORD, "auth_type": "password"})
    body = response.json()
    assert response.status_code == 200
    assert set(body) == {"authToken", "issuedAt", "endPoint"}
    assert body["endPoint"] == deployment.url
    assert deployment.primary.stats()["rest_logins"] == 0  # nothing went upstream


def test_wrong_client_credentials_get_the_vendor_error_and_nothing_is_forwarded(deployment: Deployment) -> None:
    with deployment.http() as client:
        response = client.post("/rest/api/v1.3/auth/token",
                               data={"user_name": APP_USER, "password": "wrong", "auth_type": "password"})
        send = client.post(EMAIL_PATH, content=email_body("x@example.com"),
                           headers={"Authorization": "forged", "Content-Type": "application/json"})
    assert response.status_code == 401
    assert response.json()["errorCode"] == "AUTHENTICATION_FAILED"
    assert send.status_code == 401 and send.json()["errorCode"] == "INVALID_TOKEN"
    assert deployment.primary.deliveries() == [] and deployment.primary.stats()["rest_logins"] == 0


def test_token_refresh_gives_a_new_working_token(deployment: Deployment) -> None:
    token = deployment.rest_token()
    with deployment.http() as client:
        refreshed = client.post("/rest/api/v1.3/auth/token", data={"auth_type": "token"},
                                headers={"Authorization": token})
    assert refreshed.status_code == 200
    new_token = refreshed.json()["authToken"]
    assert new_token != token
    assert deployment.send_email(new_token, "refresh@example.com").status_code == 200


def test_send_goes_to_the_primary_with_the_accounts_own_login(deployment: Deployment) -> None:
    token = deployment.rest_token()
    response = deployment.send_email(token, "first@example.com")
    assert response.status_code == 200, response.text
    assert response.json()[0]["success"] is True
    assert delivered_to(deployment.primary, "first@example.com") == 1
    assert delivered_to(deployment.failover, "first@example.com") == 0
    assert deployment.primary.stats()["rest_logins"] == 1


def test_failover_on_refused_connection_is_invisible_to_the_app(deployment: Deployment) -> None:
    token = deployment.rest_token()
    assert deployment.send_email(token, "before@example.com").status_code == 200
    deployment.primary.set_mode("refuse")
    responses = [deployment.send_email(token, f"during-{i}@example.com") for i in range(5)]
    assert [r.status_code for r in responses] == [200] * 5
    assert all(delivered_to(deployment.failover, f"during-{i}@example.com") == 1 for i in range(5))
    assert deployment.admin_status()["active"] == "failover"


def test_failover_on_503_storm_and_back_after_hold_time(deployment: Deployment) -> None:
    token = deployment.rest_token()
    deployment.primary.set_mode("http503")
    assert deployment.send_email(token, "storm@example.com").status_code == 200
    assert delivered_to(deployment.failover, "storm@example.com") == 1
    deployment.wait_active("failover")
    deployment.primary.set_mode("ok")
    deployment.wait_active("primary")  # probes see it healthy, then the hold time passes
    assert deployment.send_email(token, "after@example.com").status_code == 200
    assert delivered_to(deployment.primary, "after@example.com") == 1
    switches = deployment.admin_status()["switches"]
    assert switches.get("failover") == 1 and switches.get("failback") == 1


def test_hang_with_idempotency_key_fails_over_without_key_is_reported(deployment: Deployment) -> None:
    token = deployment.rest_token()
    deployment.primary.set_mode("hang")
    keyed = deployment.send_email(token, "keyed@example.com", key="order-1")
    assert keyed.status_code == 200, keyed.text
    assert delivered_to(deployment.failover, "keyed@example.com") == 1
    deployment.primary.set_mode("ok")
    deployment.wait_active("primary")
    deployment.primary.set_mode("hang")
    unkeyed = deployment.send_email(token, "unkeyed@example.com")
    # The primary may have processed it: without a key the gateway must not send it again elsewhere.
    assert unkeyed.status_code == 504
    assert unkeyed.json()["errorCode"] == "UPSTREAM_TIMEOUT"
    assert delivered_to(deployment.failover, "unkeyed@example.com") == 0


def test_repeated_idempotency_key_returns_the_first_answer_without_sending(deployment: Deployment) -> None:
    token = deployment.rest_token()
    first = deployment.send_email(token, "once@example.com", key="k-1")
    again = [deployment.send_email(token, "once@example.com", key="k-1") for _ in range(4)]
    assert first.status_code == 200
    assert all(r.status_code == 200 and r.content == first.content for r in again)
    assert delivered_to(deployment.primary, "once@example.com") == 1


async def test_invalid_token_burst_causes_one_upstream_login(deployment: Deployment) -> None:
    token = deployment.rest_token()
    assert deployment.send_email(token, "warm@example.com").status_code == 200
    logins_before = deployment.primary.stats()["rest_logins"]
    deployment.primary.invalidate()
    headers = {"Authorization": token, "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=deployment.url, timeout=30, limits=limits, trust_env=False) as client:
        responses = await asyncio.gather(*(
            client.post(EMAIL_PATH, content=email_body(f"burst-{i}@example.com"), headers=headers)
            for i in range(100)))
    assert [r.status_code for r in responses] == [200] * 100
    assert not any("INVALID_TOKEN" in r.text for r in responses)
    assert deployment.primary.stats()["rest_logins"] == logins_before + 1
    assert len(deployment.primary.deliveries()) == 101


def test_throttling_is_absorbed_honouring_retry_after(deployment: Deployment) -> None:
    token = deployment.rest_token()
    deployment.primary.throttle(2, retry_after="1")
    response = deployment.send_email(token, "throttled@example.com")
    assert response.status_code == 200, response.text
    assert delivered_to(deployment.primary, "throttled@example.com") == 1
    assert deployment.primary.stats()["calls_by_status"].get("429") == 2


def test_not_allowed_in_secondary_is_passed_to_the_app(make_deployment: Callable[..., Deployment]) -> None:
    deployment = make_deployment(start=False)
    accounts = deployment.raw_config("http://unused")["accounts"]
    del accounts[1]["api_prefix"]  # the failover account is then asked for /rest/api, which it refuses
    deployment.overrides = {"accounts": accounts}
    deployment.start_gateway()
    token = deployment.rest_token()
    with deployment.http() as client:
        client.post("/admin/override", json={"account": "failover"},
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).raise_for_status()
    response = deployment.send_email(token, "secondary@example.com")
    assert response.status_code == 401
    assert json.loads(response.content)["errorCode"] == "API_NOT_ALLOWED_IN_SECONDARY"
    # neither a reason to log in again nor an account failure
    assert deployment.failover.stats()["rest_logins"] == 1
    assert deployment.primary.deliveries() == []
    assert deployment.admin_status()["failover"]["accounts"]["failover"]["healthy"] is True


def test_unrecoverable_exception_is_resent_elsewhere_only_with_a_key(deployment: Deployment) -> None:
    token = deployment.rest_token()
    assert deployment.send_email(token, "warm-up@example.com").status_code == 200  # upstream login done
    deployment.primary.unrecoverable(1)
    unkeyed = deployment.send_email(token, "unrecoverable@example.com")
    # the vendor's own 500 reaches the app: the primary may have processed it, so nothing is resent
    assert unkeyed.status_code == 500 and unkeyed.json()["errorCode"] == "UNRECOVERABLE_EXCEPTION"
    assert delivered_to(deployment.failover, "unrecoverable@example.com") == 0
    deployment.primary.unrecoverable(1)
    keyed = deployment.send_email(token, "unrecoverable-keyed@example.com", key="u-1")
    assert keyed.status_code == 200
    total = delivered_to(deployment.primary, "unrecoverable-keyed@example.com") + \
        delivered_to(deployment.failover, "unrecoverable-keyed@example.com")
    assert total == 1


async def test_concurrent_requests_with_one_key_send_once(deployment: Deployment) -> None:
    token = deployment.rest_token()
    assert deployment.send_email(token, "warm@example.com").status_code == 200
    deployment.primary.latency(300)  # the first request is still in flight when the others arrive
    headers = {"Authorization": token, "Content-Type": "application/json", "Idempotency-Key": "same-order"}
    async with httpx.AsyncClient(base_url=deployment.url, timeout=30, trust_env=False) as client:
        responses = await asyncio.gather(*(
            client.post(EMAIL_PATH, content=email_body("together@example.com"), headers=headers) for _ in range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert len({r.content for r in responses}) == 1
    assert delivered_to(deployment.primary, "together@example.com") == 1
