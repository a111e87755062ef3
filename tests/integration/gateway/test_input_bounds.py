"""Input the gateway cannot use gets a clear 4xx in the surface's shape: never a 500, never a traceback."""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.gateway.conftest import ADMIN_TOKEN, APP_PASSWORD, APP_USER, EMAIL_PATH, Deployment

SOAP_PATH = "/webservices/services/ResponsysWSService"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
DEEP = 100_000


def deep_json(kind: str) -> bytes:
    if kind == "arrays":
        return b"[" * DEEP + b"]" * DEEP
    return b'{"a":' * DEEP + b"1" + b"}" * DEEP


@pytest.mark.parametrize("kind", ["arrays", "objects"])
def test_json_nested_100000_deep_is_a_rest_400_and_goes_nowhere(deployment: Deployment, kind: str) -> None:
    token = deployment.rest_token()
    with deployment.http() as client:
        response = client.post(EMAIL_PATH, content=deep_json(kind),
                               headers={"Authorization": token, "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["errorCode"] == "INVALID_REQUEST_CONTENT"
    assert deployment.primary.deliveries() == [] and deployment.failover.deliveries() == []


def test_json_nested_just_past_the_bound_is_refused(
        deployment: Deployment) -> None:
    token = deployment.rest_token()
    headers = {"Authorization": token, "Content-Type": "application/json"}
    with deployment.http() as client:
        over = client.post(EMAIL_PATH, content=b'{"x":' + b"[" * 70 + b"]" * 70 + b"}", headers=headers)
    assert over.status_code == 400 and over.json()["errorCode"] == "INVALID_REQUEST_CONTENT", over.text


def test_admin_override_with_json_nested_5000_deep_is_a_400(deployment: Deployment) -> None:
    nested = b"[" * 5000 + b"]" * 5000  # under the override's 16 KiB; 100,000 deep is refused as too large
    with deployment.http() as client:
        response = client.post("/admin/override", content=b'{"account":' + nested + b"}",
                               headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 400, response.text
    assert "error" in response.json()


HOSTILE_FILTERS = [
    {"page": "99999999999999999999999"},
    {"page": "-99999999999999999999999"},
    {"code": "99999999999999999999999"},
    {"from": "nan"},
    {"from": "inf"},
    {"to": "-inf"},
    {"from": "1e23"},
    {"to": "1e300"},
    {"from": "2000000000", "to": "1000000000"},
]


@pytest.mark.parametrize("params", HOSTILE_FILTERS)
def test_api_failures_refuses_numbers_it_cannot_use_with_a_json_400(
        deployment: Deployment, params: dict[str, str]) -> None:
    with deployment.http() as client:
        response = client.get("/api/failures", params=params, auth=(APP_USER, APP_PASSWORD))
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"}


@pytest.mark.parametrize("params", HOSTILE_FILTERS)
def test_portal_refuses_numbers_it_cannot_use_with_a_400_page(deployment: Deployment, params: dict[str, str]) -> None:
    with deployment.http() as client:
        login = client.post("/portal/login", data={"user_name": APP_USER, "password": APP_PASSWORD})
        assert login.status_code == 303
        page = client.get("/portal/failures", params=params)
        csv = client.get("/portal/failures.csv", params=params)
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html"), page.text
    assert csv.status_code == 400, csv.text


def test_portal_entry_with_an_id_beyond_any_store_id_is_not_found(deployment: Deployment) -> None:
    with deployment.http() as client:
        client.post("/portal/login", data={"user_name": APP_USER, "password": APP_PASSWORD})
        response = client.get("/portal/failures/99999999999999999999999")
    assert response.status_code == 404


def test_soap_envelope_nested_100000_deep_is_a_client_fault(deployment: Deployment) -> None:
    body = (f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Body>' + "<a>" * DEEP + "</a>" * DEEP
            + "</s:Body></s:Envelope>").encode()
    started = time.monotonic()
    with deployment.http() as client:
        response = client.post(SOAP_PATH, content=body, headers={"Content-Type": "text/xml"})
    assert response.status_code == 400 and b"soapenv:Client" in response.content, response.text
    assert time.monotonic() - started < 5


def test_api_failures_still_answers_sensible_filters(deployment: Deployment) -> None:
    with deployment.http() as client:
        response = client.get("/api/failures", params={"from": "0", "to": str(int(time.time())), "page": "1",
                                                      "code": "2", "limit": "5"}, auth=(APP_USER, APP_PASSWORD))
    assert response.status_code == 200, response.text
    assert json.loads(response.content)["limit"] == 5
