"""HTTP/1.1 over a bare socket, for requests no well-behaved client would send.

httpx normalises dot segments, re-encodes paths and refuses bad header bytes; hostile-input tests need
the exact bytes on the wire, and to see an answer that arrives before the request body is finished.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass

import h11


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def request_head(method: str, target: bytes, headers: Iterable[tuple[str, str]] = (), *,
                 host: str = "gateway") -> bytes:
    """A request line and headers; `Connection: close` so the answer ends with the connection."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1", f"Host: {host}".encode(), b"Connection: close"]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def read_response(sock: socket.socket, *, method: str = "GET") -> RawResponse:
    """Read one response (head and body) from `sock`; `method` says whether a body follows (HEAD: none)."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))  # let h11 expect a response
    conn.send(h11.EndOfMessage())
    status, headers, body = 0, {}, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return RawResponse(status, headers, bytes(body))


def exchange(url: str, data: bytes, *, timeout: float = 10.0) -> RawResponse:
    """Send `data` (a whole request) to the `http://host:port` in `url` and read the answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock, method=data.split(b" ", 1)[0].decode("ascii", "replace"))
