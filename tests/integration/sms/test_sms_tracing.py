"""An SMS's life as traces: the app's submit, the outbox delivery that sends it (one upstream attempt
with the aggregator's address and TLS version), and the alternate's delivery after the carrier failed."""

from __future__ import annotations

from collections.abc import Callable

from tests.support.otlp import Receiver
from tests.support.servers import wait_until
from tests.support.sms import LONG_CODE, SHORT_CODE, SmsDeployment


def test_each_sms_send_is_an_outbox_delivery_with_an_upstream_attempt(
        otlp: Receiver, make_sms: Callable[..., SmsDeployment]) -> None:
    sms = make_sms()
    sms.aggregator.rule("fail", source=SHORT_CODE)
    original = sms.submit(level="NONE")
    alternate = sms.wait_status(original, "Forwarded")["fwdToMessageId"]
    sms.wait_status(alternate, "Delivered")

    wait_until(lambda: len(otlp.named("upstream attempt", **{"aftm.account": "sms1"})) >= 2, timeout=15,
               message="two SMS upstream attempts exported")
    (submit,) = [s for s in otlp.spans if s.name == "POST sms" and s.attributes["http.response.status_code"] == 201]
    receipts = [s for s in otlp.spans if s.name == "POST sms" and s.attributes["http.response.status_code"] == 200]
    assert receipts  # the aggregator's receipts are app-facing requests too, traced the same way
    sends = [s for s in otlp.named("outbox delivery")
             if any(c.parent_id == s.span_id and c.name == "upstream attempt" for c in otlp.spans)]
    assert len(sends) == 2
    assert submit.trace_id in {link for s in sends for link in s.links}  # the first send links to the submit
    attempts = otlp.named("upstream attempt", **{"aftm.account": "sms1"})
    assert {a.attributes["aftm.outcome"] for a in attempts} == {"ok"}
    assert all(a.attributes["network.peer.address"] == "127.0.0.4" for a in attempts)
    assert all(a.attributes.get("tls.protocol.version") in ("TLSv1.2", "TLSv1.3") for a in attempts), [
        sorted(a.attributes.items()) for a in attempts]
    # The aggregator took both: the original from the short code, the alternate from the long code.
    assert sorted(m.source for m in sms.aggregator.messages()) == sorted([SHORT_CODE, LONG_CODE])
