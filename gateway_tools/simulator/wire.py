"""The simulated account's wire shapes: the REST error body and the SOAP 1.1 envelopes and faults.

The simulator keeps its own copy of these vendor facts on purpose: it is the yardstick the gateway's
adapters (`gateway.protocols.*`) are measured against, so it must not borrow from them.

Vendor facts mirrored here:
- REST errors are `{"type": "", "title", "errorCode", "detail", "errorDetails": []}`; `type` and
  `errorDetails` are reserved and empty (Responsys "What are the error status codes?").
- SOAP faults carry, under `detail`, an element of `urn:fault.ws.rsys.com` (`AccountFault`,
  `UnexpectedErrorFault`, `TriggeredMessageFault`, `CustomEventFault`, ...) extending `ApiFault`:
  `exceptionCode` then `exceptionMessage` (ResponsysWSFaults_Schema.xsd).
- Schema elements are namespace-qualified (`elementFormDefault="qualified"`), optional values are
  `nillable` and sent as `xsi:nil="true"`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from lxml import etree
from starlette.responses import Response

WS_NS = "urn:ws.rsys.com"
FAULT_NS = "urn:fault.ws.rsys.com"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

JSON_TYPE = "application/json"
XML_TYPE = "text/xml; charset=utf-8"  # SOAP 1.1 content type


@dataclass(frozen=True, slots=True)
class RestError:
    """One vendor error: HTTP status, errorCode and title; the detail varies per call."""

    status: int
    code: str
    title: str


# Verified codes: INVALID_TOKEN (401), API_NOT_ALLOWED_IN_SECONDARY (401), UNRECOVERABLE_EXCEPTION (500)
# from the AFTM "Handling errors and exceptions" page; INVALID_PARAMETER (400, "Invalid request
# parameters") from the error-codes FAQ; INVALID_REQUEST_CONTENT from the Merge Trigger SMS notes;
# API_LIMIT_EXCEEDED from the throttling FAQ. AUTHENTICATION_FAILED and SERVICE_UNAVAILABLE are the
# simulator's best guess (the vendor's wording for these is not public).
INVALID_TOKEN = RestError(401, "INVALID_TOKEN", "Invalid token")
AUTHENTICATION_FAILED = RestError(401, "AUTHENTICATION_FAILED", "Authentication failed")
NOT_ALLOWED_IN_SECONDARY = RestError(401, "API_NOT_ALLOWED_IN_SECONDARY", "API not allowed in secondary")
INVALID_PARAMETER = RestError(400, "INVALID_PARAMETER", "Invalid request parameters")
INVALID_REQUEST_CONTENT = RestError(400, "INVALID_REQUEST_CONTENT", "Invalid request content")
RECORD_NOT_FOUND = RestError(404, "RECORD_NOT_FOUND", "Record not found")
API_LIMIT_EXCEEDED = RestError(429, "API_LIMIT_EXCEEDED", "API limit exceeded")
UNRECOVERABLE = RestError(500, "UNRECOVERABLE_EXCEPTION", "Unrecoverable exception")
UNEXPECTED = RestError(500, "UNEXPECTED_EXCEPTION", "Unexpected exception")
SERVICE_UNAVAILABLE = RestError(503, "SERVICE_UNAVAILABLE", "Service unavailable")


def rest_error(error: RestError, detail: str, *, status: int | None = None,
               headers: Mapping[str, str] | None = None) -> Response:
    body = {"type": "", "title": error.title, "errorCode": error.code, "detail": detail, "errorDetails": []}
    return Response(json.dumps(body), status_code=status or error.status, media_type=JSON_TYPE,
                    headers=dict(headers or {}))


def json_response(payload: object, *, status: int = 200) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type=JSON_TYPE)


# --- SOAP -------------------------------------------------------------------------------------------

def ws(local: str) -> str:
    return f"{{{WS_NS}}}{local}"


def envelope(body_child: etree._Element) -> bytes:
    root = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soapenv": SOAP_ENV})
    etree.SubElement(root, f"{{{SOAP_ENV}}}Body").append(body_child)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def soap_response(body_child: etree._Element, *, status: int = 200) -> Response:
    return Response(envelope(body_child), status_code=status, media_type=XML_TYPE)


def soap_fault(*, fault: str, code: str, message: str, client: bool = False, status: int = 500,
               headers: Mapping[str, str] | None = None) -> Response:
    """A vendor fault: `detail/{urn:fault.ws.rsys.com}<fault>/(exceptionCode, exceptionMessage)`.

    SOAP 1.1 sends faults with HTTP 500 (WS-I Basic Profile R1126); `status` is only changed for
    gateway-level refusals such as throttling.
    """
    node = _fault_element(faultcode="soapenv:Client" if client else "soapenv:Server", faultstring=message)
    detail = etree.SubElement(node, "detail")
    vendor = etree.SubElement(detail, f"{{{FAULT_NS}}}{fault}", nsmap={"ns1": FAULT_NS})
    etree.SubElement(vendor, f"{{{FAULT_NS}}}exceptionCode").text = code
    etree.SubElement(vendor, f"{{{FAULT_NS}}}exceptionMessage").text = message
    return Response(envelope(node), status_code=status, media_type=XML_TYPE, headers=dict(headers or {}))


def soap_client_fault(message: str) -> Response:
    """A plain SOAP Client fault with no vendor detail: the envelope itself could not be read."""
    return Response(envelope(_fault_element(faultcode="soapenv:Client", faultstring=message)),
                    status_code=500, media_type=XML_TYPE)


def _fault_element(*, faultcode: str, faultstring: str) -> etree._Element:
    node = etree.Element(f"{{{SOAP_ENV}}}Fault", nsmap={"soapenv": SOAP_ENV})
    etree.SubElement(node, "faultcode").text = faultcode
    etree.SubElement(node, "faultstring").text = faultstring
    return node


def set_nil(element: etree._Element) -> None:
    element.set(f"{{{XSI_NS}}}nil", "true")
