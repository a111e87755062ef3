"""Resolve upstream names with dnspython on every request, sharing only queries that are fresh.

The gateway never caches an IP, whatever the TTL: the vendor moves an account by changing DNS, and a
stale address is a failed send. Asking once per request is cheap (one async UDP query, ~0.3 ms CPU on
a near resolver, no thread hop), and cheaper still under load: concurrent lookups of one name share a
query, but only one that *started after each of them arrived*. An answer older than the request is
never used, so sharing can never hide a DNS change from a request that came after it.

The "generation" scheme, per name:

    running   the query in flight. It accepts joiners only until it is actually sent.
    queued    callers who arrived after `running` was sent wait here; their query is sent when
              `running` finishes, i.e. after every one of them arrived.

So N concurrent lookups cost one or two queries, and a caller waits at most for the end of the
query in flight plus its own. /etc/hosts is not read (see `policies.dns`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.resolver

from gateway.errors import DNSFailure


class Resolver(Protocol):
    """What the upstream seam needs: fresh addresses for a name, and a way to stop."""

    async def resolve(self, host: str) -> list[str]:
        """The addresses (IP strings) the name has now; raises `DNSFailure`."""
        ...

    async def close(self) -> None: ...


Query = Callable[[str], Awaitable[list[str]]]


@dataclass(eq=False, slots=True)
class _Flight:
    future: asyncio.Future[list[str]]
    sent: bool = False  # once True, callers arriving now are younger than the query: they must queue


@dataclass(slots=True)
class _Generations:
    running: _Flight
    queued: _Flight | None = None


class FreshSharedQueries:
    """Concurrent lookups of one name share one query that started after all of them arrived."""

    def __init__(self, query: Query) -> None:
        self._query = query
        self._names: dict[str, _Generations] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def lookup(self, name: str) -> list[str]:
        if self._closed:
            raise DNSFailure(f"cannot resolve {name}: the resolver is closed")
        # shield: a caller that gives up must not cancel the query the others are waiting on.
        return await asyncio.shield(self._join(name).future)

    def _join(self, name: str) -> _Flight:
        generations = self._names.get(name)
        if generations is None:
            flight = _new_flight()
            self._names[name] = _Generations(running=flight)
            self._send(name, flight)
            return flight
        if not generations.running.sent:
            return generations.running
        if generations.queued is None:
            generations.queued = _new_flight()
        return generations.queued

    def _send(self, name: str, flight: _Flight) -> None:
        task = asyncio.get_running_loop().create_task(self._run(name, flight), name=f"dns:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, name: str, flight: _Flight) -> None:
        flight.sent = True  # from here on, the answer may predate a newcomer's arrival
        try:
            flight.future.set_result(await self._query(name))
        except asyncio.CancelledError:
            _fail(flight, DNSFailure(f"cannot resolve {name}: the resolver is closed"))
            raise
        except Exception as exc:  # every waiter gets the query's own error (DNSFailure or a bug)
            _fail(flight, exc)
        finally:
            self._advance(name)

    def _advance(self, name: str) -> None:
        generations = self._names[name]
        queued = generations.queued
        if queued is None:
            del self._names[name]  # nothing waits: keep no state per name between requests
            return
        if self._closed:
            del self._names[name]
            _fail(queued, DNSFailure(f"cannot resolve {name}: the resolver is closed"))
            return
        generations.running, generations.queued = queued, None
        self._send(name, queued)

    async def close(self) -> None:
        """Fail the lookups still waiting and cancel the queries in flight."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _new_flight() -> _Flight:
    future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
    # Retrieve the error even when every waiter gave up, so asyncio never logs it as unhandled.
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return _Flight(future)


def _fail(flight: _Flight, exc: BaseException) -> None:
    if not flight.future.done():
        flight.future.set_exception(exc)


class DNSResolver:
    """The dnspython resolver: no cache, A records first, AAAA only when the name has no A record.

    `nameservers`/`port` override /etc/resolv.conf (read once, here, never on the request path).
    `timeout` bounds one lookup in seconds; a lost UDP datagram is retried once within it.
    Asking AAAA only as a fallback keeps the common case at one query per lookup while an IPv6-only
    upstream still resolves.
    """

    def __init__(self, *, nameservers: Sequence[str] | None = None, port: int = 53,
                 timeout: float = 2.0) -> None:
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = list(nameservers)
        else:
            resolver = dns.asyncresolver.Resolver()
        resolver.port = port
        resolver.lifetime = timeout
        resolver.timeout = timeout / 2
        resolver.cache = None  # the point of this module: every lookup asks the server
        self._resolver = resolver
        self._timeout = timeout
        self._shared = FreshSharedQueries(self._query)

    async def resolve(self, host: str) -> list[str]:
        """The name's addresses now, from a query sent after this call began; raises `DNSFailure`."""
        return await self._shared.lookup(host.lower().rstrip("."))

    async def close(self) -> None:
        await self._shared.close()

    async def _query(self, name: str) -> list[str]:
        try:
            # dnspython's retry backoff may overshoot its lifetime; the caller's budget is a promise.
            async with asyncio.timeout(self._timeout):
                addresses = await self._addresses(name, "A")
                if not addresses:
                    addresses = await self._addresses(name, "AAAA")
        except TimeoutError:
            raise DNSFailure(f"no DNS answer for {name} within {self._timeout:g}s") from None
        if not addresses:
            raise DNSFailure(f"{name} has no A or AAAA record")
        return addresses

    async def _addresses(self, name: str, rdtype: str) -> list[str]:
        try:
            # search=False: upstream names are fully qualified; resolv.conf search lists must not
            # turn "api.example.com" into "api.example.com.corp.local".
            answer = await self._resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            raise DNSFailure(f"{name} does not exist (NXDOMAIN)") from None
        except dns.exception.Timeout:
            raise DNSFailure(f"no DNS answer for {name} within {self._timeout:g}s") from None
        except dns.resolver.NoNameservers as exc:
            raise DNSFailure(f"no DNS server could answer for {name}: {exc}") from None
        except dns.exception.DNSException as exc:
            raise DNSFailure(f"DNS lookup of {name} failed: {exc}") from None
        return [rdata.address for rdata in answer]
