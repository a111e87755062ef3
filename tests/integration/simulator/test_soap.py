"""The simulated SOAP API, driven by zeep with the WSDL the simulator serves."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
import requests
import zeep
import zeep.exceptions
from lxml import etree

from gateway_tools.simulator.server import SimulatedAccount
from tests.integration.simulator.conftest import PASSWORD, USER
from tests.support.responsys_clients import plain_session, soap_session_header, zeep_client
from tests.support.servers import wait_until

FAULT_NS = "urn:fault.ws.rsys.com"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"


def _client(account: SimulatedAccount, http_session: requests.Session) -> zeep.Client:
    return zeep_client(account.url, http_session, timeout=10)


def _login(client: zeep.Client) -> str:
    # zeep unwraps single-child results: loginResponse/result/sessionId comes back as the id itself.
    session_id = client.service.login(username=USER, password=PASSWORD)
    assert isinstance(session_id, str) and session_id
    return session_id


def _merge_args(*emails: str) -> dict[str, Any]:
    return {
        "recordData": {"fieldNames": ["EMAIL_ADDRESS_", "CITY_"],
                       "records": [{"fieldValues": [email, "Paris"]} for email in emails]},
        "mergeRule": {"insertOnNoMatch": True, "updateOnMatch": "REPLACE_ALL",
                      "matchColumnName1": "EMAIL_ADDRESS_", "matchOperator": "NONE",
                      "defaultPermissionStatus": "OPTIN"},
        "campaign": {"folderName": "Campaigns", "objectName": "WELCOME"},
        "triggerData": [{"optionalData": [{"name": "ORDER", "value": "42"}]} for _ in emails],
    }


def _exception_code(fault: zeep.exceptions.Fault) -> tuple[str, str | None]:
    assert fault.detail is not None
    vendor = fault.detail[0]
    return etree.QName(vendor).localname, vendor.findtext(f"{{{FAULT_NS}}}exceptionCode")


def test_zeep_loads_the_served_wsdl_and_targets_the_simulator(account: SimulatedAccount,
                                                             http_session: requests.Session) -> None:
    client = _client(account, http_session)

    assert client.service._binding_options["address"] == (
        f"{account.url}/webservices/services/ResponsysWSService")
    also_served = http_session.get(f"{account.url}/webservices/services/ResponsysWSService?wsdl", timeout=10)
    assert also_served.status_code == 200 and b"ResponsysWSService" in also_served.content


def test_login_merge_trigger_email_and_custom_event_with_zeep(account: SimulatedAccount,
                                                              http_session: requests.Session) -> None:
    client = _client(account, http_session)
    session_id = _login(client)

    merged = client.service.mergeTriggerEmail(**_merge_args("a@example.com", "b@example.com"),
                                              _soapheaders=soap_session_header(session_id))
    event = client.service.triggerCustomEvent(
        customEvent={"eventName": "ORDER_PLACED"},
        recipientData=[{"recipient": {"listName": {"folderName": "Lists", "objectName": "CONTACTS"},
                                      "emailAddress": "a@example.com", "emailFormat": "HTML_FORMAT"},
                        "optionalData": [{"name": "SKU", "value": "1"}]}],
        _soapheaders=soap_session_header(session_id))
    logged_out = client.service.logout(_soapheaders=soap_session_header(session_id))

    assert [(r.success, r.errorMessage) for r in merged] == [(True, None), (True, None)]
    assert merged[0].recipientId == event[0].recipientId  # same member, same RIID
    assert logged_out is True
    assert [(d.protocol, d.operation) for d in account.deliveries()] == [
        ("soap", "mergeTriggerEmail"), ("soap", "mergeTriggerEmail"), ("soap", "triggerCustomEvent")]
    assert account.stats()["soap_logins"] == 1 and account.stats()["live_sessions"] == 0


def test_invalidated_session_is_an_invalid_session_id_fault(account: SimulatedAccount,
                                                            http_session: requests.Session) -> None:
    client = _client(account, http_session)
    session_id = _login(client)

    account.invalidate()
    with pytest.raises(zeep.exceptions.Fault) as raised:
        client.service.mergeTriggerEmail(**_merge_args("a@example.com"), _soapheaders=soap_session_header(session_id))

    assert _exception_code(raised.value) == ("UnexpectedErrorFault", "INVALID_SESSION_ID")
    assert account.deliveries() == []


def test_call_without_session_header_is_an_invalid_session_id_fault(account: SimulatedAccount,
                                                                    http_session: requests.Session) -> None:
    with pytest.raises(zeep.exceptions.Fault) as raised:
        _client(account, http_session).service.mergeTriggerEmail(**_merge_args("a@example.com"))

    assert _exception_code(raised.value) == ("UnexpectedErrorFault", "INVALID_SESSION_ID")


def test_wrong_password_is_an_account_fault(account: SimulatedAccount, http_session: requests.Session) -> None:
    with pytest.raises(zeep.exceptions.Fault) as raised:
        _client(account, http_session).service.login(username=USER, password="wrong")

    assert _exception_code(raised.value) == ("AccountFault", "INVALID_PASSWORD")


def test_bad_merge_input_is_a_triggered_message_fault(account: SimulatedAccount,
                                                      http_session: requests.Session) -> None:
    client = _client(account, http_session)
    args = _merge_args("a@example.com")
    args["mergeRule"]["matchColumnName1"] = None

    with pytest.raises(zeep.exceptions.Fault) as raised:
        client.service.mergeTriggerEmail(**args, _soapheaders=soap_session_header(_login(client)))

    assert _exception_code(raised.value) == ("TriggeredMessageFault", "INVALID_PARAMETER")


def test_a_session_used_by_two_calls_at_once_is_invalidated(account: SimulatedAccount,
                                                            http_session: requests.Session) -> None:
    client = _client(account, http_session)
    session_id = _login(client)
    account.latency(400)  # keeps the first call inside the session while the second arrives
    first: dict[str, Any] = {}

    def first_call() -> None:
        with plain_session() as own:
            first["result"] = _client(account, own).service.mergeTriggerEmail(
                **_merge_args("a@example.com"), _soapheaders=soap_session_header(session_id))

    thread = threading.Thread(target=first_call)
    thread.start()
    wait_until(lambda: account.state.calls_in_flight() == 1, message="the first call to hold the session")
    with pytest.raises(zeep.exceptions.Fault) as second:
        client.service.mergeTriggerEmail(**_merge_args("b@example.com"), _soapheaders=soap_session_header(session_id))
    thread.join(timeout=10)
    account.latency(0)
    with pytest.raises(zeep.exceptions.Fault) as later:
        client.service.mergeTriggerEmail(**_merge_args("c@example.com"), _soapheaders=soap_session_header(session_id))

    assert first["result"][0].success is True
    assert _exception_code(second.value)[1] == "INVALID_SESSION_ID"
    assert _exception_code(later.value)[1] == "INVALID_SESSION_ID"
    assert [d.recipient for d in account.deliveries()] == ["EMAIL_ADDRESS_:a@example.com"]


def test_logins_beyond_max_sessions_are_refused(make_account: Any, http_session: requests.Session) -> None:
    account = make_account(max_sessions=2)
    client = _client(account, http_session)
    _login(client), _login(client)

    with pytest.raises(zeep.exceptions.Fault) as raised:
        _login(client)

    assert _exception_code(raised.value)[0] == "AccountFault"
    assert account.stats()["soap_logins"] == 2


def test_secondary_account_processes_only_the_ha_operation(make_account: Any,
                                                           http_session: requests.Session) -> None:
    account = make_account(name="failover", secondary=True)
    client = _client(account, http_session)
    session_id = _login(client)

    with pytest.raises(zeep.exceptions.Fault) as refused:
        client.service.mergeTriggerEmail(**_merge_args("a@example.com"), _soapheaders=soap_session_header(session_id))
    accepted = client.service.HaMergeTriggerEmail(**_merge_args("a@example.com"),
                                                  _soapheaders=soap_session_header(session_id))

    assert _exception_code(refused.value)[1] == "API_NOT_ALLOWED_IN_SECONDARY"
    assert accepted[0].success is True
    sms = client.service.HaMergeTriggerSms(**_merge_args("b@example.com"),
                                           _soapheaders=soap_session_header(session_id))
    assert sms[0].success is True
    assert [d.operation for d in account.deliveries()] == ["HaMergeTriggerEmail", "HaMergeTriggerSms"]


# The vendor's ResponsysWS_Level1.wsdl imports its types; these two lines are verbatim from it.
VENDOR_IMPORTS = [
    '<xsd:import namespace="urn:ws.rsys.com" schemaLocation="../services/ResponsysWSService/_resources_/xsd/'
    'ResponsysWSTypes_Schema.xsd"/>',
    '<xsd:import namespace="urn:fault.ws.rsys.com" schemaLocation="../services/ResponsysWSService/_resources_/xsd/'
    'ResponsysWSFaults_Schema.xsd"/>',
]
XSD_NS = "http://www.w3.org/2001/XMLSchema"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"


@pytest.mark.parametrize("wsdl_path", ["/webservices/wsdl/ResponsysWS_Level1.wsdl",
                                       "/webservices/services/ResponsysWSService?wsdl"])
def test_the_wsdl_imports_its_schemas_by_the_vendors_relative_locations(
        account: SimulatedAccount, http: httpx.Client, wsdl_path: str) -> None:
    response = http.get(account.url + wsdl_path)
    assert response.status_code == 200
    root = etree.fromstring(response.content)
    imports = root.findall(f"{{{WSDL_NS}}}types/{{{XSD_NS}}}schema/{{{XSD_NS}}}import")
    assert len(imports) == 2 and all(line in response.text for line in VENDOR_IMPORTS)
    assert root.findall(f".//{{{XSD_NS}}}element") == []  # no inline types: a client must fetch the schemas
    for node in imports:  # each resolves, from where the WSDL was loaded, to a schema the account serves
        schema = http.get(str(httpx.URL(account.url + wsdl_path).join(node.get("schemaLocation", ""))))
        assert schema.status_code == 200
        assert etree.fromstring(schema.content).get("targetNamespace") == node.get("namespace")


@pytest.mark.parametrize("path", [
    "/webservices/services/ResponsysWSService/_resources_/xsd/Other.xsd",
    "/webservices/services/ResponsysWSService/_resources_/ResponsysWSTypes_Schema.xsd",
    "/webservices/wsdl/ResponsysWSTypes_Schema.xsd",
    "/webservices/wsdl/Other.wsdl",
])
def test_documents_are_served_only_at_the_vendors_paths(account: SimulatedAccount, http: httpx.Client,
                                                        path: str) -> None:
    assert http.get(account.url + path).status_code == 404


def test_zeep_loads_the_wsdl_and_its_imported_schemas_from_the_simulator(account: SimulatedAccount,
                                                                        http_session: requests.Session) -> None:
    fetched: list[str] = []
    http_session.hooks["response"].append(lambda response, *args, **kwargs: fetched.append(response.url))
    client = _client(account, http_session)
    session_id = _login(client)
    merged = client.service.mergeTriggerEmail(**_merge_args("x@example.com"),
                                              _soapheaders=soap_session_header(session_id))
    assert merged[0].success is True
    xsd = f"{account.url}/webservices/services/ResponsysWSService/_resources_/xsd/"
    assert set(fetched) >= {f"{account.url}/webservices/wsdl/ResponsysWS_Level1.wsdl",
                            xsd + "ResponsysWSTypes_Schema.xsd", xsd + "ResponsysWSFaults_Schema.xsd"}
    operations = set(client.wsdl.services["ResponsysWSService"].ports["ResponsysWS"].binding._operations)
    assert {"HaMergeTriggerEmail", "HaMergeTriggerSms", "mergeTriggerEmail", "mergeTriggerSMS"} <= operations


@pytest.mark.parametrize("prolog", [
    '<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/hostname">]>',
    '<!DOCTYPE e [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>',
    "<!DOCTYPE Envelope>",
])
def test_xml_with_a_doctype_is_refused_with_a_client_fault(account: SimulatedAccount, prolog: str) -> None:
    envelope = (f'<?xml version="1.0"?>{prolog}<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" '
                'xmlns:urn="urn:ws.rsys.com"><soapenv:Body><urn:login><urn:username>&x;</urn:username>'
                "<urn:password>p</urn:password></urn:login></soapenv:Body></soapenv:Envelope>")
    if "hostname" not in prolog:
        envelope = envelope.replace("&x;", "&b;" if "ENTITY b" in prolog else USER)

    with httpx.Client(trust_env=False, timeout=10) as http:
        answer = http.post(f"{account.url}/webservices/services/ResponsysWSService", content=envelope.encode(),
                           headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})

    assert answer.status_code == 500
    fault = etree.fromstring(answer.content).find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
    assert fault is not None and fault.findtext("faultcode") == "soapenv:Client"
    assert "DOCTYPE" in (fault.findtext("faultstring") or "")
    assert account.stats()["soap_logins"] == 0
