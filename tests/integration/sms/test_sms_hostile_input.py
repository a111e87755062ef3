"""Hostile SMS submissions get the vendor's mtMessageResponse error with a 4xx, never a 500."""

from __future__ import annotations

import pytest

from tests.support.raw_http import exchange, request_head
from tests.support.sms import SmsDeployment

DEEP = 100_000


@pytest.mark.parametrize("nested", [b"[" * DEEP + b"]" * DEEP, b'{"a":' * DEEP + b"1" + b"}" * DEEP])
def test_json_mt_message_nested_100000_deep_is_an_mt_message_response_400(sms: SmsDeployment, nested: bytes) -> None:
    body = b'{"submitterMessageId": "deep-1", "text": "hi", "extra": ' + nested + b"}"
    with sms.http() as client:
        response = client.post("/sms/v1/messages", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["status"]["isError"] is True and "nested" in answer["status"]["description"]
    assert sms.aggregator.messages() == []


@pytest.mark.parametrize("value", ["Basic \xff\xfe", "Basic YXBwOmFwcC1wYXNzd29yZA==\xe9"])
def test_http_basic_that_is_not_ascii_is_an_mt_message_response_401(sms: SmsDeployment, value: str) -> None:
    body = b"<mtMessage><destination address=\"+18475551212\"/><source address=\"98765\"/><text>hi</text></mtMessage>"
    head = request_head("POST", b"/sms/v1/messages", [("Authorization", value), ("Content-Type", "application/xml"),
                                                      ("Content-Length", str(len(body)))])
    answer = exchange(sms.url, head + body)
    assert answer.status == 401, answer.text
    assert "<mtMessageResponse>" in answer.text and 'isError="true"' in answer.text
    assert sms.aggregator.messages() == []
