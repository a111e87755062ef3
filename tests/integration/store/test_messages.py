"""SMS message records on every backend: created with their send, changed atomically, forwarded at most once."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path

import aiosqlite

from gateway.store import (
    MessageChange,
    MessageEvent,
    MessageRecord,
    MessageStatus,
    OutboxItem,
    OutboxStatus,
    Store,
    open_store,
)
from gateway.store.migrations.sqlite import MIGRATIONS
from gateway.store.sqlite import apply_migrations
from tests.support.clock import FakeClock
from tests.support.stores import make_item

OPEN = frozenset({MessageStatus.ACCEPTED, MessageStatus.SENT})


def message(now: float, *, fwd_from: str | None = None, submitter: str = "sub-1", client: str = "app",
            source: str = "98765") -> MessageRecord:
    return MessageRecord(
        id=str(uuid.uuid4()), channel="sms", client=client, submitter_id=submitter, source=source,
        destination="+18475551212", destination_carrier="102", text="123857AB12", status=MessageStatus.ACCEPTED,
        alternate=True, receipt_level="ALL", callback_url="https://app.example/cb", receipt_token_hash="ab" * 32,
        created_at=now, updated_at=now, fwd_from=fwd_from)


def accepted(record: MessageRecord) -> MessageEvent:
    return MessageEvent(message_id=record.id, at=record.created_at, kind="status", status=MessageStatus.ACCEPTED,
                        description="accepted")


def send_item(record: MessageRecord, now: float) -> OutboxItem:
    return OutboxItem.new(protocol="sms", method="POST", path=f"/sms/v1/messages/{record.id}", headers=(),
                          body=b"token", client=record.client, now=now, max_age=60, request_id=f"sms-{record.id}")


def forward(original: MessageRecord, now: float) -> MessageChange:
    alternate = message(now, fwd_from=original.id, source="+13125550100")
    callback = OutboxItem.new(protocol="callback", method="POST", path="https://app.example/cb",
                              headers=(("x-aftm-message-id", original.id),), body=b"<x/>", client="app", now=now,
                              max_age=60)
    return MessageChange(
        message_id=original.id, from_statuses=OPEN, status=MessageStatus.FORWARDED, fwd_to=alternate.id,
        upstream_message_id="UP-1",
        event=MessageEvent(message_id=original.id, at=now, kind="status", status=MessageStatus.FORWARDED,
                           description="carrier failure; re-sent", error_code="1001"),
        insert=alternate, insert_event=accepted(alternate), enqueue=(send_item(alternate, now), callback))


async def test_a_message_is_stored_with_its_send_and_first_event(store: Store, clock: FakeClock) -> None:
    record = message(clock())
    await store.message_create(record, event=accepted(record), enqueue=(send_item(record, clock()),))
    assert await store.message_get(record.id) == record
    [event] = await store.message_events(record.id)
    assert (event.kind, event.status, event.description) == ("status", MessageStatus.ACCEPTED, "accepted")
    item = await store.get(f"sms-{record.id}")
    assert item is not None and item.protocol == "sms" and item.status is OutboxStatus.PENDING
    assert [m.id for m in await store.message_find("app", "sub-1")] == [record.id]
    assert await store.message_find("other-app", "sub-1") == []


async def test_a_change_applies_only_from_the_statuses_it_names(store: Store, clock: FakeClock) -> None:
    record = message(clock())
    await store.message_create(record, event=accepted(record))
    clock.advance(1)
    sent = MessageChange(message_id=record.id, from_statuses=frozenset({MessageStatus.ACCEPTED}),
                         status=MessageStatus.SENT, upstream="sms1", upstream_message_id="UP-9",
                         event=MessageEvent(message_id=record.id, at=clock(), kind="status",
                                            status=MessageStatus.SENT, description="sent"))
    assert await store.message_change(sent) is True
    assert await store.message_change(sent) is False  # no longer Accepted: nothing happens twice
    after = await store.message_get(record.id)
    assert after is not None
    assert (after.status, after.upstream, after.upstream_message_id, after.updated_at) == (
        MessageStatus.SENT, "sms1", "UP-9", clock())
    assert [e.status for e in await store.message_events(record.id)] == [MessageStatus.ACCEPTED, MessageStatus.SENT]


async def test_forwarding_stores_the_alternate_its_send_and_the_callback_together(store: Store,
                                                                                  clock: FakeClock) -> None:
    original = message(clock())
    await store.message_create(original, event=accepted(original))
    change = forward(original, clock())
    assert await store.message_change(change) is True
    assert change.insert is not None
    stored = await store.message_get(original.id)
    alternate = await store.message_get(change.insert.id)
    assert stored is not None and alternate is not None
    assert (stored.status, stored.fwd_to, stored.upstream_message_id) == (
        MessageStatus.FORWARDED, alternate.id, "UP-1")
    assert (alternate.fwd_from, alternate.source, alternate.status) == (
        original.id, "+13125550100", MessageStatus.ACCEPTED)
    assert {i.protocol for i in await store.list()} == {"sms", "callback"}
    assert [m.id for m in await store.message_find("app", "sub-1")] == [original.id, alternate.id]


async def test_a_message_is_forwarded_at_most_once_even_by_racing_replicas(store_url: str,
                                                                           clock: FakeClock) -> None:
    replicas = [await open_store(store_url, clock=clock) for _ in range(4)]
    try:
        original = message(clock())
        await replicas[0].message_create(original, event=accepted(original))
        # Each replica saw the failure receipt and builds its own alternate (own id, own send).
        results = await asyncio.gather(*(r.message_change(forward(original, clock())) for r in replicas * 2))
        assert sorted(results) == [False] * 7 + [True]
        found = await replicas[0].message_find("app", "sub-1")
        assert len(found) == 2 and found[1].fwd_from == original.id
        assert len([i for i in await replicas[0].list() if i.protocol == "sms"]) == 1
        assert len([i for i in await replicas[0].list() if i.protocol == "callback"]) == 1
    finally:
        for replica in replicas:
            await replica.close()


async def test_notes_are_history_and_change_nothing(store: Store, clock: FakeClock) -> None:
    record = message(clock())
    await store.message_create(record, event=accepted(record))
    await store.message_note(MessageEvent(message_id=record.id, at=clock() + 1, kind="callback",
                                          description="callback failed permanently", error_code="post-out"))
    after = await store.message_get(record.id)
    assert after == record
    events = await store.message_events(record.id)
    assert [(e.kind, e.error_code) for e in events] == [("status", None), ("callback", "post-out")]


async def test_retention_purges_old_messages_with_their_history(store: Store, clock: FakeClock) -> None:
    old, fresh = message(clock()), message(clock() + 100)
    for record in (old, fresh):
        await store.message_create(record, event=accepted(record))
    assert (await store.purge_expired(clock())).messages == 0  # only when asked
    purged = await store.purge_expired(clock() + 200, finished_before=clock() + 50)
    assert purged.messages == 1
    assert await store.message_get(old.id) is None and await store.message_events(old.id) == []
    assert await store.message_get(fresh.id) is not None


async def test_messages_survive_a_reopen(store_url: str, clock: FakeClock) -> None:
    first = await open_store(store_url, clock=clock)
    record = message(clock())
    try:
        await first.message_create(record, event=accepted(record), enqueue=(send_item(record, clock()),))
    finally:
        await first.close()
    reopened = await open_store(store_url, clock=clock)
    try:
        assert await reopened.message_get(record.id) == record
        [leased] = await reopened.lease_due("w", clock(), 30, 10)
        assert leased.id == f"sms-{record.id}" and leased.body == b"token"
    finally:
        await reopened.close()


async def test_migration_4_keeps_queued_sends_and_takes_sms_and_callbacks(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await apply_migrations(db, MIGRATIONS[:3], now=1.0)
        await db.execute("""INSERT INTO outbox (id, protocol, method, path, headers, body, client, status,
                            created_at, next_attempt_at, expires_at, updated_at, idempotency_key)
                            VALUES ('old-1', 'rest', 'POST', '/p', '[]', x'00', 'app', 'pending', 1, 1, 9e9, 1, 'k')""")
    store = await open_store(f"sqlite:///{path}")
    try:
        old = await store.get("old-1")
        assert old is not None and old.idempotency_key == "k" and old.protocol == "rest"
        assert await store.enqueue(make_item(2.0, key="k", client="app")) == "old-1"  # the key index came back too
        record = message(2.0)
        await store.message_create(record, event=accepted(record), enqueue=(send_item(record, 2.0),))
        assert (await store.get(f"sms-{record.id}")) is not None
    finally:
        await store.close()


async def test_the_apps_transaction_id_and_types_are_kept_and_a_send_may_change_the_source(
        store: Store, clock: FakeClock) -> None:
    record = dataclasses.replace(message(clock(), source="+13125550100"), transaction_id="6439376297230",
                                 destination_type="MSISDN", source_type="LC")
    await store.message_create(record, event=accepted(record))
    assert await store.message_get(record.id) == record
    assert await store.message_change(MessageChange(
        message_id=record.id, from_statuses=OPEN, status=MessageStatus.SENT, source="+13125550101",
        event=MessageEvent(message_id=record.id, at=clock(), kind="status", status=MessageStatus.SENT,
                           description="sent")))
    changed = await store.message_get(record.id)
    assert changed is not None and changed.source == "+13125550101" and changed.transaction_id == "6439376297230"
