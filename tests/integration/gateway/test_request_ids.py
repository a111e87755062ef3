"""The identity of a send is the gateway's requestId; the app's X-Request-Id is only a label it gets back.

Two apps, or one app twice, reusing an X-Request-Id for different sends while every account is down
each get their send queued and delivered once; only an Idempotency-Key, scoped per client, makes two
requests one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from gateway.store import FailureQuery, FailureRecord, open_store
from tests.integration.gateway.conftest import APP_PASSWORD, APP_USER, EMAIL_PATH, Deployment, email_body
from tests.support.servers import wait_until

OTHER_USER, OTHER_PASSWORD = "other-app", "other-password"


def _two_clients(make_deployment: Callable[..., Deployment], *extra: dict[str, str]) -> Deployment:
    return make_deployment(clients=[{"user_name": APP_USER, "password": APP_PASSWORD},
                                    {"user_name": OTHER_USER, "password": OTHER_PASSWORD}, *extra])


def _send(deployment: Deployment, token: str, address: str, **headers: Any) -> httpx.Response:
    with deployment.http() as client:
        return client.post(EMAIL_PATH, content=email_body(address),
                           headers={"Authorization": token, "Content-Type": "application/json", **headers})


def _delivered(deployment: Deployment, address: str) -> int:
    return sum(1 for d in deployment.primary.deliveries() + deployment.failover.deliveries() if address in d.recipient)


def _failures(deployment: Deployment) -> list[FailureRecord]:
    async def read() -> list[FailureRecord]:
        store = await open_store(f"sqlite:///{deployment.store_path}")
        try:
            return await store.failures(FailureQuery())
        finally:
            await store.close()

    return asyncio.run(read())


def test_sends_reusing_an_x_request_id_are_each_queued_and_delivered_once(
        make_deployment: Callable[..., Deployment]) -> None:
    deployment = _two_clients(make_deployment)
    mine, theirs = deployment.rest_token(APP_USER, APP_PASSWORD), deployment.rest_token(OTHER_USER, OTHER_PASSWORD)
    deployment.primary.set_mode("refuse")
    deployment.failover.set_mode("refuse")
    sends = [(mine, "first@example.com"), (theirs, "theirs@example.com"), (mine, "second@example.com")]
    answers = [_send(deployment, token, address, **{"X-Request-Id": "order-batch-7"}) for token, address in sends]

    assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
    assert [a.headers["X-Request-Id"] for a in answers] == ["order-batch-7"] * 3  # the app's label, echoed
    request_ids = [a.json()["requestId"] for a in answers]
    assert len(set(request_ids)) == 3 and "order-batch-7" not in request_ids  # the gateway's own ids
    assert deployment.admin_status()["outbox"]["depth"] == 3

    deployment.primary.set_mode("ok")
    deployment.failover.set_mode("ok")
    wait_until(lambda: all(_delivered(deployment, address) >= 1 for _, address in sends), timeout=20,
               message="every queued send to be delivered")
    wait_until(lambda: deployment.admin_status()["outbox"]["depth"] == 0, timeout=10, message="an empty outbox")
    assert [_delivered(deployment, address) for _, address in sends] == [1, 1, 1]
    labels = {d.request_id for d in deployment.primary.deliveries() + deployment.failover.deliveries()}
    assert labels == {"order-batch-7"}  # the label still travels upstream, for the vendor's logs


def test_an_unusable_x_request_id_is_replaced_by_the_gateways_request_id(deployment: Deployment) -> None:
    token = deployment.rest_token()
    deployment.primary.set_mode("refuse")
    deployment.failover.set_mode("refuse")
    for bad in ("x" * 129, b"caf\xc3\xa9"):
        answer = _send(deployment, token, "labelled@example.com", **{"X-Request-Id": bad})
        assert answer.status_code == 202, answer.text
        assert answer.headers["X-Request-Id"] == answer.json()["requestId"]
    deployment.primary.set_mode("ok")
    wait_until(lambda: _delivered(deployment, "labelled@example.com") == 2, timeout=20,
               message="both sends to be delivered")
    forwarded = {d.request_id for d in deployment.primary.deliveries()}
    assert "x" * 129 not in forwarded and all(label and label.isascii() for label in forwarded)


def test_a_failure_entry_is_the_gateways_request_with_the_apps_label(deployment: Deployment) -> None:
    token = deployment.rest_token()
    with deployment.http() as client:
        answer = client.post(EMAIL_PATH, content=b"{not json", headers={
            "Authorization": token, "Content-Type": "application/json", "X-Request-Id": "label-42"})
    assert answer.status_code == 400
    wait_until(lambda: len(_failures(deployment)) == 1, timeout=10, message="the failure entry")
    [entry] = _failures(deployment)
    assert entry.correlation_id == "label-42"
    assert entry.send_id and entry.send_id != "label-42"


def test_idempotency_keys_of_clients_whose_names_hold_a_colon_never_meet(
        make_deployment: Callable[..., Deployment]) -> None:
    # Scoped as `client:key`, client "a:b" with key "c" and client "a" with key "b:c" shared one record.
    deployment = make_deployment(clients=[{"user_name": "a:b", "password": "pw-1"},
                                          {"user_name": "a", "password": "pw-2"}])
    first = _send(deployment, deployment.rest_token("a:b", "pw-1"), "colon-1@example.com", **{"Idempotency-Key": "c"})
    second = _send(deployment, deployment.rest_token("a", "pw-2"), "colon-2@example.com", **{"Idempotency-Key": "b:c"})
    assert (first.status_code, second.status_code) == (200, 200), (first.text, second.text)
    assert _delivered(deployment, "colon-1@example.com") == 1
    assert _delivered(deployment, "colon-2@example.com") == 1  # not the first client's answer replayed
