"""Receipts: only at the URL the gateway handed out; duplicates, strays and late ones change nothing."""

from __future__ import annotations

import threading

import httpx

from tests.support.servers import wait_until
from tests.support.sms import SHORT_CODE, SmsDeployment, receipt


def post(url: str, body: bytes) -> httpx.Response:
    return httpx.post(url, content=body, headers={"Content-Type": "application/xml"}, trust_env=False, timeout=10)


def sent_message(sms: SmsDeployment, **message: object) -> tuple[str, str]:
    """A message the aggregator took and will never report on: (gateway messageId, upstream messageId)."""
    sms.aggregator.rule("no_receipt", source=SHORT_CODE)
    message_id = sms.submit(**message)
    view = sms.wait_status(message_id, "Sent")
    [taken] = [m for m in sms.aggregator.messages() if m.submitter_message_id == message_id]
    assert taken.message_id is not None and view["upstream"] == "sms1"
    return message_id, taken.message_id


def test_a_failure_receipt_posted_twice_at_once_forwards_once(sms: SmsDeployment) -> None:
    message_id, upstream_id = sent_message(sms, level="ALL")
    url = sms.receipt_url(upstream_id)
    answers: list[int] = []
    start = threading.Barrier(4)

    def deliver() -> None:
        start.wait()
        answers.append(post(url, receipt(upstream_id, failed=True)).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 4
    view = sms.wait_status(message_id, "Forwarded")
    assert len(sms.find("239487234987234")) == 2  # one alternate, whatever the race
    ignored = [h for h in view["history"] if h["kind"] == "receipt"]
    assert len(ignored) == 3 and all("ignored" in h["description"] for h in ignored)
    # The alternate goes out once, and the app hears of the original's failure once.
    wait_until(lambda: sms.aggregator.counts()["by_sender"].get("+13125550100") == 1,
               message="the alternate to reach the aggregator")
    failures = [p for p in sms.receiver.wait_for(1) if p.xml.get("messageId") == message_id]
    assert len(failures) == 1


def test_a_late_duplicate_of_a_delivery_receipt_is_acknowledged_and_changes_nothing(sms: SmsDeployment) -> None:
    message_id, upstream_id = sent_message(sms, level="ALL")
    url = sms.receipt_url(upstream_id)
    assert post(url, receipt(upstream_id, failed=False)).status_code == 200
    sms.wait_status(message_id, "Delivered")
    assert post(url, receipt(upstream_id, failed=False)).status_code == 200
    assert post(url, receipt(upstream_id, failed=True)).status_code == 200  # a contradiction, too late
    view = sms.status(message_id)
    assert view["status"] == "Delivered" and view["fwdToMessageId"] is None
    assert [h["description"].split(":")[0] for h in view["history"] if h["kind"] == "receipt"] == [
        f"receipt for {upstream_id} ignored"] * 2
    assert len(sms.receiver.wait_for(1)) == 1


def test_a_receipt_about_an_unknown_upstream_message_is_recorded_and_changes_nothing(sms: SmsDeployment) -> None:
    message_id, upstream_id = sent_message(sms, level="ALL")
    answer = post(sms.receipt_url(upstream_id), receipt("SIM-SOMEONE-ELSE", failed=True))
    assert answer.status_code == 200
    view = sms.status(message_id)
    assert view["status"] == "Sent"
    assert "SIM-SOMEONE-ELSE" in view["history"][-1]["description"]
    assert sms.receiver.posts == []


def test_a_forged_receipt_is_refused_and_changes_nothing(sms: SmsDeployment) -> None:
    message_id, upstream_id = sent_message(sms, level="ALL")
    good = sms.receipt_url(upstream_id)
    forged = good.rsplit("/", 1)[0] + "/not-the-token"
    unknown = good.replace(message_id, "00000000-0000-4000-8000-000000000000")
    for url in (forged, unknown, good.rsplit("/", 1)[0]):
        answer = post(url, receipt(upstream_id, failed=True))
        assert answer.status_code in (401, 403, 404, 405), url
        assert b"Traceback" not in answer.content
    view = sms.status(message_id)
    assert view["status"] == "Sent" and view["fwdToMessageId"] is None
    assert not [h for h in view["history"] if h["kind"] == "receipt"]
    assert sms.receiver.posts == [] and len(sms.find("239487234987234")) == 1


def test_an_unreadable_receipt_is_a_400_in_the_vendors_shape(sms: SmsDeployment) -> None:
    message_id, upstream_id = sent_message(sms, level="NONE")
    url = sms.receipt_url(upstream_id)
    for body in (b"not xml", b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><mtMessageResponse/>',
                 b'<mtMessageResponse messageId="x"><status isError="maybe"/></mtMessageResponse>', b"<other/>"):
        answer = post(url, body)
        assert answer.status_code == 400, body
        assert b"<mtMessageResponse>" in answer.content and b'isError="true"' in answer.content
    assert sms.status(message_id)["status"] == "Sent"
