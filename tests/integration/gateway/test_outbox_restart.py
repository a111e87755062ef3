"""Nothing accepted is lost: a send that no account can take is committed, then delivered after a restart."""

from __future__ import annotations

from tests.integration.gateway.conftest import Deployment, delivered_to
from tests.support.servers import wait_until


def test_queued_send_is_delivered_after_a_gateway_restart(deployment: Deployment) -> None:
    token = deployment.rest_token()
    deployment.primary.set_mode("refuse")
    deployment.failover.set_mode("refuse")
    queued = deployment.send_email(token, "queued@example.com")
    assert queued.status_code == 202, queued.text
    body = queued.json()
    assert body["status"] == "queued" and body["requestId"]
    deployment.stop_gateway()  # the outbox item is all that remains of the send
    deployment.primary.set_mode("ok")
    deployment.failover.set_mode("ok")
    deployment.start_gateway()
    wait_until(lambda: delivered_to(deployment.primary, "queued@example.com")
               + delivered_to(deployment.failover, "queued@example.com") == 1,
               timeout=30, message="the queued send to be delivered after the restart")
    wait_until(lambda: deployment.admin_status()["outbox"]["depth"] == 0, timeout=10, message="an empty outbox")
    assert delivered_to(deployment.primary, "queued@example.com") + \
        delivered_to(deployment.failover, "queued@example.com") == 1


def test_keyed_retry_while_queued_is_the_same_send(deployment: Deployment) -> None:
    token = deployment.rest_token()
    deployment.primary.set_mode("refuse")
    deployment.failover.set_mode("refuse")
    first = deployment.send_email(token, "keyed-queued@example.com", key="order-77")
    again = deployment.send_email(token, "keyed-queued@example.com", key="order-77")
    assert first.status_code == again.status_code == 202
    assert first.json()["requestId"] == again.json()["requestId"]
    deployment.primary.set_mode("ok")
    deployment.failover.set_mode("ok")
    wait_until(lambda: deployment.admin_status()["outbox"]["depth"] == 0, timeout=30,
               message="the queued send to be delivered")
    after = deployment.send_email(token, "keyed-queued@example.com", key="order-77")
    assert after.status_code == 200  # the first outcome, replayed
    total = delivered_to(deployment.primary, "keyed-queued@example.com") + \
        delivered_to(deployment.failover, "keyed-queued@example.com")
    assert total == 1
