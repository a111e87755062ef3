"""What the outbox worker records after one try: pure decisions, no store, no clock."""

from __future__ import annotations

import dataclasses

from gateway.core.outbox import (
    Dead,
    Delivered,
    FailedPermanently,
    Reschedule,
    Retry,
    RetryAfter,
    next_step,
)
from gateway.store import OutboxItem

NOW = 1_000.0


def item(*, attempts: int = 1, max_age: float = 3600.0) -> OutboxItem:
    new = OutboxItem.new(protocol="rest", method="POST", path="/rest/api/v1.3/x", headers=[], body=b"",
                         client="app", now=NOW, max_age=max_age)
    return dataclasses.replace(new, attempts=attempts)


def doubling(attempts: int) -> float:
    return 2.0**attempts


def test_delivered_is_recorded_as_is() -> None:
    result = Delivered(200, b"ok", account="primary")
    assert next_step(item(), result, now=NOW, next_delay=doubling) is result


def test_retry_waits_the_backoff_for_this_attempt() -> None:
    step = next_step(item(attempts=3), Retry("503"), now=NOW, next_delay=doubling)
    assert step == Reschedule(NOW + 8.0, "503")


def test_retry_after_waits_exactly_what_the_upstream_asked() -> None:
    step = next_step(item(attempts=3), RetryAfter(42.0), now=NOW, next_delay=doubling)
    assert step == Reschedule(NOW + 42.0, "throttled")


def test_negative_waits_mean_now() -> None:
    assert next_step(item(), RetryAfter(-5.0), now=NOW, next_delay=doubling) == Reschedule(NOW, "throttled")


def test_a_retry_past_the_deadline_is_dead_instead() -> None:
    step = next_step(item(attempts=2, max_age=10.0), RetryAfter(10.0, "429"), now=NOW, next_delay=doubling)
    assert step == Dead("past its deadline after 2 attempts; last error: 429")


def test_permanent_failure_is_dead() -> None:
    step = next_step(item(attempts=2), FailedPermanently("400 bad recipient"), now=NOW, next_delay=doubling)
    assert step == Dead("failed permanently after 2 attempts: 400 bad recipient")
