from __future__ import annotations

import json

import pytest
from lxml import etree

from gateway.errors import BadMessage
from gateway.protocols import sms
from policies.outcome import Failure, Kind

SEED = b"""<?xml version="1.0" encoding="UTF-8"?>
<mtMessage submitterMessageId="239487234987234" alternateDelivery="true">
\t<destination carrier="102" address="+18475551212" type="MDN" />
\t<source address="98765" type="SC" />
\t<text>123857AB12</text>
\t<receiptOption callbackUrl="http://www.client.com/callback" >ERROR</receiptOption>
\t<transaction id="6439376297230"/>
</mtMessage>"""


def test_the_vendors_example_reads_as_written() -> None:
    message = sms.parse_mt_message_xml(SEED)
    assert message == sms.MtMessage(
        submitter_message_id="239487234987234", alternate_delivery=True, destination="+18475551212",
        destination_carrier="102", destination_type="MDN", source="98765", source_type="SC", text="123857AB12",
        callback_url="http://www.client.com/callback", receipt_level="ERROR", transaction_id="6439376297230")


def test_the_json_twin_reads_the_same() -> None:
    body = {"submitterMessageId": "239487234987234", "alternateDelivery": "true",
            "destination": {"address": "+18475551212", "carrier": 102, "type": "MDN"},
            "source": {"address": "98765", "type": "SC"}, "text": "123857AB12",
            "receiptOption": {"callbackUrl": "http://www.client.com/callback", "level": "error"},
            "transaction": {"id": "6439376297230"}}
    assert sms.parse_mt_message_json(json.dumps(body).encode()) == sms.parse_mt_message_xml(SEED)


@pytest.mark.parametrize(("body", "why"), [
    (b"<mtMessage/>", "destination"),
    (b'<mtMessage alternateDelivery="yes"><destination address="+1"/><source address="1"/></mtMessage>',
     "alternateDelivery"),
    (b'<mtMessage><destination address="+1"/><source address="1"/><receiptOption>SOME</receiptOption></mtMessage>',
     "receiptOption"),
    (b'<mtMessage><destination address=" "/><source address="1"/></mtMessage>', "destination address"),
    (b'<!DOCTYPE m [<!ENTITY x "y">]><mtMessage/>', "DOCTYPE"),
    (b"<mtMessage>", "well-formed"),
    (b"<message/>", "mtMessage"),
])
def test_bad_xml_says_what_is_wrong(body: bytes, why: str) -> None:
    with pytest.raises(BadMessage, match=why):
        sms.parse_mt_message_xml(body)


@pytest.mark.parametrize(("body", "why"), [
    (b"[", "JSON"), (b"[]", "object"), (b'{"destination": 1}', "destination"),
    (b'{"destination": {"address": "+1"}, "source": {"address": "1"}, "text": 5}', "text"),
    (b'{"destination": {"address": "+1"}, "source": {"address": "1"}, "text": "\\u0001"}', "XML"),
    (b'{"destination": {"address": ["+1"]}, "source": {"address": "1"}}', "address"),
    (b'{"destination": {"address": "+1"}, "source": {"address": "' + b"9" * 300 + b'"}}', "longer"),
])
def test_bad_json_says_what_is_wrong(body: bytes, why: str) -> None:
    with pytest.raises(BadMessage, match=why):
        sms.parse_mt_message_json(body)


def test_the_upstream_gets_no_alternate_flag_and_receipts_all_at_the_gateway() -> None:
    document = sms.render_upstream_message(
        submitter_message_id="gw-1", destination="+18475551212", destination_carrier="102", source="98765",
        source_type="SC", text="a < b & c", receipt_url="https://gw.example/sms/v1/receipts/gw-1/tok")
    root = etree.fromstring(document)
    assert root.get("alternateDelivery") is None and root.get("submitterMessageId") == "gw-1"
    assert root.find("receiptOption").text == "ALL"
    assert root.find("receiptOption").get("callbackUrl") == "https://gw.example/sms/v1/receipts/gw-1/tok"
    assert root.findtext("text") == "a < b & c" and root.find("source").get("type") == "SC"


def test_callbacks_carry_the_links_as_the_vendor_shows() -> None:
    document = sms.render_callback(sms.Callback(
        message_id="orig", submitter_message_id="239487234987234", fwd_to_message_id="alt",
        receipt_date="2011-04-19T15:10:08.320-05:00", type="Carrier", is_error=True,
        description="Description of status", error_code="100"))
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = etree.fromstring(document)
    assert dict(root.attrib) == {"messageId": "orig", "submitterMessageId": "239487234987234",
                                 "fwdToMessageId": "alt", "receiptDate": "2011-04-19T15:10:08.320-05:00"}
    assert root.findtext("type") == "Carrier" and root.find("status").get("isError") == "true"
    assert root.findtext("status/description") == "Description of status" and root.findtext("status/errorCode") == "100"


def test_answers_and_errors_in_both_formats() -> None:
    assert etree.fromstring(sms.render_accepted("m", "s", as_json=False)).attrib == {
        "messageId": "m", "submitterMessageId": "s"}
    assert json.loads(sms.render_accepted("m", None, as_json=True)) == {"messageId": "m", "submitterMessageId": None}
    error = etree.fromstring(sms.render_error("bad <destination>", as_json=False))
    assert error.find("status").get("isError") == "true" and error.findtext("status/description") == "bad <destination>"
    assert json.loads(sms.render_error("bad", submitter_message_id="s", as_json=True)) == {
        "submitterMessageId": "s", "status": {"isError": True, "description": "bad"}}


def test_upstream_answers_and_receipts_are_read() -> None:
    refusal = (b'<mtMessageResponse><type>Carrier</type><status isError="true"><description>blocked</description>'
               b"<errorCode>1401</errorCode></status></mtMessageResponse>")
    answer = sms.parse_response(refusal)
    assert answer.carrier_failure and (answer.description, answer.error_code) == ("blocked", "1401")
    assert sms.parse_response(b'<mtMessageResponse messageId="UP-1"/>') == sms.MtResponse(message_id="UP-1")
    receipt = sms.parse_response(b'<mtMessageResponse messageId="UP-1"><type>Carrier</type>'
                                 b'<status isError="false"><description>Delivered</description></status>'
                                 b"</mtMessageResponse>")
    assert receipt.is_error is False and not receipt.carrier_failure
    with pytest.raises(BadMessage, match="isError"):
        sms.parse_response(b'<mtMessageResponse><status isError="perhaps"/></mtMessageResponse>')


@pytest.mark.parametrize(("status", "body", "kind", "failure"), [
    (200, b'<mtMessageResponse messageId="x"/>', Kind.OK, None),
    (400, b"<mtMessageResponse><type>Carrier</type><status isError='true'/></mtMessageResponse>",
     Kind.CLIENT_ERROR, None),
    (400, b"garbage", Kind.CLIENT_ERROR, None),
    (401, b"", Kind.ACCOUNT_FAILURE, Failure.UNAVAILABLE),
    (403, b"", Kind.ACCOUNT_FAILURE, Failure.UNAVAILABLE),
    (429, b"", Kind.THROTTLED, None),
    (503, b"", Kind.ACCOUNT_FAILURE, Failure.UNAVAILABLE),
    (500, b"", Kind.ACCOUNT_FAILURE, Failure.SERVER_ERROR),
])
def test_classify(status: int, body: bytes, kind: Kind, failure: Failure | None) -> None:
    outcome = sms.classify(status, body, retry_after=None)
    assert (outcome.kind, outcome.failure) == (kind, failure)


def test_carrier_refusals_are_named_in_the_outcome() -> None:
    outcome = sms.classify(400, b"<mtMessageResponse><type>Carrier</type><status isError='true'>"
                                b"<description>blocked</description></status></mtMessageResponse>", retry_after=None)
    assert outcome.detail == "carrier refused: blocked"


@pytest.mark.parametrize(("text", "segments"), [
    ("", 1), ("A" * 160, 1), ("A" * 161, 2), ("A" * 306, 2), ("A" * 307, 3), ("{" * 80, 1), ("{" * 81, 2),
    ("Ж" * 70, 1), ("Ж" * 71, 2), ("Ж" * 134, 2), ("Ж" * 135, 3), ("ç", 1),
])
def test_segment_count(text: str, segments: int) -> None:
    assert sms.segment_count(text) == segments
