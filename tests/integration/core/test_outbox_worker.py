"""The outbox worker against a real store of each backend, with a fake clock and a scripted `deliver`."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gateway.core.outbox import (
    Delivered,
    DeliveryResult,
    FailedPermanently,
    OutboxWorker,
    Retry,
    RetryAfter,
)
from gateway.store import OutboxItem, OutboxStatus, Store, open_store
from policies.backoff import RetryPolicy
from tests.support.clock import FakeClock, PinnedRandom
from tests.support.servers import async_wait_until
from tests.support.stores import make_item, wait_for_item

Deliver = Callable[[OutboxItem], Awaitable[DeliveryResult]]


@pytest.fixture
async def workers(store: Store, clock: FakeClock) -> AsyncIterator[Callable[..., OutboxWorker]]:
    """Build started-on-demand workers on the test store; every one is stopped at teardown."""
    built: list[OutboxWorker] = []

    def build(deliver: Deliver, *, on: Store | None = None, **options: Any) -> OutboxWorker:
        options.setdefault("owner", f"worker-{len(built)}")
        options.setdefault("poll_interval", 60.0)  # progress must come from due times and kicks
        worker = OutboxWorker(store=on or store, deliver=deliver, clock=clock, **options)
        built.append(worker)
        return worker

    yield build
    for worker in built:
        await worker.stop()


def retried(attempts: int) -> Callable[[OutboxItem], bool]:
    """The item is back to pending after its `attempts`-th try."""
    return lambda item: item.attempts == attempts and item.status is OutboxStatus.PENDING


def scripted(*results: DeliveryResult) -> tuple[list[OutboxItem], Deliver]:
    calls: list[OutboxItem] = []

    async def deliver(item: OutboxItem) -> DeliveryResult:
        calls.append(item)
        return results[min(len(calls), len(results)) - 1]

    return calls, deliver


async def test_item_retried_twice_is_delivered_on_the_third_attempt_with_growing_delays(
        store: Store, clock: FakeClock, workers: Callable[..., OutboxWorker]) -> None:
    calls, deliver = scripted(Retry("503 from primary"), Retry("503 from primary"),
                              Delivered(200, b'{"ok": true}', account="secondary"))
    # Jitter pinned to its ceiling so the delays are exact: 5 s, then 10 s.
    worker = workers(deliver, retry=RetryPolicy(wait_initial=5.0, wait_max=300.0), rng=PinnedRandom(1.0))
    item_id = await store.enqueue(make_item(clock()))
    await worker.start()

    first = await wait_for_item(store, item_id, retried(1))
    assert first.next_attempt_at == clock() + 5.0
    assert first.last_error == "503 from primary"

    clock.advance(5.0)
    worker.kick()
    second = await wait_for_item(store, item_id, retried(2))
    assert second.next_attempt_at == clock() + 10.0

    clock.advance(10.0)
    worker.kick()
    done = await wait_for_item(store, item_id, lambda i: i.status is OutboxStatus.DELIVERED)
    assert done.attempts == 3 and len(calls) == 3
    assert done.result == Delivered(200, b'{"ok": true}', account="secondary")


async def test_retry_after_from_the_upstream_overrides_the_backoff(
        store: Store, clock: FakeClock, workers: Callable[..., OutboxWorker]) -> None:
    _, deliver = scripted(RetryAfter(42.0))
    worker = workers(deliver, next_delay=lambda n: 1.0)
    item_id = await store.enqueue(make_item(clock()))
    await worker.start()
    item = await wait_for_item(store, item_id, retried(1))
    assert item.next_attempt_at == clock() + 42.0
    assert item.last_error == "throttled"


async def test_item_whose_next_try_would_pass_its_deadline_is_dead(
        store: Store, clock: FakeClock, workers: Callable[..., OutboxWorker]) -> None:
    _, deliver = scripted(Retry("connect refused"))
    worker = workers(deliver, next_delay=lambda n: 100.0)
    item_id = await store.enqueue(make_item(clock(), max_age=50.0))
    await worker.start()
    item = await wait_for_item(store, item_id, lambda i: i.status is OutboxStatus.DEAD)
    assert item.attempts == 1
    assert item.last_error == "past its deadline after 1 attempts; last error: connect refused"


async def test_item_older_than_its_deadline_is_dead_without_being_sent(
        store: Store, clock: FakeClock, workers: Callable[..., OutboxWorker]) -> None:
    calls, deliver = scripted(Delivered(200))
    item_id = await store.enqueue(make_item(clock(), max_age=50.0))
    clock.advance(51.0)
    await workers(deliver).start()
    await wait_for_item(store, item_id, lambda i: i.status is OutboxStatus.DEAD)
    assert calls == []


async def test_permanent_failure_is_dead_at_once(
        store: Store, clock: FakeClock, workers: Callable[..., OutboxWorker]) -> None:
    _, deliver = scripted(FailedPermanently("400 INVALID_PARAMETER"))
    item_id = await store.enqueue(make_item(clock()))
    await workers(deliver).start()
    item = await wait_for_item(store, item_id, lambda i: i.status is OutboxStatus.DEAD)
    assert item.last_error is not None and "400 INVALID_PARAMETER" in item.last_error


async def test_a_deliver_that_raises_or_hangs_is_retried_not_lost(
        store: Store, clock: FakeClock, workers: Callable[..., OutboxWorker]) -> None:
    async def broken(item: OutboxItem) -> DeliveryResult:
        if item.attempts == 1:
            raise RuntimeError("bug in deliver")
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    worker = workers(broken, next_delay=lambda n: 1.0, lease_seconds=0.1)  # delivery timeout: 0.08 s
    item_id = await store.enqueue(make_item(clock()))
    await worker.start()
    first = await wait_for_item(store, item_id, retried(1))
    assert first.last_error == "delivery raised RuntimeError: bug in deliver"
    clock.advance(1.0)
    worker.kick()
    second = await wait_for_item(store, item_id, retried(2))
    assert second.last_error == "delivery took longer than 0.08s"


async def test_kick_wakes_an_idle_worker(
        store: Store, clock: FakeClock, workers: Callable[..., OutboxWorker]) -> None:
    calls, deliver = scripted(Delivered(200))
    await store.enqueue(dataclasses.replace(make_item(clock()), next_attempt_at=clock() + 1000.0))
    worker = workers(deliver)  # idle until the item is due: 60 s of real time (its poll interval)
    await worker.start()
    clock.advance(1000.0)
    worker.kick()
    await async_wait_until(lambda: len(calls) == 1, timeout=5.0, message="delivery after kick")


async def test_restart_enqueue_close_reopen_and_a_new_worker_delivers(
        store_url: str, clock: FakeClock, workers: Callable[..., OutboxWorker]) -> None:
    before = await open_store(store_url, clock=clock)
    item_id = await before.enqueue(make_item(clock(), key="restart-1"))
    await before.close()

    after = await open_store(store_url, clock=clock)
    try:
        calls, deliver = scripted(Delivered(202))
        worker = workers(deliver, on=after)
        await worker.start()
        await wait_for_item(after, item_id, lambda i: i.status is OutboxStatus.DELIVERED)
        assert [c.id for c in calls] == [item_id]
        await worker.stop()
    finally:
        await after.close()


async def test_a_dead_workers_lease_is_taken_over_once_it_expires(
        store: Store, clock: FakeClock, workers: Callable[..., OutboxWorker]) -> None:
    item_id = await store.enqueue(make_item(clock()))
    [_] = await store.lease_due("crashed-replica", clock(), 30.0, 1)
    calls, deliver = scripted(Delivered(200))
    worker = workers(deliver, owner="survivor")
    await worker.start()
    clock.advance(30.0)
    worker.kick()
    item = await wait_for_item(store, item_id, lambda i: i.status is OutboxStatus.DELIVERED)
    assert item.attempts == 2 and len(calls) == 1


async def test_stop_waits_for_in_flight_deliveries_within_the_grace_period(
        store: Store, clock: FakeClock, workers: Callable[..., OutboxWorker]) -> None:
    gate, started = asyncio.Event(), asyncio.Event()

    async def slow(item: OutboxItem) -> DeliveryResult:
        started.set()
        await gate.wait()
        return Delivered(200)

    worker = workers(slow, stop_grace=5.0)
    item_id = await store.enqueue(make_item(clock()))
    await worker.start()
    await asyncio.wait_for(started.wait(), timeout=5.0)
    stopping = asyncio.create_task(worker.stop())
    await async_wait_until(lambda: not worker.running, message="the loop to stop leasing")
    gate.set()
    await stopping
    assert (await store.get(item_id)).status is OutboxStatus.DELIVERED  # type: ignore[union-attr]


async def test_stop_releases_leases_of_deliveries_cut_short(
        store: Store, clock: FakeClock, workers: Callable[..., OutboxWorker]) -> None:
    started = asyncio.Event()

    async def hangs(item: OutboxItem) -> DeliveryResult:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    worker = workers(hangs, stop_grace=0.05, owner="leaving")
    item_id = await store.enqueue(make_item(clock()))
    await worker.start()
    await asyncio.wait_for(started.wait(), timeout=5.0)
    await worker.stop()

    item = await store.get(item_id)
    assert item is not None
    assert (item.status, item.lease_owner, item.lease_until) == (OutboxStatus.PENDING, None, None)
    [again] = await store.lease_due("next-replica", clock(), 30.0, 1)  # at once, not after 30 s
    assert again.id == item_id


async def test_deliveries_run_with_bounded_concurrency(
        store: Store, clock: FakeClock, workers: Callable[..., OutboxWorker]) -> None:
    gate = asyncio.Event()
    running, peak, done = 0, 0, 0

    async def counted(item: OutboxItem) -> DeliveryResult:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1
        done += 1
        return Delivered(200)

    for _ in range(7):
        await store.enqueue(make_item(clock()))
    worker = workers(counted, concurrency=3)
    await worker.start()
    await async_wait_until(lambda: running == 3, message="three deliveries in flight")
    gate.set()
    # in_flight drops to 0 between batches too: wait for all seven, then for the last to be recorded
    await async_wait_until(lambda: done == 7 and worker.in_flight == 0, message="all deliveries done")
    assert await store.depth() == 0
    assert peak == 3


async def test_callbacks_run_in_their_own_lane_and_never_take_the_slots_of_sends(
        store: Store, clock: FakeClock, workers: Callable[..., OutboxWorker]) -> None:
    release = asyncio.Event()
    started: list[str] = []
    delivered: list[str] = []

    async def deliver(item: OutboxItem) -> DeliveryResult:
        started.append(item.protocol)
        if item.protocol == "callback":
            await release.wait()  # a receiver that does not answer
        delivered.append(item.protocol)
        return Delivered(200)

    callbacks = [dataclasses.replace(make_item(clock() - 10 + n), id=f"cb-{n}", protocol="callback")
                 for n in range(5)]  # older than the send, so a shared lane would lease them first
    for item in callbacks:
        await store.enqueue(item)
    send_id = await store.enqueue(make_item(clock()))
    worker = workers(deliver, concurrency=1, lanes={"callback": 2})
    await worker.start()

    await wait_for_item(store, send_id, lambda item: item.status is OutboxStatus.DELIVERED,
                        message="the send delivered while callbacks hang")
    await async_wait_until(lambda: started.count("callback") >= 2, message="the callback lane's two in flight")
    assert started.count("callback") == 2  # the callback lane's limit, not the send's slot
    assert delivered == ["rest"]
    release.set()
    for item in callbacks:
        await wait_for_item(store, item.id, lambda i: i.status is OutboxStatus.DELIVERED,
                            message="every callback delivered once its receiver answers")
