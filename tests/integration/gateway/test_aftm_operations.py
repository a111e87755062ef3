"""Each AFTM operation fails over as the vendor defines it: the twin on the failover account, or a
pass-through of API_NOT_ALLOWED_IN_SECONDARY for calls the failover account does not serve."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import zeep
from lxml import etree

from tests.integration.gateway.conftest import ADMIN_TOKEN, APP_PASSWORD, APP_USER, Deployment, delivered_to
from tests.support.responsys_clients import merge_trigger_email_args as merge_args
from tests.support.responsys_clients import soap_session_header as header
from tests.support.responsys_clients import zeep_client

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
WS_NS = "urn:ws.rsys.com"
SERVICE = "/webservices/services/ResponsysWSService"


@pytest.fixture
def soap_client(ha_deployment: Deployment, http_session: requests.Session) -> zeep.Client:
    return zeep_client(ha_deployment.url, http_session)


def use_failover(deployment: Deployment) -> None:
    with deployment.http() as client:
        client.post("/admin/override", json={"account": "failover"},
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).raise_for_status()


def failover_untouched(deployment: Deployment) -> None:
    """Neither an account failure nor a reason to log in again."""
    status = deployment.admin_status()
    assert status["active"] == "failover"
    assert status["failover"]["accounts"]["failover"]["healthy"] is True


def test_soap_merge_trigger_sms_fails_over_to_ha_merge_trigger_sms(ha_deployment: Deployment,
                                                                  soap_client: zeep.Client) -> None:
    session_id = soap_client.service.login(username=APP_USER, password=APP_PASSWORD)
    ha_deployment.primary.set_mode("refuse")
    merged = soap_client.service.mergeTriggerSMS(**merge_args("sms@example.com"), _soapheaders=header(session_id))
    assert merged[0].success is True  # zeep parsed a mergeTriggerSMSResponse: the answer was renamed back
    ops = [d.operation for d in ha_deployment.failover.deliveries() if "sms@example.com" in d.recipient]
    assert ops == ["HaMergeTriggerSms"]


def test_soap_call_without_a_twin_gets_the_failover_accounts_refusal(ha_deployment: Deployment,
                                                                     soap_client: zeep.Client) -> None:
    session_id = soap_client.service.login(username=APP_USER, password=APP_PASSWORD)
    use_failover(ha_deployment)
    merged = soap_client.service.mergeTriggerSMS(**merge_args("first@example.com"), _soapheaders=header(session_id))
    assert merged[0].success is True
    event = {"customEvent": {"eventName": "ORDER_SHIPPED"},
             "recipientData": [{"recipient": {"emailAddress": "e@example.com",
                                              "listName": {"folderName": "Demo", "objectName": "Contacts"}},
                               "optionalData": [{"name": "ORDER", "value": "42"}]}]}
    with pytest.raises(zeep.exceptions.Fault) as refused:
        soap_client.service.triggerCustomEvent(**event, _soapheaders=header(session_id))
    code = refused.value.detail.find(".//{urn:fault.ws.rsys.com}exceptionCode")
    assert code is not None and code.text == "API_NOT_ALLOWED_IN_SECONDARY"
    assert ha_deployment.failover.stats()["soap_logins"] == 1  # the session was kept: not a session problem
    failover_untouched(ha_deployment)


def _envelope(operation: str, session_id: str, email: str) -> bytes:
    return (f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:urn="{WS_NS}"><soapenv:Header>'
            f"<urn:SessionHeader><urn:sessionId>{session_id}</urn:sessionId></urn:SessionHeader></soapenv:Header>"
            f"<soapenv:Body><urn:{operation}><urn:recordData><urn:fieldNames>EMAIL_ADDRESS_</urn:fieldNames>"
            f"<urn:records><urn:fieldValues>{email}</urn:fieldValues></urn:records></urn:recordData>"
            "<urn:mergeRule><urn:matchColumnName1>EMAIL_ADDRESS_</urn:matchColumnName1></urn:mergeRule>"
            "<urn:campaign><urn:folderName>C</urn:folderName><urn:objectName>WELCOME</urn:objectName></urn:campaign>"
            f"<urn:triggerData/></urn:{operation}></soapenv:Body></soapenv:Envelope>").encode()


@pytest.mark.parametrize("operation", ["mergeTriggerEmail", "mergeTriggerSMS"])
def test_soap_action_naming_the_operation_is_renamed_with_the_body(ha_deployment: Deployment,
                                                                   soap_client: zeep.Client, operation: str) -> None:
    session_id = soap_client.service.login(username=APP_USER, password=APP_PASSWORD)
    use_failover(ha_deployment)
    with ha_deployment.http() as http:
        answer = http.post(SERVICE, content=_envelope(operation, session_id, "action@example.com"),
                           headers={"Content-Type": "text/xml; charset=utf-8",
                                    "SOAPAction": f'"urn:ws.rsys.com/{operation}"'})
    assert answer.status_code == 200, answer.text
    body = etree.fromstring(answer.content).find(f"{{{SOAP_ENV}}}Body")
    assert body is not None and body[0].tag == f"{{{WS_NS}}}{operation}Response"
    assert [d.operation for d in ha_deployment.failover.deliveries()] == [
        {"mergeTriggerEmail": "HaMergeTriggerEmail", "mergeTriggerSMS": "HaMergeTriggerSms"}[operation]]


def _merge_body(address: str) -> dict[str, Any]:
    return {"mergeTriggerRecordData": {"fieldNames": ["EMAIL_ADDRESS_", "MOBILE_NUMBER_"],
                                       "mergeTriggerRecords": [{"fieldValues": [address, "6505551212"]}]},
            "mergeRule": {"matchColumnName1": "EMAIL_ADDRESS_", "insertOnNoMatch": True}}


def _push_body(address: str) -> dict[str, Any]:
    return {"recipientData": [{"recipient": {"emailAddress": address,
                                             "listName": {"folderName": "Demo", "objectName": "Contacts"}}}]}


@pytest.mark.parametrize(("app_path", "body", "twin", "status"), [
    ("/rest/api/v1.3/campaigns/OTP/sms", _merge_body, "/rest/haApi/v1.3/campaigns/OTP/sms", 200),
    ("/rest/api/v1.3/campaigns/APP/push", _push_body, "/rest/haApi/v1.3/campaigns/APP/push", 200),
    ("/rest/asyncApi/v1.3/campaigns/W/email", _merge_body, "/rest/haAsyncApi/v1.3/campaigns/W/email", 202),
    ("/rest/asyncApi/v1.3/campaigns/OTP/sms", _merge_body, "/rest/haAsyncApi/v1.3/campaigns/OTP/sms", 202),
    ("/rest/asyncApi/v1.3/campaigns/APP/push", _push_body, "/rest/haAsyncApi/v1.3/campaigns/APP/push", 202),
])
def test_rest_send_goes_to_its_aftm_twin_on_the_failover_account(
        ha_deployment: Deployment, app_path: str, body: Any, twin: str, status: int) -> None:
    token = ha_deployment.rest_token()
    use_failover(ha_deployment)
    with ha_deployment.http() as http:
        answer = http.post(app_path, json=body("twin@example.com"), headers={"Authorization": token})
    assert answer.status_code == status, answer.text
    assert [d.path for d in ha_deployment.failover.deliveries()] == [twin]


def test_rest_list_lookup_by_query_attribute_goes_to_ha_retrieve_list_members(ha_deployment: Deployment) -> None:
    token = ha_deployment.rest_token()
    use_failover(ha_deployment)
    with ha_deployment.http() as http:
        sent = http.post("/rest/api/v1.3/campaigns/OTP/sms", json=_merge_body("member@example.com"),
                         headers={"Authorization": token})
        assert sent.status_code == 200, sent.text
        found = http.get("/rest/api/v1.3/lists/CONTACTS/members?qa=e&fs=EMAIL_ADDRESS_&id=member%40example.com",
                         headers={"Authorization": token})
    assert found.status_code == 200, found.text
    assert found.json()["recordData"]["records"] == [["member@example.com"]]


def _app_calls(deployment: Deployment) -> list[tuple[str, bytes]]:
    """What both accounts received, less the gateway's own background fetches (health probes, documents)."""
    received = deployment.primary.received() + deployment.failover.received()
    return [(m, t) for m, t in received if m != "GET" or not t.startswith((b"/rest/api/v1.3/auth/", b"/webservices/"))]


@pytest.mark.parametrize(("method", "app_path"), [
    ("POST", "/REST/API/v1.3/campaigns/OTP/sms"),
    ("POST", "/Rest/api/v1.3/campaigns/OTP/sms"),
    ("POST", "/rest/API/v1.3/campaigns/OTP/sms"),
    ("POST", "/rest/api/v1.3/Campaigns/OTP/SMS"),
    ("POST", "/rest/api/V1.3/campaigns/OTP/sms"),
    ("POST", "/rest/asyncapi/v1.3/campaigns/W/email"),
    ("POST", "/rest/api/v1.3/Events/ORDER_SHIPPED"),
    ("GET", "/rest/api/v1.3/lists/CONTACTS/Members?qa=e&fs=all&id=a%40example.com"),
    ("POST", "/rest/api/v1.3/Auth/Token"),
    ("POST", "/REST/api/v1.3/auth/token"),
    ("POST", "/rest/api/V1.3/auth/token"),
])
def test_a_vendor_path_in_another_letter_case_is_the_vendors_404_and_goes_nowhere(
        ha_deployment: Deployment, method: str, app_path: str) -> None:
    """Responsys's paths are case-sensitive. Before, `/REST/...` got a plain-text 404 and a send or lookup
    spelt `Campaigns`/`V1.3`/`Members` went upstream as some other call, past its twin and the outbox:
    the failover account answered API_NOT_ALLOWED_IN_SECONDARY where the primary would say 404."""
    token = ha_deployment.rest_token()
    use_failover(ha_deployment)
    before = _app_calls(ha_deployment)
    with ha_deployment.http() as http:
        answer = http.request(method, app_path, headers={"Authorization": token, "Content-Type": "application/json"},
                              content=None if method == "GET" else json.dumps(_merge_body("case@example.com")))
    assert answer.status_code == 404, answer.text
    assert answer.json()["errorCode"] == "RESOURCE_NOT_FOUND"
    assert _app_calls(ha_deployment) == before
    failover_untouched(ha_deployment)


@pytest.mark.parametrize(("method", "app_path", "body"), [
    ("POST", "/rest/api/v1.3/events/ORDER_SHIPPED", _push_body("event@example.com")),
    ("POST", "/rest/api/v1.3/campaigns/OTP/sms/trigger", _push_body("event@example.com")),
    ("GET", "/rest/api/v1.3/lists/CONTACTS/members/1?fs=all", None),
])
def test_rest_call_without_a_twin_gets_the_failover_accounts_refusal(
        ha_deployment: Deployment, method: str, app_path: str, body: Any) -> None:
    token = ha_deployment.rest_token()
    use_failover(ha_deployment)
    with ha_deployment.http() as http:
        answer = http.request(method, app_path, headers={"Authorization": token},
                              content=None if body is None else json.dumps(body).encode())
    assert (answer.status_code, answer.json()["errorCode"]) == (401, "API_NOT_ALLOWED_IN_SECONDARY")
    assert ha_deployment.failover.stats()["rest_logins"] == 1  # not taken for an invalid token
    assert delivered_to(ha_deployment.failover, "event@example.com") == 0
    assert ha_deployment.primary.deliveries() == []  # not failed back over either
    failover_untouched(ha_deployment)
