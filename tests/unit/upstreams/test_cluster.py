"""A cluster: its members' failover state, rate limits and health checks, shared with other replicas."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from gateway.config import Account, RateLimit
from gateway.errors import UpstreamUnreachable
from gateway.upstreams.cluster import Cluster
from policies.failover import FailoverSettings, Switched, SwitchReason
from policies.outcome import Failure, Outcome
from tests.support.clock import FakeClock
from tests.unit.core.fakes import FakeSharedStore, FakeUpstream

NAMES = ("primary", "secondary", "tertiary")


def _account(name: str, per_minute: int = 0) -> Account:
    return Account(name=name, login_url=f"https://{name}.test", user_name="api",
                   rate_limit=RateLimit(per_minute=per_minute, burst=5))


class Rig:
    def __init__(self, *, store: FakeSharedStore | None = None, replica: str = "r1", clock: FakeClock | None = None,
                 per_minute: int = 0, traffic: str = "traffic", member_word: str = "account") -> None:
        self.clock = clock or FakeClock(1000.0)
        self.store = store or FakeSharedStore()
        self.upstream = FakeUpstream(self.clock)
        self.switched: list[Switched] = []
        self.cluster = Cluster(
            members=[_account(name, per_minute if name == "primary" else 0) for name in NAMES],
            settings=FailoverSettings(probe_interval=5.0, hold_time=30.0), upstream=self.upstream,  # type: ignore[arg-type]
            probe_url=lambda account: account.login_url + "/probe", store=lambda: self.store,  # type: ignore[arg-type, return-value]
            replica=replica, shared_key="failover", traffic=traffic, member_word=member_word,
            on_switch=self.switched.append, clock=self.clock)


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the cluster's background tasks run until `condition` holds (they need a few loop turns)."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not hold in time")


def test_candidates_are_the_members_in_priority_order_with_the_ejected_last() -> None:
    rig = Rig()
    assert [m.name for m in rig.cluster.candidates()] == list(NAMES)
    rig.cluster.record("primary", Outcome.account_failure(Failure.CONNECT, "refused"))
    assert [m.name for m in rig.cluster.candidates()] == ["secondary", "tertiary", "primary"]
    assert rig.cluster.member("secondary").login_url == "https://secondary.test"


def test_a_switch_is_counted_reported_and_logged_in_the_clusters_words(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(traffic="SMS traffic", member_word="SMS upstream")
    with caplog.at_level(logging.WARNING):
        rig.cluster.record("primary", Outcome.account_failure(Failure.CONNECT, "refused"))
    assert rig.switched == [Switched("primary", "secondary", SwitchReason.FAILOVER, "connect: refused")]
    assert rig.cluster.switches == {"failover": 1} and rig.cluster.active == "secondary"
    assert "SMS traffic moved from primary to secondary (failover)" in caplog.text


def test_answers_that_are_no_health_signal_change_nothing() -> None:
    rig = Rig()
    for outcome in (Outcome.throttled(1.0), Outcome.session_invalid(), Outcome.client_error("bad")):
        rig.cluster.record("primary", outcome)
    assert rig.cluster.active == "primary" and rig.switched == []


def test_members_with_a_rate_get_a_bucket_that_start_up_may_resize() -> None:
    rig = Rig(per_minute=600)
    assert set(rig.cluster.buckets) == {"primary"}
    assert rig.cluster.bucket("primary").rate_per_second == pytest.approx(10.0)  # type: ignore[union-attr]
    assert rig.cluster.bucket("secondary") is None
    rig.cluster.set_rate("primary", rate_per_second=2.0, burst=5)
    rig.cluster.set_rate("secondary", rate_per_second=1.0, burst=3)
    assert rig.cluster.buckets["primary"].rate_per_second == 2.0
    assert (rig.cluster.buckets["secondary"].rate_per_second, rig.cluster.buckets["secondary"].burst) == (1.0, 3.0)


def test_an_override_pins_traffic_and_an_unknown_member_is_refused() -> None:
    rig = Rig()
    rig.cluster.set_override("tertiary")
    assert rig.cluster.active == "tertiary"
    assert rig.switched == [Switched("primary", "tertiary", SwitchReason.OVERRIDE)]
    with pytest.raises(ValueError, match="unknown account 'nope'"):
        rig.cluster.set_override("nope")


async def test_health_checks_eject_a_member_that_does_not_answer_and_restore_it_when_it_does() -> None:
    rig = Rig()
    rig.upstream.script["secondary"] = [UpstreamUnreachable("refused"), 503]
    await rig.cluster.start()
    try:
        await _until(lambda: sorted(rig.upstream.tried) == sorted(NAMES))  # every member is due at once
        assert all(s.request.url.path == "/probe" and s.read_timeout == 2.0 for s in rig.upstream.sent)
        rig.clock.advance(5.0)  # the next round: a second failed probe ejects (unhealthy_threshold 2)
        await _until(lambda: rig.upstream.tried.count("secondary") == 2)
        await _until(lambda: not rig.cluster.status()["accounts"]["secondary"]["healthy"])
        rig.clock.advance(5.0)
        await _until(lambda: rig.cluster.status()["accounts"]["secondary"]["healthy"])
    finally:
        await rig.cluster.close()


async def test_a_decision_is_shared_with_the_other_replicas_through_the_store() -> None:
    store, clock = FakeSharedStore(), FakeClock(1000.0)
    one, two = Rig(store=store, replica="r1", clock=clock), Rig(store=store, replica="r2", clock=clock)
    await one.cluster.start()
    await two.cluster.start()
    try:
        one.cluster.set_override("secondary")
        await _until(lambda: "failover" in store.values)
        assert store.values["failover"].replica == "r1"
        await _until(lambda: two.cluster.active == "secondary")
        assert two.switched == []  # adopted, not decided: the deciding replica counted it
    finally:
        await one.cluster.close()
        await two.cluster.close()


def test_before_start_nothing_is_published() -> None:
    rig = Rig()
    rig.cluster.set_override("secondary")  # no running loop needed: nothing goes to the store yet
    assert rig.store.values == {}
