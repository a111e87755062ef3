"""An httpx transport on aiohttp's client: the gateway keeps httpx's request/response API, not its pool.

Measured on this 2-core machine (32 concurrent callers, small POSTs to a TLS nginx on loopback):
httpx's default transport (httpcore's pool, encode/httpx#3215) served about 210 req/s; aiohttp's
client about 2,400 req/s. `ResolvingTransport` still resolves and pins each request; this transport
only carries the pinned request (URL with the answered address, `sni_hostname` with the name).
The answer's body streams as it arrives, raw (aiohttp decompresses nothing), so the caller decides how
much of it to read (`Upstream.send`'s `max_answer_bytes`); closing it early closes the connection.

aiohttp's errors (and the asyncio, ssl and socket errors behind or beside them) are translated here,
once, into the gateway's (`_translated`, most specific first), chained to the original:

    aiohttp raised                                  gateway error          Failure          sent_nothing
    ClientConnectorDNSError                         DNSFailure             DNS              yes
    ClientConnectorCertificateError                 TLSRefused             TLS              yes
    ClientConnectorSSLError (floor, alert)          TLSRefused             TLS              yes
    ClientConnectorError, reset during an https     TLSRefused             TLS              yes
      connect (a peer that drops its handshake)
    ClientConnectorError (refused, unreachable)     UpstreamUnreachable    CONNECT          yes
    ConnectionTimeoutError (connect, handshake,     UpstreamUnreachable    CONNECT_TIMEOUT  yes
      waiting for a pooled connection)
    a certificate alert after our handshake         TLSRefused             TLS              no
      (TLS 1.3: the request may have left)
    SocketTimeoutError, other timeouts              UpstreamAmbiguous      READ_TIMEOUT     no
    ServerDisconnectedError, ClientPayloadError,    UpstreamAmbiguous      READ_TIMEOUT     no
      ClientResponseError, ClientOSError, any other
      ClientError or OSError
    InvalidURL, NonHttpUrlClientError, ValueError   UpstreamError          CONNECT          yes
      (a request aiohttp will not encode)

`sent_nothing` rows failed before a request byte was written: `ResolvingTransport` may try the
request on the next answered address. The rest may have reached the upstream; unknown errors
included, they are ambiguous (a resend might duplicate the call). Nothing here fabricates an error
of another library.
"""

from __future__ import annotations

import contextlib
import contextvars
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx

from gateway.errors import DNSFailure, UpstreamAmbiguous, UpstreamError, UpstreamUnreachable, upstream_name
from gateway.upstreams.tls_refusals import is_handshake_refusal, ssl_error_in, tls_refused
from policies.outcome import Failure

KEEPALIVE_EXPIRY = 5.0  # seconds an idle pooled connection lives; bounds how long a dropped address lingers


# What the connector learnt of the connection a request got (its TLS object and peer), for the request
# being sent in this task. Read from the connection itself rather than the response: aiohttp releases
# the connection as soon as a small answer has been read whole, and then `response.connection` is None.
_CONNECTION: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("aftm_aiohttp_connection",
                                                                                      default=None)


class _Connector(aiohttp.TCPConnector):
    """A TCPConnector that tells the request in flight which connection (new or pooled) it got."""

    async def connect(self, req: Any, traces: Any, timeout: Any) -> aiohttp.connector.Connection:  # noqa: ASYNC109
        connection = await super().connect(req, traces, timeout)
        seen = _CONNECTION.get()
        if seen is not None and connection.transport is not None:
            seen["ssl_object"] = connection.transport.get_extra_info("ssl_object")
            seen["peername"] = connection.transport.get_extra_info("peername")
        return connection


class _StreamInfo:
    """What httpcore's network stream would tell: the peer and the TLS object, read at answer time."""

    def __init__(self, extra: dict[str, Any]) -> None:
        self._extra = extra

    def get_extra_info(self, name: str) -> Any:
        return self._extra.get(name)


class _AnswerStream(httpx.AsyncByteStream):
    """An aiohttp answer's body as it arrives (raw: aiohttp decompresses nothing here).

    Closing it before the end closes the connection: an unread rest (an endless or hostile body) is
    never drained, and a connection with bytes pending is never pooled again.
    """

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response, self._request = response, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _translated(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # read whole: the connection goes back to the pool
        else:
            self._response.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests with one aiohttp session (its own connection pool); no redirects, no cookies."""

    def __init__(self, *, ssl_context: ssl.SSLContext, max_connections: int) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily: aiohttp binds to the running event loop
            connector = _Connector(limit=self._max_connections, ssl=self._ssl_context,
                                             use_dns_cache=False, keepalive_timeout=KEEPALIVE_EXPIRY)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent",))
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; the answer's body streams (the caller bounds how much of it is read)."""
        timeout = request.extensions.get("timeout", {})
        client_timeout = aiohttp.ClientTimeout(total=None, connect=timeout.get("pool"),
                                               sock_connect=timeout.get("connect"), sock_read=timeout.get("read"))
        sni = request.extensions.get("sni_hostname")
        body = await request.aread()
        extra: dict[str, Any] = {}
        token = _CONNECTION.set(extra)
        try:
            with _translated(request):
                response = await self._client().request(
                    request.method, str(request.url), headers=list(request.headers.multi_items()),
                    data=body or None, allow_redirects=False, timeout=client_timeout, server_hostname=sni,
                    ssl=self._ssl_context,
                )
        finally:
            _CONNECTION.reset(token)
        return httpx.Response(response.status, headers=list(response.raw_headers),
                              stream=_AnswerStream(response, request),
                              extensions={"network_stream": _StreamInfo(extra), "http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def aiohttp_transport(*, ssl_context: ssl.SSLContext, max_connections: int) -> httpx.AsyncBaseTransport:
    """The gateway's default inner transport (see `gateway.upstreams.upstream.TransportFactory`)."""
    return AiohttpTransport(ssl_context=ssl_context, max_connections=max_connections)


@contextlib.contextmanager
def _translated(request: httpx.Request) -> Iterator[None]:
    """aiohttp's, asyncio's, ssl's and the socket's errors as the gateway's (the module docstring's table)."""
    try:
        yield
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        host = request.extensions.get("sni_hostname") or request.url.host
        raise _gateway_error(exc, host=host, address=request.url.host,
                             https=request.url.scheme == "https") from exc


def _gateway_error(exc: Exception, *, host: str, address: str, https: bool) -> UpstreamError:
    """The gateway error `exc` means, most specific class first."""
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return _opening_error(exc, host=host, address=address, https=https)
    where = upstream_name(host, address)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError) or (
            isinstance(exc, ValueError) and not isinstance(exc, aiohttp.ClientError)):
        # Refused by aiohttp before anything was written (a header it will not encode, a scheme it does
        # not speak): a gateway bug or a bad configured URL.
        return UpstreamError(f"cannot send the request to {where}: {exc}", failure=Failure.CONNECT,
                             address=address, sent_nothing=True)
    tls = ssl_error_in(exc)
    if tls is not None and is_handshake_refusal(tls):
        return tls_refused(tls, host=host, address=address, sent_nothing=False)
    if isinstance(exc, TimeoutError):  # aiohttp's SocketTimeoutError (sock_read) is one
        return UpstreamAmbiguous(f"no answer from {where} in time", failure=Failure.READ_TIMEOUT, address=address)
    if isinstance(exc, aiohttp.ServerDisconnectedError):  # also on a reused keep-alive connection: RFC 9110
        what = "closed the connection before its answer was whole"  # §9.2.2 allows no resend of a POST there
    elif isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        what = "broke the HTTP exchange"
    else:  # the connection broke after the request went out, or an error nobody expected: never resend
        what = "lost the connection awaiting the answer"
    detail = str(exc) or type(exc).__name__
    return UpstreamAmbiguous(f"{where} {what}: {detail}", failure=Failure.READ_TIMEOUT, address=address)


def _opening_error(exc: aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError, *, host: str,
                   address: str, https: bool) -> UpstreamError:
    """An error opening the connection (TCP connect, TLS handshake, a pooled connection): nothing was sent."""
    where = upstream_name(host, address)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # sock_connect, or waiting for a pooled connection
        return UpstreamUnreachable(f"connecting to {where} timed out", failure=Failure.CONNECT_TIMEOUT,
                                   address=address, sent_nothing=True)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):  # only for a request not pinned to an address
        return DNSFailure(f"{host} did not resolve: {exc.os_error}", address=address, sent_nothing=True)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return tls_refused(ssl_error_in(exc.certificate_error), host=host, address=address, sent_nothing=True)
    cause = exc.os_error
    if isinstance(cause, ssl.SSLError):  # ClientConnectorSSLError: a protocol or handshake alert
        return tls_refused(cause, host=host, address=address, sent_nothing=True)
    if https and isinstance(cause, ConnectionResetError | ConnectionAbortedError):
        # A refused TCP connect is ConnectionRefusedError; a reset after the connect was accepted,
        # before any request byte, can only come from the handshake (a server that offers only
        # TLS < 1.2 and drops its alert, or refuses our certificate).
        return tls_refused(None, host=host, address=address, sent_nothing=True)
    return UpstreamUnreachable(f"cannot connect to {where}: {cause.strerror or cause}", failure=Failure.CONNECT,
                               address=address, sent_nothing=True)
