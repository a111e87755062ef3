"""The app-facing SMS API: JSON and XML, the vendor's error shape for bad input, the callback-URL rule."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from lxml import etree

from policies.login_throttle import ThrottleSettings
from tests.support.servers import wait_until
from tests.support.sms import (
    APP_USER,
    DESTINATION,
    LONG_CODE,
    SHORT_CODE,
    SmsDeployment,
    mt_message,
)


def assert_xml_error(response: httpx.Response, status: int, *, mentions: str = "") -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/xml")
    root = etree.fromstring(response.content)
    assert root.tag == "mtMessageResponse"
    node = root.find("status")
    assert node is not None and node.get("isError") == "true"
    description = node.findtext("description") or ""
    assert description and mentions.lower() in description.lower()
    assert b"Traceback" not in response.content
    return description


def assert_nothing_sent(sms: SmsDeployment) -> None:
    assert sms.aggregator.messages() == []


def post(sms: SmsDeployment, body: bytes, *, content_type: str = "application/xml",
         auth: tuple[str, str] | None = None) -> httpx.Response:
    with sms.http(**({"auth": auth} if auth else {})) as client:
        return client.post("/sms/v1/messages", content=body, headers={"Content-Type": content_type})


def test_json_submission_is_answered_in_json_and_the_status_in_xml_on_request(sms: SmsDeployment) -> None:
    body = {"submitterMessageId": "json-1", "alternateDelivery": True,
            "destination": {"address": DESTINATION, "carrier": "102", "type": "MDN"},
            "source": {"address": SHORT_CODE, "type": "SC"}, "text": "123857AB12",
            "receiptOption": {"callbackUrl": sms.receiver.url(), "level": "FINAL"}, "transaction": {"id": "643"}}
    response = post(sms, json.dumps(body).encode(), content_type="application/json")
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["submitterMessageId"] == "json-1" and answer["messageId"]
    sms.wait_status(answer["messageId"], "Delivered")
    with sms.http() as client:
        as_xml = client.get(f"/sms/v1/messages/{answer['messageId']}", headers={"Accept": "application/xml"})
        listed = client.get("/sms/v1/messages", params={"submitterMessageId": "json-1"},
                            headers={"Accept": "application/xml"})
    root = etree.fromstring(as_xml.content)
    assert (root.tag, root.get("messageId"), root.findtext("status")) == (
        "mtMessageStatus", answer["messageId"], "Delivered")
    statuses = [e.get("status") for e in root.iter("event") if e.get("kind") == "status"]
    assert statuses[0] == "Accepted" and statuses[-1] == "Delivered"
    assert any((e.findtext("description") or "").startswith("sent through sms1") for e in root.iter("event"))
    assert etree.fromstring(listed.content).tag == "mtMessageStatusList"
    [sent] = sms.aggregator.messages()
    assert (sent.source, sent.destination, sent.text) == (SHORT_CODE, DESTINATION, "123857AB12")


def test_the_api_needs_a_configured_client(sms: SmsDeployment) -> None:
    with httpx.Client(base_url=sms.url, trust_env=False) as anonymous:
        missing = anonymous.post("/sms/v1/messages", content=mt_message(level="NONE"),
                                 headers={"Content-Type": "application/xml"})
        lookup = anonymous.get("/sms/v1/messages/anything")
    wrong = post(sms, mt_message(level="NONE"), auth=(APP_USER, "wrong"))
    assert_xml_error(missing, 401)
    assert missing.headers["www-authenticate"].startswith("Basic")
    assert_xml_error(wrong, 401)
    assert lookup.status_code == 401 and lookup.json()["status"]["isError"] is True
    assert_nothing_sent(sms)


def test_repeated_wrong_passwords_are_answered_429_in_the_mt_api_shape(sms: SmsDeployment) -> None:
    for _ in range(ThrottleSettings().max_failures):
        assert_xml_error(post(sms, mt_message(level="NONE"), auth=(APP_USER, "wrong")), 401)
    throttled = post(sms, mt_message(level="NONE"), auth=(APP_USER, "wrong"))
    assert_xml_error(throttled, 429, mentions="too many failed logins")
    assert int(throttled.headers["retry-after"]) >= 1
    assert_nothing_sent(sms)


@pytest.mark.parametrize(("body", "mentions"), [
    (mt_message(destination="8475551212", level="NONE"), "E.164"),
    (mt_message(destination="+1847555121x", level="NONE"), "E.164"),
    (mt_message(source="11111", level="NONE"), "source"),
    (mt_message(text="   ", level="NONE"), "text"),
    (mt_message(text="x" * 1601, level="NONE"), "text"),
    (mt_message(level="ALL", callback_url=None), "callbackUrl"),
    (mt_message(level="SOMETIMES", callback_url="https://app.example/cb"), "receiptOption"),
    (b"<mtMessage><text>hi</text></mtMessage>", "destination"),
    (b"this is not xml", "XML"),
    (b"", "XML"),
    (b"<somethingElse/>", "mtMessage"),
    (b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY e SYSTEM "file:///etc/passwd">]><mtMessage>&e;</mtMessage>',
     "DOCTYPE"),
])
def test_bad_messages_get_the_vendors_error_shape(sms: SmsDeployment, body: bytes, mentions: str) -> None:
    assert_xml_error(post(sms, body), 400, mentions=mentions)
    assert_nothing_sent(sms)


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"destination": "x"}',
                                  b'{"destination": {"address": "+18475551212"}, "source": {"address": "98765"}, '
                                  b'"text": "a\\u0000b"}',
                                  b'{"destination": {"address": "+18475551212"}, "source": {"address": "98765"}, '
                                  b'"text": "hi", "alternateDelivery": "perhaps"}'])
def test_bad_json_gets_the_json_error_shape(sms: SmsDeployment, body: bytes) -> None:
    response = post(sms, body, content_type="application/json")
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["status"]["isError"] is True and answer["status"]["description"]
    assert_nothing_sent(sms)


def test_other_content_types_and_unknown_messages(sms: SmsDeployment) -> None:
    assert_xml_error(post(sms, b"hello", content_type="text/plain"), 415)
    with sms.http() as client:
        missing = client.get("/sms/v1/messages/no-such-message")
        no_query = client.get("/sms/v1/messages")
    assert missing.status_code == 404 and missing.json()["status"]["isError"] is True
    assert no_query.status_code == 400
    assert_nothing_sent(sms)


def test_another_client_cannot_see_a_message(make_sms: Callable[..., SmsDeployment]) -> None:
    sms = make_sms(clients=[{"user_name": APP_USER, "password": "app-password"},
                            {"user_name": "other", "password": "other-password"}])
    message_id = sms.submit(level="NONE")
    with sms.http(auth=("other", "other-password")) as client:
        assert client.get(f"/sms/v1/messages/{message_id}").status_code == 404
        assert client.get("/sms/v1/messages", params={"submitterMessageId": "239487234987234"}).json() == {
            "messages": []}


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/cb", "http://10.1.2.3/cb", "http://192.168.0.10/cb",
                                 "http://169.254.169.254/latest/meta-data", "http://[::1]/cb", "http://localhost/cb",
                                 "https://user:pw@example.com/cb", "ftp://example.com/cb"])
def test_a_callback_url_pointing_inward_is_refused_when_not_allowed(make_sms: Callable[..., SmsDeployment],
                                                                    url: str) -> None:
    sms = make_sms(callbacks={"allow_networks": []})
    description = assert_xml_error(post(sms, mt_message(callback_url=url)), 400)
    assert "callback" in description.lower()
    assert_nothing_sent(sms)


def test_a_callback_name_that_resolves_inward_is_refused_at_connect_time(
        make_sms: Callable[..., SmsDeployment]) -> None:
    sms = make_sms(callbacks={"allow_networks": []})
    sms.dns.set("app-callbacks.test", ["127.0.0.1"])  # where the receiver listens
    url = f"http://app-callbacks.test:{sms.receiver.server.port}/callback"
    message_id = sms.submit(callback_url=url, level="ALL")  # a name: judged by what it resolves to

    def post_out() -> bool:
        return any(h.get("errorCode") == "post-out" for h in sms.status(message_id)["history"])

    wait_until(post_out, timeout=15, message="the refused callback recorded as post-out")
    assert sms.status(message_id)["status"] == "Delivered"
    [failure] = [h for h in sms.status(message_id)["history"] if h.get("errorCode") == "post-out"]
    assert "refused addresses" in failure["description"] and "127.0.0.1" in failure["description"]
    assert sms.receiver.posts == []


def test_long_codes_may_send_directly(sms: SmsDeployment) -> None:
    message_id = sms.submit(source=LONG_CODE, level="NONE")
    assert sms.wait_status(message_id, "Delivered")["source"] == {"address": LONG_CODE, "type": "LC"}
