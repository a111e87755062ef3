"""PostgreSQL schema migrations: applied at open, once however many replicas open together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import pytest

from gateway.store import StoreError, migrate, open_store, scoped_key
from gateway.store.migrations import Migration
from gateway.store.migrations.postgres import MIGRATIONS
from gateway.store.postgres import MIGRATION_LOCK_CLASS, apply_migrations
from tests.integration.store.conftest import V5_OUTBOX_ROWS, assert_v5_outbox_migrated
from tests.support.stores import POSTGRES_ADMIN_URL, connect_admin, postgres_schema

ALL = [m.version for m in MIGRATIONS]


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with postgres_schema() as url:
        yield url


@pytest.fixture
async def schema_db(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection whose search path is the test's schema."""
    db = await asyncpg.connect(POSTGRES_ADMIN_URL, server_settings={"search_path": _schema(pg_url)})
    try:
        yield db
    finally:
        await db.close()


def _schema(url: str) -> str:
    return dict(parse_qsl(urlsplit(url).query))["search_path"]


async def _versions(db: asyncpg.Connection) -> list[int]:
    return [row["version"] for row in await db.fetch("SELECT version FROM schema_version ORDER BY version")]


async def test_replicas_opening_a_fresh_database_together_apply_each_migration_once(
        pg_url: str, schema_db: asyncpg.Connection) -> None:
    applied = await asyncio.gather(*(migrate(pg_url) for _ in range(8)))
    assert sorted(applied) == [[]] * 7 + [ALL]
    assert await _versions(schema_db) == ALL

    stores = await asyncio.gather(*(open_store(pg_url) for _ in range(4)))  # and open_store migrates
    for store in stores:
        await store.close()
    assert await _versions(schema_db) == ALL


async def test_an_opener_waits_while_another_holds_the_migration_lock(
        pg_url: str, schema_db: asyncpg.Connection) -> None:
    admin = await connect_admin()
    try:
        async with admin.transaction():
            await admin.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", MIGRATION_LOCK_CLASS,
                                _schema(pg_url))
            opening = asyncio.create_task(migrate(pg_url))
            await asyncio.sleep(0.3)
            assert not opening.done()
            assert await schema_db.fetchval("SELECT to_regclass('schema_version')") is None
            # Another schema's migration does not wait for this one's lock.
            async with postgres_schema() as other:
                assert await asyncio.wait_for(migrate(other), timeout=10) == ALL
        assert await asyncio.wait_for(opening, timeout=10) == ALL
    finally:
        await admin.close()


async def test_opening_an_old_version_database_applies_the_missing_migration_once(
        pg_url: str, schema_db: asyncpg.Connection) -> None:
    assert await apply_migrations(schema_db, MIGRATIONS[:1], now=1.0) == [1]
    await schema_db.execute("""INSERT INTO outbox (id, protocol, method, path, headers, body, client, status,
                               created_at, next_attempt_at, expires_at, updated_at)
                               VALUES ('old-1', 'rest', 'POST', '/p', '[]', '\\x00', 'app', 'pending',
                                       1, 1, 9e9, 1)""")
    store = await open_store(pg_url)
    try:
        assert await _versions(schema_db) == ALL
        assert await store.migrate() == []  # already current: nothing runs twice
        assert (await store.get("old-1")) is not None  # data of the old schema is kept
        assert (await store.idempotency_put("k", 200, (), b"", 9e9)).status_code == 200  # table of v2 exists
    finally:
        await store.close()
    assert await migrate(pg_url) == []


async def test_a_database_newer_than_the_gateway_is_refused(pg_url: str, schema_db: asyncpg.Connection) -> None:
    await migrate(pg_url)
    await schema_db.execute("INSERT INTO schema_version VALUES ($1, 'from the future', 0)", len(MIGRATIONS) + 1)
    with pytest.raises(StoreError, match="upgrade the gateway"):
        await open_store(pg_url)


async def test_a_failing_migration_leaves_the_database_unchanged(schema_db: asyncpg.Connection) -> None:
    await apply_migrations(schema_db, MIGRATIONS[:1], now=1.0)
    broken = (*MIGRATIONS[:1], Migration(2, "broken", ("CREATE TABLE t (x int)", "THIS IS NOT SQL")))
    with pytest.raises(asyncpg.PostgresSyntaxError):
        await apply_migrations(schema_db, broken, now=1.0)
    assert await _versions(schema_db) == [1]
    assert await schema_db.fetchval("SELECT to_regclass('t')") is None


async def test_migration_6_rescopes_idempotency_records_and_forgets_sent_receipt_tokens(
        pg_url: str, schema_db: asyncpg.Connection) -> None:
    assert await apply_migrations(schema_db, MIGRATIONS[:5], now=1.0) == [1, 2, 3, 4, 5]
    for key in ("app:order-1", "app:with:colons"):
        await schema_db.execute("INSERT INTO idempotency VALUES ($1, 200, '[]', '{}', 1, 9e9)", key)
    for item_id, protocol, status in V5_OUTBOX_ROWS:
        await schema_db.execute(
            """INSERT INTO outbox (id, protocol, method, path, headers, body, client, status,
               created_at, next_attempt_at, expires_at, updated_at)
               VALUES ($1, $2, 'POST', '/p', '[]', 'token', 'app', $3, 1, 1, 9e9, 1)""", item_id, protocol, status)
    store = await open_store(pg_url)
    try:
        for key in ("order-1", "with:colons"):
            record = await store.idempotency_get(scoped_key("app", key))
            assert record is not None and record.body == b"{}"
        await assert_v5_outbox_migrated(store)
    finally:
        await store.close()
