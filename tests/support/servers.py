"""Real servers for tests: uvicorn in a thread on an ephemeral loopback port (`gateway_tools.harness`), torn down after.

Waiting is always on a condition with a deadline, never a bare sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import httpx
import uvicorn
from uvicorn.config import LOGGING_CONFIG

from gateway_tools import harness
from gateway_tools.harness import bind_socket, free_port, stop_process

__all__ = ["ServerThread", "answers", "async_wait_until", "bind_socket", "free_port", "serve", "stop_process",
           "wait_until"]


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


def answers(url: str, *, timeout: float = 5.0) -> bool:
    """True when a GET of `url` answers 200; False while nothing listens there yet (a starting process)."""
    try:
        return httpx.get(url, trust_env=False, timeout=timeout).status_code == 200
    except httpx.TransportError:
        return False


# Tests keep uvicorn's own log configuration (its loggers do not propagate to the root logger, so
# caplog sees the gateway's records only), warnings only, and a 2 s graceful shutdown.
_TEST_SETTINGS: dict[str, Any] = {"log_level": "warning", "log_config": LOGGING_CONFIG, "timeout_graceful_shutdown": 2}


class ServerThread(harness.ServerThread):
    """The harness's uvicorn-in-a-thread with the tests' settings; see `gateway_tools.harness.Listener`.

    `ssl_context`, when given, is used as-is for the listener (so a test can cap the TLS version);
    `settings`, when given, are the uvicorn settings to run instead (e.g. the ones `serve` builds).
    """

    def __init__(self, app: Any, *, lifespan: Literal["auto", "on", "off"] = "auto",
                 settings: uvicorn.Config | None = None, **options: Any) -> None:
        if settings is None:
            options = {**_TEST_SETTINGS, "lifespan": lifespan, **options}
        super().__init__(app, config=settings, **options)


@contextlib.contextmanager
def serve(app: Any, **kwargs: Any) -> Iterator[ServerThread]:
    with ServerThread(app, **kwargs) as server:
        yield server

