"""The simulated account's SOAP API (`ResponsysWSService`, document/literal SOAP 1.1), its WSDL and schemas.

Vendor behaviour mirrored (ResponsysWS_Level1.wsdl and its schemas; AFTM "SOAP-based code changes"):
- `login(username, password)` -> `loginResponse/result/sessionId`; faults `AccountFault`.
- Certificate login: `authenticateServer(username, clientChallenge*)` -> `result` (ServerAuthResult:
  `authSessionId`, `encryptedClientChallenge*`, `serverChallenge*`); then `loginWithCertificate(
  encryptedServerChallenge*)` with `AuthSessionHeader/authSessionId` -> `result/sessionId`. Byte arrays
  are Java byte[] as the vendor's schema types them: one signed `xsd:byte` element per byte. A wrong
  answer or a spent authSessionId is an `AccountFault` AUTHENTICATION_FAILED.
- Every other operation needs `SessionHeader/sessionId`; a missing, unknown or expired session is an
  `UnexpectedErrorFault` with `exceptionCode` INVALID_SESSION_ID.
- `mergeTriggerEmail`, `HaMergeTriggerEmail`, `mergeTriggerSMS` take `recordData`, `mergeRule`,
  `campaign`, `triggerData*` and answer one `result` (TriggerResult) per record; `triggerCustomEvent`
  takes `customEvent`, `recipientData*`. Bad input is a `TriggeredMessageFault`/`CustomEventFault`.
- On a failover (secondary) account only login, logout and the HA operations are processed.
- A session is single-threaded: two calls at once invalidate it (strict mode, see AccountState).
- As the vendor's, the WSDL (`/webservices/wsdl/ResponsysWS_Level1.wsdl`, or `?wsdl` on the service)
  does not inline its types: it imports `ResponsysWSTypes_Schema.xsd` and `ResponsysWSFaults_Schema.xsd`
  by relative location, served under `SCHEMA_DIR`; any other path is 404.
- AFTM twins: `HaMergeTriggerEmail` and `HaMergeTriggerSms` take the same parts as their originals.
- The binding's `soapAction` is "" for every operation; a SOAPAction header that names an operation
  other than the Body's is a Client fault (a stack dispatching on SOAPAction would run the wrong call).

XML from clients is parsed by the gateway's hardened `parse_untrusted` (entity resolution, DTD loading
and network access off); any DOCTYPE is refused with a SOAP Client fault before anything else is looked at.
"""

from __future__ import annotations

import asyncio
from importlib import resources

from lxml import etree
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.protocols.xml import XmlRefused, parse_untrusted
from gateway_tools.simulator import wire
from gateway_tools.simulator.state import AccountState, recipient_key
from gateway_tools.simulator.wire import SOAP_ENV, ws

SERVICE_PATH = "/webservices/services/ResponsysWSService"
WSDL_PATH = "/webservices/wsdl/ResponsysWS_Level1.wsdl"
SCHEMA_DIR = SERVICE_PATH + "/_resources_/xsd/"
SCHEMAS = ("ResponsysWSTypes_Schema.xsd", "ResponsysWSFaults_Schema.xsd")
WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"
MAX_ENVELOPE = 10 * 1024 * 1024  # the vendor's documented 10 MB payload ceiling

_MERGE_OPERATIONS = frozenset({"mergeTriggerEmail", "HaMergeTriggerEmail", "mergeTriggerSMS", "HaMergeTriggerSms"})
_LOGIN_OPERATIONS = frozenset({"login", "authenticateServer", "loginWithCertificate"})
_OPERATIONS = _MERGE_OPERATIONS | _LOGIN_OPERATIONS | {"logout", "triggerCustomEvent"}
_SECONDARY_OPERATIONS = frozenset({"login", "logout", "HaMergeTriggerEmail", "HaMergeTriggerSms"})
_RECIPIENT_COLUMNS = {"recipientId": "RIID_", "customerId": "CUSTOMER_ID_", "emailAddress": "EMAIL_ADDRESS_",
                      "mobileNumber": "MOBILE_NUMBER_"}


class _BadEnvelope(ValueError):
    pass


class _CallFault(Exception):
    def __init__(self, fault: str, code: str, message: str, *, client: bool = True) -> None:
        super().__init__(message)
        self.fault, self.code, self.message, self.client = fault, code, message, client


def load_wsdl_template() -> bytes:
    return resources.files("gateway_tools.simulator").joinpath("ResponsysWS_Level1.wsdl").read_bytes()


def load_schema(name: str) -> bytes:
    """One of the packaged `SCHEMAS`, as the account serves it."""
    return resources.files("gateway_tools.simulator").joinpath(name).read_bytes()


def render_wsdl(template: bytes, service_url: str) -> bytes:
    """The WSDL with `soap:address location` naming this listener's own service URL."""
    root = parse_untrusted(template)
    for address in root.iter(f"{{{WSDL_SOAP}}}address"):
        address.set("location", service_url)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def build_soap_routes(state: AccountState) -> list[Route]:
    api = _SoapApi(state, load_wsdl_template())
    return [
        Route(WSDL_PATH, api.wsdl, methods=["GET"]),
        Route(SERVICE_PATH, api.service, methods=["GET", "POST"]),
        Route(SCHEMA_DIR + "{name:path}", api.schema, methods=["GET"]),
    ]


def parse_envelope(body: bytes, *, charset: str | None = None) -> tuple[etree._Element, etree._Element]:
    """(Header or None-equivalent, first Body child) of an untrusted SOAP 1.1 envelope.

    `charset` (the request's Content-Type charset) decides how the bytes are read, over the XML
    declaration, as the vendor's Axis stack does: a body labelled with the wrong charset is misread.
    """
    if len(body) > MAX_ENVELOPE:
        raise _BadEnvelope("request exceeds the 10 MB limit")
    try:
        root = parse_untrusted(body, charset=charset)
    except XmlRefused as exc:
        raise _BadEnvelope(str(exc)) from None
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise _BadEnvelope("expected a SOAP 1.1 Envelope")
    soap_body = root.find(f"{{{SOAP_ENV}}}Body")
    operation = None if soap_body is None else next(
        (child for child in soap_body if isinstance(child.tag, str)), None)
    if operation is None:
        raise _BadEnvelope("the SOAP Body names no operation")
    return root, operation


class _SoapApi:
    def __init__(self, state: AccountState, wsdl_template: bytes) -> None:
        self._state = state
        self._wsdl = wsdl_template
        self._schemas = {name: load_schema(name) for name in SCHEMAS}

    async def wsdl(self, request: Request) -> Response:
        origin = f"{request.url.scheme}://{request.headers.get('host') or request.url.netloc}"
        template = self._state.fetch_wsdl(self._wsdl)
        return Response(render_wsdl(template, origin + SERVICE_PATH), media_type=wire.XML_TYPE)

    async def schema(self, request: Request) -> Response:
        name = request.path_params["name"]
        document = self._state.fetch_schema(name, self._schemas.get(name))
        if document is None:
            return Response("Not Found", status_code=404, media_type="text/plain")
        return Response(document, media_type=wire.XML_TYPE)

    async def service(self, request: Request) -> Response:
        if request.method == "GET":
            if "wsdl" in {key.lower() for key in request.query_params}:
                return await self.wsdl(request)
            return Response("Hi there, this is a SOAP service.", media_type="text/plain")
        try:
            charset = request.headers.get("content-type", "").partition("charset=")[2].split(";")[0].strip(' "')
            root, operation = parse_envelope(await request.body(), charset=charset or None)
        except _BadEnvelope as exc:
            return wire.soap_client_fault(str(exc))
        qname = etree.QName(operation)
        if qname.namespace != wire.WS_NS or qname.localname not in _OPERATIONS:
            return wire.soap_client_fault(f"No such operation '{qname.localname}'")
        name = qname.localname
        action = _named_operation(request.headers.get("soapaction", ""))
        if action in _OPERATIONS and action != name:
            # The binding's soapAction is "" for every operation; a header that names one must name the
            # Body's, or a stack that dispatches on SOAPAction runs another call than the one sent.
            return wire.soap_client_fault(f"SOAPAction names '{action}' but the Body calls '{name}'")
        if name == "login":
            return self._login(operation)
        if name == "authenticateServer":
            return await self._authenticate_server(operation)
        if name == "loginWithCertificate":
            auth_session = root.findtext(f"{{{SOAP_ENV}}}Header/{ws('AuthSessionHeader')}/{ws('authSessionId')}")
            return await self._login_with_certificate(operation, (auth_session or "").strip())
        session_id = root.findtext(f"{{{SOAP_ENV}}}Header/{ws('SessionHeader')}/{ws('sessionId')}")
        session_id = session_id.strip() if session_id else None
        if not self._state.begin_session_call(session_id):
            return wire.soap_fault(fault="UnexpectedErrorFault", code="INVALID_SESSION_ID",
                                   message="Session not available in the system. Please login.")
        assert session_id is not None
        try:
            latency = self._state.latency_ms
            if latency:
                # The vendor works on the call while the session is busy: a second call now collides.
                await asyncio.sleep(latency / 1000)
            return await self._call(request, name, operation, session_id)
        finally:
            self._state.end_session_call(session_id)

    async def _call(self, request: Request, name: str, operation: etree._Element, session_id: str) -> Response:
        if name == "logout":
            self._state.close_session(session_id)
            answer = etree.Element(ws("logoutResponse"), nsmap={"ns1": wire.WS_NS})
            etree.SubElement(answer, ws("result")).text = "true"
            return wire.soap_response(answer)
        if self._state.secondary and name not in _SECONDARY_OPERATIONS:
            # AFTM processes only login, logout and the HA calls on the failover account.
            return wire.soap_fault(fault="UnexpectedErrorFault", code="API_NOT_ALLOWED_IN_SECONDARY",
                                   message=f"{name} is not available on a failover account; use its HA twin")
        try:
            recipients = (_merge_records(operation) if name in _MERGE_OPERATIONS
                          else _event_recipients(operation))
        except _CallFault as exc:
            return wire.soap_fault(fault=exc.fault, code=exc.code, message=exc.message, client=exc.client)
        answer = etree.Element(ws(f"{name}Response"), nsmap={"ns1": wire.WS_NS, "xsi": wire.XSI_NS})
        for fields in recipients:
            riid = self._state.remember_member(fields)
            self._state.record(protocol="soap", operation=name, path=request.url.path,
                               recipient=recipient_key(fields),
                               idempotency_key=request.headers.get("idempotency-key"),
                               request_id=request.headers.get("x-request-id"),
                               traceparent=request.headers.get("traceparent"))
            result = etree.SubElement(answer, ws("result"))
            etree.SubElement(result, ws("recipientId")).text = str(riid)
            etree.SubElement(result, ws("success")).text = "true"
            wire.set_nil(etree.SubElement(result, ws("errorMessage")))
        return wire.soap_response(answer)

    def _login(self, operation: etree._Element) -> Response:
        user = operation.findtext(ws("username")) or ""
        password = operation.findtext(ws("password")) or ""
        if user != self._state.user_name:
            return wire.soap_fault(fault="AccountFault", code="INVALID_USER_NAME", message="Invalid user name",
                                   client=True)
        if not self._state.credentials_match(user, password):
            return wire.soap_fault(fault="AccountFault", code="INVALID_PASSWORD", message="Invalid password",
                                   client=True)
        session_id = self._state.open_session()
        if session_id is None:
            return wire.soap_fault(fault="AccountFault", code="REQUEST_LIMIT_EXCEEDED",
                                   message="Maximum number of concurrent sessions reached for this account")
        answer = etree.Element(ws("loginResponse"), nsmap={"ns1": wire.WS_NS})
        etree.SubElement(etree.SubElement(answer, ws("result")), ws("sessionId")).text = session_id
        return wire.soap_response(answer)


    async def _authenticate_server(self, operation: etree._Element) -> Response:
        """Certificate login, step 1 (see gateway_tools.simulator.certificates)."""
        user = operation.findtext(ws("username")) or ""
        client_challenge = _byte_array(operation, "clientChallenge")
        if client_challenge is None:
            return wire.soap_fault(fault="UnexpectedErrorFault", code="INVALID_PARAMETER",
                                   message="clientChallenge must be one or more xsd:byte values", client=True)
        if user != self._state.user_name:
            return wire.soap_fault(fault="AccountFault", code="INVALID_USER_NAME", message="Invalid user name",
                                   client=True)
        answer = await asyncio.to_thread(self._state.certificates.authenticate_server, client_challenge)
        if answer is None:
            return wire.soap_fault(fault="AccountFault", code="AUTHENTICATION_FAILED",
                                   message="Certificate login is not enabled for this user", client=True)
        response = etree.Element(ws("authenticateServerResponse"), nsmap={"ns1": wire.WS_NS})
        result = etree.SubElement(response, ws("result"))
        etree.SubElement(result, ws("authSessionId")).text = answer.handle
        _append_bytes(result, "encryptedClientChallenge", answer.encrypted_client_challenge)
        _append_bytes(result, "serverChallenge", answer.server_challenge)
        return wire.soap_response(response)

    async def _login_with_certificate(self, operation: etree._Element, auth_session: str) -> Response:
        """Certificate login, step 2: the server challenge encrypted with the user's private key."""
        answer = _byte_array(operation, "encryptedServerChallenge")
        if answer is None:
            return wire.soap_fault(fault="UnexpectedErrorFault", code="INVALID_PARAMETER",
                                   message="encryptedServerChallenge must be one or more xsd:byte values",
                                   client=True)
        if not auth_session:
            return wire.soap_fault(fault="UnexpectedErrorFault", code="INVALID_SOAP_HEADER",
                                   message="AuthSessionHeader/authSessionId is required", client=True)
        if not await asyncio.to_thread(self._state.certificates.login_with_certificate, auth_session, answer):
            return wire.soap_fault(fault="AccountFault", code="AUTHENTICATION_FAILED",
                                   message="Authentication failed", client=True)
        session_id = self._state.open_session()
        if session_id is None:
            return wire.soap_fault(fault="AccountFault", code="REQUEST_LIMIT_EXCEEDED",
                                   message="Maximum number of concurrent sessions reached for this account")
        response = etree.Element(ws("loginWithCertificateResponse"), nsmap={"ns1": wire.WS_NS})
        etree.SubElement(etree.SubElement(response, ws("result")), ws("sessionId")).text = session_id
        return wire.soap_response(response)


def _byte_array(parent: etree._Element, local: str) -> bytes | None:
    """A Java byte[] as the vendor's schema sends it: one `xsd:byte` element (-128..127) per byte."""
    values = bytearray()
    for node in parent.findall(ws(local)):
        try:
            value = int((node.text or "").strip())
        except ValueError:
            return None
        if not -128 <= value <= 127:
            return None
        values.append(value & 0xFF)
    return bytes(values) or None


def _append_bytes(parent: etree._Element, local: str, data: bytes) -> None:
    for value in data:
        etree.SubElement(parent, ws(local)).text = str(value - 256 if value > 127 else value)


def _named_operation(soap_action: str) -> str:
    """The operation a SOAPAction header names (`"urn:ws.rsys.com/login"` -> `login`), or ""."""
    action = soap_action.strip().strip('"')
    for separator in "/:#":
        action = action.rpartition(separator)[2]
    return action


def _text(parent: etree._Element, local: str) -> str:
    node = parent.find(ws(local))
    return (node.text or "").strip() if node is not None else ""


def _merge_records(operation: etree._Element) -> list[dict[str, str]]:
    def bad(message: str) -> _CallFault:
        return _CallFault("TriggeredMessageFault", "INVALID_PARAMETER", message)

    campaign = operation.find(ws("campaign"))
    if campaign is None or not _text(campaign, "objectName"):
        raise bad("campaign.objectName is required")
    rule = operation.find(ws("mergeRule"))
    if rule is None or not _text(rule, "matchColumnName1"):
        raise bad("mergeRule.matchColumnName1 is required")
    data = operation.find(ws("recordData"))
    if data is None:
        raise bad("recordData is required")
    names = [(node.text or "").strip() for node in data.findall(ws("fieldNames"))]
    records = data.findall(ws("records"))
    if not names or not all(names):
        raise bad("recordData.fieldNames is null OR empty")
    if not records:
        raise bad("recordData.records is null OR empty")
    if len(records) > 200:
        raise _CallFault("TriggeredMessageFault", "RECORD_LIMIT_EXCEEDED", "More than 200 records")
    recipients = []
    for index, record in enumerate(records):
        values = [node.text or "" for node in record.findall(ws("fieldValues"))]
        if len(values) != len(names):
            raise bad(f"records[{index}] must have one fieldValues per fieldNames")
        recipients.append({name.upper(): value for name, value in zip(names, values, strict=True)})
    return recipients


def _event_recipients(operation: etree._Element) -> list[dict[str, str]]:
    def bad(message: str) -> _CallFault:
        return _CallFault("CustomEventFault", "INVALID_PARAMETER", message)

    event = operation.find(ws("customEvent"))
    if event is None or not (_text(event, "eventName") or _text(event, "eventId")):
        raise bad("customEvent.eventName or customEvent.eventId is required")
    items = operation.findall(ws("recipientData"))
    if not items:
        raise bad("recipientData is null OR empty")
    if len(items) > 200:
        raise _CallFault("CustomEventFault", "RECIPIENT_LIMIT_EXCEEDED", "More than 200 recipients")
    recipients = []
    for index, item in enumerate(items):
        recipient = item.find(ws("recipient"))
        list_name = None if recipient is None else recipient.find(ws("listName"))
        if recipient is None or list_name is None or not _text(list_name, "objectName"):
            raise bad(f"recipientData[{index}].recipient.listName is required")
        fields = {column: _text(recipient, prop) for prop, column in _RECIPIENT_COLUMNS.items()
                  if _text(recipient, prop)}
        if not fields:
            raise bad(f"recipientData[{index}].recipient needs recipientId, customerId, emailAddress "
                      "or mobileNumber")
        recipients.append(fields)
    return recipients
