"""Durable resubmission: lease due outbox items, deliver them, record what happened.

Items are delivered by kind (`OutboxItem.protocol`: a queued REST or SOAP send, an SMS send, an app
callback) through `Handlers`, a registry filled when the gateway is built: each kind's handler
delivers an item and hears of it when it is dead. This module knows nothing of vendors. Each
item's fate after a try is decided by `next_step`, a pure function:

    Delivered(status_code, body, account)   recorded as delivered
    RetryAfter(seconds)                     due again after exactly that long (the upstream said so)
    Retry(error)                            due again after `next_delay(attempts)` (by default
                                            `policies.backoff.backoff_delay` under the worker's `retry`)
    FailedPermanently(reason)               dead

A retry that would fall past the item's `expires_at` makes it dead instead. Several workers (one per
replica) may share a store: leases keep them off each other's items, and a worker that dies loses
its leases when they expire.

Lanes: items of a protocol named in `lanes` (the runtime names "callback") are leased and run within
their own concurrency, the rest within `concurrency`. A thousand app callback receivers that answer
slowly then fill only the callback lane; queued sends keep their slots. Each lane leases from the
store with its own filter, so a full lane neither leases items it cannot start nor blocks the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gateway.store import Delivered, ItemNotFound, Lane, LeaseLost, OutboxItem, OutboxProtocol, Store
from gateway.telemetry.otel import Telemetry
from policies.backoff import RetryPolicy, backoff_delay

__all__ = [
    "Dead", "Deliver", "Delivered", "DeliveryResult", "FailedPermanently", "Handler", "Handlers", "OnDead",
    "OutboxWorker", "Reschedule", "Retry", "RetryAfter", "Step", "Unhandled", "default_owner", "next_step",
]

log = logging.getLogger("aftm.outbox")

# After a lease came back short while something was due (another replica won the race), wait this
# long rather than spin.
_MIN_WAIT = 0.05


@dataclass(frozen=True, slots=True)
class RetryAfter:
    """The upstream asked for a pause (throttled): try again in exactly `seconds`."""

    seconds: float
    error: str = "throttled"


@dataclass(frozen=True, slots=True)
class Retry:
    """A transient failure: try again after the backoff delay."""

    error: str


@dataclass(frozen=True, slots=True)
class FailedPermanently:
    """Sending again cannot help (the upstream rejected the request itself)."""

    reason: str


DeliveryResult = Delivered | RetryAfter | Retry | FailedPermanently
Deliver = Callable[[OutboxItem], Awaitable[DeliveryResult]]
# Told about an item once it is recorded dead, with the reason (e.g. to fail the message it carried).
OnDead = Callable[[OutboxItem, str], Awaitable[None]]


class Handler(Protocol):
    """Delivers the outbox items of one kind, and learns which of them the outbox gave up on."""

    async def deliver(self, item: OutboxItem) -> DeliveryResult: ...

    async def on_dead(self, item: OutboxItem, reason: str) -> None: ...


class Unhandled:
    """The handler of a kind the gateway no longer serves (e.g. SMS items after SMS was configured away)."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    async def deliver(self, item: OutboxItem) -> DeliveryResult:
        return FailedPermanently(self._reason)

    async def on_dead(self, item: OutboxItem, reason: str) -> None:
        pass


class Handlers:
    """Outbox items dispatched to the handler registered for their kind; what `OutboxWorker` calls.

    Each delivery runs in its own trace, linked to the request that queued the item, and is counted
    by how it ended.
    """

    def __init__(self, *, telemetry: Telemetry | None = None) -> None:
        self._telemetry = telemetry or Telemetry.disabled()
        self._handlers: dict[str, Handler] = {}

    def register(self, kind: OutboxProtocol, handler: Handler) -> None:
        if kind in self._handlers:
            raise ValueError(f"outbox items of kind {kind!r} already have a handler")
        self._handlers[kind] = handler

    async def deliver(self, item: OutboxItem) -> DeliveryResult:
        handler = self._handlers.get(item.protocol)
        if handler is None:
            return FailedPermanently(f"no handler for outbox items of kind {item.protocol!r}")
        with self._telemetry.outbox_delivery(item_id=item.id, attempts=item.attempts, headers=dict(item.headers)):
            result = await handler.deliver(item)
        self._telemetry.metrics.outbox_deliveries.labels(type(result).__name__.lower()).inc()
        return result

    async def on_dead(self, item: OutboxItem, reason: str) -> None:
        handler = self._handlers.get(item.protocol)
        if handler is not None:
            await handler.on_dead(item, reason)


@dataclass(frozen=True, slots=True)
class Reschedule:
    at: float
    error: str


@dataclass(frozen=True, slots=True)
class Dead:
    reason: str


Step = Delivered | Reschedule | Dead


# Queued sends back off between 1 s and 5 min by default: the account is down or throttling. Full jitter
# spreads a burst of failed sends so they do not return to a recovering account in lockstep.
DEFAULT_RETRY = RetryPolicy(wait_initial=1.0, wait_max=300.0)


def next_step(item: OutboxItem, result: DeliveryResult, *, now: float,
              next_delay: Callable[[int], float]) -> Step:
    """What to record after one try of `item` (whose `attempts` already counts this try)."""
    if isinstance(result, Delivered):
        return result
    if isinstance(result, FailedPermanently):
        return Dead(f"failed permanently after {item.attempts} attempts: {result.reason}")
    if isinstance(result, RetryAfter):
        at, error = now + max(0.0, result.seconds), result.error
    else:
        at, error = now + max(0.0, next_delay(item.attempts)), result.error
    if at >= item.expires_at:
        return Dead(f"past its deadline after {item.attempts} attempts; last error: {error}")
    return Reschedule(at, error)


@dataclass(eq=False)
class _LaneSlots:
    lane: Lane
    concurrency: int
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def free(self) -> int:
        return self.concurrency - len(self.in_flight)


def default_owner() -> str:
    """A lease owner name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class OutboxWorker:
    """Delivers queued sends in the background; `start()` and `stop()` belong to the app lifespan.

    Waits on an event until the next item is due (or `poll_interval`, to see items other replicas
    enqueued), never spinning. Call `kick()` after an enqueue to deliver without waiting. `clock`
    is epoch seconds. A delivery taking longer than `delivery_timeout` (default: 80% of the lease)
    is abandoned and retried, so no other worker takes the item over while it is still being sent.
    `on_dead(item, reason)`, when given, is awaited after an item is recorded dead. `lanes` maps a
    protocol to its own concurrency (see the module docstring); other items share `concurrency`.
    A retry waits `next_delay(attempts)` when given, else `policies.backoff.backoff_delay` under `retry`
    with `rng` (pass a seeded or pinned `random.Random` in tests).
    """

    def __init__(
        self, *, store: Store, deliver: Deliver, owner: str | None = None,
        clock: Callable[[], float] = time.time, wake: asyncio.Event | None = None,
        lease_seconds: float = 30.0, batch: int = 20, concurrency: int = 8, poll_interval: float = 5.0,
        stop_grace: float = 10.0, delivery_timeout: float | None = None,
        next_delay: Callable[[int], float] | None = None, retry: RetryPolicy = DEFAULT_RETRY,
        rng: random.Random | None = None, on_dead: OnDead | None = None,
        lanes: Mapping[OutboxProtocol, int] | None = None,
    ) -> None:
        lanes = dict(lanes or {})
        if lease_seconds <= 0 or batch <= 0 or poll_interval <= 0 or min([concurrency, *lanes.values()]) <= 0:
            raise ValueError("lease_seconds, batch, concurrency (of each lane) and poll_interval must be positive")
        self.owner = owner or default_owner()
        self._store = store
        self._deliver = deliver
        self._clock = clock
        self._wake = wake or asyncio.Event()
        self._lease_seconds = lease_seconds
        self._batch = batch
        self._lanes = [_LaneSlots(Lane(excluding=tuple(lanes)), concurrency)] + [
            _LaneSlots(Lane(only=(protocol,)), limit) for protocol, limit in lanes.items()]
        self._poll_interval = poll_interval
        self._stop_grace = stop_grace
        self._delivery_timeout = delivery_timeout if delivery_timeout is not None else 0.8 * lease_seconds
        draw = rng if rng is not None else random.Random()
        # `attempts` counts the try just made, so the first retry is backoff_delay's retry number 0.
        self._next_delay = next_delay or (lambda attempts: backoff_delay(retry, attempts - 1, draw))
        self._on_dead = on_dead
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def start(self) -> None:
        """Start the background loop (once)."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"outbox-worker {self.owner}")

    def kick(self) -> None:
        """Look for due items now instead of at the next planned wake-up."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop leasing, let in-flight deliveries finish within `stop_grace`, then release leases.

        Deliveries still running after the grace period are cancelled; their items return to
        pending, so another worker (or the next start) resends them.
        """
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        await self._task
        self._task = None
        if self._in_flight:
            _, late = await asyncio.wait(set(self._in_flight), timeout=self._stop_grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        released = await self._store.release_leases(self.owner)
        if released:
            log.info("outbox worker released %d unfinished items", released, extra={"owner": self.owner})

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                more_due = await self._lease_and_start()
                wait = 0.0 if more_due else await self._idle_wait()
            except Exception:  # the store failed (disk, lock timeout): keep the worker alive, try later
                log.exception("outbox worker could not lease items")
                wait = self._poll_interval
            if self._stopping:
                break
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
            else:
                await asyncio.sleep(0)  # let the deliveries just started run before the next batch

    async def _lease_and_start(self) -> bool:
        """Lease what fits in each lane's free slots; True when a full lease suggests more is due."""
        more_due = False
        for slots in self._lanes:
            if slots.free <= 0:
                continue
            limit = min(self._batch, slots.free)
            items = await self._store.lease_due(self.owner, self._clock(), self._lease_seconds, limit, slots.lane)
            for item in items:
                task = asyncio.create_task(self._attempt(item), name=f"outbox-delivery {item.id}")
                self._in_flight.add(task)
                slots.in_flight.add(task)
                task.add_done_callback(functools.partial(self._delivery_done, slots))
            more_due = more_due or (len(items) == limit and slots.free > 0)
        return more_due

    async def _idle_wait(self) -> float:
        """Until the next item of a lane with a free slot is due (a finishing delivery kicks the loop)."""
        wait = self._poll_interval
        for slots in self._lanes:
            if slots.free <= 0:
                continue
            due = await self._store.next_due(slots.lane)
            if due is not None:
                wait = min(wait, max(due - self._clock(), _MIN_WAIT))
        return wait

    def _delivery_done(self, slots: _LaneSlots, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        slots.in_flight.discard(task)
        self._wake.set()  # a slot is free, and a rescheduled item may be due sooner

    async def _attempt(self, item: OutboxItem) -> None:
        if self._clock() >= item.expires_at:
            step: Step = Dead(f"past its deadline after {item.attempts - 1} attempts; "
                              f"last error: {item.last_error}")
        else:
            result = await self._call_deliver(item)
            step = next_step(item, result, now=self._clock(), next_delay=self._next_delay)
        try:
            await self._record(item, step)
        except LeaseLost as exc:
            log.warning("outbox item changed hands during delivery: %s", exc)
        except ItemNotFound:
            log.info("outbox item was dropped during delivery", extra={"request_id": item.id})
        except Exception:  # the lease expires and the item is retried; better twice than lost
            log.exception("outbox worker could not record a delivery", extra={"request_id": item.id})

    async def _call_deliver(self, item: OutboxItem) -> DeliveryResult:
        try:
            async with asyncio.timeout(self._delivery_timeout):
                return await self._deliver(item)
        except TimeoutError:
            return Retry(f"delivery took longer than {self._delivery_timeout:g}s")
        except Exception as exc:  # a bug in deliver must not lose the item: retry it with backoff
            log.exception("outbox delivery raised", extra={"request_id": item.id})
            return Retry(f"delivery raised {type(exc).__name__}: {exc}")

    async def _record(self, item: OutboxItem, step: Step) -> None:
        if isinstance(step, Delivered):
            await self._store.mark_delivered(item.id, self.owner, step)
            log.info("outbox item delivered", extra={"request_id": item.id, "attempts": item.attempts})
        elif isinstance(step, Reschedule):
            await self._store.reschedule(item.id, self.owner, step.at, step.error)
        else:
            await self._store.mark_dead(item.id, self.owner, step.reason)
            log.warning("outbox item dead: %s", step.reason, extra={"request_id": item.id})
            if self._on_dead is not None:
                try:
                    await self._on_dead(item, step.reason)
                except Exception:  # the item is dead either way; its owner's bookkeeping failed
                    log.exception("outbox on_dead hook failed", extra={"request_id": item.id})
