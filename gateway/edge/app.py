"""`build_app(config)`: the gateway as an ASGI app, built by composition.

The runtime (`gateway.runtime.Runtime`, the composition root) is built first; each surface gets the
parts it uses when its routes are built, and the lifespan starts and stops the runtime. The runtime is
also left on `app.state.runtime` for operators' tools and tests to inspect; no handler reads it.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config import Config
from gateway.edge.admin import AdminApi
from gateway.edge.bodies import CLOSE
from gateway.edge.middleware import TelemetryMiddleware
from gateway.edge.portal import Portal
from gateway.edge.refusals import TargetGuard, refusal, under_rest
from gateway.edge.rest import RestApi, error, not_found
from gateway.edge.sms_api import SmsApi
from gateway.edge.soap import SoapApi
from gateway.edge.surface import Surface
from gateway.errors import BodyRefused
from gateway.protocols import responsys_rest, targets
from gateway.runtime import Runtime


async def _body_refused(request: Request, exc: Exception) -> Response:
    """A body over its route's limit or too slow to arrive: refused in the surface's shape, never read on."""
    assert isinstance(exc, BodyRefused)
    as_json = request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"
    return refusal(request.url.path, exc.status, exc.detail, headers=CLOSE, as_json=as_json)


async def _not_found(request: Request, exc: Exception) -> Response:
    """No route: under `/rest/` in any letter case (`/REST/API/...`), the vendor's REST 404 (its paths are
    case-sensitive, so the app learns the call does not exist); elsewhere Starlette's own answer."""
    assert isinstance(exc, HTTPException)
    if under_rest(request.url.path):
        return not_found(request.url.path)
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    """A method no route takes (OPTIONS, TRACE): under `/rest/`, the vendor's 404 for a path the REST route
    would refuse as not the vendor's (another spelling of one), else its error shape with `Allow`."""
    assert isinstance(exc, HTTPException)
    if not under_rest(request.url.path):
        return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
    target = targets.target_of(request.scope)  # checked by the target guard before routing
    path = target.partition("?")[0]
    if responsys_rest.API_PATH.match(path) is None or responsys_rest.in_another_spelling(target):
        return not_found(path)
    return error(405, "Method not allowed", "INVALID_REQUEST", f"{request.method} is not allowed on {path}",
                 dict(exc.headers or {}))


async def _app_gone(request: Request, exc: Exception) -> Response:
    """The app hung up while sending: nothing was forwarded or queued, and nobody reads this answer."""
    return Response(status_code=499)


Handler = Callable[[Request, Exception], Awaitable[Response]]


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own answer to an HTTPException that no status handler takes (its ExceptionMiddleware's)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in {204, 304}:
        return Response(status_code=exc.status_code, headers=exc.headers)
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)


class RestRoutes:
    """The REST routes, answered ahead of Starlette's router: the sends' path, kept short.

    It sits inside the telemetry middleware and the target guard, so every request still gets its
    server span, latency metric and raw-target check, and inside Starlette's ServerErrorMiddleware (an
    unhandled error is still a logged 500). A request that fully matches one of the REST routes (the
    same `Route` objects, first full match wins, as in the router) runs that route's endpoint here, and an
    exception it raises gets the app's own handler (a refused body, an app that hung up), looked up as
    Starlette's ExceptionMiddleware does. Anything else (another surface, a method no route takes: 405,
    a path no route takes: the vendor's 404) goes on to Starlette unchanged.

    What it saves per call is Starlette's routing and its two exception-handling wrappers with their
    Request objects: 544 -> 483 µs of CPU per send, +12% req/s (bench.ab, same run; BENCHMARKS.md).
    """

    def __init__(self, app: ASGIApp, *, routes: Sequence[Route], handlers: Mapping[int | type[Exception], Handler],
                 prefix: str = "/rest/") -> None:
        self.app = app
        self._prefix = prefix
        self._routes = [route for route in routes if route.path.startswith(prefix)]
        for route in routes:  # the router's first full match must be one of these for every path under prefix
            assert route in self._routes or not route.path.startswith(("/{", prefix.rstrip("/"))), route.path
        for route in self._routes:  # each runs as request_response would run it: an async endpoint
            assert inspect.iscoroutinefunction(route.endpoint), route.path
        self._status_handlers = {key: value for key, value in handlers.items() if isinstance(key, int)}
        self._handlers: dict[type[Exception], Handler] = {HTTPException: _http_exception}
        self._handlers.update((key, value) for key, value in handlers.items() if not isinstance(key, int))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("root_path") or not scope["path"].startswith(self._prefix):
            await self.app(scope, receive, send)
            return
        for route in self._routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                break
        else:
            await self.app(scope, receive, send)  # 405 or the vendor's 404, as Starlette answers them
            return
        request = Request(scope, receive, send)
        try:
            response: Response = await route.endpoint(request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
            exc.__traceback__ = None  # as Starlette: a reused exception would collect tracebacks
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Handler | None:
        if isinstance(exc, HTTPException) and (handler := self._status_handlers.get(exc.status_code)):
            return handler
        for cls in type(exc).__mro__:
            if cls in self._handlers:
                return self._handlers[cls]
        return None


def routes(runtime: Runtime) -> list[BaseRoute]:
    """Every route of the gateway, each surface built with the runtime's parts it uses."""
    config = runtime.config
    surface = Surface(public_url=config.public_url, credentials=runtime.credentials,
                      certificates=runtime.app_certificates, metrics=runtime.telemetry.metrics,
                      reports=runtime.reports, max_body_bytes=config.requests.max_body_bytes,
                      body_timeout=config.requests.body_timeout)
    admin = AdminApi(surface=surface, token=config.admin.token, accounts=runtime.cluster,
                     sms_upstreams=runtime.sms_cluster, store=lambda: runtime.store,
                     upstream_logins={"rest": runtime.rest_sessions.logins, "soap": runtime.soap_sessions.logins})
    return [
        *admin.routes(),
        *RestApi(surface=surface, sends=runtime.sends, dialect=runtime.rest_dialect).routes(),
        *SoapApi(surface=surface, sends=runtime.sends, dialect=runtime.soap_dialect,
                 documents=runtime.documents).routes(),
        *SmsApi(surface=surface, service=runtime.sms).routes(),
        *Portal(surface=surface, store=runtime.require_store).routes(),
    ]


def build_app(config: Config, *, runtime: Runtime | None = None) -> Starlette:
    """The gateway app. Its lifespan opens the store, upstream clients and background workers."""
    active = runtime or Runtime(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await active.start()
        try:
            yield
        finally:
            await active.close()

    handlers: dict[int | type[Exception], Handler] = {404: _not_found, 405: _method_not_allowed,
                                                      ClientDisconnect: _app_gone, BodyRefused: _body_refused}
    every_route = routes(active)
    app = Starlette(routes=every_route, lifespan=lifespan, exception_handlers=handlers,
                    middleware=[Middleware(TelemetryMiddleware, telemetry=active.telemetry),
                                Middleware(TargetGuard),
                                Middleware(RestRoutes, routes=[r for r in every_route if isinstance(r, Route)],
                                           handlers=handlers)])
    app.state.runtime = active
    return app
