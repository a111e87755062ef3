"""Fault control: what the account does when told to misbehave, and the control API that tells it."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from gateway_tools.simulator.server import SimulatedAccount
from tests.integration.simulator.conftest import rest_login, trigger_body
from tests.support.servers import wait_until


def _send(http: httpx.Client, account: SimulatedAccount, token: str, *, headers: dict[str, str] | None = None,
          **kwargs: Any) -> httpx.Response:
    return http.post(f"{account.url}/rest/api/v1.3/campaigns/WELCOME/email", json=trigger_body("a@example.com"),
                     headers={"Authorization": token, **(headers or {})}, **kwargs)


def test_throttle_answers_api_limit_exceeded_with_retry_after_then_recovers(account: SimulatedAccount,
                                                                           http: httpx.Client) -> None:
    token = rest_login(http, account.url)
    account.throttle(2, retry_after="7")

    throttled = [_send(http, account, token) for _ in range(2)]
    after = _send(http, account, token)

    assert [(r.status_code, r.json()["errorCode"], r.headers.get("retry-after")) for r in throttled] == [
        (429, "API_LIMIT_EXCEEDED", "7")] * 2
    assert after.status_code == 200
    assert len(account.deliveries()) == 1
    assert account.stats()["calls_by_status"] == {"200": 2, "429": 2}


def test_fetching_the_wsdl_and_its_schemas_takes_none_of_the_throttled_calls(account: SimulatedAccount,
                                                                            http: httpx.Client) -> None:
    # A gateway refreshes these documents in the background: they must not eat the calls a test throttles.
    token = rest_login(http, account.url)
    account.throttle(1, retry_after="1")
    schema = "/webservices/services/ResponsysWSService/_resources_/xsd/ResponsysWSTypes_Schema.xsd"
    documents = [http.get(account.url + path) for path in ("/webservices/wsdl/ResponsysWS_Level1.wsdl", schema)]
    assert [d.status_code for d in documents] == [200, 200]
    assert _send(http, account, token).status_code == 429


def test_throttle_through_the_control_api_with_another_status(account: SimulatedAccount,
                                                              http: httpx.Client) -> None:
    token = rest_login(http, account.url)

    control = http.post(f"{account.control_url}/throttle", json={"count": 1, "status": 403})
    throttled = _send(http, account, token)

    assert control.status_code == 200
    assert (throttled.status_code, throttled.json()["errorCode"]) == (403, "API_LIMIT_EXCEEDED")
    assert "retry-after" not in throttled.headers


def test_unrecoverable_answers_500_for_the_next_calls_only(account: SimulatedAccount,
                                                           http: httpx.Client) -> None:
    token = rest_login(http, account.url)
    account.unrecoverable(1)

    failed, after = _send(http, account, token), _send(http, account, token)

    assert (failed.status_code, failed.json()["errorCode"]) == (500, "UNRECOVERABLE_EXCEPTION")
    assert after.status_code == 200


def test_http503_mode_answers_every_call_with_503(account: SimulatedAccount, http: httpx.Client) -> None:
    token = rest_login(http, account.url)
    account.set_mode("http503")

    answers = [_send(http, account, token), http.post(f"{account.url}/rest/api/v1.3/auth/token", data={})]

    assert [a.status_code for a in answers] == [503, 503]
    assert set(answers[0].json()) == {"type", "title", "errorCode", "detail", "errorDetails"}


def test_refuse_closes_the_account_port_while_the_control_port_answers(account: SimulatedAccount,
                                                                       http: httpx.Client) -> None:
    port = account.port
    token = rest_login(http, account.url)

    assert http.post(f"{account.control_url}/mode", json={"mode": "refuse"}).json() == {"mode": "refuse"}
    with pytest.raises(httpx.ConnectError):
        _send(http, account, token)
    health = http.get(f"{account.control_url}/health")
    http.post(f"{account.control_url}/mode", json={"mode": "ok"})
    recovered = _send(http, account, token)

    assert health.status_code == 200
    assert account.port == port
    assert recovered.status_code == 200


def test_hang_holds_the_request_until_the_mode_changes(account: SimulatedAccount, http: httpx.Client) -> None:
    token = rest_login(http, account.url)
    account.set_mode("hang")
    with pytest.raises(httpx.ReadTimeout):
        _send(http, account, token, timeout=0.3)
    held: dict[str, httpx.Response] = {}

    def held_call() -> None:
        with httpx.Client(trust_env=False, timeout=10) as own:
            held["answer"] = _send(own, account, token)

    thread = threading.Thread(target=held_call)
    thread.start()
    wait_until(lambda: account.stats()["held_requests"] >= 1, message="the request to be held")
    assert "answer" not in held
    account.set_mode("ok")
    thread.join(timeout=10)

    assert held["answer"].status_code == 200


def test_reset_drops_the_connection_without_an_answer(account: SimulatedAccount, http: httpx.Client) -> None:
    token = rest_login(http, account.url)
    account.set_mode("reset")

    with pytest.raises(httpx.TransportError) as raised:
        _send(http, account, token)

    assert not isinstance(raised.value, httpx.TimeoutException)
    assert account.deliveries() == []


def test_latency_delays_each_answer(account: SimulatedAccount, http: httpx.Client) -> None:
    token = rest_login(http, account.url)
    http.post(f"{account.control_url}/latency", json={"ms": 250})

    started = time.monotonic()
    answer = _send(http, account, token)

    assert answer.status_code == 200
    assert time.monotonic() - started >= 0.25


def test_control_api_lists_clears_deliveries_and_resets(account: SimulatedAccount, http: httpx.Client) -> None:
    token = rest_login(http, account.url)
    _send(http, account, token, headers={"Idempotency-Key": "k1"})
    account.throttle(5)

    listed = http.get(f"{account.control_url}/deliveries").json()
    stats = http.get(f"{account.control_url}/stats").json()
    cleared = http.delete(f"{account.control_url}/deliveries").json()
    http.post(f"{account.control_url}/invalidate")
    invalid = _send(http, account, token)
    reset = http.post(f"{account.control_url}/reset").json()

    assert [(d["operation"], d["idempotency_key"], d["account"]) for d in listed] == [
        ("triggerEmail", "k1", "primary")]
    assert stats["rest_logins"] == 1
    assert cleared == []
    assert invalid.status_code == 429  # throttling answers before the token is even looked at
    assert reset["rest_logins"] == 0 and reset["mode"] == "ok" and reset["calls_by_status"] == {}
    assert rest_login(http, account.url) and account.state.take_fault() is None


def test_control_api_rejects_unknown_modes(account: SimulatedAccount, http: httpx.Client) -> None:
    answer = http.post(f"{account.control_url}/mode", json={"mode": "explode"})

    assert answer.status_code == 400 and "mode must be one of" in answer.json()["error"]
