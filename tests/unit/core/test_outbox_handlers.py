"""Outbox items are delivered by the handler registered for their kind, never by comparing strings."""

from __future__ import annotations

import pytest

from gateway.core.outbox import Delivered, DeliveryResult, FailedPermanently, Handlers, Unhandled
from gateway.store import OutboxItem


class Recording:
    def __init__(self, name: str) -> None:
        self.name = name
        self.delivered: list[str] = []
        self.dead: list[tuple[str, str]] = []

    async def deliver(self, item: OutboxItem) -> DeliveryResult:
        self.delivered.append(item.id)
        return Delivered(status_code=200, account=self.name)

    async def on_dead(self, item: OutboxItem, reason: str) -> None:
        self.dead.append((item.id, reason))


def _item(protocol: str) -> OutboxItem:
    return OutboxItem.new(protocol=protocol, method="POST", path="/x", headers=(), body=b"", client="app",  # type: ignore[arg-type]
                          now=1000.0, max_age=60.0, request_id=f"{protocol}-1")


async def test_each_kind_goes_to_its_own_handler() -> None:
    handlers, rest, sms = Handlers(), Recording("rest"), Recording("sms")
    handlers.register("rest", rest)
    handlers.register("sms", sms)
    assert await handlers.deliver(_item("sms")) == Delivered(status_code=200, account="sms")
    await handlers.on_dead(_item("rest"), "past its deadline")
    assert (rest.delivered, sms.delivered) == ([], ["sms-1"])
    assert rest.dead == [("rest-1", "past its deadline")] and sms.dead == []


async def test_a_kind_without_a_handler_fails_permanently() -> None:
    result = await Handlers().deliver(_item("callback"))
    assert result == FailedPermanently("no handler for outbox items of kind 'callback'")


async def test_a_kind_no_longer_served_says_why() -> None:
    handlers = Handlers()
    handlers.register("sms", Unhandled("SMS is no longer configured (sms.upstreams is empty)"))
    assert await handlers.deliver(_item("sms")) == FailedPermanently(
        "SMS is no longer configured (sms.upstreams is empty)")


def test_a_kind_has_one_handler() -> None:
    handlers = Handlers()
    handlers.register("rest", Recording("a"))
    with pytest.raises(ValueError, match="already have a handler"):
        handlers.register("rest", Recording("b"))
