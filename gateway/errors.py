"""The gateway's exception tree, written down once.

    GatewayError
    └── UpstreamError                 the call to an account did not produce an HTTP answer
        ├── UpstreamUnreachable       no request bytes sent (DNS, connect refused, connect timeout)
        │   ├── DNSFailure            the name did not resolve
        │   └── TLSRefused            handshake failed (protocol floor, certificate, name)
        ├── UpstreamAmbiguous         request sent, answer lost (read timeout, reset mid-answer)
        └── LoginRefused              the account's upstream login was refused or unreadable
            └── LoginThrottled        the login itself was throttled (wait, do not fail over)
    └── OutboundRefused               a URL an app or customer chose leads only to refused addresses

Library errors (httpx, httpcore, ssl, dnspython) are translated to these at one boundary,
`gateway.upstreams.upstream`. Each carries the `policies.outcome.Failure` it means, so callers branch on
data, not on exception types of libraries.
"""

from __future__ import annotations

from policies.outcome import Failure


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class UpstreamError(GatewayError):
    failure: Failure = Failure.CONNECT

    def __init__(self, message: str, *, failure: Failure | None = None, address: str | None = None) -> None:
        super().__init__(message)
        if failure is not None:
            self.failure = failure
        self.address = address


class UpstreamUnreachable(UpstreamError):
    failure = Failure.CONNECT


class DNSFailure(UpstreamUnreachable):
    failure = Failure.DNS


class TLSRefused(UpstreamUnreachable):
    failure = Failure.TLS


class UpstreamAmbiguous(UpstreamError):
    failure = Failure.READ_TIMEOUT


class OutboundRefused(GatewayError):
    """Every address of an app's or customer's URL is one `policies.callbacks` refuses; nothing was sent."""


class LoginRefused(UpstreamError):
    """The upstream refused the account's credentials or answered the login unexpectedly.

    Nothing was sent for the app's call, so it may go to another account.
    """

    failure = Failure.UNAVAILABLE


class LoginThrottled(LoginRefused):
    """The upstream throttled the login call; the account is healthy, the caller should wait."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def login_failure(what: str, *, status: int, code: str | None, throttled: bool,
                  retry_after: float | None) -> LoginRefused:
    """The error for a refused upstream login: throttled (wait) or refused (try another account)."""
    reason = code or f"HTTP {status}"
    if throttled or status == 429:
        return LoginThrottled(f"{what} throttled: {reason}", retry_after=retry_after)
    return LoginRefused(f"{what} refused: {reason}")


class ConfigError(GatewayError):
    """The configuration is invalid; `problems` lists every `key: why`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
