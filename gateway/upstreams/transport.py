"""An httpx transport on aiohttp's client: the gateway keeps httpx's request/response API, not its pool.

Measured on this 2-core machine (32 concurrent callers, small POSTs to a TLS nginx on loopback):
httpx's default transport (httpcore's pool, encode/httpx#3215) served about 210 req/s; aiohttp's
client about 2,400 req/s. `ResolvingTransport` still resolves and pins each request; this transport
only carries the pinned request (URL with the answered address, `sni_hostname` with the name).
The answer's body streams as it arrives, raw (aiohttp decompresses nothing), so the caller decides how
much of it to read (`Upstream.send`'s `max_answer_bytes`); closing it early closes the connection.

aiohttp's errors are re-raised as the httpx errors they mean, chained to the original (and to the
ssl error behind it), so `gateway.upstreams.upstream.map_upstream_errors` stays the one translation boundary.
"""

from __future__ import annotations

import contextlib
import contextvars
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx

KEEPALIVE_EXPIRY = 5.0  # as gateway.upstreams.upstream: bounds how long a connection to a dropped address idles


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
        with _as_httpx_errors(self._request):
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
            with _as_httpx_errors(request):
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


def _handshake_cause(request: httpx.Request, error: OSError) -> BaseException:
    """asyncio reports a peer that hangs up mid-handshake as a reset; over https that is a TLS refusal.

    A refused TCP connect is ConnectionRefusedError; a reset after the connect was accepted, before any
    request byte, can only come from the handshake (a server that offers only TLS < 1.2 and drops its
    alert, or refuses our certificate).
    """
    if request.url.scheme == "https" and isinstance(error, ConnectionResetError | ConnectionAbortedError):
        return ssl.SSLEOFError(8, "the peer closed the connection during the TLS handshake")
    return error


def aiohttp_transport(*, ssl_context: ssl.SSLContext, max_connections: int) -> httpx.AsyncBaseTransport:
    """The gateway's default inner transport (see `gateway.upstreams.upstream.TransportFactory`)."""
    return AiohttpTransport(ssl_context=ssl_context, max_connections=max_connections)


@contextlib.contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    """Re-raise aiohttp's errors as the httpx errors that mean the same, for the one mapping boundary."""
    try:
        yield
    except aiohttp.ClientConnectorCertificateError as exc:
        raise httpx.ConnectError(str(exc), request=request) from exc.certificate_error
    except aiohttp.ClientConnectorError as exc:  # TCP connect or TLS handshake: nothing was sent
        raise httpx.ConnectError(str(exc), request=request) from _handshake_cause(request, exc.os_error)
    except aiohttp.ConnectionTimeoutError as exc:  # sock_connect, or waiting for a pooled connection
        raise httpx.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise httpx.ReadTimeout(str(exc) or "read timeout", request=request) from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError(str(exc) or "server disconnected", request=request) from exc
    except aiohttp.ClientOSError as exc:  # the connection broke after the request went out
        raise httpx.ReadError(str(exc), request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:  # payload and protocol errors: the answer was lost mid-way
        raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__, request=request) from exc
