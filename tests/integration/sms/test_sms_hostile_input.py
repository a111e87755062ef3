"""Hostile SMS submissions get the vendor's mtMessageResponse error with a 4xx, never a 500."""

from __future__ import annotations

import pytest

from tests.integration.sms.conftest import SmsDeployment

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
