from __future__ import annotations

from policies.login_throttle import LoginThrottle, ThrottleSettings
from tests.support.clock import FakeClock

SETTINGS = ThrottleSettings(max_failures=3, window=60.0, wait=30.0, max_keys=4)


def test_a_key_waits_after_max_failures_within_the_window_and_not_before() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(SETTINGS, clock=clock)
    for _ in range(2):
        throttle.failed(("app", "10.0.0.1"))
        assert throttle.retry_after(("app", "10.0.0.1")) is None
    throttle.failed(("app", "10.0.0.1"))
    assert throttle.retry_after(("app", "10.0.0.1")) == 30.0
    clock.advance(29.0)
    assert throttle.retry_after(("app", "10.0.0.1")) == 1.0
    clock.advance(1.0)
    assert throttle.retry_after(("app", "10.0.0.1")) is None


def test_failures_from_one_address_never_throttle_another_address_or_name() -> None:
    throttle = LoginThrottle(SETTINGS, clock=FakeClock())
    for _ in range(10):
        throttle.failed(("app", "10.0.0.1"))
    assert throttle.retry_after(("app", "10.0.0.1")) is not None
    assert throttle.retry_after(("app", "10.0.0.2")) is None
    assert throttle.retry_after(("other", "10.0.0.1")) is None


def test_failures_older_than_the_window_are_forgotten() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(SETTINGS, clock=clock)
    throttle.failed("k")
    throttle.failed("k")
    clock.advance(61.0)
    throttle.failed("k")
    assert throttle.retry_after("k") is None


def test_a_success_clears_only_its_own_key() -> None:
    throttle = LoginThrottle(SETTINGS, clock=FakeClock())
    for key in ("a", "b"):
        throttle.failed(key)
        throttle.failed(key)
    throttle.succeeded("a")
    throttle.failed("a")
    throttle.failed("b")
    assert throttle.retry_after("a") is None
    assert throttle.retry_after("b") == 30.0


def test_the_state_is_bounded_by_forgetting_the_stalest_key() -> None:
    throttle = LoginThrottle(SETTINGS, clock=FakeClock())
    for _ in range(3):
        throttle.failed("first")
    for n in range(SETTINGS.max_keys):
        throttle.failed(f"storm-{n}")
    assert len(throttle) == SETTINGS.max_keys
    assert throttle.retry_after("first") is None  # evicted: bounded memory wins over one key's count


def test_a_refund_takes_back_one_failure_and_the_wait_it_caused() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(SETTINGS, clock=clock)
    for _ in range(3):
        throttle.failed("k")
    assert throttle.retry_after("k") == 30.0
    throttle.refund("k")
    assert throttle.retry_after("k") is None and throttle.failures("k") == 2
    throttle.failed("k")
    assert throttle.retry_after("k") == 30.0  # the two left still count


def test_a_refund_never_goes_below_nothing_nor_reaches_into_a_past_window() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(ThrottleSettings(max_failures=3, window=10.0, wait=30.0), clock=clock)
    throttle.refund("k")
    throttle.failed("k")
    throttle.refund("k")
    throttle.refund("k")
    assert len(throttle) == 0 and throttle.failures("k") == 0
    for _ in range(3):
        throttle.failed("k")
    clock.advance(11.0)
    throttle.refund("k")  # those failures are past the window: their wait stands
    assert throttle.retry_after("k") == 19.0


def test_a_refund_takes_nothing_back_for_a_failure_counted_before_the_window_began() -> None:
    """A certificate login's step 2 may come up to 120 s after its step 1 was charged, past the 60 s
    window: that charge has lapsed already, and taking back one of the current window's failures (someone
    else's wrong password, behind the same address) would lift a wait it did not cause."""
    clock = FakeClock()
    throttle = LoginThrottle(ThrottleSettings(max_failures=3, window=10.0, wait=30.0), clock=clock)
    throttle.failed("k")  # the step 1's charge
    clock.advance(11.0)
    for _ in range(3):
        throttle.failed("k")  # wrong passwords, in a new window
    throttle.refund("k", age=11.0)
    assert throttle.retry_after("k") == 30.0 and throttle.failures("k") == 3
    throttle.refund("k", age=0.0)  # counted in this window: taken back
    assert throttle.retry_after("k") is None and throttle.failures("k") == 2
