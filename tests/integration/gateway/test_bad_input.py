"""Bad input gets the vendor's own error shape and status, never a 500 or a traceback, and goes nowhere."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.integration.gateway.conftest import APP_PASSWORD, APP_USER, EMAIL_PATH, Deployment

SOAP_PATH = "/webservices/services/ResponsysWSService"
REST_ERROR_KEYS = {"type", "title", "errorCode", "detail", "errorDetails"}


def assert_nothing_went_upstream(deployment: Deployment) -> None:
    for account in (deployment.primary, deployment.failover):
        stats = account.stats()
        assert account.deliveries() == [] and stats["rest_logins"] == 0 and stats["soap_logins"] == 0


def soap_session(deployment: Deployment) -> str:
    login = (
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:urn="urn:ws.rsys.com">'
        f"<soapenv:Body><urn:login><urn:username>{APP_USER}</urn:username><urn:password>{APP_PASSWORD}"
        "</urn:password></urn:login></soapenv:Body></soapenv:Envelope>"
    )
    with deployment.http() as client:
        response = client.post(SOAP_PATH, content=login, headers={"Content-Type": "text/xml"})
    response.raise_for_status()
    start = response.text.index("<sessionId>") + len("<sessionId>")
    return response.text[start:response.text.index("</sessionId>")]


def test_malformed_json_is_a_vendor_400(deployment: Deployment) -> None:
    token = deployment.rest_token()
    with deployment.http() as client:
        response = client.post(EMAIL_PATH, content=b'{"recipientData": [', headers={
            "Authorization": token, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()) == REST_ERROR_KEYS
    assert_nothing_went_upstream(deployment)


def test_oversize_body_is_a_vendor_413(make_deployment: Callable[..., Deployment]) -> None:
    deployment = make_deployment(requests={"max_body_bytes": 1024})
    token = deployment.rest_token()
    with deployment.http() as client:
        response = client.post(EMAIL_PATH, content=b'{"x": "' + b"a" * 5000 + b'"}', headers={
            "Authorization": token, "Content-Type": "application/json"})
        soap = client.post(SOAP_PATH, content=b"<x>" + b"a" * 5000 + b"</x>", headers={"Content-Type": "text/xml"})
    assert response.status_code == 413 and set(response.json()) == REST_ERROR_KEYS
    assert soap.status_code == 413 and b"Fault" in soap.content
    assert_nothing_went_upstream(deployment)


@pytest.mark.parametrize("hostile", [
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
    b'<urn:login xmlns:urn="urn:ws.rsys.com"><urn:username>&e;</urn:username><urn:password>x</urn:password>'
    b"</urn:login></soapenv:Body></soapenv:Envelope>",
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;"><!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;">'
    b'<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">]><x>&lol5;</x>',
    b"this is not xml at all",
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body/></soapenv:Envelope>',
])
def test_hostile_or_broken_soap_is_a_client_fault(deployment: Deployment, hostile: bytes) -> None:
    started = time.monotonic()
    with deployment.http() as client:
        response = client.post(SOAP_PATH, content=hostile, headers={"Content-Type": "text/xml"})
    assert response.status_code == 400
    assert b"soapenv:Client" in response.content and b"root:" not in response.content
    assert time.monotonic() - started < 5
    assert_nothing_went_upstream(deployment)


def test_unknown_rest_family_is_a_vendor_404(deployment: Deployment) -> None:
    token = deployment.rest_token()
    with deployment.http() as client:
        response = client.get("/rest/nope/v1.3/whatever", headers={"Authorization": token})
    assert response.status_code == 404 and set(response.json()) == REST_ERROR_KEYS
    assert_nothing_went_upstream(deployment)


def test_login_needs_a_form_and_a_known_auth_type(deployment: Deployment) -> None:
    with deployment.http() as client:
        as_json = client.post("/rest/api/v1.3/auth/token", json={"user_name": APP_USER})
        odd = client.post("/rest/api/v1.3/auth/token", data={"auth_type": "magic"})
    assert as_json.status_code == 400 and json.loads(as_json.content)["errorCode"]
    assert odd.status_code == 400 and set(odd.json()) == REST_ERROR_KEYS
    assert_nothing_went_upstream(deployment)


def test_soap_call_with_an_invalid_session_is_refused_locally(deployment: Deployment) -> None:
    soap_session(deployment)  # a real session exists, but the call below does not carry it
    call = (
        b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:urn="urn:ws.rsys.com">'
        b"<soapenv:Header><urn:SessionHeader><urn:sessionId>forged</urn:sessionId></urn:SessionHeader>"
        b"</soapenv:Header><soapenv:Body><urn:mergeTriggerEmail/></soapenv:Body></soapenv:Envelope>"
    )
    with deployment.http() as client:
        response = client.post(SOAP_PATH, content=call, headers={"Content-Type": "text/xml"})
    assert b"INVALID_SESSION_ID" in response.content
    assert_nothing_went_upstream(deployment)
