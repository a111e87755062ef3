"""Password checks (PBKDF2 runs) on a few threads, taken in order of rank rather than of arrival.

A thread pool's queue is first come, first served: during a storm of wrong passwords from many
addresses the real app's login waited behind every one of theirs (48 storming addresses: 8.8 s). Here a
waiting check carries a rank, the number of recent failures of its source, and the lowest rank runs
next: a source that has not been failing (the real app, a newcomer) goes before every storming one,
whose checks wait their turn among themselves in arrival order.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class CheckQueue:
    """Runs `work` on at most `threads` threads, lowest rank first; created and used on one event loop."""

    def __init__(self, *, threads: int, thread_name_prefix: str) -> None:
        self._threads = threads
        self._prefix = thread_name_prefix
        self._pool: ThreadPoolExecutor | None = None
        self._queued: list[tuple[int, int, Callable[[], Any], asyncio.Future[Any]]] = []
        self._order = itertools.count()
        self._running = 0

    @property
    def waiting(self) -> int:
        """Checks queued or running."""
        return len(self._queued) + self._running

    def submit(self, rank: int, work: Callable[[], T]) -> asyncio.Future[T]:
        """A future of `work()`'s result, run once every check of a lower rank (or same rank, earlier) has.

        Password checks (PBKDF2) and the RSA steps of certificate logins share these threads and this order.
        """
        result: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queued, (rank, next(self._order), work, result))
        self._dispatch()
        return result

    def close(self) -> None:
        """Cancel what waits; a check already running finishes in its thread and is discarded."""
        for *_, result in self._queued:
            result.cancel()
        self._queued.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _dispatch(self) -> None:
        while self._running < self._threads and self._queued:
            *_, work, result = heapq.heappop(self._queued)
            if result.done():  # cancelled while it waited
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix=self._prefix)
            self._running += 1
            ran = asyncio.get_running_loop().run_in_executor(self._pool, work)
            ran.add_done_callback(functools.partial(self._finished, result))

    def _finished(self, result: asyncio.Future[Any], ran: asyncio.Future[Any]) -> None:
        self._running -= 1
        if not result.done():
            if ran.cancelled():
                result.cancel()
            elif (error := ran.exception()) is not None:
                result.set_exception(error)
            else:
                result.set_result(ran.result())
        self._dispatch()
