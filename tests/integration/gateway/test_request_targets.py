"""An app's request target stays under the API it names, and goes upstream byte for byte as checked.

Sent over bare sockets: httpx would normalise the dot segments these tests are about.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.integration.gateway.conftest import Deployment, email_body
from tests.support.raw_http import RawResponse, exchange, request_head
from tests.support.servers import wait_until

REST_ERROR_KEYS = {"type", "title", "errorCode", "detail", "errorDetails"}


def api_targets(deployment: Deployment) -> list[bytes]:
    """Raw targets the accounts received, apart from logins and health probes of the login URL."""
    return [*deployment.primary.forwarded(), *deployment.failover.forwarded()]


def call(deployment: Deployment, method: str, target: bytes, token: str, body: bytes = b"") -> RawResponse:
    headers = [("Authorization", token), ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    return exchange(deployment.url, request_head(method, target, headers) + body)


@pytest.mark.parametrize("target", [
    b"/rest/api/v1.3/../../../admin/secret",
    b"/rest/api/v1.3/campaigns/../../../../admin/secret",
    b"/rest/api/v1.3/%2e%2e/%2E%2E/%2e%2E/admin/secret",
    b"/rest/api/v1.3/campaigns/%2e./%2E./x",
    b"/rest/api/v1.3/campaigns/.%2e/.%2E/x",
    b"/rest/api/v1.3/campaigns/./welcome/email",
    b"/rest/api/v1.3/campaigns/..%2f..%2f..%2fadmin/secret",
    b"/rest/api/v1.3/campaigns/..%2F..%2Fadmin",
    b"/rest/haApi/..%2f..%2fwebservices/services/ResponsysWSService",
    b"/rest/api/v1.3/campaigns/..;/..;/..;/admin",
    b"/rest/api/v1.3/campaigns/x%3Finjected=1",
    b"/rest/api/v1.3/campaigns/x%3finjected=1/email",
    b"/rest/api/v1.3/campaigns/x%23fragment/email",
    b"/rest/api/v1.3/campaigns/a\\..\\..\\admin/email",
    b"/rest/api/v1.3/campaigns/a%5c..%5Cadmin/email",
    b"/rest/api/v1.3/campaigns/a%00b/email",
    b"/rest/api/v1.3/campaigns/a%0d%0aX-Injected:%201/email",
    b"/rest/api/v1.3/campaigns/a%7Fb/email",
    b"/rest/api/v1.3/campaigns/%252e%252e/email",
    b"/rest/api/v1.3/campaigns/a%ZZb/email",
    b"/rest/api/v1.3/campaigns/a%2/email",
    b"/rest/api/v1.3/campaigns/welcome/email?a=%ZZ",
    b"/rest/api/v1.3/campaigns/welcome/email?a=b%",
])
def test_target_that_could_leave_its_api_is_refused_and_nothing_is_forwarded(
        deployment: Deployment, target: bytes) -> None:
    token = deployment.rest_token()
    for method, body in (("GET", b""), ("POST", email_body("x@example.com"))):
        response = call(deployment, method, target, token, body)
        assert response.status in (400, 404), (target, response)
        assert response.headers["content-type"].startswith("application/json")
        error = json.loads(response.body)
        assert set(error) == REST_ERROR_KEYS and error["errorCode"], error
    assert api_targets(deployment) == []


ENCODED_SEND = b"/rest/api/v1.3/campaigns/wel%20come%C3%A9%2B/email"
ENCODED_QUERY = b"?note=a%20b%2Bc&x=%C3%A9"


def test_encoded_campaign_name_and_query_reach_the_account_byte_for_byte(deployment: Deployment) -> None:
    token = deployment.rest_token()
    response = call(deployment, "POST", ENCODED_SEND + ENCODED_QUERY, token, email_body("enc@example.com"))
    assert response.status == 200, response
    assert api_targets(deployment) == [ENCODED_SEND + ENCODED_QUERY]


def test_encoded_target_rewritten_for_a_failover_account_keeps_its_bytes(deployment: Deployment) -> None:
    token = deployment.rest_token()
    deployment.primary.set_mode("refuse")
    response = call(deployment, "POST", ENCODED_SEND + ENCODED_QUERY, token, email_body("ha@example.com"))
    assert response.status == 200, response
    assert deployment.failover.forwarded() == [
        ENCODED_SEND.replace(b"/rest/api/", b"/rest/haApi/") + ENCODED_QUERY]


def test_queued_send_keeps_its_encoded_target_when_the_outbox_delivers_it(
        make_deployment: Callable[..., Deployment]) -> None:
    deployment = make_deployment(requests={"deadline": 1.0})
    token = deployment.rest_token()
    deployment.primary.set_mode("refuse")
    deployment.failover.set_mode("refuse")
    response = call(deployment, "POST", ENCODED_SEND, token, email_body("later@example.com"))
    assert response.status == 202, response
    deployment.primary.set_mode("ok")
    deployment.failover.set_mode("ok")
    wait_until(lambda: api_targets(deployment) != [], timeout=20, message="the outbox to deliver the send")
    assert set(api_targets(deployment)) <= {ENCODED_SEND, ENCODED_SEND.replace(b"/rest/api/", b"/rest/haApi/")}
