"""Nothing is lost across a restart; callbacks are retried and a final failure is recorded; upstreams fail over."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.store import open_store
from tests.support.servers import wait_until
from tests.support.sms import LONG_CODE, SHORT_CODE, SmsDeployment


def test_a_restart_between_the_failure_receipt_and_the_alternate_send_loses_nothing(sms: SmsDeployment) -> None:
    sms.aggregator.rule("fail", source=SHORT_CODE, description="Carrier failure")
    sms.aggregator.sms.hold_receipts()
    original_id = sms.submit(level="ALL")
    sms.wait_status(original_id, "Sent")

    # The aggregator stops taking messages, then its failure receipt reaches the gateway: the original is
    # forwarded and the alternate's send waits in the outbox, which cannot reach the aggregator.
    sms.aggregator.set_mode("refuse")
    sms.aggregator.sms.release_receipts()
    original = sms.wait_status(original_id, "Forwarded")
    alternate_id = original["fwdToMessageId"]
    assert sms.status(alternate_id)["status"] == "Accepted"
    sms.stop_gateway()

    async def pending_send() -> list[str]:
        store = await open_store(f"sqlite:///{sms.store_path}")
        try:
            return [i.id for i in await store.list() if i.protocol == "sms" and i.status.value == "pending"]
        finally:
            await store.close()

    assert asyncio.run(pending_send()) == [f"sms-{alternate_id}"]  # all that remains of the alternate's send
    assert LONG_CODE not in sms.aggregator.counts()["by_sender"]

    sms.aggregator.set_mode("ok")
    sms.start_gateway()  # a new process's worth of state on the same store, and a new public URL
    alternate = sms.wait_status(alternate_id, "Delivered", timeout=30)
    assert alternate["fwdFromMessageId"] == original_id
    assert sms.aggregator.counts()["by_sender"] == {SHORT_CODE: 1, LONG_CODE: 1}
    posts = sms.receiver.wait_for(2)
    assert [p.xml.get("messageId") for p in posts] == [original_id, alternate_id]
    assert posts[1].xml.get("fwdFromMessageId") == original_id


def test_a_callback_is_retried_and_a_final_failure_is_recorded_as_post_out(
        make_sms: Callable[..., SmsDeployment]) -> None:
    sms = make_sms(callbacks={"max_age": 2.5})
    sms.receiver.status = 503
    message_id = sms.submit(level="FINAL")
    sms.wait_status(message_id, "Delivered")

    def post_out() -> bool:
        return any(h.get("errorCode") == "post-out" for h in sms.status(message_id)["history"])

    wait_until(post_out, timeout=20, message="the callback's final failure")
    assert len(sms.receiver.posts) >= 2  # tried more than once before giving up
    [failure] = [h for h in sms.status(message_id)["history"] if h.get("errorCode") == "post-out"]
    assert "503" in failure["description"] and failure["kind"] == "callback"


def test_a_callback_that_fails_once_is_delivered_on_a_retry(sms: SmsDeployment) -> None:
    sms.receiver.status = 500
    message_id = sms.submit(level="ALL")
    sms.receiver.wait_for(1)
    sms.receiver.status = 200
    wait_until(lambda: any(h["kind"] == "callback" and "delivered" in h["description"]
                           for h in sms.status(message_id)["history"]), timeout=20,
               message="the retried callback")
    bodies = {p.body for p in sms.receiver.posts}
    assert len(bodies) == 1  # the same report, sent again


def test_sms_fails_over_to_the_next_upstream_and_is_sent_once(make_sms: Callable[..., SmsDeployment]) -> None:
    sms = make_sms(start=False)
    second = sms.with_second_upstream()
    sms.start_gateway()
    sms.aggregator.set_mode("refuse")
    message_id = sms.submit(level="NONE")
    view = sms.wait_status(message_id, "Delivered")
    assert view["upstream"] == "sms2"
    assert sms.aggregator.messages() == [] and len(second.messages()) == 1
    # and a failure receipt from the second upstream forwards as well
    second.rule("fail", source=SHORT_CODE)
    original = sms.submit(level="NONE", submitter="via-sms2")
    alternate = sms.wait_status(original, "Forwarded")["fwdToMessageId"]
    assert sms.wait_status(alternate, "Delivered")["upstream"] == "sms2"


def test_a_message_no_upstream_takes_in_time_fails_with_a_final_error_callback(
        make_sms: Callable[..., SmsDeployment]) -> None:
    sms = make_sms(sms={"max_age": 1.5})
    sms.aggregator.set_mode("refuse")
    message_id = sms.submit(level="ERROR")
    view = sms.wait_status(message_id, "Failed", timeout=20)
    [failed] = [h for h in view["history"] if h["status"] == "Failed"]
    assert "no SMS upstream took the message" in failed["description"]
    [post] = sms.receiver.wait_for(1)
    assert post.xml.get("messageId") == message_id and post.xml.findtext("type") == "Gateway"
    assert post.xml.find("status").get("isError") == "true"
    assert view["fwdToMessageId"] is None  # not a carrier failure: no alternate
