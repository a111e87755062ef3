"""The one seam between the gateway and its upstreams: fresh DNS per request, TLS floor, typed errors.

    Upstream.send(request)            what the proxy and the sessions call; body read, facts attached
      └── ResolvingTransport          resolves the name (gateway.upstreams.resolver), picks an address
            (policies.dns), pins the request to it, translates every library error here, once
            └── inner transport       one per upstream host name; aiohttp's client by default
                                      (gateway.upstreams.transport, chosen by measurement), httpx's
                                      own AsyncHTTPTransport available as `http_transport`

Why pin by hand instead of letting httpcore resolve: httpcore resolves with getaddrinfo in a thread
and never again for a pooled connection, and any DNS cache would outlive a vendor's failover. Here
the URL is rewritten to the address just answered, `sni_hostname` carries the name (httpcore uses it
for SNI and certificate checks) and the Host header keeps the name. httpcore's pool is keyed by
(scheme, address, port), so a changed answer opens a new connection by itself and a connection to an
address the answer dropped is never picked again (it idles out after `KEEPALIVE_EXPIRY`). The pool
key ignores SNI, hence one inner transport per host name: two names on one address never share a
connection negotiated for the other.

Errors, at one boundary (`map_upstream_errors`, most specific match wins, like httpx's own map):

    the name did not resolve                       DNSFailure           Failure.DNS
    refused / unreachable / reset while connecting UpstreamUnreachable  Failure.CONNECT
    connect or handshake timeout, pool timeout     UpstreamUnreachable  Failure.CONNECT_TIMEOUT
    handshake refused: floor, certificate, name    TLSRefused           Failure.TLS
    anything once request bytes may have left      UpstreamAmbiguous    Failure.READ_TIMEOUT

The first four sent nothing the upstream could act on: safe to fail over. Within one request, a
connection that failed to open moves on to the next answered address. Everything else, unknown
errors included, is ambiguous: a resend might duplicate the call. A request the gateway cannot
encode (unknown URL scheme, invalid header) is a plain `UpstreamError`: nothing left, nothing to learn.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, Protocol, cast

import httpx

from gateway.errors import TLSRefused, UpstreamAmbiguous, UpstreamError, UpstreamUnreachable
from gateway.telemetry.otel import Telemetry
from gateway.upstreams.resolver import Resolver
from gateway.upstreams.transport import aiohttp_transport
from policies.dns import is_ip_literal, next_address
from policies.outcome import Failure

KEEPALIVE_EXPIRY = 5.0  # seconds an idle pooled connection lives; bounds how long a dropped address lingers

_Mapping = tuple[type[UpstreamError], Failure, str]

# Most specific class wins (ConnectTimeout over TimeoutException over TransportError).
_ERROR_MAP: dict[type[BaseException], _Mapping] = {
    # Unknown failures may have reached the upstream: ambiguous is the answer that never duplicates.
    OSError: (UpstreamAmbiguous, Failure.READ_TIMEOUT, "connection to {where} failed"),
    httpx.HTTPError: (UpstreamAmbiguous, Failure.READ_TIMEOUT, "call to {where} failed"),
    # Raised by httpcore only while opening a connection (TCP connect, TLS handshake): nothing sent.
    httpx.ConnectError: (UpstreamUnreachable, Failure.CONNECT, "cannot connect to {where}"),
    httpx.ConnectTimeout: (UpstreamUnreachable, Failure.CONNECT_TIMEOUT, "connecting to {where} timed out"),
    # Waiting for a free pooled connection: the request never left (the pool is full of slow calls).
    httpx.PoolTimeout: (UpstreamUnreachable, Failure.CONNECT_TIMEOUT, "no free connection to {where}"),
    # The request (or part of it) left: the upstream may act on it even if the answer is lost.
    # A write error too: the bytes before it may already hold a whole request the server acts on.
    httpx.ReadTimeout: (UpstreamAmbiguous, Failure.READ_TIMEOUT, "no answer from {where} in time"),
    httpx.WriteTimeout: (UpstreamAmbiguous, Failure.READ_TIMEOUT, "sending to {where} timed out"),
    httpx.ReadError: (UpstreamAmbiguous, Failure.READ_TIMEOUT, "connection to {where} lost awaiting answer"),
    httpx.WriteError: (UpstreamAmbiguous, Failure.READ_TIMEOUT, "connection to {where} lost while sending"),
    # Includes "server disconnected without sending a response" on a reused keep-alive connection:
    # RFC 9110 §9.2.2 lets a client resend only idempotent requests there, so it stays ambiguous.
    httpx.RemoteProtocolError: (UpstreamAmbiguous, Failure.READ_TIMEOUT, "{where} broke the HTTP exchange"),
    httpx.DecodingError: (UpstreamAmbiguous, Failure.READ_TIMEOUT, "answer from {where} is undecodable"),
    # Refused locally before anything was written: a gateway bug or a bad configured URL.
    httpx.UnsupportedProtocol: (UpstreamError, Failure.CONNECT, "cannot call {where}"),
    httpx.LocalProtocolError: (UpstreamError, Failure.CONNECT, "cannot encode the request for {where}"),
}

# Errors after which this request may try the next answered address: no request byte was written.
_BEFORE_SEND = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

# OpenSSL reasons that mean "the peer's highest protocol is below our TLS 1.2 floor".
_BELOW_FLOOR = frozenset({"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE"})


@contextlib.contextmanager
def map_upstream_errors(host: str, address: str | None) -> Iterator[None]:
    """Translate httpx/httpcore/ssl/OS errors into the gateway's tree; `address` lands in `.address`."""
    try:
        yield
    except UpstreamError:
        raise
    except (httpx.HTTPError, OSError) as exc:
        raise translate_error(exc, host=host, address=address) from exc


def translate_error(exc: BaseException, *, host: str, address: str | None) -> UpstreamError:
    """The gateway error a library error means; see the module docstring for the table."""
    where = host if address in (None, host) else f"{host} ({address})"
    tls = _ssl_error_in(exc)
    if tls is not None and (isinstance(exc, httpx.ConnectError) or _is_handshake_refusal(tls)):
        return TLSRefused(_tls_message(tls, where), address=address)
    cls, failure, message = _most_specific(exc)
    detail = str(exc) or type(exc).__name__
    return cls(f"{message.format(where=where)}: {detail}", failure=failure, address=address)


def _most_specific(exc: BaseException) -> _Mapping:
    best: type[BaseException] | None = None
    for candidate in _ERROR_MAP:
        if isinstance(exc, candidate) and (best is None or issubclass(candidate, best)):
            best = candidate
    assert best is not None  # only HTTPError and OSError reach here; both are keys
    return _ERROR_MAP[best]


def _ssl_error_in(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind httpx's and httpcore's wrappers (they chain it as __cause__/__context__)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _is_handshake_refusal(error: ssl.SSLError) -> bool:
    # With TLS 1.3 the server checks our client certificate after our side of the handshake is
    # done, so its refusal arrives as an alert on the first read. It never processed the request.
    if isinstance(error, ssl.SSLCertVerificationError):
        return True
    reason = getattr(error, "reason", None) or ""
    return "ALERT" in reason and any(word in reason for word in ("CERTIFICATE", "UNKNOWN_CA", "HANDSHAKE"))


def _tls_message(error: ssl.SSLError, where: str) -> str:
    reason = getattr(error, "reason", None) or ""
    if reason in _BELOW_FLOOR:
        return f"TLS refused by {where}: the upstream offered a protocol below TLS 1.2 ({reason})"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS refused by {where}: its certificate failed verification ({error.verify_message})"
    if isinstance(error, ssl.SSLEOFError) or reason == "UNEXPECTED_EOF_WHILE_READING":
        # Servers on asyncio (and some balancers) drop the connection without sending their alert.
        return (f"TLS refused by {where}: the upstream closed the connection during the handshake "
                "(it may accept only TLS below 1.2, or not our certificate)")
    return f"TLS refused by {where}: {reason or error}"


class TransportFactory(Protocol):
    """Builds the inner transport for one upstream host name (swap it to benchmark other clients)."""

    def __call__(self, *, ssl_context: ssl.SSLContext, max_connections: int) -> httpx.AsyncBaseTransport: ...


def http_transport(*, ssl_context: ssl.SSLContext, max_connections: int) -> httpx.AsyncBaseTransport:
    """The default inner transport: httpx/httpcore, no retries, trust and routing only from arguments."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                          keepalive_expiry=KEEPALIVE_EXPIRY)
    return httpx.AsyncHTTPTransport(verify=ssl_context, trust_env=False, limits=limits, retries=0)


class _MappedStream(httpx.AsyncByteStream):
    """A response body whose read errors are translated like the rest of the exchange."""

    def __init__(self, stream: httpx.AsyncByteStream, host: str, address: str) -> None:
        self._stream, self._host, self._address = stream, host, address

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with map_upstream_errors(self._host, self._address):
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        with map_upstream_errors(self._host, self._address):
            await self._stream.aclose()


class ResolvingTransport(httpx.AsyncBaseTransport):
    """Resolves the host on every request and sends to an answered address, the next on connect failure.

    Raises only `gateway.errors.UpstreamError` subclasses, also while the body streams. Responses
    carry `extensions["peer_address"]` (the address used) and `extensions["tls_version"]` (e.g.
    "TLSv1.3", None over plain HTTP or when the inner transport does not expose its stream).
    """

    def __init__(self, *, resolver: Resolver, ssl_context: ssl.SSLContext,
                 max_connections_per_host: int = 100,
                 transport_factory: TransportFactory = http_transport, telemetry: Telemetry | None = None) -> None:
        self._resolver = resolver
        self._telemetry = telemetry or Telemetry.disabled()
        self._ssl_context = ssl_context
        self._max_connections = max_connections_per_host
        self._factory = transport_factory
        self._inner: dict[str, httpx.AsyncBaseTransport] = {}  # host name -> its own pool
        self._peers: dict[str, str] = {}  # host name -> address of its last answered request

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if is_ip_literal(host):
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
                if not isinstance(exc.__cause__, _BEFORE_SEND):
                    raise  # bytes left (or may have): another address would be a second send
                failed.append(address)
                last_error = exc
                continue
            self._peers[host] = address
            return response
        raise last_error or UpstreamUnreachable(f"{host} resolved to no address")

    async def _send(self, request: httpx.Request, host: str, address: str) -> httpx.Response:
        with map_upstream_errors(host, address):
            response = await self._inner_for(host).handle_async_request(request)
        ssl_object = _ssl_object(response)
        version = ssl_object.version() if ssl_object is not None else None
        self._telemetry.saw_connection(ssl_object, version)
        extensions = {**response.extensions, "peer_address": address, "tls_version": version}
        assert isinstance(response.stream, httpx.AsyncByteStream)  # an async transport streams async
        return httpx.Response(response.status_code, headers=response.headers, extensions=extensions,
                              stream=_MappedStream(response.stream, host, address))

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
    extensions = request.extensions if is_ip_literal(host) else {**request.extensions, "sni_hostname": host}
    return httpx.Request(request.method, request.url.copy_with(host=address), headers=request.headers,
                         stream=request.stream, extensions=extensions)


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
            with map_upstream_errors(request.url.host, response.extensions["peer_address"]):
                if max_answer_bytes is None:
                    await response.aread()  # decoding errors surface here, outside the stream
                    return response
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
