"""A DNS server on loopback whose answers its owner sets at run time: the drill's and the tests'.

    with LoopbackDNS() as dns:                      # UDP and TCP on one ephemeral port of 127.0.0.1
        dns.set("primary.test", ["127.0.0.2"])      # A and AAAA records, by address family
        ...  dns.count("primary.test", "A")         # queries received for the name (of a type)
        dns.hold(); ...; dns.release()              # park answers until the owner lets them go

Built on dnspython (a gateway dependency), not dnslib: the drill ships with the product, so it cannot
lean on test-only libraries. It serves on its own event loop in a thread (`harness.LoopThread`), so a
test without a loop, an async test and the drill all use it the same way; every method is thread-safe.

What it answers: a name `set` to addresses gets those of the asked family (none of it: NOERROR, no
records); a name not set, or set to `[]`, is NXDOMAIN. Answers carry a TTL of 3600 s on purpose: the
gateway must ask again on every request anyway. An answer is fixed when its query arrives, also while
held. A UDP answer larger than the query allows (512 bytes without EDNS) is sent truncated (TC), and the
client asks again over TCP, as real resolvers do.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import typing
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Self

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from gateway_tools.harness import LoopThread

__all__ = ["TTL", "LoopbackDNS"]

TTL = 3600
_UDP_MINIMUM = 512  # what a client without EDNS can take (RFC 1035 section 4.2.1)
_ADDRESS_TYPES = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}

Respond = Callable[[bytes], object]


class LoopbackDNS:
    """Authoritative-looking answers for the names it is told, on `host` (UDP and TCP on one port)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        self._records: dict[str, list[str]] = {}
        self._queries: Counter[tuple[str, str]] = Counter()
        self._held = False
        self._parked: list[tuple[Respond, bytes]] = []
        self._runner: LoopThread | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def nameserver(self) -> str:
        return self.host

    # --- what it answers ---------------------------------------------------------------------------

    def set(self, name: str, addresses: Iterable[str]) -> None:
        """Answer `name` with these addresses from the next query on (an empty list means NXDOMAIN)."""
        with self._lock:
            self._records[_key(name)] = list(addresses)

    def remove(self, name: str) -> None:
        with self._lock:
            self._records.pop(_key(name), None)

    def count(self, name: str, qtype: str | None = None) -> int:
        """Queries received for `name` (of `qtype`, e.g. "AAAA", when given), held ones included."""
        with self._lock:
            return sum(n for (q_name, q_type), n in self._queries.items()
                       if q_name == _key(name) and qtype in (None, q_type))

    @property
    def queries(self) -> int:
        """Queries received, for any name."""
        with self._lock:
            return sum(self._queries.values())

    @property
    def parked(self) -> int:
        """Queries received but held back by `hold()`."""
        with self._lock:
            return len(self._parked)

    def hold(self) -> None:
        """Park every answer from now on (it is already decided) until `release()`."""
        with self._lock:
            self._held = True

    def release(self) -> None:
        """Send the parked answers and stop holding."""
        with self._lock:
            self._held = False
            parked, self._parked = self._parked, []
        if parked and self._runner is not None:
            self._runner.call_soon(lambda: [respond(wire) for respond, wire in parked])

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Self:
        """Serve on a thread of its own; returns once UDP and TCP both listen."""
        self._runner = LoopThread(self._serve, name=f"dns-{self.host}")
        self._runner.start()
        return self

    def stop(self) -> None:
        """Answer what is parked, then stop serving."""
        self.release()
        if self._runner is not None:
            stopping = self._stopping
            if stopping is not None:
                self._runner.call_soon(stopping.set)
            self._runner.join()
            self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- on the server's loop ------------------------------------------------------------------------

    async def _serve(self, ready: Callable[[], None]) -> None:
        self._stopping = asyncio.Event()
        udp, tcp = await self._bind_pair()
        ready()
        try:
            await self._stopping.wait()
        finally:
            udp.close()
            tcp.close()
            await tcp.wait_closed()

    async def _bind_pair(self) -> tuple[asyncio.DatagramTransport, asyncio.Server]:
        """UDP on an ephemeral port, then TCP on the same number (tried again if another process holds it)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(20):
            transport, _protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self._take), local_addr=(self.host, 0), family=family)
            port = int(transport.get_extra_info("sockname")[1])
            try:
                tcp = await asyncio.start_server(self._tcp_client, self.host, port, family=family)
            except OSError:
                transport.close()
                continue
            self.port = port
            return transport, tcp
        raise RuntimeError(f"no free port on {self.host} for both UDP and TCP")

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def respond(wire: bytes) -> None:
            if not writer.is_closing():
                writer.write(len(wire).to_bytes(2, "big") + wire)

        try:
            while True:  # a client may send several length-prefixed queries on one connection
                size = int.from_bytes(await reader.readexactly(2), "big")
                self._take(await reader.readexactly(size), respond, udp=False)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _take(self, data: bytes, respond: Respond, *, udp: bool) -> None:
        """Answer one query (over UDP within the size the query allows), or park the answer while held."""
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return  # not DNS: a real server drops it too
        with self._lock:
            response = self._answer(query)
            wire = _to_wire(response, max(query.payload, _UDP_MINIMUM) if udp else None)
            if self._held:
                self._parked.append((respond, wire))
                return
        respond(wire)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        for question in query.question:
            name = _key(question.name.to_text())
            self._queries[(name, dns.rdatatype.to_text(question.rdtype))] += 1
            addresses = self._records.get(name)
            if not addresses:
                response.set_rcode(dns.rcode.NXDOMAIN)
                continue
            family = _ADDRESS_TYPES.get(question.rdtype)
            matching = [a for a in addresses if ipaddress.ip_address(a).version == family]
            if matching:  # other types of a known name: NOERROR with no answer (the name exists, the type does not)
                response.answer.append(dns.rrset.from_text_list(
                    question.name, TTL, dns.rdataclass.IN, question.rdtype, matching))
        return response


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, take: Callable[..., None]) -> None:
        self._take = take
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        transport = self._transport
        if transport is not None:
            self._take(data, lambda wire: None if transport.is_closing() else transport.sendto(wire, addr), udp=True)


def _to_wire(response: dns.message.Message, limit: int | None) -> bytes:
    # want_shuffle=False: addresses go out in the order they were set (dnspython shuffles by default),
    # so a test can play a round-robin rotation.
    try:
        return response.to_wire(max_size=limit or 65535, want_shuffle=False)
    except dns.exception.TooBig:
        response.answer.clear()  # the client sees TC and asks again over TCP
        response.flags |= dns.flags.TC
        return response.to_wire(want_shuffle=False)


def _key(name: str) -> str:
    return name.lower().rstrip(".")
