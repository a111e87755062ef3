"""Every request body is read here: bounded in size and in time before any of it is kept.

A handler that calls `request.body()` holds whatever the client sends (one unauthenticated 300 MB
login POST grew the process by ~580 MB), for as long as the client takes to send it (1 byte/s holds
a handler for days). `read_body` refuses a declared Content-Length over the route's limit before
reading a byte, stops a chunked body as soon as it passes the limit, and gives the whole body
`within` seconds to arrive. A refusal raises `BodyRefused`, which the app answers in the surface's own shape
with `Connection: close`, so the server stops reading what the client is still sending.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from gateway.errors import BodyTooLarge, BodyTooSlow

FORM_LIMIT = 16_384  # bytes: a login form or an operator's override, never more
CLOSE = {"Connection": "close"}  # a refused body is not drained: the connection goes with it


async def read_body(request: Request, *, limit: int, within: float) -> bytes:
    """The whole body, at most `limit` bytes, received within `within` seconds; else BodyRefused.

    Raises starlette's ClientDisconnect when the app hangs up mid-body: nothing may be forwarded.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"The request body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(within):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"The request body exceeds {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTooSlow(f"The request body did not arrive within {within:g} seconds") from None
    return b"".join(chunks)
