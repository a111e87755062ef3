"""The forward loop, row by row of its decision table, with a fake dialect, a fake upstream and fake time.

Each test scripts what the accounts answer (a status, or a transport error), runs one app request
through the loop and checks what the app gets, which accounts were tried and how long the loop
waited. Time is a `FakeClock` that only the loop's `sleep` moves, so nothing here waits for real.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest

from gateway.config import Account
from gateway.core.loop import MIN_ATTEMPT, Call, Proxy, Result
from gateway.errors import (
    LoginRefused,
    LoginThrottled,
    TLSRefused,
    UpstreamAmbiguous,
    UpstreamError,
    UpstreamUnreachable,
)
from gateway.store import Store
from gateway.upstreams.cluster import Cluster
from policies.backoff import RetryPolicy
from policies.failover import FailoverEvent, FailoverSettings, Switched, SwitchReason
from policies.outcome import Failure, Kind
from policies.ratelimit import TokenBucket
from policies.reauth import ReauthPolicy
from tests.support.clock import FakeClock
from tests.unit.core.fakes import Answer, FakeDialect, FakeUpstream

ACCOUNTS = ("primary", "secondary")


def _call(*, is_send: bool = True, key: str | None = None) -> Call:
    return Call(protocol="rest", method="POST", path="/rest/api/v1.3/campaigns/c/email", headers=(),
                body=b"{}", request_id="req-1", client="app", is_send=is_send, idempotency_key=key,
                correlation_id="corr-1")


def _no_store() -> Store:
    raise AssertionError("the loop never touches the store")


class Rig:
    """One forward loop over `ACCOUNTS` with everything it talks to faked."""

    def __init__(self, *, retry: RetryPolicy | None = None, max_relogins: int = 2,
                 rates: dict[str, tuple[float, float]] | None = None) -> None:
        self.clock = FakeClock(1000.0)
        self.sleeps: list[float] = []
        self.events: list[FailoverEvent] = []
        self.upstream = FakeUpstream(self.clock)
        self.dialect = FakeDialect()
        self.cluster = Cluster(
            members=[Account(name=name, login_url=f"https://{name}.test", user_name="api") for name in ACCOUNTS],
            settings=FailoverSettings(), upstream=self.upstream, probe_url=lambda account: account.login_url,  # type: ignore[arg-type]
            store=_no_store, replica="test", shared_key="failover", on_switch=self.events.append, clock=self.clock)
        self.failover = self.cluster.failover
        self.buckets = self.cluster.buckets
        for name, (rate, burst) in (rates or {}).items():
            self.buckets[name] = TokenBucket(rate_per_second=rate, burst=burst, clock=self.clock)
        self.queued: list[Call] = []
        self.proxy = Proxy(
            cluster=self.cluster, upstream=self.upstream,  # type: ignore[arg-type]
            retry=retry or RetryPolicy(attempts=6, wait_initial=0.1, wait_max=5.0, jitter="none"),
            reauth=ReauthPolicy(max_relogins=max_relogins),
            retry_after=lambda r: float(r.headers["retry-after"]) if "retry-after" in r.headers else None,
            clock=self.clock, sleep=self._sleep)

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)

    async def _enqueue(self, call: Call) -> str:
        self.queued.append(call)
        return "queued-1"

    async def forward(self, call: Call | None = None, *, within: float = 30.0, queue: bool = True) -> Result:
        enqueue: Callable[[Call], Awaitable[str]] | None = self._enqueue if queue else None
        return await self.proxy.forward(call or _call(), self.dialect, deadline=self.clock() + within,  # type: ignore[arg-type]
                                        enqueue=enqueue)


# --- answered ------------------------------------------------------------------------------------


async def test_the_active_accounts_answer_is_the_apps_answer() -> None:
    rig = Rig()
    result = await rig.forward()
    assert (result.status, result.account, result.request_id) == ("answered", "primary", "req-1")
    assert result.response is not None and result.response.status_code == 200
    assert result.outcome is not None and result.outcome.kind is Kind.OK
    assert rig.upstream.tried == ["primary"] and rig.sleeps == [] and rig.queued == []


async def test_the_app_gets_the_answer_as_the_dialect_renders_it() -> None:
    rig = Rig()
    result = await rig.forward()
    assert result.response is not None and result.response.headers["x-answered-by"] == "primary"
    assert rig.dialect.answered_by == ["primary"]


async def test_a_client_error_is_the_apps_answer_and_is_not_retried() -> None:
    rig = Rig()
    rig.upstream.script["primary"] = [400]
    result = await rig.forward()
    assert (result.status, result.account) == ("answered", "primary")
    assert result.response is not None and result.response.status_code == 400
    assert result.outcome is not None and result.outcome.kind is Kind.CLIENT_ERROR
    assert rig.upstream.tried == ["primary"] and rig.sleeps == []
    assert rig.failover.status()["accounts"]["primary"]["failures_in_window"] == 0  # not a health signal


# --- a failure that sent nothing: the next account at once -------------------------------------


@pytest.mark.parametrize("answer", [
    UpstreamUnreachable("connection refused"),
    TLSRefused("below TLS 1.2"),
    UpstreamError("no such name", failure=Failure.DNS),
    502, 503, 504,
], ids=["refused", "tls", "dns", "502", "503", "504"])
async def test_a_failure_that_sent_nothing_moves_to_the_next_account_at_once(answer: Answer) -> None:
    rig = Rig()
    rig.upstream.script["primary"] = [answer]
    result = await rig.forward(_call(key=None))  # safe without an Idempotency-Key: nothing was processed
    assert (result.status, result.account) == ("answered", "secondary")
    assert rig.upstream.tried == ["primary", "secondary"]
    assert rig.sleeps == []
    assert rig.failover.status()["accounts"]["primary"]["last_failure"] is not None


async def test_a_refused_login_moves_to_the_next_account_at_once() -> None:
    rig = Rig()
    rig.dialect.login_errors["primary"] = [LoginRefused("login refused: INVALID_CREDENTIALS")]
    result = await rig.forward()
    assert (result.status, result.account) == ("answered", "secondary")
    assert rig.upstream.tried == ["secondary"] and rig.sleeps == []


async def test_a_connect_failure_ejects_the_account_and_reports_the_switch() -> None:
    rig = Rig()
    rig.upstream.script["primary"] = [UpstreamUnreachable("connection refused")]
    await rig.forward()
    assert rig.failover.active == "secondary"
    assert rig.events == [Switched("primary", "secondary", SwitchReason.FAILOVER, "connect: connection refused")]


# --- an ambiguous failure: elsewhere only with an Idempotency-Key --------------------------------


@pytest.mark.parametrize("answer", [UpstreamAmbiguous("read timeout"), 500], ids=["read-timeout", "500"])
async def test_an_ambiguous_failure_without_a_key_is_the_apps_failure_and_is_logged(
        answer: Answer, caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    rig.upstream.script["primary"] = [answer]
    with caplog.at_level(logging.WARNING):
        result = await rig.forward(_call(key=None))
    assert (result.status, result.account) == ("failed", "primary")
    assert result.outcome is not None and result.outcome.ambiguous
    assert rig.upstream.tried == ["primary"] and rig.sleeps == []
    assert rig.queued == []  # possibly processed: queueing it could send it twice
    assert any("ambiguous" in r.getMessage() and getattr(r, "request_id", None) == "req-1" for r in caplog.records)


async def test_an_ambiguous_answer_without_a_key_is_passed_to_the_app() -> None:
    rig = Rig()
    rig.upstream.script["primary"] = [500]
    result = await rig.forward(_call(key=None))
    assert result.response is not None and result.response.status_code == 500


@pytest.mark.parametrize("answer", [UpstreamAmbiguous("read timeout"), 500], ids=["read-timeout", "500"])
async def test_an_ambiguous_failure_with_a_key_moves_to_the_next_account(answer: Answer) -> None:
    rig = Rig()
    rig.upstream.script["primary"] = [answer]
    result = await rig.forward(_call(key="k-1"))
    assert (result.status, result.account) == ("answered", "secondary")
    assert rig.upstream.tried == ["primary", "secondary"] and rig.sleeps == []


# --- an invalid session: log in again and replay -----------------------------------------------


async def test_an_invalid_session_is_dropped_and_the_call_replayed_on_the_same_account() -> None:
    rig = Rig()
    rig.upstream.script["primary"] = [401]
    result = await rig.forward()
    assert (result.status, result.account) == ("answered", "primary")
    assert rig.upstream.tried == ["primary", "primary"] and rig.sleeps == []
    assert [lease.invalidated for lease in rig.dialect.leases] == [True, False]


async def test_an_account_that_keeps_refusing_fresh_sessions_is_passed_over() -> None:
    rig = Rig(max_relogins=2)
    rig.upstream.script["primary"] = [401, 401, 401]
    result = await rig.forward()
    assert (result.status, result.account) == ("answered", "secondary")
    assert rig.upstream.tried == ["primary"] * 3 + ["secondary"]  # the first try and two relogins
    assert rig.failover.active == "primary"  # an invalid session is not a health signal


async def test_the_relogin_budget_is_per_request() -> None:
    rig = Rig(max_relogins=1)
    rig.upstream.script["primary"] = [401, 200, 401, 200]
    first, second = await rig.forward(), await rig.forward()
    assert (first.account, second.account) == ("primary", "primary")
    assert rig.upstream.tried == ["primary"] * 4


# --- throttling: wait within the deadline ------------------------------------------------------


async def test_throttling_waits_as_long_as_retry_after_says_then_retries_the_same_account() -> None:
    rig = Rig()
    rig.upstream.script["primary"] = [(429, {"retry-after": "2"})]
    result = await rig.forward()
    assert (result.status, result.account) == ("answered", "primary")
    assert rig.sleeps == [2.0]
    assert [s.at for s in rig.upstream.sent] == [1000.0, 1002.0]


async def test_throttling_without_a_hint_waits_by_the_backoff_schedule() -> None:
    rig = Rig(retry=RetryPolicy(attempts=6, wait_initial=0.1, wait_max=5.0, jitter="none"))
    rig.upstream.script["primary"] = [429, 429, 429]
    result = await rig.forward()
    assert result.status == "answered"
    assert rig.sleeps == pytest.approx([0.1, 0.2, 0.4])


async def test_a_throttled_login_waits_instead_of_failing_over() -> None:
    rig = Rig()
    rig.dialect.login_errors["primary"] = [LoginThrottled("login throttled", retry_after=3.0)]
    result = await rig.forward()
    assert (result.status, result.account) == ("answered", "primary")
    assert rig.sleeps == [3.0]
    assert rig.failover.status()["accounts"]["primary"]["last_failure"] is None


async def test_a_wait_past_the_deadline_queues_the_send_without_waiting() -> None:
    rig = Rig()
    rig.upstream.script["primary"] = [(429, {"retry-after": "60"})]
    result = await rig.forward(within=10.0)
    assert (result.status, result.request_id) == ("queued", "queued-1")
    assert result.outcome is not None and result.outcome.kind is Kind.THROTTLED
    assert rig.sleeps == [] and [c.request_id for c in rig.queued] == ["req-1"]


async def test_a_wait_past_the_deadline_fails_a_call_that_is_not_a_send() -> None:
    rig = Rig()
    rig.upstream.script["primary"] = [(429, {"retry-after": "60"})]
    result = await rig.forward(_call(is_send=False), within=10.0)
    assert result.status == "failed" and rig.queued == []
    assert result.outcome is not None and result.outcome.kind is Kind.THROTTLED
    assert result.outcome.retry_after == 60.0


async def test_without_an_outbox_a_send_out_of_time_fails() -> None:
    rig = Rig()
    rig.upstream.script["primary"] = [(429, {"retry-after": "60"})]
    result = await rig.forward(within=10.0, queue=False)
    assert result.status == "failed" and rig.queued == []


# --- every account failing: back off, then all of them again -----------------------------------


async def test_when_every_account_failed_the_loop_backs_off_and_tries_them_all_again() -> None:
    rig = Rig()
    rig.upstream.script = {"primary": [503], "secondary": [503]}
    result = await rig.forward()
    assert (result.status, result.account) == ("answered", "primary")  # one 503 does not eject it
    assert rig.upstream.tried == ["primary", "secondary", "primary"]
    assert rig.sleeps == pytest.approx([0.1])


async def test_a_send_no_account_takes_within_the_attempts_is_queued() -> None:
    rig = Rig(retry=RetryPolicy(attempts=2, wait_initial=0.1, wait_max=5.0, jitter="none"))
    rig.upstream.script = {"primary": [503] * 5, "secondary": [503] * 5}
    result = await rig.forward()
    assert result.status == "queued"
    assert result.outcome is not None and result.outcome.failure is Failure.UNAVAILABLE
    assert rig.upstream.tried == ["primary", "secondary", "primary", "secondary"]
    assert rig.sleeps == pytest.approx([0.1])


async def test_a_call_no_account_takes_fails_with_the_last_answer() -> None:
    rig = Rig(retry=RetryPolicy(attempts=1, jitter="none"))
    rig.upstream.script = {"primary": [503], "secondary": [504]}
    result = await rig.forward(_call(is_send=False))
    assert result.status == "failed" and result.response is not None and result.response.status_code == 504
    assert result.outcome is not None and result.outcome.detail == "HTTP 504"


async def test_an_account_the_protocol_has_no_endpoint_on_is_passed_over_without_counting_as_failing() -> None:
    rig = Rig()
    rig.dialect.unserved = {"primary"}  # e.g. a REST-only account and a SOAP call
    rig.upstream.script = {"secondary": [503, 200]}
    result = await rig.forward()
    assert (result.status, result.account) == ("answered", "secondary")
    assert rig.upstream.tried == ["secondary", "secondary"]  # after the back-off, still not the primary
    assert rig.failover.status()["accounts"]["primary"]["failures_in_window"] == 0
    assert rig.events == []


async def test_a_call_no_account_has_an_endpoint_for_fails_at_once_and_is_never_queued() -> None:
    rig = Rig()
    rig.dialect.unserved = set(ACCOUNTS)
    result = await rig.forward()
    assert result.status == "failed" and result.response is None and rig.queued == []
    assert result.outcome is not None and result.outcome.failure is Failure.UNAVAILABLE
    assert rig.upstream.tried == [] and rig.sleeps == []


# --- the deadline --------------------------------------------------------------------------------


async def test_no_attempt_starts_with_less_than_the_minimum_left_before_the_deadline() -> None:
    rig = Rig()
    result = await rig.forward(within=MIN_ATTEMPT / 2)
    assert result.status == "queued" and result.outcome is None
    assert rig.upstream.sent == []


async def test_each_attempt_may_wait_for_its_answer_only_until_the_deadline() -> None:
    rig = Rig()
    rig.upstream.script["primary"] = [(429, {"retry-after": "4"})]
    await rig.forward(within=10.0)
    assert [s.read_timeout for s in rig.upstream.sent] == pytest.approx([10.0, 6.0])
    rig2 = Rig()
    await rig2.forward(within=100.0)
    assert [s.read_timeout for s in rig2.upstream.sent] == [FakeUpstream.read_timeout]


# --- the rate limit --------------------------------------------------------------------------------


async def test_a_rate_limited_account_waits_for_its_token_before_sending() -> None:
    rig = Rig(rates={"primary": (1.0, 1.0)})
    await rig.forward()
    await rig.forward()
    assert rig.sleeps == pytest.approx([1.0])
    assert [s.at for s in rig.upstream.sent] == pytest.approx([1000.0, 1001.0])


async def test_a_token_not_due_before_the_deadline_queues_the_send_without_taking_it() -> None:
    rig = Rig(rates={"primary": (0.01, 1.0)})
    await rig.forward()
    result = await rig.forward(within=10.0)  # the next token is 100 s away
    assert result.status == "queued" and rig.sleeps == []
    assert rig.upstream.tried == ["primary"]
    assert rig.buckets["primary"].try_reserve(1000.0) == pytest.approx(100.0)  # nothing was taken

