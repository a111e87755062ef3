"""Pure ASGI middleware: a server span and a latency observation for every app request."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.telemetry.otel import Telemetry

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
    """Wraps each HTTP request in a server span (continuing the app's traceparent) and times it."""

    def __init__(self, app: ASGIApp, *, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_of(scope["path"])
        telemetry = self.telemetry
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
