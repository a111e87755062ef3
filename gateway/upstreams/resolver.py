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

What a stub resolver library does is kept: an answer counts only from the nameserver's address and
port, with the query's id and question (anything else is ignored, not fatal); a truncated answer is
asked again over TCP (dnspython's); AAAA when a name has no A record; CNAME chains, error codes and
unusual answers are parsed by dnspython; timeouts, NXDOMAIN and SERVFAIL become `DNSFailure`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import struct
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
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
        self._nameservers = [_Nameserver(_nameserver_address(address), port) for address in addresses]
        self._timeout = timeout
        self._attempt = timeout / 2
        self._questions: dict[tuple[str, dns.rdatatype.RdataType], _Question] = {}
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
                    refusals.append(f"{nameserver}: {exc or type(exc).__name__}")
                    continue
                if answer.rcode == dns.rcode.NOERROR:
                    return answer.addresses
                if answer.rcode == dns.rcode.NXDOMAIN:
                    raise DNSFailure(f"{name} does not exist (NXDOMAIN)")
                remaining.remove(nameserver)
                refusals.append(f"{nameserver} answered {dns.rcode.to_text(answer.rcode)}")
        raise DNSFailure(f"no DNS server could answer for {name}: {'; '.join(refusals)}")

    async def _ask(self, nameserver: _Nameserver, question: _Question, deadline: float) -> _Answer:
        """One attempt: a datagram answered within `_attempt` seconds (and the deadline), else TimeoutError."""
        loop = asyncio.get_running_loop()
        answer = await nameserver.ask(question, min(loop.time() + self._attempt, deadline))
        if answer.truncated:  # too large for 512 bytes of UDP: the whole answer over TCP, in a window of its own
            async with asyncio.timeout_at(min(loop.time() + self._attempt, deadline)):
                answer = await nameserver.ask_tcp(question)
        return answer

    def _question(self, name: str, rdtype: dns.rdatatype.RdataType) -> _Question:
        question = self._questions.get((name, rdtype))
        if question is None:
            try:
                question = _Question.build(name, rdtype)
            except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
                raise DNSFailure(f"DNS lookup of {name} failed: {exc}") from None
            if len(self._questions) >= _QUESTIONS_KEPT:
                self._questions.clear()  # names come from config and callbacks: a bound, not a working set
            self._questions[(name, rdtype)] = question
        return question


# --- the wire: one connected UDP socket per nameserver ---------------------------------------------------

_QUESTIONS_KEPT = 1024
_TIMER_SLACK = 0.001  # seconds: a timer may fire this early (uvloop counts in milliseconds)
_QUERY_RESPONSE = 0x80  # first flags byte: QR set, opcode QUERY (0)
_QR_OPCODE = 0xF8
_TRUNCATED = 0x02  # TC, in the first flags byte
_ONE_QUESTION = b"\x00\x01"
_A_RECORD_SIZE = 16  # name pointer 2, type 2, class 2, TTL 4, length 2, address 4
_PLAIN_A_RECORD = struct.Struct("!HHHIH")


@dataclass(frozen=True, slots=True)
class _Question:
    """A query's wire bytes without its id, built once per name and type; only the id changes per query."""

    name: dns.name.Name
    rdtype: dns.rdatatype.RdataType
    wire: bytes  # the query from its flags on (RD set, no EDNS: answers over 512 bytes come truncated)
    section: bytes  # the question section, lower-cased: what a matching answer repeats (case aside)

    @classmethod
    def build(cls, name: str, rdtype: dns.rdatatype.RdataType) -> _Question:
        query = dns.message.make_query(name, rdtype)
        wire = query.to_wire()
        return cls(query.question[0].name, rdtype, wire[2:], wire[12:].lower())

    def answered_by(self, data: bytes) -> bool:
        """True when `data` is a response to this question (the id is matched by the caller)."""
        return (len(data) >= 12 + len(self.section)
                and data[2] & _QR_OPCODE == _QUERY_RESPONSE
                and data[4:6] == _ONE_QUESTION
                and data[12:12 + len(self.section)].lower() == self.section)


@dataclass(frozen=True, slots=True)
class _Answer:
    rcode: dns.rcode.Rcode
    addresses: list[str]
    truncated: bool = False


def _read_answer(data: bytes, question: _Question) -> _Answer:
    """What a matching UDP answer says; raises when it is malformed (the caller then ignores it)."""
    if data[2] & _TRUNCATED:
        return _Answer(dns.rcode.NOERROR, [], truncated=True)
    addresses = _plain_a_records(data, question)
    if addresses is not None:
        return _Answer(dns.rcode.NOERROR, addresses)
    return _message_answer(dns.message.from_wire(data))


def _plain_a_records(data: bytes, question: _Question) -> list[str] | None:
    """The addresses of the common answer, read without dnspython objects; None for any other shape.

    The common answer: NOERROR, A records only, each owned by the question's name (the pointer 0xC00C),
    nothing in the authority and additional sections and nothing after the records. Anything else (CNAME
    chains, AAAA, errors, other sections) is parsed by dnspython.
    """
    if question.rdtype != dns.rdatatype.A or data[3] & 0x0F or data[8:12] != b"\x00\x00\x00\x00":
        return None
    start = 12 + len(question.section)
    count = int.from_bytes(data[6:8], "big")
    if len(data) != start + count * _A_RECORD_SIZE:
        return None
    addresses: list[str] = []
    for offset in range(start, len(data), _A_RECORD_SIZE):
        owner, rdtype, rdclass, _ttl, length = _PLAIN_A_RECORD.unpack_from(data, offset)
        if owner != 0xC00C or rdtype != dns.rdatatype.A or rdclass != dns.rdataclass.IN or length != 4:
            return None
        address = socket.inet_ntoa(data[offset + 12:offset + 16])
        if address not in addresses:  # an RRset is a set: dnspython drops repeats too
            addresses.append(address)
    return addresses


def _message_answer(message: dns.message.Message) -> _Answer:
    if not isinstance(message, dns.message.QueryMessage):
        raise dns.exception.FormError  # not an answer to a query
    rcode = message.rcode()
    if rcode != dns.rcode.NOERROR:
        return _Answer(rcode, [])
    rrset = message.resolve_chaining().answer  # follows CNAMEs to the records of the asked type
    return _Answer(rcode, [rdata.to_text() for rdata in rrset] if rrset is not None else [])


class _Channel(asyncio.DatagramProtocol):
    """One connected UDP socket to one nameserver; concurrent queries told apart by id and question.

    An answer counts only when it comes from the nameserver's address and port (the kernel already
    drops others on a connected socket), carries a waiting query's id and repeats its question; any
    other datagram, malformed ones included, is ignored and the query keeps waiting for its own.
    An error on the socket (e.g. ICMP port unreachable) fails the queries waiting on it and closes it.
    """

    def __init__(self) -> None:
        self._transport: asyncio.DatagramTransport | None = None
        self._peer: tuple[str, int] | None = None
        self._waiting: dict[int, tuple[_Question, asyncio.Future[_Answer]]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.loop = asyncio.get_running_loop()
        # cast: uvloop's UDPTransport is not an asyncio.DatagramTransport subclass
        self._transport = typing.cast(asyncio.DatagramTransport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = (peer[0], peer[1])

    async def ask(self, question: _Question, until: float) -> _Answer:
        """Send the question with a fresh id; its answer, or TimeoutError at `until` (loop time)."""
        if self.closed or self._transport is None or self.loop is None:
            raise ConnectionError("the DNS socket is closed")
        ident = secrets.randbits(16)  # unpredictable: with one source port, the id is what a spoofer must guess
        while ident in self._waiting:
            ident = secrets.randbits(16)
        future: asyncio.Future[_Answer] = self.loop.create_future()
        self._waiting[ident] = (question, future)
        timer = self.loop.call_at(until, _expire, future)
        try:
            self._transport.sendto(ident.to_bytes(2, "big") + question.wire)
            return await future
        finally:
            timer.cancel()
            del self._waiting[ident]  # only here: the id stays taken until its query is over
            if future.done() and not future.cancelled():
                future.exception()  # retrieved, also when the caller was cancelled meanwhile

    def datagram_received(self, data: bytes, addr: tuple[str, int] | None) -> None:
        if addr is not None and (addr[0], addr[1]) != self._peer:
            return
        waiting = self._waiting.get(int.from_bytes(data[:2], "big"))
        if waiting is None:
            return
        question, future = waiting
        if future.done() or not question.answered_by(data):
            return
        try:
            answer = _read_answer(data, question)
        except Exception:  # malformed: as dnspython's resolver does, keep waiting
            return
        future.set_result(answer)

    def error_received(self, exc: Exception) -> None:
        self._fail(exc)
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("the DNS socket closed"))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._fail(ConnectionError("the DNS socket closed"))

    def _fail(self, exc: Exception) -> None:
        self.closed = True  # the next query opens a new socket
        for _question, future in self._waiting.values():
            if not future.done():
                future.set_exception(exc)


def _expire(future: asyncio.Future[_Answer]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class _Nameserver:
    """One DNS server: a long-lived UDP socket, opened again after an error; TCP for truncated answers."""

    def __init__(self, address: str, port: int) -> None:
        self.address = address
        self.port = port
        self._channel: _Channel | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    async def ask(self, question: _Question, until: float) -> _Answer:
        channel = self._channel
        if channel is None or channel.closed or channel.loop is not asyncio.get_running_loop():
            async with asyncio.timeout_at(until):
                channel = await self._open()
        return await channel.ask(question, until)

    async def ask_tcp(self, question: _Question) -> _Answer:
        """The question over a TCP connection of its own (dnspython checks the answer's id and question)."""
        query = dns.message.make_query(question.name, question.rdtype)  # a fresh random id, no EDNS
        return _message_answer(await dns.asyncquery.tcp(query, self.address, port=self.port))

    async def _open(self) -> _Channel:
        async with self._opening:  # concurrent first queries share one socket
            channel = self._channel
            if channel is not None and not channel.closed and channel.loop is asyncio.get_running_loop():
                return channel
            if self._closed:
                raise ConnectionError("the resolver is closed")
            _transport, channel = await asyncio.get_running_loop().create_datagram_endpoint(
                _Channel, remote_addr=(self.address, self.port))
            if self._closed:  # closed while the socket was being made
                channel.close()
                raise ConnectionError("the resolver is closed")
            self._channel = channel
            return channel

    def close(self) -> None:
        self._closed = True
        if self._channel is not None:
            self._channel.close()


def _nameserver_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise ValueError(f"DNS nameserver {address!r} is not an IP address") from None
