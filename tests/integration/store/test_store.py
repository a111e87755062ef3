"""The store on every backend (a real SQLite file, a real PostgreSQL schema): restarts, leases,
idempotency, admin operations."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.store import (
    Delivered,
    ItemNotFound,
    LeaseLost,
    OutboxStatus,
    Store,
    StoreError,
    open_store,
    postgres_url,
    redact_url,
    sqlite_path,
)
from tests.support.clock import FakeClock
from tests.support.stores import make_item


async def test_enqueued_item_survives_close_and_reopen_of_the_same_store(store_url: str,
                                                                         clock: FakeClock) -> None:
    first = await open_store(store_url, clock=clock)
    item_id = await first.enqueue(make_item(clock()))
    await first.close()

    reopened = await open_store(store_url, clock=clock)
    try:
        item = await reopened.get(item_id)
        assert item is not None
        assert item.status is OutboxStatus.PENDING
        assert item.body == b'{"recipientData": []}'
        assert item.path == "/rest/api/v1.3/campaigns/welcome/email?x=1"
        assert await reopened.depth() == 1
    finally:
        await reopened.close()


async def test_enqueue_never_stores_credentials(store: Store, clock: FakeClock) -> None:
    item_id = await store.enqueue(make_item(clock(), key="k-1"))
    item = await store.get(item_id)
    assert item is not None
    assert item.headers == (("content-type", "application/json"), ("idempotency-key", "k-1"))


async def test_expired_lease_of_a_dead_worker_is_taken_over_and_not_before(store: Store,
                                                                           clock: FakeClock) -> None:
    item_id = await store.enqueue(make_item(clock()))
    [leased] = await store.lease_due("worker-a", clock(), 30.0, 10)
    assert (leased.id, leased.lease_owner, leased.attempts) == (item_id, "worker-a", 1)

    clock.advance(29.0)
    assert await store.lease_due("worker-b", clock(), 30.0, 10) == []

    clock.advance(1.0)
    [taken] = await store.lease_due("worker-b", clock(), 30.0, 10)
    assert (taken.id, taken.lease_owner, taken.attempts) == (item_id, "worker-b", 2)

    with pytest.raises(LeaseLost):
        await store.reschedule(item_id, "worker-a", clock() + 5, "late")
    with pytest.raises(LeaseLost):
        await store.mark_dead(item_id, "worker-a", "late")


async def test_concurrent_leases_never_hand_out_the_same_item(store_url: str, clock: FakeClock) -> None:
    stores = [await open_store(store_url, clock=clock) for _ in range(3)]
    try:
        for _ in range(30):
            await stores[0].enqueue(make_item(clock()))
        batches = await asyncio.gather(*(
            s.lease_due(f"worker-{n}-{i}", clock(), 30.0, 4) for i in range(4) for n, s in enumerate(stores)))
        ids = [item.id for batch in batches for item in batch]
        assert len(ids) == len(set(ids)) == 30
    finally:
        for s in stores:
            await s.close()


async def test_same_idempotency_key_enqueued_twice_is_one_item(store: Store, clock: FakeClock) -> None:
    first = await store.enqueue(make_item(clock(), key="order-42"))
    second = await store.enqueue(make_item(clock(), key="order-42"))
    other_app = await store.enqueue(make_item(clock(), key="order-42", client="app-b"))
    assert second == first
    assert other_app != first
    assert await store.depth() == 2


async def test_same_key_from_two_connections_at_once_is_one_item(store_url: str, clock: FakeClock) -> None:
    a = await open_store(store_url, clock=clock)
    b = await open_store(store_url, clock=clock)
    try:
        ids = await asyncio.gather(*(s.enqueue(make_item(clock(), key="k")) for s in (a, b, a, b, a, b)))
        assert len(set(ids)) == 1
        assert await a.depth() == 1
    finally:
        await a.close()
        await b.close()


async def test_delivered_item_keeps_its_key_and_a_dead_one_frees_it(store: Store, clock: FakeClock) -> None:
    delivered_id = await store.enqueue(make_item(clock(), key="sent"))
    dead_id = await store.enqueue(make_item(clock(), key="gave-up"))
    await store.lease_due("w", clock(), 30.0, 10)
    await store.mark_delivered(delivered_id, "w", Delivered(200, b'{"ok": true}', account="primary"))
    await store.mark_dead(dead_id, "w", "rejected")

    assert await store.enqueue(make_item(clock(), key="sent")) == delivered_id
    assert await store.enqueue(make_item(clock(), key="gave-up")) != dead_id
    # The revived dead item would now share a key with a live one: refused rather than risk two sends.
    assert await store.retry_now(dead_id) is False


async def test_idempotency_put_first_writer_wins_under_concurrency(store_url: str, clock: FakeClock) -> None:
    a = await open_store(store_url, clock=clock)
    b = await open_store(store_url, clock=clock)
    try:
        puts = [s.idempotency_put("app-a:k1", 200 + n, (("content-type", "text/plain"),),
                                  f"answer {n}".encode(), clock() + 60)
                for n, s in enumerate([a, b] * 5)]
        records = await asyncio.gather(*puts)
        assert len({(r.status_code, r.body) for r in records}) == 1
        stored = await b.idempotency_get("app-a:k1")
        assert stored == records[0]
    finally:
        await a.close()
        await b.close()


async def test_idempotency_record_expires_and_then_a_new_writer_wins(store: Store, clock: FakeClock) -> None:
    await store.idempotency_put("k", 200, (), b"first", clock() + 10)
    assert (await store.idempotency_put("k", 500, (), b"second", clock() + 10)).body == b"first"

    clock.advance(10)
    assert await store.idempotency_get("k") is None
    assert (await store.idempotency_put("k", 201, (), b"third", clock() + 10)).body == b"third"

    clock.advance(10)
    purged = await store.purge_expired(clock())
    assert purged.idempotency_records == 1


async def test_mark_delivered_is_kept_even_after_the_lease_moved_on(store: Store, clock: FakeClock) -> None:
    item_id = await store.enqueue(make_item(clock()))
    await store.lease_due("slow", clock(), 1.0, 1)
    clock.advance(2)
    await store.lease_due("fast", clock(), 30.0, 1)

    await store.mark_delivered(item_id, "slow", Delivered(200, b"x" * 5000, account="primary"))
    await store.mark_delivered(item_id, "fast", Delivered(200, b"again"))  # already delivered: no-op

    item = await store.get(item_id)
    assert item is not None and item.status is OutboxStatus.DELIVERED
    assert item.result is not None
    assert (item.result.status_code, item.result.account, len(item.result.body)) == (200, "primary", 2048)
    assert item.lease_owner is None


async def test_release_retry_now_drop_and_gauges(store: Store, clock: FakeClock) -> None:
    old = await store.enqueue(make_item(clock()))
    clock.advance(100)
    young = await store.enqueue(make_item(clock()))
    assert await store.oldest_pending_age(clock()) == 100
    assert await store.lease_due("w", clock(), 30.0, 10) != []
    assert await store.next_due() == clock() + 30

    assert await store.release_leases("w") == 2
    assert {i.status for i in await store.list()} == {OutboxStatus.PENDING}

    await store.lease_due("w", clock(), 30.0, 1)
    await store.reschedule(old, "w", clock() + 500, "throttled")
    assert await store.retry_now(old) is True
    assert (await store.get(old)).next_attempt_at == clock()  # type: ignore[union-attr]
    assert [i.id for i in await store.list(OutboxStatus.PENDING)] == [old, young]

    assert await store.drop(young) is True
    assert await store.drop(young) is False
    with pytest.raises(ItemNotFound):
        await store.mark_delivered(young, "w", Delivered(200))
    assert await store.depth() == 1


async def test_a_dead_item_revived_gets_its_lifetime_again(store: Store, clock: FakeClock) -> None:
    item_id = await store.enqueue(make_item(clock(), max_age=60))
    await store.lease_due("w", clock(), 30.0, 1)
    await store.mark_dead(item_id, "w", "past its deadline")
    clock.advance(1000)

    assert await store.retry_now(item_id) is True
    item = await store.get(item_id)
    assert item is not None
    assert item.status is OutboxStatus.PENDING
    assert (item.next_attempt_at, item.expires_at) == (clock(), clock() + 60)


async def test_finished_items_are_purged_only_when_asked(store: Store, clock: FakeClock) -> None:
    item_id = await store.enqueue(make_item(clock()))
    await store.lease_due("w", clock(), 30.0, 1)
    await store.mark_delivered(item_id, "w", Delivered(202))
    clock.advance(10)
    assert (await store.purge_expired(clock())).outbox_items == 0
    assert (await store.purge_expired(clock(), finished_before=clock())).outbox_items == 1
    assert await store.get(item_id) is None


def test_store_urls_name_a_sqlite_file_or_a_postgresql_database() -> None:
    assert sqlite_path("sqlite:///data/gw.db") == Path("data/gw.db")
    assert sqlite_path("sqlite:////var/lib/gw.db") == Path("/var/lib/gw.db")
    assert sqlite_path("/var/lib/gw.db") == Path("/var/lib/gw.db")
    with pytest.raises(ConfigError, match="PostgreSQL URL") as raised:
        sqlite_path("postgresql://gw:hunter2@db/gw")
    assert "hunter2" not in str(raised.value)
    for url in ("sqlite:///:memory:", ":memory:", "sqlite://", "mysql://db/gw"):
        with pytest.raises(ConfigError):
            sqlite_path(url)
    with pytest.raises(ConfigError) as raised:
        sqlite_path("mysql://gw:hunter2@db/gw")
    assert "hunter2" not in str(raised.value)

    assert postgres_url("sqlite:///data/gw.db") is None
    assert postgres_url("/var/lib/gw.db") is None
    for scheme in ("postgresql", "postgres", "postgresql+asyncpg", "POSTGRESQL+psycopg"):
        assert postgres_url(f"{scheme}://gw@db:5433/gw?sslmode=require") == "postgresql://gw@db:5433/gw?sslmode=require"


def test_redacted_urls_show_no_password() -> None:
    assert redact_url("postgresql://gw:hunter2@db/gw") == "postgresql://gw:***@db/gw"
    assert redact_url("postgresql://gw:hun%40ter2@db/gw") == "postgresql://gw:***@db/gw"
    assert "hunter2" not in redact_url("postgresql://gw@db/gw?sslmode=require&password=hunter2")
    assert "hunter2" not in redact_url("postgresql://gw:hunter2@[::1/gw")  # unparseable
    assert redact_url("postgresql://gw@db/gw?search_path=s") == "postgresql://gw@db/gw?search_path=s"


async def test_closed_store_refuses_writes(store_url: str) -> None:
    store = await open_store(store_url)
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.enqueue(make_item(0.0))


async def test_a_closed_store_answers_with_a_store_error(store_url: str, clock: FakeClock) -> None:
    closed = await open_store(store_url, clock=clock)
    await closed.close()
    with pytest.raises(StoreError, match="closed"):
        await closed.get("anything")
    with pytest.raises(StoreError, match="closed"):
        await closed.ping()


async def test_shared_state_keeps_the_latest_write(store: Store) -> None:
    assert await store.shared_get("failover") is None
    await store.shared_put("failover", '{"a": 1}', updated_at=100.0, replica="r1")
    await store.shared_put("failover", '{"a": 0}', updated_at=99.0, replica="r2")  # late and stale: ignored
    latest = await store.shared_get("failover")
    assert latest is not None and (latest.value, latest.updated_at, latest.replica) == ('{"a": 1}', 100.0, "r1")
    await store.shared_put("failover", '{"a": 2}', updated_at=101.0, replica="r2")
    latest = await store.shared_get("failover")
    assert latest is not None and (latest.value, latest.replica) == ('{"a": 2}', "r2")


async def test_an_idempotency_claim_is_settled_or_released_only_by_its_holder(store: Store, clock: FakeClock) -> None:
    claim = await store.idempotency_put("app:k", 0, (), b"mine", clock() + 10)
    assert claim.status_code == 0 and claim.body == b"mine"
    assert (await store.idempotency_put("app:k", 0, (), b"theirs", clock() + 10)).body == b"mine"
    assert await store.idempotency_settle("app:k", b"theirs", status_code=200, body=b"x") is False
    assert await store.idempotency_settle("app:k", b"mine", status_code=200, headers=(("content-type", "a/b"),),
                                          body=b"answer", expires_at=clock() + 100) is True
    final = await store.idempotency_get("app:k")
    assert final is not None and (final.status_code, final.body) == (200, b"answer")
    assert await store.idempotency_settle("app:k", b"mine", status_code=None) is False  # settled: no claim left
    await store.idempotency_put("app:other", 0, (), b"mine", clock() + 10)
    assert await store.idempotency_settle("app:other", b"mine", status_code=None) is True
    assert await store.idempotency_get("app:other") is None
