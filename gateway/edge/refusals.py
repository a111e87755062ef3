"""Refusals at the edge: the request target guard, and every refusal in its surface's own shape.

A check that runs before routing (the target guard) or in every route (the bounded body reader)
refuses in one place, yet each app must get its vendor's error: REST JSON, a SOAP client fault, an
`mtMessageResponse`, or the ops/portal JSON. The shapes themselves stay in their modules.
"""

from __future__ import annotations

import html
import re

from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.edge import rest as rest_api
from gateway.edge import soap as soap_api
from gateway.edge.middleware import route_of
from gateway.errors import UnsafeTarget
from gateway.protocols import sms
from gateway.protocols.targets import target_of

_REST_CODES = {400: "INVALID_REQUEST", 404: "RESOURCE_NOT_FOUND", 408: "REQUEST_TIMEOUT",
               413: "REQUEST_TOO_LARGE"}
_TITLES = {400: "Bad request", 404: "Not found", 408: "Request timeout", 413: "Request too large"}


def under_rest(path: str) -> bool:
    """Whether `path` names the REST surface in any letter case or slashing (`/REST/...`, `//rest`, `/rest`)."""
    return route_of(re.sub("/{2,}", "/", path + "/").lower()) in ("rest", "rest_login")


def refusal(path: str, status: int, detail: str, *, headers: dict[str, str] | None = None,
            as_json: bool = False) -> Response:
    """`status` with `detail` for a request to `path`; `as_json` picks the SMS API's JSON twin."""
    route = route_of(path)
    if under_rest(path):
        return rest_api.error(status, _TITLES.get(status, "Bad request"),
                              _REST_CODES.get(status, "INVALID_REQUEST"), detail, headers)
    if route == "soap":
        code = {413: "REQUEST_TOO_LARGE", 408: "REQUEST_TIMEOUT"}.get(status, "INVALID_REQUEST")
        return soap_api.fault_response(status, code=code, message=detail, client=True, headers=headers)
    if route == "sms":
        return Response(sms.render_error(detail, as_json=as_json), status_code=status, headers=headers,
                        media_type=sms.JSON_TYPE if as_json else sms.XML_TYPE)
    if route == "portal":  # a browser's form post: a page, not JSON
        page = f"<!doctype html><title>{status}</title><p>{html.escape(detail)}</p>"
        return HTMLResponse(page, status_code=status, headers=headers)
    return JSONResponse({"error": detail}, status_code=status, headers=headers)


class TargetGuard:
    """Refuses, before routing, a request whose raw target could name something other than it seems.

    Routing reads the decoded path, where `%2f` is a separator and `%2e%2e` a parent: the raw target
    is checked here once for every surface (gateway.protocols.targets) and refused in that surface's shape.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                target_of(scope)
            except UnsafeTarget as exc:
                await refusal(scope["path"], 400, f"Refused request target: {exc}")(scope, receive, send)
                return
        await self.app(scope, receive, send)
