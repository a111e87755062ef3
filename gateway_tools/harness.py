"""uvicorn on loopback for the tests, the drill, the simulators and bench: one way to start and stop it.

    free_port()     a port free right now, for a child process that must be told its port before it binds
    bind_socket()   a listening TCP socket on an address (port 0: ephemeral), closed again if binding fails
    Listener        uvicorn serving one app on the running loop; `stop()`, then `start()` again on the same port
    LoopThread      a coroutine serving on its own event loop in a daemon thread, so the caller's loop (or
                    a test with none) never shares a loop with the code it measures
    ServerThread    a Listener in a LoopThread
    stop_process()  a child process's end: SIGTERM, a grace period, SIGKILL only past it

uvicorn's own signal handling stays off unless asked for (the owner decides when a server stops), and
so does its log configuration (`log_config=None` by default: it would replace the host process's
handlers). Readiness is uvicorn's `started`, awaited as an event, never polled with sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Self

import uvicorn

__all__ = ["Listener", "LoopThread", "ServerThread", "bind_socket", "free_port", "stop_process"]

START_TIMEOUT = 15.0
# What every harness server shares unless the caller says otherwise: no per-request access lines, and
# the host process's logging left alone.
_DEFAULTS: dict[str, Any] = {"access_log": False, "log_config": None}


def free_port(host: str = "127.0.0.1", *, kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port with nothing bound to it right now (`kind` SOCK_DGRAM: for UDP, e.g. a DNS server that is down)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[Any], *, grace: float) -> bool:
    """SIGTERM `process` and wait `grace` seconds, then SIGKILL it; True when it ended by itself (or had ended)."""
    if process.poll() is not None:
        return True
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        return False
    return True


def bind_socket(host: str = "127.0.0.1", port: int = 0, *, backlog: int = 128) -> socket.socket:
    """A listening TCP socket on `host:port`, inheritable (a child process may serve it); closed if binding fails."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn with an event set once it serves (lifespan started, socket open); its signal capture optional."""

    def __init__(self, config: uvicorn.Config, *, capture_signals: bool) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()
        self._capture_signals = capture_signals

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if self._capture_signals:
            with super().capture_signals():
                yield
        else:
            yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set()


class Listener:
    """uvicorn serving `app` on the running event loop, on `sock` or a socket it binds on `host:port`.

    Keyword `settings` are `uvicorn.Config`'s (`lifespan`, `timeout_graceful_shutdown`, ...), over the
    harness defaults; `config` runs a ready-made `uvicorn.Config` instead (e.g. the one `serve` builds).
    `ssl_context` is used as-is for the listener (uvicorn would build its own from files, without the
    caller's version caps). After `stop()`, `start()` binds the same port again. `capture_signals`: on
    the main thread, SIGINT/SIGTERM shut the server down gracefully and are raised again after (a process
    that is only this server, such as the demo).
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None,
                 ssl_context: ssl.SSLContext | None = None, config: uvicorn.Config | None = None,
                 capture_signals: bool = False, **settings: Any) -> None:
        if config is not None and settings:
            raise TypeError(f"give either a uvicorn config or its settings, not both: {sorted(settings)}")
        self.app = app
        self.host = host
        self._sock = sock
        self.port: int = sock.getsockname()[1] if sock is not None else port
        self.ssl_context = ssl_context
        self._config = config
        self._settings = {**_DEFAULTS, **settings}
        self._capture_signals = capture_signals
        self.server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def sock(self) -> socket.socket | None:
        return self._sock

    @property
    def running(self) -> bool:
        return self._task is not None

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    async def start(self) -> None:
        """Serve; return once the server accepts connections. RuntimeError (from its cause) otherwise."""
        if self._sock is None:
            self._sock = bind_socket(self.host, self.port)
        self.port = self._sock.getsockname()[1]
        server = _Server(self._uvicorn_config(), capture_signals=self._capture_signals)
        task = asyncio.create_task(server.serve(sockets=[self._sock]), name=f"uvicorn {self.url}")
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait({task, ready}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        await asyncio.wait({ready})
        if not server.started:
            task.cancel()
            cause = await _outcome(task)
            self._close_socket()
            raise RuntimeError(f"server on {self.url} failed to start") from cause
        self.server, self._task = server, task

    async def stop(self) -> None:
        """Ask the server to exit (graceful shutdown within its timeout), wait for it, close the socket."""
        if self.server is not None:
            self.server.should_exit = True
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the server exits (another thread may have set `server.should_exit`), then close the socket."""
        try:
            if self._task is not None:
                await self._task
        finally:
            self._task = None
            self._close_socket()

    def _uvicorn_config(self) -> uvicorn.Config:
        config = self._config or uvicorn.Config(self.app, **self._settings)
        if self.ssl_context is not None:
            config.load()
            config.ssl = self.ssl_context
            config.loaded = True
        return config

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


async def _outcome(task: asyncio.Task[None]) -> BaseException | None:
    """What a failed or cancelled serve task raised, for the startup error's cause."""
    try:
        await task
    except asyncio.CancelledError:
        return None
    except BaseException as exc:  # uvicorn may sys.exit() on a startup error; it is the cause, not ours
        return exc
    return None


class LoopThread:
    """`main(ready)` on a new event loop in a daemon thread: how a server runs beside a caller's loop.

    `main` calls `ready()` once it serves, then runs until its owner tells it to stop (by its own means:
    an event set through `call_soon`, a flag). What `main` raises before `ready()` is the cause of the
    RuntimeError `start()` raises. Use each instance once.
    """

    def __init__(self, main: Callable[[Callable[[], None]], Awaitable[None]], *, name: str) -> None:
        self._main = main
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._serving = False
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self, *, timeout: float = START_TIMEOUT) -> None:
        """Start the thread; return once `main` is ready, or raise RuntimeError."""
        self._thread.start()
        self._ready.wait(timeout)
        self._check_started()

    async def start_async(self) -> None:
        """`start()` without blocking the caller's loop (which may have to answer `main` meanwhile)."""
        self._thread.start()
        await asyncio.to_thread(self._ready.wait, START_TIMEOUT)
        self._check_started()

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run `callback` on the thread's loop soon; nothing once that loop has closed."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback)

    def join(self, timeout: float = START_TIMEOUT) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._enter())
        except BaseException as exc:  # reported by start(); a thread has nowhere else to put it
            self._failure = exc
        finally:
            self._ready.set()  # also when it failed or ended: start() must not wait out its timeout

    async def _enter(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self._main(self._mark_ready)

    def _mark_ready(self) -> None:
        self._serving = True
        self._ready.set()

    def _check_started(self) -> None:
        if not self._serving or self._failure is not None:
            raise RuntimeError(f"{self._thread.name} failed to start") from self._failure


class ServerThread:
    """A `Listener` on its own event loop in a daemon thread (a `LoopThread`); takes the Listener's arguments.

    Binds at once (the port is known before `start()`, e.g. for the app's public URL). `start()` waits
    for readiness blocking; `start_async()` waits without blocking the caller's loop (which may have to
    answer the server meanwhile, e.g. a DNS responder on it). Use each instance once.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None,
                 name: str = "uvicorn", **listener: Any) -> None:
        self.listener = Listener(app, host=host, sock=sock if sock is not None else bind_socket(host, port),
                                 **listener)
        self.app = app
        self.host = host
        self.port = self.listener.port
        self._runner = LoopThread(self._serve, name=f"{name}-{self.port}")

    @property
    def server(self) -> uvicorn.Server:
        assert self.listener.server is not None, "the server has not started"
        return self.listener.server

    @property
    def scheme(self) -> str:
        return self.listener.scheme

    @property
    def url(self) -> str:
        return self.listener.url

    async def _serve(self, ready: Callable[[], None]) -> None:
        await self.listener.start()
        ready()
        await self.listener.wait_closed()  # until stop() sets should_exit from the caller's thread

    def start(self) -> Self:
        try:
            self._runner.start()
        except RuntimeError:
            self.stop()
            raise
        return self

    async def start_async(self) -> Self:
        try:
            await self._runner.start_async()
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self, *, timeout: float = START_TIMEOUT) -> None:
        server = self.listener.server
        if server is not None:
            server.should_exit = True  # uvicorn's main loop looks at it every 0.1 s
        self._runner.join(timeout)
        sock = self.listener.sock
        if sock is not None and not self._runner.alive:  # never started, or stopped before it served
            sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
