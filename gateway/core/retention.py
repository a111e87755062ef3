"""Retention: what the store keeps only so long, purged in the background every `outbox.purge_interval`."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from gateway.config import Config
from gateway.store import PurgeCount, Store
from gateway.tasks import cancel_and_wait

log = logging.getLogger("aftm.runtime")


class Retention:
    """Drops expired idempotency records and revocations, old finished outbox items and old failures."""

    def __init__(self, *, store: Callable[[], Store], config: Config) -> None:
        self._store = store
        self._config = config
        self._task: asyncio.Task[None] | None = None

    async def purge_once(self) -> PurgeCount:
        """Drop expired idempotency records and revocations, and finished outbox items older than the retention."""
        now = time.time()
        keep = max(self._config.outbox.retention_days * 86_400.0, self._config.requests.idempotency_window)
        purged = await self._store().purge_expired(now, finished_before=now - keep)
        failures = await self._store().purge_failures(now - self._config.reporting.retention_days * 86_400.0)
        return dataclasses.replace(purged, failures=failures)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._purge_loop(), name="retention")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.outbox.purge_interval)
            try:
                purged = await self.purge_once()
            except Exception as exc:  # the store is down (readyz says so): this loop must live on and retry
                log.warning("retention purge failed", extra={"reason": str(exc)})
            else:
                if any(dataclasses.astuple(purged)):
                    log.info("retention purge", extra=dataclasses.asdict(purged))
