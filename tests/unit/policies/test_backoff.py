from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from policies.backoff import RetryDetails, RetryPolicy, Schedule, backoff_delay, parse_retry_after
from policies.outcome import Failure, Outcome
from tests.support.clock import FakeClock, PinnedRandom

FAILED = Outcome.account_failure(Failure.CONNECT_TIMEOUT)
NOW_EPOCH = 1_700_000_000.0


def fixed(**kw: float) -> RetryPolicy:
    """No jitter, so waits are exact."""
    return RetryPolicy(jitter="none", **kw)  # type: ignore[arg-type]


def test_full_jitter_stays_within_cap() -> None:
    policy = RetryPolicy(wait_initial=0.1, wait_max=5.0, wait_exp_base=2.0)
    rng = random.Random(1234)
    for attempt in range(12):
        cap = min(5.0, 0.1 * 2.0**attempt)
        delays = [backoff_delay(policy, attempt, rng) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.9  # the whole range is used, not a fixed fraction


def test_backoff_grows_exponentially_then_clamps() -> None:
    policy = fixed(wait_initial=0.1, wait_max=1.0)
    rng = random.Random(0)
    assert [backoff_delay(policy, n, rng) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_backoff_survives_huge_attempt_numbers() -> None:
    assert backoff_delay(fixed(wait_max=5.0), 100_000, random.Random(0)) == 5.0


# The outbox worker's default: queued sends wait between 1 s and 5 min; its `attempts` counts the try
# just made, so the first retry is backoff_delay's retry number 0.
OUTBOX = RetryPolicy(wait_initial=1.0, wait_max=300.0)


@pytest.mark.parametrize(("attempts", "ceiling"), [(1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0), (10, 300.0),
                                                   (10_000, 300.0)])
def test_full_jitter_is_bounded_by_a_doubling_ceiling_capped_at_the_maximum(attempts: int,
                                                                           ceiling: float) -> None:
    assert backoff_delay(OUTBOX, attempts - 1, PinnedRandom(1.0)) == ceiling
    assert backoff_delay(OUTBOX, attempts - 1, PinnedRandom(0.0)) == 0.0


def test_full_jitter_spreads_delays_across_the_whole_window() -> None:
    rng = random.Random()
    delays = [backoff_delay(OUTBOX, 4 - 1, rng) for _ in range(200)]
    assert all(0.0 <= d < 8.0 for d in delays)
    assert min(delays) < 2.0 and max(delays) > 6.0


def test_seeded_schedules_are_reproducible() -> None:
    def waits(seed: int) -> list[float | None]:
        schedule = Schedule(RetryPolicy(), clock=FakeClock(), rng=random.Random(seed))
        return [schedule.next_delay(FAILED) for _ in range(4)]

    assert waits(7) == waits(7)
    assert waits(7) != waits(8)


def test_schedule_stops_after_attempts() -> None:
    schedule = Schedule(fixed(attempts=3), clock=FakeClock())
    assert schedule.next_delay(FAILED) is not None
    assert schedule.next_delay(FAILED) is not None
    assert schedule.next_delay(FAILED) is None  # third send failed: no fourth


def test_single_attempt_never_retries() -> None:
    assert Schedule(fixed(attempts=1), clock=FakeClock()).next_delay(FAILED) is None


def test_schedule_gives_up_before_deadline() -> None:
    clock = FakeClock()
    schedule = Schedule(fixed(wait_initial=1.0, wait_max=10.0), deadline=clock.now + 2.5, clock=clock)
    assert schedule.next_delay(FAILED) == 1.0
    clock.advance(1.0)
    assert schedule.next_delay(FAILED) is None  # the next wait (2 s) exceeds the 1.5 s left


def test_wait_landing_exactly_on_deadline_gives_up() -> None:
    clock = FakeClock()
    schedule = Schedule(fixed(wait_initial=1.0), deadline=clock.now + 1.0, clock=clock)
    assert schedule.next_delay(FAILED) is None


def test_policy_timeout_tightens_deadline() -> None:
    clock = FakeClock()
    schedule = Schedule(fixed(timeout=2.0), deadline=clock.now + 60.0, clock=clock)
    assert schedule.deadline == clock.now + 2.0
    assert schedule.remaining() == 2.0


def test_no_deadline_means_unbounded_time() -> None:
    schedule = Schedule(fixed(), clock=FakeClock())
    assert schedule.deadline is None
    assert schedule.remaining() == float("inf")


def test_retry_after_overrides_backoff() -> None:
    schedule = Schedule(fixed(wait_initial=0.1), clock=FakeClock())
    assert schedule.next_delay(Outcome.throttled(retry_after=7.0)) == 7.0


def test_throttled_without_hint_uses_backoff() -> None:
    schedule = Schedule(fixed(wait_initial=0.1), clock=FakeClock())
    assert schedule.next_delay(Outcome.throttled()) == 0.1


@pytest.mark.parametrize(("hint", "expected"), [(86_400.0, 120.0), (float("inf"), 120.0), (-3.0, 0.0)])
def test_absurd_retry_after_is_clamped(hint: float, expected: float) -> None:
    schedule = Schedule(fixed(), clock=FakeClock())
    assert schedule.next_delay(Outcome.throttled(retry_after=hint)) == expected


def test_retry_after_past_deadline_gives_up() -> None:
    clock = FakeClock()
    schedule = Schedule(fixed(), deadline=clock.now + 5.0, clock=clock)
    assert schedule.next_delay(Outcome.throttled(retry_after=30.0)) is None


@pytest.mark.parametrize("outcome", [Outcome.ok(), Outcome.client_error("bad field")])
def test_final_outcomes_are_not_retried(outcome: Outcome) -> None:
    with pytest.raises(ValueError, match="retryable"):
        Schedule(fixed(), clock=FakeClock()).next_delay(outcome)


def test_hook_sees_each_decision() -> None:
    seen: list[RetryDetails] = []
    clock = FakeClock()
    schedule = Schedule(fixed(attempts=3, wait_initial=0.5), deadline=clock.now + 10.0, clock=clock,
                        on_retry=seen.append)
    schedule.next_delay(FAILED)
    schedule.next_delay(Outcome.throttled(retry_after=2.0))
    schedule.next_delay(FAILED)
    assert [(d.attempt, d.wait_for, d.reason) for d in seen] == [
        (1, 0.5, "backoff"), (2, 2.0, "retry_after"), (3, None, "attempts_exhausted")]
    assert seen[1].waited_so_far == 2.5
    assert seen[0].remaining == 10.0
    assert seen[2].outcome is FAILED


def test_hook_hears_deadline_give_up() -> None:
    seen: list[RetryDetails] = []
    clock = FakeClock()
    schedule = Schedule(fixed(wait_initial=1.0), deadline=clock.now, clock=clock, on_retry=seen.append)
    assert schedule.next_delay(FAILED) is None
    assert [d.reason for d in seen] == ["deadline"]


@pytest.mark.parametrize("kw", [{"attempts": 0}, {"wait_initial": -1.0}, {"wait_exp_base": 0.5},
                                {"timeout": 0.0}])
def test_policy_rejects_nonsense(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="retry"):
        RetryPolicy(**kw)  # type: ignore[arg-type]


def test_delta_seconds_retry_after() -> None:
    assert parse_retry_after("120", NOW_EPOCH) == 120.0
    assert parse_retry_after(" 3 ", NOW_EPOCH) == 3.0
    assert parse_retry_after("1.5", NOW_EPOCH) == 1.5


def test_http_date_retry_after() -> None:
    header = formatdate(NOW_EPOCH + 90, usegmt=True)  # IMF-fixdate: "Tue, 14 Nov 2023 22:14:50 GMT"
    assert parse_retry_after(header, NOW_EPOCH) == pytest.approx(90.0)


@pytest.mark.parametrize("header", ["Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"])
def test_obsolete_http_date_forms(header: str) -> None:
    epoch_1994 = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT
    assert parse_retry_after(header, epoch_1994 - 10) == pytest.approx(10.0)


def test_past_http_date_means_now() -> None:
    assert parse_retry_after(formatdate(NOW_EPOCH - 60, usegmt=True), NOW_EPOCH) == 0.0


@pytest.mark.parametrize("header", [None, "", "-5", "soon", "1e3", "12 seconds", "Sun, 99 Foo 1994"])
def test_unusable_retry_after_is_none(header: str | None) -> None:
    assert parse_retry_after(header, NOW_EPOCH) is None
