"""`build_app(config)`: the gateway as an ASGI app, built by composition."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from gateway.config import Config
from gateway.edge import admin, portal, sms_api, targets
from gateway.edge import rest as rest_api
from gateway.edge import soap as soap_api
from gateway.edge.bodies import CLOSE
from gateway.edge.middleware import TelemetryMiddleware
from gateway.edge.refusals import TargetGuard, refusal, under_rest
from gateway.errors import BodyRefused
from gateway.protocols import responsys_rest
from gateway.protocols import responsys_soap as soap
from gateway.runtime import Runtime

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


async def _soap_get(request: Request) -> Response:
    """`GET .../ResponsysWSService?wsdl` is the WSDL; any other GET is not a SOAP call."""
    if "wsdl" in {k.lower() for k in request.query_params}:
        return await soap_api.wsdl(request)
    return soap_api.fault_response(405, code="INVALID_REQUEST", client=True,
                                   message="SOAP calls are POSTed; GET ?wsdl for the WSDL")


async def _body_refused(request: Request, exc: Exception) -> Response:
    """A body over its route's limit or too slow to arrive: refused in the surface's shape, never read on."""
    assert isinstance(exc, BodyRefused)
    as_json = request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"
    return refusal(request.url.path, exc.status, exc.detail, headers=CLOSE, as_json=as_json)


async def _rest_not_found(request: Request) -> Response:
    """`/rest/api` without its slash: the vendor's 404, where Starlette redirected to `http://<Host>/rest/api/`."""
    return rest_api.not_found(request.url.path)


async def _not_found(request: Request, exc: Exception) -> Response:
    """No route: under `/rest/` in any letter case (`/REST/API/...`), the vendor's REST 404 (its paths are
    case-sensitive, so the app learns the call does not exist); elsewhere Starlette's own answer."""
    assert isinstance(exc, HTTPException)
    if under_rest(request.url.path):
        return rest_api.not_found(request.url.path)
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
        return rest_api.not_found(path)
    return rest_api.error(405, "Method not allowed", "INVALID_REQUEST", f"{request.method} is not allowed on {path}",
                          dict(exc.headers or {}))


async def _app_gone(request: Request, exc: Exception) -> Response:
    """The app hung up while sending: nothing was forwarded or queued, and nobody reads this answer."""
    return Response(status_code=499)


def build_app(config: Config, *, runtime: Runtime | None = None) -> Starlette:
    """The gateway app. Its lifespan opens the store, upstream clients and background workers."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        active = runtime or Runtime(config)
        await active.start()
        app.state.runtime = active
        try:
            yield
        finally:
            await active.close()

    routes = [
        Route("/healthz", admin.healthz, methods=["GET"]),
        Route("/readyz", admin.readyz, methods=["GET"]),
        Route("/metrics", admin.metrics, methods=["GET"]),
        Route("/admin/status", admin.status, methods=["GET"]),
        Route("/admin/override", admin.override, methods=["POST"]),
        Route("/rest/api/{version:str}/auth/token", rest_api.login, methods=["POST"]),
        Route("/rest/{family:str}/{rest:path}", rest_api.forward, methods=ALL_METHODS),
        Route("/rest/{family:str}", _rest_not_found, methods=[*ALL_METHODS, "OPTIONS"]),
        Route(soap.SERVICE_PATH, soap_api.service, methods=["POST"]),
        Route(soap.SERVICE_PATH, _soap_get, methods=["GET"]),
        Route(soap.WSDL_PATH, soap_api.wsdl, methods=["GET"]),
        Route("/webservices/{document:path}", soap_api.document, methods=["GET"]),
        *sms_api.routes(),
        *portal.routes(),
    ]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={404: _not_found, 405: _method_not_allowed, ClientDisconnect: _app_gone,
                                         BodyRefused: _body_refused},
                     middleware=[Middleware(TelemetryMiddleware), Middleware(TargetGuard)])
