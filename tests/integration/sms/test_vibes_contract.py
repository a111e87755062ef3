"""What the Vibes seed promises an app beyond alternate delivery itself: the app's transaction id and
types kept, the aggregator's internalErrorCode passed on, long codes taking turns and standing in for
each other, and a concatenated alternate-delivery request answered with a warning."""

from __future__ import annotations

from collections.abc import Callable

from lxml import etree

from tests.support.servers import wait_until
from tests.support.sms import APP_PASSWORD, APP_USER, LONG_CODE, SHORT_CODE, SmsDeployment, mt_message

SECOND_LONG_CODE = "+13125550101"
TRANSACTION = "6439376297230"  # the id mt_message() gives, as in the vendor's example
TWO_LONG_CODES = {"sms": {"alternate_senders": {SHORT_CODE: [LONG_CODE, SECOND_LONG_CODE]}}}


def _post(sms: SmsDeployment, body: bytes) -> etree._Element:
    with sms.http(auth=(APP_USER, APP_PASSWORD)) as client:
        response = client.post("/sms/v1/messages", content=body, headers={"Content-Type": "application/xml"})
    assert response.status_code == 201, response.text
    return etree.fromstring(response.content)


def test_the_transaction_id_and_the_apps_types_travel_with_the_message_and_every_callback(
        sms: SmsDeployment) -> None:
    sms.aggregator.rule("fail", source=SHORT_CODE, error_code="100", internal_error_code="255")
    document = etree.fromstring(mt_message(callback_url=sms.receiver.url(), level="ALL"))
    destination = document.find("destination")
    assert destination is not None
    destination.set("type", "MSISDN")
    answer = _post(sms, etree.tostring(document, xml_declaration=True, encoding="UTF-8"))

    transaction = answer.find("transaction")
    assert transaction is not None and transaction.get("id") == TRANSACTION
    posts = sms.receiver.wait_for(2)
    assert [p.xml.find("transaction").get("id") for p in posts] == [TRANSACTION, TRANSACTION]  # type: ignore[union-attr]
    # The carrier's failure of the original carries the aggregator's internal code beside its own.
    assert posts[0].xml.findtext("status/errorCode") == "100"
    assert posts[0].xml.findtext("status/internalErrorCode") == "255"

    original, alternate = sorted(sms.aggregator.messages(), key=lambda m: m.at)
    assert (original.transaction_id, original.destination_type, original.source_type) == (TRANSACTION, "MSISDN", "SC")
    assert (alternate.transaction_id, alternate.destination_type, alternate.source_type) == (
        TRANSACTION, "MSISDN", "LC")
    view = sms.status(answer.get("messageId") or "")
    assert view["transactionId"] == TRANSACTION and view["destination"]["type"] == "MSISDN"


def test_the_long_codes_of_a_short_code_take_turns(make_sms: Callable[..., SmsDeployment]) -> None:
    sms = make_sms(**TWO_LONG_CODES)
    sms.aggregator.rule("fail", source=SHORT_CODE)
    for n in range(4):
        sms.wait_status(sms.submit(level="NONE", submitter=f"turn-{n}"), "Forwarded")
    wait_until(lambda: len(sms.aggregator.messages()) == 8, message="four alternates sent")
    alternates = [m.source for m in sorted(sms.aggregator.messages(), key=lambda m: m.at) if m.source != SHORT_CODE]
    assert alternates == [LONG_CODE, SECOND_LONG_CODE, LONG_CODE, SECOND_LONG_CODE]


def test_an_alternate_one_long_code_refuses_goes_out_from_the_next(make_sms: Callable[..., SmsDeployment]) -> None:
    sms = make_sms(**TWO_LONG_CODES)
    sms.aggregator.rule("fail", source=SHORT_CODE)
    sms.aggregator.rule("refuse", source=LONG_CODE, description="long code not provisioned")
    original = sms.wait_status(sms.submit(level="NONE"), "Forwarded")

    alternate = sms.wait_status(original["fwdToMessageId"], "Delivered")
    assert alternate["source"] == {"address": SECOND_LONG_CODE, "type": "LC"}
    assert any("refused from long code" in (h["description"] or "") for h in alternate["history"])
    assert [m.source for m in sorted(sms.aggregator.messages(), key=lambda m: m.at)] == [
        SHORT_CODE, LONG_CODE, SECOND_LONG_CODE]


def test_a_concatenated_message_asking_for_alternate_delivery_is_accepted_with_a_warning(
        sms: SmsDeployment) -> None:
    answer = _post(sms, mt_message(text="A" * 161, level="NONE"))
    assert answer.get("messageId")
    assert "not supported for concatenated messages (2 segments)" in (answer.findtext("warning") or "")
    single = _post(sms, mt_message(level="NONE", submitter="one-segment"))
    assert single.find("warning") is None


def test_the_json_answer_carries_the_transaction_and_the_warning(sms: SmsDeployment) -> None:
    body = {"submitterMessageId": "j-1", "alternateDelivery": True, "text": "A" * 161,
            "destination": {"address": "+18475551212", "type": "MDN"}, "source": {"address": SHORT_CODE},
            "transaction": {"id": "t-42"}}
    with sms.http() as client:
        response = client.post("/sms/v1/messages", json=body)
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["transaction"] == {"id": "t-42"}
    assert len(answer["warnings"]) == 1 and "concatenated" in answer["warnings"][0]


def test_a_receipt_quicker_than_the_answer_leaves_the_message_naming_its_long_code_and_upstream(
        make_sms: Callable[..., SmsDeployment]) -> None:
    # The aggregator posts the alternate's receipt before it answers the send: the message is already
    # Delivered when the gateway learns which long code and upstream took it, and must still say so.
    sms = make_sms(**TWO_LONG_CODES)
    sms.aggregator.rule("fail", source=SHORT_CODE)
    sms.aggregator.rule("refuse", source=LONG_CODE, description="long code not provisioned")
    sms.aggregator.rule("deliver", source=SECOND_LONG_CODE, answer_after_receipt=True)
    original = sms.wait_status(sms.submit(level="NONE"), "Forwarded")

    alternate_id = original["fwdToMessageId"]
    assert sms.wait_status(alternate_id, "Delivered")["source"] == {"address": SECOND_LONG_CODE, "type": "LC"}
    wait_until(lambda: sms.status(alternate_id)["upstream"] is not None, timeout=10,
               message="the alternate to name the upstream that took it")
    view = sms.status(alternate_id)
    assert view["status"] == "Delivered"  # the late answer did not move the status back
    assert view["upstream"] == "sms1"
    assert any(h["description"] == "sent through sms1" for h in view["history"])
