"""The fault-control API: JSON over HTTP on its own port, so it answers while the account refuses.

    GET  /health                      {"ok": true, "account": ...}
    GET  /mode | POST /mode           {"mode": "ok" | "refuse" | "http503" | "hang" | "reset"}
    POST /invalidate                  every REST token and SOAP session stops working
    POST /throttle                    {"count": N, "status": 429, "retry_after": "5"}
    POST /unrecoverable               {"count": N}
    POST /latency                     {"ms": N}
    GET  /deliveries | DELETE /deliveries
    GET  /stats
    POST /reset                       everything back to default
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway_tools.simulator.state import AccountState, Mode


class ControlTarget(Protocol):
    """What the control API drives: the account state plus the listener, which only the server owns."""

    state: AccountState

    async def change_mode(self, mode: Mode) -> None: ...

    async def reset_async(self) -> None: ...


class _BadControl(ValueError):
    pass


def build_control_app(target: ControlTarget) -> Starlette:
    control = _Control(target)
    return Starlette(routes=[
        Route("/health", control.health, methods=["GET"]),
        Route("/mode", control.mode, methods=["GET", "POST", "PUT"]),
        Route("/invalidate", control.invalidate, methods=["POST"]),
        Route("/throttle", control.throttle, methods=["POST"]),
        Route("/unrecoverable", control.unrecoverable, methods=["POST"]),
        Route("/latency", control.latency, methods=["POST"]),
        Route("/deliveries", control.deliveries, methods=["GET", "DELETE"]),
        Route("/stats", control.stats, methods=["GET"]),
        Route("/reset", control.reset, methods=["POST"]),
    ], exception_handlers={_BadControl: _bad_control})


async def _bad_control(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=400)


class _Control:
    def __init__(self, target: ControlTarget) -> None:
        self._target = target
        self._state = target.state

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True, "account": self._state.name})

    async def mode(self, request: Request) -> Response:
        if request.method != "GET":
            body = await _body(request)
            try:
                mode = Mode(body.get("mode"))
            except ValueError:
                raise _BadControl("mode must be one of " + ", ".join(m.value for m in Mode)) from None
            await self._target.change_mode(mode)
        return JSONResponse({"mode": self._state.mode.value})

    async def invalidate(self, request: Request) -> Response:
        self._state.invalidate()
        return JSONResponse({"invalidated": True})

    async def throttle(self, request: Request) -> Response:
        body = await _body(request)
        retry_after = body.get("retry_after")
        self._state.throttle(_count(body, "count"), status=_count(body, "status", default=429),
                             retry_after=None if retry_after is None else str(retry_after))
        return JSONResponse({"throttled": body.get("count")})

    async def unrecoverable(self, request: Request) -> Response:
        count = _count(await _body(request), "count")
        self._state.fail_unrecoverably(count)
        return JSONResponse({"unrecoverable": count})

    async def latency(self, request: Request) -> Response:
        milliseconds = _count(await _body(request), "ms")
        self._state.set_latency(milliseconds)
        return JSONResponse({"latency_ms": milliseconds})

    async def deliveries(self, request: Request) -> Response:
        if request.method == "DELETE":
            self._state.clear_deliveries()
        return JSONResponse([delivery.as_json() for delivery in self._state.deliveries()])

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self._state.stats())

    async def reset(self, request: Request) -> Response:
        await self._target.reset_async()
        return JSONResponse(self._state.stats())


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise _BadControl("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise _BadControl("the body must be a JSON object")
    return body


def _count(body: dict[str, Any], key: str, *, default: int | None = None) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _BadControl(f"{key} must be a non-negative integer")
    return value
