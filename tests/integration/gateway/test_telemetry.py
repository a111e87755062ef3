"""Traces exported over real OTLP/HTTP to a receiver started here, metrics scraped from /metrics.

The receiver decodes the protobuf exports; the tests assert the span tree of a request that failed
over and re-authenticated, the link from a queued send's delivery to the request that queued it, and
that no secret is in any attribute.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.gateway.conftest import (
    ADMIN_TOKEN,
    APP_PASSWORD,
    EMAIL_PATH,
    Deployment,
    delivered_to,
    email_body,
)
from tests.support.otlp import Receiver, Span
from tests.support.servers import wait_until

APP_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
APP_SPAN_ID = "00f067aa0ba902b7"


def children(spans: list[Span], parent: Span, name: str) -> list[Span]:
    return [s for s in spans if s.parent_id == parent.span_id and s.name == name]


SHOWN = ("aftm.account", "aftm.attempt", "aftm.outcome", "aftm.failure", "aftm.failover_reason",
         "aftm.after_relogin", "network.peer.address", "dns.question.name", "dns.answers",
         "http.response.status_code")
EXPECTED_TREE = """\
POST rest http.response.status_code=200
  upstream attempt aftm.account=primary aftm.attempt=1 aftm.outcome=account_failure aftm.failure=connect \
aftm.failover_reason=connect aftm.after_relogin=False
    dns resolve dns.question.name=primary.test dns.answers=['127.0.0.2']
  upstream attempt aftm.account=failover aftm.attempt=2 aftm.outcome=session_invalid aftm.after_relogin=False \
network.peer.address=127.0.0.3
    dns resolve dns.question.name=failover.test dns.answers=['127.0.0.3']
  upstream attempt aftm.account=failover aftm.attempt=3 aftm.outcome=ok aftm.after_relogin=True \
network.peer.address=127.0.0.3
    upstream login aftm.account=failover
      dns resolve dns.question.name=failover.test dns.answers=['127.0.0.3']
    dns resolve dns.question.name=failover.test dns.answers=['127.0.0.3']"""


def render_tree(spans: list[Span], root: Span, depth: int = 0) -> str:
    """One line per span, children in start order, with the attributes worth showing."""
    shown = " ".join(f"{k}={root.attributes[k]}" for k in SHOWN if k in root.attributes)
    lines = ["  " * depth + f"{root.name} {shown}".rstrip()]
    for child in sorted((s for s in spans if s.parent_id == root.span_id), key=lambda s: s.start):
        lines.append(render_tree(spans, child, depth + 1))
    return "\n".join(lines)


def test_a_failed_over_and_reauthenticated_request_is_one_trace(
        otlp: Receiver, make_deployment: Callable[..., Deployment]) -> None:
    deployment = make_deployment(start=False)
    deployment.start_gateway()
    token = deployment.rest_token()
    # Warm a session on each account (the failover one through the operator override), then make
    # the primary refuse and the failover account's session invalid.
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with deployment.http() as client:
        assert deployment.send_email(token, "warm@example.com", client=client).status_code == 200
        client.post("/admin/override", json={"account": "failover"}, headers=admin).raise_for_status()
        assert deployment.send_email(token, "warm-failover@example.com", client=client).status_code == 200
        client.post("/admin/override", json={"account": None}, headers=admin).raise_for_status()
    deployment.wait_active("primary")
    deployment.primary.set_mode("refuse")
    deployment.failover.invalidate()
    headers = {"Authorization": token, "Content-Type": "application/json",
               "traceparent": f"00-{APP_TRACE_ID}-{APP_SPAN_ID}-01"}
    with deployment.http() as client:
        response = client.post(EMAIL_PATH, headers=headers, content=email_body("traced@example.com"))
    assert response.status_code == 200, response.text
    assert delivered_to(deployment.failover, "traced@example.com") == 1

    def trace_complete() -> bool:
        traced = [s for s in otlp.spans if s.trace_id == APP_TRACE_ID]
        return any(s.name == "upstream login" for s in traced) and len(
            [s for s in traced if s.name == "upstream attempt"]) >= 3

    wait_until(trace_complete, timeout=15, message="the request's spans to reach the receiver")
    spans = [s for s in otlp.spans if s.trace_id == APP_TRACE_ID]
    (server,) = [s for s in spans if s.name == "POST rest"]
    assert server.parent_id == APP_SPAN_ID  # the app's trace continues
    assert server.attributes["http.response.status_code"] == 200
    assert server.resource["service.name"] == "aftm-gateway-test"
    attempts = sorted(children(spans, server, "upstream attempt"), key=lambda s: s.attributes["aftm.attempt"])
    assert [(a.attributes["aftm.account"], a.attributes["aftm.outcome"]) for a in attempts] == [
        ("primary", "account_failure"), ("failover", "session_invalid"), ("failover", "ok")]
    refused, invalid, replayed = attempts
    assert refused.attributes["aftm.failure"] == "connect"
    assert refused.attributes["aftm.failover_reason"] == "connect"
    assert replayed.attributes["aftm.after_relogin"] is True
    assert invalid.attributes["aftm.after_relogin"] is False
    assert replayed.attributes["network.peer.address"] == "127.0.0.3"
    assert replayed.attributes["tls.protocol.version"] in ("TLSv1.2", "TLSv1.3")
    (login,) = children(spans, replayed, "upstream login")
    assert login.attributes == {"aftm.account": "failover", "aftm.protocol": "rest"}
    (dns,) = children(spans, replayed, "dns resolve")
    assert dns.attributes == {"dns.question.name": "failover.test", "dns.answers": ["127.0.0.3"]}
    assert children(spans, refused, "dns resolve")[0].attributes["dns.answers"] == ["127.0.0.2"]
    # The upstream got the trace context of the attempt that carried the send.
    (delivery,) = [d for d in deployment.failover.deliveries() if "traced@" in d.recipient]
    assert delivery.traceparent is not None
    assert delivery.traceparent.split("-")[1:3] == [APP_TRACE_ID, replayed.span_id]
    # The whole tree, as an operator sees it in the tracing backend.
    assert render_tree(spans, server) == EXPECTED_TREE
    # Nothing secret in any attribute of any span.
    secrets = ("primary-password", "failover-password", APP_PASSWORD, token)
    text = repr([(s.attributes, s.resource) for s in otlp.spans])
    assert not any(secret in text for secret in secrets)


def test_a_queued_sends_delivery_is_linked_to_the_request_that_queued_it(
        otlp: Receiver, make_deployment: Callable[..., Deployment]) -> None:
    deployment = make_deployment(requests={"deadline": 0.5})
    token = deployment.rest_token()
    deployment.primary.throttle(2, retry_after="1")
    deployment.failover.throttle(2, retry_after="1")
    response = deployment.send_email(token, "queued@example.com")
    assert response.status_code == 202, response.text
    wait_until(lambda: bool(otlp.named("outbox delivery")), timeout=20,
               message="the outbox delivery span")
    queued_request = [s for s in otlp.spans if s.name == "POST rest" and s.attributes.get(
        "http.response.status_code") == 202]
    (delivery,) = otlp.named("outbox delivery")
    assert delivery.links == [queued_request[0].trace_id]
    assert delivery.trace_id != queued_request[0].trace_id  # a trace of its own, linked
    assert delivery.attributes["aftm.request_id"] == response.json()["requestId"]
    attempts = [s for s in otlp.spans if s.parent_id == delivery.span_id and s.name == "upstream attempt"]
    wait_until(lambda: delivered_to(deployment.primary, "queued@example.com")
               + delivered_to(deployment.failover, "queued@example.com") == 1, timeout=10,
               message="the queued send delivered")
    assert attempts  # the delivery's own upstream attempts are its children


def metric_samples(deployment: Deployment) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with deployment.http() as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def test_metrics_count_requests_attempts_logins_handshakes_and_dns(deployment: Deployment) -> None:
    token = deployment.rest_token()
    for i in range(3):
        assert deployment.send_email(token, f"metric-{i}@example.com").status_code == 200
    deployment.primary.throttle(1, retry_after="0")
    assert deployment.send_email(token, "metric-throttled@example.com").status_code == 200
    samples = metric_samples(deployment)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, frozenset(labels.items())), 0.0)

    assert value("aftm_requests_total", route="rest", account="primary", outcome="answered") == 4
    assert value("aftm_upstream_attempts_total", account="primary", outcome="ok") == 4
    assert value("aftm_upstream_attempts_total", account="primary", outcome="throttled") == 1
    assert value("aftm_upstream_throttled_total", account="primary") == 1
    assert value("aftm_upstream_logins_total", account="primary", protocol="rest") == 1
    handshakes = sum(v for (name, _), v in samples.items() if name == "aftm_tls_handshakes_total")
    # Each new TLS connection counts once (the inner transport reports the connection it was handed).
    # Sequential calls reuse one pooled connection; a health probe (every 0.2 s here) that overlaps a
    # call opens another, so the exact count depends on timing: at least the first handshake, and far
    # fewer than the 10 requests (login, 4 sends, a throttled retry, probes) a per-request handshake gives.
    assert 1 <= handshakes <= 5
    assert value("aftm_dns_resolution_duration_seconds_count", result="ok") >= 6  # logins and sends each resolve
    assert value("aftm_active_account", account="primary") == 1
    assert value("aftm_active_account", account="failover") == 0
    assert value("aftm_outbox_depth") == 0
    assert value("aftm_request_duration_seconds_count", route="rest", status_class="2xx") == 4
    assert "primary-password" not in repr(samples)
