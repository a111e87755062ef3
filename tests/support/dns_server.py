"""A real DNS server on loopback (dnslib, UDP and TCP on one ephemeral port) that tests steer at run time.

    with DNSTestServer() as dns:
        dns.set("primary.test", ["127.0.0.2"])       # A and AAAA records, by address family
        ...  dns.count("primary.test")                # queries received for the name, any type
        dns.hold(); ...; dns.release()                # park answers until the test lets them go

Answers carry a TTL of 3600 s on purpose: the gateway must ask again on every request anyway.
Unknown names answer NXDOMAIN. Waiting is on conditions, never on sleeps.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import DNSServer

TTL = 3600


class _QuietLogger:
    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


class _Zone:
    """The resolver dnslib calls from its server threads; every field is guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[str, list[str]] = {}
        self.queries: Counter[tuple[str, str]] = Counter()
        self.gate = threading.Event()
        self.gate.set()
        self.parked = 0

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            self.queries[(name, qtype)] += 1
            addresses = list(self.records.get(name, ()))  # the answer is fixed when the query arrives
            self.parked += 1
        try:
            self.gate.wait(timeout=30)
        finally:
            with self.lock:
                self.parked -= 1
        return _reply(request, name, qtype, addresses)


def _reply(request: DNSRecord, name: str, qtype: str, addresses: list[str]) -> DNSRecord:
    reply = request.reply()
    if not addresses:
        reply.header.rcode = RCODE.NXDOMAIN
        return reply
    for address in addresses:
        version = ipaddress.ip_address(address).version
        if qtype == "A" and version == 4:
            reply.add_answer(RR(name, QTYPE.A, rdata=A(address), ttl=TTL))
        elif qtype == "AAAA" and version == 6:
            reply.add_answer(RR(name, QTYPE.AAAA, rdata=AAAA(address), ttl=TTL))
    return reply


class DNSTestServer:
    """Authoritative-looking answers for test names on 127.0.0.1, UDP and TCP on the same port."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._zone = _Zone()
        self._udp, self._tcp = _bind_pair(self._zone, host)
        self.port: int = self._udp.server.server_address[1]
        self._threads: list[threading.Thread] = []

    @property
    def nameserver(self) -> str:
        return self.host

    def set(self, name: str, addresses: Iterable[str]) -> None:
        """Answer `name` with these addresses from now on (an empty list means NXDOMAIN)."""
        with self._zone.lock:
            self._zone.records[name.lower()] = list(addresses)

    def remove(self, name: str) -> None:
        with self._zone.lock:
            self._zone.records.pop(name.lower(), None)

    def count(self, name: str, qtype: str | None = None) -> int:
        """Queries received for `name` (of `qtype` when given), parked ones included."""
        with self._zone.lock:
            return sum(n for (q_name, q_type), n in self._zone.queries.items()
                       if q_name == name.lower() and qtype in (None, q_type))

    @property
    def parked(self) -> int:
        """Queries received but held back by `hold()`."""
        with self._zone.lock:
            return self._zone.parked

    def hold(self) -> None:
        """Park every query from now on (its answer is already decided) until `release()`."""
        self._zone.gate.clear()

    def release(self) -> None:
        self._zone.gate.set()

    def start(self) -> DNSTestServer:
        for server in (self._udp, self._tcp):
            # A short poll interval only makes shutdown() return quickly; queries are served at once.
            thread = threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.02},
                                      name=f"dns-{self.port}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self.release()
        for server in (self._udp, self._tcp):
            server.server.shutdown()
            server.server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)

    def __enter__(self) -> DNSTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _bind_pair(zone: _Zone, host: str) -> tuple[DNSServer, DNSServer]:
    """UDP on an ephemeral port, then TCP on the same number (retried if another process holds it)."""
    for _ in range(20):
        udp = DNSServer(zone, address=host, port=0, logger=_QuietLogger())
        port = udp.server.server_address[1]
        try:
            tcp = DNSServer(zone, address=host, port=port, tcp=True, logger=_QuietLogger())
        except OSError:
            udp.server.server_close()
            continue
        return udp, tcp
    raise RuntimeError("no free port for both UDP and TCP on loopback")


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A port with nothing listening, for the 'DNS server down' case (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port
