"""The upstream seam on real sockets: a loopback DNS server, uvicorn TLS servers, trustme certificates.

Each test closes its upstream (and so its pooled connections) before its servers stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from gateway.errors import DNSFailure, TLSRefused, UpstreamAmbiguous, UpstreamError, UpstreamUnreachable
from gateway.upstreams.httpx_transport import http_transport, translate_error
from gateway.upstreams.resolver import DNSResolver
from gateway.upstreams.upstream import Upstream
from gateway_tools.loopback_dns import LoopbackDNS
from policies.outcome import Failure
from tests.support.servers import ServerThread, async_wait_until, bind_socket, free_port
from tests.support.tls import (
    BlockingTLSServer,
    legacy_server_context,
    server_context,
    write_client_identity,
)

MakeUpstream = Callable[..., Upstream]


class EchoApp:
    """Answers every request with who it is and what Host it saw; counts the connections it served."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.connections: set[tuple[str, int]] = set()
        self.requests = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        self.connections.add(tuple(scope["client"]))
        self.requests += 1
        headers = dict(scope["headers"])
        body = json.dumps({"server": self.label, "host": headers[b"host"].decode()}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def serve(app: EchoApp, host: str, context: ssl.SSLContext | None, port: int = 0) -> Iterator[ServerThread]:
    with ServerThread(app, host=host, port=port, ssl_context=context, lifespan="off") as server:
        yield server


@contextlib.contextmanager
def serve_pair(ca: trustme.CA, *names: str) -> Iterator[tuple[EchoApp, EchoApp, int]]:
    """Two TLS servers for `names`, on 127.0.0.2 and 127.0.0.3 with the same port (URLs carry one port)."""
    first, second = EchoApp("first"), EchoApp("second")
    for _ in range(20):
        with serve(first, "127.0.0.2", server_context(ca, *names)) as a:
            try:
                b = ServerThread(second, host="127.0.0.3", port=a.port,
                                 ssl_context=server_context(ca, *names), lifespan="off")
            except OSError:
                continue  # that port is taken on 127.0.0.3; try another
            with b:
                yield first, second, a.port
            return
    raise RuntimeError("no port free on both 127.0.0.2 and 127.0.0.3")


def answer_of(response: httpx.Response) -> dict[str, str]:
    result: dict[str, str] = json.loads(response.content)
    return result


# --- per-request DNS -------------------------------------------------------------------------------


async def test_dns_change_between_requests_moves_the_next_request_despite_a_long_ttl(
        dns_server: LoopbackDNS, test_ca: trustme.CA, make_upstream: MakeUpstream) -> None:
    with serve_pair(test_ca, "primary.test") as (_, _, port):
        async with make_upstream() as upstream:
            url = f"https://primary.test:{port}/rest/api/v1.3/auth/token"
            dns_server.set("primary.test", ["127.0.0.2"])  # answered with TTL 3600
            before = await upstream.send(httpx.Request("GET", url))
            dns_server.set("primary.test", ["127.0.0.3"])
            after = await upstream.send(httpx.Request("GET", url))

    assert answer_of(before) == {"server": "first", "host": f"primary.test:{port}"}
    assert answer_of(after) == {"server": "second", "host": f"primary.test:{port}"}
    assert (before.extensions["peer_address"], after.extensions["peer_address"]) == ("127.0.0.2", "127.0.0.3")
    assert dns_server.count("primary.test", "A") == 2  # one query per request, the TTL ignored
    assert dns_server.count("primary.test", "AAAA") == 0  # AAAA only when a name has no A record
    assert after.request.url.host == "primary.test"  # the caller's request keeps the name


async def test_certificate_is_checked_against_the_name_not_the_address(
        dns_server: LoopbackDNS, test_ca: trustme.CA, make_upstream: MakeUpstream) -> None:
    app = EchoApp("named-only")
    with serve(app, "127.0.0.2", server_context(test_ca, "primary.test", cover_loopback=False)) as server:
        dns_server.set("primary.test", ["127.0.0.2"])
        async with make_upstream() as upstream:
            response = await upstream.send(httpx.Request("GET", f"https://primary.test:{server.port}/"))
    assert answer_of(response)["server"] == "named-only"


async def test_first_address_refusing_falls_through_to_the_second(
        dns_server: LoopbackDNS, test_ca: trustme.CA, make_upstream: MakeUpstream) -> None:
    app = EchoApp("second")
    with serve(app, "127.0.0.3", server_context(test_ca, "primary.test")) as server, \
            socket.socket() as closed_port:
        closed_port.bind(("127.0.0.2", server.port))  # bound, never listening: connects are refused
        dns_server.set("primary.test", ["127.0.0.2", "127.0.0.3"])
        async with make_upstream() as upstream:
            response = await upstream.send(httpx.Request("POST", f"https://primary.test:{server.port}/",
                                                         content=b'{"recipient": 1}'))
    assert response.extensions["peer_address"] == "127.0.0.3"
    assert app.requests == 1


async def test_pooled_connection_is_reused_only_while_its_address_is_answered(
        dns_server: LoopbackDNS, test_ca: trustme.CA, make_upstream: MakeUpstream) -> None:
    with serve_pair(test_ca, "primary.test") as (first, second, port):
        async with make_upstream() as upstream:
            url = f"https://primary.test:{port}/"
            dns_server.set("primary.test", ["127.0.0.2"])
            await upstream.send(httpx.Request("GET", url))
            await upstream.send(httpx.Request("GET", url))
            assert (len(first.connections), first.requests) == (1, 2)  # reused while answered

            dns_server.set("primary.test", ["127.0.0.3"])
            moved = await upstream.send(httpx.Request("GET", url))
            assert moved.extensions["peer_address"] == "127.0.0.3"
            assert (len(first.connections), first.requests) == (1, 2)  # its pooled connection is left alone
            assert (len(second.connections), second.requests) == (1, 1)


async def test_last_peer_is_kept_while_answered_even_if_the_order_changes(
        dns_server: LoopbackDNS, test_ca: trustme.CA, make_upstream: MakeUpstream) -> None:
    with serve_pair(test_ca, "primary.test") as (first, second, port):
        async with make_upstream() as upstream:
            url = f"https://primary.test:{port}/"
            dns_server.set("primary.test", ["127.0.0.2", "127.0.0.3"])
            await upstream.send(httpx.Request("GET", url))
            dns_server.set("primary.test", ["127.0.0.3", "127.0.0.2"])  # round-robin rotation
            response = await upstream.send(httpx.Request("GET", url))
    assert response.extensions["peer_address"] == "127.0.0.2"
    assert (len(first.connections), first.requests, second.requests) == (1, 2, 0)


async def test_ip_literal_hosts_skip_dns(dns_server: LoopbackDNS, test_ca: trustme.CA,
                                         make_upstream: MakeUpstream) -> None:
    with serve(EchoApp("literal"), "127.0.0.2", server_context(test_ca, "primary.test")) as server:
        async with make_upstream() as upstream:
            response = await upstream.send(httpx.Request("GET", f"https://127.0.0.2:{server.port}/"))
    assert response.extensions["peer_address"] == "127.0.0.2"
    assert dns_server.count("127.0.0.2") == 0


async def test_localhost_is_asked_of_dns_not_read_from_etc_hosts(dns_server: LoopbackDNS,
                                                                  make_upstream: MakeUpstream) -> None:
    with pytest.raises(DNSFailure, match="NXDOMAIN"):
        await make_upstream().send(httpx.Request("GET", "http://localhost:9/"))
    assert dns_server.count("localhost") == 1


# --- the shared in-flight query, through real DNS ----------------------------------------------------


async def test_concurrent_resolutions_share_a_query_that_started_after_they_arrived(
        dns_server: LoopbackDNS) -> None:
    resolver = DNSResolver(nameservers=[dns_server.nameserver], port=dns_server.port)
    try:
        await _resolve_in_two_waves(dns_server, resolver)
    finally:
        await resolver.close()


async def _resolve_in_two_waves(dns_server: LoopbackDNS, resolver: DNSResolver) -> None:
    dns_server.set("primary.test", ["127.0.0.2"])
    dns_server.hold()
    early = [asyncio.create_task(resolver.resolve("primary.test")) for _ in range(100)]
    await async_wait_until(lambda: dns_server.parked == 1, message="the first query to reach the server")

    dns_server.set("primary.test", ["127.0.0.3"])  # changed while the first query is in flight
    late = [asyncio.create_task(resolver.resolve("primary.test")) for _ in range(100)]
    await asyncio.wait(late, timeout=0)  # one loop pass: every late lookup has joined by now
    dns_server.release()

    assert await asyncio.gather(*early) == [["127.0.0.2"]] * 100
    assert await asyncio.gather(*late) == [["127.0.0.3"]] * 100  # never the answer older than them
    assert dns_server.count("primary.test") == 2


async def test_concurrent_requests_cost_far_fewer_queries_than_requests(
        dns_server: LoopbackDNS, test_ca: trustme.CA, make_upstream: MakeUpstream) -> None:
    with serve(EchoApp("busy"), "127.0.0.2", server_context(test_ca, "primary.test")) as server:
        dns_server.set("primary.test", ["127.0.0.2"])
        url = f"https://primary.test:{server.port}/"
        async with make_upstream() as upstream:
            responses = await asyncio.gather(*(upstream.send(httpx.Request("GET", url)) for _ in range(50)))
    assert all(r.status_code == 200 for r in responses)
    assert dns_server.count("primary.test") <= 2


# --- TLS ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("maximum", "expected"), [(None, "TLSv1.3"), (ssl.TLSVersion.TLSv1_2, "TLSv1.2")],
                         ids=["tls1.3", "tls1.2"])
async def test_tls_1_2_and_up_is_accepted_and_reported(
        dns_server: LoopbackDNS, test_ca: trustme.CA, make_upstream: MakeUpstream,
        maximum: ssl.TLSVersion | None, expected: str) -> None:
    context = server_context(test_ca, "primary.test", maximum=maximum)
    with serve(EchoApp("modern"), "127.0.0.2", context) as server:
        dns_server.set("primary.test", ["127.0.0.2"])
        # httpx's own transport exposes the TLS object of every answer; aiohttp's (the default) only
        # while its connection is still held, which small answers are not: it reports best-effort.
        async with make_upstream(transport_factory=http_transport) as upstream:
            response = await upstream.send(httpx.Request("GET", f"https://primary.test:{server.port}/"))
        async with make_upstream() as default:
            fast = await default.send(httpx.Request("GET", f"https://primary.test:{server.port}/"))
    assert response.extensions["tls_version"] == expected
    assert fast.status_code == 200 and fast.extensions["tls_version"] in (expected, None)


async def test_tls_1_1_only_upstream_is_refused_below_the_floor(
        dns_server: LoopbackDNS, test_ca: trustme.CA, make_upstream: MakeUpstream) -> None:
    with BlockingTLSServer(legacy_server_context(test_ca, "primary.test"), host="127.0.0.2") as server:
        dns_server.set("primary.test", ["127.0.0.2"])
        with pytest.raises(TLSRefused, match=r"offered a protocol below TLS 1\.2") as refused:
            await make_upstream().send(httpx.Request("GET", f"https://primary.test:{server.port}/"))
    assert refused.value.failure is Failure.TLS
    assert refused.value.address == "127.0.0.2"
    assert server.failures == ["UNSUPPORTED_PROTOCOL"]


async def test_tls_1_1_only_upstream_that_drops_its_alert_is_still_refused(
        dns_server: LoopbackDNS, test_ca: trustme.CA, make_upstream: MakeUpstream) -> None:
    with serve(EchoApp("legacy"), "127.0.0.2", legacy_server_context(test_ca, "primary.test")) as server:
        dns_server.set("primary.test", ["127.0.0.2"])
        with pytest.raises(TLSRefused, match="closed the connection during the handshake"):
            await make_upstream().send(httpx.Request("GET", f"https://primary.test:{server.port}/"))


async def test_certificate_for_another_name_is_refused(
        dns_server: LoopbackDNS, test_ca: trustme.CA, make_upstream: MakeUpstream) -> None:
    with serve(EchoApp("other"), "127.0.0.2", server_context(test_ca, "failover.test")) as server:
        dns_server.set("primary.test", ["127.0.0.2"])
        with pytest.raises(TLSRefused, match=r"certificate failed verification.*'primary\.test'"):
            await make_upstream().send(httpx.Request("GET", f"https://primary.test:{server.port}/"))


async def test_certificate_from_an_untrusted_ca_is_refused(
        dns_server: LoopbackDNS, test_ca: trustme.CA, make_upstream: MakeUpstream) -> None:
    with serve(EchoApp("rogue"), "127.0.0.2", server_context(trustme.CA(), "primary.test")) as server:
        dns_server.set("primary.test", ["127.0.0.2"])
        with pytest.raises(TLSRefused, match="certificate failed verification"):
            await make_upstream().send(httpx.Request("GET", f"https://primary.test:{server.port}/"))


async def test_upstream_requiring_a_client_certificate_refuses_us_without_one(
        dns_server: LoopbackDNS, test_ca: trustme.CA, make_upstream: MakeUpstream, tmp_path: Path) -> None:
    context = server_context(test_ca, "primary.test", require_client_cert=True)
    with BlockingTLSServer(context, host="127.0.0.2") as server:
        dns_server.set("primary.test", ["127.0.0.2"])
        url = f"https://primary.test:{server.port}/"
        # TLS 1.3: our handshake is done before the server checks our certificate, so its refusal is
        # an alert on the first read, after the request left. It never reached HTTP: TLSRefused.
        with pytest.raises(TLSRefused, match="CERTIFICATE_REQUIRED"):
            await make_upstream().send(httpx.Request("POST", url, content=b"{}"))
        cert, key = write_client_identity(test_ca, tmp_path)
        async with make_upstream(client_cert=cert, client_key=key, transport_factory=http_transport) as upstream:
            response = await upstream.send(httpx.Request("GET", url))
    assert (response.status_code, response.content) == (200, b"ok")
    assert response.extensions["tls_version"] == "TLSv1.3"


# --- typed errors --------------------------------------------------------------------------------------


async def test_connection_refused_is_unreachable_with_the_address(
        dns_server: LoopbackDNS, make_upstream: MakeUpstream) -> None:
    with socket.socket() as closed_port:
        closed_port.bind(("127.0.0.2", 0))
        port = closed_port.getsockname()[1]
        dns_server.set("primary.test", ["127.0.0.2"])
        with pytest.raises(UpstreamUnreachable) as refused:
            await make_upstream().send(httpx.Request("GET", f"https://primary.test:{port}/"))
    assert type(refused.value) is UpstreamUnreachable
    assert refused.value.failure is Failure.CONNECT
    assert refused.value.address == "127.0.0.2"
    assert not refused.value.failure.ambiguous


async def test_upstream_that_accepts_and_never_answers_is_ambiguous_after_the_read_timeout(
        dns_server: LoopbackDNS, make_upstream: MakeUpstream) -> None:
    with bind_socket("127.0.0.2") as silent:  # listening: the kernel accepts, nobody ever answers
        dns_server.set("primary.test", ["127.0.0.2"])
        url = f"http://primary.test:{silent.getsockname()[1]}/"
        with pytest.raises(UpstreamAmbiguous, match="no answer") as lost:
            await make_upstream(read_timeout=5.0).send(httpx.Request("POST", url, content=b"{}"),
                                                       read_timeout=0.2)
    assert lost.value.failure is Failure.READ_TIMEOUT
    assert lost.value.failure.ambiguous
    assert lost.value.address == "127.0.0.2"


async def test_tls_handshake_that_never_completes_is_a_connect_timeout(
        dns_server: LoopbackDNS, make_upstream: MakeUpstream) -> None:
    with bind_socket("127.0.0.2") as silent:
        dns_server.set("primary.test", ["127.0.0.2"])
        url = f"https://primary.test:{silent.getsockname()[1]}/"
        with pytest.raises(UpstreamUnreachable) as stuck:
            await make_upstream(connect_timeout=0.2).send(httpx.Request("GET", url))
    assert stuck.value.failure is Failure.CONNECT_TIMEOUT


async def test_unknown_name_is_a_dns_failure(dns_server: LoopbackDNS, make_upstream: MakeUpstream) -> None:
    with pytest.raises(DNSFailure, match="NXDOMAIN") as failed:
        await make_upstream().send(httpx.Request("GET", "https://nowhere.test/"))
    assert failed.value.failure is Failure.DNS


async def test_dns_server_that_never_answers_is_a_dns_failure(
        dns_server: LoopbackDNS, make_upstream: MakeUpstream) -> None:
    dns_server.set("primary.test", ["127.0.0.2"])
    dns_server.hold()
    with pytest.raises(DNSFailure, match="no DNS answer"):
        await make_upstream(dns_timeout=0.3).send(httpx.Request("GET", "https://primary.test/"))


async def test_dns_server_down_is_a_dns_failure(make_upstream: MakeUpstream) -> None:
    upstream = make_upstream(dns_timeout=0.3, nameserver_port=free_port(kind=socket.SOCK_DGRAM))
    with pytest.raises(DNSFailure):
        await upstream.send(httpx.Request("GET", "https://primary.test/"))


async def test_ipv6_only_name_resolves_through_the_aaaa_fallback(dns_server: LoopbackDNS) -> None:
    dns_server.set("v6only.test", ["::1"])
    dns_server.set("dual.test", ["127.0.0.2", "::1"])
    resolver = DNSResolver(nameservers=[dns_server.nameserver], port=dns_server.port)
    try:
        assert await resolver.resolve("v6only.test") == ["::1"]
        assert await resolver.resolve("DUAL.test.") == ["127.0.0.2"]  # A first; AAAA not asked
    finally:
        await resolver.close()
    assert (dns_server.count("v6only.test", "A"), dns_server.count("v6only.test", "AAAA")) == (1, 1)
    assert (dns_server.count("dual.test", "A"), dns_server.count("dual.test", "AAAA")) == (1, 0)


async def test_an_answer_too_large_for_udp_is_fetched_again_over_tcp(dns_server: LoopbackDNS) -> None:
    many = [f"127.0.1.{n}" for n in range(1, 41)]  # 40 A records: about 650 bytes, over UDP's 512
    dns_server.set("many.test", many)
    resolver = DNSResolver(nameservers=[dns_server.nameserver], port=dns_server.port)
    try:
        assert sorted(await resolver.resolve("many.test")) == sorted(many)
    finally:
        await resolver.close()
    assert dns_server.count("many.test", "A") == 2  # truncated over UDP, then whole over TCP


async def test_request_cancelled_while_resolving_leaves_the_query_to_the_others(
        dns_server: LoopbackDNS) -> None:
    dns_server.set("primary.test", ["127.0.0.2"])
    resolver = DNSResolver(nameservers=[dns_server.nameserver], port=dns_server.port)
    try:
        dns_server.hold()
        cancelled, kept = (asyncio.create_task(resolver.resolve("primary.test")) for _ in range(2))
        await async_wait_until(lambda: dns_server.parked == 1, message="the query to reach the server")
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        dns_server.release()
        assert await kept == ["127.0.0.2"]
    finally:
        await resolver.close()
    assert dns_server.count("primary.test") == 1


# --- the error table, without sockets ------------------------------------------------------------------


@pytest.mark.parametrize(("error", "expected", "failure"), [
    (httpx.ConnectError("refused"), UpstreamUnreachable, Failure.CONNECT),
    (httpx.ConnectTimeout("slow"), UpstreamUnreachable, Failure.CONNECT_TIMEOUT),
    (httpx.PoolTimeout("full"), UpstreamUnreachable, Failure.CONNECT_TIMEOUT),
    (httpx.ReadTimeout("silent"), UpstreamAmbiguous, Failure.READ_TIMEOUT),
    (httpx.WriteTimeout("stuck"), UpstreamAmbiguous, Failure.READ_TIMEOUT),
    (httpx.ReadError("reset"), UpstreamAmbiguous, Failure.READ_TIMEOUT),
    (httpx.WriteError("reset"), UpstreamAmbiguous, Failure.READ_TIMEOUT),
    (httpx.RemoteProtocolError("Server disconnected without sending a response."), UpstreamAmbiguous,
     Failure.READ_TIMEOUT),
    (httpx.DecodingError("bad gzip"), UpstreamAmbiguous, Failure.READ_TIMEOUT),
    (ConnectionResetError("reset"), UpstreamAmbiguous, Failure.READ_TIMEOUT),  # unknown: never resend
    (httpx.LocalProtocolError("bad header"), UpstreamError, Failure.CONNECT),
], ids=lambda value: type(value).__name__ if isinstance(value, Exception) else "")
def test_library_errors_translate_to_the_most_specific_gateway_error(
        error: Exception, expected: type[UpstreamError], failure: Failure) -> None:
    translated = translate_error(error, host="primary.test", address="127.0.0.2")
    assert type(translated) is expected
    assert (translated.failure, translated.address) == (failure, "127.0.0.2")
    assert "primary.test (127.0.0.2)" in str(translated)


def test_a_connect_error_caused_by_ssl_is_a_tls_refusal() -> None:
    error = httpx.ConnectError("handshake")
    error.__cause__ = ssl.SSLError(1, "[SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version")
    assert isinstance(translate_error(error, host="primary.test", address="127.0.0.2"), TLSRefused)


def test_an_ssl_error_after_the_handshake_that_is_not_about_certificates_stays_ambiguous() -> None:
    error = httpx.ReadError("")
    error.__cause__ = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    assert isinstance(translate_error(error, host="primary.test", address="127.0.0.2"), UpstreamAmbiguous)
