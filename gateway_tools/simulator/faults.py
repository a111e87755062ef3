"""The fault gate: a pure ASGI wrapper that makes the account misbehave on request.

It sits outside the API app so that every answer, REST or SOAP, passes through it:
- `hang`: the request is read and held until the mode changes (a vendor node that stopped answering);
- `reset`: the request is read and the TCP connection is aborted with no answer, as the vendor's
  gateway does when it drops a request (the client sees a reset / SocketException);
- `http503`: every call answers 503 (the vendor's load balancer with no healthy node);
- injected throttling (API_LIMIT_EXCEEDED, 429 by default, optional Retry-After) and
  UNRECOVERABLE_EXCEPTION (500, "wait about 30 seconds and resubmit once") for the next N calls;
- added latency; and the per-status call counts of `stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway_tools.simulator import wire
from gateway_tools.simulator.soap import SERVICE_PATH, WSDL_PATH
from gateway_tools.simulator.state import AccountState, InjectedFault, Mode

logger = logging.getLogger(__name__)

_HANG_POLL = 0.02  # seconds between looks at the mode while a request is held


class FaultGate:
    def __init__(self, app: ASGIApp, *, state: AccountState) -> None:
        self._app = app
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        # The target exactly as it was on the request line (uvicorn keeps the raw bytes apart).
        query = scope.get("query_string", b"")
        self._state.note_received(scope["method"], scope.get("raw_path", b"") + (b"?" + query if query else b""))
        # The mode is changed from other threads (tests, the control loop); a lock-guarded value polled
        # here is the one signal every caller can reach.
        if self._state.mode is Mode.HANG:
            self._state.hold(1)
            try:
                while self._state.mode is Mode.HANG:  # noqa: ASYNC110
                    await asyncio.sleep(_HANG_POLL)
            finally:
                self._state.hold(-1)
        mode = self._state.mode
        if mode in (Mode.RESET, Mode.REFUSE):
            # REFUSE only reaches here on a connection accepted just before the listener closed.
            await _drop_connection(receive, send)
            return
        counting_send = self._counting(send)
        latency = self._state.latency_ms
        # A SOAP call's latency is spent inside its session (see soap.py), where strict mode can see it.
        if latency and not _is_soap_call(scope):
            await asyncio.sleep(latency / 1000)
        if mode is Mode.HTTP503:
            await _unavailable(scope)(scope, receive, counting_send)
            return
        if not _is_document_fetch(scope) and not _is_health_probe(scope):
            fault = self._state.take_fault()
            if fault is not None:
                await _injected(scope, fault)(scope, receive, counting_send)
                return
        await self._app(scope, receive, counting_send)

    def _counting(self, send: Send) -> Send:
        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._state.count_status(int(message["status"]))
            await send(message)

        return counting_send


def _is_soap(scope: Scope) -> bool:
    return str(scope["path"]).startswith("/webservices/")


def _is_soap_call(scope: Scope) -> bool:
    return bool(scope["method"] == "POST" and scope["path"] == SERVICE_PATH)


def _is_health_probe(scope: Scope) -> bool:
    """A GET of the login URL is how a gateway checks reachability; it is no API call, so injected
    per-call faults (throttle, unrecoverable) are kept for the calls a test counts."""
    return scope["method"] == "GET" and str(scope["path"]).endswith("/auth/token")


def _is_document_fetch(scope: Scope) -> bool:
    """A GET of the WSDL or a document it references (schemas): no API call, so it takes no per-call fault.
    A gateway refreshes these in the background; counting them let a refresh eat a test's throttled calls."""
    return scope["method"] == "GET" and (scope["path"] in (WSDL_PATH, SERVICE_PATH)
                                         or str(scope["path"]).startswith("/webservices/"))


def _unavailable(scope: Scope) -> Response:
    detail = "The service is temporarily unavailable"
    if _is_soap(scope):
        return wire.soap_fault(fault="UnexpectedErrorFault", code="UNEXPECTED_EXCEPTION", message=detail,
                               status=503)
    return wire.rest_error(wire.SERVICE_UNAVAILABLE, detail)


def _injected(scope: Scope, fault: InjectedFault) -> Response:
    headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
    if fault.kind == "throttle":
        detail = "API request rate exceeded the limit for this account"
        if _is_soap(scope):
            return wire.soap_fault(fault="UnexpectedErrorFault", code="API_LIMIT_EXCEEDED", message=detail,
                                   status=fault.status, headers=headers)
        return wire.rest_error(wire.API_LIMIT_EXCEEDED, detail, status=fault.status, headers=headers)
    detail = "An unrecoverable error occurred; resubmit the request once after about 30 seconds"
    if _is_soap(scope):
        return wire.soap_fault(fault="UnrecoverableErrorFault", code="UNRECOVERABLE_EXCEPTION", message=detail)
    return wire.rest_error(wire.UNRECOVERABLE, detail)


async def _drop_connection(receive: Receive, send: Send) -> None:
    """Read the whole request, then abort the TCP connection without a byte of answer.

    ASGI has no "drop the connection" message; uvicorn's `send` is a bound method of its
    request/response cycle, which owns the asyncio transport, so the abort goes there.
    """
    message: dict[str, Any] = {"more_body": True}
    while message.get("more_body"):
        message = dict(await receive())
        if message["type"] == "http.disconnect":
            return
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        logger.warning("cannot reach the transport to drop the connection; answering 500 instead")
        return
    transport.abort()
    # Wait for uvicorn to notice the loss, so it does not try to answer on the dead connection.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(receive(), timeout=1.0)
