"""The simulated account's REST API, checked against the vendor's wire formats over real sockets."""

from __future__ import annotations

import httpx

from gateway_tools.simulator.server import SimulatedAccount, build_api_app
from gateway_tools.simulator.state import AccountState
from tests.integration.simulator.conftest import PASSWORD, USER, rest_login, trigger_body
from tests.support.servers import serve

ERROR_KEYS = {"type", "title", "errorCode", "detail", "errorDetails"}


def test_login_answers_token_issued_at_and_endpoint_as_the_client_addressed_it(
        account: SimulatedAccount, http: httpx.Client) -> None:
    answer = http.post(f"{account.url}/rest/api/v1.3/auth/token",
                       data={"user_name": USER, "password": PASSWORD, "auth_type": "password"})

    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"authToken", "issuedAt", "endPoint"}
    assert body["endPoint"] == account.url
    assert isinstance(body["issuedAt"], int) and body["issuedAt"] > 1_600_000_000_000
    assert account.stats()["rest_logins"] == 1


def test_wrong_password_answers_401_with_the_vendor_error_body(account: SimulatedAccount,
                                                               http: httpx.Client) -> None:
    answer = http.post(f"{account.url}/rest/api/v1.3/auth/token",
                       data={"user_name": USER, "password": "wrong", "auth_type": "password"})

    assert answer.status_code == 401
    assert set(answer.json()) == ERROR_KEYS
    assert answer.json()["errorDetails"] == []
    assert account.stats()["rest_logins"] == 0


def test_send_is_recorded_and_invalidate_makes_the_token_invalid(account: SimulatedAccount,
                                                                 http: httpx.Client) -> None:
    token = rest_login(http, account.url)
    url = f"{account.url}/rest/api/v1.3/campaigns/WELCOME/email"
    headers = {"Authorization": token, "Idempotency-Key": "idem-1", "X-Request-Id": "req-1"}

    sent = http.post(url, json=trigger_body("a@example.com", "b@example.com"), headers=headers)

    assert sent.status_code == 200
    assert [set(r) for r in sent.json()] == [{"errorMessage", "success", "recipientId"}] * 2
    assert all(r["success"] is True and r["errorMessage"] is None for r in sent.json())
    deliveries = account.deliveries()
    assert [(d.operation, d.recipient, d.idempotency_key, d.request_id) for d in deliveries] == [
        ("triggerEmail", "EMAIL_ADDRESS_:a@example.com", "idem-1", "req-1"),
        ("triggerEmail", "EMAIL_ADDRESS_:b@example.com", "idem-1", "req-1"),
    ]

    account.invalidate()
    refused = http.post(url, json=trigger_body("a@example.com"), headers=headers)

    assert refused.status_code == 401
    assert refused.json()["errorCode"] == "INVALID_TOKEN"
    assert len(account.deliveries()) == 2


def test_missing_or_bearer_prefixed_token_is_invalid(account: SimulatedAccount, http: httpx.Client) -> None:
    token = rest_login(http, account.url)
    url = f"{account.url}/rest/api/v1.3/events/ORDER_PLACED"

    assert http.post(url, json=trigger_body("a@example.com")).json()["errorCode"] == "INVALID_TOKEN"
    bearer = http.post(url, json=trigger_body("a@example.com"), headers={"Authorization": f"Bearer {token}"})
    assert bearer.status_code == 401 and bearer.json()["errorCode"] == "INVALID_TOKEN"


def test_token_expires_after_its_lifetime(make_account: object, http: httpx.Client) -> None:
    now = [1000.0]
    account = make_account(token_lifetime=60, clock=lambda: now[0])  # type: ignore[operator]
    token = rest_login(http, account.url)
    url = f"{account.url}/rest/haApi/v1.3/campaigns/WELCOME/email"
    assert http.post(url, json=trigger_body("a@example.com"), headers={"Authorization": token}).status_code == 200

    now[0] += 60
    expired = http.post(url, json=trigger_body("a@example.com"), headers={"Authorization": token})

    assert expired.status_code == 401 and expired.json()["errorCode"] == "INVALID_TOKEN"


def test_auth_type_token_refreshes_a_live_token(account: SimulatedAccount, http: httpx.Client) -> None:
    token = rest_login(http, account.url)

    refreshed = http.post(f"{account.url}/rest/api/v1.3/auth/token", data={"auth_type": "token"},
                          headers={"Authorization": token})
    account.invalidate()
    dead = http.post(f"{account.url}/rest/api/v1.3/auth/token", data={"auth_type": "token"},
                     headers={"Authorization": refreshed.json()["authToken"]})

    assert refreshed.status_code == 200 and refreshed.json()["authToken"] != token
    assert dead.status_code == 401 and dead.json()["errorCode"] == "INVALID_TOKEN"


def test_malformed_json_answers_400_with_the_vendor_error_body(account: SimulatedAccount,
                                                               http: httpx.Client) -> None:
    token = rest_login(http, account.url)

    answer = http.post(f"{account.url}/rest/api/v1.3/campaigns/WELCOME/email", content=b'{"recipientData": [',
                       headers={"Authorization": token, "Content-Type": "application/json"})

    assert answer.status_code == 400
    assert set(answer.json()) == ERROR_KEYS
    assert answer.json()["errorCode"] == "INVALID_REQUEST_CONTENT"
    assert account.deliveries() == []


def test_wrong_body_shapes_answer_400_invalid_parameter(account: SimulatedAccount, http: httpx.Client) -> None:
    token = rest_login(http, account.url)
    url = f"{account.url}/rest/api/v1.3/campaigns/WELCOME/email"
    shapes = [
        [],
        {"recipientData": []},
        {"recipientData": [{"recipient": {"emailAddress": "a@example.com"}}]},  # no listName
        {"recipientData": [{"recipient": {"listName": {"folderName": "F", "objectName": "L"}}}]},  # no id
        {"mergeTriggerRecordData": {"fieldNames": ["EMAIL_ADDRESS_"],
                                    "mergeTriggerRecords": [{"fieldValues": ["a@example.com", "extra"]}]},
         "mergeRule": {"matchColumnName1": "EMAIL_ADDRESS_"}},
        {"mergeTriggerRecordData": {"fieldNames": ["EMAIL_ADDRESS_"],
                                    "mergeTriggerRecords": [{"fieldValues": ["a@example.com"]}]},
         "mergeRule": {"matchColumnName1": "NOT_A_COLUMN"}},
    ]

    answers = [http.post(url, json=shape, headers={"Authorization": token}) for shape in shapes]

    assert [(a.status_code, a.json()["errorCode"]) for a in answers] == [(400, "INVALID_PARAMETER")] * len(shapes)
    assert account.deliveries() == []


def test_merge_trigger_sms_push_and_custom_event_are_accepted(account: SimulatedAccount,
                                                              http: httpx.Client) -> None:
    token = rest_login(http, account.url)
    auth = {"Authorization": token}
    merge = {"mergeTriggerRecordData": {"fieldNames": ["CUSTOMER_ID_", "MOBILE_NUMBER_"],
                                        "mergeTriggerRecords": [{"fieldValues": ["1001", "6505551212"],
                                                                 "optionalData": [{"name": "CITY_",
                                                                                   "value": "X"}]}]},
             "mergeRule": {"matchColumnName1": "CUSTOMER_ID_", "insertOnNoMatch": True}}

    answers = [
        http.post(f"{account.url}/rest/haApi/v1.3/campaigns/SMS_OTP/sms", json=merge, headers=auth),
        http.post(f"{account.url}/rest/api/v1.3/campaigns/APP_ALERT/push", json=trigger_body("a@example.com"),
                  headers=auth),
        http.post(f"{account.url}/rest/api/v1.3/events/ORDER_PLACED",
                  json={"customEvent": {"eventNumberDataMapping": None}, **trigger_body("a@example.com")},
                  headers=auth),
    ]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [d.operation for d in account.deliveries()] == ["mergeTriggerSMS", "triggerPush",
                                                           "triggerCustomEvent"]
    assert account.deliveries()[0].recipient == "CUSTOMER_ID_:1001"


def test_ha_async_family_accepts_with_202_and_a_request_id(account: SimulatedAccount,
                                                           http: httpx.Client) -> None:
    token = rest_login(http, account.url)

    answer = http.post(f"{account.url}/rest/haAsyncApi/v1.3/campaigns/WELCOME/email",
                       json=trigger_body("a@example.com"), headers={"Authorization": token})

    assert answer.status_code == 202
    assert answer.json()["status"] == "REQUEST_ACCEPTED" and answer.json()["requestId"]
    assert len(account.deliveries()) == 1


def test_list_member_lookup_finds_a_member_the_account_has_seen(account: SimulatedAccount,
                                                                http: httpx.Client) -> None:
    token = rest_login(http, account.url)
    auth = {"Authorization": token}
    sent = http.post(f"{account.url}/rest/api/v1.3/campaigns/WELCOME/email", json=trigger_body("a@example.com"),
                     headers=auth)
    riid = sent.json()[0]["recipientId"]

    by_riid = http.get(f"{account.url}/rest/api/v1.3/lists/CONTACTS/members/{riid}?fs=all", headers=auth)
    by_email = http.get(f"{account.url}/rest/api/v1.3/lists/CONTACTS/members?qa=e&id=a@example.com"
                        "&fs=EMAIL_ADDRESS_,RIID_", headers=auth)
    missing = http.get(f"{account.url}/rest/api/v1.3/lists/CONTACTS/members/1?fs=all", headers=auth)
    no_fields = http.get(f"{account.url}/rest/api/v1.3/lists/CONTACTS/members/{riid}", headers=auth)

    assert by_riid.status_code == 200
    assert by_email.json()["recordData"] == {"fieldNames": ["EMAIL_ADDRESS_", "RIID_"],
                                             "records": [["a@example.com", str(riid)]], "mapTemplateName": None}
    assert missing.status_code == 404 and missing.json()["errorCode"] == "RECORD_NOT_FOUND"
    assert no_fields.status_code == 400 and no_fields.json()["detail"] == "FieldList is null OR empty"


def test_secondary_account_serves_only_the_aftm_families(make_account: object, http: httpx.Client) -> None:
    account = make_account(name="failover", secondary=True)  # type: ignore[operator]
    token = rest_login(http, account.url)
    auth = {"Authorization": token}

    standard = http.post(f"{account.url}/rest/api/v1.3/campaigns/WELCOME/email",
                         json=trigger_body("a@example.com"), headers=auth)
    lookup = http.get(f"{account.url}/rest/api/v1.3/lists/CONTACTS/members/1?fs=all", headers=auth)
    aftm = http.post(f"{account.url}/rest/haApi/v1.3/campaigns/WELCOME/email",
                     json=trigger_body("a@example.com"), headers=auth)

    assert (standard.status_code, standard.json()["errorCode"]) == (401, "API_NOT_ALLOWED_IN_SECONDARY")
    assert (lookup.status_code, lookup.json()["errorCode"]) == (401, "API_NOT_ALLOWED_IN_SECONDARY")
    assert aftm.status_code == 200
    assert [d.account for d in account.deliveries()] == ["failover"]


def test_rate_limits_list_per_function_limits(account: SimulatedAccount, http: httpx.Client) -> None:
    token = rest_login(http, account.url)

    limits = http.get(f"{account.url}/rest/api/ratelimit", headers={"Authorization": token})
    bad_token = http.get(f"{account.url}/rest/api/ratelimit", headers={"Authorization": "nope"})

    assert limits.status_code == 200
    assert all(set(entry) == {"limit", "api", "resource_path", "verb", "description"} for entry in limits.json())
    assert {"POST /campaigns/{campaignName}/email", "POST /events/{eventName}"} <= {
        f"{e['verb']} {e['resource_path']}" for e in limits.json()}
    # The vendor documents a 500 UNEXPECTED_EXCEPTION here, not INVALID_TOKEN.
    assert (bad_token.status_code, bad_token.json()["errorCode"]) == (500, "UNEXPECTED_EXCEPTION")


def test_the_api_app_also_runs_under_a_plain_uvicorn_server(http: httpx.Client) -> None:
    state = AccountState(name="bare", user_name=USER, password=PASSWORD)

    with serve(build_api_app(state)) as server:
        token = rest_login(http, server.url)
        answer = http.post(f"{server.url}/rest/api/v1.3/campaigns/WELCOME/email",
                           json=trigger_body("a@example.com"), headers={"Authorization": token})

    assert answer.status_code == 200
    assert len(state.deliveries()) == 1
