"""SOAP clients that do not write UTF-8: the charset the app declares is the one the gateway reads with,
and what it forwards is labelled with the charset it is actually in.

Java and .NET stacks may send `text/xml; charset=ISO-8859-1` (or UTF-16), with or without an XML
declaration. The vendor's SOAP stack, like Axis, decodes a request by its Content-Type charset (the
simulated account does the same). The gateway re-serialises every envelope as UTF-8 but forwarded
the app's Content-Type unchanged, so `josé` arrived as `josÃ©`; and an envelope whose charset was
only in the Content-Type was read as UTF-8 and refused as not well-formed.
"""

from __future__ import annotations

import httpx
import pytest

from gateway.protocols import responsys_soap as soap
from tests.integration.gateway.conftest import APP_PASSWORD, APP_USER, Deployment

SOAP_PATH = "/webservices/services/ResponsysWSService"
ADDRESS = "jos\u00e9@example.com"


def _session(client: httpx.Client) -> str:
    login = client.post(SOAP_PATH, content=soap.login_request(APP_USER, APP_PASSWORD),
                        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})
    return soap.parse_login(login.status_code, login.content)


def _event(session_id: str, *, declaration: str) -> str:
    return (
        f'{declaration}<S:Envelope xmlns:S="{soap.SOAP_ENV}"><S:Header><ns2:SessionHeader xmlns:ns2="{soap.WS_NS}" '
        f'S:mustUnderstand="1"><ns2:sessionId>{session_id}</ns2:sessionId></ns2:SessionHeader></S:Header><S:Body>'
        f'<ns2:triggerCustomEvent xmlns:ns2="{soap.WS_NS}"><ns2:customEvent><ns2:eventName>ORDER</ns2:eventName>'
        "</ns2:customEvent><ns2:recipientData><ns2:recipient><ns2:listName><ns2:folderName>F</ns2:folderName>"
        f"<ns2:objectName>L</ns2:objectName></ns2:listName><ns2:emailAddress>{ADDRESS}</ns2:emailAddress>"
        "</ns2:recipient></ns2:recipientData></ns2:triggerCustomEvent></S:Body></S:Envelope>")


def _delivered(deployment: Deployment) -> list[str]:
    return [d.recipient for d in deployment.primary.deliveries() if d.protocol == "soap"]


@pytest.mark.parametrize(("charset", "declared"), [
    ("ISO-8859-1", True),  # a Java client's platform default
    ("UTF-16", True),  # .NET's Encoding.Unicode, with a byte order mark
    ("ISO-8859-1", False),  # the charset only in the Content-Type, as RFC 7303 allows
    ("windows-1252", False),
])
def test_a_soap_call_in_another_charset_reaches_the_account_with_its_accents(
        deployment: Deployment, charset: str, declared: bool) -> None:
    with deployment.http() as client:
        session_id = _session(client)
        declaration = f'<?xml version="1.0" encoding="{charset}"?>' if declared else ""
        answer = client.post(SOAP_PATH, content=_event(session_id, declaration=declaration).encode(charset),
                             headers={"Content-Type": f"text/xml; charset={charset}",
                                      "SOAPAction": '"triggerCustomEvent"'})
    assert answer.status_code == 200, answer.text
    assert _delivered(deployment) == [f"EMAIL_ADDRESS_:{ADDRESS}"]


def test_a_soap_call_in_an_unknown_charset_is_a_client_fault(deployment: Deployment) -> None:
    with deployment.http() as client:
        session_id = _session(client)
        answer = client.post(SOAP_PATH, content=_event(session_id, declaration="").encode(),
                             headers={"Content-Type": "text/xml; charset=no-such-charset"})
    assert answer.status_code == 400 and soap.fault_code(answer.content) == "INVALID_REQUEST", answer.text
    assert _delivered(deployment) == []
