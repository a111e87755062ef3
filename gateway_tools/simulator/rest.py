"""The simulated account's REST API: login, transactional sends, list-member lookup, rate limits.

Vendor behaviour mirrored (Oracle Responsys REST API v1.3 and its AFTM pages):
- `POST /rest/api/v1.3/auth/token`, form-encoded; `auth_type=password` or `auth_type=token` (the token
  in `Authorization`); the answer `{"authToken", "issuedAt", "endPoint"}`. Certificate login ("Log in
  with username and certificates"): `auth_type=server` with `user_name` and `client_challenge`
  (base64) answers `{"authToken" (temporary), "serverChallenge", "clientChallenge"}` (both base64; the
  latter encrypted with the server's private key); then `auth_type=client` with `user_name` and
  `server_challenge` (the server challenge encrypted with the user's private key, base64) and the
  temporary token in `Authorization` answers the usual login. A user without a certificate, a wrong
  answer or a spent temporary token is 401 AUTHENTICATION_FAILED (gateway_tools.simulator.certificates).
  Auth always uses the `api` family, never `haApi` ("use api, not haApi, in the Service URL for auth requests").
- Every other call carries the bare token in `Authorization`; a bad one answers 401 INVALID_TOKEN.
- `/rest/api/ratelimit` is outside `v1.3` and answers 500 UNEXPECTED_EXCEPTION ("Not a valid
  authentication token") for a bad token, as its page documents.
- Sends exist under `/rest/api`, `/rest/asyncApi` (202 with a `requestId`) and, for the calls the AFTM
  REST guide names, under `/rest/haApi` (synchronous) and `/rest/haAsyncApi` (202): merge-trigger
  email and SMS and trigger push; "HA Retrieve List Members" is `GET /rest/haApi/v1.3/lists/{l}?qa=`.
  A route outside its families is 404. A failover (secondary) account serves only the AFTM families:
  a standard call other than auth answers 401 API_NOT_ALLOWED_IN_SECONDARY, which is how the vendor
  tells clients a failover happened ("Detecting failovers").
- Sends answer a JSON array of `{"errorMessage": null, "success": true, "recipientId": <RIID>}`.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.protocols import rsa_challenge
from gateway_tools.simulator import wire
from gateway_tools.simulator.state import AccountState, recipient_key

FAMILIES = frozenset({"api", "asyncApi", "haApi", "haAsyncApi"})
AFTM_FAMILIES = frozenset({"haApi", "haAsyncApi"})
# Which families serve which call (the standard guides; the AFTM REST guide for the HA ones).
SEND_FAMILIES = FAMILIES
STANDARD_ONLY = frozenset({"api"})
_ASYNC_FAMILIES = frozenset({"asyncApi", "haAsyncApi"})
_VERSION = re.compile(r"^v1\.[0-9]$")
MAX_RECIPIENTS = 200  # "A single request is limited to 200 recipients"
MATCH_COLUMNS = frozenset({"RIID_", "CUSTOMER_ID_", "EMAIL_ADDRESS_", "MOBILE_NUMBER_", "EMAIL_MD5_HASH_",
                           "EMAIL_SHA256_HASH_"})
# Recipient object properties and the profile-list columns they name.
_RECIPIENT_COLUMNS = {"recipientId": "RIID_", "customerId": "CUSTOMER_ID_", "emailAddress": "EMAIL_ADDRESS_",
                      "mobileNumber": "MOBILE_NUMBER_"}
# Query attribute of the "retrieve a member" call: r, e, c, m.
_QUERY_ATTRIBUTES = {"r": "RIID_", "e": "EMAIL_ADDRESS_", "c": "CUSTOMER_ID_", "m": "MOBILE_NUMBER_"}

Handler = Callable[[Request], Awaitable[Response]]
Parser = Callable[[dict[str, Any]], list[dict[str, str]]]


class _Invalid(Exception):
    def __init__(self, detail: str, error: wire.RestError = wire.INVALID_PARAMETER) -> None:
        super().__init__(detail)
        self.detail = detail
        self.error = error


def build_rest_routes(state: AccountState) -> list[Route]:
    api = _RestApi(state)
    prefix = "/rest/{family}/{version}"
    return [
        Route("/rest/api/{version}/auth/token", api.auth_token, methods=["POST"]),
        Route("/rest/api/ratelimit", api.rate_limits, methods=["GET"]),
        Route(f"{prefix}/campaigns/{{campaign}}/email", api.send("email", _email_recipients, SEND_FAMILIES),
              methods=["POST"]),
        Route(f"{prefix}/campaigns/{{campaign}}/push",
              api.send("triggerPush", _triggered_recipients, SEND_FAMILIES), methods=["POST"]),
        Route(f"{prefix}/campaigns/{{campaign}}/sms",
              api.send("mergeTriggerSMS", _merged_recipients, SEND_FAMILIES), methods=["POST"]),
        Route(f"{prefix}/campaigns/{{campaign}}/sms/trigger",
              api.send("triggerSMS", _triggered_recipients, STANDARD_ONLY), methods=["POST"]),
        Route(f"{prefix}/events/{{event}}", api.send("triggerCustomEvent", _event_recipients, STANDARD_ONLY),
              methods=["POST"]),
        Route(f"{prefix}/lists/{{list_name}}/members/{{riid}}", api.member_by_riid, methods=["GET"]),
        Route(f"{prefix}/lists/{{list_name}}/members", api.member_by_attribute, methods=["GET"]),
        Route(f"{prefix}/lists/{{list_name}}", api.ha_member_by_attribute, methods=["GET"]),
    ]


class _RestApi:
    def __init__(self, state: AccountState) -> None:
        self._state = state

    async def auth_token(self, request: Request) -> Response:
        if not _VERSION.match(request.path_params["version"]):
            return Response("Not Found", status_code=404)
        form = await _form(request)
        auth_type = form.get("auth_type", "")
        if auth_type == "password":
            user, password = form.get("user_name"), form.get("password")
            if not user or password is None:
                return wire.rest_error(wire.INVALID_PARAMETER, "user_name and password are required")
            if not self._state.credentials_match(user, password):
                return wire.rest_error(wire.AUTHENTICATION_FAILED, "User name or password is incorrect")
            token, issued_at = self._state.issue_token()
        elif auth_type == "token":
            refreshed = self._state.refresh_token(request.headers.get("authorization", ""))
            if refreshed is None:
                return wire.rest_error(wire.INVALID_TOKEN, "Not a valid authentication token")
            token, issued_at = refreshed
        elif auth_type == "server":
            return await self._authenticate_server(form)
        elif auth_type == "client":
            refused = await self._login_with_certificate(request, form)
            if refused is not None:
                return refused
            token, issued_at = self._state.issue_token()
        else:
            return wire.rest_error(wire.INVALID_PARAMETER, "auth_type must be password, token, server or client")
        return wire.json_response({"authToken": token, "issuedAt": issued_at, "endPoint": _origin(request)})

    async def _authenticate_server(self, form: dict[str, str]) -> Response:
        """Certificate login, step 1: the temporary token, our challenge, theirs encrypted with our key."""
        user, encoded = form.get("user_name"), form.get("client_challenge")
        if not user or not encoded:
            return wire.rest_error(wire.INVALID_PARAMETER, "user_name and client_challenge are required")
        client_challenge = rsa_challenge.decode(encoded)
        if client_challenge is None:
            return wire.rest_error(wire.INVALID_PARAMETER, "client_challenge is not base64")
        if not secrets.compare_digest(user.encode(), self._state.user_name.encode()):
            return wire.rest_error(wire.AUTHENTICATION_FAILED, "Authentication failed")
        answer = await asyncio.to_thread(self._state.certificates.authenticate_server, client_challenge)
        if answer is None:
            return wire.rest_error(wire.AUTHENTICATION_FAILED, "Authentication failed")
        return wire.json_response({"authToken": answer.handle,
                                   "serverChallenge": rsa_challenge.encode(answer.server_challenge),
                                   "clientChallenge": rsa_challenge.encode(answer.encrypted_client_challenge)})

    async def _login_with_certificate(self, request: Request, form: dict[str, str]) -> Response | None:
        """Certificate login, step 2; None when the answer is right (the caller issues the token)."""
        user, encoded = form.get("user_name"), form.get("server_challenge")
        if not user or not encoded:
            return wire.rest_error(wire.INVALID_PARAMETER, "user_name and server_challenge are required")
        answer = rsa_challenge.decode(encoded)
        if answer is None:
            return wire.rest_error(wire.INVALID_PARAMETER, "server_challenge is not base64")
        handle = request.headers.get("authorization", "")
        if not secrets.compare_digest(user.encode(), self._state.user_name.encode()):
            handle = ""  # spends nothing: an unknown user fails like a wrong answer
        if not await asyncio.to_thread(self._state.certificates.login_with_certificate, handle, answer):
            return wire.rest_error(wire.AUTHENTICATION_FAILED, "Authentication failed")
        return None

    async def rate_limits(self, request: Request) -> Response:
        if not self._state.token_valid(request.headers.get("authorization")):
            return wire.rest_error(wire.UNEXPECTED, "Not a valid authentication token")
        return wire.json_response(RATE_LIMITS)

    def send(self, operation: str, parse: Parser, families: frozenset[str]) -> Handler:
        async def handle(request: Request) -> Response:
            denied = self._gate(request, families)
            if denied is not None:
                return denied
            try:
                body = _json_object(await request.body())
                name = "mergeTriggerEmail" if operation == "email" and "mergeTriggerRecordData" in body else (
                    "triggerEmail" if operation == "email" else operation)
                recipients = parse(body)
            except _Invalid as exc:
                return wire.rest_error(exc.error, exc.detail)
            return self._accept(request, name, recipients)

        return handle

    def _accept(self, request: Request, operation: str, recipients: list[dict[str, str]]) -> Response:
        results = []
        for fields in recipients:
            riid = self._state.remember_member(fields)
            self._state.record(protocol="rest", operation=operation, path=request.url.path,
                               recipient=recipient_key(fields),
                               idempotency_key=request.headers.get("idempotency-key"),
                               request_id=request.headers.get("x-request-id"),
                               traceparent=request.headers.get("traceparent"))
            results.append({"errorMessage": None, "success": True, "recipientId": riid})
        if request.path_params["family"] in _ASYNC_FAMILIES:
            # The async families accept now and report through their polling API later.
            return wire.json_response({
                "requestId": secrets.token_urlsafe(18), "apiName": operation, "status": "REQUEST_ACCEPTED",
                "links": [{"rel": "self", "href": request.url.path, "method": "POST"}],
            }, status=202)
        return wire.json_response(results)

    async def member_by_riid(self, request: Request) -> Response:
        denied = self._gate(request, STANDARD_ONLY)
        if denied is not None:
            return denied
        riid = request.path_params["riid"]
        member = self._state.member(int(riid)) if riid.isdigit() else None
        return self._member_answer(request, member, f"RIID_ {riid}")

    async def member_by_attribute(self, request: Request) -> Response:
        return await self._by_attribute(request, STANDARD_ONLY)

    async def ha_member_by_attribute(self, request: Request) -> Response:
        """HA Retrieve List Members: `GET /rest/haApi/v1.3/lists/{listName}?qa=&fs=&id=`."""
        return await self._by_attribute(request, frozenset({"haApi"}))

    async def _by_attribute(self, request: Request, families: frozenset[str]) -> Response:
        denied = self._gate(request, families)
        if denied is not None:
            return denied
        column = _QUERY_ATTRIBUTES.get(request.query_params.get("qa", ""))
        value = request.query_params.get("id", "")
        if column is None or not value:
            return wire.rest_error(wire.INVALID_PARAMETER, "qa must be one of r, e, c, m and id is required")
        return self._member_answer(request, self._state.find_member(column, value), f"{column} {value}")

    def _member_answer(self, request: Request, member: dict[str, str] | None, what: str) -> Response:
        field_list = [f.strip().upper() for f in request.query_params.get("fs", "").split(",") if f.strip()]
        if not field_list:
            return wire.rest_error(wire.INVALID_PARAMETER, "FieldList is null OR empty")
        if member is None:
            return wire.rest_error(wire.RECORD_NOT_FOUND, f"No record found for {what}")
        names = sorted(member) if field_list == ["ALL"] else field_list
        return wire.json_response({
            "recordData": {"fieldNames": names, "records": [[member.get(n) for n in names]],
                           "mapTemplateName": None},
            "mergeRule": None,
            "links": [{"rel": "self", "href": request.url.path, "method": "GET"}],
        })

    def _gate(self, request: Request, families: frozenset[str]) -> Response | None:
        """Path family (one this call exists in)/version, token, then the failover account's AFTM-only rule."""
        family = request.path_params["family"]
        if family not in families or not _VERSION.match(request.path_params["version"]):
            return Response("Not Found", status_code=404)
        if not self._state.token_valid(request.headers.get("authorization")):
            return wire.rest_error(wire.INVALID_TOKEN, "Not a valid authentication token")
        if self._state.secondary and family not in AFTM_FAMILIES:
            return wire.rest_error(wire.NOT_ALLOWED_IN_SECONDARY,
                                   "This API is not available on a failover account; use the haApi endpoints")
        return None


async def _form(request: Request) -> dict[str, str]:
    """The login form. The vendor insists on form encoding ("you must NOT use the URL string for
    passing in the authentication credentials"), so other bodies and the query string are ignored."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    try:
        pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        return {}
    return dict(pairs)


def _origin(request: Request) -> str:
    """`scheme://host[:port]` exactly as the client addressed this listener (its Host header)."""
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise _Invalid("Request body is not valid JSON", wire.INVALID_REQUEST_CONTENT) from None
    if not isinstance(body, dict):
        raise _Invalid("Request body must be a JSON object")
    return body


def _email_recipients(body: dict[str, Any]) -> list[dict[str, str]]:
    # One path, two calls: "Trigger email message" (recipientData) and "Merge Trigger Email".
    if "mergeTriggerRecordData" in body:
        return _merged_recipients(body)
    return _triggered_recipients(body)


def _triggered_recipients(body: dict[str, Any]) -> list[dict[str, str]]:
    items = body.get("recipientData")
    if not isinstance(items, list) or not items:
        raise _Invalid("recipientData is null OR empty")
    if len(items) > MAX_RECIPIENTS:
        raise _Invalid(f"recipientData has more than {MAX_RECIPIENTS} recipients")
    return [_recipient(item, index) for index, item in enumerate(items)]


def _recipient(item: object, index: int) -> dict[str, str]:
    if not isinstance(item, dict) or not isinstance(item.get("recipient"), dict):
        raise _Invalid(f"recipientData[{index}].recipient is required")
    recipient: dict[str, Any] = item["recipient"]
    list_name = recipient.get("listName")
    if not isinstance(list_name, dict) or not isinstance(list_name.get("objectName"), str) \
            or not list_name["objectName"]:
        raise _Invalid(f"recipientData[{index}].recipient.listName.objectName is required")
    fields = {column: str(recipient[prop]) for prop, column in _RECIPIENT_COLUMNS.items()
              if isinstance(recipient.get(prop), str | int) and str(recipient[prop]).strip()}
    if not fields:
        raise _Invalid(f"recipientData[{index}].recipient needs recipientId, customerId, emailAddress "
                       "or mobileNumber")
    _check_optional_data(item.get("optionalData"), f"recipientData[{index}]")
    return fields


def _check_optional_data(value: object, where: str) -> None:
    if value is None:
        return
    # An empty object is accepted: the responsysrest client sends [{}] when there is no optional data.
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise _Invalid(f"{where}.optionalData must be an array of name/value objects")


def _merged_recipients(body: dict[str, Any]) -> list[dict[str, str]]:
    data = body.get("mergeTriggerRecordData")
    rule = body.get("mergeRule")
    if not isinstance(data, dict):
        raise _Invalid("mergeTriggerRecordData is required")
    if not isinstance(rule, dict) or str(rule.get("matchColumnName1") or "").strip().upper() not in MATCH_COLUMNS:
        raise _Invalid("mergeRule.matchColumnName1 must be one of " + ", ".join(sorted(MATCH_COLUMNS)))
    names, records = data.get("fieldNames"), data.get("mergeTriggerRecords")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise _Invalid("mergeTriggerRecordData.fieldNames is null OR empty")
    if not isinstance(records, list) or not records:
        raise _Invalid("mergeTriggerRecordData.mergeTriggerRecords is null OR empty")
    if len(records) > MAX_RECIPIENTS:
        raise _Invalid(f"mergeTriggerRecords has more than {MAX_RECIPIENTS} records")
    recipients = []
    for index, record in enumerate(records):
        values = record.get("fieldValues") if isinstance(record, dict) else None
        if not isinstance(values, list) or len(values) != len(names):
            raise _Invalid(f"mergeTriggerRecords[{index}].fieldValues must have one value per field name")
        _check_optional_data(record.get("optionalData"), f"mergeTriggerRecords[{index}]")
        recipients.append({n.upper(): "" if v is None else str(v) for n, v in zip(names, values, strict=True)})
    return recipients


def _event_recipients(body: dict[str, Any]) -> list[dict[str, str]]:
    event = body.get("customEvent")
    if event is not None and not isinstance(event, dict):
        raise _Invalid("customEvent must be an object")
    return _triggered_recipients(body)


def _limit(api: str, path: str, verb: str, limit: int, description: str) -> dict[str, Any]:
    return {"limit": limit, "api": api, "resource_path": path, "verb": verb, "description": description}


# The fields are the vendor's ("Get Throttling Limits"); the numbers are the simulator's.
RATE_LIMITS = [
    _limit("mergeTriggerEmail", "/campaigns/{campaignName}/email", "POST", 500, "Merge Trigger Email"),
    _limit("triggerPush", "/campaigns/{campaignName}/push", "POST", 500, "Trigger Push Message"),
    _limit("mergeTriggerSMS", "/campaigns/{campaignName}/sms", "POST", 500, "Merge Trigger SMS"),
    _limit("triggerSMS", "/campaigns/{campaignName}/sms/trigger", "POST", 500, "Trigger SMS Message"),
    _limit("triggerCustomEvent", "/events/{eventName}", "POST", 500, "Trigger Custom Event"),
    _limit("retrieveListMember", "/lists/{listName}/members/{riid}", "GET", 1000, "Retrieve a Member"),
    _limit("login", "/auth/token", "POST", 100, "Login with username and password"),
]
