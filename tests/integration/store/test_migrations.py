"""Schema migrations: applied at open, exactly once, and never to a newer schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from gateway.store import StoreError, migrate, open_store
from gateway.store.migrations.sqlite import MIGRATIONS
from gateway.store.sqlite import apply_migrations


def _versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version")]


async def _create_at_version(path: Path, version: int) -> None:
    async with aiosqlite.connect(path, isolation_level=None) as db:
        assert await apply_migrations(db, MIGRATIONS[:version], now=1.0) == list(range(1, version + 1))


async def test_opening_an_old_version_database_applies_the_missing_migration_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    await _create_at_version(path, 1)
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("""INSERT INTO outbox (id, protocol, method, path, headers, body, client, status,
                            created_at, next_attempt_at, expires_at, updated_at)
                            VALUES ('old-1', 'rest', 'POST', '/p', '[]', x'00', 'app', 'pending',
                                    1, 1, 9e9, 1)""")

    store = await open_store(str(path))
    try:
        assert _versions(path) == [m.version for m in MIGRATIONS]
        assert await store.migrate() == []  # already current: nothing runs twice
        assert (await store.get("old-1")) is not None  # data of the old schema is kept
        assert (await store.idempotency_put("k", 200, (), b"", 9e9)).status_code == 200  # table of v2 exists
    finally:
        await store.close()

    assert await migrate(str(path)) == []
    assert _versions(path) == [m.version for m in MIGRATIONS]


async def test_migrate_entry_point_creates_a_fresh_database(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "new.db"
    assert await migrate(f"sqlite:///{path}") == [m.version for m in MIGRATIONS]
    assert _versions(path) == [m.version for m in MIGRATIONS]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_database_newer_than_the_gateway_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    await migrate(str(path))
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version VALUES (?, 'from the future', 0)", (len(MIGRATIONS) + 1,))
    with pytest.raises(StoreError, match="upgrade the gateway"):
        await open_store(str(path))


async def test_a_failing_migration_leaves_the_database_unchanged(tmp_path: Path) -> None:
    from gateway.store.migrations import Migration

    path = tmp_path / "broken.db"
    await _create_at_version(path, 1)
    broken = (*MIGRATIONS[:1], Migration(2, "broken", ("CREATE TABLE t (x)", "THIS IS NOT SQL")))
    async with aiosqlite.connect(path, isolation_level=None) as db:
        with pytest.raises(sqlite3.OperationalError):
            await apply_migrations(db, broken, now=1.0)
    assert _versions(path) == [1]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'").fetchone()[0] == 0
