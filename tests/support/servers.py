"""Real servers for tests: uvicorn in a thread on an ephemeral loopback port, torn down after.

Waiting is always on a condition with a deadline, never a bare sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import uvicorn


def wait_until(condition: Callable[[], bool], *, timeout: float = 10.0, interval: float = 0.01,
               message: str = "condition") -> None:
    """Poll `condition` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


async def async_wait_until(condition: Callable[[], bool], *, timeout: float = 10.0, interval: float = 0.01,
                           message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class ServerThread:
    """Runs an ASGI app under uvicorn in a background thread with its own event loop.

    `ssl_context`, when given, is used as-is for the listener (so a test can cap the TLS version);
    `settings`, when given, are the uvicorn settings to run instead (e.g. the ones `serve` builds).
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None, lifespan: Literal["auto", "on", "off"] = "auto",
                 sock: socket.socket | None = None, settings: uvicorn.Config | None = None) -> None:
        self.app = app
        self.host = host
        self.ssl_context = ssl_context
        # A caller that must know the port before building the app (its public URL) binds first.
        self.sock = sock if sock is not None else bind_socket(host, port)
        self.port: int = self.sock.getsockname()[1]
        config = settings or uvicorn.Config(app, lifespan=lifespan, log_level="warning", access_log=False,
                                            timeout_graceful_shutdown=2)
        if ssl_context is not None:
            # uvicorn builds its own SSLContext from files; we hand it ours through `load()`.
            config.load()
            config.ssl = ssl_context
            config.loaded = True
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def start(self) -> ServerThread:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), timeout=15,
                   message=f"server on {self.url} to start")
        if not self.server.started:
            raise RuntimeError(f"server on {self.url} failed to start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serve(app: Any, **kwargs: Any) -> Iterator[ServerThread]:
    with ServerThread(app, **kwargs) as server:
        yield server


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now, for a child process that must be told its port before it binds."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
