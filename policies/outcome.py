"""The one vendor-neutral verdict on an upstream answer.

Protocol adapters turn every upstream response (or transport error) into an `Outcome`; policies take
Outcomes and time in and give decisions out. Nothing here knows a vendor.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    OK = "ok"
    SESSION_INVALID = "session_invalid"
    THROTTLED = "throttled"
    ACCOUNT_FAILURE = "account_failure"
    CLIENT_ERROR = "client_error"


class Failure(enum.Enum):
    """Why an account failed a call. Decides failover safety and health accounting."""

    CONNECT = "connect"  # refused, unreachable, reset before the request went out
    TLS = "tls"  # handshake failed: protocol floor, certificate, name
    DNS = "dns"  # the upstream name did not resolve
    CONNECT_TIMEOUT = "connect_timeout"  # no request bytes were sent
    READ_TIMEOUT = "read_timeout"  # request sent, no answer: the upstream may have processed it
    UNAVAILABLE = "unavailable"  # 502/503/504: the upstream did not process the call
    SERVER_ERROR = "server_error"  # other 5xx: may have been processed
    UNRECOVERABLE = "unrecoverable"  # the vendor's UNRECOVERABLE_EXCEPTION: resend once, later

    @property
    def ambiguous(self) -> bool:
        """True when the upstream may have processed the call (a resend might duplicate it)."""
        return self in _AMBIGUOUS


_AMBIGUOUS = frozenset({Failure.READ_TIMEOUT, Failure.SERVER_ERROR, Failure.UNRECOVERABLE})


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    failure: Failure | None = None
    retry_after: float | None = None  # seconds, from Retry-After or the vendor's hint
    detail: str = ""  # short, secret-free reason for logs and spans

    @property
    def ambiguous(self) -> bool:
        return self.failure is not None and self.failure.ambiguous

    @classmethod
    def ok(cls) -> Outcome:
        return _OK

    @classmethod
    def session_invalid(cls, detail: str = "") -> Outcome:
        return cls(Kind.SESSION_INVALID, detail=detail)

    @classmethod
    def throttled(cls, retry_after: float | None = None, detail: str = "") -> Outcome:
        return cls(Kind.THROTTLED, retry_after=retry_after, detail=detail)

    @classmethod
    def account_failure(cls, failure: Failure, detail: str = "") -> Outcome:
        return cls(Kind.ACCOUNT_FAILURE, failure=failure, detail=detail)

    @classmethod
    def client_error(cls, detail: str = "") -> Outcome:
        return cls(Kind.CLIENT_ERROR, detail=detail)


_OK = Outcome(Kind.OK)
