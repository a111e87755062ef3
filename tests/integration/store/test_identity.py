"""Identity in the store, on every backend: the gateway's ids are the keys, the apps' values only labels;
revocations are shared and expire; a finished SMS send keeps no receipt token."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import aiosqlite
import pytest

from gateway.store import Delivered, NewFailure, OutboxItem, Store, open_store, scoped_key
from gateway.store.migrations.sqlite import MIGRATIONS
from gateway.store.sqlite import apply_migrations
from tests.integration.store.conftest import V5_OUTBOX_ROWS, assert_v5_outbox_migrated
from tests.support.clock import FakeClock
from tests.support.stores import make_item


def _sms_item(now: float, token: bytes) -> OutboxItem:
    return OutboxItem.new(protocol="sms", method="POST", path="/sms/v1/messages/m-1", headers=(), body=token,
                          client="app", now=now, max_age=3600.0, request_id="sms-m-1")


async def test_two_sends_with_one_correlation_id_are_two_items(store: Store, clock: FakeClock) -> None:
    first = make_item(clock(), client="app-a")
    second = make_item(clock(), client="app-b")
    again = make_item(clock(), client="app-a")
    labelled = [OutboxItem.new(protocol="rest", method="POST", path=i.path, headers=i.headers, body=i.body,
                               client=i.client, now=clock(), max_age=60.0, correlation_id="same-label")
                for i in (first, second, again)]
    ids = [await store.enqueue(item) for item in labelled]
    assert len(set(ids)) == 3 and await store.depth() == 3
    stored = [await store.get(item_id) for item_id in ids]
    assert [s.correlation_id for s in stored if s is not None] == ["same-label"] * 3


async def test_enqueueing_the_same_gateway_item_twice_keeps_one(store: Store, clock: FakeClock) -> None:
    item = make_item(clock())
    assert await store.enqueue(item) == item.id
    assert await store.enqueue(item) == item.id  # a retried enqueue after a lost answer
    assert await store.depth() == 1


async def test_failure_entries_keep_the_correlation_id_beside_the_send_id(store: Store, clock: FakeClock) -> None:
    entry = await store.record_failure(NewFailure(kind="retries_exhausted", code=4, client="app", send_id="gw-1",
                                                  correlation_id="app-label", primary_at=clock()))
    assert (entry.send_id, entry.correlation_id) == ("gw-1", "app-label")
    fetched = await store.failure(entry.id)
    assert fetched is not None and fetched.correlation_id == "app-label"


def test_scoped_idempotency_keys_of_different_clients_never_meet() -> None:
    assert scoped_key("a:b", "c") != scoped_key("a", "b:c")
    assert scoped_key("a", "b") != scoped_key("a:", "b")
    assert scoped_key("app", "order-1") == "3:app:order-1"


async def test_a_revocation_is_seen_by_another_store_handle_until_it_expires(store_url: str,
                                                                             clock: FakeClock) -> None:
    replica_a = await open_store(store_url, clock=clock)
    replica_b = await open_store(store_url, clock=clock)
    try:
        assert not await replica_b.is_revoked("hash-1")
        await replica_a.revoke("hash-1", clock() + 100.0)
        assert await replica_b.is_revoked("hash-1")
        await replica_a.revoke("hash-1", clock() + 50.0)  # a second logout never shortens it
        clock.advance(99.0)
        assert await replica_b.is_revoked("hash-1")
        clock.advance(2.0)
        assert not await replica_b.is_revoked("hash-1")  # the credential itself has expired by now
    finally:
        await replica_a.close()
        await replica_b.close()


async def test_a_single_use_credential_spent_at_once_through_two_store_handles_is_spent_once(
        store_url: str, clock: FakeClock) -> None:
    replica_a = await open_store(store_url, clock=clock)
    replica_b = await open_store(store_url, clock=clock)
    try:
        spent = await asyncio.gather(*(replica.spend("handle-1", clock() + 100.0)
                                       for replica in (replica_a, replica_b) * 4))
        assert sorted(spent) == [False] * 7 + [True]
        assert await replica_b.is_revoked("handle-1")
        assert not await replica_a.spend("handle-1", clock() + 100.0)
    finally:
        await replica_a.close()
        await replica_b.close()


async def test_expired_revocations_are_purged_by_retention(store: Store, clock: FakeClock) -> None:
    await store.revoke("gone", clock() + 10.0)
    await store.revoke("kept", clock() + 1000.0)
    purged = await store.purge_expired(clock() + 20.0)
    assert purged.revocations == 1
    assert await store.is_revoked("kept")


async def test_a_delivered_sms_send_keeps_no_receipt_token(store: Store, clock: FakeClock) -> None:
    item_id = await store.enqueue(_sms_item(clock(), b"receipt-token-secret"))
    rest_id = await store.enqueue(make_item(clock()))
    leased = await store.lease_due("w", clock(), 30.0, 10)
    assert {i.id for i in leased} == {item_id, rest_id}
    await store.mark_delivered(item_id, "w", Delivered(status_code=200))
    await store.mark_delivered(rest_id, "w", Delivered(status_code=200))
    sent = await store.get(item_id)
    assert sent is not None and sent.body == b""
    rest = await store.get(rest_id)
    assert rest is not None and rest.body == b'{"recipientData": []}'  # only credential bodies go


async def test_a_dead_sms_send_keeps_no_receipt_token_and_a_rescheduled_one_does(store: Store,
                                                                                clock: FakeClock) -> None:
    item_id = await store.enqueue(_sms_item(clock(), b"receipt-token-secret"))
    await store.lease_due("w", clock(), 30.0, 10)
    await store.reschedule(item_id, "w", clock(), "upstream down")
    waiting = await store.get(item_id)
    assert waiting is not None and waiting.body == b"receipt-token-secret"  # still needed to send
    await store.lease_due("w", clock(), 30.0, 10)
    await store.mark_dead(item_id, "w", "gave up")
    dead = await store.get(item_id)
    assert dead is not None and dead.body == b""


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_a_new_sqlite_store_and_its_wal_and_shm_are_private(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "private" / "gateway.db"
    old_umask = os.umask(0o022)  # the common default, under which SQLite alone makes 0644 files
    try:
        store = await open_store(f"sqlite:///{path}", clock=clock)
        try:
            await store.enqueue(make_item(clock()))
            wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
            assert (_mode(path), _mode(wal), _mode(shm)) == (0o600, 0o600, 0o600)
            assert _mode(path.parent) == 0o700
        finally:
            await store.close()
    finally:
        os.umask(old_umask)


async def test_an_existing_sqlite_file_keeps_its_mode(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "shared.db"
    path.touch()
    path.chmod(0o640)  # an operator's choice (a backup group may read it): neither widened nor changed
    store = await open_store(f"sqlite:///{path}", clock=clock)
    try:
        await store.enqueue(make_item(clock()))
        assert _mode(path) == 0o640
    finally:
        await store.close()


@pytest.mark.parametrize("client_key", ["app:order-1", "app:with:colons"])
async def test_migration_6_rescopes_idempotency_records_and_forgets_sent_receipt_tokens(
        tmp_path: Path, client_key: str) -> None:
    path = tmp_path / "v5.db"
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await apply_migrations(db, MIGRATIONS[:5], now=1.0)
        await db.execute("INSERT INTO idempotency VALUES (?, 200, '[]', x'7b7d', 1, 9e9)", (client_key,))
        for item_id, protocol, status in V5_OUTBOX_ROWS:
            await db.execute(
                """INSERT INTO outbox (id, protocol, method, path, headers, body, client, status,
                   created_at, next_attempt_at, expires_at, updated_at)
                   VALUES (?, ?, 'POST', '/p', '[]', x'746f6b656e', 'app', ?, 1, 1, 9e9, 1)""",
                (item_id, protocol, status))
    store = await open_store(str(path))
    try:
        client, key = client_key.split(":", 1)
        record = await store.idempotency_get(scoped_key(client, key))
        assert record is not None and record.body == b"{}"
        await assert_v5_outbox_migrated(store)
    finally:
        await store.close()
