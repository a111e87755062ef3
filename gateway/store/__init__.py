"""Shared gateway state behind one protocol: `open_store(url)` returns a `Store`.

URLs: `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, or a bare file path. PostgreSQL
(`postgresql://...`) is the next backend; until it lands such a URL is a configuration error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gateway.errors import ConfigError
from gateway.store.base import (
    Delivered,
    Headers,
    IdempotencyRecord,
    ItemNotFound,
    LeaseLost,
    OutboxItem,
    OutboxStatus,
    PurgeCount,
    Store,
    StoreError,
    replayable_headers,
)

__all__ = [
    "Delivered", "Headers", "IdempotencyRecord", "ItemNotFound", "LeaseLost", "OutboxItem", "OutboxStatus",
    "PurgeCount", "Store", "StoreError", "migrate", "open_store", "replayable_headers", "sqlite_path",
]

_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg")


def sqlite_path(url: str) -> Path:
    """The database file a store URL names; raises ConfigError for anything but a SQLite file."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in _POSTGRES_SCHEMES:
        raise ConfigError([f"store: {_redact(url)}: PostgreSQL is not supported yet; "
                           "use sqlite:///path/to/gateway.db"])
    if scheme == "":
        raw = url
    elif scheme == "sqlite":
        # SQLAlchemy's convention: three slashes then a relative path, four for an absolute one.
        raw = unquote(urlsplit(url).path)[1:]
    else:
        raise ConfigError([f"store: {_redact(url)}: unknown scheme {scheme!r}; use sqlite:///path/to/gateway.db"])
    if raw.strip() in ("", ":memory:") or raw.startswith("file:"):
        raise ConfigError([f"store: {url!r}: give a database file path; an in-memory store would lose "
                           "queued sends at every restart"])
    return Path(raw)


async def open_store(url: str, *, clock: Callable[[], float] = time.time, migrate: bool = True) -> Store:
    """Open the store a URL names and bring its schema up to date (unless `migrate=False`).

    The caller owns the store and must `await store.close()`.
    """
    from gateway.store.sqlite import SQLiteStore

    return await SQLiteStore.open(sqlite_path(url), clock=clock, migrate=migrate)


async def migrate(url: str) -> list[int]:
    """Apply missing schema migrations to the store a URL names; return the versions applied."""
    store = await open_store(url, migrate=False)
    try:
        return await store.migrate()
    finally:
        await store.close()


def _redact(url: str) -> str:
    """The URL without its password, fit for an error message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()
