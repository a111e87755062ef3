"""Secrets neither at rest nor in logs: a sent SMS's receipt token leaves the store, and at DEBUG the
gateway's log (its JSON lines and whatever reaches the root logger) holds no secret.

A REST login and send, a SOAP login and logout, and an SMS send whose receipt comes back run through a
gateway configured as `serve` configures it (`configure_logging`), at DEBUG. No password, gateway token,
SOAP session id, upstream token, receipt token or message text may appear in what was logged: driver
loggers (aiosqlite prints SQL parameters at DEBUG) stay quiet.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator

import httpx
import pytest
from lxml import etree

from gateway.telemetry.logs import QUIET_LOGGERS, JsonFormatter, configure_logging
from tests.integration.gateway.conftest import EMAIL_PATH, email_body
from tests.support.servers import wait_until
from tests.support.sms import APP_PASSWORD, APP_USER, SMS_PASSWORD, SmsDeployment, mt_message

MESSAGE_TEXT = "Your one-time code is 9F8E7D6C"
SOAP_NS = "urn:ws.rsys.com"
SIMULATORS = "gateway_tools.simulator"  # the test's own upstreams log in this process too; they are not the gateway


class Captured(logging.Handler):
    """Every record, formatted as the gateway's JSON line and as a plain root-logger line."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.lines: list[str] = []
        self._json, self._plain = JsonFormatter(), logging.Formatter("%(levelname)s %(name)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(SIMULATORS):
            return
        self.lines.append(self._json.format(record))
        self.lines.append(self._plain.format(record))


@pytest.fixture
def debug_log() -> Iterator[Captured]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    configure_logging(level="DEBUG")
    captured = Captured()
    root.addHandler(captured)
    try:
        yield captured
    finally:
        root.handlers[:], level, quiet = saved
        root.setLevel(level)
        for name, old in quiet.items():
            logging.getLogger(name).setLevel(old)


def _soap(url: str, body: str, session_id: str | None = None) -> httpx.Response:
    header = (f"<soapenv:Header><ws:SessionHeader><ws:sessionId>{session_id}</ws:sessionId></ws:SessionHeader>"
              "</soapenv:Header>") if session_id else ""
    envelope = (f'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ws="{SOAP_NS}">'
                f"{header}<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>")
    return httpx.post(f"{url}/webservices/services/ResponsysWSService", content=envelope.encode(), trust_env=False,
                      headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=15)


def test_a_debug_log_of_logins_sends_and_receipts_holds_no_secret(
        debug_log: Captured, make_sms: Callable[..., SmsDeployment]) -> None:
    sms = make_sms()
    with httpx.Client(base_url=sms.url, trust_env=False, timeout=15) as app:
        login = app.post("/rest/api/v1.3/auth/token",
                         data={"user_name": APP_USER, "password": APP_PASSWORD, "auth_type": "password"})
        gateway_token = login.json()["authToken"]
        sent = app.post(EMAIL_PATH, content=email_body("debug@example.com"),
                        headers={"Authorization": gateway_token, "Content-Type": "application/json"})
        assert sent.status_code == 200, sent.text
    soap_login = _soap(sms.url, f"<ws:login><ws:username>{APP_USER}</ws:username>"
                                f"<ws:password>{APP_PASSWORD}</ws:password></ws:login>")
    session_id = etree.fromstring(soap_login.content).findtext(f".//{{{SOAP_NS}}}sessionId")
    assert session_id
    assert _soap(sms.url, "<ws:logout/>", session_id).status_code == 200

    message_id = sms.submit(mt_message(text=MESSAGE_TEXT, alternate=False, callback_url=sms.receiver.url()))
    sms.wait_status(message_id, "Delivered")  # its receipt came back through the receipt URL
    [upstream_message] = sms.aggregator.messages()
    receipt_token = sms.receipt_url(str(upstream_message.message_id)).rsplit("/", 1)[-1]
    sms.receiver.wait_for(1)
    upstream_tokens = list(sms.account.state._tokens)  # the simulator's issued tokens
    assert upstream_tokens and receipt_token

    secrets = {"app password": APP_PASSWORD, "upstream password": "primary-password", "SMS password": SMS_PASSWORD,
               "gateway token": gateway_token, "SOAP session id": session_id, "receipt token": receipt_token,
               "message text": MESSAGE_TEXT, **{f"upstream token {i}": t for i, t in enumerate(upstream_tokens)}}
    wait_until(lambda: any("aftm" in line for line in debug_log.lines), timeout=5, message="gateway log lines")
    leaked = {name: line for name, secret in secrets.items() for line in debug_log.lines if secret in line}
    assert leaked == {}



def test_a_sent_sms_leaves_no_receipt_token_in_the_store(sms: SmsDeployment) -> None:
    message_id = sms.submit(mt_message(text=MESSAGE_TEXT, alternate=False, callback_url=sms.receiver.url()))
    sms.wait_status(message_id, "Delivered")
    [upstream_message] = sms.aggregator.messages()
    receipt_token = sms.receipt_url(str(upstream_message.message_id)).rsplit("/", 1)[-1].encode()

    def token_rows() -> int:
        # What anyone reading the database sees (free pages and old WAL frames are SQLite's to overwrite).
        with sqlite3.connect(sms.store_path) as db:
            return sum(receipt_token in bytes(body) for (body,) in db.execute("SELECT body FROM outbox"))

    wait_until(lambda: token_rows() == 0, timeout=10,
               message="the receipt token to leave the store once the send is finished")
