"""Shared gateway state behind one protocol: `open_store(url)` returns a `Store`.

URLs: `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, or a bare file path for SQLite;
`postgresql://user:password@host:5432/db` (also `postgres://`, `postgresql+asyncpg://`) for
PostgreSQL, where query parameters libpq does not define become session settings
(`?search_path=gateway` puts the tables in schema `gateway`). No error or log shows the password.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from gateway.errors import ConfigError, ItemNotFound, LeaseLost, StoreError
from gateway.store.base import (
    Delivered,
    Headers,
    IdempotencyRecord,
    Lane,
    MessageChange,
    MessageEvent,
    MessageRecord,
    MessageStatus,
    OutboxItem,
    OutboxProtocol,
    OutboxStatus,
    PurgeCount,
    SharedValue,
    Store,
    new_request_id,
    replayable_headers,
    scoped_key,
)
from gateway.store.failures import FailureQuery, FailureRecord, NewFailure

__all__ = [
    "Delivered",
    "FailureQuery",
    "FailureRecord",
    "Headers",
    "IdempotencyRecord",
    "ItemNotFound",
    "Lane",
    "LeaseLost",
    "MessageChange",
    "MessageEvent",
    "MessageRecord",
    "MessageStatus",
    "NewFailure",
    "OutboxItem",
    "OutboxProtocol",
    "OutboxStatus",
    "PurgeCount",
    "SharedValue",
    "Store",
    "StoreError",
    "migrate",
    "new_request_id",
    "open_store",
    "postgres_url",
    "redact_url",
    "replayable_headers",
    "scoped_key",
    "sqlite_path",
]

# The driver named in a SQLAlchemy-style scheme does not matter: the rest of the URL is libpq's.
_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg")


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def postgres_url(url: str) -> str | None:
    """The libpq URL (`postgresql://...`) a PostgreSQL store URL names, or None for other URLs."""
    if _scheme(url) not in _POSTGRES_SCHEMES:
        return None
    return "postgresql://" + url.split("://", 1)[1]


def sqlite_path(url: str) -> Path:
    """The database file a store URL names; raises ConfigError for anything but a SQLite file."""
    scheme = _scheme(url)
    if scheme in _POSTGRES_SCHEMES:
        raise ConfigError([f"store: {redact_url(url)}: a PostgreSQL URL does not name a SQLite file"])
    if scheme == "":
        raw = url
    elif scheme == "sqlite":
        # SQLAlchemy's convention: three slashes then a relative path, four for an absolute one.
        raw = unquote(urlsplit(url).path)[1:]
    else:
        raise ConfigError([f"store: {redact_url(url)}: unknown scheme {scheme!r}; "
                           "use sqlite:///path/to/gateway.db or postgresql://user@host/db"])
    if raw.strip() in ("", ":memory:") or raw.startswith("file:"):
        raise ConfigError([f"store: {redact_url(url)!r}: give a database file path; an in-memory store would lose "
                           "queued sends at every restart"])
    return Path(raw)


async def open_store(url: str, *, clock: Callable[[], float] = time.time, migrate: bool = True) -> Store:
    """Open the store a URL names and bring its schema up to date (unless `migrate=False`).

    The caller owns the store and must `await store.close()`.
    """
    # Backends are imported on use: a SQLite deployment never loads the PostgreSQL driver.
    if (libpq_url := postgres_url(url)) is not None:
        from gateway.store.postgres import PostgresStore

        return await PostgresStore.open(libpq_url, clock=clock, migrate=migrate)
    from gateway.store.sqlite import SQLiteStore

    return await SQLiteStore.open(sqlite_path(url), clock=clock, migrate=migrate)


async def migrate(url: str) -> list[int]:
    """Apply missing schema migrations to the store a URL names; return the versions applied."""
    store = await open_store(url, migrate=False)
    try:
        return await store.migrate()
    finally:
        await store.close()


def redact_url(url: str) -> str:
    """The URL with its password (in the user part or a `password=` parameter) masked, fit for a message."""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1))
        query = parse_qsl(parts.query, keep_blank_values=True)
        if any(name == "password" for name, _ in query):
            masked = [(name, "***" if name == "password" else value) for name, value in query]
            parts = parts._replace(query=urlencode(masked, safe="*/:,"))
        return parts.geturl()
    except ValueError:  # unparseable (a bad port, brackets): show nothing of what may hold a secret
        return f"{_scheme(url) or 'store'}://(unreadable URL)"
