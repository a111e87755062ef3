"""A message the carrier fails on its short code is re-sent from the long code, with linked callbacks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.sms import (
    DESTINATION,
    LONELY_SHORT_CODE,
    LONG_CODE,
    SHORT_CODE,
    Posted,
    SmsDeployment,
)

SUBMITTER = "239487234987234"


def report(post: Posted) -> dict[str, str | None]:
    """A callback's facts: root attributes, type, status isError, description, errorCode."""
    root = post.xml
    status = root.find("status")
    assert root.tag == "mtMessageResponse" and status is not None
    assert post.headers["content-type"].startswith("application/xml")
    return {
        "messageId": root.get("messageId"), "submitterMessageId": root.get("submitterMessageId"),
        "fwdToMessageId": root.get("fwdToMessageId"), "fwdFromMessageId": root.get("fwdFromMessageId"),
        "receiptDate": root.get("receiptDate"), "type": root.findtext("type"), "isError": status.get("isError"),
        "description": status.findtext("description"), "errorCode": status.findtext("errorCode"),
    }


def story(view: dict[str, Any]) -> list[str]:
    """The status changes in a message's history, with "Sent" where the upstream's answer was recorded.

    A receipt may overtake the answer to the send it reports on; then the answer is a note after it.
    """
    statuses = [h["status"] for h in view["history"] if h["kind"] == "status"]
    sent = [h for h in view["history"] if (h["description"] or "").startswith("sent through")]
    if len(sent) == 1 and sent[0]["kind"] == "note":
        statuses.insert(1, "Sent")
    return statuses


def print_sequence(level: str, posts: list[Posted]) -> None:
    print(f"\n--- callbacks observed with receiptOption {level} ---")
    for post in posts:
        print(post.body.decode())


def test_failed_receipt_forwards_to_the_long_code_and_all_gets_both_linked_callbacks(sms: SmsDeployment) -> None:
    sms.aggregator.rule("fail", source=SHORT_CODE, description="Carrier failure: subscriber unreachable",
                        error_code="1001")
    original_id = sms.submit(level="ALL")

    posts = sms.receiver.wait_for(2)
    original = sms.wait_status(original_id, "Forwarded")
    alternate_id = original["fwdToMessageId"]
    alternate = sms.wait_status(alternate_id, "Delivered")
    print_sequence("ALL", posts)

    first, second = report(posts[0]), report(posts[1])
    assert first["messageId"] == original_id and first["fwdToMessageId"] == alternate_id
    assert first["fwdFromMessageId"] is None and first["submitterMessageId"] == SUBMITTER
    assert (first["type"], first["isError"], first["errorCode"]) == ("Carrier", "true", "1001")
    assert first["description"] == "Carrier failure: subscriber unreachable"
    assert second["messageId"] == alternate_id and second["fwdFromMessageId"] == original_id
    assert second["fwdToMessageId"] is None and second["submitterMessageId"] == SUBMITTER
    assert (second["type"], second["isError"], second["description"]) == ("Carrier", "false", "Delivered")
    assert all(r["receiptDate"] for r in (first, second))
    assert posts[0].headers["x-aftm-message-id"] == original_id

    # The status API links them both ways, and the history says what happened when.
    assert original["fwdFromMessageId"] is None and alternate["fwdFromMessageId"] == original_id
    assert alternate["source"] == {"address": LONG_CODE, "type": "LC"}
    assert original["source"] == {"address": SHORT_CODE, "type": "SC"}
    assert story(original) == ["Accepted", "Sent", "Forwarded"]
    assert story(alternate) == ["Accepted", "Sent", "Delivered"]
    assert any(h["kind"] == "callback" and "delivered" in h["description"] for h in original["history"])
    assert [m["messageId"] for m in sms.find(SUBMITTER)] == [original_id, alternate_id]

    # The aggregator got it once from each sender, without the alternateDelivery flag.
    assert sms.aggregator.counts() == {"by_destination": {DESTINATION: 2}, "by_sender": {SHORT_CODE: 1, LONG_CODE: 1}}
    assert len(sms.receiver.posts) == 2


def test_final_gets_only_the_alternates_callback(sms: SmsDeployment) -> None:
    sms.aggregator.rule("fail", source=SHORT_CODE, description="Carrier failure: subscriber unreachable")
    original_id = sms.submit(level="FINAL")
    original = sms.wait_status(original_id, "Forwarded")
    alternate_id = original["fwdToMessageId"]
    sms.wait_status(alternate_id, "Delivered")
    [post] = sms.receiver.wait_for(1)
    print_sequence("FINAL", [post])
    only = report(post)
    assert (only["messageId"], only["fwdFromMessageId"], only["isError"]) == (alternate_id, original_id, "false")
    # The alternate's callback is the last thing the gateway does for it; nothing more comes.
    sms.wait_status(alternate_id, "Delivered")
    assert len(sms.receiver.posts) == 1


def test_final_gets_the_originals_success_when_there_was_no_failure(sms: SmsDeployment) -> None:
    message_id = sms.submit(level="FINAL")
    [post] = sms.receiver.wait_for(1)
    assert report(post)["messageId"] == message_id and report(post)["isError"] == "false"
    assert sms.status(message_id)["fwdToMessageId"] is None
    assert sms.aggregator.counts()["by_sender"] == {SHORT_CODE: 1}


def test_immediate_carrier_refusal_is_forwarded_too(sms: SmsDeployment) -> None:
    sms.aggregator.rule("refuse", source=SHORT_CODE, description="Carrier rejected: short code blocked",
                        error_code="1401")
    original_id = sms.submit(level="ALL")
    posts = sms.receiver.wait_for(2)
    original = sms.status(original_id)
    assert original["status"] == "Forwarded"
    assert [h["status"] for h in original["history"] if h["kind"] == "status"] == ["Accepted", "Forwarded"]
    first, second = report(posts[0]), report(posts[1])
    assert (first["description"], first["errorCode"], first["fwdToMessageId"]) == (
        "Carrier rejected: short code blocked", "1401", original["fwdToMessageId"])
    assert second["fwdFromMessageId"] == original_id and second["isError"] == "false"
    assert sms.aggregator.counts()["by_sender"] == {LONG_CODE: 1}  # the refused one was never taken


def test_error_level_reports_only_the_final_failure_of_the_alternate(sms: SmsDeployment) -> None:
    sms.aggregator.rule("fail", destination=DESTINATION, description="Carrier failure: handset off")
    original_id = sms.submit(level="ERROR")
    original = sms.wait_status(original_id, "Forwarded")
    alternate = sms.wait_status(original["fwdToMessageId"], "Failed")
    [post] = sms.receiver.wait_for(1)
    only = report(post)
    assert (only["messageId"], only["fwdFromMessageId"], only["isError"]) == (
        alternate["messageId"], original_id, "true")
    # An alternate is never forwarded again.
    assert alternate["fwdToMessageId"] is None and len(sms.find(SUBMITTER)) == 2


def test_all_reports_both_failures_when_the_alternate_fails_too(sms: SmsDeployment) -> None:
    sms.aggregator.rule("fail", destination=DESTINATION)
    original_id = sms.submit(level="ALL")
    posts = sms.receiver.wait_for(2)
    assert [report(p)["isError"] for p in posts] == ["true", "true"]
    assert report(posts[0])["messageId"] == original_id and report(posts[1])["fwdFromMessageId"] == original_id


def test_a_concatenated_message_is_not_forwarded_and_the_reports_say_why(sms: SmsDeployment) -> None:
    sms.aggregator.rule("fail", source=SHORT_CODE, description="Carrier failure")
    message_id = sms.submit(text="A" * 161, level="ERROR")  # two GSM-7 segments
    view = sms.wait_status(message_id, "Failed")
    [post] = sms.receiver.wait_for(1)
    [failed] = [h for h in view["history"] if h["status"] == "Failed"]
    assert "alternate delivery is not supported for concatenated messages (2 segments)" in failed["description"]
    assert "concatenated" in (report(post)["description"] or "")
    assert report(post)["fwdToMessageId"] is None
    assert view["fwdToMessageId"] is None and len(sms.find(SUBMITTER)) == 1
    assert sms.aggregator.counts()["by_sender"] == {SHORT_CODE: 1}


@pytest.mark.parametrize(("text", "forwarded"), [("é" * 160, True), ("Ж" * 70, True), ("Ж" * 71, False)])
def test_segments_are_counted_per_encoding(make_sms: Callable[..., SmsDeployment], text: str,
                                           forwarded: bool) -> None:
    sms = make_sms()
    sms.aggregator.rule("fail", source=SHORT_CODE)
    message_id = sms.submit(text=text, level="NONE")
    sms.wait_status(message_id, "Forwarded" if forwarded else "Failed")


def test_without_the_flag_or_a_long_code_a_failure_is_final(sms: SmsDeployment) -> None:
    sms.aggregator.rule("fail", destination=DESTINATION)
    unflagged = sms.submit(alternate=False, level="NONE", submitter="no-flag")
    lonely = sms.submit(source=LONELY_SHORT_CODE, level="NONE", submitter="no-long-code")
    sms.wait_status(unflagged, "Failed")
    view = sms.wait_status(lonely, "Failed")
    # The Failed status, wherever it sits: the aggregator's receipt can beat its own 200 answer, whose
    # "sent through sms1" is then recorded after it as a note.
    (failed,) = [h for h in view["history"] if h["kind"] == "status" and h["status"] == "Failed"]
    assert "no long code" in failed["description"]
    assert sms.aggregator.counts()["by_sender"] == {SHORT_CODE: 1, LONELY_SHORT_CODE: 1}
