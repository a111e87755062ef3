"""Pure ASGI middleware: a server span and a latency observation for every app request."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.runtime import Runtime

# Low-cardinality route names for span names and metric labels, by path prefix (first match wins).
ROUTES = (
    ("/rest/api/", "rest"), ("/rest/", "rest"), ("/webservices/", "soap"), ("/sms/", "sms"),
    ("/portal/", "portal"), ("/api/", "api"), ("/admin/", "admin"),
)


def route_of(path: str) -> str:
    if path in ("/healthz", "/readyz", "/metrics"):
        return path[1:]
    for prefix, name in ROUTES:
        if path.startswith(prefix):
            return "rest_login" if name == "rest" and path.endswith("/auth/token") else name
    return "other"


class TelemetryMiddleware:
    """Wraps each HTTP request in the runtime's server span (continuing the app's traceparent)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime: Runtime | None = getattr(scope["app"].state, "runtime", None) if "app" in scope else None
        if scope["type"] != "http" or runtime is None:
            await self.app(scope, receive, send)
            return
        route = route_of(scope["path"])
        telemetry = runtime.telemetry
        status = 500  # what the app got if the handler raised before answering
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if not telemetry.tracing:  # no collector: no span to build, latency only
                await self.app(scope, receive, send_with_status)
                return
            headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
            with telemetry.server(f"{scope['method']} {route}", headers) as span:
                try:
                    await self.app(scope, receive, send_with_status)
                finally:
                    span.set_attribute("http.request.method", scope["method"])
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)
        finally:
            telemetry.metrics.request_seconds.labels(route, f"{status // 100}xx").observe(
                time.perf_counter() - started)
