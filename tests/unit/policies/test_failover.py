from __future__ import annotations

import json

import pytest

from policies.failover import (
    FailoverPolicy,
    FailoverSettings,
    HealthChanged,
    Switched,
    SwitchReason,
    may_retry_elsewhere,
    snapshot_from_json,
    snapshot_to_json,
)
from policies.outcome import Failure, Outcome
from tests.support.clock import FakeClock

CONNECT_TIMEOUT = Outcome.account_failure(Failure.CONNECT_TIMEOUT)
REFUSED = Outcome.account_failure(Failure.CONNECT, "connection refused")
OK = Outcome.ok()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def policy(clock: FakeClock) -> FailoverPolicy:
    return FailoverPolicy(accounts=["primary", "secondary", "tertiary"], settings=FailoverSettings(),
                          clock=clock)


def eject(policy: FailoverPolicy, account: str) -> None:
    policy.record(account, REFUSED)
    assert not policy.status()["accounts"][account]["healthy"]


def test_primary_is_active_at_start(policy: FailoverPolicy) -> None:
    assert policy.active == "primary"
    assert policy.candidates() == ["primary", "secondary", "tertiary"]


def test_primary_ejected_after_three_connect_timeouts_in_window(policy: FailoverPolicy,
                                                               clock: FakeClock) -> None:
    assert policy.record("primary", CONNECT_TIMEOUT) is None
    clock.advance(4)
    assert policy.record("primary", CONNECT_TIMEOUT) is None
    clock.advance(4)
    event = policy.record("primary", CONNECT_TIMEOUT)
    assert event == Switched("primary", "secondary", SwitchReason.FAILOVER, "connect_timeout")
    assert policy.active == "secondary"


def test_failures_outside_window_do_not_eject(policy: FailoverPolicy, clock: FakeClock) -> None:
    policy.record("primary", CONNECT_TIMEOUT)
    clock.advance(6)
    policy.record("primary", CONNECT_TIMEOUT)
    clock.advance(6)
    assert policy.record("primary", CONNECT_TIMEOUT) is None  # the first has aged out of the 10 s
    assert policy.active == "primary"
    assert policy.status()["accounts"]["primary"]["failures_in_window"] == 2


def test_success_resets_failure_count(policy: FailoverPolicy) -> None:
    policy.record("primary", CONNECT_TIMEOUT)
    policy.record("primary", CONNECT_TIMEOUT)
    policy.record("primary", OK)
    policy.record("primary", CONNECT_TIMEOUT)
    assert policy.active == "primary"


def test_refused_connection_ejects_at_once(policy: FailoverPolicy) -> None:
    event = policy.record("primary", REFUSED)
    assert event == Switched("primary", "secondary", SwitchReason.FAILOVER, "connect: connection refused")


def test_ejecting_an_inactive_account_reports_ejection(policy: FailoverPolicy) -> None:
    event = policy.record("tertiary", Outcome.account_failure(Failure.DNS))
    assert event == HealthChanged("tertiary", False, "dns")
    assert policy.active == "primary"


@pytest.mark.parametrize("outcome", [Outcome.throttled(retry_after=5), Outcome.session_invalid(),
                                     Outcome.client_error("bad request")])
def test_throttled_is_not_a_health_signal(policy: FailoverPolicy, outcome: Outcome) -> None:
    policy.record("primary", CONNECT_TIMEOUT)
    policy.record("primary", CONNECT_TIMEOUT)
    for _ in range(10):
        assert policy.record("primary", outcome) is None
    assert policy.active == "primary"
    assert policy.status()["accounts"]["primary"]["failures_in_window"] == 2  # neither reset nor counted


def test_ejected_account_stays_ejected_after_window(policy: FailoverPolicy, clock: FakeClock) -> None:
    eject(policy, "primary")
    clock.advance(3600)
    assert policy.active == "secondary"


def test_successful_probe_restores_and_starts_healthy_since(policy: FailoverPolicy, clock: FakeClock) -> None:
    eject(policy, "primary")
    clock.advance(5)
    assert policy.record_probe("primary", True) == HealthChanged("primary", True, "probe")
    primary = policy.status()["accounts"]["primary"]
    assert primary["healthy"] and primary["state"] == "recovering"
    assert primary["healthy_since"] == clock.now


def test_failback_waits_for_hold_time(policy: FailoverPolicy, clock: FakeClock) -> None:
    eject(policy, "primary")
    clock.advance(5)
    policy.record_probe("primary", True)
    clock.advance(29.9)
    assert policy.active == "secondary"
    assert policy.record("secondary", OK) is None
    clock.advance(0.1)
    assert policy.active == "primary"
    assert policy.record("secondary", OK) == Switched("secondary", "primary", SwitchReason.FAILBACK)
    assert policy.status()["accounts"]["primary"]["state"] == "healthy"


def test_no_flapping_when_primary_alternates(policy: FailoverPolicy, clock: FakeClock) -> None:
    eject(policy, "primary")
    actives = []
    for _ in range(10):  # up for 20 s, down again, never the 30 s hold time
        clock.advance(5)
        policy.record_probe("primary", True)
        clock.advance(20)
        actives.append(policy.active)
        policy.record("primary", REFUSED)  # tried as a candidate, refused again
        actives.append(policy.active)
    assert set(actives) == {"secondary"}


def test_recovering_primary_is_next_candidate(policy: FailoverPolicy, clock: FakeClock) -> None:
    eject(policy, "primary")
    policy.record_probe("primary", True)
    assert policy.candidates() == ["secondary", "primary", "tertiary"]


def test_candidates_put_ejected_accounts_last(policy: FailoverPolicy) -> None:
    eject(policy, "secondary")
    assert policy.candidates() == ["primary", "tertiary", "secondary"]


def test_when_all_ejected_oldest_ejection_is_tried(policy: FailoverPolicy, clock: FakeClock) -> None:
    eject(policy, "secondary")
    clock.advance(1)
    eject(policy, "primary")
    clock.advance(1)
    event = policy.record("tertiary", REFUSED)
    assert event == Switched("tertiary", "secondary", SwitchReason.LAST_RESORT, "connect: connection refused")
    assert policy.candidates() == ["secondary", "primary", "tertiary"]


def test_failed_last_resort_moves_to_next_oldest(policy: FailoverPolicy, clock: FakeClock) -> None:
    for account in ("primary", "secondary", "tertiary"):
        eject(policy, account)
        clock.advance(1)
    assert policy.active == "primary"
    policy.record("primary", CONNECT_TIMEOUT)
    assert policy.active == "secondary"


def test_successful_last_resort_call_restores_account(policy: FailoverPolicy, clock: FakeClock) -> None:
    for account in ("primary", "secondary", "tertiary"):
        eject(policy, account)
    assert policy.record("primary", OK) == HealthChanged("primary", True, "traffic")
    assert policy.status()["accounts"]["primary"]["healthy"]
    assert policy.active == "primary"


def test_failed_probe_of_ejected_account_keeps_it_out(policy: FailoverPolicy, clock: FakeClock) -> None:
    eject(policy, "primary")
    clock.advance(5)
    assert policy.record_probe("primary", False, "HTTP 503") is None
    primary = policy.status()["accounts"]["primary"]
    assert not primary["healthy"]
    assert primary["last_failure"] == "probe: HTTP 503"


def test_consecutive_failed_probes_eject_an_idle_account(policy: FailoverPolicy) -> None:
    assert policy.record_probe("tertiary", False) is None
    assert policy.record_probe("tertiary", False) == HealthChanged("tertiary", False, "probe")


def test_probes_due_at_start_then_every_interval(policy: FailoverPolicy, clock: FakeClock) -> None:
    assert policy.probe_due("secondary")
    policy.record_probe("secondary", True)
    assert not policy.probe_due("secondary")
    assert policy.next_probe_at("secondary") == clock.now + 5
    clock.advance(5)
    assert policy.probe_due("secondary")


def test_real_success_postpones_probe(policy: FailoverPolicy, clock: FakeClock) -> None:
    clock.advance(4)
    policy.record("primary", OK)
    clock.advance(4)
    assert not policy.probe_due("primary")


def test_ejected_account_probed_after_interval(policy: FailoverPolicy, clock: FakeClock) -> None:
    policy.record_probe("primary", True)
    clock.advance(1)
    eject(policy, "primary")
    assert not policy.probe_due("primary")
    clock.advance(5)
    assert policy.probe_due("primary")


def test_override_pins_traffic_even_to_ejected_account(policy: FailoverPolicy) -> None:
    eject(policy, "tertiary")
    assert policy.set_override("tertiary") == Switched("primary", "tertiary", SwitchReason.OVERRIDE)
    assert policy.active == "tertiary"
    assert policy.candidates()[0] == "tertiary"
    assert policy.status()["override"] == "tertiary"


def test_clearing_override_returns_to_automatic(policy: FailoverPolicy) -> None:
    policy.set_override("secondary")
    eject(policy, "secondary")
    assert policy.active == "secondary"
    assert policy.set_override(None) == Switched("secondary", "primary", SwitchReason.OVERRIDE)
    assert policy.status()["override"] is None


def test_unknown_account_is_a_clear_error(policy: FailoverPolicy) -> None:
    with pytest.raises(ValueError, match=r"unknown account 'nope': expected one of \['primary'"):
        policy.set_override("nope")
    with pytest.raises(ValueError, match="unknown account"):
        policy.record("nope", OK)


def test_status_is_json_serialisable(policy: FailoverPolicy, clock: FakeClock) -> None:
    policy.record("primary", CONNECT_TIMEOUT)
    status = json.loads(json.dumps(policy.status()))
    assert status["active"] == "primary"
    assert list(status["accounts"]) == ["primary", "secondary", "tertiary"]
    assert status["accounts"]["primary"]["last_failure"] == "connect_timeout"
    assert status["accounts"]["primary"]["failures_in_window"] == 1
    assert status["accounts"]["secondary"]["state"] == "healthy"


def test_snapshot_restores_into_another_replica(policy: FailoverPolicy, clock: FakeClock) -> None:
    eject(policy, "primary")
    policy.set_override("tertiary")
    replica = FailoverPolicy(accounts=["primary", "secondary", "tertiary"], clock=clock)
    replica.restore(policy.snapshot())
    assert replica.status() == policy.status()
    replica.set_override(None)
    assert replica.active == "secondary"


def test_restore_rejects_other_accounts(policy: FailoverPolicy) -> None:
    other = FailoverPolicy(accounts=["a", "b"])
    with pytest.raises(ValueError, match="snapshot accounts"):
        policy.restore(other.snapshot())


@pytest.mark.parametrize("accounts", [[], ["a", "a"]])
def test_accounts_must_be_distinct_and_present(accounts: list[str]) -> None:
    with pytest.raises(ValueError, match="at least one account"):
        FailoverPolicy(accounts=accounts)


@pytest.mark.parametrize("failure", [Failure.CONNECT, Failure.TLS, Failure.DNS, Failure.CONNECT_TIMEOUT,
                                     Failure.UNAVAILABLE])
def test_unsent_failures_may_go_elsewhere(failure: Failure) -> None:
    assert may_retry_elsewhere(Outcome.account_failure(failure), idempotency_key=False)


@pytest.mark.parametrize("failure", [Failure.READ_TIMEOUT, Failure.SERVER_ERROR, Failure.UNRECOVERABLE])
def test_ambiguous_failures_go_elsewhere_only_with_idempotency_key(failure: Failure) -> None:
    assert not may_retry_elsewhere(Outcome.account_failure(failure), idempotency_key=False)
    assert may_retry_elsewhere(Outcome.account_failure(failure), idempotency_key=True)


@pytest.mark.parametrize("outcome", [Outcome.ok(), Outcome.throttled(1.0), Outcome.session_invalid(),
                                     Outcome.client_error()])
def test_only_account_failures_go_elsewhere(outcome: Outcome) -> None:
    assert not may_retry_elsewhere(outcome, idempotency_key=True)


def test_failover_prefers_stable_account_over_recovering_primary(policy: FailoverPolicy,
                                                                 clock: FakeClock) -> None:
    eject(policy, "primary")
    policy.record_probe("primary", True)  # recovering: healthy for less than hold_time
    event = policy.record("secondary", REFUSED)
    assert event == Switched("secondary", "tertiary", SwitchReason.FAILOVER, "connect: connection refused")
    assert policy.candidates() == ["tertiary", "primary", "secondary"]


def test_recovering_primary_beats_nothing(clock: FakeClock) -> None:
    policy = FailoverPolicy(accounts=["primary", "secondary"], clock=clock)
    eject(policy, "primary")
    policy.record_probe("primary", True)
    event = policy.record("secondary", REFUSED)
    assert event == Switched("secondary", "primary", SwitchReason.FAILOVER, "connect: connection refused")


def test_snapshot_survives_json_for_another_replica(policy: FailoverPolicy, clock: FakeClock) -> None:
    for _ in range(3):
        policy.record("primary", Outcome.account_failure(Failure.CONNECT_TIMEOUT))
    policy.set_override("tertiary")
    text = snapshot_to_json(policy.snapshot())
    other = FailoverPolicy(accounts=["primary", "secondary", "tertiary"], settings=FailoverSettings(), clock=clock)
    other.restore(snapshot_from_json(text))
    assert other.snapshot() == policy.snapshot()
    assert other.status() == policy.status()
    with pytest.raises(ValueError):
        snapshot_from_json('{"current": "primary"}')
