"""One group of interchangeable upstreams (an Envoy "cluster"): who gets traffic, at what rate, and who is up.

The Responsys accounts are one cluster, the SMS aggregators another: their health says nothing of each
other's. A cluster owns, for its members in priority order,

- the failover state (`policies.failover.FailoverPolicy`): passive outlier detection from real traffic
  (`record`), the operator's override, and the active health checks (`start()` runs one probe task per
  member that is due, so a hanging member delays no other);
- a token bucket per member with a configured rate (`policies.ratelimit.TokenBucket`);
- the sharing of that state with every replica through the store (`SharedFailover`): a verdict this
  replica makes is published in the background, and a newer one another replica wrote is adopted.

The forward loop (`gateway.core.loop`) asks it for candidates, buckets, and tells it each outcome.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, Protocol, TypeVar

import httpx

from gateway.config import RateLimit
from gateway.errors import UpstreamError
from gateway.store import Store
from gateway.tasks import cancel_and_wait
from gateway.upstreams.shared_failover import SharedFailover
from gateway.upstreams.upstream import Upstream
from policies.failover import FailoverEvent, FailoverPolicy, FailoverSettings, FailoverStatus, Switched
from policies.outcome import Outcome
from policies.ratelimit import TokenBucket

log = logging.getLogger("aftm.runtime")

PROBE_TICK = 0.1  # seconds between checks of which member is due a probe
PROBE_TIMEOUT = 2.0  # seconds a probe waits for an answer
FOLLOW_INTERVAL = 0.25  # seconds between reads of the failover state other replicas share


class Member(Protocol):
    """What a cluster needs of a configured upstream: a unique name and its rate limit."""

    @property
    def name(self) -> str: ...

    @property
    def rate_limit(self) -> RateLimit: ...


M = TypeVar("M", bound=Member)


class Cluster(Generic[M]):
    """Members in priority order, their failover state, rate limits and health checks."""

    def __init__(self, *, members: Sequence[M], settings: FailoverSettings, upstream: Upstream,
                 probe_url: Callable[[M], str], store: Callable[[], Store], replica: str, shared_key: str,
                 traffic: str = "traffic", member_word: str = "account",
                 on_switch: Callable[[Switched], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """`probe_url(member)`: a GET there answering below 500 means the member is up (and sends nothing).

        `traffic` and `member_word` name things in the logs ("SMS traffic", "SMS upstream"). The clock
        is epoch seconds: the state is shared with replicas whose monotonic clocks differ.
        """
        self.members = list(members)
        self._by_name = {m.name: m for m in self.members}
        self.failover = FailoverPolicy(accounts=[m.name for m in self.members], settings=settings, clock=clock)
        self.buckets = {m.name: TokenBucket(rate_per_second=m.rate_limit.per_minute / 60.0, burst=m.rate_limit.burst)
                        for m in self.members if m.rate_limit.per_minute > 0}
        self.switches: collections.Counter[str] = collections.Counter()  # failovers, failbacks, ... since start
        self.shared = SharedFailover(key=shared_key, policy=self.failover, store=store, replica=replica,
                                     what=traffic)
        self._upstream = upstream
        self._probe_url = probe_url
        self._traffic = traffic
        self._member_word = member_word
        self._on_switch = on_switch
        self._tasks: list[asyncio.Task[None]] = []
        self._publishing: set[asyncio.Task[None]] = set()
        self._started = False

    # --- what the forward loop asks -----------------------------------------------------------------

    @property
    def active(self) -> str:
        return self.failover.active

    def member(self, name: str) -> M:
        return self._by_name[name]

    def candidates(self) -> list[M]:
        """Members to try for one request: the active one, other healthy ones, then ejected ones."""
        return [self._by_name[name] for name in self.failover.candidates()]

    def bucket(self, name: str) -> TokenBucket | None:
        return self.buckets.get(name)

    def record(self, name: str, outcome: Outcome) -> None:
        """Passive health: what a real attempt on `name` ended with."""
        self.note(self.failover.record(name, outcome))

    # --- what operators and start-up change ----------------------------------------------------------

    def set_override(self, name: str | None) -> None:
        """Pin traffic to `name`, or return to automatic with None; ValueError for an unknown name."""
        self.note(self.failover.set_override(name))

    def set_rate(self, name: str, *, rate_per_second: float, burst: float) -> None:
        """Size `name`'s bucket (e.g. from the vendor's published limits); made if it had none."""
        bucket = self.buckets.get(name)
        if bucket is None:
            self.buckets[name] = TokenBucket(rate_per_second=rate_per_second, burst=burst)
        else:
            bucket.set_rate(rate_per_second=rate_per_second)

    def status(self) -> FailoverStatus:
        return self.failover.status()

    def note(self, event: FailoverEvent | None) -> None:
        """Count, log and share a failover decision, whoever made it (traffic, probe or operator)."""
        if event is None:
            return
        if self._started:
            self._in_background(self.shared.publish())
        if isinstance(event, Switched):
            self.switches[event.reason.value] += 1
            if self._on_switch is not None:
                self._on_switch(event)
            log.warning("%s moved from %s to %s (%s)", self._traffic, event.from_, event.to, event.reason.value,
                        extra={"reason": event.detail})
        else:
            log.warning("%s %s is now %s", self._member_word, event.account,
                        "healthy" if event.healthy else "unhealthy", extra={"reason": event.reason})

    # --- background: health checks and the replicas' shared state -------------------------------------

    async def start(self) -> None:
        """Run the health checks and follow the state other replicas share, until `close()`."""
        self._started = True
        self._tasks.append(asyncio.create_task(self._probe_loop(), name=f"{self.shared.key}-probes"))
        self._tasks.append(asyncio.create_task(self._follow_loop(), name=f"{self.shared.key}-follow"))

    async def close(self) -> None:
        self._started = False
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
        for task in list(self._publishing):  # a verdict still being written for the other replicas
            await asyncio.gather(task, return_exceptions=True)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work, name="publish-failover-state")
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _follow_loop(self) -> None:
        while True:
            await asyncio.sleep(FOLLOW_INTERVAL)
            await self.shared.follow()

    async def _probe_loop(self) -> None:
        probing: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                for member in self.members:
                    running = probing.get(member.name)
                    if (running is None or running.done()) and self.failover.probe_due(member.name):
                        probing[member.name] = asyncio.create_task(self._probe(member))
                await asyncio.sleep(PROBE_TICK)
        finally:
            for task in probing.values():
                task.cancel()

    async def _probe(self, member: M) -> None:
        """A member that answers HTTP at all (< 500) on its probe URL is up."""
        try:
            response = await self._upstream.send(httpx.Request("GET", self._probe_url(member)),
                                                 read_timeout=PROBE_TIMEOUT)
        except UpstreamError as exc:
            healthy, detail = False, str(exc)
        else:
            healthy, detail = response.status_code < 500, f"HTTP {response.status_code}"
        self.note(self.failover.record_probe(member.name, healthy, detail))
