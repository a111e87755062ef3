"""The listener: limits on a connection that hold before any route or authentication runs.

uvicorn with httptools (what `uvicorn[standard]` picks) bounds neither the size nor the number of a
request's headers, and has no timer while a request's head arrives: a 50 MB header line or 100,000
headers were answered, and a client dripping one byte a second held a connection (and its memory)
for ever, unauthenticated. `GuardedHttpToolsProtocol` keeps httptools' parser and speed and adds:

- more than `listen.max_header_bytes` of request line and headers, or more than `listen.max_headers`
  headers: `431` and the connection closed, without reading the rest of the head;
- a head not complete within `listen.header_timeout` seconds of the connection opening (or, on a
  kept-alive connection, of the next request's first byte): the connection is closed. An idle
  kept-alive connection is uvicorn's `timeout_keep_alive`'s business, not this timer's;
- a request answered before its body arrived (a 401, 404 or 413 needs none of it): the rest of the body
  gets `listen.header_timeout` to arrive and is discarded, then the connection is closed. uvicorn
  cancelled its keep-alive timer on every body byte and never re-armed it, so a client dripping the
  body of a 1 GB Content-Length, or just finishing it, held the connection for ever, unauthenticated;
- an answer that ends the connection (`Connection: close`, e.g. a 413 for a declared length over the
  limit) while the request's body is still coming: the socket is not closed at once, because closing it
  with unread bytes makes the kernel send a reset, which can destroy the answer before the client reads
  it (the client saw `Connection reset by peer` instead of its 413). The connection lingers: what still
  arrives is discarded unparsed, and it closes when the client does or after `LINGER_SECONDS`;
- `listen.limit_concurrency`: uvicorn's own `503` once that many connections or requests are open in
  this process.

This subclasses uvicorn's protocol (its parser callbacks, `data_received` and `send_400_response`),
which is not a public API: pyproject.toml pins the uvicorn minor version it was checked against.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.config import Config, Listen

log = logging.getLogger("aftm.listener")

_REFUSED_431 = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: text/plain; charset=utf-8\r\ncontent-length: 32\r\nconnection: close\r\n\r\n"
                b"Request header fields too large\n")
HEADER_LINE_OVERHEAD = 4  # ": " and CRLF around each header, as they were on the wire
# Where a connection is: reading a request's head, past it (body, app), reading the rest of a body whose
# request was already answered, or idle between kept-alive requests.
_HEAD, _BODY, _DRAIN, _IDLE = "head", "body", "drain", "idle"
LINGER_SECONDS = 5.0  # at most, after an answer that closes the connection before its request's body ended


class _LingeringTransport:
    """The connection's transport as uvicorn sees it: `close()` lingers while a request body is unread."""

    __slots__ = ("_protocol", "_transport")

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def close(self) -> None:
        if not self._protocol.linger():
            self._transport.close()


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop httptools at once; uvicorn turns it into `send_400_response`."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header size and count limits and a header read timeout."""

    limits: ClassVar[Listen] = Listen()  # set per server by `protocol_for`
    # Slots, not instance attributes: uvicorn's protocol already has about 30, and CPython stops sharing
    # an instance dict's keys past 30, which slowed every attribute access of a request by ~15%.
    __slots__ = ("_head_deadline", "_head_size", "_head_timer", "_header_count", "_phase",
                 "_raw_transport", "_received_in_head", "_refused", "lingering")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _HEAD  # the first request's head is due within header_timeout of the connection
        self._received_in_head = 0  # bytes read while in the head: catches one line the parser still buffers
        self._head_size = 0  # exact: each header as the parser reported it, then the URL
        self._header_count = 0
        # One timer per connection, not one per request: it is re-armed only when it fires early.
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_deadline = 0.0
        self._refused = False
        self.lingering = False

    # --- the connection -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw_transport = transport
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        self._arm_head_timer()  # a connection that never sends a byte is a slowloris too

    def linger(self) -> bool:
        """On a close while the current request's body is still arriving: keep reading (and discarding)
        until the client closes or `LINGER_SECONDS` pass, so the answer already written is not reset away.
        False when there is nothing to wait for: the caller closes at once."""
        cycle = self.cycle
        if self.lingering or self._raw_transport.is_closing():
            return self.lingering
        if self._phase not in (_BODY, _DRAIN) or cycle is None or not cycle.more_body:
            return False
        self.lingering = True
        self._cancel_head_timer()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self._raw_transport.close)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self.lingering:
            return
        if self._phase is not _BODY:
            self._received_in_head += len(data)
        super().data_received(data)
        # httptools hands a header over only once its line is complete, so one endless line shows
        # only here, as bytes read without the head completing.
        if self._phase is _HEAD and self._received_in_head > self.limits.max_header_bytes:
            self._refuse_head()

    def send_400_response(self, msg: str) -> None:
        if self._refused:  # our own _HeadTooLarge, surfaced by uvicorn as a parser error
            self._write_431()
            return
        super().send_400_response(msg)

    # --- parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0
        self._header_count = 0
        if self._phase is _IDLE:  # kept alive: the next request's head starts its own clock
            self._arm_head_timer()
        self._phase = _HEAD

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._header_count += 1
        self._head_size += len(name) + len(value) + HEADER_LINE_OVERHEAD
        self._check_head()

    def on_headers_complete(self) -> None:
        self._phase = _BODY  # the timer, if it fires now, finds the head complete and lets it be
        self._head_size += len(self.url)  # a long URL alone is caught by the bytes read in data_received
        self._check_head()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._phase is _DRAIN:  # the answer went out before this body ended: the connection ends too
            self._close("closed a connection after the body of a request it had already answered")
            return
        self._phase = _IDLE  # until the next request's first byte: uvicorn's keep-alive timeout
        self._received_in_head = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle
        # The cycle just answered is still the parser's (a pipelined request would have replaced it) and
        # its body has not ended: the parser discards the rest (uvicorn ignores a body once answered).
        if (self._phase is _BODY and cycle is not None and cycle.response_complete and cycle.more_body
                and not self.transport.is_closing()):
            self._phase = _DRAIN
            self._arm_head_timer()

    # --- limits ---------------------------------------------------------------------------------

    def _check_head(self) -> None:
        if self._head_size > self.limits.max_header_bytes or self._header_count > self.limits.max_headers:
            self._refused = True
            raise _HeadTooLarge

    def _refuse_head(self) -> None:
        self._refused = True
        self._write_431()

    def _write_431(self) -> None:
        self._cancel_head_timer()
        log.debug("refused a request head over the listener's limits from %s", self.client)
        if not self.transport.is_closing():
            self.transport.write(_REFUSED_431)
            self._raw_transport.close()

    def _arm_head_timer(self) -> None:
        self._head_deadline = self.loop.time() + self.limits.header_timeout
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(self._head_deadline, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._phase not in (_HEAD, _DRAIN) or self.transport.is_closing():
            return  # the head arrived; a later request arms the timer again
        if self.loop.time() < self._head_deadline:  # a later request's head: its own deadline
            self._head_timer = self.loop.call_at(self._head_deadline, self._head_timed_out)
            return
        self._close("closed a connection whose request head, or answered body, did not arrive in time")

    def _close(self, why: str) -> None:
        self._cancel_head_timer()
        log.debug("%s: %s", why, self.client)
        self._raw_transport.close()  # also ends a lingering connection: its time is up


def protocol_for(listen: Listen) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, carrying this listener's limits."""
    return type("GatewayHttpProtocol", (GuardedHttpToolsProtocol,), {"limits": listen})


def server_config(app: Any, config: Config, *, host: str | None = None, port: int | None = None,
                  tls: ssl.SSLContext | None = None) -> uvicorn.Config:
    """The uvicorn settings `aftm-gateway serve` runs `app` with (every worker the same)."""
    listen = config.listen
    settings = uvicorn.Config(
        app, host=host or listen.host, port=listen.port if port is None else port,
        http=protocol_for(listen), limit_concurrency=listen.limit_concurrency,
        log_config=None, access_log=False, proxy_headers=False, server_header=False,
        timeout_graceful_shutdown=10,
    )
    if tls is not None:
        # uvicorn builds its SSLContext from files without a floor; it gets ours (TLS 1.2 minimum).
        settings.load()
        settings.ssl = tls
        settings.loaded = True
    return settings
