"""Credentials no gateway ever issued, in bytes no client library would send: a 401 in the surface's shape.

A header value reaches the app as latin-1 text and a SOAP sessionId as any unicode the XML spells, so a
credential may hold characters a signature can never contain. Each surface must refuse it as it refuses
any wrong credential, never with a 500 (the raw requests go over a bare socket: httpx would refuse them).
"""

from __future__ import annotations

import base64

import pytest

from tests.integration.gateway.conftest import EMAIL_PATH, Deployment, email_body
from tests.support.raw_http import RawResponse, exchange, request_head

SOAP_PATH = "/webservices/services/ResponsysWSService"


def soap_call(session_id: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:urn="urn:ws.rsys.com">'
        f"<soapenv:Header><urn:SessionHeader><urn:sessionId>{session_id}</urn:sessionId></urn:SessionHeader>"
        "</soapenv:Header><soapenv:Body><urn:mergeTriggerEmail><urn:recordData/></urn:mergeTriggerEmail>"
        "</soapenv:Body></soapenv:Envelope>"
    ).encode()


def send(deployment: Deployment, method: str, path: str, headers: list[tuple[str, str]],
         body: bytes = b"") -> RawResponse:
    if body:
        headers = [*headers, ("Content-Length", str(len(body)))]
    return exchange(deployment.url, request_head(method, path.encode(), headers) + body)


@pytest.mark.parametrize("suffix", ["\xe9", "\xff\xfe"])
def test_a_rest_token_with_a_non_ascii_byte_is_a_vendor_401(deployment: Deployment, suffix: str) -> None:
    token = deployment.rest_token() + suffix
    answer = send(deployment, "POST", EMAIL_PATH, [("Authorization", token), ("Content-Type", "application/json")],
                  email_body("a@example.com"))
    assert answer.status == 401, answer.text
    assert '"errorCode": "INVALID_TOKEN"' in answer.text
    refresh = send(deployment, "POST", "/rest/api/v1.3/auth/token",
                   [("Authorization", token), ("Content-Type", "application/x-www-form-urlencoded")],
                   b"auth_type=token")
    assert refresh.status == 401, refresh.text
    assert deployment.primary.deliveries() == []


def test_a_soap_session_id_with_non_ascii_text_is_the_invalid_session_fault(deployment: Deployment) -> None:
    answer = send(deployment, "POST", SOAP_PATH, [("Content-Type", "text/xml; charset=utf-8"), ("SOAPAction", "x")],
                  soap_call("c2Vzc2lvbg.\u00e9\u4e2d"))
    assert answer.status == 500 and b"Fault>" in answer.body, answer.text  # SOAP 1.1: a fault is a 500
    assert "Invalid or expired session id" in answer.text


def test_a_portal_cookie_with_a_non_ascii_byte_is_sent_to_the_login_page(deployment: Deployment) -> None:
    answer = send(deployment, "GET", "/portal/failures", [("Cookie", "aftm_portal=YWJj.\xe9")])
    assert answer.status == 303 and answer.headers["location"].startswith("/portal/login"), answer.text


@pytest.mark.parametrize("value", ["Basic \xff\xfe", "Basic YXBwOmFwcC1wYXNzd29yZA==\xe9", "Basic %%%"])
def test_http_basic_that_is_not_ascii_base64_is_a_401_on_the_failures_api(deployment: Deployment, value: str) -> None:
    answer = send(deployment, "GET", "/api/failures", [("Authorization", value)])
    assert answer.status == 401, answer.text


def test_http_basic_of_the_right_password_still_opens_the_failures_api(deployment: Deployment) -> None:
    value = "Basic " + base64.b64encode(b"app:app-password").decode()
    assert send(deployment, "GET", "/api/failures", [("Authorization", value)]).status == 200
