"""Stores for tests: fixtures that run a test against every backend, and helpers for outbox items.

A conftest activates the fixtures by importing them (`tests/integration/store`, `tests/integration/core`).
`store_url` (and so `store`) is parametrized over SQLite and PostgreSQL. Each PostgreSQL test gets a
schema of its own, created before and dropped after it, so tests are isolated from each other and
from other suites using the same database. The server is the one `AFTM_TEST_POSTGRES_URL` names
(default: the local trust-auth server CI starts); if it does not answer, the tests fail, never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg
import pytest

from gateway.store import OutboxItem, Store, open_store
from tests.support.clock import FakeClock

POSTGRES_ADMIN_URL = os.environ.get("AFTM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def clock() -> FakeClock:
    """Epoch seconds that move only when a test says so."""
    return FakeClock(1_000_000.0)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "gateway.db"


async def connect_admin() -> asyncpg.Connection:
    """A plain connection to the test server; fails the test with what to do when there is none."""
    try:
        return await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise AssertionError(f"PostgreSQL at {POSTGRES_ADMIN_URL} is needed by the store tests and did not "
                             f"answer ({exc}); start it (CI: .ci/run does) or set AFTM_TEST_POSTGRES_URL") from exc


def with_query(url: str, **params: str) -> str:
    """`url` with query parameters added or replaced."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return parts._replace(query=urlencode(query)).geturl()


@contextlib.asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A store URL on a fresh schema, dropped (with everything in it) on exit."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = await connect_admin()
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield with_query(POSTGRES_ADMIN_URL, search_path=schema)
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await admin.close()


@pytest.fixture(params=BACKENDS)
async def store_url(request: pytest.FixtureRequest, db_path: Path) -> AsyncIterator[str]:
    """A URL of an empty store of each backend in turn: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{db_path}"
    else:
        async with postgres_schema() as url:
            yield url


@pytest.fixture
async def store(store_url: str, clock: FakeClock) -> AsyncIterator[Store]:
    opened = await open_store(store_url, clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


def make_item(now: float, *, key: str | None = None, client: str = "app-a", max_age: float = 3600.0,
              body: bytes = b'{"recipientData": []}') -> OutboxItem:
    headers = [("Content-Type", "application/json"), ("Authorization", "token-of-the-app"), ("Cookie", "s=1")]
    if key is not None:
        headers.append(("Idempotency-Key", key))
    return OutboxItem.new(
        protocol="rest", method="POST", path="/rest/api/v1.3/campaigns/welcome/email?x=1", headers=headers,
        body=body, client=client, now=now, max_age=max_age, idempotency_key=key,
    )


async def wait_for_item(store: Store, item_id: str, condition: Callable[[OutboxItem], bool], *,
                        within: float = 5.0, message: str = "outbox item state") -> OutboxItem:
    """Poll the store until the item satisfies `condition`; fail the test after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        item = await store.get(item_id)
        if item is not None and condition(item):
            return item
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {message}; last seen: {item}")
        await asyncio.sleep(0.01)
