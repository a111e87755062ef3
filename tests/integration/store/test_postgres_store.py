"""What only the PostgreSQL store promises: replicas sharing one database, outages, URLs and secrets."""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import pytest

from gateway.core.outbox import Delivered, DeliveryResult, OutboxWorker
from gateway.store import OutboxItem, OutboxStatus, Store, StoreError, open_store
from tests.support.clock import FakeClock
from tests.support.servers import async_wait_until
from tests.support.stores import connect_admin, make_item, postgres_schema, wait_for_item, with_query
from tests.support.tcp_proxy import tcp_proxy

PASSWORD = "s3cret-Pa55word"  # trust auth ignores it; it must still never show


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with postgres_schema() as url:
        yield url


@pytest.fixture
async def replicas(pg_url: str, clock: FakeClock) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one database, as two gateway replicas would open them."""
    a = await open_store(pg_url, clock=clock)
    b = await open_store(pg_url, clock=clock)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


def _netloc_replaced(url: str, *, port: int, password: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.username}:{password}@127.0.0.1:{port}").geturl()


async def _lease_until_empty(store: Store, owner: str, now: float, limit: int) -> list[OutboxItem]:
    leased: list[OutboxItem] = []
    while batch := await store.lease_due(owner, now, 30.0, limit):
        leased.extend(batch)
        await asyncio.sleep(0)  # let the other leasers in between batches
    return leased


async def test_two_replicas_leasing_at_once_never_get_the_same_item(
        replicas: tuple[Store, Store], clock: FakeClock) -> None:
    a, b = replicas
    enqueued = set(await asyncio.gather(*(a.enqueue(make_item(clock())) for _ in range(400))))

    for round_number in (1, 2):  # round 2: every lease has expired and is taken over
        batches = await asyncio.gather(*(
            _lease_until_empty(store, f"{name}-{n}", clock(), 7)
            for n in range(6) for name, store in (("a", a), ("b", b))))
        leased = [item for batch in batches for item in batch]
        assert len(leased) == len({item.id for item in leased}) == len(enqueued)
        assert {item.id for item in leased} == enqueued
        assert {item.attempts for item in leased} == {round_number}
        by_replica = collections.Counter(item.lease_owner.split("-")[0] for item in leased)  # type: ignore[union-attr]
        assert by_replica["a"] > 0 and by_replica["b"] > 0, by_replica
        clock.advance(30.0)


async def test_a_worker_on_each_replica_delivers_a_shared_outbox_exactly_once(
        replicas: tuple[Store, Store], clock: FakeClock) -> None:
    delivered_by: dict[str, list[str]] = {"replica-a": [], "replica-b": []}

    def deliverer(owner: str):  # type: ignore[no-untyped-def]
        async def deliver(item: OutboxItem) -> DeliveryResult:
            await asyncio.sleep(0.001)  # a real send yields; let the other replica lease meanwhile
            delivered_by[owner].append(item.id)
            return Delivered(200, account="primary")
        return deliver

    a, b = replicas
    ids = set(await asyncio.gather(*(a.enqueue(make_item(clock())) for _ in range(300))))
    workers = [OutboxWorker(store=store, deliver=deliverer(owner), owner=owner, clock=clock, concurrency=8,
                            poll_interval=0.05)
               for owner, store in (("replica-a", a), ("replica-b", b))]
    try:
        for worker in workers:
            await worker.start()
        await async_wait_until(lambda: sum(map(len, delivered_by.values())) >= len(ids), timeout=30.0,
                               message="every item delivered")
        for worker in workers:
            await worker.stop()
    finally:
        for worker in workers:
            await worker.stop()

    sends = collections.Counter(delivered_by["replica-a"] + delivered_by["replica-b"])
    assert set(sends) == ids
    assert set(sends.values()) == {1}, "an item was sent twice"
    assert delivered_by["replica-a"] and delivered_by["replica-b"], "one replica did all the work"
    assert await a.depth() == 0
    assert {item.status for item in await b.list(limit=1000)} == {OutboxStatus.DELIVERED}


async def test_lease_skips_items_another_transaction_holds_instead_of_waiting(
        pg_url: str, clock: FakeClock) -> None:
    leaser = await open_store(pg_url, clock=clock)
    admin = await connect_admin()
    try:
        first = await leaser.enqueue(make_item(clock()))
        second = await leaser.enqueue(make_item(clock()))
        schema = dict(parse_qsl(urlsplit(pg_url).query))["search_path"]
        async with admin.transaction():
            await admin.execute(f"SELECT * FROM {schema}.outbox WHERE id = $1 FOR UPDATE", first)
            leased = await asyncio.wait_for(leaser.lease_due("w", clock(), 30.0, 10), timeout=5.0)
            assert [item.id for item in leased] == [second]
        [later] = await leaser.lease_due("w", clock(), 30.0, 10)
        assert later.id == first
    finally:
        await admin.close()
        await leaser.close()


async def test_an_outage_fails_calls_and_ping_then_the_pool_reconnects_and_the_worker_resumes(
        pg_url: str, clock: FakeClock) -> None:
    host = urlsplit(pg_url)
    async with tcp_proxy(host.hostname or "127.0.0.1", host.port or 5432) as proxy:
        replica = await open_store(_netloc_replaced(pg_url, port=proxy.port, password=PASSWORD), clock=clock)
        other = await open_store(pg_url, clock=clock)  # a replica that still reaches the database
        delivered: list[str] = []

        async def deliver(item: OutboxItem) -> DeliveryResult:
            delivered.append(item.id)
            return Delivered(200)

        worker = OutboxWorker(store=replica, deliver=deliver, owner="cut-off", clock=clock, poll_interval=0.05)
        try:
            before = await replica.enqueue(make_item(clock()))
            await replica.ping()
            await worker.start()
            await wait_for_item(replica, before, lambda i: i.status is OutboxStatus.DELIVERED,
                                message="delivery before the outage")

            await proxy.cut()
            for call in (replica.ping(), replica.enqueue(make_item(clock())), replica.get(before)):
                with pytest.raises(StoreError) as raised:
                    await call
                assert PASSWORD not in str(raised.value)
                assert PASSWORD not in repr(raised.value.__cause__)
            during = await other.enqueue(make_item(clock()))
            await asyncio.sleep(0.2)  # the worker's leases fail meanwhile; it must keep running
            assert worker.running and delivered == [before]

            await proxy.restore()
            await replica.ping()
            worker.kick()
            await wait_for_item(replica, during, lambda i: i.status is OutboxStatus.DELIVERED,
                                message="delivery after the outage")
            assert delivered == [before, during]
        finally:
            await worker.stop()
            await replica.close()
            await other.close()


async def test_connections_the_server_closed_are_replaced_at_the_next_call(pg_url: str, clock: FakeClock) -> None:
    name = f"aftm-test-{uuid.uuid4().hex[:8]}"
    store = await open_store(with_query(pg_url, application_name=name), clock=clock)
    admin = await connect_admin()
    try:
        item_id = await store.enqueue(make_item(clock()))
        # What a server restart does to every client: terminate the backends, close the sockets.
        assert await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", name) >= 1
        for _ in range(500):
            if not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # let the client read the server's goodbye

        await store.ping()
        assert (await store.get(item_id)) is not None
    finally:
        await admin.close()
        await store.close()


async def test_an_unreachable_database_is_a_store_error_without_the_password() -> None:
    refused = _netloc_replaced("postgresql://gw@127.0.0.1/gw", port=1, password=PASSWORD)
    for url in (refused, f"postgresql://gw@127.0.0.1:1/gw?password={PASSWORD}"):
        with pytest.raises(StoreError, match="cannot connect") as raised:
            await open_store(url)
        assert PASSWORD not in str(raised.value)
        assert raised.value.__cause__ is None and raised.value.__suppress_context__


async def test_a_wrong_database_name_is_a_store_error_without_the_password(pg_url: str) -> None:
    parts = urlsplit(pg_url)
    url = parts._replace(netloc=f"{parts.username}:{PASSWORD}@{parts.hostname}:{parts.port or 5432}",
                         path="/no_such_database_here").geturl()
    with pytest.raises(StoreError, match="no_such_database_here") as raised:
        await open_store(url)
    assert PASSWORD not in str(raised.value)


@pytest.mark.parametrize("scheme", ["postgres", "postgresql+asyncpg"])
async def test_other_spellings_of_the_scheme_open_the_same_store(pg_url: str, scheme: str,
                                                                 clock: FakeClock) -> None:
    first = await open_store(pg_url, clock=clock)
    same = await open_store(pg_url.replace("postgresql://", f"{scheme}://", 1), clock=clock)
    try:
        item_id = await first.enqueue(make_item(clock()))
        assert await same.get(item_id) is not None
    finally:
        await first.close()
        await same.close()
