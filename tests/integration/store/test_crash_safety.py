"""A real process killed with SIGKILL right after `enqueue` returns loses nothing."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from gateway.store import OutboxStatus, open_store

_ENQUEUE_THEN_HANG = """
import asyncio, sys, time
from gateway.store import OutboxItem, open_store

async def main() -> None:
    store = await open_store(sys.argv[1])
    item = OutboxItem.new(protocol="soap", method="POST", path="/webservices/services/ResponsysWSService",
                          headers=[("content-type", "text/xml")], body=b"<triggerCustomEvent/>",
                          client="legacy-app", now=time.time(), max_age=3600, idempotency_key="crash-1")
    item_id = await store.enqueue(item)
    print(item_id, flush=True)
    await asyncio.Event().wait()  # never closes the store: the kill comes first

asyncio.run(main())
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
async def test_item_is_there_after_the_enqueuing_process_is_killed(store_url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _ENQUEUE_THEN_HANG, store_url,
        stdout=asyncio.subprocess.PIPE, cwd=str(Path(__file__).parents[3]))
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        item_id = line.decode().strip()
        assert item_id, "the child exited before enqueue returned"
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    assert process.returncode == -signal.SIGKILL

    store = await open_store(store_url)
    try:
        item = await store.get(item_id)
        assert item is not None
        assert (item.status, item.body, item.idempotency_key) == (
            OutboxStatus.PENDING, b"<triggerCustomEvent/>", "crash-1")
    finally:
        await store.close()
