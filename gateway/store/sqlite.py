"""The SQLite store: one file, WAL journal, every commit fsynced before the caller hears "done".

Durability choices, and why:
- `journal_mode=WAL`: readers (admin views, readiness) never block the writer, and a commit is one
  sequential append to the WAL rather than a rewrite of pages.
- `synchronous=FULL`: the WAL is fsynced at every commit. With NORMAL a commit survives a process
  crash but may be lost on power failure or an OS crash; the gateway answers 202 only after
  `enqueue` returns, so a promise made to an app must survive those too. Sends reach the outbox
  only when an account is failing, so one fsync per commit is cheap at that rate.
- One connection writes, behind an asyncio lock, with explicit `BEGIN IMMEDIATE`: SQLite allows one
  writer, and taking the write lock at BEGIN means a read-then-write (enqueue's key check, lease
  selection) cannot interleave with another writer, in this process or another. A second connection
  serves reads so they never queue behind a write.
- aiosqlite runs each connection in its own thread, so no file I/O happens on the event loop.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiosqlite

from gateway.errors import ItemNotFound, LeaseLost, StoreError
from gateway.store.base import (
    ALL_ITEMS,
    MESSAGE_COLUMNS,
    RESULT_SNIPPET_BYTES,
    SECRET_BODY_PROTOCOLS,
    Delivered,
    Headers,
    IdempotencyRecord,
    Lane,
    MessageChange,
    MessageEvent,
    MessageRecord,
    OutboxItem,
    OutboxStatus,
    PurgeCount,
    SharedValue,
    dump_headers,
    event_from_row,
    event_values,
    item_from_row,
    message_from_row,
    message_values,
    record_from_row,
    replayable_headers,
)
from gateway.store.failures import (
    FAILURE_COLUMNS,
    FailureQuery,
    FailureRecord,
    NewFailure,
    appended,
    failure_from_row,
    failure_values,
    where,
)
from gateway.store.migrations import Migration, check_sequence
from gateway.store.migrations.sqlite import MIGRATIONS

# A finished item's body goes when it is a credential (SECRET_BODY_PROTOCOLS: an SMS receipt token).
_FORGET_SECRET_BODY = ("body = CASE WHEN protocol IN ("
                       + ", ".join(f"'{p}'" for p in SECRET_BODY_PROTOCOLS) + ") THEN X'' ELSE body END")
BUSY_TIMEOUT_SECONDS = 10.0  # how long to wait for another process's write lock before failing
# Statuses are spelled out as SQL literals below rather than built into strings; the key-holding
# set must match KEY_HOLDING_STATUSES and the partial unique index of migration 1.



P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def _driver_errors(path: Path, *, opening: bool = False) -> Iterator[None]:
    """sqlite3's errors (aiosqlite re-raises them as they are) as StoreError; the OS's too while opening."""
    try:
        yield
    except sqlite3.Error as exc:  # busy past the timeout, disk full, corrupt file, not a database, ...
        raise StoreError(f"store {path}: {'cannot open: ' if opening else ''}{type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        if not opening:
            raise
        # Creating the folder or the file: a read-only or foreign directory, a path through a file.
        raise StoreError(f"store {path}: cannot open: {exc.strerror or exc}") from exc


def _translated(method: Callable[Concatenate[SQLiteStore, P], Coroutine[Any, Any, R]],
                ) -> Callable[Concatenate[SQLiteStore, P], Coroutine[Any, Any, R]]:
    """The store's error boundary: a closed store or a driver error surfaces as StoreError."""

    async def wrapper(store: SQLiteStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if store._closed:
            raise StoreError(f"store {store.path} is closed")
        with _driver_errors(store.path):
            return await method(store, *args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper

class SQLiteStore:
    """The `Store` on one SQLite file. Open with `await SQLiteStore.open(path)`; close when done."""

    def __init__(self, *, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection,
                 clock: Callable[[], float]) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._clock = clock
        self._write_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, path: str | Path, *, clock: Callable[[], float] = time.time,
                   migrate: bool = True) -> SQLiteStore:
        """Open (creating the file and its folder if needed) and, unless told not to, migrate.

        `clock` stamps bookkeeping times and decides idempotency expiry; outbox decisions take `now`.
        """
        path = Path(path)
        if str(path) in ("", ":memory:") or str(path).startswith("file:"):
            raise StoreError(f"store path {str(path)!r}: give a file path; "
                             "an in-memory store loses the outbox")
        with _driver_errors(path, opening=True):
            await asyncio.to_thread(_create_private, path)
            writer = await _connect(path)
        reader: aiosqlite.Connection | None = None
        try:
            with _driver_errors(path, opening=True):
                # WAL is a property of the file: set once, it holds for every later connection.
                mode = await _scalar(writer, "PRAGMA journal_mode=WAL")
                if str(mode).lower() != "wal":
                    raise StoreError(f"store {path}: SQLite refused WAL mode (got {mode!r}); "
                                     "put the store on a local filesystem")
                reader = await _connect(path)
            store = cls(path=path, writer=writer, reader=reader, clock=clock)
            if migrate:
                await store.migrate()
        except BaseException:
            for conn in (reader, writer):
                if conn is not None:
                    await conn.close()
            raise
        return store

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._write_lock:
            await self._reader.close()
            await self._writer.close()

    @_translated
    async def ping(self) -> None:
        await _scalar(self._reader, "SELECT 1")

    @_translated
    async def migrate(self) -> builtins.list[int]:
        async with self._write_lock:
            return await apply_migrations(self._writer, MIGRATIONS, now=self._clock())

    # --- outbox -------------------------------------------------------------------------------

    @_translated
    async def enqueue(self, item: OutboxItem) -> str:
        async with self._transaction() as db:
            if item.idempotency_key is not None:
                rows = await db.execute_fetchall(
                    """SELECT id FROM outbox WHERE client = ? AND idempotency_key = ?
                       AND status IN ('pending', 'leased', 'delivered')""",
                    (item.client, item.idempotency_key))
                for row in rows:
                    return str(row["id"])
            await _insert_item(db, item)
        return item.id

    @_translated
    async def lease_due(self, owner: str, now: float, lease_seconds: float, limit: int,
                        lane: Lane = ALL_ITEMS) -> builtins.list[OutboxItem]:
        if limit <= 0:
            return []
        in_lane, lane_params = _lane_sql(lane)
        # One statement selects and claims, so no other writer can claim the same rows in between;
        # a lease past `lease_until` belongs to a worker that died or stalled, and is taken over.
        async with self._transaction() as db:
            rows = await db.execute_fetchall(
                f"""UPDATE outbox SET status = 'leased', lease_owner = ?, lease_until = ?,
                          attempts = attempts + 1, updated_at = ?
                   WHERE id IN (
                       SELECT id FROM outbox
                       WHERE ((status = 'pending' AND next_attempt_at <= ?)
                              OR (status = 'leased' AND lease_until <= ?)){in_lane}
                       ORDER BY next_attempt_at, created_at LIMIT ?)
                   RETURNING *""",  # noqa: S608 (the lane adds placeholders only)
                (owner, now + lease_seconds, now, now, now, *lane_params, limit))
        items = [item_from_row(row) for row in rows]
        items.sort(key=lambda i: (i.next_attempt_at, i.created_at))
        return items

    @_translated
    async def mark_delivered(self, item_id: str, owner: str, result: Delivered) -> None:
        async with self._transaction() as db:
            cursor = await db.execute(
                f"""UPDATE outbox SET status = 'delivered', lease_owner = NULL, lease_until = NULL,
                       result_status = ?, result_body = ?, result_account = ?, updated_at = ?, {_FORGET_SECRET_BODY}
                   WHERE id = ? AND status IN ('pending', 'leased')""",  # noqa: S608 (a fixed clause)
                (result.status_code, result.body[:RESULT_SNIPPET_BYTES], result.account, self._clock(),
                 item_id))
            if cursor.rowcount == 0:
                await self._explain_miss(db, item_id, owner, ok_if=OutboxStatus.DELIVERED)

    @_translated
    async def reschedule(self, item_id: str, owner: str, next_attempt_at: float, error: str) -> None:
        await self._finish_lease(item_id, owner, OutboxStatus.PENDING, next_attempt_at, error)

    @_translated
    async def mark_dead(self, item_id: str, owner: str, reason: str) -> None:
        await self._finish_lease(item_id, owner, OutboxStatus.DEAD, None, reason)

    @_translated
    async def release_leases(self, owner: str) -> int:
        async with self._transaction() as db:
            cursor = await db.execute(
                """UPDATE outbox SET status = 'pending', lease_owner = NULL, lease_until = NULL,
                       updated_at = ?
                   WHERE status = 'leased' AND lease_owner = ?""", (self._clock(), owner))
            return cursor.rowcount

    @_translated
    async def get(self, item_id: str) -> OutboxItem | None:
        rows = await self._reader.execute_fetchall("SELECT * FROM outbox WHERE id = ?", (item_id,))
        return next((item_from_row(row) for row in rows), None)

    @_translated
    async def find_by_key(self, client: str, idempotency_key: str) -> OutboxItem | None:
        rows = await self._reader.execute_fetchall(
            """SELECT * FROM outbox WHERE client = ? AND idempotency_key = ?
               AND status IN ('pending', 'leased', 'delivered')""", (client, idempotency_key))
        return next((item_from_row(row) for row in rows), None)

    @_translated
    async def list(self, status: OutboxStatus | None = None, limit: int = 100) -> builtins.list[OutboxItem]:
        if status is None:
            rows = await self._reader.execute_fetchall(
                "SELECT * FROM outbox ORDER BY created_at, id LIMIT ?", (limit,))
        else:
            rows = await self._reader.execute_fetchall(
                "SELECT * FROM outbox WHERE status = ? ORDER BY created_at, id LIMIT ?",
                (status.value, limit))
        return [item_from_row(row) for row in rows]

    @_translated
    async def retry_now(self, item_id: str) -> bool:
        now = self._clock()
        try:
            async with self._transaction() as db:
                # A revived dead item gets its original lifetime again, or it would die at once.
                cursor = await db.execute(
                    """UPDATE outbox SET status = 'pending', next_attempt_at = ?, updated_at = ?,
                           expires_at = CASE WHEN status = 'dead' THEN ? + (expires_at - created_at)
                                             ELSE expires_at END
                       WHERE id = ? AND status IN ('pending', 'dead')""", (now, now, now, item_id))
                return cursor.rowcount > 0
        except sqlite3.IntegrityError:
            return False  # a newer item holds its idempotency key now; reviving it could send twice

    @_translated
    async def drop(self, item_id: str) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute("DELETE FROM outbox WHERE id = ?", (item_id,))
            return cursor.rowcount > 0

    @_translated
    async def depth(self) -> int:
        return int(await _scalar(self._reader,
                                 "SELECT count(*) FROM outbox WHERE status IN ('pending', 'leased')"))

    @_translated
    async def oldest_pending_age(self, now: float) -> float | None:
        oldest = await _scalar(self._reader,
                               "SELECT min(created_at) FROM outbox WHERE status IN ('pending', 'leased')")
        return None if oldest is None else max(0.0, now - float(oldest))

    @_translated
    async def next_due(self, lane: Lane = ALL_ITEMS) -> float | None:
        in_lane, params = _lane_sql(lane)
        sql = f"""SELECT min(t) FROM (
                     SELECT min(next_attempt_at) AS t FROM outbox WHERE status = 'pending'{in_lane}
                     UNION ALL SELECT min(lease_until) FROM outbox WHERE status = 'leased'{in_lane})"""  # noqa: S608
        due = await _scalar(self._reader, sql, (*params, *params))  # the lane adds placeholders only
        return None if due is None else float(due)

    # --- idempotency --------------------------------------------------------------------------

    @_translated
    async def idempotency_get(self, key: str) -> IdempotencyRecord | None:
        rows = await self._reader.execute_fetchall(
            "SELECT * FROM idempotency WHERE key = ? AND expires_at > ?", (key, self._clock()))
        return next((record_from_row(row) for row in rows), None)

    @_translated
    async def idempotency_put(self, key: str, status_code: int, headers: Headers, body: bytes,
                              expires_at: float, *, fingerprint: str | None = None) -> IdempotencyRecord:
        now = self._clock()
        async with self._transaction() as db:
            # First writer wins; an expired record no longer counts as a writer.
            await db.execute(
                """INSERT INTO idempotency (key, status_code, headers, body, created_at, expires_at, fingerprint)
                   VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (key) DO UPDATE SET status_code = excluded.status_code,
                       headers = excluded.headers, body = excluded.body, created_at = excluded.created_at,
                       expires_at = excluded.expires_at, fingerprint = excluded.fingerprint
                   WHERE idempotency.expires_at <= excluded.created_at""",
                (key, status_code, dump_headers(replayable_headers(headers)), body, now, expires_at, fingerprint))
            rows = await db.execute_fetchall("SELECT * FROM idempotency WHERE key = ?", (key,))
        return record_from_row(next(iter(rows)))

    @_translated
    async def idempotency_settle(self, key: str, claim: bytes, *, status_code: int | None, headers: Headers = (),
                                 body: bytes = b"", expires_at: float = 0.0) -> bool:
        async with self._transaction() as db:
            if status_code is None:
                cursor = await db.execute(
                    "DELETE FROM idempotency WHERE key = ? AND status_code = 0 AND body = ?", (key, claim))
            else:
                cursor = await db.execute(
                    """UPDATE idempotency SET status_code = ?, headers = ?, body = ?, expires_at = ?
                       WHERE key = ? AND status_code = 0 AND body = ?""",
                    (status_code, dump_headers(replayable_headers(headers)), body, expires_at, key, claim))
            return cursor.rowcount == 1

    @_translated
    async def shared_get(self, key: str) -> SharedValue | None:
        rows = await self._reader.execute_fetchall(
            "SELECT value, updated_at, replica FROM shared_state WHERE key = ?", (key,))
        return next((SharedValue(row["value"], row["updated_at"], row["replica"]) for row in rows), None)

    @_translated
    async def shared_put(self, key: str, value: str, *, updated_at: float, replica: str) -> None:
        async with self._transaction() as db:
            await db.execute(
                """INSERT INTO shared_state (key, value, updated_at, replica) VALUES (?, ?, ?, ?)
                   ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at,
                       replica = excluded.replica
                   WHERE shared_state.updated_at <= excluded.updated_at""", (key, value, updated_at, replica))

    # --- revoked credentials ------------------------------------------------------------------

    @_translated
    async def revoke(self, token_hash: str, expires_at: float) -> None:
        async with self._transaction() as db:
            await db.execute(
                """INSERT INTO revocations (token_hash, expires_at) VALUES (?, ?)
                   ON CONFLICT (token_hash) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)""",
                (token_hash, expires_at))

    @_translated
    async def spend(self, token_hash: str, expires_at: float) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute(
                "INSERT INTO revocations (token_hash, expires_at) VALUES (?, ?) ON CONFLICT (token_hash) DO NOTHING",
                (token_hash, expires_at))
            return cursor.rowcount == 1

    @_translated
    async def is_revoked(self, token_hash: str) -> bool:
        rows = await self._reader.execute_fetchall(
            "SELECT 1 FROM revocations WHERE token_hash = ? AND expires_at > ?", (token_hash, self._clock()))
        return bool(rows)

    @_translated
    async def purge_expired(self, now: float, *, finished_before: float | None = None) -> PurgeCount:
        async with self._transaction() as db:
            records = await db.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,))
            revocations = await db.execute("DELETE FROM revocations WHERE expires_at <= ?", (now,))
            items = messages = 0
            if finished_before is not None:
                cursor = await db.execute(
                    "DELETE FROM outbox WHERE status IN ('delivered', 'dead') AND updated_at < ?",
                    (finished_before,))
                items = cursor.rowcount
                # Their history goes with them (ON DELETE CASCADE).
                cursor = await db.execute("DELETE FROM messages WHERE updated_at < ?", (finished_before,))
                messages = cursor.rowcount
        return PurgeCount(idempotency_records=records.rowcount, outbox_items=items, messages=messages,
                          revocations=revocations.rowcount)

    # --- messages -----------------------------------------------------------------------------

    @_translated
    async def message_create(self, message: MessageRecord, *, event: MessageEvent,
                             enqueue: tuple[OutboxItem, ...] = ()) -> None:
        async with self._transaction() as db:
            await _insert_message(db, message, event)
            for item in enqueue:
                await _insert_item(db, item)

    @_translated
    async def message_get(self, message_id: str) -> MessageRecord | None:
        rows = await self._reader.execute_fetchall("SELECT * FROM messages WHERE id = ?", (message_id,))
        return next((message_from_row(row) for row in rows), None)

    @_translated
    async def message_find(self, client: str, submitter_id: str) -> builtins.list[MessageRecord]:
        rows = await self._reader.execute_fetchall(
            """SELECT * FROM messages WHERE client = ? AND submitter_id = ?
               ORDER BY created_at, fwd_from IS NOT NULL, id LIMIT 100""",
            (client, submitter_id))
        return [message_from_row(row) for row in rows]

    @_translated
    async def message_events(self, message_id: str) -> builtins.list[MessageEvent]:
        rows = await self._reader.execute_fetchall(
            "SELECT * FROM message_events WHERE message_id = ? ORDER BY id", (message_id,))
        return [event_from_row(row) for row in rows]

    @_translated
    async def message_change(self, change: MessageChange) -> bool:
        statuses = sorted(s.value for s in change.from_statuses)
        marks = ", ".join("?" for _ in statuses)
        async with self._transaction() as db:
            # BEGIN IMMEDIATE holds the write lock: the status seen by this UPDATE is the one it changes.
            cursor = await db.execute(
                f"""UPDATE messages SET status = ?, updated_at = ?, upstream = coalesce(?, upstream),
                        upstream_message_id = coalesce(?, upstream_message_id), fwd_to = coalesce(?, fwd_to),
                        source = coalesce(?, source)
                    WHERE id = ? AND status IN ({marks})""",  # noqa: S608 (placeholders only)
                (change.status.value, change.event.at, change.upstream, change.upstream_message_id,
                 change.fwd_to, change.source, change.message_id, *statuses))
            if cursor.rowcount == 0:
                return False
            await db.execute(_INSERT_EVENT, event_values(change.event))
            if change.insert is not None:
                assert change.insert_event is not None
                await _insert_message(db, change.insert, change.insert_event)
            for item in change.enqueue:
                await _insert_item(db, item)
        return True

    @_translated
    async def message_note(self, event: MessageEvent) -> None:
        async with self._transaction() as db:
            await db.execute(_INSERT_EVENT, event_values(event))

    # --- failure entries ----------------------------------------------------------------------

    @_translated
    async def record_failure(self, failure: NewFailure) -> FailureRecord:
        async with self._transaction() as db:
            rows = await db.execute_fetchall(_INSERT_FAILURE, failure_values(failure, now=self._clock()))
        return failure_from_row(next(iter(rows)))

    @_translated
    async def add_delivery_failure(self, failure: NewFailure, *, snippet: str) -> FailureRecord:
        async with self._transaction() as db:
            found = await db.execute_fetchall(
                "SELECT * FROM failures WHERE client = ? AND send_id = ? AND send_id <> '' ORDER BY id DESC LIMIT 1",
                (failure.client, failure.send_id))
            if not found:
                fresh = dataclasses.replace(failure, primary_error=appended(failure.primary_error, snippet))
                rows = await db.execute_fetchall(_INSERT_FAILURE, failure_values(fresh, now=self._clock()))
            else:
                entry = failure_from_row(next(iter(found)))
                rows = await db.execute_fetchall(
                    """UPDATE failures SET code = code | ?, primary_error = ?, secondary_at = ?, secondary_error = ?,
                           revision = revision + 1, updated_at = ?
                       WHERE id = ? RETURNING *""",
                    (failure.code, appended(entry.primary_error, snippet), failure.secondary_at,
                     failure.secondary_error, self._clock(), entry.id))
        return failure_from_row(next(iter(rows)))

    @_translated
    async def failure(self, entry_id: int) -> FailureRecord | None:
        rows = await self._reader.execute_fetchall("SELECT * FROM failures WHERE id = ?", (entry_id,))
        return next((failure_from_row(row) for row in rows), None)

    @_translated
    async def failures(self, query: FailureQuery) -> builtins.list[FailureRecord]:
        clause, args = where(query, lambda n: "?")
        rows = await self._reader.execute_fetchall(
            f"SELECT * FROM failures {clause} ORDER BY primary_at DESC, id DESC LIMIT ? OFFSET ?",  # noqa: S608
            (*args, query.limit, query.offset))
        return [failure_from_row(row) for row in rows]

    @_translated
    async def count_failures(self, query: FailureQuery) -> int:
        clause, args = where(query, lambda n: "?")
        return int(await _scalar(self._reader, f"SELECT count(*) FROM failures {clause}", tuple(args)))  # noqa: S608

    @_translated
    async def failure_hours(self, query: FailureQuery) -> builtins.list[tuple[float, int, int]]:
        clause, args = where(query, lambda n: "?")
        rows = await self._reader.execute_fetchall(
            f"""SELECT CAST(primary_at / 3600 AS INTEGER) * 3600 AS hour, code, count(*) AS n
                FROM failures {clause} GROUP BY hour, code ORDER BY hour""", tuple(args))  # noqa: S608
        return [(float(row["hour"]), int(row["code"]), int(row["n"])) for row in rows]

    @_translated
    async def failures_to_post(self, client: str, limit: int) -> builtins.list[FailureRecord]:
        rows = await self._reader.execute_fetchall(
            "SELECT * FROM failures WHERE client = ? AND revision > posted_revision ORDER BY id LIMIT ?",
            (client, limit))
        return [failure_from_row(row) for row in rows]

    @_translated
    async def mark_failures_posted(self, posted: Sequence[tuple[int, int]]) -> None:
        async with self._transaction() as db:
            await db.executemany("UPDATE failures SET posted_revision = max(posted_revision, ?) WHERE id = ?",
                                 [(revision, entry_id) for entry_id, revision in posted])

    @_translated
    async def lease_poster(self, client: str, owner: str, now: float, seconds: float) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute(
                """INSERT INTO failure_posters (client, owner, lease_until) VALUES (?, ?, ?)
                   ON CONFLICT (client) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until
                   WHERE failure_posters.lease_until < ? OR failure_posters.owner = excluded.owner""",
                (client, owner, now + seconds, now))
            return cursor.rowcount > 0

    @_translated
    async def release_poster(self, client: str, owner: str) -> None:
        async with self._transaction() as db:
            await db.execute("UPDATE failure_posters SET lease_until = 0 WHERE client = ? AND owner = ?",
                             (client, owner))

    @_translated
    async def purge_failures(self, before: float) -> int:
        async with self._transaction() as db:
            cursor = await db.execute("DELETE FROM failures WHERE primary_at < ?", (before,))
            return cursor.rowcount

    # --- internals ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction that commits (durably) on exit and rolls back on any error."""
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        async with self._write_lock:
            async with _immediate(self._writer) as db:
                yield db

    async def _finish_lease(self, item_id: str, owner: str, status: OutboxStatus,
                            next_attempt_at: float | None, error: str) -> None:
        """End `owner`'s lease: back to pending at `next_attempt_at` (kept when None), or dead."""
        async with self._transaction() as db:
            cursor = await db.execute(
                f"""UPDATE outbox SET status = ?, lease_owner = NULL, lease_until = NULL, updated_at = ?,
                       next_attempt_at = coalesce(?, next_attempt_at), last_error = ?,
                       {_FORGET_SECRET_BODY if status is OutboxStatus.DEAD else "body = body"}
                   WHERE id = ? AND status = 'leased' AND lease_owner = ?""",  # noqa: S608 (fixed clauses)
                (status.value, self._clock(), next_attempt_at, error, item_id, owner))
            if cursor.rowcount == 0:
                await self._explain_miss(db, item_id, owner)

    @staticmethod
    async def _explain_miss(db: aiosqlite.Connection, item_id: str, owner: str,
                            ok_if: OutboxStatus | None = None) -> None:
        rows = await db.execute_fetchall("SELECT status, lease_owner FROM outbox WHERE id = ?", (item_id,))
        row = next(iter(rows), None)
        if row is None:
            raise ItemNotFound(f"outbox item {item_id} does not exist (dropped or purged)")
        if ok_if is not None and row["status"] == ok_if.value:
            return
        raise LeaseLost(f"outbox item {item_id} is {row['status']} (lease owner {row['lease_owner']}), "
                        f"no longer leased by {owner}")


_INSERT_EVENT = """INSERT INTO message_events (message_id, at, kind, status, description, error_code)
                   VALUES (?, ?, ?, ?, ?, ?)"""
_INSERT_MESSAGE = (f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) "  # noqa: S608 (fixed column names)
                   f"VALUES ({', '.join('?' for _ in MESSAGE_COLUMNS)})")


async def _insert_message(db: aiosqlite.Connection, message: MessageRecord, event: MessageEvent) -> None:
    await db.execute(_INSERT_MESSAGE, message_values(message))
    await db.execute(_INSERT_EVENT, event_values(event))


async def _insert_item(db: aiosqlite.Connection, item: OutboxItem) -> None:
    """Insert a pending item; its id is the gateway's own, so an id already there is this item, enqueued
    again after a lost answer (never another send)."""
    await db.execute(
        """INSERT INTO outbox (id, protocol, method, path, headers, body, client, account_preference,
               idempotency_key, status, attempts, created_at, next_attempt_at, expires_at, updated_at,
               correlation_id, fingerprint)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (id) DO NOTHING""",
        (item.id, item.protocol, item.method, item.path, dump_headers(replayable_headers(item.headers)), item.body,
         item.client, item.account_preference, item.idempotency_key, item.created_at, item.next_attempt_at,
         item.expires_at, item.created_at, item.correlation_id, item.fingerprint))


async def apply_migrations(db: aiosqlite.Connection, migrations: Sequence[Migration], *,
                           now: float) -> list[int]:
    """Apply the migrations `db` lacks, all in one transaction; return the versions applied."""
    check_sequence(migrations)
    async with _immediate(db):
        await db.execute("""CREATE TABLE IF NOT EXISTS schema_version (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)""")
        current = int(await _scalar(db, "SELECT coalesce(max(version), 0) FROM schema_version"))
        if current > len(migrations):
            raise StoreError(f"store schema version {current} is newer than this gateway knows "
                             f"({len(migrations)}); upgrade the gateway before opening this store")
        applied: list[int] = []
        for migration in migrations[current:]:
            for statement in migration.statements:
                await db.execute(statement)
            await db.execute("INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                             (migration.version, migration.name, now))
            applied.append(migration.version)
    return applied


@contextlib.asynccontextmanager
async def _immediate(db: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    # IMMEDIATE takes the write lock at BEGIN, so the checks inside see what they will change.
    # If this task is cancelled mid-way, statements already queued still run on the connection's
    # thread; rollback() is queued behind them, so the connection is never left inside a transaction.
    try:
        await db.execute("BEGIN IMMEDIATE")
        yield db
        await db.execute("COMMIT")
    except BaseException:
        await db.rollback()  # a no-op when the transaction already ended
        raise


def _create_private(path: Path) -> None:
    """Create the folder (0700) and the database file (0600) unless they exist; an existing file keeps its mode.

    The store holds outbox bodies (recipients, message texts) and idempotent answers: only the
    gateway's user may read it. SQLite creates `-wal` and `-shm` with the database file's mode, so
    creating the file first, before SQLite does with the umask's 0644, covers all three.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


async def _connect(path: Path) -> aiosqlite.Connection:
    # isolation_level=None: no implicit BEGINs from the sqlite3 module; transactions are explicit.
    db = await aiosqlite.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS)
    try:
        db.row_factory = sqlite3.Row
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        await db.close()
        raise
    return db


def _lane_sql(lane: Lane) -> tuple[str, tuple[str, ...]]:
    """` AND protocol ...` conditions (placeholders only) keeping a query to `lane`, and their values."""
    sql, params = "", tuple[str, ...]()
    if lane.only is not None:
        sql += f" AND protocol IN ({', '.join('?' for _ in lane.only)})"
        params += lane.only
    if lane.excluding:
        sql += f" AND protocol NOT IN ({', '.join('?' for _ in lane.excluding)})"
        params += lane.excluding
    return sql, params


async def _scalar(db: aiosqlite.Connection, sql: str, params: tuple[Any, ...] = ()) -> Any:
    rows = await db.execute_fetchall(sql, params)
    return next((row[0] for row in rows), None)


_INSERT_FAILURE = (f"INSERT INTO failures ({', '.join(FAILURE_COLUMNS)}) "  # noqa: S608 (fixed column names)
                   f"VALUES ({', '.join('?' for _ in FAILURE_COLUMNS)}) RETURNING *")
