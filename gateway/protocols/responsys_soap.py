"""Responsys SOAP (document/literal, SOAP 1.1): envelopes, sessions, faults and the WSDL.

Vendor facts (Responsys SOAP API, `ResponsysWS_Level1.wsdl`):
- Operations live in `urn:ws.rsys.com`; `login(username, password)` answers
  `loginResponse/result/sessionId`; every other call carries `SessionHeader/sessionId` in the header.
  Certificate login: `authenticateServer(username, clientChallenge*)` answers `result` (ServerAuthResult:
  `authSessionId`, `encryptedClientChallenge*`, `serverChallenge*`); `loginWithCertificate(
  encryptedServerChallenge*)` under `AuthSessionHeader/authSessionId` answers `result/sessionId`. Byte
  arrays are Java byte[]: one signed `xsd:byte` element per byte.
- Faults carry a detail element in `urn:fault.ws.rsys.com` (e.g. `UnexpectedErrorFault`,
  `AccountFault`) with `exceptionCode` and `exceptionMessage`; an invalid or expired session is
  `exceptionCode` `INVALID_SESSION_ID`.
- The WSDL's `soap:address location` names the service URL; the gateway rewrites it to its own.
- The vendor's WSDL does not inline its types: it imports `ResponsysWSTypes_Schema.xsd` and
  `ResponsysWSFaults_Schema.xsd` by relative `schemaLocation`
  (`../services/ResponsysWSService/_resources_/xsd/...`), which a client resolves against the URL it
  loaded the WSDL from; `document_references` names such references, `rewrite_document` points the
  absolute ones at the gateway.

XML from outside is parsed by `gateway.protocols.xml.parse_untrusted`: no DTDs, no entity expansion, no network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from lxml import etree

from gateway.errors import BadEnvelope, LoginRefused, login_failure
from gateway.protocols import rsa_challenge
from gateway.protocols.xml import XmlRefused, parse_untrusted
from policies.outcome import Failure, Outcome

WS_NS = "urn:ws.rsys.com"
FAULT_NS = "urn:fault.ws.rsys.com"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"
WSDL_SOAP12 = "http://schemas.xmlsoap.org/wsdl/soap12/"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
XSD_NS = "http://www.w3.org/2001/XMLSchema"
# The attributes by which a WSDL or schema names another document.
_REFERENCES = ((f"{{{XSD_NS}}}import", "schemaLocation"), (f"{{{XSD_NS}}}include", "schemaLocation"),
               (f"{{{XSD_NS}}}redefine", "schemaLocation"), (f"{{{WSDL_NS}}}import", "location"))

SERVICE_PATH = "/webservices/services/ResponsysWSService"
WSDL_PATH = "/webservices/wsdl/ResponsysWS_Level1.wsdl"

SESSION_ERRORS = frozenset({"INVALID_SESSION_ID"})
# REQUEST_LIMIT_EXCEEDED: the vendor fault list's code for too many live sessions or requests.
THROTTLE_ERRORS = frozenset({"API_LIMIT_EXCEEDED", "REQUEST_LIMIT_EXCEEDED"})
UNRECOVERABLE_ERRORS = frozenset({"UNRECOVERABLE_EXCEPTION", "UNEXPECTED_EXCEPTION"})
# AFTM ("SOAP-based code changes required by AFTM"): a failover account processes login,
# loginWithCertificate, authenticateServer, logout, retrieveListMembers and the HA twins of the two
# merge-and-trigger operations; anything else faults API_NOT_ALLOWED_IN_SECONDARY, passed to the app.
# A twin takes the same parts as its original (the WSDL's types) and answers `<twin>Response`.
HA_OPERATIONS = {"mergeTriggerEmail": "HaMergeTriggerEmail", "mergeTriggerSMS": "HaMergeTriggerSms"}
# Operations that send a message: they may be queued when no account can take them now.
SEND_OPERATIONS = frozenset({"mergeTriggerEmail", "HaMergeTriggerEmail", "triggerCustomEvent",
                             "mergeTriggerSMS", "HaMergeTriggerSms"})

_MAX_FAULT_BODY = 262_144




def charset_of(content_type: str | None) -> str | None:
    """The `charset` parameter of a Content-Type, if it names one (`text/xml; charset="ISO-8859-1"`)."""
    for parameter in (content_type or "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip(' \t"'):
            return value.strip(' \t"')
    return None


def parse_xml(body: bytes, *, charset: str | None = None) -> etree._Element:
    """`xml.parse_untrusted`, its refusal (malformed, unknown charset, a DOCTYPE) as BadEnvelope."""
    try:
        return parse_untrusted(body, charset=charset)
    except XmlRefused as exc:
        raise BadEnvelope(str(exc)) from None


@dataclass(frozen=True, slots=True)
class Envelope:
    root: etree._Element
    operation: str  # local name of the first Body child, e.g. "mergeTriggerEmail"

    @property
    def session_id(self) -> str | None:
        node = self.root.find(f"{{{SOAP_ENV}}}Header/{{{WS_NS}}}SessionHeader/{{{WS_NS}}}sessionId")
        return None if node is None or node.text is None else node.text.strip()

    def login_credentials(self) -> tuple[str, str]:
        body = self._operation_element()
        user = body.findtext(f"{{{WS_NS}}}username")
        password = body.findtext(f"{{{WS_NS}}}password")
        if not user or password is None:
            raise BadEnvelope("login needs username and password")
        return user, password

    def authenticate_server_parts(self) -> tuple[str, bytes]:
        """`authenticateServer`'s username and clientChallenge bytes; BadEnvelope when either is missing."""
        body = self._operation_element()
        user = (body.findtext(f"{{{WS_NS}}}username") or "").strip()
        challenge = byte_array(body, "clientChallenge")
        if not user or challenge is None:
            raise BadEnvelope("authenticateServer needs username and clientChallenge (xsd:byte values)")
        return user, challenge

    def login_with_certificate_parts(self) -> tuple[str | None, bytes]:
        """`loginWithCertificate`'s AuthSessionHeader/authSessionId and encryptedServerChallenge bytes."""
        answer = byte_array(self._operation_element(), "encryptedServerChallenge")
        if answer is None:
            raise BadEnvelope("loginWithCertificate needs encryptedServerChallenge (xsd:byte values)")
        node = self.root.find(f"{{{SOAP_ENV}}}Header/{{{WS_NS}}}AuthSessionHeader/{{{WS_NS}}}authSessionId")
        return (None if node is None or not node.text else node.text.strip()), answer

    def with_session(self, session_id: str, *, operation: str | None = None) -> bytes:
        """This envelope with the given session in SessionHeader (added when missing).

        `operation` renames the Body's operation element (same children), e.g. to its HA twin.
        """
        root = _copy(self.root)
        if operation is not None:
            body = root.find(f"{{{SOAP_ENV}}}Body")
            assert body is not None  # checked by parse_envelope
            body[0].tag = f"{{{WS_NS}}}{operation}"
        header = root.find(f"{{{SOAP_ENV}}}Header")
        if header is None:
            header = etree.Element(f"{{{SOAP_ENV}}}Header")
            root.insert(0, header)
        session_header = header.find(f"{{{WS_NS}}}SessionHeader")
        if session_header is None:
            session_header = etree.SubElement(header, f"{{{WS_NS}}}SessionHeader")
        node = session_header.find(f"{{{WS_NS}}}sessionId")
        if node is None:
            node = etree.SubElement(session_header, f"{{{WS_NS}}}sessionId")
        node.text = session_id
        return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))

    def _operation_element(self) -> etree._Element:
        body = self.root.find(f"{{{SOAP_ENV}}}Body")
        assert body is not None  # checked by parse_envelope
        return body[0]


def _copy(root: etree._Element) -> etree._Element:
    return parse_untrusted(etree.tostring(root))


def parse_envelope(body: bytes, *, charset: str | None = None) -> Envelope:
    """The envelope of a request whose Content-Type names `charset` (None: as the XML declares)."""
    root = parse_xml(body, charset=charset)
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise BadEnvelope("expected a SOAP 1.1 Envelope")
    soap_body = root.find(f"{{{SOAP_ENV}}}Body")
    if soap_body is None or len(soap_body) == 0:
        raise BadEnvelope("the SOAP Body names no operation")
    first = soap_body[0]
    if not isinstance(first.tag, str):
        raise BadEnvelope("the SOAP Body names no operation")
    qname = etree.QName(first)
    if qname.namespace != WS_NS:
        raise BadEnvelope(f"unknown operation namespace {qname.namespace!r}; expected {WS_NS}")
    return Envelope(root=root, operation=qname.localname)


def session_id_of(body: bytes, *, charset: str | None = None) -> str | None:
    """The SessionHeader's sessionId of a request that is no usable envelope, when its XML reads at all:
    who sent a structurally wrong call, so its failure entry can be the caller's."""
    try:
        root = parse_xml(body, charset=charset)
    except BadEnvelope:
        return None
    return Envelope(root=root, operation="").session_id


def _envelope(body_xml: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}"><soapenv:Body>{body_xml}</soapenv:Body>'
        "</soapenv:Envelope>"
    ).encode()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def login_request(user_name: str, password: str) -> bytes:
    return _envelope(
        f'<urn:login xmlns:urn="{WS_NS}"><urn:username>{_escape(user_name)}</urn:username>'
        f"<urn:password>{_escape(password)}</urn:password></urn:login>"
    )


def authenticate_server_request(user_name: str, client_challenge: bytes) -> bytes:
    """Certificate login, step 1: `authenticateServer(username, clientChallenge*)`."""
    return _envelope(
        f'<urn:authenticateServer xmlns:urn="{WS_NS}"><urn:username>{_escape(user_name)}</urn:username>'
        f"{_byte_elements('urn:clientChallenge', client_challenge)}</urn:authenticateServer>"
    )


def login_with_certificate_request(auth_session_id: str, encrypted_server_challenge: bytes) -> bytes:
    """Certificate login, step 2: `loginWithCertificate(encryptedServerChallenge*)` under AuthSessionHeader."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:urn="{WS_NS}"><soapenv:Header>'
        f"<urn:AuthSessionHeader><urn:authSessionId>{_escape(auth_session_id)}</urn:authSessionId>"
        "</urn:AuthSessionHeader></soapenv:Header><soapenv:Body><urn:loginWithCertificate>"
        f"{_byte_elements('urn:encryptedServerChallenge', encrypted_server_challenge)}"
        "</urn:loginWithCertificate></soapenv:Body></soapenv:Envelope>"
    ).encode()


def parse_authenticate_server(status: int, body: bytes, *,
                              retry_after: float | None = None) -> rsa_challenge.ServerAnswer:
    """`authenticateServerResponse/result` (ServerAuthResult); LoginRefused (LoginThrottled) otherwise."""
    if status != 200:
        code = fault_code(body)
        raise login_failure("SOAP certificate login", status=status, code=code,
                            throttled=code in THROTTLE_ERRORS, retry_after=retry_after)
    try:
        root = parse_xml(body)
    except BadEnvelope as exc:
        raise LoginRefused(f"SOAP authenticateServer answer unreadable: {exc}") from None
    result = root.find(f".//{{{WS_NS}}}authenticateServerResponse/{{{WS_NS}}}result")
    handle = result.findtext(f"{{{WS_NS}}}authSessionId") if result is not None else None
    server_challenge = byte_array(result, "serverChallenge") if result is not None else None
    encrypted = byte_array(result, "encryptedClientChallenge") if result is not None else None
    if not handle or not server_challenge or not encrypted:
        raise LoginRefused("SOAP authenticateServer answer is not a ServerAuthResult")
    return rsa_challenge.ServerAnswer(handle=handle.strip(), server_challenge=server_challenge,
                                      encrypted_client_challenge=encrypted)


def parse_login_with_certificate(status: int, body: bytes, *, retry_after: float | None = None) -> str:
    """The session id of a `loginWithCertificateResponse`; LoginRefused (LoginThrottled) otherwise."""
    return parse_login(status, body, retry_after=retry_after, response="loginWithCertificateResponse")


def byte_array(parent: etree._Element, local: str) -> bytes | None:
    """A Java byte[] as the vendor's schema sends it: one signed `xsd:byte` element per byte; None if malformed."""
    values = bytearray()
    for node in parent.findall(f"{{{WS_NS}}}{local}"):
        try:
            value = int((node.text or "").strip())
        except ValueError:
            return None
        if not -128 <= value <= 127:
            return None
        values.append(value & 0xFF)
    return bytes(values) or None


def _byte_elements(tag: str, data: bytes) -> str:
    return "".join(f"<{tag}>{value - 256 if value > 127 else value}</{tag}>" for value in data)


def authenticate_server_response(answer: rsa_challenge.ServerAnswer) -> bytes:
    return _envelope(
        f'<authenticateServerResponse xmlns="{WS_NS}"><result>'
        f"<authSessionId>{_escape(answer.handle)}</authSessionId>"
        f"{_byte_elements('encryptedClientChallenge', answer.encrypted_client_challenge)}"
        f"{_byte_elements('serverChallenge', answer.server_challenge)}</result></authenticateServerResponse>"
    )


def login_with_certificate_response(session_id: str) -> bytes:
    return _envelope(
        f'<loginWithCertificateResponse xmlns="{WS_NS}"><result><sessionId>{_escape(session_id)}</sessionId>'
        "</result></loginWithCertificateResponse>"
    )


def login_response(session_id: str) -> bytes:
    return _envelope(
        f'<loginResponse xmlns="{WS_NS}"><result><sessionId>{_escape(session_id)}</sessionId></result>'
        "</loginResponse>"
    )


def logout_response(*, success: bool = True) -> bytes:
    result = str(success).lower()
    return _envelope(f'<logoutResponse xmlns="{WS_NS}"><result>{result}</result></logoutResponse>')


def fault(
    *, code: str, message: str, fault_type: str = "UnexpectedErrorFault", client: bool = False
) -> bytes:
    """A vendor-shaped SOAP fault: `soapenv:Client` for the caller's mistakes, `Server` otherwise."""
    faultcode = "soapenv:Client" if client else "soapenv:Server"
    return _envelope(
        f"<soapenv:Fault><faultcode>{faultcode}</faultcode><faultstring>{_escape(message)}</faultstring>"
        f'<detail><ns1:{fault_type} xmlns:ns1="{FAULT_NS}"><ns1:exceptionCode>{_escape(code)}'
        f"</ns1:exceptionCode><ns1:exceptionMessage>{_escape(message)}</ns1:exceptionMessage>"
        f"</ns1:{fault_type}></detail></soapenv:Fault>"
    )


def parse_login(status: int, body: bytes, *, retry_after: float | None = None,
                response: str = "loginResponse") -> str:
    """The session id of an upstream login answer; raise LoginRefused (LoginThrottled) with a reason."""
    if status != 200:
        code = fault_code(body)
        raise login_failure("SOAP login", status=status, code=code, throttled=code in THROTTLE_ERRORS,
                            retry_after=retry_after)
    try:
        root = parse_xml(body)
    except BadEnvelope as exc:
        raise LoginRefused(f"SOAP login answer unreadable: {exc}") from None
    node = root.find(f".//{{{WS_NS}}}{response}/{{{WS_NS}}}result/{{{WS_NS}}}sessionId")
    if node is None or not node.text:
        raise LoginRefused("SOAP login answer has no sessionId")
    return node.text.strip()


def fault_code(body: bytes) -> str | None:
    """The vendor exceptionCode of a SOAP fault body, if it is one."""
    if not body or len(body) > _MAX_FAULT_BODY:
        return None
    try:
        root = parse_xml(body)
    except BadEnvelope:
        return None
    node = root.find(f".//{{{SOAP_ENV}}}Fault/detail//{{{FAULT_NS}}}exceptionCode")
    if node is None:
        node = root.find(f".//{{{SOAP_ENV}}}Fault//{{{FAULT_NS}}}exceptionCode")
    return None if node is None or not node.text else node.text.strip()


def classify(status: int, body: bytes, *, retry_after: float | None) -> Outcome:
    """Turn an upstream SOAP answer into an Outcome. Only fault bodies are parsed."""
    if status < 400:
        return Outcome.ok()
    if status in (502, 503, 504):
        return Outcome.account_failure(Failure.UNAVAILABLE, detail=f"HTTP {status}")
    if status == 429:
        return Outcome.throttled(retry_after, detail="HTTP 429")
    code = fault_code(body)
    if code in SESSION_ERRORS:
        return Outcome.session_invalid(code or "")
    if code in THROTTLE_ERRORS:
        return Outcome.throttled(retry_after, detail=code or "")
    if code in UNRECOVERABLE_ERRORS:
        return Outcome.account_failure(Failure.UNRECOVERABLE, detail=code or "")
    if code is not None:
        # A vendor fault about the call itself (unknown campaign, bad recipient): the app's to see.
        return Outcome.client_error(code)
    if status >= 500:
        return Outcome.account_failure(Failure.SERVER_ERROR, detail=f"HTTP {status}")
    return Outcome.client_error(f"HTTP {status}")


def rename_response(body: bytes, *, upstream_operation: str, app_operation: str) -> bytes:
    """An HA twin's answer renamed to what the app asked for (`HaMergeTriggerEmailResponse` -> ...)."""
    try:
        root = parse_xml(body)
    except BadEnvelope:
        return body
    node = root.find(f"{{{SOAP_ENV}}}Body/{{{WS_NS}}}{upstream_operation}Response")
    if node is None:
        return body
    node.tag = f"{{{WS_NS}}}{app_operation}Response"
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def soap_action_for(value: str, *, app_operation: str, operation: str) -> str:
    """The SOAPAction header for a call the gateway renamed from `app_operation` to `operation`.

    The vendor's binding declares `soapAction=""` for every operation, so most clients send `""` and
    it stays so. A client that names the operation instead (`"mergeTriggerEmail"`,
    `"urn:ws.rsys.com/mergeTriggerEmail"`) gets the name replaced, quoting kept, so the header never
    names a call other than the one in the Body (a stack that dispatches on SOAPAction would run it).
    """
    # Read as leniently as a dispatching stack would: blanks around it, and quotes at either end even
    # when unbalanced (`"mergeTriggerSMS`, `'mergeTriggerSMS'`), so no spelling keeps the old name.
    text = value.strip(" \t")
    quoted = text.startswith(('"', "'")) or text.endswith(('"', "'"))
    action = text.strip("\"'").strip(" \t")
    stem = action[: len(action) - len(app_operation)]
    if not action.endswith(app_operation) or (stem and stem[-1] not in "/:#"):
        return value
    renamed = stem + operation
    return f'"{renamed}"' if quoted else renamed


def rewrite_wsdl(wsdl: bytes, service_url: str) -> bytes:
    """The WSDL with every `soap:address location` pointing at `service_url` (the gateway)."""
    return rewrite_document(wsdl, service_url=service_url, relocate=lambda location: location)


def _reference_nodes(root: etree._Element) -> Iterator[tuple[etree._Element, str]]:
    for tag, attribute in _REFERENCES:
        for node in root.iter(tag):
            if node.get(attribute):
                yield node, attribute


def rewrite_document(document: bytes, *, service_url: str, relocate: Callable[[str], str]) -> bytes:
    """A WSDL or schema fit to serve from the gateway.

    Every `soap:address`/`soap12:address location` becomes `service_url`; every document reference
    (`xsd:import`/`include`/`redefine schemaLocation`, `wsdl:import location`) becomes
    `relocate(location)`, which points an absolute reference to the account at the gateway. Relative
    references stay as they are: served at the vendor's paths, they resolve to the gateway already.
    """
    root = parse_xml(document)
    for tag in (f"{{{WSDL_SOAP}}}address", f"{{{WSDL_SOAP12}}}address"):
        for address in root.iter(tag):
            address.set("location", service_url)
    for node, attribute in _reference_nodes(root):
        node.set(attribute, relocate(node.get(attribute, "")))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def document_references(document: bytes, base_url: str) -> list[str]:
    """The absolute URLs of the documents a WSDL or schema at `base_url` refers to (fragments dropped)."""
    root = parse_xml(document)
    return [urljoin(base_url, node.get(attribute, "")).partition("#")[0]
            for node, attribute in _reference_nodes(root)]


def same_origin(url: str, other: str) -> bool:
    """Whether two URLs name the same scheme, host and port (default ports spelled or not)."""
    a, b = urlsplit(url), urlsplit(other)
    defaults = {"http": 80, "https": 443}
    try:
        return (a.scheme.lower(), a.hostname, a.port or defaults.get(a.scheme.lower())) == (
            b.scheme.lower(), b.hostname, b.port or defaults.get(b.scheme.lower()))
    except ValueError:  # a port that is not a number
        return False
