"""Ops endpoints: liveness, readiness, status and the manual failover override."""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

if TYPE_CHECKING:
    from gateway.runtime import Runtime


async def healthz(request: Request) -> Response:
    """The process is up and serving."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the store answers and at least one account is healthy."""
    runtime: Runtime = request.app.state.runtime
    store_ok = await runtime.store_reachable()
    healthy = [name for name, state in runtime.failover.status()["accounts"].items() if state["healthy"]]
    ready = store_ok and bool(healthy)
    return JSONResponse({"ready": ready, "store": store_ok, "healthy_accounts": healthy},
                        status_code=200 if ready else 503)


def _authorized(request: Request, runtime: Runtime) -> Response | None:
    token = runtime.config.admin.token
    if token is None:
        return JSONResponse({"error": "admin endpoints are disabled: set admin.token in the config"}, 403)
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token.reveal()}".encode()):
        return JSONResponse({"error": "admin token required: Authorization: Bearer <admin.token>"}, 401,
                            headers={"WWW-Authenticate": "Bearer"})
    return None


async def status(request: Request) -> Response:
    """Active account, each account's health and breaker state, outbox depth, upstream logins."""
    runtime: Runtime = request.app.state.runtime
    if (denied := _authorized(request, runtime)) is not None:
        return denied
    return JSONResponse(await runtime.status())


async def override(request: Request) -> Response:
    """`POST {"account": NAME}` pins traffic to an account; `{"account": null}` returns to automatic."""
    runtime: Runtime = request.app.state.runtime
    if (denied := _authorized(request, runtime)) is not None:
        return denied
    try:
        body = json.loads(await request.body())
        account = body["account"]
        if account is not None and not isinstance(account, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": 'send {"account": "<name>"} or {"account": null}'}, 400)
    try:
        runtime.note_event(runtime.failover.set_override(account))
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, 400)
    return JSONResponse(runtime.failover.status())
