"""The REST surface: the gateway answers logins itself and forwards every other call.

An app logs in to the gateway (`POST /rest/api/v{version}/auth/token`) and gets a gateway token whose
`endPoint` is the gateway's public URL, so real clients keep sending every later call here. Those calls
go to the active account with that account's own upstream token.
"""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.config import Account
from gateway.core import idempotency
from gateway.core.loop import Call, Dialect, Result
from gateway.core.sends import Sends
from gateway.edge.bodies import FORM_LIMIT
from gateway.edge.clients import source_of
from gateway.edge.correlation import HEADER, forwarded_headers, request_ids
from gateway.edge.surface import Surface
from gateway.errors import (
    BadInput,
    BodyRefused,
    CertificateRefused,
    KeyInFlight,
    KeyReused,
    StoreError,
    StoreUnavailable,
    TooManyFailedLogins,
    UnsafeTarget,
)
from gateway.protocols import inputs, rsa_challenge, targets
from gateway.protocols import responsys_rest as rest
from gateway.reporting.codes import FailureKind
from policies.outcome import Failure, Kind, Outcome

JSON = "application/json"
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
FORWARDED_HEADERS = ("content-type", "accept", "idempotency-key", "x-request-id")


def error(status: int, title: str, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return Response(rest.error_body(title=title, error_code=code, detail=detail), status_code=status,
                    media_type=JSON, headers=headers)


def not_found(path: str) -> Response:
    """The vendor's answer to a path it has no API at (its paths are case-sensitive)."""
    return error(404, "Not found", "RESOURCE_NOT_FOUND", f"No API at {path}")


class RestApi:
    """The REST routes: the gateway's own login, and every other call forwarded through `Sends`."""

    def __init__(self, *, surface: Surface, sends: Sends, dialect: Dialect[Account]) -> None:
        self._surface = surface
        self._sends = sends
        self._dialect = dialect

    def routes(self) -> list[Route]:
        return [
            Route("/rest/api/{version:str}/auth/token", self.login, methods=["POST"]),
            Route("/rest/{family:str}/{rest:path}", self.forward, methods=ALL_METHODS),
            Route("/rest/{family:str}", self.no_api, methods=[*ALL_METHODS, "OPTIONS"]),
        ]

    async def no_api(self, request: Request) -> Response:
        """`/rest/api` without its slash: the vendor's 404, where Starlette redirected to `http://<Host>/rest/api/`."""
        return not_found(request.url.path)

    async def login(self, request: Request) -> Response:
        """`auth_type=password` checks the app against `clients`; `auth_type=token` refreshes a gateway token;
        `auth_type=server` then `auth_type=client` is the vendor's certificate login (clients[].certificate)."""
        if rest.AUTH_PATH.match(request.scope["path"]) is None:  # `/rest/api/V1.3/auth/token`: no vendor path
            return not_found(request.scope["path"])
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return error(400, "Bad request", "INVALID_REQUEST",
                         "Send the login as application/x-www-form-urlencoded form fields")
        body = await self._surface.read_body(request, limit=FORM_LIMIT)
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            return error(400, "Bad request", "INVALID_REQUEST", "The login form is not UTF-8")
        auth_type = form.get("auth_type")
        if auth_type == "password":
            user, password = form.get("user_name", ""), form.get("password", "")
            try:
                ok = await self._surface.credentials.login(user, password, source=source_of(request))
            except TooManyFailedLogins as exc:
                return error(429, "Too many requests", "API_LIMIT_EXCEEDED", "Too many failed logins; retry later",
                             {"Retry-After": exc.retry_after_header})
            if not ok:
                self._surface.metrics.credential_failures.labels("rest").inc()  # never a client's failure entry
                return error(401, "Authentication failed", "AUTHENTICATION_FAILED", "Invalid user name or password")
            client = user
        elif auth_type == "token":
            identity = await self._surface.credentials.verify(request.headers.get("authorization"), "rest")
            if identity is None:
                return error(401, "Unauthorized", "INVALID_TOKEN", "The token is invalid or has expired")
            client = identity.client
        elif auth_type in ("server", "client"):
            try:
                if auth_type == "server":
                    return await self._authenticate_server(request, form)
                client = await self._login_with_certificate(request, form)
            except CertificateRefused as exc:
                self._surface.metrics.credential_failures.labels("rest").inc()
                status, title = ((400, "Bad request") if exc.code == "INVALID_PARAMETER"
                                 else (401, "Authentication failed"))
                return error(status, title, exc.code, exc.message)
            except TooManyFailedLogins as exc:
                return error(429, "Too many requests", "API_LIMIT_EXCEEDED", "Too many failed logins; retry later",
                             {"Retry-After": exc.retry_after_header})
            except StoreError:
                return error(503, "Service unavailable", "SERVICE_UNAVAILABLE",
                             "The gateway cannot check logins right now; retry later")
        else:
            return error(400, "Bad request", "INVALID_PARAMETER", "auth_type must be password, token, server or client")
        answer = {"authToken": self._surface.credentials.issue(client, "rest"), "issuedAt": int(time.time() * 1000),
                  "endPoint": self._surface.public_url.rstrip("/")}
        return Response(json.dumps(answer), media_type=JSON)

    async def _authenticate_server(self, request: Request, form: dict[str, str]) -> Response:
        """Certificate login, step 1 (gateway.edge.app_certificates): `{authToken, serverChallenge,
        clientChallenge}`."""
        user, challenge = form.get("user_name", ""), _base64_field(form, "client_challenge")
        if not user or challenge is None:
            raise CertificateRefused("INVALID_PARAMETER", "user_name and client_challenge (base64) are required")
        answer = await self._surface.certificates.authenticate_server(user, challenge, source=source_of(request))
        body = {"authToken": answer.handle, "serverChallenge": rsa_challenge.encode(answer.server_challenge),
                "clientChallenge": rsa_challenge.encode(answer.encrypted_client_challenge)}
        return Response(json.dumps(body), media_type=JSON)

    async def _login_with_certificate(self, request: Request, form: dict[str, str]) -> str:
        """Certificate login, step 2: the client logged in (the temporary token in `Authorization`)."""
        user, answer = form.get("user_name", ""), _base64_field(form, "server_challenge")
        if not user or answer is None:
            raise CertificateRefused("INVALID_PARAMETER", "user_name and server_challenge (base64) are required")
        return await self._surface.certificates.login_with_certificate(
            request.headers.get("authorization"), answer, source=source_of(request), user_name=user)

    async def forward(self, request: Request) -> Response:
        """Any other `/rest/...` call: authenticate the app, then forward to the active account."""
        try:  # the raw target, never the decoded path: what is checked here is what goes upstream
            target = targets.target_of(request.scope)  # checked once, by the target guard before routing
        except UnsafeTarget as exc:
            return error(400, "Bad request", "INVALID_REQUEST", f"Refused request target: {exc}")
        path = target.partition("?")[0]
        if rest.API_PATH.match(path) is None or rest.in_another_spelling(target):
            return not_found(path)
        identity = await self._surface.credentials.verify(request.headers.get("authorization"), "rest")
        if identity is None:
            return error(401, "Unauthorized", "INVALID_TOKEN", "The token is invalid or has expired")
        ids = request_ids(request.headers.get(HEADER))
        try:
            body = await self._surface.read_body(request)
        except BodyRefused as exc:  # answered by the app's handler, in this shape (gateway.edge.refusals)
            self._surface.reports.report(FailureKind.MALFORMED_REQUEST, client=identity.client, error=exc.detail,
                                         send_id=ids.request_id, correlation_id=ids.correlation_id, path=path)
            raise
        if body and "json" in request.headers.get("content-type", "") and not _is_json(body):
            self._surface.reports.report(FailureKind.MALFORMED_REQUEST, client=identity.client, send_id=ids.request_id,
                                         path=path, correlation_id=ids.correlation_id,
                                         error="The request body is not valid JSON")
            return error(400, "Bad request", "INVALID_REQUEST_CONTENT", "The request body is not valid JSON")
        is_send = rest.is_send(request.method, path)
        try:
            headers = forwarded_headers(request.headers.items(), FORWARDED_HEADERS, ids.correlation_id)
            key = idempotency.key_of(request.headers.getlist(idempotency.HEADER))
        except BadInput as exc:
            return error(400, "Bad request", "INVALID_REQUEST", str(exc), {HEADER: ids.correlation_id})
        call = Call(protocol="rest", method=request.method, path=target, headers=headers, body=body,
                    request_id=ids.request_id, correlation_id=ids.correlation_id, client=identity.client,
                    is_send=is_send, idempotency_key=key)
        try:
            result = await self._sends.handle(call, self._dialect)
        except KeyReused as exc:
            return error(422, "Unprocessable entity", "IDEMPOTENCY_KEY_REUSED", str(exc), {HEADER: ids.correlation_id})
        except KeyInFlight as exc:
            return error(429, "Too many requests", "API_LIMIT_EXCEEDED",
                         "A request with this Idempotency-Key is still in flight; retry shortly",
                         {HEADER: ids.correlation_id, "Retry-After": str(max(1, round(exc.retry_after)))})
        except StoreUnavailable:
            return error(503, "Service unavailable", "SERVICE_UNAVAILABLE",
                         "The gateway cannot accept calls right now; retry later", {HEADER: ids.correlation_id})
        return render(result, correlation_id=ids.correlation_id)


def _base64_field(form: dict[str, str], name: str) -> bytes | None:
    """A form field's base64, or None. A space in it was a `+` the app sent without form-encoding it
    (`curl -d`): never base64 otherwise, and dropped as whitespace it made other bytes of the rest."""
    encoded = form.get(name, "")
    return rsa_challenge.decode(encoded.replace(" ", "+")) if encoded else None


def render(result: Result, *, correlation_id: str) -> Response:
    """The app's answer: the account's own response, 202 queued, or a vendor-shaped error.

    `X-Request-Id` echoes the app's correlation id; a queued send's identity (what `outbox retry`
    takes) is the gateway's `requestId` in the body.
    """
    headers = {"X-Request-Id": correlation_id}
    if result.status == "queued":
        body = json.dumps({"status": "queued", "requestId": result.request_id})
        return Response(body, status_code=202, media_type=JSON, headers=headers)
    if result.response is not None:
        content_type = result.response.headers.get("content-type", JSON)
        return Response(result.response.content, status_code=result.response.status_code,
                        media_type=content_type, headers=headers)
    return failure_response(result.outcome, headers)


def failure_response(outcome: Outcome | None, headers: dict[str, str]) -> Response:
    if outcome is not None and outcome.kind is Kind.THROTTLED:
        if outcome.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(outcome.retry_after)))
        return error(429, "Too many requests", "API_LIMIT_EXCEEDED",
                     "Every account is throttling; retry later", headers)
    if outcome is not None and outcome.failure is Failure.READ_TIMEOUT:
        return error(504, "Gateway timeout", "UPSTREAM_TIMEOUT",
                     "The account did not answer in time; the call may have been processed", headers)
    return error(503, "Service unavailable", "SERVICE_UNAVAILABLE",
                 "No Responsys account could take the call; retry later", headers)


def _is_json(body: bytes) -> bool:
    try:
        inputs.loads_json(body)
    except BadInput:
        return False
    return True
