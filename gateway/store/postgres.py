"""The PostgreSQL store: one database shared by every replica, through an asyncpg connection pool.

Durability and locking choices, and why:
- Every write is one autocommitted statement (or one explicit transaction), so it has committed when
  the coroutine returns. Connections start with `synchronous_commit=on` unless the URL sets it: the
  gateway answers 202 only after `enqueue` returns, and with `off` a server crash may lose the last
  commits. `on` never weakens a stronger choice: with synchronous standbys it waits for their flush.
- `lease_due` selects with `FOR UPDATE SKIP LOCKED` inside the claiming UPDATE: rows another replica
  is claiming are skipped rather than waited on, and a row claimed and committed meanwhile is
  re-checked against the WHERE clause under its lock (READ COMMITTED's re-evaluation), so two
  replicas never lease the same item, and neither blocks the other.
- Idempotency holds in the database: the partial unique index on (client, idempotency_key) for live
  items, and `INSERT ... ON CONFLICT` for records. A conflicting insert waits for the first writer's
  transaction, then yields to it; the follow-up SELECT (a fresh snapshot) sees the winner.
- Migrations run in one transaction under a transaction-level advisory lock keyed by the schema, so
  concurrent openers apply each step once; PostgreSQL's DDL is transactional, so a failing step
  leaves nothing behind.
- The pool reconnects by itself: a connection the server closed (a restart) is replaced at the
  next acquire. A call while the server is away raises StoreError, and `ping` fails (readiness).
- Library errors become StoreError at one boundary (`_translated`); the URL's password appears in no
  message.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from gateway.errors import ItemNotFound, LeaseLost, StoreError
from gateway.store import redact_url
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
from gateway.store.migrations.postgres import MIGRATIONS

CONNECT_TIMEOUT_SECONDS = 5.0  # a server that does not answer by then is down, for readiness too
COMMAND_TIMEOUT_SECONDS = 30.0  # no store statement should wait this long; one that does is stuck
CLOSE_TIMEOUT_SECONDS = 10.0  # how long `close` lets calls in progress finish before cutting them off
MIGRATION_TIMEOUT_SECONDS = 600.0  # a schema step on a big table, or waiting for another opener's
# A finished item's body goes when it is a credential (SECRET_BODY_PROTOCOLS: an SMS receipt token).
_FORGET_SECRET_BODY = ("body = CASE WHEN protocol IN ("
                       + ", ".join(f"'{p}'" for p in SECRET_BODY_PROTOCOLS) + ") THEN ''::bytea ELSE body END")
# First key of the migration advisory lock ("aftm"); the second is the schema's hash, so stores in
# different schemas of one database do not wait on each other.
MIGRATION_LOCK_CLASS = 0x6166746D

if TYPE_CHECKING:  # generic only in asyncpg-stubs, not at run time
    from asyncpg.pool import PoolConnectionProxy

    Pooled: TypeAlias = PoolConnectionProxy[asyncpg.Record]
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | Pooled
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]


class PostgresStore:
    """The `Store` on a PostgreSQL database. Open with `await PostgresStore.open(url)`; close when done."""

    def __init__(self, *, pool: Pool, name: str, clock: Callable[[], float]) -> None:
        self.name = name  # the URL without its password
        self._pool = pool
        self._clock = clock
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, clock: Callable[[], float] = time.time, migrate: bool = True,
                   min_size: int = 1, max_size: int = 10) -> PostgresStore:
        """Connect a pool of `min_size`..`max_size` connections and, unless told not to, migrate.

        `url` is a libpq URL (`postgresql://user:password@host:port/db?search_path=s`); query
        parameters libpq does not define become session settings. `clock` stamps bookkeeping times
        and decides idempotency expiry; outbox decisions take `now`.
        """
        name = redact_url(url)
        settings = {"synchronous_commit": "on", "application_name": "aftm-gateway"}
        settings = {k: v for k, v in settings.items() if k not in _query_keys(url)}
        try:
            pool = await asyncpg.create_pool(
                url, min_size=min_size, max_size=max_size, timeout=CONNECT_TIMEOUT_SECONDS,
                command_timeout=COMMAND_TIMEOUT_SECONDS, server_settings=settings, reset=_keep_session)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, ValueError) as exc:
            # Not chained: a driver's message about a malformed URL may quote the URL.
            raise StoreError(f"store {name}: cannot connect: {_scrub(str(exc) or type(exc).__name__, url)}"
                             ) from None
        store = cls(pool=pool, name=name, clock=clock)
        try:
            if migrate:
                await store.migrate()
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await self._pool.close()
        except TimeoutError:
            self._pool.terminate()  # a call stuck on a dead server must not hold up shutdown

    async def ping(self) -> None:
        async with self._connection() as db:
            await db.fetchval("SELECT 1", timeout=CONNECT_TIMEOUT_SECONDS)

    async def migrate(self) -> builtins.list[int]:
        async with self._connection() as db:
            return await apply_migrations(db, MIGRATIONS, now=self._clock())

    # --- outbox -------------------------------------------------------------------------------

    async def enqueue(self, item: OutboxItem) -> str:
        headers = dump_headers(replayable_headers(item.headers))
        async with self._connection() as db:
            # A lost race with a writer whose item then died or was dropped leaves the key free:
            # try again. Each round either inserts or finds a holder, so two rounds almost always do.
            for _ in range(5):
                # No conflict target: both the id (a retried enqueue of the same request) and the
                # live-key index may conflict, and either means "already queued".
                inserted = await db.fetchval(
                    """INSERT INTO outbox (id, protocol, method, path, headers, body, client,
                           account_preference, idempotency_key, status, attempts, created_at,
                           next_attempt_at, expires_at, updated_at, correlation_id, fingerprint)
                       VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, 'pending', 0, $10, $11, $12, $10, $13,
                               $14)
                       ON CONFLICT DO NOTHING RETURNING id""",
                    item.id, item.protocol, item.method, item.path, headers, item.body, item.client,
                    item.account_preference, item.idempotency_key, item.created_at, item.next_attempt_at,
                    item.expires_at, item.correlation_id, item.fingerprint)
                if inserted is not None or item.idempotency_key is None:
                    return item.id
                holder = await db.fetchval(
                    """SELECT id FROM outbox WHERE client = $1 AND idempotency_key = $2
                       AND status IN ('pending', 'leased', 'delivered')""", item.client, item.idempotency_key)
                if holder is not None:
                    return str(holder)
                if await db.fetchval("SELECT true FROM outbox WHERE id = $1", item.id):
                    return item.id
        raise StoreError(f"outbox item {item.id}: its idempotency key kept changing hands; try again")

    async def lease_due(self, owner: str, now: float, lease_seconds: float, limit: int,
                        lane: Lane = ALL_ITEMS) -> builtins.list[OutboxItem]:
        if limit <= 0:
            return []
        # A lease past `lease_until` belongs to a worker that died or stalled, and is taken over.
        async with self._connection() as db:
            rows = await db.fetch(
                """WITH due AS (
                       SELECT id FROM outbox
                       WHERE ((status = 'pending' AND next_attempt_at <= $3)
                              OR (status = 'leased' AND lease_until <= $3))
                         AND ($5::text[] IS NULL OR protocol = ANY($5::text[]))
                         AND NOT (protocol = ANY($6::text[]))
                       ORDER BY next_attempt_at, created_at LIMIT $4
                       FOR UPDATE SKIP LOCKED)
                   UPDATE outbox SET status = 'leased', lease_owner = $1, lease_until = $2,
                          attempts = outbox.attempts + 1, updated_at = $3
                   FROM due WHERE outbox.id = due.id
                   RETURNING outbox.*""",
                owner, now + lease_seconds, now, limit, _only(lane), list(lane.excluding))
        items = [item_from_row(row) for row in rows]
        items.sort(key=lambda i: (i.next_attempt_at, i.created_at))
        return items

    async def mark_delivered(self, item_id: str, owner: str, result: Delivered) -> None:
        async with self._connection() as db:
            status = await db.execute(
                f"""UPDATE outbox SET status = 'delivered', lease_owner = NULL, lease_until = NULL,
                       result_status = $1, result_body = $2, result_account = $3, updated_at = $4,
                       {_FORGET_SECRET_BODY}
                   WHERE id = $5 AND status IN ('pending', 'leased')""",  # noqa: S608 (a fixed clause)
                result.status_code, result.body[:RESULT_SNIPPET_BYTES], result.account, self._clock(), item_id)
            if _row_count(status) == 0:
                await _explain_miss(db, item_id, owner, ok_if=OutboxStatus.DELIVERED)

    async def reschedule(self, item_id: str, owner: str, next_attempt_at: float, error: str) -> None:
        await self._finish_lease(item_id, owner, OutboxStatus.PENDING, next_attempt_at, error)

    async def mark_dead(self, item_id: str, owner: str, reason: str) -> None:
        await self._finish_lease(item_id, owner, OutboxStatus.DEAD, None, reason)

    async def release_leases(self, owner: str) -> int:
        async with self._connection() as db:
            return _row_count(await db.execute(
                """UPDATE outbox SET status = 'pending', lease_owner = NULL, lease_until = NULL,
                       updated_at = $1
                   WHERE status = 'leased' AND lease_owner = $2""", self._clock(), owner))

    async def get(self, item_id: str) -> OutboxItem | None:
        async with self._connection() as db:
            row = await db.fetchrow("SELECT * FROM outbox WHERE id = $1", item_id)
        return None if row is None else item_from_row(row)

    async def find_by_key(self, client: str, idempotency_key: str) -> OutboxItem | None:
        async with self._connection() as db:
            row = await db.fetchrow(
                """SELECT * FROM outbox WHERE client = $1 AND idempotency_key = $2
                   AND status IN ('pending', 'leased', 'delivered')""", client, idempotency_key)
        return None if row is None else item_from_row(row)

    async def list(self, status: OutboxStatus | None = None, limit: int = 100) -> builtins.list[OutboxItem]:
        async with self._connection() as db:
            if status is None:
                rows = await db.fetch("SELECT * FROM outbox ORDER BY created_at, id LIMIT $1", limit)
            else:
                rows = await db.fetch("SELECT * FROM outbox WHERE status = $1 ORDER BY created_at, id LIMIT $2",
                                      status.value, limit)
        return [item_from_row(row) for row in rows]

    async def retry_now(self, item_id: str) -> bool:
        now = self._clock()
        async with self._connection() as db:
            try:
                # A revived dead item gets its original lifetime again, or it would die at once.
                return _row_count(await db.execute(
                    """UPDATE outbox SET status = 'pending', next_attempt_at = $1, updated_at = $1,
                           expires_at = CASE WHEN status = 'dead' THEN $1 + (expires_at - created_at)
                                             ELSE expires_at END
                       WHERE id = $2 AND status IN ('pending', 'dead')""", now, item_id)) > 0
            except asyncpg.UniqueViolationError:
                return False  # a newer item holds its idempotency key now; reviving it could send twice

    async def drop(self, item_id: str) -> bool:
        async with self._connection() as db:
            return _row_count(await db.execute("DELETE FROM outbox WHERE id = $1", item_id)) > 0

    async def depth(self) -> int:
        async with self._connection() as db:
            return int(await db.fetchval("SELECT count(*) FROM outbox WHERE status IN ('pending', 'leased')"))

    async def oldest_pending_age(self, now: float) -> float | None:
        async with self._connection() as db:
            oldest = await db.fetchval("SELECT min(created_at) FROM outbox WHERE status IN ('pending', 'leased')")
        return None if oldest is None else max(0.0, now - float(oldest))

    async def next_due(self, lane: Lane = ALL_ITEMS) -> float | None:
        async with self._connection() as db:
            due = await db.fetchval("""
                SELECT least(
                    (SELECT min(next_attempt_at) FROM outbox WHERE status = 'pending'
                        AND ($1::text[] IS NULL OR protocol = ANY($1::text[]))
                        AND NOT (protocol = ANY($2::text[]))),
                    (SELECT min(lease_until) FROM outbox WHERE status = 'leased'
                        AND ($1::text[] IS NULL OR protocol = ANY($1::text[]))
                        AND NOT (protocol = ANY($2::text[]))))""",
                                    _only(lane), list(lane.excluding))
        return None if due is None else float(due)

    # --- idempotency --------------------------------------------------------------------------

    async def idempotency_get(self, key: str) -> IdempotencyRecord | None:
        async with self._connection() as db:
            row = await db.fetchrow("SELECT * FROM idempotency WHERE key = $1 AND expires_at > $2",
                                    key, self._clock())
        return None if row is None else record_from_row(row)

    async def idempotency_put(self, key: str, status_code: int, headers: Headers, body: bytes,
                              expires_at: float, *, fingerprint: str | None = None) -> IdempotencyRecord:
        now = self._clock()
        headers_json = dump_headers(replayable_headers(headers))
        async with self._connection() as db:
            for _ in range(5):
                # First writer wins; an expired record no longer counts as a writer. The conflicting
                # row is locked, so of two writers replacing an expired record only one does.
                row = await db.fetchrow(
                    """INSERT INTO idempotency (key, status_code, headers, body, created_at, expires_at, fingerprint)
                       VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7)
                       ON CONFLICT (key) DO UPDATE SET status_code = excluded.status_code,
                           headers = excluded.headers, body = excluded.body,
                           created_at = excluded.created_at, expires_at = excluded.expires_at,
                           fingerprint = excluded.fingerprint
                       WHERE idempotency.expires_at <= excluded.created_at
                       RETURNING *""", key, status_code, headers_json, body, now, expires_at, fingerprint)
                if row is None:  # a live record holds: return it (unless purged meanwhile: go again)
                    row = await db.fetchrow("SELECT * FROM idempotency WHERE key = $1", key)
                if row is not None:
                    return record_from_row(row)
        raise StoreError(f"idempotency record {key!r} kept disappearing (purged while written); try again")

    async def idempotency_settle(self, key: str, claim: bytes, *, status_code: int | None, headers: Headers = (),
                                 body: bytes = b"", expires_at: float = 0.0) -> bool:
        async with self._connection() as db:
            if status_code is None:
                done = await db.execute(
                    "DELETE FROM idempotency WHERE key = $1 AND status_code = 0 AND body = $2", key, claim)
            else:
                done = await db.execute(
                    """UPDATE idempotency SET status_code = $1, headers = $2::jsonb, body = $3, expires_at = $4
                       WHERE key = $5 AND status_code = 0 AND body = $6""",
                    status_code, dump_headers(replayable_headers(headers)), body, expires_at, key, claim)
        return _row_count(done) == 1

    async def shared_get(self, key: str) -> SharedValue | None:
        async with self._connection() as db:
            row = await db.fetchrow("SELECT value, updated_at, replica FROM shared_state WHERE key = $1", key)
        return None if row is None else SharedValue(row["value"], row["updated_at"], row["replica"])

    async def shared_put(self, key: str, value: str, *, updated_at: float, replica: str) -> None:
        async with self._connection() as db:
            await db.execute(
                """INSERT INTO shared_state (key, value, updated_at, replica) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at,
                       replica = excluded.replica
                   WHERE shared_state.updated_at <= excluded.updated_at""", key, value, updated_at, replica)

    # --- revoked credentials ------------------------------------------------------------------

    async def revoke(self, token_hash: str, expires_at: float) -> None:
        async with self._connection() as db:
            await db.execute(
                """INSERT INTO revocations (token_hash, expires_at) VALUES ($1, $2)
                   ON CONFLICT (token_hash) DO UPDATE
                   SET expires_at = greatest(revocations.expires_at, excluded.expires_at)""", token_hash, expires_at)

    async def spend(self, token_hash: str, expires_at: float) -> bool:
        async with self._connection() as db:
            return _row_count(await db.execute(
                """INSERT INTO revocations (token_hash, expires_at) VALUES ($1, $2)
                   ON CONFLICT (token_hash) DO NOTHING""", token_hash, expires_at)) == 1

    async def is_revoked(self, token_hash: str) -> bool:
        async with self._connection() as db:
            return bool(await db.fetchval(
                "SELECT true FROM revocations WHERE token_hash = $1 AND expires_at > $2", token_hash, self._clock()))

    async def purge_expired(self, now: float, *, finished_before: float | None = None) -> PurgeCount:
        async with self._connection() as db, db.transaction():
            records = _row_count(await db.execute("DELETE FROM idempotency WHERE expires_at <= $1", now))
            revocations = _row_count(await db.execute("DELETE FROM revocations WHERE expires_at <= $1", now))
            items = messages = 0
            if finished_before is not None:
                items = _row_count(await db.execute(
                    "DELETE FROM outbox WHERE status IN ('delivered', 'dead') AND updated_at < $1",
                    finished_before))
                # Their history goes with them (ON DELETE CASCADE).
                messages = _row_count(await db.execute("DELETE FROM messages WHERE updated_at < $1",
                                                       finished_before))
        return PurgeCount(idempotency_records=records, outbox_items=items, messages=messages,
                          revocations=revocations)

    # --- messages -----------------------------------------------------------------------------

    async def message_create(self, message: MessageRecord, *, event: MessageEvent,
                             enqueue: tuple[OutboxItem, ...] = ()) -> None:
        async with self._connection() as db, db.transaction():
            await _insert_message(db, message, event)
            for item in enqueue:
                await _insert_item(db, item)

    async def message_get(self, message_id: str) -> MessageRecord | None:
        async with self._connection() as db:
            row = await db.fetchrow("SELECT * FROM messages WHERE id = $1", message_id)
        return None if row is None else message_from_row(row)

    async def message_find(self, client: str, submitter_id: str) -> builtins.list[MessageRecord]:
        async with self._connection() as db:
            rows = await db.fetch(
                """SELECT * FROM messages WHERE client = $1 AND submitter_id = $2
                   ORDER BY created_at, fwd_from IS NOT NULL, id LIMIT 100""",
                client, submitter_id)
        return [message_from_row(row) for row in rows]

    async def message_events(self, message_id: str) -> builtins.list[MessageEvent]:
        async with self._connection() as db:
            rows = await db.fetch("SELECT * FROM message_events WHERE message_id = $1 ORDER BY id", message_id)
        return [event_from_row(row) for row in rows]

    async def message_change(self, change: MessageChange) -> bool:
        async with self._connection() as db, db.transaction():
            # READ COMMITTED re-checks the WHERE clause on the row lock, so of two replicas changing the
            # message from the same status only the first does; the second sees the new status.
            changed = await db.fetchval(
                """UPDATE messages SET status = $1, updated_at = $2, upstream = coalesce($3, upstream),
                       upstream_message_id = coalesce($4, upstream_message_id), fwd_to = coalesce($5, fwd_to),
                       source = coalesce($6, source)
                   WHERE id = $7 AND status = ANY($8::text[])
                   RETURNING true""",
                change.status.value, change.event.at, change.upstream, change.upstream_message_id, change.fwd_to,
                change.source, change.message_id, sorted(s.value for s in change.from_statuses))
            if not changed:
                return False
            await db.execute(_INSERT_EVENT, *event_values(change.event))
            if change.insert is not None:
                assert change.insert_event is not None
                await _insert_message(db, change.insert, change.insert_event)
            for item in change.enqueue:
                await _insert_item(db, item)
        return True

    async def message_note(self, event: MessageEvent) -> None:
        async with self._connection() as db:
            await db.execute(_INSERT_EVENT, *event_values(event))

    # --- failure entries ----------------------------------------------------------------------

    async def record_failure(self, failure: NewFailure) -> FailureRecord:
        async with self._connection() as db:
            row = await db.fetchrow(_INSERT_FAILURE, *failure_values(failure, now=self._clock()))
        assert row is not None
        return failure_from_row(row)

    async def add_delivery_failure(self, failure: NewFailure, *, snippet: str) -> FailureRecord:
        async with self._connection() as db, db.transaction():
            found = await db.fetchrow(
                """SELECT * FROM failures WHERE client = $1 AND send_id = $2 AND send_id <> ''
                   ORDER BY id DESC LIMIT 1 FOR UPDATE""", failure.client, failure.send_id)
            if found is None:
                fresh = dataclasses.replace(failure, primary_error=appended(failure.primary_error, snippet))
                row = await db.fetchrow(_INSERT_FAILURE, *failure_values(fresh, now=self._clock()))
            else:
                entry = failure_from_row(found)
                row = await db.fetchrow(
                    """UPDATE failures SET code = code | $1, primary_error = $2, secondary_at = $3,
                           secondary_error = $4, revision = revision + 1, updated_at = $5
                       WHERE id = $6 RETURNING *""",
                    failure.code, appended(entry.primary_error, snippet), failure.secondary_at,
                    failure.secondary_error, self._clock(), entry.id)
        assert row is not None
        return failure_from_row(row)

    async def failure(self, entry_id: int) -> FailureRecord | None:
        async with self._connection() as db:
            row = await db.fetchrow("SELECT * FROM failures WHERE id = $1", entry_id)
        return failure_from_row(row) if row is not None else None

    async def failures(self, query: FailureQuery) -> builtins.list[FailureRecord]:
        clause, args = where(query, lambda n: f"${n}")
        n = len(args)
        async with self._connection() as db:
            rows = await db.fetch(
                f"SELECT * FROM failures {clause} ORDER BY primary_at DESC, id DESC LIMIT ${n + 1} OFFSET ${n + 2}",  # noqa: S608
                *args, query.limit, query.offset)
        return [failure_from_row(row) for row in rows]

    async def count_failures(self, query: FailureQuery) -> int:
        clause, args = where(query, lambda n: f"${n}")
        async with self._connection() as db:
            return int(await db.fetchval(f"SELECT count(*) FROM failures {clause}", *args))  # noqa: S608

    async def failure_hours(self, query: FailureQuery) -> builtins.list[tuple[float, int, int]]:
        clause, args = where(query, lambda n: f"${n}")
        async with self._connection() as db:
            rows = await db.fetch(
                f"""SELECT floor(primary_at / 3600) * 3600 AS hour, code, count(*) AS n
                    FROM failures {clause} GROUP BY 1, 2 ORDER BY 1""", *args)  # noqa: S608
        return [(float(row["hour"]), int(row["code"]), int(row["n"])) for row in rows]

    async def failures_to_post(self, client: str, limit: int) -> builtins.list[FailureRecord]:
        async with self._connection() as db:
            rows = await db.fetch(
                "SELECT * FROM failures WHERE client = $1 AND revision > posted_revision ORDER BY id LIMIT $2",
                client, limit)
        return [failure_from_row(row) for row in rows]

    async def mark_failures_posted(self, posted: Sequence[tuple[int, int]]) -> None:
        async with self._connection() as db, db.transaction():
            await db.executemany(
                "UPDATE failures SET posted_revision = greatest(posted_revision, $1) WHERE id = $2",
                [(revision, entry_id) for entry_id, revision in posted])

    async def lease_poster(self, client: str, owner: str, now: float, seconds: float) -> bool:
        async with self._connection() as db:
            row = await db.fetchrow(
                """INSERT INTO failure_posters (client, owner, lease_until) VALUES ($1, $2, $3)
                   ON CONFLICT (client) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until
                   WHERE failure_posters.lease_until < $4 OR failure_posters.owner = excluded.owner
                   RETURNING owner""", client, owner, now + seconds, now)
        return row is not None

    async def release_poster(self, client: str, owner: str) -> None:
        async with self._connection() as db:
            await db.execute("UPDATE failure_posters SET lease_until = 0 WHERE client = $1 AND owner = $2",
                             client, owner)

    async def purge_failures(self, before: float) -> int:
        async with self._connection() as db:
            return _row_count(await db.execute("DELETE FROM failures WHERE primary_at < $1", before))

    # --- internals ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Pooled]:
        """A pooled connection; driver errors inside the block become StoreError."""
        if self._closed:
            raise StoreError(f"store {self.name} is closed")
        with _translated(self.name):
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT_SECONDS) as db:
                yield db

    async def _finish_lease(self, item_id: str, owner: str, status: OutboxStatus,
                            next_attempt_at: float | None, error: str) -> None:
        """End `owner`'s lease: back to pending at `next_attempt_at` (kept when None), or dead."""
        async with self._connection() as db:
            result = await db.execute(
                f"""UPDATE outbox SET status = $1, lease_owner = NULL, lease_until = NULL, updated_at = $2,
                       next_attempt_at = coalesce($3, next_attempt_at), last_error = $4,
                       {_FORGET_SECRET_BODY if status is OutboxStatus.DEAD else "body = body"}
                   WHERE id = $5 AND status = 'leased' AND lease_owner = $6""",  # noqa: S608 (fixed clauses)
                status.value, self._clock(), next_attempt_at, error, item_id, owner)
            if _row_count(result) == 0:
                await _explain_miss(db, item_id, owner)


_INSERT_EVENT = """INSERT INTO message_events (message_id, at, kind, status, description, error_code)
                   VALUES ($1, $2, $3, $4, $5, $6)"""
_INSERT_MESSAGE = (f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) "  # noqa: S608 (fixed column names)
                   f"VALUES ({', '.join(f'${n}' for n in range(1, len(MESSAGE_COLUMNS) + 1))})")


async def _insert_message(db: Connection, message: MessageRecord, event: MessageEvent) -> None:
    await db.execute(_INSERT_MESSAGE, *message_values(message))
    await db.execute(_INSERT_EVENT, *event_values(event))


async def _insert_item(db: Connection, item: OutboxItem) -> None:
    """An outbox item the gateway made itself (no idempotency key to check); its id makes it once."""
    await db.execute(
        """INSERT INTO outbox (id, protocol, method, path, headers, body, client, account_preference,
               idempotency_key, status, attempts, created_at, next_attempt_at, expires_at, updated_at,
               correlation_id, fingerprint)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, 'pending', 0, $10, $11, $12, $10, $13, $14)
           ON CONFLICT (id) DO NOTHING""",
        item.id, item.protocol, item.method, item.path, dump_headers(replayable_headers(item.headers)), item.body,
        item.client, item.account_preference, item.idempotency_key, item.created_at, item.next_attempt_at,
        item.expires_at, item.correlation_id, item.fingerprint)


async def apply_migrations(db: Connection, migrations: Sequence[Migration], *, now: float) -> list[int]:
    """Apply the migrations `db`'s schema lacks, all in one transaction; return the versions applied.

    Concurrent callers on the same schema wait for each other, so each step is applied once.
    """
    check_sequence(migrations)
    timeout = MIGRATION_TIMEOUT_SECONDS
    async with db.transaction():
        # Released at commit or rollback, so a crashed opener never leaves it held.
        await db.execute("SELECT pg_advisory_xact_lock($1, hashtext(coalesce(current_schema(), '')))",
                         MIGRATION_LOCK_CLASS, timeout=timeout)
        await db.execute("""CREATE TABLE IF NOT EXISTS schema_version (
            version integer PRIMARY KEY, name text NOT NULL, applied_at double precision NOT NULL)""",
                         timeout=timeout)
        current = int(await db.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
        if current > len(migrations):
            raise StoreError(f"store schema version {current} is newer than this gateway knows "
                             f"({len(migrations)}); upgrade the gateway before opening this store")
        applied: list[int] = []
        for migration in migrations[current:]:
            for statement in migration.statements:
                await db.execute(statement, timeout=timeout)
            await db.execute("INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                             migration.version, migration.name, now)
            applied.append(migration.version)
    return applied


@contextlib.contextmanager
def _translated(name: str) -> Iterator[None]:
    """Driver errors as StoreError, most specific first; the gateway's own StoreErrors pass through."""
    try:
        yield
    except StoreError:
        raise
    except asyncpg.PostgresError as exc:  # the server answered with an error
        raise StoreError(f"store {name}: the database refused: {type(exc).__name__}: {exc}") from exc
    except TimeoutError as exc:  # pool acquire (connect) or command timeout; before OSError, its base
        raise StoreError(f"store {name}: the database did not answer in time") from exc
    except (asyncpg.InterfaceError, OSError) as exc:  # includes ConnectionDoesNotExistError
        raise StoreError(f"store {name}: lost or could not open a connection: {exc or type(exc).__name__}"
                         ) from exc


async def _keep_session(db: Connection) -> None:
    """Reset nothing when a connection returns to the pool (the pool still rolls back a transaction).

    The store sets no session state (no SET, LISTEN, cursors or session advisory locks), so the
    default `RESET ALL; UNLISTEN *; ...` round trip on every release would buy nothing.
    """


async def _explain_miss(db: Connection, item_id: str, owner: str, ok_if: OutboxStatus | None = None) -> None:
    row = await db.fetchrow("SELECT status, lease_owner FROM outbox WHERE id = $1", item_id)
    if row is None:
        raise ItemNotFound(f"outbox item {item_id} does not exist (dropped or purged)")
    if ok_if is not None and row["status"] == ok_if.value:
        return
    raise LeaseLost(f"outbox item {item_id} is {row['status']} (lease owner {row['lease_owner']}), "
                    f"no longer leased by {owner}")


def _only(lane: Lane) -> list[str] | None:
    return None if lane.only is None else list(lane.only)


def _row_count(command_status: str) -> int:
    """Rows an UPDATE or DELETE touched, from its command tag ("UPDATE 3")."""
    return int(command_status.rsplit(" ", 1)[-1])


def _query_keys(url: str) -> set[str]:
    return set(parse_qs(urlsplit(url).query))


def _scrub(message: str, url: str) -> str:
    """`message` with every spelling of the URL's password masked."""
    parts = urlsplit(url)
    secrets = {parts.password or "", *parse_qs(parts.query).get("password", [])}
    for secret in sorted(secrets | {unquote(s) for s in secrets}, key=len, reverse=True):
        if secret:
            message = message.replace(secret, "***")
    return message


_INSERT_FAILURE = (f"INSERT INTO failures ({', '.join(FAILURE_COLUMNS)}) "  # noqa: S608 (fixed column names)
                   f"VALUES ({', '.join(f'${n}' for n in range(1, len(FAILURE_COLUMNS) + 1))}) RETURNING *")
