"""The REST surface: the gateway answers logins itself and forwards every other call.

An app logs in to the gateway (`POST /rest/api/v{version}/auth/token`) and gets a gateway token whose
`endPoint` is the gateway's public URL, so real clients keep sending every later call here. Those calls
go to the active account with that account's own upstream token.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import httpx
from starlette.requests import Request
from starlette.responses import Response

from gateway.config import Account
from gateway.core import idempotency
from gateway.core.loop import Call, Lease, Result
from gateway.edge import inputs, targets
from gateway.edge.bodies import FORM_LIMIT
from gateway.edge.clients import source_of
from gateway.edge.correlation import HEADER, forwarded_headers, request_ids
from gateway.errors import BadInput, BodyRefused, CertificateRefused, StoreError, TooManyFailedLogins
from gateway.protocols import responsys_rest as rest
from gateway.protocols import rsa_challenge
from gateway.reporting.codes import FailureKind
from gateway.upstreams.sessions import RestSession, RestSessions
from policies.outcome import Failure, Kind, Outcome

if TYPE_CHECKING:
    from gateway.runtime import Runtime

JSON = "application/json"
FORWARDED_HEADERS = ("content-type", "accept", "idempotency-key", "x-request-id")


def error(status: int, title: str, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return Response(rest.error_body(title=title, error_code=code, detail=detail), status_code=status,
                    media_type=JSON, headers=headers)


def not_found(path: str) -> Response:
    """The vendor's answer to a path it has no API at (its paths are case-sensitive)."""
    return error(404, "Not found", "RESOURCE_NOT_FOUND", f"No API at {path}")


class _TokenLease:
    def __init__(self, sessions: RestSessions, account: Account, session: RestSession) -> None:
        self._sessions = sessions
        self.account = account
        self.session = session

    def invalidate(self) -> None:
        self._sessions.invalidate(self.account, self.session)


class RestDialect:
    """REST's answers to the forward loop: token sessions, upstream URL, verdicts."""

    def __init__(self, sessions: RestSessions) -> None:
        self._sessions = sessions

    @contextlib.asynccontextmanager
    async def session(self, account: Account, *, within: float) -> AsyncIterator[Lease]:
        yield _TokenLease(self._sessions, account, await self._sessions.session_for(account))

    def upstream_request(self, account: Account, call: Call, lease: Lease) -> httpx.Request:
        assert isinstance(lease, _TokenLease)
        # Built from the raw target the edge checked, and verified to be sent unchanged (gateway.edge.targets).
        target = rest.upstream_path(call.method, call.path, account.api_prefix)
        url = targets.upstream_url(lease.session.end_point, target)
        headers = [*call.headers, ("Authorization", lease.session.token)]
        return httpx.Request(call.method, url, headers=headers, content=call.body)

    def classify(self, response: httpx.Response, retry_after: float | None) -> Outcome:
        return rest.classify(response.status_code, response.headers, response.content, retry_after=retry_after)

    def answer(self, account: Account, call: Call, response: httpx.Response) -> httpx.Response:
        return response


async def login(request: Request) -> Response:
    """`auth_type=password` checks the app against `clients`; `auth_type=token` refreshes a gateway token;
    `auth_type=server` then `auth_type=client` is the vendor's certificate login (clients[].certificate)."""
    runtime: Runtime = request.app.state.runtime
    if rest.AUTH_PATH.match(request.scope["path"]) is None:  # `/rest/api/V1.3/auth/token`: no vendor path
        return not_found(request.scope["path"])
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return error(400, "Bad request", "INVALID_REQUEST",
                     "Send the login as application/x-www-form-urlencoded form fields")
    body = await runtime.read_body(request, limit=FORM_LIMIT)
    try:
        form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return error(400, "Bad request", "INVALID_REQUEST", "The login form is not UTF-8")
    auth_type = form.get("auth_type")
    if auth_type == "password":
        user, password = form.get("user_name", ""), form.get("password", "")
        try:
            ok = await runtime.credentials.login(user, password, source=source_of(request))
        except TooManyFailedLogins as exc:
            return error(429, "Too many requests", "API_LIMIT_EXCEEDED", "Too many failed logins; retry later",
                         {"Retry-After": exc.retry_after_header})
        if not ok:
            runtime.telemetry.metrics.credential_failures.labels("rest").inc()  # never a client's failure entry
            return error(401, "Authentication failed", "AUTHENTICATION_FAILED", "Invalid user name or password")
        client = user
    elif auth_type == "token":
        identity = await runtime.credentials.verify(request.headers.get("authorization"), "rest")
        if identity is None:
            return error(401, "Unauthorized", "INVALID_TOKEN", "The token is invalid or has expired")
        client = identity.client
    elif auth_type in ("server", "client"):
        try:
            if auth_type == "server":
                return await _authenticate_server(runtime, request, form)
            client = await _login_with_certificate(runtime, request, form)
        except CertificateRefused as exc:
            runtime.telemetry.metrics.credential_failures.labels("rest").inc()
            status, title = (400, "Bad request") if exc.code == "INVALID_PARAMETER" else (401, "Authentication failed")
            return error(status, title, exc.code, exc.message)
        except TooManyFailedLogins as exc:
            return error(429, "Too many requests", "API_LIMIT_EXCEEDED", "Too many failed logins; retry later",
                         {"Retry-After": exc.retry_after_header})
        except StoreError:
            return error(503, "Service unavailable", "SERVICE_UNAVAILABLE",
                         "The gateway cannot check logins right now; retry later")
    else:
        return error(400, "Bad request", "INVALID_PARAMETER", "auth_type must be password, token, server or client")
    answer = {"authToken": runtime.credentials.issue(client, "rest"), "issuedAt": int(time.time() * 1000),
              "endPoint": runtime.config.public_url.rstrip("/")}
    return Response(json.dumps(answer), media_type=JSON)


async def _authenticate_server(runtime: Runtime, request: Request, form: dict[str, str]) -> Response:
    """Certificate login, step 1 (gateway.edge.app_certificates): `{authToken, serverChallenge, clientChallenge}`."""
    user, challenge = form.get("user_name", ""), _base64_field(form, "client_challenge")
    if not user or challenge is None:
        raise CertificateRefused("INVALID_PARAMETER", "user_name and client_challenge (base64) are required")
    answer = await runtime.app_certificates.authenticate_server(user, challenge, source=source_of(request))
    body = {"authToken": answer.handle, "serverChallenge": rsa_challenge.encode(answer.server_challenge),
            "clientChallenge": rsa_challenge.encode(answer.encrypted_client_challenge)}
    return Response(json.dumps(body), media_type=JSON)


async def _login_with_certificate(runtime: Runtime, request: Request, form: dict[str, str]) -> str:
    """Certificate login, step 2: the client logged in (the temporary token in `Authorization`)."""
    user, answer = form.get("user_name", ""), _base64_field(form, "server_challenge")
    if not user or answer is None:
        raise CertificateRefused("INVALID_PARAMETER", "user_name and server_challenge (base64) are required")
    return await runtime.app_certificates.login_with_certificate(
        request.headers.get("authorization"), answer, source=source_of(request), user_name=user)


def _base64_field(form: dict[str, str], name: str) -> bytes | None:
    """A form field's base64, or None. A space in it was a `+` the app sent without form-encoding it
    (`curl -d`): never base64 otherwise, and dropped as whitespace it made other bytes of the rest."""
    encoded = form.get(name, "")
    return rsa_challenge.decode(encoded.replace(" ", "+")) if encoded else None


async def forward(request: Request) -> Response:
    """Any other `/rest/...` call: authenticate the app, then forward to the active account."""
    runtime: Runtime = request.app.state.runtime
    try:  # the raw target, never the decoded path: what is checked here is what goes upstream
        target = targets.target_of(request.scope)  # checked once, by the target guard before routing
    except targets.UnsafeTarget as exc:
        return error(400, "Bad request", "INVALID_REQUEST", f"Refused request target: {exc}")
    path = target.partition("?")[0]
    if rest.API_PATH.match(path) is None or rest.in_another_spelling(target):
        return not_found(path)
    identity = await runtime.credentials.verify(request.headers.get("authorization"), "rest")
    if identity is None:
        return error(401, "Unauthorized", "INVALID_TOKEN", "The token is invalid or has expired")
    ids = request_ids(request.headers.get(HEADER))
    try:
        body = await runtime.read_body(request)
    except BodyRefused as exc:  # answered by the app's handler, in this shape (gateway.edge.refusals)
        runtime.report(FailureKind.MALFORMED_REQUEST, client=identity.client, error=exc.detail,
                       send_id=ids.request_id, correlation_id=ids.correlation_id, path=path)
        raise
    if body and "json" in request.headers.get("content-type", "") and not _is_json(body):
        runtime.report(FailureKind.MALFORMED_REQUEST, client=identity.client, send_id=ids.request_id, path=path,
                       correlation_id=ids.correlation_id, error="The request body is not valid JSON")
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
        result = await runtime.handle(call, runtime.rest_dialect)
    except idempotency.KeyReused as exc:
        return error(422, "Unprocessable entity", "IDEMPOTENCY_KEY_REUSED", str(exc), {HEADER: ids.correlation_id})
    return render(result, correlation_id=ids.correlation_id)


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
    except inputs.BadInput:
        return False
    return True
