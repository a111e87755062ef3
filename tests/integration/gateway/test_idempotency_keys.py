"""An Idempotency-Key makes a repeat of one request the same send, and never makes two requests one.

A careless app reuses a key: an unset template variable (an empty key), one key for every message of
an order, a key first used on REST and again on SOAP. Each of those used to get the first send's
answer replayed, so the app believed a send that never left the gateway had gone out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import pytest

from gateway.protocols import responsys_soap as soap
from tests.integration.gateway.conftest import APP_PASSWORD, APP_USER, EMAIL_PATH, Deployment, email_body
from tests.support.servers import wait_until

SOAP_PATH = "/webservices/services/ResponsysWSService"
FAULT_NS = "urn:fault.ws.rsys.com"


def _send(client: httpx.Client, token: str, address: str, *, path: str = EMAIL_PATH,
          headers: list[tuple[str, str]] | None = None) -> httpx.Response:
    return client.post(path, content=email_body(address),
                       headers=[("Authorization", token), ("Content-Type", "application/json"), *(headers or [])])


def _delivered(deployment: Deployment, address: str) -> int:
    return sum(1 for d in deployment.primary.deliveries() + deployment.failover.deliveries() if address in d.recipient)


def _rest_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["errorCode"] == code


@pytest.mark.parametrize("headers", [
    [("Idempotency-Key", "")],  # an unset template variable
    [("Idempotency-Key", "k" * 256)],  # longer than any key scheme needs; would be stored per send
], ids=["empty", "too-long"])
def test_an_unusable_idempotency_key_is_refused_and_never_merges_two_sends(
        deployment: Deployment, headers: list[tuple[str, str]]) -> None:
    token = deployment.rest_token()
    with deployment.http() as client:
        for address in ("unusable-1@example.com", "unusable-2@example.com"):
            _rest_error(_send(client, token, address, headers=headers), 400, "INVALID_REQUEST")
    # Before: the empty key made the second send a replay of the first (200, never delivered).
    assert _delivered(deployment, "unusable-") == 0
    assert deployment.primary.forwarded() == []


def test_two_different_idempotency_keys_on_one_request_are_refused_and_one_key_twice_is_one_key(
        deployment: Deployment) -> None:
    token = deployment.rest_token()
    with deployment.http() as client:
        two = [("Idempotency-Key", "order-1"), ("Idempotency-Key", "order-2")]
        # Before: the gateway used the first and sent both upstream, each account picking its own.
        _rest_error(_send(client, token, "two-keys@example.com", headers=two), 400, "INVALID_REQUEST")
        twice = [("Idempotency-Key", "order-9"), ("Idempotency-Key", "order-9")]
        first = _send(client, token, "twice@example.com", headers=twice)
        again = _send(client, token, "twice@example.com", headers=[("Idempotency-Key", "order-9")])
    assert (first.status_code, again.status_code) == (200, 200), (first.text, again.text)
    assert again.content == first.content
    assert _delivered(deployment, "twice@example.com") == 1 and _delivered(deployment, "two-keys@") == 0


def test_a_key_reused_for_a_different_send_is_refused_not_answered_with_the_first(deployment: Deployment) -> None:
    token = deployment.rest_token()
    key = [("Idempotency-Key", "order-7")]
    with deployment.http() as client:
        first = _send(client, token, "first@example.com", headers=key)
        other_body = _send(client, token, "second@example.com", headers=key)
        other_path = _send(client, token, "first@example.com", headers=key,
                           path="/rest/api/v1.3/campaigns/goodbye/email")
        repeat = _send(client, token, "first@example.com", headers=key)
    assert first.status_code == 200, first.text
    # Before: both got the first send's 200 replayed, and neither was ever sent.
    _rest_error(other_body, 422, "IDEMPOTENCY_KEY_REUSED")
    _rest_error(other_path, 422, "IDEMPOTENCY_KEY_REUSED")
    assert repeat.status_code == 200 and repeat.content == first.content  # a true repeat is still replayed
    assert _delivered(deployment, "first@example.com") == 1
    assert _delivered(deployment, "second@example.com") == 0


def test_a_key_reused_for_a_different_send_while_the_first_is_queued_is_refused(deployment: Deployment) -> None:
    token = deployment.rest_token()
    deployment.primary.set_mode("refuse")
    deployment.failover.set_mode("refuse")
    key = [("Idempotency-Key", "order-8")]
    with deployment.http() as client:
        first = _send(client, token, "queued-first@example.com", headers=key)
        assert first.status_code == 202, first.text
        other = _send(client, token, "queued-second@example.com", headers=key)
        repeat = _send(client, token, "queued-first@example.com", headers=key)
    # Before: the second send was told 202 with the first's requestId, and was never sent.
    _rest_error(other, 422, "IDEMPOTENCY_KEY_REUSED")
    assert repeat.status_code == 202 and repeat.json()["requestId"] == first.json()["requestId"]
    deployment.primary.set_mode("ok")
    deployment.failover.set_mode("ok")
    wait_until(lambda: _delivered(deployment, "queued-first@example.com") == 1, timeout=20,
               message="the queued send to be delivered")
    assert _delivered(deployment, "queued-second@example.com") == 0


def test_a_key_reused_while_the_first_is_in_flight_on_another_replica_is_refused_at_once(
        make_deployment: Callable[..., Deployment]) -> None:
    deployment = make_deployment(upstream={"read_timeout": 5.0}, requests={"deadline": 8.0})
    token = deployment.rest_token()
    replica = deployment.start_replica()
    try:
        with deployment.http() as client:  # the gateway's upstream login, before the account slows down
            assert _send(client, token, "warm-up@example.com").status_code == 200
        deployment.primary.latency(2500)  # the first send is in flight on the first gateway meanwhile
        key = [("Idempotency-Key", "order-5")]
        answers: list[httpx.Response] = []

        def first_send() -> None:
            with deployment.http() as client:
                answers.append(_send(client, token, "inflight-first@example.com", headers=key))

        sender = threading.Thread(target=first_send)
        sender.start()
        wait_until(lambda: len(deployment.primary.forwarded()) == 2, timeout=10,
                   message="the first send to reach the account")
        with httpx.Client(base_url=replica.url, timeout=15.0, trust_env=False) as client:
            other = _send(client, token, "inflight-second@example.com", headers=key)
        sender.join(timeout=15)
    finally:
        replica.stop()
    # Before: the second waited for the first's answer and got it replayed (200), never sent.
    _rest_error(other, 422, "IDEMPOTENCY_KEY_REUSED")
    assert [a.status_code for a in answers] == [200]
    assert _delivered(deployment, "inflight-first@example.com") == 1
    assert _delivered(deployment, "inflight-second@example.com") == 0


def test_a_rest_key_reused_on_a_soap_send_gets_a_soap_fault_not_the_rest_answer(deployment: Deployment) -> None:
    token = deployment.rest_token()
    with deployment.http() as client:
        assert _send(client, token, "rest@example.com", headers=[("Idempotency-Key", "order-3")]).status_code == 200
        login = client.post(SOAP_PATH, content=soap.login_request(APP_USER, APP_PASSWORD),
                            headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})
        session_id = soap.parse_login(login.status_code, login.content)
        envelope = (
            f'<s:Envelope xmlns:s="{soap.SOAP_ENV}" xmlns:r="{soap.WS_NS}"><s:Header><r:SessionHeader>'
            f"<r:sessionId>{session_id}</r:sessionId></r:SessionHeader></s:Header><s:Body><r:triggerCustomEvent>"
            "<r:customEvent><r:eventName>ORDER</r:eventName></r:customEvent><r:recipientData><r:recipient>"
            "<r:listName><r:folderName>F</r:folderName><r:objectName>L</r:objectName></r:listName>"
            "<r:emailAddress>soap-reuse@example.com</r:emailAddress></r:recipient></r:recipientData>"
            "</r:triggerCustomEvent></s:Body></s:Envelope>")
        answer = client.post(SOAP_PATH, content=envelope.encode(),
                             headers={"Content-Type": "text/xml; charset=utf-8", "Idempotency-Key": "order-3"})
    # Before: the SOAP client got the REST send's JSON with a 200, and its event was never triggered.
    assert answer.status_code == 400 and answer.headers["content-type"].startswith("text/xml"), answer.text
    assert soap.fault_code(answer.content) == "IDEMPOTENCY_KEY_REUSED"
    assert _delivered(deployment, "soap-reuse@example.com") == 0
