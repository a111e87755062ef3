"""Fixtures for the store's behavioural suite, which runs against every backend (`tests.support.stores`)."""

from __future__ import annotations

from gateway.store import Store
from tests.support.stores import clock, db_path, store, store_url

__all__ = ["clock", "db_path", "store", "store_url"]  # this folder's fixtures


# Outbox rows as a store at migration 5 held them: (id, protocol, status); each body is b"token".
V5_OUTBOX_ROWS = (("sms-1", "sms", "delivered"), ("sms-2", "sms", "pending"), ("req-1", "rest", "pending"))


async def assert_v5_outbox_migrated(store: Store) -> None:
    """Migration 6 on V5_OUTBOX_ROWS: a sent SMS forgot its receipt token, the old REST key became a label."""
    sent, waiting, rest = [await store.get(item_id) for item_id, _, _ in V5_OUTBOX_ROWS]
    assert sent is not None and sent.body == b""
    assert waiting is not None and waiting.body == b"token"  # its send still needs the token
    assert rest is not None and rest.correlation_id == "req-1"  # the old key was the app's label
