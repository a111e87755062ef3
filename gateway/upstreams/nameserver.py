"""One DNS server, asked over a UDP socket kept open: the resolver's wire, below its policy.

`Nameserver.ask` sends a prebuilt `Question` (only a fresh random id per query) on one connected UDP
socket per server and waits for the answer that matches it: from the server's address and port, with
the query's id, repeating its question (names compared case-insensitively). Every other datagram,
malformed ones included, is ignored; the query keeps waiting for its own until its deadline. The
common answer (A records owned by the asked name) is read with `struct`; every other shape (CNAME
chains, AAAA, error codes, authority or additional records) goes through dnspython. An answer too
large for UDP comes back truncated, and `ask_tcp` asks again over TCP (dnspython's). A socket error
fails the queries waiting on it and closes it; the next query opens a new one.

A socket serves at most `ROTATE_AFTER_QUERIES` queries or `ROTATE_AFTER_SECONDS`, then new queries go
out from a fresh one (a new random source port) while the old one finishes what it has in flight: an
off-path spoofer must guess the port as well as the 16-bit id, as with a socket per query, for about
1 µs per query (a socket opened per 64 queries) instead of a socket per query.

What to ask, of whom, for how long, and what an answer means for the request: `resolver.DNSResolver`.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import struct
import typing
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

__all__ = ["Answer", "Nameserver", "Question"]

_QUERY_RESPONSE = 0x80  # first flags byte: QR set, opcode QUERY (0)
_QR_OPCODE = 0xF8
_TRUNCATED = 0x02  # TC, in the first flags byte
_ONE_QUESTION = b"\x00\x01"
_A_RECORD_SIZE = 16  # name pointer 2, type 2, class 2, TTL 4, length 2, address 4
_PLAIN_A_RECORD = struct.Struct("!HHHIH")
ROTATE_AFTER_QUERIES = 64
ROTATE_AFTER_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Question:
    """A query's wire bytes without its id, built once per name and type; only the id changes per query."""

    name: dns.name.Name
    rdtype: dns.rdatatype.RdataType
    wire: bytes  # the query from its flags on (RD set, no EDNS: answers over 512 bytes come truncated)
    section: bytes  # the question section, lower-cased: what a matching answer repeats (case aside)

    @classmethod
    def build(cls, name: str, rdtype: dns.rdatatype.RdataType) -> Question:
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
class Answer:
    rcode: dns.rcode.Rcode
    addresses: list[str]
    truncated: bool = False


def _read_answer(data: bytes, question: Question) -> Answer:
    """What a matching UDP answer says; raises when it is malformed (the caller then ignores it)."""
    if data[2] & _TRUNCATED:
        return Answer(dns.rcode.NOERROR, [], truncated=True)
    addresses = _plain_a_records(data, question)
    if addresses is not None:
        return Answer(dns.rcode.NOERROR, addresses)
    return _message_answer(dns.message.from_wire(data))


def _plain_a_records(data: bytes, question: Question) -> list[str] | None:
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


def _message_answer(message: dns.message.Message) -> Answer:
    if not isinstance(message, dns.message.QueryMessage):
        raise dns.exception.FormError  # not an answer to a query
    rcode = message.rcode()
    if rcode != dns.rcode.NOERROR:
        return Answer(rcode, [])
    rrset = message.resolve_chaining().answer  # follows CNAMEs to the records of the asked type
    return Answer(rcode, [rdata.to_text() for rdata in rrset] if rrset is not None else [])


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
        self._waiting: dict[int, tuple[Question, asyncio.Future[Answer]]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self.retired = False  # takes no new query; closes once the last one in flight is over
        self.queries = 0
        self.opened_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.loop = asyncio.get_running_loop()
        self.opened_at = self.loop.time()
        # cast: uvloop's UDPTransport is not an asyncio.DatagramTransport subclass
        self._transport = typing.cast(asyncio.DatagramTransport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = (peer[0], peer[1])

    async def ask(self, question: Question, until: float) -> Answer:
        """Send the question with a fresh id; its answer, or TimeoutError at `until` (loop time)."""
        if self.closed or self.retired or self._transport is None or self.loop is None:
            raise ConnectionError("the DNS socket is closed")
        self.queries += 1
        ident = secrets.randbits(16)  # unpredictable: with one source port, the id is what a spoofer must guess
        while ident in self._waiting:
            ident = secrets.randbits(16)
        future: asyncio.Future[Answer] = self.loop.create_future()
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
            if self.retired and not self._waiting:
                self.close()

    def usable(self) -> bool:
        """Whether a new query may go out on this socket (open, on this loop, not yet due to rotate)."""
        if self.closed or self.retired or self.loop is not asyncio.get_running_loop():
            return False
        if self.queries >= ROTATE_AFTER_QUERIES or self.loop.time() - self.opened_at >= ROTATE_AFTER_SECONDS:
            self.retired = True
            if not self._waiting:
                self.close()
            return False
        return True

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


def _expire(future: asyncio.Future[Answer]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class Nameserver:
    """One DNS server: a long-lived UDP socket, opened again after an error; TCP for truncated answers."""

    def __init__(self, address: str, port: int) -> None:
        self.address = address
        self.port = port
        self._channel: _Channel | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    async def ask(self, question: Question, until: float) -> Answer:
        channel = self._channel
        if channel is None or not channel.usable():
            async with asyncio.timeout_at(until):
                channel = await self._open()
        return await channel.ask(question, until)

    async def ask_tcp(self, question: Question) -> Answer:
        """The question over a TCP connection of its own (dnspython checks the answer's id and question)."""
        query = dns.message.make_query(question.name, question.rdtype)  # a fresh random id, no EDNS
        return _message_answer(await dns.asyncquery.tcp(query, self.address, port=self.port))

    async def _open(self) -> _Channel:
        async with self._opening:  # concurrent first queries share one socket
            channel = self._channel
            if channel is not None and channel.usable():
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
