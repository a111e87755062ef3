"""Ops endpoints: liveness, readiness, metrics, status and the manual failover override."""

from __future__ import annotations

import contextlib
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.config import Account, Secret, SmsUpstream
from gateway.edge.bodies import FORM_LIMIT
from gateway.edge.surface import Surface
from gateway.protocols.inputs import loads_json
from gateway.store import Store
from gateway.upstreams.cluster import Cluster


class AdminApi:
    """The ops routes: what they report is read from the parts given here, never looked up per request."""

    def __init__(self, *, surface: Surface, token: Secret | None, accounts: Cluster[Account],
                 sms_upstreams: Cluster[SmsUpstream] | None, store: Callable[[], Store | None],
                 upstream_logins: Mapping[str, Mapping[str, int]]) -> None:
        """`store()` is the open store or None (before start, after close); `upstream_logins` by protocol."""
        self._surface = surface
        self._token = token
        self._accounts = accounts
        self._sms_upstreams = sms_upstreams
        self._store = store
        self._logins = upstream_logins

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/admin/status", self.status, methods=["GET"]),
            Route("/admin/override", self.override, methods=["POST"]),
        ]

    async def healthz(self, request: Request) -> Response:
        """The process is up and serving."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Ready when the store answers: then every send is either forwarded or durably queued.

        Account health is reported, not required: with every account down a ready replica still accepts
        sends into the outbox (202), which is better than no replica taking them at all.
        """
        store_ok = await self._store_reachable()
        healthy = [name for name, state in self._accounts.status()["accounts"].items() if state["healthy"]]
        ready = store_ok
        return JSONResponse({"ready": ready, "store": store_ok, "healthy_accounts": healthy},
                            status_code=200 if ready else 503)

    async def _store_reachable(self) -> bool:
        store = self._store()
        if store is None:
            return False
        try:
            await store.ping()
        except Exception:  # any failure to reach the store means "not ready"
            return False
        return True

    def _authorized(self, request: Request) -> Response | None:
        if self._token is None:
            return JSONResponse({"error": "admin endpoints are disabled: set admin.token in the config"}, 403)
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self._token.reveal()}".encode()):
            return JSONResponse({"error": "admin token required: Authorization: Bearer <admin.token>"}, 401,
                                headers={"WWW-Authenticate": "Bearer"})
        return None

    async def status(self, request: Request) -> Response:
        """Active account, each account's health and breaker state, outbox depth, upstream logins."""
        if (denied := self._authorized(request)) is not None:
            return denied
        return JSONResponse(await self._status())

    async def _status(self) -> dict[str, Any]:
        store = self._store()
        if store is None:
            raise RuntimeError("the gateway is not started")
        accounts, sms = self._accounts, self._sms_upstreams
        return {
            "active": accounts.active,
            "switches": dict(accounts.switches),
            "failover": accounts.status(),
            "outbox": {"depth": await store.depth(), "oldest_pending_age": await store.oldest_pending_age(time.time())},
            "rate_limits_per_minute": {n: round(b.rate_per_second * 60, 3) for n, b in accounts.buckets.items()},
            "upstream_logins": {protocol: dict(logins) for protocol, logins in self._logins.items()},
            **({"sms_upstreams": sms.status()} if sms is not None else {}),
        }

    async def override(self, request: Request) -> Response:
        """`POST {"account": NAME}` pins traffic to an account; `{"account": null}` returns to automatic."""
        if (denied := self._authorized(request)) is not None:
            return denied
        try:
            body = loads_json(await self._surface.read_body(request, limit=FORM_LIMIT))
            account = body["account"]
            if account is not None and not isinstance(account, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'send {"account": "<name>"} or {"account": null}'}, 400)
        try:
            self._accounts.set_override(account)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse(self._accounts.status())

    async def metrics(self, request: Request) -> Response:
        """Prometheus exposition of this process's counters; gauges read the shared state at scrape time."""
        gauges = self._surface.metrics
        active = self._accounts.active
        for account in self._accounts.members:
            gauges.active.labels(account.name).set(1 if account.name == active else 0)
        store = self._store()
        if store is not None:
            # When the store is down (readyz says so) the gauges keep their last values.
            with contextlib.suppress(Exception):
                gauges.outbox_depth.set(await store.depth())
                gauges.outbox_oldest.set(await store.oldest_pending_age(time.time()) or 0.0)
        return Response(gauges.render(), media_type=CONTENT_TYPE_LATEST)
