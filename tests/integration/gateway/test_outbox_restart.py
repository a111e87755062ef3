"""Nothing accepted is lost: a send that no account can take is committed, then delivered after a restart."""

from __future__ import annotations

import httpx

from tests.integration.gateway.conftest import Deployment, delivered_to
from tests.support.servers import wait_until


def _assert_queued(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"status", "requestId"} and body["status"] == "queued"
    request_id = body["requestId"]
    assert isinstance(request_id, str) and request_id
    # Without an X-Request-Id of the app's, the answer's is this request's own gateway id; a keyed repeat
    # is told the id of the send that holds the key in the body.
    assert response.headers["X-Request-Id"]
    return request_id


def _outbox_depth(deployment: Deployment) -> int:
    depth: int = deployment.admin_status()["outbox"]["depth"]
    return depth


def test_queued_send_is_delivered_after_a_gateway_restart(deployment: Deployment) -> None:
    token = deployment.rest_token()
    deployment.primary.set_mode("refuse")
    deployment.failover.set_mode("refuse")
    _assert_queued(deployment.send_email(token, "queued@example.com"))
    assert _outbox_depth(deployment) == 1
    deployment.stop_gateway()  # the outbox row is all that remains of the send
    assert deployment.primary.deliveries() == [] and deployment.failover.deliveries() == []

    deployment.primary.set_mode("ok")
    deployment.failover.set_mode("ok")
    deployment.start_gateway()  # a new process's worth of state, on the same store

    def delivered() -> int:
        return (delivered_to(deployment.primary, "queued@example.com")
                + delivered_to(deployment.failover, "queued@example.com"))

    # Either account may take it: while both refused, traffic swung between them (last resort), and the
    # stored verdict the new process starts from keeps the failover active until the primary's hold_time.
    wait_until(lambda: delivered() == 1, timeout=20, message="the queued send to be delivered after the restart")
    wait_until(lambda: _outbox_depth(deployment) == 0, timeout=10, message="an empty outbox")
    assert delivered() == 1
    assert len(deployment.primary.deliveries()) + len(deployment.failover.deliveries()) == 1


def test_keyed_retry_while_queued_is_the_same_send(deployment: Deployment) -> None:
    token = deployment.rest_token()
    deployment.primary.set_mode("refuse")
    deployment.failover.set_mode("refuse")
    first = _assert_queued(deployment.send_email(token, "keyed-queued@example.com", key="order-77"))
    assert _outbox_depth(deployment) == 1  # still queued: neither account takes connections
    again = _assert_queued(deployment.send_email(token, "keyed-queued@example.com", key="order-77"))
    assert again == first
    assert _outbox_depth(deployment) == 1  # the retry did not queue a second copy

    deployment.primary.set_mode("ok")
    deployment.failover.set_mode("ok")
    wait_until(lambda: delivered_to(deployment.primary, "keyed-queued@example.com")
               + delivered_to(deployment.failover, "keyed-queued@example.com") == 1,
               timeout=20, message="the queued send to be delivered")
    wait_until(lambda: _outbox_depth(deployment) == 0, timeout=10, message="an empty outbox")
    after = deployment.send_email(token, "keyed-queued@example.com", key="order-77")
    assert after.status_code == 200, after.text  # the delivered outcome, replayed
    assert after.json()[0]["success"] is True
    keyed = [d for d in deployment.primary.deliveries() + deployment.failover.deliveries()
             if "keyed-queued@example.com" in d.recipient]
    assert len(keyed) == 1 and keyed[0].idempotency_key == "order-77"

