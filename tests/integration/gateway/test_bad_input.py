"""Bad input gets the vendor's own error shape and status, never a 500 or a traceback, and goes nowhere."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.gateway.conftest import APP_PASSWORD, APP_USER, EMAIL_PATH, Deployment, email_body
from tests.support.servers import wait_until

SOAP_PATH = "/webservices/services/ResponsysWSService"
REST_ERROR_KEYS = {"type", "title", "errorCode", "detail", "errorDetails"}
SOAP_ENVELOPE = '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'


def assert_nothing_went_upstream(deployment: Deployment) -> None:
    for account in (deployment.primary, deployment.failover):
        stats = account.stats()
        assert account.deliveries() == [], account.name
        assert stats["rest_logins"] == 0 and stats["soap_logins"] == 0, stats


def assert_vendor_json_error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == REST_ERROR_KEYS, body
    assert body["title"] and body["detail"] and isinstance(body["errorCode"], str) and body["errorCode"]
    assert body["errorDetails"] == []
    return dict(body)


def assert_soap_client_fault(response: httpx.Response, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/xml")
    assert b"Fault>" in response.content and b"soapenv:Client" in response.content
    assert b"Traceback" not in response.content


def soap_login(username: str, password: str, *, doctype: str = "") -> bytes:
    return (
        f'<?xml version="1.0"?>{doctype}{SOAP_ENVELOPE}<soapenv:Body><urn:login xmlns:urn="urn:ws.rsys.com">'
        f"<urn:username>{username}</urn:username><urn:password>{password}</urn:password>"
        "</urn:login></soapenv:Body></soapenv:Envelope>"
    ).encode()


def post_soap(deployment: Deployment, body: bytes) -> httpx.Response:
    with deployment.http() as client:
        return client.post(SOAP_PATH, content=body, headers={"Content-Type": "text/xml; charset=utf-8"})


def test_malformed_json_is_a_vendor_400(deployment: Deployment) -> None:
    token = deployment.rest_token()
    with deployment.http() as client:
        response = client.post(EMAIL_PATH, content=b'{"recipientData": [', headers={
            "Authorization": token, "Content-Type": "application/json"})
    assert_vendor_json_error(response, 400)
    assert_nothing_went_upstream(deployment)


def test_oversize_body_is_a_vendor_413(make_deployment: Callable[..., Deployment]) -> None:
    deployment = make_deployment(requests={"max_body_bytes": 1024})
    token = deployment.rest_token()
    oversize = b'{"x": "' + b"a" * 5000 + b'"}'
    with deployment.http() as client:
        response = client.post(EMAIL_PATH, content=oversize, headers={
            "Authorization": token, "Content-Type": "application/json"})
        soap = client.post(SOAP_PATH, content=b"<x>" + b"a" * 5000 + b"</x>", headers={"Content-Type": "text/xml"})
    assert_vendor_json_error(response, 413)
    assert_soap_client_fault(soap, 413)
    assert_nothing_went_upstream(deployment)
    # control: a real send under the limit still goes through, so the limit is the configured one
    assert len(email_body("small@example.com")) < 1024
    assert deployment.send_email(token, "small@example.com").status_code == 200
    assert len(deployment.primary.deliveries()) == 1


def test_oversize_chunked_body_without_length_is_a_vendor_413(make_deployment: Callable[..., Deployment]) -> None:
    deployment = make_deployment(requests={"max_body_bytes": 1024})
    token = deployment.rest_token()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
        yield b'{"recipientData": "'
        for _ in range(20):
            yield b"a" * 500
        yield b'"}'

    with deployment.http() as client:
        response = client.post(EMAIL_PATH, content=chunks(), headers={
            "Authorization": token, "Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_vendor_json_error(response, 413)
    assert_nothing_went_upstream(deployment)


def test_external_entity_is_refused_without_reading_the_file(deployment: Deployment) -> None:
    hostile = soap_login("&e;", "x", doctype='<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>')
    started = time.monotonic()
    response = post_soap(deployment, hostile)
    assert_soap_client_fault(response)
    assert b"root:" not in response.content and b"/bin/" not in response.content
    assert time.monotonic() - started < 5
    assert_nothing_went_upstream(deployment)


def test_external_entity_cannot_smuggle_a_login(deployment: Deployment, tmp_path: Path) -> None:
    # If the parser expanded this entity, the username would read "app" and the login would succeed.
    user_file = tmp_path / "user.txt"
    user_file.write_text(APP_USER)
    assert post_soap(deployment, soap_login(APP_USER, APP_PASSWORD)).status_code == 200  # control
    hostile = soap_login("&e;", APP_PASSWORD, doctype=f'<!DOCTYPE x [<!ENTITY e SYSTEM "{user_file.as_uri()}">]>')
    response = post_soap(deployment, hostile)
    assert_soap_client_fault(response)
    assert b"sessionId" not in response.content
    assert_nothing_went_upstream(deployment)


def test_billion_laughs_is_refused_quickly(deployment: Deployment) -> None:
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
    hostile = soap_login("&lol9;", "x", doctype=f"<!DOCTYPE lolz [{entities}]>")  # 10**9 "lol"s if expanded
    started = time.monotonic()
    response = post_soap(deployment, hostile)
    elapsed = time.monotonic() - started
    assert_soap_client_fault(response)
    assert len(response.content) < 4096
    assert elapsed < 2.0, f"took {elapsed:.2f}s"
    assert_nothing_went_upstream(deployment)


@pytest.mark.parametrize("garbage", [
    b"this is not xml at all",
    b"",
    b"\xff\xfe\x00<\x00x\x00>",
    b"<unclosed><soapenv:Envelope",
    b'{"json": "to the SOAP endpoint"}',
    b'<Envelope><Body><login/></Body></Envelope>',  # no SOAP namespace
    (SOAP_ENVELOPE + "<soapenv:Body/></soapenv:Envelope>").encode(),  # no operation
    soap_login("", ""),  # login without credentials
])
def test_non_soap_input_is_a_client_fault(deployment: Deployment, garbage: bytes) -> None:
    response = post_soap(deployment, garbage)
    assert_soap_client_fault(response)
    assert_nothing_went_upstream(deployment)


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/rest/nope/v1.3/x"),
    ("POST", "/rest/nope/v1.3/campaigns/welcome/email"),
    ("GET", "/rest/API/v1.3/campaigns"),  # families are case-sensitive, as the vendor's are
])
def test_unknown_rest_family_is_a_vendor_404(deployment: Deployment, method: str, path: str) -> None:
    token = deployment.rest_token()
    with deployment.http() as client:
        response = client.request(method, path, headers={"Authorization": token, "Content-Type": "application/json"},
                                  content=b"{}" if method == "POST" else None)
    assert_vendor_json_error(response, 404)
    assert_nothing_went_upstream(deployment)


def test_login_needs_a_form_and_a_known_auth_type(deployment: Deployment) -> None:
    with deployment.http() as client:
        as_json = client.post("/rest/api/v1.3/auth/token", json={"user_name": APP_USER})
        odd = client.post("/rest/api/v1.3/auth/token", data={"auth_type": "magic"})
        not_utf8 = client.post("/rest/api/v1.3/auth/token", content=b"user_name=\xff\xfe&auth_type=password",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_vendor_json_error(as_json, 400)
    assert_vendor_json_error(odd, 400)
    assert_vendor_json_error(not_utf8, 400)
    assert_nothing_went_upstream(deployment)


def test_soap_call_with_an_invalid_session_is_refused_locally(deployment: Deployment) -> None:
    assert post_soap(deployment, soap_login(APP_USER, APP_PASSWORD)).status_code == 200  # a real session exists
    call = (
        f'{SOAP_ENVELOPE}<soapenv:Header><urn:SessionHeader xmlns:urn="urn:ws.rsys.com">'
        "<urn:sessionId>forged</urn:sessionId></urn:SessionHeader></soapenv:Header><soapenv:Body>"
        '<urn:mergeTriggerEmail xmlns:urn="urn:ws.rsys.com"/></soapenv:Body></soapenv:Envelope>'
    ).encode()
    response = post_soap(deployment, call)
    assert response.status_code == 500  # SOAP 1.1: a server fault, as the vendor answers it
    assert b"INVALID_SESSION_ID" in response.content
    assert_nothing_went_upstream(deployment)


@pytest.mark.parametrize("accounts_mode", ["ok", "refuse"])
def test_app_gone_mid_body_sends_nothing_upstream(deployment: Deployment, accounts_mode: str) -> None:
    token = deployment.rest_token()
    deployment.primary.set_mode(accounts_mode)  # "refuse": the send would go to the outbox instead
    deployment.failover.set_mode(accounts_mode)
    assert deployment.gateway is not None
    in_flight = deployment.gateway.server.server_state.tasks  # uvicorn's running request tasks
    host, port = deployment.url.removeprefix("http://").rsplit(":", 1)
    head = (f"POST {EMAIL_PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=5) as app:
        app.sendall(head + b'{"recipientData": [')  # 19 of the 1000 bytes announced
        wait_until(lambda: len(in_flight) == 1, timeout=5, message="the gateway to start reading the body")
    # The app hung up: the request can never be answered, and half a body is not a call to forward.
    wait_until(lambda: len(in_flight) == 0, timeout=10, message="the gateway to finish the abandoned request")
    assert_nothing_went_upstream(deployment)
    assert deployment.admin_status()["outbox"]["depth"] == 0
