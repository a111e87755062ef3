"""The SOAP surface: `login`/`logout` answered by the gateway, every other operation forwarded.

The app's `SessionHeader` carries a gateway session id; upstream, the gateway puts in one of the
account's own pooled sessions (the dialect, `gateway.core.dialects.soap`). The WSDL, and every
document it references (the vendor's imports its two schemas by relative location, schemas may import
more), are served from a `DocumentCache` (filled by `gateway.core.dialects.soap.SoapDocuments`), never
fetched per GET.
"""

from __future__ import annotations

import contextlib
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.config import Account
from gateway.core import idempotency
from gateway.core.dialects.soap import XML
from gateway.core.loop import Call, Dialect, Result
from gateway.core.sends import Sends
from gateway.edge.clients import source_of
from gateway.edge.correlation import HEADER, forwarded_headers, request_ids
from gateway.edge.surface import Surface
from gateway.errors import (
    BadEnvelope,
    BadInput,
    BodyRefused,
    CertificateRefused,
    KeyInFlight,
    KeyReused,
    StoreError,
    StoreUnavailable,
    TooManyFailedLogins,
)
from gateway.protocols import responsys_soap as soap
from gateway.reporting.codes import FailureKind
from gateway.upstreams.documents import DocumentCache
from policies.outcome import Failure, Kind

log = logging.getLogger("aftm.soap")

# Not content-type: the gateway forwards an envelope it wrote itself, always UTF-8 (see upstream_request).
FORWARDED_HEADERS = ("soapaction", "idempotency-key", "x-request-id")


def fault_response(status: int, *, code: str, message: str, client: bool = False,
                   fault_type: str = "UnexpectedErrorFault", headers: dict[str, str] | None = None) -> Response:
    return Response(soap.fault(code=code, message=message, client=client, fault_type=fault_type),
                    status_code=status, media_type=XML, headers=headers)


CERTIFICATE_OPERATIONS = frozenset({"authenticateServer", "loginWithCertificate"})


class SoapApi:
    """The SOAP routes: the gateway's own logins, every other operation forwarded through `Sends`, the WSDL."""

    def __init__(self, *, surface: Surface, sends: Sends, dialect: Dialect[Account], documents: DocumentCache) -> None:
        self._surface = surface
        self._sends = sends
        self._dialect = dialect
        self._documents = documents

    def routes(self) -> list[Route]:
        return [
            Route(soap.SERVICE_PATH, self.service, methods=["POST"]),
            Route(soap.SERVICE_PATH, self.service_get, methods=["GET"]),
            Route(soap.WSDL_PATH, self.wsdl, methods=["GET"]),
            Route("/webservices/{document:path}", self.document, methods=["GET"]),
        ]

    async def service_get(self, request: Request) -> Response:
        """`GET .../ResponsysWSService?wsdl` is the WSDL; any other GET is not a SOAP call."""
        if "wsdl" in {k.lower() for k in request.query_params}:
            return await self.wsdl(request)
        return fault_response(405, code="INVALID_REQUEST", client=True,
                              message="SOAP calls are POSTed; GET ?wsdl for the WSDL")

    async def _certificate_login(self, request: Request, envelope: soap.Envelope) -> Response:
        """The vendor's certificate login, answered by the gateway (gateway.edge.app_certificates).

        Raises BadEnvelope for missing parts; every refusal is a vendor fault.
        """
        source = source_of(request)
        try:
            if envelope.operation == "authenticateServer":
                user, challenge = envelope.authenticate_server_parts()
                answer = await self._surface.certificates.authenticate_server(user, challenge, source=source)
                return Response(soap.authenticate_server_response(answer), media_type=XML)
            handle, encrypted = envelope.login_with_certificate_parts()
            client = await self._surface.certificates.login_with_certificate(handle, encrypted, source=source)
        except CertificateRefused as exc:
            self._surface.metrics.credential_failures.labels("soap").inc()
            if exc.code == "INVALID_PARAMETER":
                return fault_response(400, code=exc.code, message=exc.message, client=True)
            return fault_response(500, code=exc.code, message=exc.message, fault_type="AccountFault")
        except TooManyFailedLogins as exc:
            return fault_response(500, code="API_LIMIT_EXCEEDED", message="Too many failed logins; retry later",
                                  headers={"Retry-After": exc.retry_after_header})
        except StoreError:
            return fault_response(500, code="UNEXPECTED_EXCEPTION",
                                  message="The gateway cannot check logins right now; retry later")
        return Response(soap.login_with_certificate_response(self._surface.credentials.issue(client, "soap")),
                        media_type=XML)

    async def service(self, request: Request) -> Response:
        """`POST /webservices/services/ResponsysWSService`."""
        try:
            body = await self._surface.read_body(request)
        except BodyRefused:  # answered by the app's handler, in this shape (gateway.edge.refusals)
            # The session is in the body not read: the caller is unknown, as for a refused login.
            self._surface.metrics.unattributed_failures.labels("soap").inc()
            raise
        try:
            envelope = soap.parse_envelope(body, charset=soap.charset_of(request.headers.get("content-type")))
            if envelope.operation == "login":
                user, password = envelope.login_credentials()
            if envelope.operation in CERTIFICATE_OPERATIONS:
                return await self._certificate_login(request, envelope)
        except BadEnvelope as exc:
            # SOAP 1.1 sends faults with 500, but a request the gateway cannot read is the caller's
            # mistake: 400 with a Client fault, as SOAP 1.2 and most stacks do for sender faults.
            await self._report_bad_envelope(request, body, str(exc))
            return fault_response(400, code="INVALID_REQUEST", message=str(exc), client=True)
        if envelope.operation == "login":
            try:
                ok = await self._surface.credentials.login(user, password, source=source_of(request))
            except TooManyFailedLogins as exc:
                return fault_response(500, code="API_LIMIT_EXCEEDED", message="Too many failed logins; retry later",
                                      headers={"Retry-After": exc.retry_after_header})
            if not ok:
                self._surface.metrics.credential_failures.labels("soap").inc()  # never a client's failure entry
                # The vendor's AccountFault; one code for unknown user and wrong password (no user enumeration).
                return fault_response(500, code="INVALID_PASSWORD", fault_type="AccountFault",
                                      message="Invalid user name or password")
            return Response(soap.login_response(self._surface.credentials.issue(user, "soap")), media_type=XML)
        session_id = envelope.session_id
        try:
            identity = await self._surface.credentials.verify(session_id, "soap")
            if identity is not None and session_id is not None and envelope.operation == "logout":
                await self._surface.credentials.revoke(session_id)  # shared with every replica before the answer
                return Response(soap.logout_response(), media_type=XML)
        except StoreError:
            # Fail closed: whether the session was logged out cannot be checked (or recorded) now. Not
            # INVALID_SESSION_ID, which would send the app into a login loop; the app retries the call.
            return fault_response(500, code="UNEXPECTED_EXCEPTION",
                                  message="The gateway cannot check sessions right now; retry later")
        if identity is None or session_id is None:
            return fault_response(500, code="INVALID_SESSION_ID", message="Invalid or expired session id")
        ids = request_ids(request.headers.get(HEADER))
        try:
            headers = forwarded_headers(request.headers.items(), FORWARDED_HEADERS, ids.correlation_id)
            key = idempotency.key_of(request.headers.getlist(idempotency.HEADER))
        except BadInput as exc:
            return fault_response(400, code="INVALID_REQUEST", message=str(exc), client=True,
                                  headers={"X-Request-Id": ids.correlation_id})
        call = Call(protocol="soap", method="POST", path=soap.SERVICE_PATH, headers=headers,
                    body=envelope.with_session(""),  # the app's session id is a credential: never kept
                    request_id=ids.request_id, correlation_id=ids.correlation_id, client=identity.client,
                    is_send=envelope.operation in soap.SEND_OPERATIONS, idempotency_key=key)
        try:
            result = await self._sends.handle(call, self._dialect)
        except KeyReused as exc:
            return fault_response(400, code="IDEMPOTENCY_KEY_REUSED", message=str(exc), client=True,
                                  headers={"X-Request-Id": ids.correlation_id})
        except KeyInFlight:
            return fault_response(500, code="API_LIMIT_EXCEEDED", headers={"X-Request-Id": ids.correlation_id},
                                  message="A request with this Idempotency-Key is still in flight; retry shortly")
        except StoreUnavailable:
            return fault_response(500, code="UNEXPECTED_EXCEPTION", headers={"X-Request-Id": ids.correlation_id},
                                  message="The gateway cannot accept calls right now; retry later")
        return render(result, correlation_id=ids.correlation_id)

    async def _report_bad_envelope(self, request: Request, body: bytes, detail: str) -> None:
        """A structurally wrong call is the caller's Request failure (code 1), as for REST and SMS, when its
        SessionHeader names a live session; otherwise nobody can be told, and it is only counted."""
        session_id = soap.session_id_of(body, charset=soap.charset_of(request.headers.get("content-type")))
        identity = None
        if session_id:
            with contextlib.suppress(StoreError):  # unknown then: counted, not attributed
                identity = await self._surface.credentials.verify(session_id, "soap")
        if identity is None:
            self._surface.metrics.unattributed_failures.labels("soap").inc()
            return
        ids = request_ids(request.headers.get(HEADER))
        self._surface.reports.report(FailureKind.MALFORMED_REQUEST, client=identity.client,
                                     error=f"Request: {detail}", send_id=ids.request_id,
                                     correlation_id=ids.correlation_id, path=soap.SERVICE_PATH, protocol="soap")

    async def wsdl(self, request: Request) -> Response:
        """The account's WSDL with every `soap:address location` rewritten to the gateway, from the cache."""
        document = await self._documents.get(soap.WSDL_PATH)
        if document is None:
            return fault_response(503, code="SERVICE_UNAVAILABLE", message="No account could serve the WSDL")
        return Response(document, media_type=XML)

    async def document(self, request: Request) -> Response:
        """`GET /webservices/...`: a document the WSDL references (a schema, an import of one), from the cache.

        Only paths the cache learned from the documents themselves are served: any other path, a traversal
        attempt included, is 404 without reaching an account.
        """
        path = request.url.path
        if not self._documents.serves(path):
            return fault_response(404, code="INVALID_REQUEST", client=True, message="No such service document")
        body = await self._documents.get(path)
        if body is None:
            return fault_response(503, code="SERVICE_UNAVAILABLE", message="No account could serve the document")
        return Response(body, media_type=XML)


def render(result: Result, *, correlation_id: str) -> Response:
    """`X-Request-Id` echoes the app's correlation id; a queued send's identity is `X-AFTM-Request-Id`."""
    headers = {"X-Request-Id": correlation_id}
    if result.status == "queued":
        # A SOAP client has no shape for "accepted for later": 202 with no body is SOAP 1.1's one-way
        # answer; the headers say what happened, and which gateway requestId `outbox retry` takes.
        return Response(b"", status_code=202, headers={**headers, "X-AFTM-Status": "queued",
                                                        "X-AFTM-Request-Id": result.request_id})
    if result.response is not None:
        return Response(result.response.content, status_code=result.response.status_code,
                        media_type=result.response.headers.get("content-type", XML), headers=headers)
    outcome = result.outcome
    if outcome is not None and outcome.kind is Kind.THROTTLED:
        return fault_response(500, code="API_LIMIT_EXCEEDED", message="Every account is throttling; retry later",
                              headers=headers)
    if outcome is not None and outcome.failure is Failure.READ_TIMEOUT:
        return fault_response(500, code="UNEXPECTED_EXCEPTION", headers=headers,
                              message="The account did not answer in time; the call may have been processed")
    return fault_response(500, code="UNEXPECTED_EXCEPTION", headers=headers,
                          message="No Responsys account could take the call; retry later")


