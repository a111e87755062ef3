"""POSTs to URLs others chose, on real sockets: hostile receivers on loopback (raw asyncio servers).

A receiver that answers with a gzip bomb, one that drips its answer, one that never answers: the
gateway reads a few KB raw and hangs up, and gives up on the whole POST at its total timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from gateway.core.outbox import Delivered, FailedPermanently, Retry
from gateway.delivery.callbacks import CallbackPoster
from gateway.store import OutboxItem
from gateway.upstreams.resolver import DNSResolver
from gateway.upstreams.upstream import Upstream
from gateway_tools.loopback_dns import LoopbackDNS
from policies.callbacks import CallbackPolicy
from tests.support.servers import async_wait_until

MakeUpstream = Callable[..., Upstream]
BODY_BYTES = 48 * 1024 * 1024  # far more than loopback socket buffers hold, so a reader that stops shows
CAP = 16 * 1024 * 1024  # what "did not read the body" allows for: the gateway's cap plus kernel buffers


@dataclass
class Receiver:
    """A raw HTTP/1.1 receiver: reads one request, then lets `answer` write; records what happened."""

    answer: Callable[[asyncio.StreamWriter, Receiver], Awaitable[None]]
    request_head: bytes = b""
    sent: int = 0  # answer bytes the receiver's socket accepted before the peer hung up
    hung_up_after: float | None = None  # seconds from the request to the peer's hang-up
    started: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.request_head = head
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            self.started = time.monotonic()
            await self.answer(writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.hung_up_after = time.monotonic() - self.started
        finally:
            self.done.set()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def header(self, name: str) -> str | None:
        for line in self.request_head.decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name:
                return value.strip()
        return None


@contextlib.asynccontextmanager
async def receiving(answer: Callable[[asyncio.StreamWriter, Receiver], Awaitable[None]]
                    ) -> AsyncIterator[tuple[Receiver, int]]:
    receiver = Receiver(answer)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    try:
        yield receiver, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):  # a handler still answering ends with the test's loop
            await asyncio.wait_for(server.wait_closed(), timeout=5)


def gzip_stream(total: int) -> tuple[bytes, bytes, int]:
    """A gzip body of about `total` bytes that inflates to as much: its head, a block to repeat, the count.

    Random data after a full flush deflates to the same stored block every time, so one 1 MB block
    repeated makes a body of any size without compressing it all (its trailer is left off: whoever
    inflates it finds out only at the end, after having read it all).
    """
    block = os.urandom(1024 * 1024)
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    head = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeat = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    return head, repeat, total // len(repeat)


async def gzip_answer(writer: asyncio.StreamWriter, receiver: Receiver) -> None:
    head, repeat, count = gzip_stream(BODY_BYTES)
    length = len(head) + len(repeat) * count
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\n"
                 b"Content-Length: %d\r\n\r\n" % length)
    for chunk in (head, *[repeat] * count):
        writer.write(chunk)
        await writer.drain()  # raises once the gateway has hung up
        receiver.sent += len(chunk)


def dripping(*, status_line_too: bool) -> Callable[[asyncio.StreamWriter, Receiver], Awaitable[None]]:
    """A receiver that sends its answer a byte every 0.2 s: each read succeeds well within any read timeout."""

    async def answer(writer: asyncio.StreamWriter, receiver: Receiver) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
        if not status_line_too:
            writer.write(head)
        for byte in (head if status_line_too else b"") + b"x" * 100_000:
            writer.write(bytes([byte]))
            await writer.drain()
            receiver.sent += 1
            await asyncio.sleep(0.2)  # the drip rate, not a synchronisation
            if writer.transport.is_closing():
                raise ConnectionResetError("the gateway hung up")

    return answer


@pytest.fixture
async def poster(make_upstream: MakeUpstream,
                 dns_server: LoopbackDNS) -> AsyncIterator[Callable[..., CallbackPoster]]:
    resolvers: list[DNSResolver] = []

    def build(timeout: float = 1.0, allow: tuple[str, ...] = ("127.0.0.0/8",)) -> CallbackPoster:
        resolver = DNSResolver(nameservers=[dns_server.nameserver], port=dns_server.port, timeout=1.0)
        resolvers.append(resolver)
        return CallbackPoster(policy=CallbackPolicy.from_config(allow), resolver=resolver,
                              upstream=make_upstream(read_timeout=timeout), timeout=timeout)

    yield build
    for resolver in resolvers:
        await resolver.close()


def callback(url: str) -> OutboxItem:
    return OutboxItem.new(protocol="callback", method="POST", path=url,
                          headers=[("content-type", "application/xml")], body=b"<mtMessageResponse/>",
                          client="app", now=time.time(), max_age=60.0)


async def test_a_gzip_bomb_answer_is_read_only_to_the_cap_raw_and_the_connection_dropped(
        poster: Callable[..., CallbackPoster]) -> None:
    async with receiving(gzip_answer) as (receiver, port):
        result = await poster(timeout=10.0).post(callback(f"http://127.0.0.1:{port}/cb"))
        await asyncio.wait_for(receiver.done.wait(), timeout=10)
    assert receiver.header("accept-encoding") == "identity"
    assert isinstance(result, Delivered) and result.status_code == 200
    assert result.body.startswith(b"\x1f\x8b")  # what was kept is the raw gzip, never inflated
    assert receiver.hung_up_after is not None, "the gateway read the whole answer"
    assert receiver.sent < CAP, f"the receiver got {receiver.sent} bytes of its answer out"


@pytest.mark.parametrize("status_line_too", [False, True], ids=["drips-body", "drips-status-line"])
async def test_a_receiver_dripping_its_answer_is_cut_at_the_total_timeout(
        poster: Callable[..., CallbackPoster], status_line_too: bool) -> None:
    async with receiving(dripping(status_line_too=status_line_too)) as (receiver, port):
        started = time.monotonic()
        result = await asyncio.wait_for(poster(timeout=1.0).post(callback(f"http://127.0.0.1:{port}/cb")),
                                        timeout=10)
        elapsed = time.monotonic() - started
        await async_wait_until(lambda: receiver.hung_up_after is not None, timeout=5,
                               message="the receiver to see the gateway hang up")
    assert isinstance(result, Retry) and "within 1s" in result.error
    assert elapsed < 1.8, f"the POST held its slot for {elapsed:.1f}s with a 1 s timeout"


async def test_a_callback_url_the_rule_accepts_but_httpx_cannot_call_fails_for_good(
        poster: Callable[..., CallbackPoster]) -> None:
    url = "http://ex\u00e4mple..test/cb"  # an empty IDNA label: urlsplit reads it, httpx refuses it
    built = poster()
    assert built.policy.check_callback_url(url) == "ex\u00e4mple..test"
    result = await built.post(callback(url))
    assert isinstance(result, FailedPermanently) and "cannot be called" in result.reason
