"""Vendor documents served from memory: the SOAP WSDL now, the schemas it imports later.

Apps fetch the WSDL unauthenticated, so fetching it from an account on every GET turned a flood of
GETs into a flood to the vendor. `DocumentCache` keeps the last good copy of each document path:

    start()      fetches every document in the background, then refreshes each every `refresh_interval`
    get(path)    the last good copy; before the first success, a fetch that every concurrent caller
                 shares (single-flight), and after a failed one no new fetch for `retry_after` seconds
                 (the caller gets None: the route answers 503)

A failed refresh keeps the last good copy. Documents are keyed by path; how a path is fetched (which
account, what rewriting) is the `fetch` function's business, so serving another document is one more
path in the caller's table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from gateway.tasks import cancel_and_wait

log = logging.getLogger("aftm.documents")

# A document for a path, or None when no account served it.
Fetch = Callable[[str], Awaitable[bytes | None]]


class DocumentCache:
    """The last good copy of each vendor document, refreshed in the background."""

    def __init__(self, *, paths: Iterable[str], fetch: Fetch, refresh_interval: float, retry_after: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.paths = tuple(paths)
        self._fetch = fetch
        self._interval = refresh_interval
        self._retry_after = retry_after
        self._clock = clock
        self._copies: dict[str, bytes] = {}
        self._in_flight: dict[str, asyncio.Task[bytes | None]] = {}
        self._failed_at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.fetches = 0  # upstream fetches started, for tests and status
        self.failures = 0  # fetches that found no account serving the document

    def start(self) -> None:
        if self.paths and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_loop(), name="document-cache")

    async def stop(self) -> None:
        await cancel_and_wait(self._task, *self._in_flight.values())
        self._task = None

    async def get(self, path: str) -> bytes | None:
        """The document at `path`, or None when there is no good copy yet and none could be fetched."""
        copy = self._copies.get(path)
        if copy is not None or path not in self.paths:
            return copy
        failed_at = self._failed_at.get(path)
        if path not in self._in_flight and failed_at is not None and self._clock() - failed_at < self._retry_after:
            return None  # the last try just failed: do not let a flood of GETs retry it back to back
        # Shielded: one caller hanging up must not cancel the fetch the others wait for.
        return await asyncio.shield(self._fetch_once(path))

    def _fetch_once(self, path: str) -> asyncio.Task[bytes | None]:
        task = self._in_flight.get(path)
        if task is None:
            task = self._in_flight[path] = asyncio.get_running_loop().create_task(
                self._refresh(path), name=f"fetch {path}")
            task.add_done_callback(lambda _: self._in_flight.pop(path, None))
        return task

    async def _refresh(self, path: str) -> bytes | None:
        self.fetches += 1
        try:
            document = await self._fetch(path)
        except Exception:  # a bug in fetch must not end the refreshes; the last good copy stays
            log.exception("fetching a vendor document raised", extra={"path": path})
            document = None
        if document is None:
            self.failures += 1
            self._failed_at[path] = self._clock()
            log.warning("no account served a vendor document; keeping the last good copy",
                        extra={"path": path, "have_copy": path in self._copies})
            return self._copies.get(path)
        self._copies[path] = document
        self._failed_at.pop(path, None)
        return document

    async def _refresh_loop(self) -> None:
        while True:
            for path in self.paths:
                await self._fetch_once(path)  # shared with GETs arriving meanwhile
            await asyncio.sleep(self._interval)
