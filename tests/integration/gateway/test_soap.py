"""SOAP through the gateway, driven by an unmodified third-party client (zeep) with the proxied WSDL."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests
import zeep
import zeep.exceptions
from lxml import etree

from tests.integration.gateway.conftest import APP_PASSWORD, APP_USER, Deployment
from tests.support.responsys_clients import merge_trigger_email_args as merge_args
from tests.support.responsys_clients import plain_session, zeep_client
from tests.support.responsys_clients import soap_session_header as header

FAULT_NS = "urn:fault.ws.rsys.com"


def soap_deliveries(account: Any, email: str) -> int:
    return sum(1 for d in account.deliveries() if d.protocol == "soap" and email in d.recipient)


def test_wsdl_points_at_the_gateway(deployment: Deployment, http_session: requests.Session) -> None:
    client = zeep_client(deployment.url, http_session)
    address = client.service._binding_options["address"]
    assert address == f"{deployment.url}/webservices/services/ResponsysWSService"
    also = http_session.get(f"{deployment.url}/webservices/services/ResponsysWSService?wsdl", timeout=10)
    assert also.status_code == 200 and f"primary.test:{deployment.primary.port}".encode() not in also.content


def test_login_trigger_and_logout_through_the_gateway(deployment: Deployment,
                                                      http_session: requests.Session) -> None:
    client = zeep_client(deployment.url, http_session)
    session_id = client.service.login(username=APP_USER, password=APP_PASSWORD)
    assert deployment.primary.stats()["soap_logins"] == 0  # the app's login never goes upstream
    merged = client.service.mergeTriggerEmail(**merge_args("soap@example.com"), _soapheaders=header(session_id))
    event = client.service.triggerCustomEvent(
        customEvent={"eventName": "ORDER_PLACED"},
        recipientData=[{"recipient": {"listName": {"folderName": "Lists", "objectName": "CONTACTS"},
                                      "emailAddress": "soap@example.com", "emailFormat": "HTML_FORMAT"},
                        "optionalData": [{"name": "SKU", "value": "1"}]}],
        _soapheaders=header(session_id))
    assert [r.success for r in merged] == [True] and event[0].recipientId == merged[0].recipientId
    assert client.service.logout(_soapheaders=header(session_id)) is True
    with pytest.raises(zeep.exceptions.Fault) as raised:
        client.service.mergeTriggerEmail(**merge_args("late@example.com"), _soapheaders=header(session_id))
    assert raised.value.detail[0].findtext(f"{{{FAULT_NS}}}exceptionCode") == "INVALID_SESSION_ID"
    assert soap_deliveries(deployment.primary, "soap@example.com") == 2
    assert deployment.primary.stats()["soap_logins"] == 1


def test_wrong_password_is_an_account_fault(deployment: Deployment, http_session: requests.Session) -> None:
    with pytest.raises(zeep.exceptions.Fault) as raised:
        zeep_client(deployment.url, http_session).service.login(username=APP_USER, password="wrong")
    vendor = raised.value.detail[0]
    assert etree.QName(vendor).localname == "AccountFault"
    assert deployment.primary.stats()["soap_logins"] == 0


def test_invalid_session_upstream_is_never_seen_by_the_app(deployment: Deployment,
                                                           http_session: requests.Session) -> None:
    client = zeep_client(deployment.url, http_session)
    session_id = client.service.login(username=APP_USER, password=APP_PASSWORD)
    client.service.mergeTriggerEmail(**merge_args("one@example.com"), _soapheaders=header(session_id))
    deployment.primary.invalidate()
    results = [client.service.mergeTriggerEmail(**merge_args(f"again-{i}@example.com"),
                                                 _soapheaders=header(session_id)) for i in range(3)]
    assert all(r[0].success for r in results)
    # One login for the warm session, one more when it was found dead; the app saw no fault.
    assert deployment.primary.stats()["soap_logins"] == 2


def test_concurrent_calls_never_share_an_upstream_session(deployment: Deployment) -> None:
    # The simulator invalidates a session used by two calls at once (strict mode, as the vendor may):
    # 8 threads through 2 pooled sessions must all succeed.
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        with plain_session() as session:
            client = zeep_client(deployment.url, session)
            session_id = client.service.login(username=APP_USER, password=APP_PASSWORD)
            for j in range(3):
                try:
                    client.service.mergeTriggerEmail(**merge_args(f"c{index}-{j}@example.com"),
                                                     _soapheaders=header(session_id))
                except BaseException as exc:  # collected and asserted below
                    errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len([d for d in deployment.primary.deliveries() if d.protocol == "soap"]) == 24


def test_soap_fails_over_to_the_ha_operation_of_the_failover_account(make_deployment: Any,
                                                                      http_session: requests.Session) -> None:
    deployment = make_deployment(start=False)
    accounts = deployment.raw_config("http://unused")["accounts"]
    accounts[1]["soap_ha_operations"] = True
    deployment.overrides = {"accounts": accounts}
    deployment.start_gateway()
    client = zeep_client(deployment.url, http_session)
    session_id = client.service.login(username=APP_USER, password=APP_PASSWORD)
    deployment.primary.set_mode("refuse")
    merged = client.service.mergeTriggerEmail(**merge_args("ha@example.com"), _soapheaders=header(session_id))
    assert merged[0].success is True  # zeep parsed a mergeTriggerEmailResponse
    ops = [d.operation for d in deployment.failover.deliveries() if "ha@example.com" in d.recipient]
    assert ops == ["HaMergeTriggerEmail"]
