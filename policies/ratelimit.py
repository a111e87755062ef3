"""Stay under the vendor's request limits: a token bucket per (account, function).

Responsys publishes per-minute limits per API function (`GET /rest/api/ratelimit`); `per_minute`
turns one into a rate with headroom. `TokenBucket.reserve` takes a token now and says how long the
caller must wait before using it, so concurrent callers queue in arrival order instead of racing.
Not thread-safe: use from one event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


def per_minute(limit: float, headroom: float = 0.9) -> float:
    """Requests per second for a per-minute `limit`, keeping `headroom` (0.9 = use 90 %).

    Headroom covers other clients of the same account and clock skew against the vendor's window.
    """
    if limit <= 0:
        raise ValueError(f"rate limit must be positive requests per minute, got {limit}")
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], got {headroom}")
    return limit * headroom / 60.0


class TokenBucket:
    """`burst` tokens refilled at `rate_per_second`; one token per upstream request."""

    __slots__ = ("_burst", "_clock", "_rate", "_tokens", "_updated")

    def __init__(self, *, rate_per_second: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        _check(rate_per_second, burst)
        self._rate, self._burst, self._clock = rate_per_second, float(burst), clock
        self._tokens = float(burst)  # start full: a fresh gateway may send a burst at once
        self._updated = clock()

    @property
    def rate_per_second(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    def reserve(self) -> float:
        """Take a token; return the seconds to wait before sending (0.0 to send now).

        The token is taken even when the caller must wait, so the next caller waits longer:
        that debt is what makes concurrent callers queue fairly.
        """
        self._refill()
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def try_reserve(self, max_wait: float) -> float | None:
        """Like `reserve`, but take nothing and return None when the wait would exceed `max_wait`.

        Use it with the time left before a request's deadline, so a request that cannot be
        sent in time does not hold a place in the queue.
        """
        self._refill()
        wait = max(0.0, (1.0 - self._tokens) / self._rate)
        if wait > max_wait:
            return None
        self._tokens -= 1.0
        return wait

    def try_acquire(self) -> bool:
        """Take a token if one is available now; never queues."""
        return self.try_reserve(0.0) is not None

    def set_rate(self, *, rate_per_second: float, burst: float | None = None) -> None:
        """Change the rate (and optionally the burst) from now on, e.g. after reading the vendor's limits."""
        new_burst = self._burst if burst is None else float(burst)
        _check(rate_per_second, new_burst)
        self._refill()  # tokens earned so far were earned at the old rate
        self._rate, self._burst = rate_per_second, new_burst
        self._tokens = min(self._tokens, new_burst)

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)  # a clock that steps back must not mint tokens
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._updated = now


def _check(rate_per_second: float, burst: float) -> None:
    if rate_per_second <= 0:
        raise ValueError(f"rate_per_second must be positive, got {rate_per_second}")
    if burst < 1:
        raise ValueError(f"burst must be at least 1 token, got {burst}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    rate_per_second: float
    burst: float


class RateLimits:
    """Buckets keyed by (account, function), made on first use from `default` unless configured."""

    __slots__ = ("_buckets", "_clock", "_configured", "default")

    def __init__(self, *, default: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.default = default
        self._clock = clock
        self._configured: dict[tuple[str, str], RateLimit] = {}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def configure(self, account: str, function: str, limit: RateLimit) -> None:
        """Set the limit for one function of one account; an existing bucket keeps its tokens."""
        key = (account, function)
        self._configured[key] = limit
        if (bucket := self._buckets.get(key)) is not None:
            bucket.set_rate(rate_per_second=limit.rate_per_second, burst=limit.burst)

    def bucket(self, account: str, function: str) -> TokenBucket:
        """The bucket for (account, function), created on first use."""
        key = (account, function)
        if (bucket := self._buckets.get(key)) is None:
            limit = self._configured.get(key, self.default)
            bucket = TokenBucket(rate_per_second=limit.rate_per_second, burst=limit.burst, clock=self._clock)
            self._buckets[key] = bucket
        return bucket
