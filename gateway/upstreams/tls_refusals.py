"""Reading an ssl error from an upstream exchange: is it the upstream refusing our TLS, and in what words.

Shared by the inner transports (`gateway.upstreams.transport`, `gateway.upstreams.httpx_transport`),
each of which translates its own library's errors and asks here only about the ssl error behind them.
"""

from __future__ import annotations

import ssl

from gateway.errors import TLSRefused, upstream_name

# OpenSSL reasons that mean "the peer's highest protocol is below our TLS 1.2 floor".
_BELOW_FLOOR = frozenset({"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE"})


def ssl_error_in(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind a library's wrapper (chained as __cause__ or __context__), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def is_handshake_refusal(error: ssl.SSLError) -> bool:
    """An ssl error on a connection already open that still means the handshake was refused.

    With TLS 1.3 the server checks our client certificate after our side of the handshake is done,
    so its refusal arrives as an alert on the first read. It never processed the request.
    """
    if isinstance(error, ssl.SSLCertVerificationError):
        return True
    reason = getattr(error, "reason", None) or ""
    return "ALERT" in reason and any(word in reason for word in ("CERTIFICATE", "UNKNOWN_CA", "HANDSHAKE"))


def tls_refused(error: ssl.SSLError | None, *, host: str, address: str | None, sent_nothing: bool) -> TLSRefused:
    """The refusal `error` means; None: the upstream closed the connection during the handshake."""
    where = upstream_name(host, address)
    reason = getattr(error, "reason", None) or ""
    if reason in _BELOW_FLOOR:
        why = f"the upstream offered a protocol below TLS 1.2 ({reason})"
    elif isinstance(error, ssl.SSLCertVerificationError):
        why = f"its certificate failed verification ({error.verify_message})"
    elif error is None or isinstance(error, ssl.SSLEOFError) or reason == "UNEXPECTED_EOF_WHILE_READING":
        # Servers on asyncio (and some balancers) drop the connection without sending their alert.
        why = ("the upstream closed the connection during the handshake "
               "(it may accept only TLS below 1.2, or not our certificate)")
    else:
        why = reason or str(error)
    return TLSRefused(f"TLS refused by {where}: {why}", address=address, sent_nothing=sent_nothing)
