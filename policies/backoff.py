"""When to try again and how long to wait: retry policy as frozen data, a per-request schedule.

`RetryPolicy` is the configuration; `backoff_delay` the pure, clamped wait for one retry; `Schedule`
the per-request object the proxy asks after each failed attempt. `Schedule.next_delay` returns None
when the request should stop trying now (attempts spent, or the wait would reach the deadline), so
the caller hands a send to the durable outbox instead. Instrumentation is an `on_retry` hook taking a
frozen `RetryDetails`, never woven into the arithmetic.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Literal, TypeAlias

from policies.outcome import Kind, Outcome

Jitter: TypeAlias = Literal["full", "none"]
WaitReason: TypeAlias = Literal["backoff", "retry_after", "attempts_exhausted", "deadline"]

# One generator for schedules built without `rng`: seeding a new one per request would read
# os.urandom on the hot path. Pass a seeded `random.Random` in tests.
_DEFAULT_RNG = random.Random()
_DELTA_SECONDS = re.compile(r"\d+(\.\d+)?")  # RFC 9110 says 1*DIGIT; a decimal costs nothing to accept


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently one app request is retried upstream.

    `attempts` counts every send, the first included. `timeout` (seconds from the schedule's
    start) further tightens the deadline the caller gives. A THROTTLED outcome's `retry_after`
    replaces the computed wait, clamped to `retry_after_max` so a bogus hint cannot park a request.
    """

    attempts: int = 6
    wait_initial: float = 0.1
    wait_max: float = 5.0
    wait_exp_base: float = 2.0
    jitter: Jitter = "full"
    timeout: float | None = None
    retry_after_max: float = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("retry.attempts must be at least 1 (the first send counts)")
        if self.wait_initial < 0 or self.wait_max < 0 or self.retry_after_max < 0:
            raise ValueError("retry: wait_initial, wait_max and retry_after_max must not be negative")
        if self.wait_exp_base < 1:
            raise ValueError("retry.wait_exp_base must be at least 1, or waits would shrink")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("retry.timeout must be positive, or None for no limit of its own")


def backoff_delay(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """Seconds to wait before retry number `attempt` (0 for the first retry).

    Full jitter (AWS architecture blog, "Exponential Backoff and Jitter"): uniform in
    [0, min(wait_max, wait_initial * wait_exp_base ** attempt)], which spreads a burst of
    clients better than a fixed wait plus noise. Never overflows for large `attempt`.
    """
    try:
        grown = policy.wait_initial * policy.wait_exp_base ** max(attempt, 0)
    except OverflowError:
        grown = math.inf
    cap = min(policy.wait_max, grown)
    return rng.uniform(0.0, cap) if policy.jitter == "full" else cap


def is_retryable(outcome: Outcome) -> bool:
    """False for OK and CLIENT_ERROR, which end the request whatever the schedule says."""
    return outcome.kind not in (Kind.OK, Kind.CLIENT_ERROR)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryDetails:
    """What a hook learns about one decision; `wait_for` is None when the schedule gave up."""

    attempt: int  # failed attempts so far, this one included
    outcome: Outcome
    wait_for: float | None
    waited_so_far: float
    remaining: float  # seconds to the deadline when the decision was made (inf without one)
    reason: WaitReason


RetryHook: TypeAlias = Callable[[RetryDetails], None]


class Schedule:
    """One app request's retry budget: ask `next_delay(outcome)` after each failed attempt.

    Made per request with an absolute `deadline` in the clock's units. Not thread-safe; one
    request runs on one task.
    """

    __slots__ = ("_clock", "_on_retry", "_rng", "attempts_made", "deadline", "policy", "waited_so_far")

    def __init__(self, policy: RetryPolicy, /, *, deadline: float | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 on_retry: RetryHook | None = None) -> None:
        self.policy = policy
        self._clock = clock
        self._rng = rng if rng is not None else _DEFAULT_RNG
        self._on_retry = on_retry
        self.attempts_made = 0
        self.waited_so_far = 0.0
        if policy.timeout is not None:
            limit = clock() + policy.timeout
            deadline = limit if deadline is None else min(deadline, limit)
        self.deadline = deadline

    def remaining(self) -> float:
        """Seconds left before the deadline (inf without one): size each attempt's timeouts by it."""
        return math.inf if self.deadline is None else self.deadline - self._clock()

    def next_delay(self, outcome: Outcome) -> float | None:
        """Seconds to wait before the next attempt, or None to stop trying now.

        Counts one failed attempt. None when `policy.attempts` are spent or when the wait would
        reach the deadline (an attempt that starts at the deadline has no time to finish).
        Raises ValueError for OK and CLIENT_ERROR, which are not retried.
        """
        if not is_retryable(outcome):
            raise ValueError(f"next_delay() takes a retryable outcome, not {outcome.kind.value}")
        self.attempts_made += 1
        remaining = self.remaining()
        if self.attempts_made >= self.policy.attempts:
            return self._decide(outcome, None, remaining, "attempts_exhausted")
        wait, reason = self._wait_for(outcome)
        if wait >= remaining:
            return self._decide(outcome, None, remaining, "deadline")
        self.waited_so_far += wait
        return self._decide(outcome, wait, remaining, reason)

    def _wait_for(self, outcome: Outcome) -> tuple[float, WaitReason]:
        hint = outcome.retry_after
        if outcome.kind is Kind.THROTTLED and hint is not None and not math.isnan(hint):
            # The vendor knows when its window reopens; the computed wait would only guess.
            return min(max(hint, 0.0), self.policy.retry_after_max), "retry_after"
        return backoff_delay(self.policy, self.attempts_made - 1, self._rng), "backoff"

    def _decide(self, outcome: Outcome, wait: float | None, remaining: float,
                reason: WaitReason) -> float | None:
        if self._on_retry is not None:
            self._on_retry(RetryDetails(attempt=self.attempts_made, outcome=outcome, wait_for=wait,
                                       waited_so_far=self.waited_so_far, remaining=remaining,
                                       reason=reason))
        return wait


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds from a Retry-After header (RFC 9110 §10.2.3), or None when absent or unusable.

    Takes delta-seconds ("120") and an HTTP-date in any of its three forms, measured from
    `now_epoch` (wall-clock seconds, `time.time()`); a date in the past means "now" (0.0).
    Negative or garbage values give None, so the caller falls back to its own backoff.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime form carries no zone; HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_epoch)
