"""The SMS routes: the apps' MT API (`/sms/v1/messages`) and the upstreams' receipts (`/sms/v1/receipts`).

Apps authenticate with HTTP Basic as a client from `clients`. Submissions are `mtMessage` XML
(`application/xml`, `text/xml`) or its JSON twin (`application/json`); answers and errors come back in
the same format, errors as the vendor's `mtMessageResponse` with `<status isError="true">` and a 4xx.
Status views are JSON unless the app asks for `Accept: application/xml`.
"""

from __future__ import annotations

import json
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.delivery.service import SmsService
from gateway.edge.clients import basic_credentials, source_of
from gateway.edge.surface import Surface
from gateway.errors import BadMessage, BodyRefused, InvalidMessage, ReceiptRefused, StoreError, TooManyFailedLogins
from gateway.protocols import sms
from gateway.protocols.inputs import loads_json
from gateway.reporting.codes import FailureKind

log = logging.getLogger("aftm.sms")

XML_TYPES = ("application/xml", "text/xml")
RECEIPT_LIMIT = 65_536  # bytes: an mtMessageResponse receipt is a few hundred


def _error(status_code: int, description: str, *, as_json: bool, submitter_message_id: str | None = None,
           headers: dict[str, str] | None = None) -> Response:
    body = sms.render_error(description, submitter_message_id=submitter_message_id, as_json=as_json)
    return Response(body, status_code=status_code, media_type=sms.JSON_TYPE if as_json else sms.XML_TYPE,
                    headers=headers)


def _wants_json_body(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == sms.JSON_TYPE


def _wants_xml_answer(request: Request) -> bool:
    accept = request.headers.get("accept", "").lower()
    return any(kind in accept for kind in XML_TYPES)


class SmsApi:
    """The SMS routes, given the SMS service (None when `sms.upstreams` is empty: every call is then 404)."""

    def __init__(self, *, surface: Surface, service: SmsService | None) -> None:
        self._surface = surface
        self._sms = service

    def routes(self) -> list[Route]:
        return [
            Route("/sms/v1/messages", self.submit, methods=["POST"]),
            Route("/sms/v1/messages", self.find, methods=["GET"]),
            Route("/sms/v1/messages/{message_id:str}", self.status, methods=["GET"]),
            Route("/sms/v1/receipts/{message_id:str}/{token:str}", self.receipt, methods=["POST"]),
        ]

    def _service(self, *, as_json: bool) -> SmsService | Response:
        if self._sms is None:
            return _error(404, "SMS is not configured on this gateway (sms.upstreams is empty)", as_json=as_json)
        return self._sms

    async def _client(self, request: Request, *, as_json: bool) -> str | Response:
        """The app's client name from HTTP Basic, or the 401 (429 while throttled) answer.

        Every SMS call carries HTTP Basic, so `Credentials.login` remembers successes (keyed hash),
        verifies off the event loop and throttles a failing source.
        """
        given = basic_credentials(request.headers.get("authorization"))
        user = given[0] if given is not None else None
        try:
            ok = given is not None and await self._surface.credentials.login(*given, source=source_of(request))
        except TooManyFailedLogins as exc:
            return _error(429, "too many failed logins: retry later", as_json=as_json,
                          headers={"Retry-After": exc.retry_after_header})
        if not ok or user is None:
            self._surface.metrics.credential_failures.labels("sms").inc()  # never a client's failure entry
            return _error(401, "authentication failed: send HTTP Basic credentials of a configured client",
                          as_json=as_json, headers={"WWW-Authenticate": 'Basic realm="aftm-gateway sms"'})
        return user

    async def _caller(self, request: Request, *, as_json: bool) -> tuple[SmsService, str] | Response:
        """The SMS service and the authenticated app's client name, or the answer that refuses the call."""
        service = self._service(as_json=as_json)
        if isinstance(service, Response):
            return service
        client = await self._client(request, as_json=as_json)
        if isinstance(client, Response):
            return client
        return service, client

    async def submit(self, request: Request) -> Response:
        """`POST /sms/v1/messages`: 201 with the gateway's messageId once the message and its send are stored."""
        as_json = _wants_json_body(request)
        caller = await self._caller(request, as_json=as_json)
        if isinstance(caller, Response):
            return caller
        service, client = caller
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not as_json and content_type not in XML_TYPES:
            self._report_malformed(client, "unsupported content type: send application/xml, text/xml or json")
            return _error(415, "send the mtMessage as application/xml, text/xml or application/json", as_json=False)
        try:
            body = await self._surface.read_body(request)
        except BodyRefused as exc:  # answered by the app's handler, in this shape (gateway.edge.refusals)
            self._report_malformed(client, exc.detail)
            raise
        try:
            message = sms.parse_mt_message_json(body) if as_json else sms.parse_mt_message_xml(body)
            record = await service.submit(client, message)
        except (BadMessage, InvalidMessage) as exc:
            submitter = _submitter(body, as_json)
            self._report_malformed(client, f"Request: {exc}", send_id=submitter or "")
            return _error(400, str(exc), as_json=as_json, submitter_message_id=submitter)
        except StoreError as exc:
            log.warning("store unavailable; SMS not accepted: %s", exc)
            return _error(503, "the gateway cannot store messages right now; retry later", as_json=as_json)
        answer = sms.render_accepted(record.id, record.submitter_id, as_json=as_json,
                                     transaction_id=record.transaction_id, warnings=service.warnings(message))
        return Response(answer, status_code=201,
                        media_type=sms.JSON_TYPE if as_json else sms.XML_TYPE,
                        headers={"Location": f"/sms/v1/messages/{record.id}"})

    def _report_malformed(self, client: str, error: str, *, send_id: str = "") -> None:
        self._surface.reports.report(FailureKind.MALFORMED_REQUEST, client=client, error=error, send_id=send_id,
                                     protocol="sms")

    async def status(self, request: Request) -> Response:
        """`GET /sms/v1/messages/{messageId}`: the message's status and history."""
        as_json = not _wants_xml_answer(request)
        caller = await self._caller(request, as_json=as_json)
        if isinstance(caller, Response):
            return caller
        service, client = caller
        view = await service.view(client, request.path_params["message_id"])
        if view is None:
            return _error(404, "no such message", as_json=as_json)
        if as_json:
            return Response(json.dumps(view), media_type=sms.JSON_TYPE)
        return Response(sms.render_status_xml([view], single=True), media_type=sms.XML_TYPE)

    async def find(self, request: Request) -> Response:
        """`GET /sms/v1/messages?submitterMessageId=X`: the original and its alternate."""
        as_json = not _wants_xml_answer(request)
        caller = await self._caller(request, as_json=as_json)
        if isinstance(caller, Response):
            return caller
        service, client = caller
        submitter = request.query_params.get("submitterMessageId")
        if not submitter:
            return _error(400, "give ?submitterMessageId=", as_json=as_json)
        views = await service.find(client, submitter)
        if as_json:
            return Response(json.dumps({"messages": views}), media_type=sms.JSON_TYPE)
        return Response(sms.render_status_xml(views, single=False), media_type=sms.XML_TYPE)

    async def receipt(self, request: Request) -> Response:
        """`POST /sms/v1/receipts/{messageId}/{token}`: a delivery receipt from an SMS upstream."""
        service = self._service(as_json=False)
        if isinstance(service, Response):
            return service
        body = await self._surface.read_body(request, limit=RECEIPT_LIMIT)
        message_id = request.path_params["message_id"]
        try:
            taken = await service.take_receipt(message_id, request.path_params["token"], body)
        except ReceiptRefused:
            # Same answer for an unknown message and a wrong token; the token itself is never logged.
            log.warning("SMS receipt refused: unknown receipt URL", extra={"message_id": message_id})
            return _error(404, "no such receipt URL", as_json=False)
        except BadMessage as exc:
            return _error(400, f"not a delivery receipt: {exc}", as_json=False)
        except StoreError as exc:
            log.warning("store unavailable; SMS receipt not taken: %s", exc)
            return _error(503, "the gateway cannot record receipts right now; retry later", as_json=False)
        log.debug("SMS receipt taken", extra={"message_id": message_id, "changed": taken.changed})
        return Response(status_code=200)


def _submitter(body: bytes, as_json: bool) -> str | None:
    """The submitterMessageId of a refused message, when it can be read, for the app's correlation."""
    try:
        if as_json:
            value = loads_json(body).get("submitterMessageId")
            return value if isinstance(value, str) and len(value) <= 256 else None
        return sms.parse_mt_message_xml(body).submitter_message_id
    except (ValueError, AttributeError, BadMessage):
        return None


