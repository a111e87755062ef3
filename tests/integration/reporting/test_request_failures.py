"""TextPower's Request failures (code 1) on every surface: a structurally wrong SOAP call is the caller's
failure entry as REST's and SMS's are; what cannot be attributed (no live session, credentials refused)
is counted in the metrics instead, never recorded against a client."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
from lxml import etree

from gateway.protocols import responsys_soap as soap
from tests.support.servers import wait_until
from tests.support.sms import APP_PASSWORD, APP_USER, SmsDeployment

SOAPENV = "http://schemas.xmlsoap.org/soap/envelope/"
BODY_LIMIT = 4096


def _metric(deployment: SmsDeployment, name: str, protocol: str) -> float:
    with httpx.Client(base_url=deployment.url, trust_env=False) as client:
        text = client.get("/metrics").text
    found = re.search(rf'^{name}_total\{{protocol="{protocol}"\}} (\S+)$', text, flags=re.MULTILINE)
    return 0.0 if found is None else float(found.group(1))


def _failures(deployment: SmsDeployment) -> list[dict[str, object]]:
    with httpx.Client(base_url=deployment.url, trust_env=False) as client:
        response = client.get("/api/failures", auth=(APP_USER, APP_PASSWORD))
    assert response.status_code == 200, response.text
    entries: list[dict[str, object]] = response.json()["entries"]
    return entries


def _soap(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.post(soap.SERVICE_PATH, content=body, headers={"Content-Type": "text/xml; charset=utf-8",
                                                                 "SOAPAction": '""'})


def test_a_structurally_wrong_soap_call_is_its_callers_request_failure_and_the_unknown_are_counted(
        make_sms: Callable[..., SmsDeployment]) -> None:
    deployment = make_sms(requests={"max_body_bytes": BODY_LIMIT})
    with httpx.Client(base_url=deployment.url, trust_env=False, timeout=15.0) as client:
        login = _soap(client, soap.login_request(APP_USER, APP_PASSWORD))
        assert login.status_code == 200, login.text
        session = etree.fromstring(login.content).findtext(f".//{{{soap.WS_NS}}}sessionId")
        assert session
        wrong = (f'<soapenv:Envelope xmlns:soapenv="{SOAPENV}" xmlns:urn="{soap.WS_NS}"><soapenv:Header>'
                 f"<urn:SessionHeader><urn:sessionId>{session}</urn:sessionId></urn:SessionHeader>"
                 "</soapenv:Header><soapenv:Body/></soapenv:Envelope>").encode()
        refused = _soap(client, wrong)
        assert refused.status_code == 400 and b"INVALID_REQUEST" in refused.content

        wait_until(lambda: len(_failures(deployment)) == 1, timeout=10, message="the SOAP request failure")
        [entry] = _failures(deployment)
        assert entry["failCode"] == 1 and entry["client"] == APP_USER
        assert str(entry["primaryError"]).startswith("Request: the SOAP Body names no operation")

        # No readable session (not XML; too large to read): nobody to record it for, so it is counted.
        before = _metric(deployment, "aftm_unattributed_request_failures", "soap")
        assert _soap(client, b"<soapenv:Envelope").status_code == 400
        too_large = _soap(client, b"<x>" + b"a" * (BODY_LIMIT + 1) + b"</x>")
        assert too_large.status_code == 413 and b"REQUEST_TOO_LARGE" in too_large.content
        assert _metric(deployment, "aftm_unattributed_request_failures", "soap") == before + 2
    assert len(_failures(deployment)) == 1


def test_refused_sms_credentials_are_counted_in_the_credential_failures_metric(sms: SmsDeployment) -> None:
    assert _metric(sms, "aftm_credential_failures", "sms") == 0
    with sms.http(auth=(APP_USER, "wrong")) as client:
        refused = client.post("/sms/v1/messages", content=b"<mtMessage/>", headers={"Content-Type": "application/xml"})
    assert refused.status_code == 401
    assert _metric(sms, "aftm_credential_failures", "sms") == 1
    assert _failures(sms) == []
