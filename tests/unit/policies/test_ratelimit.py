from __future__ import annotations

import pytest

from policies.ratelimit import RateLimit, RateLimits, TokenBucket, per_minute
from tests.support.clock import FakeClock


def test_bucket_allows_burst_then_waits() -> None:
    bucket = TokenBucket(rate_per_second=2.0, burst=3, clock=FakeClock())
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve() == pytest.approx(0.5)


def test_bucket_reserve_queues_concurrent_callers() -> None:
    bucket = TokenBucket(rate_per_second=10.0, burst=1, clock=FakeClock())
    waits = [bucket.reserve() for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_bucket_refills_over_time_up_to_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_second=1.0, burst=2, clock=clock)
    bucket.reserve()
    bucket.reserve()
    clock.advance(100.0)
    assert [bucket.try_acquire() for _ in range(3)] == [True, True, False]


def test_reserved_debt_is_paid_back_by_refill() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_second=1.0, burst=1, clock=clock)
    bucket.reserve()
    assert bucket.reserve() == pytest.approx(1.0)
    clock.advance(1.0)  # the queued caller has now sent
    assert bucket.try_acquire() is False
    clock.advance(1.0)
    assert bucket.try_acquire() is True


def test_try_acquire_does_not_queue() -> None:
    bucket = TokenBucket(rate_per_second=1.0, burst=1, clock=FakeClock())
    assert bucket.try_acquire() is True
    assert bucket.try_acquire() is False
    assert bucket.try_acquire() is False
    assert bucket.reserve() == pytest.approx(1.0)  # the failed tries took nothing


def test_try_reserve_takes_nothing_beyond_max_wait() -> None:
    bucket = TokenBucket(rate_per_second=1.0, burst=1, clock=FakeClock())
    bucket.reserve()
    assert bucket.try_reserve(max_wait=0.5) is None
    assert bucket.try_reserve(max_wait=1.0) == pytest.approx(1.0)


def test_set_rate_applies_from_now() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_second=1.0, burst=5, clock=clock)
    for _ in range(5):
        bucket.reserve()
    clock.advance(1.0)  # one token earned at the old rate
    bucket.set_rate(rate_per_second=10.0, burst=2)
    assert bucket.rate_per_second == 10.0 and bucket.burst == 2.0
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.1)


def test_set_rate_caps_tokens_at_new_burst() -> None:
    bucket = TokenBucket(rate_per_second=1.0, burst=10, clock=FakeClock())
    bucket.set_rate(rate_per_second=1.0, burst=1)
    assert bucket.try_acquire() is True
    assert bucket.try_acquire() is False


def test_clock_stepping_back_mints_no_tokens() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_second=1.0, burst=1, clock=clock)
    bucket.reserve()
    clock.advance(-50.0)
    assert bucket.try_acquire() is False


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0.5)])
def test_bucket_rejects_nonsense(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        TokenBucket(rate_per_second=rate, burst=burst)


def test_per_minute_keeps_headroom() -> None:
    assert per_minute(600) == pytest.approx(9.0)
    assert per_minute(600, headroom=1.0) == pytest.approx(10.0)


@pytest.mark.parametrize(("limit", "headroom"), [(0, 0.9), (60, 0.0), (60, 1.5)])
def test_per_minute_rejects_nonsense(limit: float, headroom: float) -> None:
    with pytest.raises(ValueError, match=r"must be|headroom"):
        per_minute(limit, headroom)


def test_registry_uses_default_until_configured() -> None:
    limits = RateLimits(default=RateLimit(rate_per_second=1.0, burst=1), clock=FakeClock())
    limits.configure("primary", "mergeTriggerEmail", RateLimit(rate_per_second=5.0, burst=3))
    assert limits.bucket("primary", "mergeTriggerEmail").burst == 3.0
    assert limits.bucket("primary", "other").rate_per_second == 1.0
    assert limits.bucket("secondary", "mergeTriggerEmail").rate_per_second == 1.0


def test_registry_keeps_one_bucket_per_key_and_reconfigures_it() -> None:
    limits = RateLimits(default=RateLimit(rate_per_second=1.0, burst=1), clock=FakeClock())
    bucket = limits.bucket("primary", "f")
    assert limits.bucket("primary", "f") is bucket
    assert limits.bucket("secondary", "f") is not bucket
    limits.configure("primary", "f", RateLimit(rate_per_second=4.0, burst=2))
    assert bucket.rate_per_second == 4.0
