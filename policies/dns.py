"""How the gateway picks an upstream address from a fresh DNS answer: pure decisions, no I/O.

The gateway resolves the upstream name on every request and never caches an IP (the vendor moves
accounts between pods by DNS, whatever TTL it publishes). Within one request it tries the answered
addresses in order, skipping those that already failed; across requests it stays with the peer it
last reached while that peer is still in the fresh answer, so pooled connections (one pool per
address) keep being reused, and leaves it as soon as the answer drops it.

Names that are IP literals skip DNS. Every other name, `localhost` included, goes to the DNS
servers: /etc/hosts is not read, so tests and production resolve the same way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence


def is_ip_literal(host: str) -> bool:
    """True for `127.0.0.2`, `::1` (brackets allowed): such hosts are connected to as given."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def peer_still_valid(peer: str | None, answer: Sequence[str]) -> bool:
    """True when a pooled connection to `peer` may be reused: the fresh answer still lists it."""
    return peer is not None and peer in answer


def next_address(answer: Sequence[str], *, failed: Collection[str] = (),
                 preferred: str | None = None) -> str | None:
    """The address to try next in this request, or None when every answered address has failed.

    `preferred` is the peer the last successful request reached; it goes first while the answer still
    lists it (its pooled connections stay warm), otherwise the answer's own order decides.
    """
    if peer_still_valid(preferred, answer) and preferred not in failed:
        return preferred
    for address in answer:
        if address not in failed:
            return address
    return None
