"""One simulated Responsys account: its API listener, its control listener, and their lifecycle.

`SimulatedAccount` owns the account state, the API app (REST + SOAP behind the fault gate) and the
control app, each served by uvicorn on its own pre-bound socket. The API listener can be closed and
reopened on the same port (mode `refuse`), which is why the account, not uvicorn's runner, owns it.

Two ways to run it:
- in-process (tests): `with SimulatedAccount(...) as account:` runs both listeners on a background
  thread's event loop; the plain methods (`set_mode`, `throttle`, `invalidate`, ...) are thread-safe;
- as a process: `await run_simulator(...)` (the `aftm-gateway simulate` command) serves until
  SIGINT/SIGTERM on the caller's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
import warnings
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp

from gateway_tools.harness import START_TIMEOUT, Listener, LoopThread
from gateway_tools.simulator.control import build_control_app
from gateway_tools.simulator.faults import FaultGate
from gateway_tools.simulator.rest import build_rest_routes
from gateway_tools.simulator.soap import build_soap_routes
from gateway_tools.simulator.state import AccountState, Delivery, Mode

logger = logging.getLogger(__name__)
T = TypeVar("T")

_TLS_VERSIONS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1, "1.2": ssl.TLSVersion.TLSv1_2,
                 "1.3": ssl.TLSVersion.TLSv1_3}


def build_api_app(state: AccountState) -> ASGIApp:
    """The account's API (REST and SOAP routes) behind the fault gate."""
    return FaultGate(Starlette(routes=[*build_rest_routes(state), *build_soap_routes(state)]), state=state)


def tls_context(*, cert: str, key: str | None = None,
                max_version: ssl.TLSVersion | str | None = None) -> ssl.SSLContext:
    """A listener context from PEM files, optionally capped at a TLS version.

    A cap below TLS 1.2 simulates a neglected upstream: OpenSSL 3 refuses TLS 1.0/1.1 at its default
    security level and Python warns when they are chosen, so both are lowered deliberately here.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    version = _TLS_VERSIONS[max_version] if isinstance(max_version, str) else max_version
    if version is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if version < ssl.TLSVersion.TLSv1_2:
                context.minimum_version = ssl.TLSVersion.TLSv1
                context.set_ciphers("DEFAULT:@SECLEVEL=0")
            context.maximum_version = version
    return context


def _listener(app: ASGIApp, *, host: str, port: int, ssl_context: ssl.SSLContext | None) -> Listener:
    """One of the account's listeners: no lifespan, warnings only, 1 s to finish requests on stop."""
    return Listener(app, host=host, port=port, ssl_context=ssl_context, lifespan="off", log_level="warning",
                    timeout_graceful_shutdown=1)


class SimulatedAccount:
    """A Responsys account for tests, the demo and the drill: REST + SOAP API, plus fault control."""

    def __init__(self, *, name: str, user_name: str, password: str | None, host: str = "127.0.0.1", port: int = 0,
                 control_port: int = 0, secondary: bool = False, tls_cert: str | None = None,
                 tls_key: str | None = None, tls_max_version: ssl.TLSVersion | str | None = None,
                 ssl_context: ssl.SSLContext | None = None, token_lifetime: float = 7200.0,
                 session_idle_timeout: float = 7200.0, max_sessions: int = 100, strict_sessions: bool = True,
                 client_certificate: str | None = None, server_key: str | None = None,
                 server_certificate: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 build_api: Callable[[AccountState], ASGIApp] = build_api_app,
                 control_routes: Sequence[BaseRoute] = ()) -> None:
        self.state = AccountState(name=name, user_name=user_name, password=password, secondary=secondary,
                                  token_lifetime=token_lifetime, session_idle_timeout=session_idle_timeout,
                                  max_sessions=max_sessions, strict_sessions=strict_sessions,
                                  client_certificate=client_certificate, server_key=server_key,
                                  server_certificate=server_certificate, clock=clock)
        if ssl_context is None and tls_cert is not None:
            ssl_context = tls_context(cert=tls_cert, key=tls_key, max_version=tls_max_version)
        self._tls = ssl_context is not None
        # Another simulated vendor (the SMS aggregator) brings its own API and control routes, and
        # keeps this lifecycle, the fault gate's modes and the common control API.
        self.api_app = build_api(self.state)
        control = build_control_app(self)
        self.control_app = Starlette(routes=[*control_routes, Mount("", app=control)]) if control_routes else control
        self._api = _listener(self.api_app, host=host, port=port, ssl_context=ssl_context)
        self._control = _listener(self.control_app, host=host, port=control_port, ssl_context=None)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: LoopThread | None = None

    # --- addresses -------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def port(self) -> int:
        return self._api.port

    @property
    def control_port(self) -> int:
        return self._control.port

    @property
    def url(self) -> str:
        """The API origin, e.g. `https://127.0.0.1:8443` (the login endPoint a client will see)."""
        return f"{'https' if self._tls else 'http'}://{_host_for_url(self._api.host)}:{self.port}"

    @property
    def server_certificate(self) -> str | None:
        """The PEM certificate an API user downloads to check this account in a certificate login."""
        return self.state.certificates.server_certificate

    @property
    def control_url(self) -> str:
        return f"http://{_host_for_url(self._control.host)}:{self.control_port}"

    # --- async lifecycle (on the account's own loop) -------------------------------------------------

    async def serve_forever(self, ready: Callable[[], None] | None = None) -> None:
        """Open both listeners and serve until `request_stop()`; always closes them on the way out.

        `ready`, when given, is called once both listeners accept connections.
        """
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self._control.start()
            await self._api.start()
            logger.info("simulated account %s: API %s, control %s, user %s%s", self.name, self.url,
                        self.control_url, self.state.user_name, " (secondary)" if self.state.secondary else "")
            if ready is not None:
                ready()
            await self._stop.wait()
        finally:
            await asyncio.gather(self._api.stop(), self._control.stop())

    def request_stop(self) -> None:
        """Ask the serving loop to stop; a no-op once it has stopped (so stop() may be called twice)."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)

    async def change_mode(self, mode: Mode) -> None:
        """Switch the account's mode; `refuse` closes the API listener, leaving it reopens on the same port."""
        if mode is Mode.REFUSE:
            self.state.set_mode(mode)
            await self._api.stop()
            return
        if not self._api.running and self._loop is not None:
            await self._api.start()
        self.state.set_mode(mode)

    async def reset_async(self) -> None:
        await self.change_mode(Mode.OK)
        self.state.reset()

    # --- threaded lifecycle (in-process tests) -------------------------------------------------------

    def start(self) -> SimulatedAccount:
        """Serve on a background thread; returns once both listeners accept connections."""
        self._thread = LoopThread(self.serve_forever, name=f"simulated account {self.name}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> SimulatedAccount:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- fault control as plain, thread-safe methods ---------------------------------------------------

    def set_mode(self, mode: Mode | str) -> None:
        self._on_loop(self.change_mode(Mode(mode)))

    def reset(self) -> None:
        self._on_loop(self.reset_async())

    def invalidate(self) -> None:
        self.state.invalidate()

    def throttle(self, count: int, *, status: int = 429, retry_after: str | None = None) -> None:
        self.state.throttle(count, status=status, retry_after=retry_after)

    def unrecoverable(self, count: int) -> None:
        self.state.fail_unrecoverably(count)

    def latency(self, milliseconds: int) -> None:
        self.state.set_latency(milliseconds)

    def deliveries(self) -> list[Delivery]:
        return self.state.deliveries()

    def received(self) -> list[tuple[str, bytes]]:
        """(method, raw request target) of every API request the account received."""
        return self.state.received()

    def forwarded(self) -> list[bytes]:
        """Raw targets of every request but its logins, login probes and WSDL/schema fetches (the gateway's own)."""
        return [target for _method, target in self.state.received()
                if not target.endswith(b"/auth/token") and target != b"/webservices/wsdl/ResponsysWS_Level1.wsdl"
                and b"/_resources_/" not in target]

    def clear_deliveries(self) -> None:
        self.state.clear_deliveries()

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def set_wsdl(self, template: bytes | None) -> None:
        self.state.set_wsdl(template)

    def set_schema(self, name: str, document: bytes | None) -> None:
        """Serve `document` at `.../_resources_/xsd/<name>` (replacing the packaged one; None: 404)."""
        self.state.set_schema(name, document)

    def _on_loop(self, work: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        if loop is None or not loop.is_running():
            work.close()
            raise RuntimeError(f"simulated account {self.name} is not running")
        if _running_loop() is loop:
            work.close()
            raise RuntimeError("on the simulator's own loop, await change_mode()/reset_async() instead")
        return asyncio.run_coroutine_threadsafe(work, loop).result(timeout=START_TIMEOUT)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def run_simulator(*, host: str, port: int, control_port: int, name: str, user_name: str,
                        password: str | None, tls_cert: str | None = None, tls_key: str | None = None,
                        tls_max_version: str | None = None, secondary: bool = False,
                        client_certificate: str | None = None, server_key: str | None = None,
                        server_certificate: str | None = None) -> None:
    """Serve one simulated account until SIGINT or SIGTERM (the `aftm-gateway simulate` command)."""
    account = SimulatedAccount(name=name, user_name=user_name, password=password, host=host, port=port,
                               control_port=control_port, secondary=secondary, tls_cert=tls_cert,
                               tls_key=tls_key, tls_max_version=tls_max_version,
                               client_certificate=client_certificate, server_key=server_key,
                               server_certificate=server_certificate)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, account.request_stop)
    await account.serve_forever()
