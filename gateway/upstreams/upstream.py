"""The one seam between the gateway and its upstreams: fresh DNS per request, TLS floor, typed errors.

    Upstream.send(request)            what the proxy and the sessions call; body read, facts attached
      └── ResolvingTransport          resolves the name (gateway.upstreams.resolver), picks an address
            (policies.dns), pins the request to it, moves on to the next address on a failed connect
            └── inner transport       one per upstream host name, raising only the gateway's errors:
                                      aiohttp's client by default (gateway.upstreams.transport, chosen
                                      by measurement), httpx's own as `http_transport`
                                      (gateway.upstreams.httpx_transport)

Why pin by hand instead of letting httpcore resolve: httpcore resolves with getaddrinfo in a thread
and never again for a pooled connection, and any DNS cache would outlive a vendor's failover. Here
the URL is rewritten to the address just answered, `sni_hostname` carries the name (httpcore uses it
for SNI and certificate checks) and the Host header keeps the name. httpcore's pool is keyed by
(scheme, address, port), so a changed answer opens a new connection by itself and a connection to an
address the answer dropped is never picked again (it idles out after `transport.KEEPALIVE_EXPIRY`).
The pool key ignores SNI, hence one inner transport per host name: two names on one address never
share a connection negotiated for the other.

Errors: each inner transport translates its own library's errors into `gateway.errors`, once, at its
boundary (its module docstring has the table); nothing here maps them again. What they mean:

    the name did not resolve                       DNSFailure           Failure.DNS
    refused / unreachable / reset while connecting UpstreamUnreachable  Failure.CONNECT
    connect or handshake timeout, pool timeout     UpstreamUnreachable  Failure.CONNECT_TIMEOUT
    handshake refused: floor, certificate, name    TLSRefused           Failure.TLS
    anything once request bytes may have left      UpstreamAmbiguous    Failure.READ_TIMEOUT

The first four sent nothing the upstream could act on: safe to fail over. Within one request, a
connection that failed to open (`sent_nothing`) moves on to the next answered address. Everything
else, unknown errors included, is ambiguous: a resend might duplicate the call. A request that
cannot be encoded (unknown URL scheme, invalid header) is a plain `UpstreamError`: nothing to learn.
The seam translates one foreign error itself: httpx's DecodingError, which httpx's Response raises
while it decodes an answer's Content-Encoding (UpstreamAmbiguous: the call went through).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import AsyncGenerator
from typing import Any, Protocol, cast

import httpx

from gateway.errors import UpstreamAmbiguous, UpstreamError, UpstreamUnreachable, upstream_name
from gateway.telemetry.otel import Telemetry
from gateway.upstreams.resolver import Resolver
from gateway.upstreams.transport import aiohttp_transport
from policies.dns import is_ip_literal, next_address
from policies.outcome import Failure


class TransportFactory(Protocol):
    """Builds the inner transport for one upstream host name (swap it to benchmark other clients).

    The transport raises only `gateway.errors.UpstreamError` subclasses, also while a body streams:
    it translates its own library's errors (see gateway.upstreams.transport for the table to keep).
    """

    def __call__(self, *, ssl_context: ssl.SSLContext, max_connections: int) -> httpx.AsyncBaseTransport: ...


class ResolvingTransport(httpx.AsyncBaseTransport):
    """Resolves the host on every request and sends to an answered address, the next on connect failure.

    Raises only `gateway.errors.UpstreamError` subclasses (the inner transport's). Responses
    carry `extensions["peer_address"]` (the address used) and `extensions["tls_version"]` (e.g.
    "TLSv1.3", None over plain HTTP or when the inner transport does not expose its stream).
    """

    def __init__(self, *, resolver: Resolver, ssl_context: ssl.SSLContext,
                 max_connections_per_host: int = 100,
                 transport_factory: TransportFactory = aiohttp_transport, telemetry: Telemetry | None = None) -> None:
        self._resolver = resolver
        self._telemetry = telemetry or Telemetry.disabled()
        self._ssl_context = ssl_context
        self._max_connections = max_connections_per_host
        self._factory = transport_factory
        self._inner: dict[str, httpx.AsyncBaseTransport] = {}  # host name -> its own pool
        self._peers: dict[str, str] = {}  # host name -> address of its last answered request

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if _is_ip_literal(host):
            return await self._send(request, host, host)
        with self._telemetry.dns(host) as span:
            answer = await self._resolver.resolve(host)
            if span.is_recording():
                span.set_attribute("dns.answers", list(answer))
        failed: list[str] = []
        last_error: UpstreamUnreachable | None = None
        while (address := next_address(answer, failed=failed, preferred=self._peers.get(host))) is not None:
            try:
                response = await self._send(pinned(request, host, address), host, address)
            except UpstreamUnreachable as exc:
                if not exc.sent_nothing:
                    raise  # bytes left (or may have): another address would be a second send
                failed.append(address)
                last_error = exc
                continue
            self._peers[host] = address
            return response
        raise last_error or UpstreamUnreachable(f"{host} resolved to no address")

    async def _send(self, request: httpx.Request, host: str, address: str) -> httpx.Response:
        response = await self._inner_for(host).handle_async_request(request)
        ssl_object = _ssl_object(response)
        version = ssl_object.version() if ssl_object is not None else None
        self._telemetry.saw_connection(ssl_object, version)
        response.extensions = {**response.extensions, "peer_address": address, "tls_version": version}
        return response

    def _inner_for(self, host: str) -> httpx.AsyncBaseTransport:
        inner = self._inner.get(host)
        if inner is None:
            inner = self._inner[host] = self._factory(ssl_context=self._ssl_context,
                                                      max_connections=self._max_connections)
        return inner

    async def aclose(self) -> None:
        inner, self._inner = list(self._inner.values()), {}
        for transport in inner:
            await transport.aclose()


async def _read_whole(response: httpx.Response) -> httpx.Response:
    """`response` with its body read and decoded; an answer its Content-Encoding cannot decode is ambiguous."""
    try:
        await response.aread()
    except httpx.DecodingError as exc:  # httpx's own Response decodes gzip/deflate/br: the seam's one httpx error
        address = response.extensions["peer_address"]
        where = upstream_name(response.request.url.host, address)
        raise UpstreamAmbiguous(f"answer from {where} is undecodable: {exc}", failure=Failure.READ_TIMEOUT,
                                address=address) from exc
    return response


async def _read_at_most(response: httpx.Response, limit: int) -> httpx.Response:
    """A copy of `response` holding at most `limit` raw bytes of its body; the original is closed."""
    chunks: list[bytes] = []
    size, truncated = 0, False
    raw = cast(AsyncGenerator[bytes, None], response.aiter_raw())
    async with contextlib.aclosing(raw):
        async for chunk in raw:
            if size + len(chunk) > limit:
                chunks.append(chunk[:limit - size])
                truncated = True
                break
            chunks.append(chunk)
            size += len(chunk)
    await response.aclose()  # before the end: closes the connection instead of draining the rest
    encoding = response.headers.get("content-encoding")
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-encoding"]
    bounded = httpx.Response(response.status_code, headers=headers, content=b"".join(chunks),
                             extensions={**response.extensions, "answer_truncated": truncated,
                                         "raw_content_encoding": encoding})
    bounded.request = response.request
    return bounded


def pinned(request: httpx.Request, host: str, address: str) -> httpx.Request:
    """The same request sent to `address`: Host header, SNI and certificate checks keep the name."""
    # An address literal is no SNI name (RFC 6066 section 3): the TLS layer then sends none.
    extensions = request.extensions if _is_ip_literal(host) else {**request.extensions, "sni_hostname": host}
    return httpx.Request(request.method, _at_address(request.url, address), headers=request.headers,
                         stream=request.stream, extensions=extensions)


# Pure functions of their arguments, asked on every request and each ~2-15 µs (ipaddress parsing; httpx
# parsing the URL again): kept for the last few hundred hosts and URLs. httpx.URL is immutable and hashable.
_is_ip_literal = functools.lru_cache(maxsize=256)(is_ip_literal)


@functools.lru_cache(maxsize=1024)
def _at_address(url: httpx.URL, address: str) -> httpx.URL:
    return url.copy_with(host=address)


def _ssl_object(response: httpx.Response) -> ssl.SSLObject | ssl.SSLSocket | None:
    stream: Any = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    return ssl_object if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket) else None


class Upstream:
    """What the proxy calls: one request out, a fully read response or an `UpstreamError` back."""

    def __init__(self, *, resolver: Resolver, ssl_context: ssl.SSLContext, connect_timeout: float = 5.0,
                 read_timeout: float = 30.0, max_connections_per_host: int = 100,
                 transport_factory: TransportFactory | None = None, telemetry: Telemetry | None = None) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.telemetry = telemetry or Telemetry.disabled()
        self.transport = ResolvingTransport(resolver=resolver, ssl_context=ssl_context,
                                            max_connections_per_host=max_connections_per_host,
                                            transport_factory=transport_factory or aiohttp_transport,
                                            telemetry=self.telemetry)

    def timeout(self, read_timeout: float | None = None) -> httpx.Timeout:
        """Connect and pool waits send nothing, so they get the connect timeout; writes the read one."""
        read = self.read_timeout if read_timeout is None else read_timeout
        return httpx.Timeout(connect=self.connect_timeout, pool=self.connect_timeout, read=read, write=read)

    async def send(self, request: httpx.Request, *, read_timeout: float | None = None,
                   max_answer_bytes: int | None = None, total_timeout: float | None = None) -> httpx.Response:
        """Send `request` (no redirects, no cookies) and read the body: whole, or bounded for URLs others chose.

        Raises only `UpstreamError` subclasses. `response.extensions` holds "peer_address" and
        "tls_version" for tracing; `response.request` is the caller's request, with the name.

        For a URL an app or a customer chose (callbacks, FDXML posts), pass both bounds:
        `max_answer_bytes` asks for `Accept-Encoding: identity` and reads at most that many bytes of
        the body, raw: an encoded answer is never inflated (its Content-Encoding moves from the headers
        to `extensions["raw_content_encoding"]` so nothing downstream decodes it), and the connection is
        closed on the rest rather than drained (`extensions["answer_truncated"]` says there was more).
        `total_timeout` bounds the whole exchange, connect to last byte, so a receiver that drips its
        answer cannot hold the caller longer; past it, `UpstreamAmbiguous` (Failure.READ_TIMEOUT).
        """
        if max_answer_bytes is not None:
            request.headers["Accept-Encoding"] = "identity"
        if total_timeout is not None:
            read_timeout = min(self.read_timeout if read_timeout is None else read_timeout, total_timeout)
        request.extensions["timeout"] = self.timeout(read_timeout).as_dict()
        if total_timeout is None:
            return await self._exchange(request, max_answer_bytes)
        try:
            async with asyncio.timeout(total_timeout):
                return await self._exchange(request, max_answer_bytes)
        except TimeoutError:
            raise UpstreamAmbiguous(f"no whole answer from {request.url.host} within {total_timeout:g}s",
                                    failure=Failure.READ_TIMEOUT) from None

    async def _exchange(self, request: httpx.Request, max_answer_bytes: int | None) -> httpx.Response:
        response = await self.transport.handle_async_request(request)
        response.request = request
        try:
            if max_answer_bytes is None:
                return await _read_whole(response)
            return await _read_at_most(response, max_answer_bytes)
        except BaseException:
            with contextlib.suppress(UpstreamError):
                await response.aclose()
            raise

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> Upstream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
