"""Vendor documents served from memory: the SOAP WSDL and every document it references.

Apps fetch the WSDL unauthenticated, so fetching it from an account on every GET turned a flood of
GETs into a flood to the vendor. `DocumentCache` keeps the last good copy of each document path:

    start()      fetches every document in the background, then refreshes each every `refresh_interval`
    get(path)    the last good copy; before the first success, a fetch that every concurrent caller
                 shares (single-flight), and after a failed one no new fetch for `retry_after` seconds
                 (the caller gets None: the route answers 503)

A failed refresh keeps the last good copy. Documents are keyed by path; how a path is fetched (which
account, what rewriting) is the `fetch` function's business. The cache starts from its root paths (the
WSDL) and learns the rest from the documents themselves: `references(path, document)` names the paths a
fetched document refers to (its schemas, their imports), and each new one is fetched and refreshed like
the roots, up to `max_documents` (a vendor WSDL that names hundreds of files is not followed further).
After each refresh round, documents the roots no longer reach are forgotten, which frees their places.
Only known paths are ever served, so a request for anything else never reaches an account.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

from gateway.tasks import cancel_and_wait

log = logging.getLogger("aftm.documents")

# A document for a path, or None when no account served it.
Fetch = Callable[[str], Awaitable[bytes | None]]
# The paths a fetched document (at a path) refers to, already confined to what may be fetched.
References = Callable[[str, bytes], Iterable[str]]
MAX_DOCUMENTS = 32


class DocumentCache:
    """The last good copy of each vendor document, refreshed in the background."""

    def __init__(self, *, paths: Iterable[str], fetch: Fetch, refresh_interval: float, retry_after: float = 5.0,
                 references: References | None = None, max_documents: int = MAX_DOCUMENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._paths = dict.fromkeys(paths)  # ordered: the roots first, then documents as discovered
        self._roots = len(self._paths)
        self._fetch = fetch
        self._references = references
        self._max_documents = max_documents
        self._interval = refresh_interval
        self._retry_after = retry_after
        self._clock = clock
        self._copies: dict[str, bytes] = {}
        self._in_flight: dict[str, asyncio.Task[bytes | None]] = {}
        self._failed_at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.fetches = 0  # upstream fetches started, for tests and status
        self.failures = 0  # fetches that found no account serving the document

    @property
    def paths(self) -> Sequence[str]:
        """Every path the cache serves: the roots, then the documents they reference."""
        return tuple(self._paths)

    def serves(self, path: str) -> bool:
        """Whether `path` is a document the cache serves (a root, or one a fetched document referenced)."""
        return path in self._paths

    def start(self) -> None:
        if self._roots and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_loop(), name="document-cache")

    async def stop(self) -> None:
        await cancel_and_wait(self._task, *self._in_flight.values())
        self._task = None

    async def get(self, path: str) -> bytes | None:
        """The document at `path`, or None when there is no good copy yet and none could be fetched."""
        copy = self._copies.get(path)
        if copy is not None or path not in self._paths:
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
        self._discover(path, document)
        return document

    def _discover(self, path: str, document: bytes) -> None:
        """Learn the paths `document` refers to; each new one is fetched now, in the background."""
        for reference in self._referenced_by(path, document):
            if reference in self._paths:
                continue
            if len(self._paths) >= self._max_documents:
                log.warning("vendor documents reference more documents than are served; not following",
                            extra={"path": reference, "max_documents": self._max_documents})
                return
            self._paths[reference] = None
            self._fetch_once(reference)

    async def refresh_all(self) -> None:
        """One round: refetch every document, then forget those no current copy refers to any more."""
        for path in list(self._paths):  # documents discovered meanwhile join the next round
            await self._fetch_once(path)  # shared with GETs arriving meanwhile
        self._forget_unreferenced()

    def _forget_unreferenced(self) -> None:
        """Drop documents the roots no longer reach, so a vendor revision that named others (or a bad
        refresh that named junk up to `max_documents`) does not hold their places for ever; then learn
        what the current copies name in the room that frees."""
        if self._references is None:
            return
        roots = list(self._paths)[:self._roots]
        reached = dict.fromkeys(roots)
        pending = list(roots)
        while pending:
            path = pending.pop()
            copy = self._copies.get(path)
            for reference in self._referenced_by(path, copy) if copy is not None else ():
                if reference in self._paths and reference not in reached:
                    reached[reference] = None
                    pending.append(reference)
        for path in [p for p in self._paths if p not in reached]:
            log.info("a vendor document is no longer referenced; no longer served", extra={"path": path})
            del self._paths[path]
            self._copies.pop(path, None)
            self._failed_at.pop(path, None)
        for path in list(self._paths):
            if (copy := self._copies.get(path)) is not None:
                self._discover(path, copy)

    def _referenced_by(self, path: str, document: bytes) -> list[str]:
        """The paths `document` refers to (none when it cannot be read: it serves as it is)."""
        if self._references is None:
            return []
        try:
            return list(self._references(path, document))
        except Exception:  # an unreadable document serves as it is; its references are not followed
            log.exception("reading a vendor document's references raised", extra={"path": path})
            return []

    async def _refresh_loop(self) -> None:
        while True:
            await self.refresh_all()
            await asyncio.sleep(self._interval)
