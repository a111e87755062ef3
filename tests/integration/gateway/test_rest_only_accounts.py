"""An account configured for REST only (no `soap_url`) is valid config: a SOAP call passes it over.

It used to reach the account's SOAP login, which raised a ValueError the loop did not catch: a plain-text
500 for the app, and a queued SOAP send retried with a traceback until it expired.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests
from lxml import etree

from tests.integration.gateway.conftest import APP_PASSWORD, APP_USER, Deployment
from tests.support.responsys_clients import merge_trigger_email_args as merge_args
from tests.support.responsys_clients import soap_session_header as header
from tests.support.responsys_clients import zeep_client

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
WS_NS = "urn:ws.rsys.com"
SERVICE = "/webservices/services/ResponsysWSService"


def _accounts(deployment: Deployment, *, soap_on_failover: bool) -> list[dict[str, Any]]:
    failover: dict[str, Any] = {"name": "failover", "login_url": f"https://failover.test:{deployment.failover.port}",
                                "user_name": "api_failover", "password": "failover-password", "soap_sessions": 2,
                                "api_prefix": "/rest/haApi"}
    if soap_on_failover:
        failover["soap_url"] = f"https://failover.test:{deployment.failover.port}{SERVICE}"
        failover["soap_ha_operations"] = True
    return [{"name": "primary", "login_url": f"https://primary.test:{deployment.primary.port}",
             "user_name": "api_primary", "password": "primary-password"}, failover]


def _started(make_deployment: Callable[..., Deployment], *, soap_on_failover: bool) -> Deployment:
    deployment = make_deployment(start=False)
    deployment.overrides["accounts"] = _accounts(deployment, soap_on_failover=soap_on_failover)
    deployment.start_gateway()
    return deployment


def test_a_soap_call_skips_a_rest_only_primary_without_failing_it(
        make_deployment: Callable[..., Deployment], http_session: requests.Session) -> None:
    deployment = _started(make_deployment, soap_on_failover=True)
    client = zeep_client(deployment.url, http_session)
    session_id = client.service.login(username=APP_USER, password=APP_PASSWORD)
    merged = client.service.mergeTriggerEmail(**merge_args("soap@example.com"), _soapheaders=header(session_id))
    assert merged[0].success is True
    assert [d.operation for d in deployment.failover.deliveries()] == ["HaMergeTriggerEmail"]
    status = deployment.admin_status()  # REST traffic still goes to the primary, which nothing marked failing
    assert status["active"] == "primary"
    assert status["failover"]["accounts"]["primary"]["failures_in_window"] == 0
    assert deployment.primary.stats()["soap_logins"] == 0


def test_a_soap_call_no_account_can_take_gets_a_soap_fault_and_is_not_queued(
        make_deployment: Callable[..., Deployment]) -> None:
    deployment = _started(make_deployment, soap_on_failover=False)
    login = (f'<e:Envelope xmlns:e="{SOAP_ENV}" xmlns:u="{WS_NS}"><e:Body><u:login><u:username>{APP_USER}'
             f"</u:username><u:password>{APP_PASSWORD}</u:password></u:login></e:Body></e:Envelope>").encode()
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"login"'}
    with deployment.http() as http:
        answer = http.post(SERVICE, content=login, headers=headers)
        assert answer.status_code == 200, answer.text
        session_id = etree.fromstring(answer.content).findtext(f".//{{{WS_NS}}}sessionId")
        merge = (f'<e:Envelope xmlns:e="{SOAP_ENV}" xmlns:u="{WS_NS}"><e:Header><u:SessionHeader><u:sessionId>'
                 f"{session_id}</u:sessionId></u:SessionHeader></e:Header><e:Body><u:mergeTriggerEmail>"
                 "<u:recordData><u:fieldNames>EMAIL_ADDRESS_</u:fieldNames><u:records><u:fieldValues>x@example.com"
                 "</u:fieldValues></u:records></u:recordData><u:mergeRule/><u:campaign><u:folderName>C"
                 "</u:folderName><u:objectName>W</u:objectName></u:campaign><u:triggerData/>"
                 "</u:mergeTriggerEmail></e:Body></e:Envelope>").encode()
        refused = http.post(SERVICE, content=merge, headers={**headers, "SOAPAction": '"mergeTriggerEmail"'})
    # SOAP 1.1 answers a fault with HTTP 500 and the fault as the body: the vendor's shape, not a traceback
    assert refused.status_code == 500 and refused.headers["content-type"].startswith("text/xml"), refused.text
    fault = etree.fromstring(refused.content).find(f".//{{{SOAP_ENV}}}Fault")
    assert fault is not None and fault.findtext("faultcode", "").endswith("Server")
    assert deployment.primary.stats()["soap_logins"] == 0 and deployment.failover.stats()["soap_logins"] == 0
