"""How many wrong passwords one source may try for one app before it must wait.

The key is (client name, source address): guessing from one address slows down only that address's
attempts at that name, so the real app logging in from elsewhere is never locked out, and a success
clears its own key only. The state lives in memory per replica (an attacker spread over N replicas
gets N times the attempts) and is bounded: past `max_keys` the least recently failed key is forgotten,
so a storm from many addresses costs memory once, never more. A failure may be counted before the
outcome is known and taken back on success (`refund`): an attempt that costs the gateway work before
it can fail (a certificate login's first step) is charged up front.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    max_failures: int = 5  # wrong passwords within `window` seconds before the key waits
    window: float = 60.0
    wait: float = 60.0  # seconds a key that reached max_failures is refused, from its last failure
    max_keys: int = 10_000


@dataclass(slots=True)
class _Failures:
    first: float
    count: int = 0
    blocked_until: float = field(default=0.0)


class LoginThrottle:
    """Counts failed logins per key; says how long a key must wait. Pure: time comes from `clock`."""

    def __init__(self, settings: ThrottleSettings | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or ThrottleSettings()
        self._clock = clock
        self._failures: OrderedDict[Hashable, _Failures] = OrderedDict()

    def retry_after(self, key: Hashable) -> float | None:
        """Seconds `key` must wait before its next attempt is even checked, or None to check it now."""
        entry = self._failures.get(key)
        if entry is None:
            return None
        remaining = entry.blocked_until - self._clock()
        return remaining if remaining > 0 else None

    def failures(self, key: Hashable) -> int:
        """Failures `key` has within the current window (0 once it has passed): a check's rank."""
        entry = self._failures.get(key)
        if entry is None or self._clock() - entry.first > self.settings.window:
            return 0
        return entry.count

    def failed(self, key: Hashable) -> None:
        now = self._clock()
        entry = self._failures.pop(key, None)
        if entry is None or now - entry.first > self.settings.window:
            entry = _Failures(first=now)
        entry.count += 1
        if entry.count >= self.settings.max_failures:
            entry.blocked_until = now + self.settings.wait
        self._failures[key] = entry  # most recent last: eviction takes the stalest first
        while len(self._failures) > self.settings.max_keys:
            self._failures.popitem(last=False)

    def succeeded(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def refund(self, key: Hashable, *, age: float = 0.0) -> None:
        """Take back one failure of the current window: one counted before its outcome was known (a
        certificate login's first step) whose outcome was a success. A wait it had caused ends with it.

        `age` is how long ago that failure was counted: one counted before the current window began has
        lapsed already, and takes back nothing (another failure of the window is not its to take).
        """
        entry = self._failures.get(key)
        now = self._clock()
        if entry is None or entry.count == 0 or now - entry.first > self.settings.window or now - age < entry.first:
            return
        entry.count -= 1
        if entry.count < self.settings.max_failures:
            entry.blocked_until = 0.0
        if entry.count == 0:
            del self._failures[key]

    def __len__(self) -> int:
        return len(self._failures)
