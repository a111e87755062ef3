"""The resolver's query path on real UDP sockets, against a DNS server whose every datagram the test writes.

`LoopbackDNS` (tests/integration/test_upstream.py) answers like a well-behaved server; `ScriptedDNS` here
answers however a test says: with another id, another question, from another port, malformed, SERVFAIL,
or not at all. It runs on the test's own event loop.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from gateway.errors import DNSFailure
from gateway.upstreams import nameserver
from gateway.upstreams.resolver import DNSResolver
from gateway_tools.loopback_dns import LoopbackDNS
from tests.support.servers import async_wait_until, free_port


class Replies:
    """What a script may do with one query: answer it from the server's port or from another one."""

    def __init__(self, server: ScriptedDNS, client: tuple[str, int]) -> None:
        self._server, self._client = server, client

    def send(self, wire: bytes) -> None:
        self._server.transport.sendto(wire, self._client)

    def send_from_another_port(self, wire: bytes) -> None:
        self._server.other_port.sendto(wire, self._client)


Script = Callable[[dns.message.Message, Replies], None]


class ScriptedDNS(asyncio.DatagramProtocol):
    """A UDP DNS server on 127.0.0.x whose answers a script writes; it keeps every query and its source."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.queries: list[tuple[dns.message.Message, tuple[str, int]]] = []
        self.transport: Any = None
        self.other_port: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        self.queries.append((query, addr))
        self.script(query, Replies(self, addr))

    @property
    def port(self) -> int:
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> ScriptedDNS:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self.other_port, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                                 local_addr=(host, 0))
        return self

    def close(self) -> None:
        self.transport.close()
        self.other_port.close()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Any]]:
    """Start `ScriptedDNS` servers (`await scripted(script, host=..., port=...)`); all closed after the test."""
    servers: list[ScriptedDNS] = []

    async def start(script: Script, *, host: str = "127.0.0.1", port: int = 0) -> ScriptedDNS:
        server = await ScriptedDNS(script).start(host, port)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
async def resolvers() -> AsyncIterator[Callable[..., DNSResolver]]:
    made: list[DNSResolver] = []

    def make(*nameservers: str, port: int, timeout: float = 2.0) -> DNSResolver:
        resolver = DNSResolver(nameservers=list(nameservers), port=port, timeout=timeout)
        made.append(resolver)
        return resolver

    yield make
    for resolver in made:
        await resolver.close()


def answer(query: dns.message.Message, *addresses: str, rcode: dns.rcode.Rcode = dns.rcode.NOERROR) -> bytes:
    """The wire answer to `query` (its id and question) with these addresses of the asked type."""
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    if addresses:
        question = query.question[0]
        response.answer.append(dns.rrset.from_text_list(question.name, 60, question.rdclass, question.rdtype,
                                                        list(addresses)))
    return response.to_wire(want_shuffle=False)


def answer_to(name: str, query: dns.message.Message, *addresses: str, rdtype: str = "A",
              rdclass: str = "IN") -> bytes:
    """An answer to another question (`name`/`rdtype`/`rdclass`) carrying `query`'s id; its records are IN."""
    other = dns.message.make_query(name, rdtype, rdclass)
    other.id = query.id
    response = dns.message.make_response(other)
    response.answer.append(dns.rrset.from_text_list(other.question[0].name, 60, "IN", rdtype, list(addresses)))
    return response.to_wire()


# --- answers that do not match the query are ignored, and the right one is taken ---------------------


async def test_an_answer_with_another_id_is_ignored_and_the_right_one_taken(scripted: Any, resolvers: Any) -> None:
    def script(query: dns.message.Message, replies: Replies) -> None:
        wrong = dns.message.from_wire(answer(query, "10.6.6.6"))
        wrong.id = query.id ^ 0x5A5A
        replies.send(wrong.to_wire())
        replies.send(answer(query, "127.0.0.2"))

    server = await scripted(script)
    assert await resolvers("127.0.0.1", port=server.port).resolve("primary.test") == ["127.0.0.2"]


@pytest.mark.parametrize("wrong", ["name", "type", "class", "not-a-response"])
async def test_an_answer_to_another_question_is_ignored(scripted: Any, resolvers: Any, wrong: str) -> None:
    def script(query: dns.message.Message, replies: Replies) -> None:
        if wrong == "name":
            replies.send(answer_to("evil.test", query, "10.6.6.6"))
        elif wrong == "type":
            replies.send(answer_to("primary.test", query, "::6", rdtype="AAAA"))
        elif wrong == "class":
            replies.send(answer_to("primary.test", query, "10.6.6.6", rdclass="CH"))
        else:  # the query itself, echoed: same id and question, QR not set
            echoed = dns.message.from_wire(answer(query, "10.6.6.6"))
            echoed.flags &= ~dns.flags.QR
            replies.send(echoed.to_wire())
        replies.send(answer(query, "127.0.0.2"))

    server = await scripted(script)
    assert await resolvers("127.0.0.1", port=server.port).resolve("primary.test") == ["127.0.0.2"]


async def test_an_answer_from_another_port_is_ignored(scripted: Any, resolvers: Any) -> None:
    def script(query: dns.message.Message, replies: Replies) -> None:
        replies.send_from_another_port(answer(query, "10.6.6.6"))  # right id and question, wrong source
        replies.send(answer(query, "127.0.0.2"))

    server = await scripted(script)
    assert await resolvers("127.0.0.1", port=server.port).resolve("primary.test") == ["127.0.0.2"]


async def test_a_malformed_answer_with_the_right_id_and_question_is_ignored(scripted: Any, resolvers: Any) -> None:
    def script(query: dns.message.Message, replies: Replies) -> None:
        replies.send(answer(query, "10.6.6.6")[:-3])  # its A record cut short
        replies.send(answer(query, "127.0.0.2"))

    server = await scripted(script)
    assert await resolvers("127.0.0.1", port=server.port).resolve("primary.test") == ["127.0.0.2"]


async def test_the_question_is_matched_whatever_its_letter_case(scripted: Any, resolvers: Any) -> None:
    def script(query: dns.message.Message, replies: Replies) -> None:
        replies.send(answer_to("PRIMARY.Test", query, "127.0.0.2"))  # names compare case-insensitively

    server = await scripted(script)
    assert await resolvers("127.0.0.1", port=server.port).resolve("primary.test") == ["127.0.0.2"]


# --- what the answer says --------------------------------------------------------------------------------


async def test_a_cname_chain_is_followed_to_the_addresses(scripted: Any, resolvers: Any) -> None:
    def script(query: dns.message.Message, replies: Replies) -> None:
        response = dns.message.make_response(query)
        response.answer.append(dns.rrset.from_text("primary.test.", 60, "IN", "CNAME", "pod7.lb.test."))
        response.answer.append(dns.rrset.from_text("pod7.lb.test.", 60, "IN", "A", "127.0.0.7"))
        replies.send(response.to_wire())

    server = await scripted(script)
    assert await resolvers("127.0.0.1", port=server.port).resolve("primary.test") == ["127.0.0.7"]


async def test_the_answer_order_is_kept_and_repeated_records_are_dropped(scripted: Any, resolvers: Any) -> None:
    def script(query: dns.message.Message, replies: Replies) -> None:
        wire = bytearray(answer(query, "127.0.0.3", "127.0.0.2"))
        wire += wire[-16:]  # the 127.0.0.2 record again, as a sloppy server may send it
        wire[7] += 1  # ANCOUNT
        replies.send(bytes(wire))

    server = await scripted(script)
    assert await resolvers("127.0.0.1", port=server.port).resolve("primary.test") == ["127.0.0.3", "127.0.0.2"]


async def test_servfail_is_a_dns_failure_naming_the_server(scripted: Any, resolvers: Any) -> None:
    server = await scripted(lambda query, replies: replies.send(answer(query, rcode=dns.rcode.SERVFAIL)))
    with pytest.raises(DNSFailure, match=rf"no DNS server could answer for primary\.test: 127\.0\.0\.1:{server.port} "
                                         "answered SERVFAIL"):
        await resolvers("127.0.0.1", port=server.port).resolve("primary.test")
    assert len(server.queries) == 1  # SERVFAIL is not asked again of the same server


async def test_a_nameserver_answering_servfail_is_left_for_the_next(scripted: Any, resolvers: Any) -> None:
    failing, working = await _two_on_one_port(
        scripted, lambda query, replies: replies.send(answer(query, rcode=dns.rcode.SERVFAIL)),
        lambda query, replies: replies.send(answer(query, "127.0.0.9")))
    resolver = resolvers("127.0.0.1", "127.0.0.2", port=failing.port)
    assert await resolver.resolve("primary.test") == ["127.0.0.9"]
    assert (len(failing.queries), len(working.queries)) == (1, 1)


async def test_nxdomain_ends_the_lookup_without_asking_the_next_nameserver(scripted: Any, resolvers: Any) -> None:
    first, second = await _two_on_one_port(
        scripted, lambda query, replies: replies.send(answer(query, rcode=dns.rcode.NXDOMAIN)),
        lambda query, replies: replies.send(answer(query, "127.0.0.9")))
    with pytest.raises(DNSFailure, match=r"primary\.test does not exist \(NXDOMAIN\)"):
        await resolvers("127.0.0.1", "127.0.0.2", port=first.port).resolve("primary.test")
    assert (len(first.queries), len(second.queries)) == (1, 0)  # the name does not exist: no one else is asked


async def test_a_nameserver_that_stays_silent_is_followed_by_the_next_within_the_timeout(
        scripted: Any, resolvers: Any) -> None:
    silent, working = await _two_on_one_port(
        scripted, lambda query, replies: None, lambda query, replies: replies.send(answer(query, "127.0.0.9")))
    resolver = resolvers("127.0.0.1", "127.0.0.2", port=silent.port, timeout=1.0)
    assert await resolver.resolve("primary.test") == ["127.0.0.9"]
    assert (len(silent.queries), len(working.queries)) == (1, 1)


async def test_a_lost_datagram_is_asked_again_within_the_timeout(scripted: Any, resolvers: Any) -> None:
    def script(query: dns.message.Message, replies: Replies) -> None:
        if len(server.queries) > 1:  # the first query is "lost"
            replies.send(answer(query, "127.0.0.2"))

    server = await scripted(script)
    assert await resolvers("127.0.0.1", port=server.port, timeout=0.6).resolve("primary.test") == ["127.0.0.2"]
    assert len(server.queries) == 2


async def test_a_server_that_never_answers_is_a_dns_failure_after_the_timeout(scripted: Any, resolvers: Any) -> None:
    server = await scripted(lambda query, replies: None)
    with pytest.raises(DNSFailure, match=r"no DNS answer for primary\.test within 0\.3s"):
        await resolvers("127.0.0.1", port=server.port, timeout=0.3).resolve("primary.test")
    assert len(server.queries) == 2  # the datagram asked again once within the timeout


# --- one socket, many queries ------------------------------------------------------------------------------


async def test_queries_share_one_socket_and_each_has_a_fresh_id(scripted: Any, resolvers: Any) -> None:
    server = await scripted(lambda query, replies: replies.send(answer(query, "127.0.0.2")))
    resolver = resolvers("127.0.0.1", port=server.port)
    for _ in range(20):
        assert await resolver.resolve("primary.test") == ["127.0.0.2"]
    assert len({source for _, source in server.queries}) == 1  # one long-lived socket
    assert len({query.id for query, _ in server.queries}) >= 15  # random ids (20 draws of 16 bits)


async def test_the_socket_rotates_so_a_spoofer_must_guess_the_source_port_too(scripted: Any, resolvers: Any) -> None:
    server = await scripted(lambda query, replies: replies.send(answer(query, "127.0.0.2")))
    resolver = resolvers("127.0.0.1", port=server.port)
    for _ in range(2 * nameserver.ROTATE_AFTER_QUERIES + 10):
        assert await resolver.resolve("primary.test") == ["127.0.0.2"]
    per_source = Counter(source for _, source in server.queries)
    assert len(per_source) == 3  # a fresh socket (a new random source port) every 64 queries
    assert max(per_source.values()) == nameserver.ROTATE_AFTER_QUERIES


async def test_an_old_socket_still_delivers_the_answer_in_flight_when_it_rotates(
        dns_server: LoopbackDNS, resolvers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nameserver, "ROTATE_AFTER_SECONDS", 0.0)  # every query on a socket of its own
    dns_server.set("one.test", ["127.0.3.1"])
    dns_server.set("two.test", ["127.0.3.2"])
    resolver = resolvers(dns_server.nameserver, port=dns_server.port)
    dns_server.hold()
    first = asyncio.create_task(resolver.resolve("one.test"))
    await async_wait_until(lambda: dns_server.parked == 1, message="the first query to reach the server")
    second = asyncio.create_task(resolver.resolve("two.test"))  # rotates while the first is in flight
    await async_wait_until(lambda: dns_server.parked == 2, message="the second query to reach the server")
    dns_server.release()
    assert (await first, await second) == (["127.0.3.1"], ["127.0.3.2"])


async def test_concurrent_lookups_of_many_names_each_get_their_own_answer(
        dns_server: LoopbackDNS, resolvers: Any) -> None:
    names = {f"pod{n}.test": f"127.0.2.{n}" for n in range(1, 41)}
    for name, address in names.items():
        dns_server.set(name, [address])
    resolver = resolvers(dns_server.nameserver, port=dns_server.port)
    dns_server.hold()  # all 40 queries in flight on the one socket at once
    lookups = {name: asyncio.create_task(resolver.resolve(name)) for name in names}
    await async_wait_until(lambda: dns_server.parked == len(names), message="every query to reach the server")
    dns_server.release()
    assert {name: await lookup for name, lookup in lookups.items()} == {
        name: [address] for name, address in names.items()}


async def test_a_refused_socket_is_replaced_and_the_next_lookup_succeeds(scripted: Any, resolvers: Any) -> None:
    port = free_port(kind=socket.SOCK_DGRAM)
    resolver = resolvers("127.0.0.1", port=port, timeout=1.0)
    with pytest.raises(DNSFailure, match=r"no DNS server could answer.*Connection refused"):
        await resolver.resolve("primary.test")  # nothing listens: ICMP port unreachable
    server = await scripted(lambda query, replies: replies.send(answer(query, "127.0.0.2")), port=port)
    assert await resolver.resolve("primary.test") == ["127.0.0.2"]
    assert len(server.queries) == 1


async def test_close_fails_the_lookup_in_flight_and_later_ones(scripted: Any, resolvers: Any) -> None:
    server = await scripted(lambda query, replies: None)
    resolver = resolvers("127.0.0.1", port=server.port)
    waiting = asyncio.create_task(resolver.resolve("primary.test"))
    await async_wait_until(lambda: len(server.queries) == 1, message="the query to reach the server")
    await resolver.close()
    with pytest.raises(DNSFailure, match="closed"):
        await waiting
    with pytest.raises(DNSFailure, match="closed"):
        await resolver.resolve("primary.test")


async def _two_on_one_port(scripted: Any, first: Script, second: Script) -> tuple[ScriptedDNS, ScriptedDNS]:
    """Servers on 127.0.0.1 and 127.0.0.2 with one port number: the resolver asks every nameserver on one port."""
    for _ in range(20):
        one: ScriptedDNS = await scripted(first)
        try:
            two: ScriptedDNS = await scripted(second, host="127.0.0.2", port=one.port)
        except OSError:
            one.close()  # that port is taken on 127.0.0.2: try another
            continue
        return one, two
    raise RuntimeError("no UDP port free on both 127.0.0.1 and 127.0.0.2")
