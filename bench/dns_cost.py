"""`python -m bench.dns_cost [--queries N]`: what one per-request DNS lookup costs, and what it could cost.

Against a dnsmasq on loopback (started here), N sequential lookups of the upstream name each way:

    gateway        gateway.upstreams.resolver.DNSResolver.resolve: what every forwarded request pays. Since
                   issue 14: one long-lived UDP socket per nameserver, the query's bytes built once per name,
                   the A answer read with struct, behind the fresh shared queries (before, it went through
                   dns.asyncresolver and cost a little more than the dnspython row)
    gateway x16    16 lookups of the name started together, per lookup: they share one query
    dnspython      dns.asyncresolver.Resolver.resolve alone (no sharing layer): DNSResolver before issue 14
    udp-query      dns.asyncquery.udp with a prepared query: no Resolver bookkeeping, new socket per query
    persistent     one connected UDP endpoint kept open, a fresh query id per lookup, answers matched by
                   id (dns.message.make_query / from_wire): no socket per query
    raw-wire       the same endpoint, the query's wire bytes built once (only the id changes) and the A
                   records read straight from the answer's bytes (struct): no dnspython objects per lookup

Prints wall time and this process's CPU time per lookup.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.asyncresolver
import dns.message
import dns.rdatatype

from bench.services import UPSTREAM_NAME, Stack, sigterm_unwinds, start_dnsmasq
from gateway.upstreams.resolver import DNSResolver


class PersistentUDP(asyncio.DatagramProtocol):
    """One connected UDP socket to the resolver; concurrent queries told apart by their id."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.waiting: dict[int, asyncio.Future[dns.message.Message]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's UDPTransport is not an asyncio.DatagramTransport subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(Exception):
            message = dns.message.from_wire(data)
            future = self.waiting.pop(message.id, None)
            if future is not None and not future.done():
                future.set_result(message)

    async def resolve(self, name: str) -> list[str]:
        query = dns.message.make_query(name, dns.rdatatype.A)
        query.id = random.getrandbits(16)
        while query.id in self.waiting:
            query.id = random.getrandbits(16)
        future = asyncio.get_running_loop().create_future()
        self.waiting[query.id] = future
        assert self.transport is not None
        self.transport.sendto(query.to_wire())
        answer = await asyncio.wait_for(future, 2.0)
        return [rdata.address for rrset in answer.answer for rdata in rrset if rrset.rdtype == dns.rdatatype.A]


def _skip_name(data: bytes, offset: int) -> int:
    while True:
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:  # compression pointer ends the name
            return offset + 2
        offset += 1 + length


def parse_a_records(data: bytes, query_id: int) -> list[str] | None:
    """The A addresses in a DNS answer for `query_id` (None: not ours, or an error rcode)."""
    ident, flags, qdcount, ancount = struct.unpack_from("!HHHH", data)
    if ident != query_id or not flags & 0x8000 or flags & 0x000F:
        return None
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(data, offset) + 4
    addresses = []
    for _ in range(ancount):
        offset = _skip_name(data, offset)
        rtype, rclass, _ttl, length = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        if rtype == 1 and rclass == 1 and length == 4:
            addresses.append(socket.inet_ntoa(data[offset:offset + 4]))
        offset += length
    return addresses


class RawWireUDP(PersistentUDP):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.template = bytearray(dns.message.make_query(name, dns.rdatatype.A).to_wire())
        self.raw_waiting: dict[int, asyncio.Future[list[str]]] = {}

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12:
            return
        ident = struct.unpack_from("!H", data)[0]
        future = self.raw_waiting.pop(ident, None)
        if future is not None and not future.done():
            addresses = parse_a_records(data, ident)
            if addresses is None:
                future.set_exception(OSError("DNS error answer"))
            else:
                future.set_result(addresses)

    async def resolve(self, name: str) -> list[str]:
        ident = random.getrandbits(16)
        while ident in self.raw_waiting:
            ident = random.getrandbits(16)
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self.raw_waiting[ident] = future
        struct.pack_into("!H", self.template, 0, ident)
        self.transport.sendto(bytes(self.template))
        return await asyncio.wait_for(future, 2.0)


async def measure(name: str, lookup: Callable[[], Awaitable[list[str]]], queries: int) -> None:
    await lookup()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(queries):
        assert await lookup() == ["127.0.0.1"]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{name:<12}{wall / queries * 1e6:>10.0f}{cpu / queries * 1e6:>10.0f}", flush=True)


async def measure_together(name: str, lookup: Callable[[], Awaitable[list[str]]], queries: int,
                           together: int) -> None:
    await lookup()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(queries // together):
        answers = await asyncio.gather(*(lookup() for _ in range(together)))
        assert answers == [["127.0.0.1"]] * together
    count = queries // together * together
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{name:<12}{wall / count * 1e6:>10.0f}{cpu / count * 1e6:>10.0f}", flush=True)


async def run(port: int, queries: int) -> None:
    gateway = DNSResolver(nameservers=["127.0.0.1"], port=port, timeout=2.0)
    plain = dns.asyncresolver.Resolver(configure=False)
    plain.nameservers, plain.port, plain.cache = ["127.0.0.1"], port, None
    prepared = dns.message.make_query(UPSTREAM_NAME, dns.rdatatype.A)
    loop = asyncio.get_running_loop()
    transport, persistent = await loop.create_datagram_endpoint(PersistentUDP, remote_addr=("127.0.0.1", port))

    async def via_plain() -> list[str]:
        answer = await plain.resolve(UPSTREAM_NAME, "A", search=False)
        return [rdata.address for rdata in answer]

    async def via_udp() -> list[str]:
        answer = await dns.asyncquery.udp(prepared, "127.0.0.1", timeout=2.0, port=port)
        return [rdata.address for rrset in answer.answer for rdata in rrset]

    print(f"{'lookup':<12}{'wall µs':>10}{'CPU µs':>10}")
    await measure("gateway", lambda: gateway.resolve(UPSTREAM_NAME), queries)
    await measure_together("gateway x16", lambda: gateway.resolve(UPSTREAM_NAME), queries, 16)
    await measure("dnspython", via_plain, queries)
    await measure("udp-query", via_udp, queries)
    await measure("persistent", lambda: persistent.resolve(UPSTREAM_NAME), queries)
    raw_transport, raw = await loop.create_datagram_endpoint(lambda: RawWireUDP(UPSTREAM_NAME),
                                                             remote_addr=("127.0.0.1", port))
    await measure("raw-wire", lambda: raw.resolve(UPSTREAM_NAME), queries)
    raw_transport.close()
    transport.close()
    await gateway.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dns_cost", description=__doc__)
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the gateway runs on uvloop")
    args = parser.parse_args(argv)
    with sigterm_unwinds(), tempfile.TemporaryDirectory(prefix="aftm-dns-") as tmp, contextlib.ExitStack() as exits:
        port = start_dnsmasq(Stack(workdir=Path(tmp), stack=exits))
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(run(port, args.queries))
        else:
            asyncio.run(run(port, args.queries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
