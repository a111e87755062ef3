"""Resolve upstream names on every request, on long-lived UDP sockets, sharing only queries that are fresh.

The gateway never caches an IP, whatever the TTL: the vendor moves an account by changing DNS, and a
stale address is a failed send. Asking once per request is cheap: one datagram on a UDP socket kept
open per nameserver, the query's bytes built once per name (only its random id changes), the common
answer (A records of the asked name) read without building dnspython objects: ~50 µs of CPU on a near
resolver, no thread hop (`python -m bench.dns_cost`). Under load it is cheaper still: concurrent
lookups of one name share a query, but only one that *started after each of them arrived*. An answer
older than the request is never used, so sharing can never hide a DNS change from a request that came
after it.

The "generation" scheme, per name:

    running   the query in flight. It accepts joiners only until it is actually sent.
    queued    callers who arrived after `running` was sent wait here; their query is sent when
              `running` finishes, i.e. after every one of them arrived.

So N concurrent lookups cost one or two queries, and a caller waits at most for the end of the
query in flight plus its own. /etc/hosts is not read (see `policies.dns`).

What a stub resolver library does is kept. The wire (`upstreams.nameserver`): an answer counts only
from the nameserver's address and port with the query's id and question (anything else is ignored,
not fatal); a truncated answer is asked again over TCP; CNAME chains, error codes and unusual answers
are parsed by dnspython. The policy (`DNSResolver`, here): AAAA when a name has no A record; a lost
datagram asked again within the timeout; nameservers in order; timeouts, NXDOMAIN, SERVFAIL and
refusals become `DNSFailure`.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.exception
import dns.rcode
import dns.rdatatype
import dns.resolver

from gateway.errors import DNSFailure
from gateway.upstreams.nameserver import Answer, Nameserver, Question


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
    """Per-request lookups on long-lived UDP sockets: no cache, A records first, AAAA only when the name has none.

    `nameservers`/`port` override /etc/resolv.conf (read once, here, never on the request path); each
    nameserver is an IP address, asked in order. `timeout` bounds one lookup in seconds; within it a lost
    UDP datagram is asked again after half of it (of the next nameserver when there are several).
    Asking AAAA only as a fallback keeps the common case at one query per lookup while an IPv6-only
    upstream still resolves. A nameserver that answers SERVFAIL (or another error) or refuses the
    datagram is left for the rest of the lookup; NXDOMAIN ends it.
    """

    def __init__(self, *, nameservers: Sequence[str] | None = None, port: int = 53,
                 timeout: float = 2.0) -> None:
        if nameservers:
            addresses = list(nameservers)
        else:
            addresses = [str(server) for server in dns.resolver.Resolver().nameservers]
        self._nameservers = [Nameserver(_nameserver_address(address), port) for address in addresses]
        self._timeout = timeout
        self._attempt = timeout / 2
        self._questions: dict[tuple[str, dns.rdatatype.RdataType], Question] = {}
        self._shared = FreshSharedQueries(self._query)

    async def resolve(self, host: str) -> list[str]:
        """The name's addresses now, from a query sent after this call began; raises `DNSFailure`."""
        return await self._shared.lookup(host.lower().rstrip("."))

    async def close(self) -> None:
        """Fail the lookups still waiting and close the sockets; later lookups fail at once."""
        await self._shared.close()
        for nameserver in self._nameservers:
            nameserver.close()

    async def _query(self, name: str) -> list[str]:
        # One deadline for the lookup and a timer per datagram, not asyncio.timeout scopes: those cost
        # more than the rest of a lookup together.
        deadline = asyncio.get_running_loop().time() + self._timeout
        addresses = await self._addresses(name, dns.rdatatype.A, deadline)
        if not addresses:
            addresses = await self._addresses(name, dns.rdatatype.AAAA, deadline)
        if not addresses:
            raise DNSFailure(f"{name} has no A or AAAA record")
        return addresses

    async def _addresses(self, name: str, rdtype: dns.rdatatype.RdataType, deadline: float) -> list[str]:
        """One question asked until a nameserver answers it, round after round until the deadline."""
        question = self._question(name, rdtype)
        loop = asyncio.get_running_loop()
        remaining = list(self._nameservers)
        refusals: list[str] = []
        while remaining:
            for nameserver in list(remaining):
                now = loop.time()
                if deadline - now < _TIMER_SLACK:
                    raise DNSFailure(f"no DNS answer for {name} within {self._timeout:g}s")
                try:
                    answer = await self._ask(nameserver, question, deadline)
                except TimeoutError:
                    continue  # a lost datagram: ask the next nameserver, or this one again
                except (OSError, dns.exception.DNSException) as exc:
                    remaining.remove(nameserver)
                    refusals.append(f"{nameserver}: {str(exc) or type(exc).__name__}")
                    continue
                if answer.rcode == dns.rcode.NOERROR:
                    return answer.addresses
                if answer.rcode == dns.rcode.NXDOMAIN:
                    raise DNSFailure(f"{name} does not exist (NXDOMAIN)")
                remaining.remove(nameserver)
                refusals.append(f"{nameserver} answered {dns.rcode.to_text(answer.rcode)}")
        raise DNSFailure(f"no DNS server could answer for {name}: {'; '.join(refusals)}")

    async def _ask(self, nameserver: Nameserver, question: Question, deadline: float) -> Answer:
        """One attempt: a datagram answered within `_attempt` seconds (and the deadline), else TimeoutError."""
        loop = asyncio.get_running_loop()
        answer = await nameserver.ask(question, min(loop.time() + self._attempt, deadline))
        if answer.truncated:  # too large for 512 bytes of UDP: the whole answer over TCP, in a window of its own
            async with asyncio.timeout_at(min(loop.time() + self._attempt, deadline)):
                answer = await nameserver.ask_tcp(question)
        return answer

    def _question(self, name: str, rdtype: dns.rdatatype.RdataType) -> Question:
        question = self._questions.get((name, rdtype))
        if question is None:
            try:
                question = Question.build(name, rdtype)
            except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
                raise DNSFailure(f"DNS lookup of {name} failed: {exc}") from None
            if len(self._questions) >= _QUESTIONS_KEPT:
                self._questions.clear()  # names come from config and callbacks: a bound, not a working set
            self._questions[(name, rdtype)] = question
        return question


_QUESTIONS_KEPT = 1024
_TIMER_SLACK = 0.001  # seconds: a timer may fire this early (uvloop counts in milliseconds)


def _nameserver_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise ValueError(f"DNS nameserver {address!r} is not an IP address") from None
