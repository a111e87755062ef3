from __future__ import annotations

import json

import pytest

from gateway.errors import LoginRefused
from gateway.protocols import responsys_rest as rest
from policies.outcome import Failure, Kind


def body(code: str) -> bytes:
    return rest.error_body(title="t", error_code=code, detail="d")


def test_error_body_has_the_vendor_fields() -> None:
    assert set(json.loads(body("X"))) == {"type", "title", "errorCode", "detail", "errorDetails"}


@pytest.mark.parametrize(
    ("status", "payload", "kind", "failure"),
    [
        (200, b"[]", Kind.OK, None),
        (401, body("INVALID_TOKEN"), Kind.SESSION_INVALID, None),
        (429, b"", Kind.THROTTLED, None),
        (403, body("API_LIMIT_EXCEEDED"), Kind.THROTTLED, None),  # by error code, whatever the status
        (401, body("API_NOT_ALLOWED_IN_SECONDARY"), Kind.CLIENT_ERROR, None),
        (500, body("UNRECOVERABLE_EXCEPTION"), Kind.ACCOUNT_FAILURE, Failure.UNRECOVERABLE),
        (503, b"<html>down</html>", Kind.ACCOUNT_FAILURE, Failure.UNAVAILABLE),
        (500, b"oops", Kind.ACCOUNT_FAILURE, Failure.SERVER_ERROR),
        (400, body("INVALID_PARAMETER"), Kind.CLIENT_ERROR, None),
        (404, b"", Kind.CLIENT_ERROR, None),
    ],
)
def test_classify(status: int, payload: bytes, kind: Kind, failure: Failure | None) -> None:
    outcome = rest.classify(status, {}, payload, retry_after=None)
    assert outcome.kind is kind
    assert outcome.failure is failure


def test_throttled_carries_retry_after() -> None:
    assert rest.classify(429, {}, b"", retry_after=7.0).retry_after == 7.0


def test_unrecoverable_is_ambiguous_but_unavailable_is_not() -> None:
    assert rest.classify(500, {}, body("UNRECOVERABLE_EXCEPTION"), retry_after=None).ambiguous
    assert not rest.classify(503, {}, b"", retry_after=None).ambiguous


def test_parse_login() -> None:
    login = rest.parse_login(200, b'{"authToken":"t","issuedAt":1,"endPoint":"https://api.example/"}')
    assert (login.token, login.end_point) == ("t", "https://api.example")
    with pytest.raises(LoginRefused, match="INVALID_USER_NAME_PASSWORD"):
        rest.parse_login(401, body("INVALID_USER_NAME_PASSWORD"))
    with pytest.raises(LoginRefused):
        rest.parse_login(200, b"{}")


def test_upstream_path_follows_the_account_family() -> None:
    path = "/rest/api/v1.3/campaigns/welcome/email"
    assert rest.upstream_path("POST", path, None) == path
    assert rest.upstream_path("POST", path, "/rest/haApi") == "/rest/haApi/v1.3/campaigns/welcome/email"
    assert rest.upstream_path("POST", "/rest/haAsyncApi/v1.3/x", "/rest/haApi") == "/rest/haAsyncApi/v1.3/x"


@pytest.mark.parametrize(("method", "app_path", "twin"), [
    ("POST", "/rest/api/v1.3/campaigns/OTP/sms", "/rest/haApi/v1.3/campaigns/OTP/sms"),
    ("POST", "/rest/api/v1.3/campaigns/APP%20NEWS/push", "/rest/haApi/v1.3/campaigns/APP%20NEWS/push"),
    ("POST", "/rest/asyncApi/v1.3/campaigns/W/email", "/rest/haAsyncApi/v1.3/campaigns/W/email"),
    ("POST", "/rest/asyncApi/v1.3/campaigns/OTP/sms", "/rest/haAsyncApi/v1.3/campaigns/OTP/sms"),
    ("POST", "/rest/asyncApi/v1.3/campaigns/P/push", "/rest/haAsyncApi/v1.3/campaigns/P/push"),
    ("GET", "/rest/api/v1.3/lists/CONTACTS/members?qa=e&fs=all&id=a%40example.com",
     "/rest/haApi/v1.3/lists/CONTACTS?qa=e&fs=all&id=a%40example.com"),
])
def test_each_call_with_an_aftm_twin_goes_to_its_twin(method: str, app_path: str, twin: str) -> None:
    assert rest.upstream_path(method, app_path, "/rest/haApi") == twin


@pytest.mark.parametrize(("method", "app_path"), [
    ("POST", "/rest/api/v1.3/events/ORDER_SHIPPED"),  # no HA custom event
    ("POST", "/rest/api/v1.3/campaigns/OTP/sms/trigger"),  # no HA trigger SMS
    ("GET", "/rest/api/v1.3/lists/CONTACTS/members/72067?fs=all"),  # by RIID: no twin
    ("GET", "/rest/api/v1.3/lists/CONTACTS/members?fs=all&xqa=e"),
    ("GET", "/rest/api/v1.3/campaigns/W/email"),
    ("POST", "/rest/api/ratelimit"),
])
def test_calls_without_an_aftm_twin_go_as_the_app_sent_them(method: str, app_path: str) -> None:
    assert rest.upstream_path(method, app_path, "/rest/haApi") == app_path


@pytest.mark.parametrize("target", [
    "/rest/API/v1.3/campaigns/W/email",
    "/rest/api/V1.3/campaigns/W/email",
    "/rest/api/v1.3/Campaigns/W/email",
    "/rest/api/v1.3/campaigns/W/EMAIL",
    "/rest/haapi/v1.3/events/E",
    "/rest/api/v1.3/lists/L/MEMBERS?qa=e&id=x",
    "/rest/api/v1.3/AUTH/token",
])
def test_the_gateways_own_paths_in_another_letter_case_are_recognised(target: str) -> None:
    assert rest.in_another_spelling(target)


@pytest.mark.parametrize("target", [
    "/rest/api/v1.3/auth/token/",
    "/rest/api//v1.3/auth/token",
    "/rest/api/v1.3//auth/token",
    "/rest/api/v1.3/auth/token;jsessionid=1",
    "/rest/api/v1.3;x/auth/token",
    "/rest/api/v1.3/auth/toke%6E",
    "/rest/api/v1.3/campaigns/W/email/",
    "/rest/api/v1.3/campaigns//W/email",
    "/rest/api/v1.3/campaigns/W/email;x",
    "/rest/api/v1.3/campaigns/W/%65mail",
    "/rest/asyncApi/v1.3/events/E/",
    "/rest/api/v1.3/lists/L/members/?qa=e&id=x",
    "/rest/api/v1%2E3/campaigns/W/email",
])
def test_the_gateways_own_paths_in_a_spelling_a_servlet_reads_the_same_are_recognised(target: str) -> None:
    """Servlet containers merge `//`, drop `;params` and a trailing `/`, and decode `%65` to `e`: such a
    spelling of the login went upstream with the account's token (a refresh there answers the app the
    account's own token), and of a send went past its AFTM twin and the outbox."""
    assert rest.in_another_spelling(target)


@pytest.mark.parametrize("target", [
    "/rest/api/v1.3/campaigns/W/email",
    "/rest/api/v1.3/campaigns/Welcome_BACK/email",  # names are the app's, in any case
    "/rest/haAsyncApi/v1.3/campaigns/w/push?Debug=1",
    "/rest/api/v1.3/lists/Contacts/members?qa=e&id=X",
    "/rest/api/v1.3/Folders/x",  # no rule of the gateway's: the vendor answers it
    "/rest/api/ratelimit",
    "/rest/api/v1.3/campaigns/50%25off/email",  # an escape in a name stays the app's
    "/rest/api/v1.3/campaigns/wel%20come/email",
    "/rest/api/v1.3/folders//x/",  # no rule of the gateway's, however spelt
])
def test_paths_as_the_vendor_spells_them_or_without_a_rule_are_not(target: str) -> None:
    assert not rest.in_another_spelling(target)


def test_sends_are_recognised() -> None:
    assert rest.is_send("POST", "/rest/api/v1.3/campaigns/c/email")
    assert rest.is_send("POST", "/rest/haApi/v1.3/events/e")
    assert rest.is_send("POST", "/rest/asyncApi/v1.3/campaigns/c/push")
    assert not rest.is_send("GET", "/rest/api/v1.3/lists/l/members/1")
    assert not rest.is_send("POST", "/rest/api/v1.3/lists/l/members")


def test_tightest_send_limit_reads_the_vendor_list() -> None:
    entries = [
        {"limit": 500, "api": "mergeTriggerEmail", "resource_path": "/campaigns/{campaignName}/email", "verb": "POST"},
        {"limit": 200, "api": "triggerCustomEvent", "resource_path": "/events/{eventName}", "verb": "POST"},
        {"limit": 50, "api": "retrieveListMember", "resource_path": "/lists/{l}/members/{riid}", "verb": "GET"},
        {"limit": 10, "api": "login", "resource_path": "/auth/token", "verb": "POST"},
    ]
    assert rest.tightest_send_limit(json.dumps(entries).encode()) == 200
    assert rest.tightest_send_limit(b"not json") is None
    assert rest.tightest_send_limit(b"[]") is None


def test_rejected_recipients_of_a_send_answered_200_are_found_cheaply_and_parsed() -> None:
    answer = (b'[{"errorMessage": null, "success": true, "recipientId": 101},'
              b' {"errorMessage": "RECIPIENT_NOT_FOUND: no such member", "success": false, "recipientId": -1}]')
    assert rest.may_reject_recipients(answer)
    assert rest.rejected_recipients(answer) == [("-1", "RECIPIENT_NOT_FOUND: no such member")]
    clean = b'[{"errorMessage": null, "success": true, "recipientId": 101}]'
    assert not rest.may_reject_recipients(clean) and rest.rejected_recipients(clean) == []
    assert rest.rejected_recipients(b'{"success": false}') == []  # not a per-recipient answer
    assert rest.rejected_recipients(b"not json") == []


def test_send_summary_names_the_campaign_and_recipients_for_failure_reports() -> None:
    body = (b'{"recipientData": [{"recipient": {"emailAddress": "a@example.com"}},'
            b' {"recipient": {"mobileNumber": "+15550001111"}}, {"recipient": {}}, "junk"]}')
    assert rest.send_summary("/rest/api/v1.3/campaigns/welcome/email", body) == (
        "welcome", ["a@example.com", "+15550001111"])
    assert rest.send_summary("/rest/api/v1.3/events/signup", b"{not json") == ("signup", [])
    assert rest.error_text(b'{"errorCode": "INVALID_PARAMETER", "detail": "listName is required"}') == (
        "INVALID_PARAMETER: listName is required")
