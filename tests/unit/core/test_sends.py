"""Per-call work of the REST and SOAP routes: what the app is told when nothing can be accepted.

A key still in flight and a store that cannot take the send are refusals of their own
(`KeyInFlight`, `StoreUnavailable`), raised for the route to answer in its vendor's shape; they are
nobody's upstream outcome, so they are counted as failed requests but never reported as failed sends.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import Account
from gateway.core.loop import Call, Proxy
from gateway.core.reports import FailureReports
from gateway.core.sends import IN_PROGRESS, KeyInFlight, Sends, StoreUnavailable
from gateway.reporting.recorder import FailureReporter
from gateway.store import IdempotencyRecord, StoreError
from gateway.telemetry.otel import Telemetry
from gateway.upstreams.cluster import Cluster
from policies.backoff import RetryPolicy
from policies.failover import FailoverSettings
from policies.reauth import ReauthPolicy
from tests.support.clock import FakeClock
from tests.unit.core.fakes import FakeDialect, FakeUpstream


class FakeStore:
    """The store calls of a send; `enqueue` may fail, a key may be held by another request."""

    def __init__(self, *, enqueue_fails: bool = False, held_by_other: bool = False) -> None:
        self.enqueue_fails = enqueue_fails
        self.held_by_other = held_by_other
        self.enqueued: list[Any] = []
        self.failures: list[Any] = []

    async def idempotency_get(self, key: str) -> IdempotencyRecord | None:
        return None

    async def find_by_key(self, client: str, key: str) -> None:
        return None

    async def idempotency_put(self, key: str, status_code: int, headers: Any, body: bytes, expires_at: float, *,
                              fingerprint: str | None = None) -> IdempotencyRecord:
        holder = b"another request's claim" if self.held_by_other else body
        return IdempotencyRecord(key=key, status_code=IN_PROGRESS, headers=(), body=holder, created_at=0.0,
                                 expires_at=expires_at, fingerprint=fingerprint)

    async def idempotency_settle(self, key: str, claim: bytes, **kwargs: Any) -> bool:
        return True

    async def enqueue(self, item: Any) -> str:
        if self.enqueue_fails:
            raise StoreError("database is locked")
        self.enqueued.append(item)
        return item.id

    async def record_failure(self, failure: Any) -> None:
        self.failures.append(failure)


def _sends(store: FakeStore, *, deadline: float = 5.0, status: int = 503) -> tuple[Sends, FakeUpstream, Telemetry]:
    clock = FakeClock()
    upstream = FakeUpstream(clock)
    upstream.script = {"primary": [status] * 10}
    cluster = Cluster(members=[Account(name="primary", login_url="https://primary.test", user_name="api")],
                      settings=FailoverSettings(), upstream=upstream,  # type: ignore[arg-type]
                      probe_url=lambda a: a.login_url, store=lambda: store,  # type: ignore[arg-type, return-value]
                      replica="r", shared_key="failover")
    loop: Proxy[Account] = Proxy(cluster=cluster, upstream=upstream,  # type: ignore[arg-type]
                                 retry=RetryPolicy(attempts=1), reauth=ReauthPolicy(), retry_after=lambda r: None)
    telemetry = Telemetry.disabled()
    reports = FailureReports(recorder=FailureReporter(store=lambda: store))  # type: ignore[arg-type, return-value]
    sends = Sends(loop=loop, store=lambda: store, reports=reports, telemetry=telemetry,  # type: ignore[arg-type, return-value]
                  deadline=deadline, idempotency_window=60.0, outbox_max_age=3600.0, kick=lambda: None)
    return sends, upstream, telemetry


def _call(key: str | None = None) -> Call:
    return Call(protocol="rest", method="POST", path="/rest/api/v1.3/campaigns/c/email", headers=(), body=b"{}",
                request_id="req-1", client="app", is_send=True, idempotency_key=key)


def _failed(telemetry: Telemetry) -> float:
    value = telemetry.metrics.registry.get_sample_value(
        "aftm_requests_total", {"route": "rest", "account": "", "outcome": "failed"})
    return value or 0.0


async def test_a_send_the_store_cannot_queue_is_refused_as_store_unavailable_not_reported() -> None:
    store = FakeStore(enqueue_fails=True)
    sends, upstream, telemetry = _sends(store)
    with pytest.raises(StoreUnavailable):
        await sends.handle(_call(), FakeDialect())  # type: ignore[arg-type]
    assert upstream.tried == ["primary"] and store.enqueued == []
    assert _failed(telemetry) == 1.0
    await sends._reports.close()
    assert store.failures == []  # the app was told to retry: not a failed send of its


async def test_a_send_queued_when_no_account_takes_it() -> None:
    store = FakeStore()
    sends, _, _ = _sends(store)
    result = await sends.handle(_call(), FakeDialect())  # type: ignore[arg-type]
    assert result.status == "queued" and [item.id for item in store.enqueued] == ["req-1"]


async def test_a_key_held_by_another_request_past_the_deadline_is_key_in_flight() -> None:
    store = FakeStore(held_by_other=True)
    sends, upstream, telemetry = _sends(store, deadline=0.2)
    with pytest.raises(KeyInFlight) as raised:
        await sends.handle(_call(key="k-1"), FakeDialect())  # type: ignore[arg-type]
    assert raised.value.retry_after == 1.0
    assert upstream.tried == []  # the first request is still sending it: never a second send
    assert _failed(telemetry) == 1.0
    await sends._reports.close()
    assert store.failures == []
