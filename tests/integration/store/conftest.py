from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.store import OutboxItem, Store, open_store


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "gateway.db"


@pytest.fixture
async def store(db_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    opened = await open_store(f"sqlite:///{db_path}", clock=clock)
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
