"""httpx's own transport (httpcore's pool) as the seam's inner transport, its errors translated here, once.

Not the default (`gateway.upstreams.transport` on aiohttp is, by measurement); kept because it is
the reference implementation of the interface: it exposes every answer's TLS object, and the tests
and benchmarks compare against it. Pass `transport_factory=http_transport` to `Upstream`.

httpx's and httpcore's errors become the gateway's by most specific match, as httpx's own
`map_httpcore_exceptions` does, chained to the original:

    httpx raised                          gateway error          Failure          sent_nothing
    ConnectError caused by ssl            TLSRefused             TLS              yes
    ConnectError                          UpstreamUnreachable    CONNECT          yes
    ConnectTimeout, PoolTimeout           UpstreamUnreachable    CONNECT_TIMEOUT  yes
    a certificate alert on the first read TLSRefused             TLS              no
    ReadTimeout, WriteTimeout, ReadError, UpstreamAmbiguous      READ_TIMEOUT     no
      WriteError, RemoteProtocolError,
      DecodingError, any other HTTPError
      or OSError
    UnsupportedProtocol,                  UpstreamError          CONNECT          no
      LocalProtocolError
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator

import httpx

from gateway.errors import UpstreamAmbiguous, UpstreamError, UpstreamUnreachable, upstream_name
from gateway.upstreams.tls_refusals import is_handshake_refusal, ssl_error_in, tls_refused
from gateway.upstreams.transport import KEEPALIVE_EXPIRY
from policies.outcome import Failure

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


def http_transport(*, ssl_context: ssl.SSLContext, max_connections: int) -> httpx.AsyncBaseTransport:
    """httpx/httpcore behind the seam: no retries, trust and routing only from the arguments."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                          keepalive_expiry=KEEPALIVE_EXPIRY)
    return _Translating(httpx.AsyncHTTPTransport(verify=ssl_context, trust_env=False, limits=limits, retries=0))


def translate_error(exc: BaseException, *, host: str, address: str | None) -> UpstreamError:
    """The gateway error an httpx, httpcore or OS error means; see the module docstring for the table."""
    sent_nothing = isinstance(exc, _BEFORE_SEND)
    tls = ssl_error_in(exc)
    if tls is not None and (isinstance(exc, httpx.ConnectError) or is_handshake_refusal(tls)):
        return tls_refused(tls, host=host, address=address, sent_nothing=sent_nothing)
    cls, failure, message = _most_specific(exc)
    detail = str(exc) or type(exc).__name__
    return cls(f"{message.format(where=upstream_name(host, address))}: {detail}", failure=failure,
               address=address, sent_nothing=sent_nothing)


def _most_specific(exc: BaseException) -> _Mapping:
    best: type[BaseException] | None = None
    for candidate in _ERROR_MAP:
        if isinstance(exc, candidate) and (best is None or issubclass(candidate, best)):
            best = candidate
    assert best is not None  # only HTTPError and OSError reach here; both are keys
    return _ERROR_MAP[best]


@contextlib.contextmanager
def _translated(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except (httpx.HTTPError, OSError) as exc:
        host = request.extensions.get("sni_hostname") or request.url.host
        raise translate_error(exc, host=host, address=request.url.host) from exc


class _TranslatedStream(httpx.AsyncByteStream):
    """A response body whose read errors are translated like the rest of the exchange."""

    def __init__(self, stream: httpx.AsyncByteStream, request: httpx.Request) -> None:
        self._stream, self._request = stream, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _translated(self._request):
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        with _translated(self._request):
            await self._stream.aclose()


class _Translating(httpx.AsyncBaseTransport):
    """`inner`, raising only `gateway.errors.UpstreamError` subclasses, also while the body streams."""

    def __init__(self, inner: httpx.AsyncHTTPTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with _translated(request):
            response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)  # an async transport streams async
        return httpx.Response(response.status_code, headers=response.headers, extensions=response.extensions,
                              stream=_TranslatedStream(response.stream, request))

    async def aclose(self) -> None:
        await self._inner.aclose()
