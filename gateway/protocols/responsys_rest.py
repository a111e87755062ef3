"""Responsys REST: what its calls look like, what its answers mean, and its error shape.

Vendor facts (Oracle Responsys REST API, "Authenticating" and "Error codes"):
- Login is `POST {login_url}/rest/api/v1.3/auth/token`, form-encoded `user_name`, `password`,
  `auth_type=password`; the answer `{"authToken", "issuedAt", "endPoint"}` names where later calls go.
  Certificate login ("Log in with username and certificates") is two such POSTs: `auth_type=server`,
  `user_name`, `client_challenge` (base64) answered `{"authToken" (temporary), "serverChallenge",
  "clientChallenge"}`; then `auth_type=client`, `user_name`, `server_challenge` with the temporary token
  in `Authorization`, answered like a password login (crypto in gateway.protocols.rsa_challenge).
- Later calls carry the bare token in `Authorization`; an invalid or expired token answers 401 with
  `errorCode: INVALID_TOKEN`.
- Errors are JSON `{"type", "title", "errorCode", "detail", "errorDetails"}`.
- Throttling is `errorCode: API_LIMIT_EXCEEDED` (whatever the status) or plain 429.
- `API_NOT_ALLOWED_IN_SECONDARY` (401): the function is not available on a failover account; the app
  gets it as is, it is neither a session problem nor an account failure.
- AFTM ("REST-based AFTM WS API" and its resource pages): a failover account serves only the HA twins
  of the transactional calls, under their own families and paths (`HA_TWINS`, `upstream_path`).
- `UNRECOVERABLE_EXCEPTION` (500): the vendor advises one resend after about 30 s.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from gateway.errors import LoginRefused, login_failure
from gateway.protocols import rsa_challenge
from gateway.protocols.inputs import loads_json
from policies.outcome import Failure, Outcome

LOGIN_PATH = "/rest/api/v1.3/auth/token"
TOKEN_LIFETIME = 7200.0  # seconds; the vendor's documented token life
UNRECOVERABLE_RESEND_AFTER = 30.0

SESSION_ERRORS = frozenset({"INVALID_TOKEN", "TOKEN_EXPIRED"})
THROTTLE_ERRORS = frozenset({"API_LIMIT_EXCEEDED"})
SECONDARY_ERRORS = frozenset({"API_NOT_ALLOWED_IN_SECONDARY"})
UNRECOVERABLE_ERRORS = frozenset({"UNRECOVERABLE_EXCEPTION"})

# The app-facing path families the gateway forwards: the standard `api` and `asyncApi`, and the AFTM
# `haApi` and `haAsyncApi` (an app may call the twins itself).
API_PATH = re.compile(r"^/rest/(?P<family>api|asyncApi|haApi|haAsyncApi)/(?P<rest>.*)$")
AUTH_PATH = re.compile(r"^/rest/api/v[0-9.]+/auth/token$")
# Transactional sends: the calls that may be queued in the outbox when no account can take them now.
SEND_PATH = re.compile(
    r"^/rest/(?:api|asyncApi|haApi|haAsyncApi)/v[0-9.]+/(?:campaigns/[^/]+/(?:email|push|sms)|events/[^/]+)$"
)

_MAX_ERROR_BODY = 65_536  # bytes of an upstream error body worth parsing


@dataclass(frozen=True, slots=True)
class UpstreamLogin:
    token: str
    end_point: str
    issued_at_ms: int


def error_body(*, title: str, error_code: str, detail: str) -> bytes:
    """The vendor's JSON error shape, as the app's client library expects it."""
    return json.dumps(
        {"type": "", "title": title, "errorCode": error_code, "detail": detail, "errorDetails": []}
    ).encode()


def login_form(user_name: str, password: str) -> dict[str, str]:
    return {"user_name": user_name, "password": password, "auth_type": "password"}


def server_auth_form(user_name: str, client_challenge: bytes) -> dict[str, str]:
    """Certificate login, step 1 ("Log in with username and certificates"): `auth_type=server`."""
    return {"user_name": user_name, "auth_type": "server", "client_challenge": rsa_challenge.encode(client_challenge)}


def client_auth_form(user_name: str, encrypted_server_challenge: bytes) -> dict[str, str]:
    """Certificate login, step 2: `auth_type=client`; the temporary token goes in `Authorization`."""
    return {"user_name": user_name, "auth_type": "client",
            "server_challenge": rsa_challenge.encode(encrypted_server_challenge)}


def parse_server_auth(status: int, body: bytes, *, retry_after: float | None = None) -> rsa_challenge.ServerAnswer:
    """Step 1's answer `{"authToken", "serverChallenge", "clientChallenge"}`; LoginRefused otherwise."""
    if status != 200:
        code = _error_code(body)
        raise login_failure("certificate login", status=status, code=code, throttled=code in THROTTLE_ERRORS,
                            retry_after=retry_after)
    try:
        data = loads_json(body)
        token = str(data["authToken"])
        server_challenge = rsa_challenge.decode(str(data["serverChallenge"]))
        encrypted = rsa_challenge.decode(str(data["clientChallenge"]))
    except (ValueError, KeyError, TypeError):
        server_challenge = encrypted = None
        token = ""
    if not token or not server_challenge or not encrypted:
        raise LoginRefused("certificate login answer is not {authToken, serverChallenge, clientChallenge}")
    return rsa_challenge.ServerAnswer(handle=token, server_challenge=server_challenge,
                                      encrypted_client_challenge=encrypted)


def parse_login(status: int, body: bytes, *, retry_after: float | None = None) -> UpstreamLogin:
    """Read an upstream login answer; raise LoginRefused (LoginThrottled) with a secret-free reason."""
    if status != 200:
        code = _error_code(body)
        raise login_failure("login", status=status, code=code, throttled=code in THROTTLE_ERRORS,
                            retry_after=retry_after)
    try:
        data = loads_json(body)
        return UpstreamLogin(
            token=str(data["authToken"]), end_point=str(data["endPoint"]).rstrip("/"),
            issued_at_ms=int(data.get("issuedAt") or 0),
        )
    except (ValueError, KeyError, TypeError):
        raise LoginRefused("login answer is not {authToken, issuedAt, endPoint}") from None


def classify(status: int, headers: Any, body: bytes, *, retry_after: float | None) -> Outcome:
    """Turn an upstream REST answer into an Outcome. Only error bodies are parsed."""
    if status < 400:
        return Outcome.ok()
    code = _error_code(body)
    if code in THROTTLE_ERRORS or status == 429:
        return Outcome.throttled(retry_after, detail=code or "HTTP 429")
    if code in SECONDARY_ERRORS:
        return Outcome.client_error(code or "")
    if code in SESSION_ERRORS or (status == 401 and code is None):
        return Outcome.session_invalid(code or "HTTP 401")
    if code in UNRECOVERABLE_ERRORS:
        return Outcome.account_failure(Failure.UNRECOVERABLE, detail=code or "")
    if status in (502, 503, 504):
        return Outcome.account_failure(Failure.UNAVAILABLE, detail=f"HTTP {status}")
    if status >= 500:
        return Outcome.account_failure(Failure.SERVER_ERROR, detail=code or f"HTTP {status}")
    return Outcome.client_error(code or f"HTTP {status}")


def _error_code(body: bytes) -> str | None:
    if not body or len(body) > _MAX_ERROR_BODY or body.lstrip()[:1] != b"{":
        return None
    try:
        data = loads_json(body)
    except ValueError:
        return None
    code = data.get("errorCode") if isinstance(data, dict) else None
    return code if isinstance(code, str) else None


RATE_LIMIT_PATH = "/rest/api/ratelimit"


def tightest_send_limit(body: bytes) -> int | None:
    """The lowest per-minute limit among the send functions in a `GET /rest/api/ratelimit` answer.

    The vendor lists `{"limit", "api", "resource_path", "verb", "description"}` per function; one
    bucket per account sized by the tightest send keeps every send function under its limit.
    """
    try:
        entries = loads_json(body)
    except ValueError:
        return None
    if isinstance(entries, dict):  # tolerate a wrapper object around the list
        entries = next((v for v in entries.values() if isinstance(v, list)), [])
    limits = [
        int(entry["limit"]) for entry in entries if isinstance(entry, dict)
        and str(entry.get("verb", "")).upper() == "POST" and isinstance(entry.get("limit"), int)
        and re.search(r"/(email|push|sms|trigger)$|^/events/", str(entry.get("resource_path", "")))
    ]
    return min(limits) if limits else None


HA_ASYNC_PREFIX = "/rest/haAsyncApi"
# The AFTM twins, from the vendor's AFTM REST pages (README, "AFTM: which call fails over how"):
#   POST /rest/api/{v}/campaigns/{c}/email|sms|push      -> {api_prefix}/{v}/campaigns/{c}/email|sms|push
#   POST /rest/asyncApi/{v}/campaigns/{c}/email|sms|push -> /rest/haAsyncApi/{v}/campaigns/{c}/...
#   GET  /rest/api/{v}/lists/{l}/members?qa=...          -> {api_prefix}/{v}/lists/{l}?qa=...
# ("HA Retrieve List Members" drops the standard call's `/members` segment.)
_SEND_TWIN = re.compile(r"^/rest/(?P<family>api|asyncApi)/(?P<version>v[0-9.]+)/campaigns/(?P<name>[^/?]+)"
                        r"/(?P<channel>email|sms|push)(?P<query>\?.*)?$")
_LIST_TWIN = re.compile(r"^/rest/api/(?P<version>v[0-9.]+)/lists/(?P<name>[^/?]+)/members(?P<query>\?.*)$")


# Responsys's paths are case-sensitive: `/rest/API/...` or `.../campaigns/W/EMAIL` names no call of its.
# Such a spelling of a path the gateway acts on itself (an API family, the login, a send, a call with an
# AFTM twin) gets the vendor's 404 from the gateway, never forwarded as some other call: the twin rewrite
# and the outbox would pass it by, so a failover account would answer a "send" API_NOT_ALLOWED_IN_SECONDARY
# where the primary answers 404. Paths the gateway has no rule for go as sent, and the vendor answers them.
# The same goes for the spellings a servlet container reads as the same path (`//` merged, `;params` and a
# trailing `/` dropped, `%65` decoded to `e`): the login so spelt went upstream with the account's own token,
# where `auth_type=token` would answer the app a fresh token of the account's.
_OWN_PATHS = (API_PATH, AUTH_PATH, SEND_PATH, _SEND_TWIN, _LIST_TWIN)
_OWN_PATHS_ANY_CASE = tuple(re.compile(path.pattern, re.IGNORECASE) for path in _OWN_PATHS)
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _as_a_servlet_reads(target: str) -> str:
    """`target`'s path as a lenient server maps it: unreserved escapes decoded, `;params` dropped from each
    segment, empty segments (`//`, a trailing `/`) gone. The query stays as sent."""
    path, mark, query = target.partition("?")
    decoded = _ESCAPE.sub(lambda m: c if (c := chr(int(m[1], 16))) in _UNRESERVED else m[0], path)
    segments = (segment.partition(";")[0] for segment in decoded.split("/"))
    return "/" + "/".join(segment for segment in segments if segment) + mark + query


def in_another_spelling(target: str) -> bool:
    """Whether `target` (path and query) is one of the gateway's own paths spelt another way: another letter
    case, or what a servlet container reads as that path (`_as_a_servlet_reads`)."""
    read = _as_a_servlet_reads(target)
    return any(folded.match(spelling) is not None and exact.match(target) is None
               for exact, folded in zip(_OWN_PATHS, _OWN_PATHS_ANY_CASE, strict=True)
               for spelling in (target, read))


def upstream_path(method: str, app_path: str, api_prefix: str | None) -> str:
    """The target an account needs for the app's call: its AFTM twin when the account sets a prefix.

    Only calls with a twin (the table above) are rewritten; every other call goes as the app sent it, and a
    failover account answers it 401 API_NOT_ALLOWED_IN_SECONDARY, which the app gets as is. Only
    whole segments move, so the target stays one `gateway.protocols.targets` passes when the app's did.
    """
    if api_prefix is None:
        return app_path
    send = _SEND_TWIN.match(app_path) if method == "POST" else None
    if send is not None:
        family = api_prefix if send["family"] == "api" else HA_ASYNC_PREFIX
        return f"{family}/{send['version']}/campaigns/{send['name']}/{send['channel']}{send['query'] or ''}"
    lookup = _LIST_TWIN.match(app_path) if method == "GET" else None
    if lookup is not None and re.search(r"[?&]qa=", lookup["query"]):  # by query attribute; by RIID has no twin
        return f"{api_prefix}/{lookup['version']}/lists/{lookup['name']}{lookup['query']}"
    return app_path


def is_send(method: str, path: str) -> bool:
    return method == "POST" and SEND_PATH.match(path) is not None


_KEYWORD = re.compile(r"/(?:campaigns|events)/(?P<name>[^/?]+)")
_RECIPIENT_FIELDS = ("emailAddress", "mobileNumber", "recipientId", "customerId")


def send_summary(path: str, body: bytes) -> tuple[str, list[str]]:
    """The campaign (or event) a send names, and its recipients, for failure reports; never raises."""
    match = _KEYWORD.search(path)
    keyword = unquote(match.group("name")) if match else ""  # the path is the raw one: `welcome%20back`
    recipients: list[str] = []
    try:
        data = loads_json(body) if body and len(body) <= _MAX_ERROR_BODY * 16 else {}
    except ValueError:
        return keyword, recipients
    entries = data.get("recipientData") if isinstance(data, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        recipient = entry.get("recipient") if isinstance(entry, dict) else None
        if isinstance(recipient, dict):
            found = next((str(recipient[f]) for f in _RECIPIENT_FIELDS if recipient.get(f)), None)
            if found:
                recipients.append(found)
    return keyword, recipients


def error_text(body: bytes) -> str:
    """`errorCode: detail` from a vendor error body, for failure reports."""
    try:
        data = loads_json(body) if body and len(body) <= _MAX_ERROR_BODY else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        parts = [str(data[k]) for k in ("errorCode", "detail", "title") if data.get(k)]
        if parts:
            return ": ".join(parts[:2])
    return body[:200].decode("utf-8", "replace")


_REJECTED = re.compile(rb'"success"\s*:\s*false')


def may_reject_recipients(body: bytes) -> bool:
    """Cheap pre-check on a send's 200 answer: does any recipient say `"success": false`?"""
    return _REJECTED.search(body) is not None


def rejected_recipients(body: bytes) -> list[tuple[str, str]]:
    """(recipient id, error message) for each recipient a send's 200 answer rejected; never raises.

    Responsys answers a send with one result per recipient, in the request's order:
    `[{"errorMessage": ..., "success": false, "recipientId": ...}, ...]`.
    """
    try:
        data = loads_json(body) if len(body) <= _MAX_ERROR_BODY * 16 else None
    except ValueError:
        return []
    rejected = []
    for entry in data if isinstance(data, list) else []:
        if isinstance(entry, dict) and entry.get("success") is False:
            rejected.append((str(entry.get("recipientId") or ""), str(entry.get("errorMessage") or "rejected")))
    return rejected
