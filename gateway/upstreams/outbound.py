"""POSTs to URLs that apps or customers chose (callbacks, FDXML posts): address-checked, pinned, bounded.

The gateway does not choose these URLs, so every POST goes through `OutboundPoster.post`, the one
place that applies the outbound rule (`policies.callbacks`, its module docstring states it):

    parse the URL as httpx will send it      it cannot: OutboundRefused, nothing connected
    resolve the URL's host afresh            gateway.upstreams.resolver (a literal address is its own answer)
    keep the addresses the rule allows       none left: OutboundRefused, nothing connected
    pin the request to the first of them     URL names the address; Host, SNI and the certificate
                                             check keep the name, so no second lookup can swap it
    send through the upstream seam           TLS floor, typed errors, no redirects; the answer read
                                             at most `max_answer_bytes`, raw (asked as identity, a
                                             gzip answer is never inflated), the exchange bounded by
                                             `total_timeout` from connect to the last byte

A receiver's answer is only a status and a snippet worth recording: reading more lets a hostile
receiver grow the process (a 306 KB gzip answer inflated to ~540 MB before this bound), and a
receiver that drips its answer would hold the outbox slot for as long as it liked.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

import httpx

from gateway.errors import OutboundRefused
from gateway.upstreams.resolver import Resolver
from gateway.upstreams.upstream import Upstream, pinned
from policies.callbacks import CallbackPolicy, is_address

MAX_ANSWER_BYTES = 4096  # of a receiver's answer: enough for a status page or error text, not a payload


class OutboundPoster:
    """POSTs to URLs others chose, connecting only to addresses the policy allows."""

    def __init__(self, *, policy: CallbackPolicy, resolver: Resolver, upstream: Upstream,
                 max_answer_bytes: int = MAX_ANSWER_BYTES) -> None:
        self.policy = policy
        self._resolver = resolver
        self._upstream = upstream
        self._max_answer_bytes = max_answer_bytes

    async def post(self, url: str, *, headers: Iterable[tuple[str, str]], content: bytes,
                   total_timeout: float) -> httpx.Response:
        """POST `content` to `url` within `total_timeout` seconds in total; the answer's body is bounded.

        Raises OutboundRefused when the URL cannot be called or its host resolves only to refused
        addresses (resending cannot help), UpstreamError for DNS, connect, TLS and timeout failures
        (resending may).
        """
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL as exc:  # one the callback rule let through (an IDNA host httpx refuses)
            raise OutboundRefused(f"{urlsplit(url).hostname or 'the URL'} cannot be called: {exc}") from exc
        host = target.host
        answer = [host] if is_address(host) else await self._resolver.resolve(host)
        allowed = self.policy.allowed_addresses(answer)
        if not allowed:
            raise OutboundRefused(f"{host} resolves only to refused addresses ({', '.join(answer)}: "
                                  "loopback, link-local, private, metadata or a translation of one)")
        # The caller's own Host header, if any, gives way to the URL's (httpx writes it).
        kept = [(name, value) for name, value in headers if name.lower() != "host"]
        request = pinned(httpx.Request("POST", target, headers=kept, content=content), host, allowed[0])
        return await self._upstream.send(request, max_answer_bytes=self._max_answer_bytes, total_timeout=total_timeout)
