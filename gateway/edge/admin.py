"""Ops endpoints: liveness, readiness, metrics, status and the manual failover override."""

from __future__ import annotations

import contextlib
import hmac
import time
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.edge.bodies import FORM_LIMIT
from gateway.protocols.inputs import loads_json

if TYPE_CHECKING:
    from gateway.runtime import Runtime


async def healthz(request: Request) -> Response:
    """The process is up and serving."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the store answers: then every send is either forwarded or durably queued.

    Account health is reported, not required: with every account down a ready replica still accepts
    sends into the outbox (202), which is better than no replica taking them at all.
    """
    runtime: Runtime = request.app.state.runtime
    store_ok = await runtime.store_reachable()
    healthy = [name for name, state in runtime.failover.status()["accounts"].items() if state["healthy"]]
    ready = store_ok
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
        body = loads_json(await runtime.read_body(request, limit=FORM_LIMIT))
        account = body["account"]
        if account is not None and not isinstance(account, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": 'send {"account": "<name>"} or {"account": null}'}, 400)
    try:
        runtime.cluster.set_override(account)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, 400)
    return JSONResponse(runtime.failover.status())


async def metrics(request: Request) -> Response:
    """Prometheus exposition of this process's counters; gauges read the shared state at scrape time."""
    runtime: Runtime = request.app.state.runtime
    gauges = runtime.telemetry.metrics
    active = runtime.failover.active
    for account in runtime.accounts:
        gauges.active.labels(account.name).set(1 if account.name == active else 0)
    if runtime.store is not None:
        # When the store is down (readyz says so) the gauges keep their last values.
        with contextlib.suppress(Exception):
            gauges.outbox_depth.set(await runtime.store.depth())
            gauges.outbox_oldest.set(await runtime.store.oldest_pending_age(time.time()) or 0.0)
    return Response(gauges.render(), media_type=CONTENT_TYPE_LATEST)
