"""The aiohttp transport's error boundary, on real sockets: each failure leaves it as the gateway error it means.

Requests are pinned as `ResolvingTransport` pins them (URL with the address, `sni_hostname` with the
name). Every error must come out as a `gateway.errors.UpstreamError` chained straight to aiohttp's (or
the socket's) own: no httpx error in between, no ssl error made up for the occasion.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import httpx
import pytest
import trustme

from gateway.errors import TLSRefused, UpstreamAmbiguous, UpstreamError, UpstreamUnreachable
from gateway.upstreams.transport import AiohttpTransport
from gateway.upstreams.upstream import Upstream
from gateway_tools.loopback_dns import LoopbackDNS
from policies.outcome import Failure
from policies.tls import client_context
from tests.integration.test_upstream import EchoApp, serve
from tests.support.servers import async_wait_until, bind_socket
from tests.support.tls import (
    BlockingTLSServer,
    ca_bundle_file,
    legacy_server_context,
    server_context,
    write_client_identity,
)

HOST, ADDRESS = "primary.test", "127.0.0.2"


class ScriptedServer:
    """A loopback listener that reads each request's head, then does what `answer` says with the socket."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self._answer = answer
        self._listener = bind_socket(ADDRESS)
        self.port: int = self._listener.getsockname()[1]
        self.received: list[bytes] = []  # what each connection sent before the answer
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            conn, _ = self._listener.accept()
            if self._stopping.is_set():
                conn.close()
                return
            with conn:
                conn.settimeout(5)
                data = b""
                with contextlib.suppress(OSError):
                    while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                        data += chunk
                self.received.append(data)
                with contextlib.suppress(OSError):
                    self._answer(conn)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError), socket.create_connection((ADDRESS, self.port), timeout=5):
            pass  # wakes accept()
        self._thread.join(timeout=10)
        self._listener.close()


def close_at_once(conn: socket.socket) -> None:
    pass  # the `with` in _serve closes it: a FIN, no answer


def close_mid_body(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")


def reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close = RST


def not_http(conn: socket.socket) -> None:
    conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")


def bad_gzip(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!")


def never_answer(stop: threading.Event) -> Callable[[socket.socket], None]:
    def hold(conn: socket.socket) -> None:
        stop.wait(10)
    return hold


@pytest.fixture
async def transport(test_ca: trustme.CA) -> AsyncIterator[Callable[..., AiohttpTransport]]:
    built: list[AiohttpTransport] = []
    with ca_bundle_file(test_ca) as bundle:

        def build(*, max_connections: int = 10, client_cert: tuple[str, str] | None = None) -> AiohttpTransport:
            cert, key = client_cert or (None, None)
            context = client_context(ca_bundle=bundle, client_cert=cert, client_key=key)
            built.append(AiohttpTransport(ssl_context=context, max_connections=max_connections))
            return built[-1]

        yield build
    for made in built:
        await made.aclose()


def pinned(url: str, *, connect: float = 2.0, read: float = 2.0, **kwargs: object) -> httpx.Request:
    request = httpx.Request("POST", url, content=b'{"recipient": 1}', **kwargs)  # type: ignore[arg-type]
    request.extensions.update(sni_hostname=HOST,
                              timeout={"connect": connect, "pool": connect, "read": read, "write": read})
    return request


async def error_of(transport: AiohttpTransport, request: httpx.Request) -> UpstreamError:
    """The error raised while sending `request` or reading its answer (which must not come back whole)."""
    with pytest.raises(UpstreamError) as raised:
        response = await transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()  # as Upstream does: a body that broke mid-way closes its connection
    return raised.value


def chain_of(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def assert_translated_once(error: UpstreamError, expected: type[UpstreamError], failure: Failure, *,
                           sent_nothing: bool) -> None:
    assert type(error) is expected
    assert (error.failure, error.sent_nothing, error.address) == (failure, sent_nothing, ADDRESS)
    assert isinstance(error.__cause__, aiohttp.ClientError | OSError)  # the library's own error, directly
    assert not [e for e in chain_of(error) if isinstance(e, httpx.HTTPError)]  # no middle layer


# --- nothing sent: the request may try another address ------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_refused_port_is_unreachable_before_sending(transport: Callable[..., AiohttpTransport],
                                                          scheme: str) -> None:
    with socket.socket() as closed_port:
        closed_port.bind((ADDRESS, 0))  # bound, never listening: connects are refused
        error = await error_of(transport(), pinned(f"{scheme}://{ADDRESS}:{closed_port.getsockname()[1]}/"))
    assert_translated_once(error, UpstreamUnreachable, Failure.CONNECT, sent_nothing=True)
    assert isinstance(error.__cause__, aiohttp.ClientConnectorError)
    assert isinstance(error.__cause__.os_error, ConnectionRefusedError)
    assert str(error).startswith(f"cannot connect to {HOST} ({ADDRESS})")


async def test_certificate_from_another_ca_is_a_tls_refusal_before_sending(
        transport: Callable[..., AiohttpTransport]) -> None:
    with serve(EchoApp("rogue"), ADDRESS, server_context(trustme.CA(), HOST)) as server:
        error = await error_of(transport(), pinned(f"https://{ADDRESS}:{server.port}/"))
    assert_translated_once(error, TLSRefused, Failure.TLS, sent_nothing=True)
    assert any(isinstance(e, ssl.SSLCertVerificationError) for e in chain_of(error))
    assert "certificate failed verification" in str(error)


async def test_protocol_below_the_floor_is_a_tls_refusal_before_sending(
        transport: Callable[..., AiohttpTransport], test_ca: trustme.CA) -> None:
    with BlockingTLSServer(legacy_server_context(test_ca, HOST), host=ADDRESS) as server:
        error = await error_of(transport(), pinned(f"https://{ADDRESS}:{server.port}/"))
    assert_translated_once(error, TLSRefused, Failure.TLS, sent_nothing=True)
    assert "below TLS 1.2" in str(error)


async def test_handshake_dropped_without_an_alert_is_a_tls_refusal_and_no_made_up_ssl_error(
        transport: Callable[..., AiohttpTransport], test_ca: trustme.CA) -> None:
    with serve(EchoApp("legacy"), ADDRESS, legacy_server_context(test_ca, HOST)) as server:
        error = await error_of(transport(), pinned(f"https://{ADDRESS}:{server.port}/"))
    assert_translated_once(error, TLSRefused, Failure.TLS, sent_nothing=True)
    assert "closed the connection during the handshake" in str(error)
    chain = chain_of(error)
    assert any(isinstance(e, ConnectionResetError) for e in chain)  # what asyncio really saw
    assert not [e for e in chain if isinstance(e, ssl.SSLError)]


async def test_handshake_that_never_completes_is_a_connect_timeout(
        transport: Callable[..., AiohttpTransport]) -> None:
    with bind_socket(ADDRESS) as silent:  # the kernel accepts; nobody ever speaks TLS
        error = await error_of(transport(), pinned(f"https://{ADDRESS}:{silent.getsockname()[1]}/", connect=0.2))
    assert_translated_once(error, UpstreamUnreachable, Failure.CONNECT_TIMEOUT, sent_nothing=True)


async def test_waiting_for_a_pooled_connection_past_the_connect_timeout_sent_nothing(
        transport: Callable[..., AiohttpTransport]) -> None:
    stop = threading.Event()
    with ScriptedServer(never_answer(stop)) as server:
        one_connection = transport(max_connections=1)
        url = f"http://{ADDRESS}:{server.port}/"
        holding = asyncio.create_task(one_connection.handle_async_request(pinned(url, read=10)))
        await async_wait_until(lambda: len(server.received) == 1, message="the first request to arrive")
        error = await error_of(one_connection, pinned(url, connect=0.2))
        holding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holding
        stop.set()
    assert_translated_once(error, UpstreamUnreachable, Failure.CONNECT_TIMEOUT, sent_nothing=True)
    assert len(server.received) == 1


# --- sent, answer lost: ambiguous ---------------------------------------------------------------------------


async def test_certificate_refused_after_our_handshake_is_a_tls_refusal_after_sending(
        transport: Callable[..., AiohttpTransport], test_ca: trustme.CA) -> None:
    # TLS 1.3: the server checks our (missing) certificate after our side of the handshake, and the
    # request may already be on the wire when its alert arrives: refused, but not before sending.
    with BlockingTLSServer(server_context(test_ca, HOST, require_client_cert=True), host=ADDRESS) as server:
        error = await error_of(transport(), pinned(f"https://{ADDRESS}:{server.port}/"))
    assert_translated_once(error, TLSRefused, Failure.TLS, sent_nothing=False)
    assert "CERTIFICATE_REQUIRED" in str(error)


async def test_silence_after_the_request_is_an_ambiguous_read_timeout(
        transport: Callable[..., AiohttpTransport]) -> None:
    stop = threading.Event()
    with ScriptedServer(never_answer(stop)) as server:
        error = await error_of(transport(), pinned(f"http://{ADDRESS}:{server.port}/", read=0.2))
        stop.set()
    assert_translated_once(error, UpstreamAmbiguous, Failure.READ_TIMEOUT, sent_nothing=False)
    assert isinstance(error.__cause__, aiohttp.SocketTimeoutError)
    assert server.received[0].startswith(b"POST / HTTP/1.1")


@pytest.mark.parametrize(("answer", "library_error"), [
    (close_at_once, aiohttp.ServerDisconnectedError),
    (close_mid_body, aiohttp.ClientPayloadError),
    (reset, aiohttp.ClientOSError),
    (not_http, aiohttp.ClientResponseError),
], ids=["closed-before-answering", "closed-mid-body", "reset", "not-http"])
async def test_an_answer_lost_after_the_request_left_is_ambiguous(
        transport: Callable[..., AiohttpTransport], answer: Callable[[socket.socket], None],
        library_error: type[Exception]) -> None:
    with ScriptedServer(answer) as server:
        error = await error_of(transport(), pinned(f"http://{ADDRESS}:{server.port}/"))
    assert_translated_once(error, UpstreamAmbiguous, Failure.READ_TIMEOUT, sent_nothing=False)
    assert isinstance(error.__cause__, library_error)
    assert server.received[0].startswith(b"POST / HTTP/1.1")


# --- a request aiohttp will not send -------------------------------------------------------------------------


async def test_a_url_scheme_aiohttp_does_not_speak_is_refused_unsent_not_ambiguous(
        transport: Callable[..., AiohttpTransport]) -> None:
    error = await error_of(transport(), pinned(f"ftp://{ADDRESS}:21/"))
    assert type(error) is UpstreamError
    assert (error.failure, error.failure.ambiguous) == (Failure.CONNECT, False)


async def test_a_header_aiohttp_will_not_encode_is_an_upstream_error_and_nothing_is_sent(
        transport: Callable[..., AiohttpTransport]) -> None:
    with ScriptedServer(close_at_once) as server:
        request = pinned(f"http://{ADDRESS}:{server.port}/", headers={"X-Note": "a\r\nInjected: yes"})
        error = await error_of(sender := transport(), request)
        await sender.aclose()  # its connection closes before the server stops (which blocks this loop)
    assert type(error) is UpstreamError
    assert error.failure is Failure.CONNECT and "cannot send the request" in str(error)
    assert b"Injected" not in b"".join(server.received)


async def test_client_certificate_makes_the_refusing_server_answer(
        transport: Callable[..., AiohttpTransport], test_ca: trustme.CA, tmp_path: Path) -> None:
    with BlockingTLSServer(server_context(test_ca, HOST, require_client_cert=True), host=ADDRESS) as server:
        response = await transport(client_cert=write_client_identity(test_ca, tmp_path)).handle_async_request(
            pinned(f"https://{ADDRESS}:{server.port}/"))
        await response.aread()
    assert (response.status_code, response.content) == (200, b"ok")  # the refusal above was about the certificate



# --- through the seam -----------------------------------------------------------------------------------------


async def test_an_unencodable_request_through_the_seam_is_an_upstream_error_not_a_crash(
        dns_server: LoopbackDNS, make_upstream: Callable[..., Upstream]) -> None:
    with ScriptedServer(close_at_once) as server:
        dns_server.set(HOST, [ADDRESS])
        request = httpx.Request("POST", f"http://{HOST}:{server.port}/", headers={"X-Note": "a\r\nInjected: yes"})
        async with make_upstream() as upstream:  # closed before the server stops (which blocks this loop)
            with pytest.raises(UpstreamError) as raised:
                await upstream.send(request)
    assert type(raised.value) is UpstreamError and not raised.value.failure.ambiguous
    assert b"Injected" not in b"".join(server.received)


async def test_a_refusal_after_the_request_may_have_left_is_never_tried_on_the_next_address(
        dns_server: LoopbackDNS, make_upstream: Callable[..., Upstream], test_ca: trustme.CA) -> None:
    context = server_context(test_ca, HOST, require_client_cert=True)
    with BlockingTLSServer(context, host=ADDRESS) as first, bind_socket("127.0.0.3", first.port) as second:
        dns_server.set(HOST, [ADDRESS, "127.0.0.3"])
        with pytest.raises(TLSRefused) as refused:
            await make_upstream().send(httpx.Request("POST", f"https://{HOST}:{first.port}/", content=b"{}"))
        second.setblocking(False)
        with pytest.raises(BlockingIOError):
            second.accept()  # the kernel would have queued a connection to the second address: none came
    assert (refused.value.sent_nothing, refused.value.address) == (False, ADDRESS)


async def test_an_answer_its_content_encoding_cannot_decode_is_ambiguous_at_the_seam(
        dns_server: LoopbackDNS, make_upstream: Callable[..., Upstream]) -> None:
    with ScriptedServer(bad_gzip) as server:
        dns_server.set(HOST, [ADDRESS])
        async with make_upstream() as upstream:
            with pytest.raises(UpstreamAmbiguous, match="undecodable") as raised:
                await upstream.send(httpx.Request("POST", f"http://{HOST}:{server.port}/", content=b"{}"))
    assert (raised.value.failure, raised.value.address) == (Failure.READ_TIMEOUT, ADDRESS)
    assert isinstance(raised.value.__cause__, httpx.DecodingError)  # httpx's Response decoded it, not the transport
