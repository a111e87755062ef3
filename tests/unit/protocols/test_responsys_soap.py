from __future__ import annotations

import pytest
from lxml import etree

from gateway.errors import BadEnvelope, LoginRefused
from gateway.protocols import responsys_soap as soap
from policies.outcome import Failure, Kind

CALL = (
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:urn="urn:ws.rsys.com">'
    b"<soapenv:Header><urn:SessionHeader><urn:sessionId>APP-SESSION</urn:sessionId></urn:SessionHeader>"
    b"</soapenv:Header><soapenv:Body><urn:mergeTriggerEmail><urn:recordData/></urn:mergeTriggerEmail>"
    b"</soapenv:Body></soapenv:Envelope>"
)


def test_envelope_operation_and_session() -> None:
    envelope = soap.parse_envelope(CALL)
    assert envelope.operation == "mergeTriggerEmail"
    assert envelope.session_id == "APP-SESSION"


def test_with_session_replaces_the_app_session() -> None:
    rewritten = soap.parse_envelope(CALL).with_session("UPSTREAM")
    assert b"APP-SESSION" not in rewritten
    assert soap.parse_envelope(rewritten).session_id == "UPSTREAM"
    assert b"urn:recordData" in rewritten  # the app's prefixes survive


def test_with_session_adds_a_missing_header() -> None:
    bare = CALL.replace(b"<soapenv:Header><urn:SessionHeader><urn:sessionId>APP-SESSION</urn:sessionId>"
                        b"</urn:SessionHeader></soapenv:Header>", b"")
    assert soap.parse_envelope(soap.parse_envelope(bare).with_session("S")).session_id == "S"


@pytest.mark.parametrize(
    "hostile",
    [
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">&e;</soapenv:Envelope>',
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]><x>&b;</x>',
        b"<not-closed>",
        b'<x xmlns="urn:other"/>',
    ],
)
def test_hostile_or_malformed_xml_is_refused(hostile: bytes) -> None:
    with pytest.raises(BadEnvelope):
        soap.parse_envelope(hostile)


def test_login_round_trip() -> None:
    request = soap.parse_envelope(soap.login_request("user<&>", "pass\"word"))
    assert request.operation == "login"
    assert request.login_credentials() == ("user<&>", "pass\"word")
    assert soap.parse_login(200, soap.login_response("SID")) == "SID"


def test_fault_shape_and_classification() -> None:
    fault = soap.fault(code="INVALID_SESSION_ID", message="expired")
    root = etree.fromstring(fault)
    assert root.find(f".//{{{soap.SOAP_ENV}}}Fault/faultcode").text == "soapenv:Server"  # type: ignore[union-attr]
    assert soap.fault_code(fault) == "INVALID_SESSION_ID"
    assert soap.classify(500, fault, retry_after=None).kind is Kind.SESSION_INVALID
    assert soap.classify(500, soap.fault(code="API_LIMIT_EXCEEDED", message="x"), retry_after=3).retry_after == 3
    assert soap.classify(500, soap.fault(code="RECIPIENT_NOT_FOUND", message="x"),
                         retry_after=None).kind is Kind.CLIENT_ERROR
    assert soap.classify(503, b"", retry_after=None).failure is Failure.UNAVAILABLE
    assert soap.classify(500, b"<html/>", retry_after=None).failure is Failure.SERVER_ERROR
    with pytest.raises(LoginRefused, match="INVALID_USER"):
        soap.parse_login(500, soap.fault(code="INVALID_USER_NAME", message="no"))


def test_wsdl_addresses_are_rewritten() -> None:
    wsdl = (
        b'<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" '
        b'xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:tns="urn:ws.rsys.com">'
        b'<wsdl:service name="ResponsysWSService"><wsdl:port name="ResponsysWS" binding="tns:ResponsysWSSoapBinding">'
        b'<soap:address location="https://ws2.responsys.net/webservices/services/ResponsysWSService"/>'
        b"</wsdl:port></wsdl:service></wsdl:definitions>"
    )
    rewritten = soap.rewrite_wsdl(wsdl, "https://gw.example/webservices/services/ResponsysWSService")
    assert b'location="https://gw.example/webservices/services/ResponsysWSService"' in rewritten
    assert b"ws2.responsys.net" not in rewritten
    assert b'binding="tns:ResponsysWSSoapBinding"' in rewritten  # QName prefixes kept


def test_every_merge_trigger_operation_has_its_aftm_twin() -> None:
    assert soap.HA_OPERATIONS == {"mergeTriggerEmail": "HaMergeTriggerEmail", "mergeTriggerSMS": "HaMergeTriggerSms"}
    assert set(soap.HA_OPERATIONS.values()) <= soap.SEND_OPERATIONS


@pytest.mark.parametrize(("sent", "forwarded"), [
    ('""', '""'),
    ("", ""),
    ('"mergeTriggerSMS"', '"HaMergeTriggerSms"'),
    ("mergeTriggerSMS", "HaMergeTriggerSms"),
    ('"urn:ws.rsys.com/mergeTriggerSMS"', '"urn:ws.rsys.com/HaMergeTriggerSms"'),
    ('"urn:mergeTriggerSMS"', '"urn:HaMergeTriggerSms"'),
    ('"xmergeTriggerSMS"', '"xmergeTriggerSMS"'),  # names another thing: left alone
    ('"mergeTriggerSMS', '"HaMergeTriggerSms"'),  # unbalanced quotes, single quotes, blanks inside
    ('mergeTriggerSMS"', '"HaMergeTriggerSms"'),
    ("'mergeTriggerSMS'", '"HaMergeTriggerSms"'),
    ('" urn:ws.rsys.com/mergeTriggerSMS "', '"urn:ws.rsys.com/HaMergeTriggerSms"'),
])
def test_soap_action_names_the_operation_sent(sent: str, forwarded: str) -> None:
    assert soap.soap_action_for(sent, app_operation="mergeTriggerSMS", operation="HaMergeTriggerSms") == forwarded
