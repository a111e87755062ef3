"""An upgrade on a full outbox: what the previous layout's gateway (before the restructure: one runtime
module, SMS through its own sender) left in the store is delivered by this one, on both backends.

The rows are written with the store's own calls and the exact values that gateway wrote (read back from
a store it filled: its REST, SOAP, SMS and callback items, a keyed send's fingerprint, a message still
waiting for its send), so a change of kind names, bodies or headers that strands them fails here.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from gateway.store import MessageEvent, MessageRecord, MessageStatus, OutboxItem, OutboxStatus, open_store
from tests.support.servers import wait_until
from tests.support.sms import APP_PASSWORD, APP_USER, SmsDeployment
from tests.support.stores import BACKENDS, POSTGRES_ADMIN_URL, connect_admin, with_query

EMAIL_PATH = "/rest/api/v1.3/campaigns/welcome/email"
SOAP_PATH = "/webservices/services/ResponsysWSService"


def _email(address: str) -> bytes:
    return (b'{"recipientData": [{"recipient": {"emailAddress": "' + address.encode() + b'", "listName": '
            b'{"folderName": "Demo", "objectName": "Contacts"}, "emailFormat": "HTML_FORMAT"}, "optionalData": []}]}')


# As that gateway stored a SOAP send: the envelope re-serialised with the app's session id emptied.
SOAP_BODY = (
    b"<?xml version='1.0' encoding='UTF-8'?>\n<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/"
    b'envelope/" xmlns:urn="urn:ws.rsys.com" xmlns:urn1="urn:objects.ws.rsys.com"><soapenv:Header><urn:SessionHeader>'
    b"<urn:sessionId></urn:sessionId></urn:SessionHeader></soapenv:Header><soapenv:Body><urn:mergeTriggerEmail>"
    b"<urn:recordData><urn:fieldNames>EMAIL_ADDRESS_</urn:fieldNames><urn:records><urn:fieldValues>soap@example.com"
    b"</urn:fieldValues></urn:records></urn:recordData><urn:mergeRule><urn:insertOnNoMatch>true</urn:insertOnNoMatch>"
    b"<urn:matchColumnName1>EMAIL_ADDRESS_</urn:matchColumnName1></urn:mergeRule><urn:campaign><urn:folderName>Demo"
    b"</urn:folderName><urn:objectName>welcome</urn:objectName></urn:campaign></urn:mergeTriggerEmail></soapenv:Body>"
    b"</soapenv:Envelope>")
# SHA-256 over the surface, method, raw target and body, as that gateway fingerprinted the keyed send.
KEYED_FINGERPRINT = "cb9e11336edd6cfc8ada218b0510f6e7878edeee5ae227a3fd1dceec3d90f06f"
DELIVERED_ID = "a2333e38-d35b-43d4-9ef4-82cf449f9198"  # sent before the upgrade; its callback still due
WAITING_ID = "ab1adae2-777e-467c-9767-99a04f7128c2"  # accepted; its send still due
TOKEN = "FA63PgtizyAcL1imhnhDrDbmQfmCSuBjUgP-yU5HN9U"


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield ""  # the deployment's own SQLite file
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    asyncio.run(_admin(f"CREATE SCHEMA {schema}"))
    try:
        yield with_query(POSTGRES_ADMIN_URL, search_path=schema)
    finally:
        asyncio.run(_admin(f"DROP SCHEMA {schema} CASCADE"))


async def _admin(statement: str) -> None:
    admin = await connect_admin()
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


def _message(message_id: str, *, submitter: str, text: str, status: MessageStatus, token_hash: str,
             callback_url: str, now: float, upstream: str | None = None) -> MessageRecord:
    return MessageRecord(
        id=message_id, channel="sms", client=APP_USER, submitter_id=submitter, source="98765",
        destination="+18475551212", destination_carrier="102", text=text, status=status, alternate=True,
        receipt_level="ALL", callback_url=callback_url, receipt_token_hash=token_hash, created_at=now,
        updated_at=now, upstream=upstream, upstream_message_id="SIM-000001-37180c40" if upstream else None,
        transaction_id="6439376297230", destination_type="MDN", source_type="SC")


async def _fill(url: str, callback_url: str) -> None:
    """The store as the previous gateway left it: every item due, nothing of this gateway's making."""
    now = time.time()
    store = await open_store(url)
    try:
        await store.enqueue(OutboxItem.new(
            protocol="rest", method="POST", path=EMAIL_PATH, body=_email("unkeyed@example.com"), client=APP_USER,
            headers=(("accept", "*/*"), ("content-type", "application/json"),
                     ("x-request-id", "e9e35869628b46d1b0d4dcd581e34eba")),
            now=now, max_age=86_400.0, request_id="e9e35869628b46d1b0d4dcd581e34eba",
            correlation_id="e9e35869628b46d1b0d4dcd581e34eba"))
        await store.enqueue(OutboxItem.new(
            protocol="rest", method="POST", path=EMAIL_PATH, body=_email("keyed@example.com"), client=APP_USER,
            headers=(("accept", "*/*"), ("content-type", "application/json"), ("idempotency-key", "k-1"),
                     ("x-request-id", "08d37261577a4b9aba8011c788e70b0e")),
            now=now, max_age=86_400.0, request_id="08d37261577a4b9aba8011c788e70b0e", idempotency_key="k-1",
            correlation_id="08d37261577a4b9aba8011c788e70b0e", fingerprint=KEYED_FINGERPRINT))
        await store.enqueue(OutboxItem.new(
            protocol="soap", method="POST", path=SOAP_PATH, body=SOAP_BODY, client=APP_USER,
            headers=(("soapaction", "mergeTriggerEmail"), ("x-request-id", "99a9118bc12846bc816eeac57f641cfd")),
            now=now, max_age=86_400.0, request_id="99a9118bc12846bc816eeac57f641cfd",
            correlation_id="99a9118bc12846bc816eeac57f641cfd"))
        delivered = _message(DELIVERED_ID, submitter="239487234987234", text="123857AB12",
                             status=MessageStatus.DELIVERED, token_hash="0" * 64, callback_url=callback_url, now=now,
                             upstream="sms1")
        await store.message_create(delivered, event=MessageEvent(
            message_id=DELIVERED_ID, at=now, kind="status", status=MessageStatus.DELIVERED, description="Delivered"),
            enqueue=(OutboxItem.new(
                protocol="callback", method="POST", path=callback_url, client=APP_USER, now=now, max_age=86_400.0,
                headers=(("content-type", "application/xml; charset=utf-8"), ("x-aftm-message-id", DELIVERED_ID)),
                body=(b'<?xml version="1.0" encoding="UTF-8"?>\n<mtMessageResponse messageId="' + DELIVERED_ID.encode()
                      + b'" submitterMessageId="239487234987234" receiptDate="2026-11-30T02:36:41.464+00:00">'
                      b'<type>Carrier</type><status isError="false"><description>Delivered</description></status>'
                      b'<transaction id="6439376297230"/></mtMessageResponse>'),
                request_id="cb-a8901749880c4ab08db4d20e0c3d6b90"),))
        waiting = _message(WAITING_ID, submitter="second-one", text="second", status=MessageStatus.ACCEPTED,
                           token_hash=hashlib.sha256(TOKEN.encode()).hexdigest(), callback_url=callback_url, now=now)
        await store.message_create(waiting, event=MessageEvent(
            message_id=WAITING_ID, at=now, kind="status", status=MessageStatus.ACCEPTED,
            description="accepted with alternate delivery"), enqueue=(OutboxItem.new(
                protocol="sms", method="POST", path=f"/sms/v1/messages/{WAITING_ID}", headers=(),
                body=TOKEN.encode("ascii"), client=APP_USER, now=now, max_age=3_600.0,
                request_id=f"sms-{WAITING_ID}"),))
    finally:
        await store.close()


async def _outbox(url: str) -> dict[str, OutboxStatus]:
    store = await open_store(url)
    try:
        return {item.id: item.status for item in await store.list()}
    finally:
        await store.close()


def test_what_the_previous_gateway_queued_is_delivered_after_the_upgrade(
        store_url: str, make_sms: Callable[..., SmsDeployment]) -> None:  # the store outlives the gateway
    sms = make_sms(start=False, **({"store": store_url} if store_url else {}))
    base = f"https://primary.test:{sms.account.port}"
    sms.overrides["accounts"] = [{"name": "primary", "login_url": base, "soap_url": base + SOAP_PATH,
                                  "user_name": "api_primary", "password": "primary-password"}]
    url = store_url or f"sqlite:///{sms.store_path}"
    asyncio.run(_fill(url, sms.receiver.url()))
    sms.start_gateway()

    def all_done() -> bool:
        return set(asyncio.run(_outbox(url)).values()) == {OutboxStatus.DELIVERED}

    wait_until(all_done, timeout=30, message="every item the previous gateway queued to be delivered")
    sent = sorted((d.protocol, d.recipient, d.idempotency_key) for d in sms.account.deliveries())
    assert sent == [("rest", "EMAIL_ADDRESS_:keyed@example.com", "k-1"),
                    ("rest", "EMAIL_ADDRESS_:unkeyed@example.com", None),
                    ("soap", "EMAIL_ADDRESS_:soap@example.com", None)]
    # The waiting message went out once, under its own id, and its receipt found it by the stored token.
    [message] = sms.aggregator.messages()
    assert (message.submitter_message_id, message.text) == (WAITING_ID, "second")
    assert sms.wait_status(WAITING_ID, "Delivered")["upstream"] == "sms1"
    posts = sms.receiver.wait_for(2)
    assert {p.xml.get("messageId") for p in posts} == {DELIVERED_ID, WAITING_ID}

    # The keyed send's first answer is replayed to a repeat: no second send, no "key reused".
    with httpx.Client(base_url=sms.url, timeout=15.0, trust_env=False) as client:
        token = client.post("/rest/api/v1.3/auth/token", data={
            "user_name": APP_USER, "password": APP_PASSWORD, "auth_type": "password"}).json()["authToken"]
        again = client.post(EMAIL_PATH, content=_email("keyed@example.com"), headers={
            "Authorization": token, "Content-Type": "application/json", "Idempotency-Key": "k-1"})
    assert again.status_code == 200, again.text
    assert len([d for d in sms.account.deliveries() if d.idempotency_key == "k-1"]) == 1
