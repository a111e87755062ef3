"""The shared in-flight query: fresh answers only, and few queries under concurrency. No sockets."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import DNSFailure
from gateway.upstreams.resolver import FreshSharedQueries


class ControlledQuery:
    """A fake DNS query: the test decides when each one answers; answer n is ["10.0.0.n"]."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._gates: list[asyncio.Event] = []
        self._sent_event = asyncio.Event()
        self.fail_with: Exception | None = None

    async def __call__(self, name: str) -> list[str]:
        self.sent.append(name)
        gate = asyncio.Event()
        self._gates.append(gate)
        self._sent_event.set()
        await gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [f"10.0.0.{len(self._gates[: self._gates.index(gate) + 1])}"]

    async def wait_sent(self, count: int) -> None:
        while len(self.sent) < count:
            self._sent_event.clear()
            await self._sent_event.wait()

    def answer(self, number: int) -> None:
        """Let query `number` (1-based) answer."""
        self._gates[number - 1].set()


@pytest.fixture
async def query() -> ControlledQuery:
    return ControlledQuery()


async def test_lookups_arriving_together_share_one_query(query: ControlledQuery) -> None:
    shared = FreshSharedQueries(query)
    lookups = [asyncio.create_task(shared.lookup("primary.test")) for _ in range(50)]
    await query.wait_sent(1)
    query.answer(1)
    assert await asyncio.gather(*lookups) == [["10.0.0.1"]] * 50
    assert query.sent == ["primary.test"]


async def test_lookup_arriving_after_the_query_was_sent_gets_the_next_answer(query: ControlledQuery) -> None:
    shared = FreshSharedQueries(query)
    early = asyncio.create_task(shared.lookup("primary.test"))
    await query.wait_sent(1)
    late = asyncio.create_task(shared.lookup("primary.test"))
    query.answer(1)
    assert await early == ["10.0.0.1"]
    await query.wait_sent(2)  # the late lookup's query starts only after it arrived
    assert not late.done()
    query.answer(2)
    assert await late == ["10.0.0.2"]


async def test_all_lookups_arriving_during_one_query_share_the_next(query: ControlledQuery) -> None:
    shared = FreshSharedQueries(query)
    first = asyncio.create_task(shared.lookup("primary.test"))
    await query.wait_sent(1)
    late = [asyncio.create_task(shared.lookup("primary.test")) for _ in range(20)]
    await asyncio.wait(late, timeout=0)  # one loop pass: each lookup joins on its first step
    assert len(query.sent) == 1  # they queue; nothing is sent while the first query is in flight
    query.answer(1)
    await query.wait_sent(2)
    query.answer(2)
    assert await first == ["10.0.0.1"]
    assert await asyncio.gather(*late) == [["10.0.0.2"]] * 20
    assert len(query.sent) == 2


async def test_names_do_not_share_queries(query: ControlledQuery) -> None:
    shared = FreshSharedQueries(query)
    lookups = [asyncio.create_task(shared.lookup(name)) for name in ("primary.test", "failover.test")]
    await query.wait_sent(2)
    query.answer(1)
    query.answer(2)
    await asyncio.gather(*lookups)
    assert sorted(query.sent) == ["failover.test", "primary.test"]


async def test_each_lookup_after_the_last_answer_sends_a_new_query(query: ControlledQuery) -> None:
    shared = FreshSharedQueries(query)
    for number in (1, 2, 3):
        lookup = asyncio.create_task(shared.lookup("primary.test"))
        await query.wait_sent(number)
        query.answer(number)
        assert await lookup == [f"10.0.0.{number}"]


async def test_a_failed_query_fails_its_waiters_and_the_next_one_is_fresh(query: ControlledQuery) -> None:
    shared = FreshSharedQueries(query)
    query.fail_with = DNSFailure("primary.test does not exist (NXDOMAIN)")
    failing = [asyncio.create_task(shared.lookup("primary.test")) for _ in range(3)]
    await query.wait_sent(1)
    query.answer(1)
    for lookup in failing:
        with pytest.raises(DNSFailure, match="NXDOMAIN"):
            await lookup
    query.fail_with = None
    lookup = asyncio.create_task(shared.lookup("primary.test"))
    await query.wait_sent(2)
    query.answer(2)
    assert await lookup == ["10.0.0.2"]


async def test_a_caller_giving_up_does_not_cancel_the_query_for_others(query: ControlledQuery) -> None:
    shared = FreshSharedQueries(query)
    impatient = asyncio.create_task(shared.lookup("primary.test"))
    patient = asyncio.create_task(shared.lookup("primary.test"))
    await query.wait_sent(1)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    query.answer(1)
    assert await patient == ["10.0.0.1"]


async def test_close_fails_waiting_lookups_and_refuses_new_ones(query: ControlledQuery) -> None:
    shared = FreshSharedQueries(query)
    running = asyncio.create_task(shared.lookup("primary.test"))
    await query.wait_sent(1)
    queued = asyncio.create_task(shared.lookup("primary.test"))
    await asyncio.wait([queued], timeout=0)
    await shared.close()
    for lookup in (running, queued):
        with pytest.raises(DNSFailure, match="closed"):
            await lookup
    with pytest.raises(DNSFailure, match="closed"):
        await shared.lookup("primary.test")
    assert len(query.sent) == 1
