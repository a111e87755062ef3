"""The gateway's exceptions: one tree, drawn once. Under each class: where it is raised -> who answers it.

    GatewayError                      every error the gateway raises on purpose
    ├── ConfigError                   the configuration is invalid; `.problems` lists `key: why`
    │                                 gateway.config, store.sqlite_path -> cli prints each problem, exits 2
    ├── PemError (ValueError)         a PEM that is not an RSA key or certificate
    │                                 protocols.rsa_challenge -> gateway.config adds it to a ConfigError
    ├── UpstreamError                 a call to an upstream got no HTTP answer: `.failure` is the Failure it
    │   │                             means, `.address` the address tried, `.sent_nothing` true when no
    │   │                             request byte was written (the call may try the next answered address)
    │   │                             upstreams.transport, upstreams.httpx_transport, upstreams.upstream
    │   │                             -> core.loop makes it Outcome.account_failure(.failure); health probes,
    │   │                             edge.soap.fetch_document (next account), delivery (retry the item)
    │   │                             As itself: a request no client will encode (Failure.CONNECT)
    │   ├── UpstreamUnreachable       the upstream never got the call: refused, unreachable, connect or pool
    │   │   │                         timeout (CONNECT, CONNECT_TIMEOUT): safe to fail over; also raised by
    │   │   │                         upstreams.sessions (no free SOAP session in time)
    │   │   ├── DNSFailure            the name did not resolve (DNS)      upstreams.resolver
    │   │   └── TLSRefused            the handshake failed: protocol floor, certificate, name (TLS)
    │   │                             upstreams.tls_refusals, for either inner transport
    │   ├── UpstreamAmbiguous         the request left and no whole answer came back: read timeout, close
    │   │                             or reset mid-answer, an undecodable answer (READ_TIMEOUT); a resend
    │   │                             might duplicate the call
    │   └── LoginRefused              the account's upstream login was refused or unreadable (UNAVAILABLE)
    │       │                         protocols.responsys_rest/soap (`login_failure`), upstreams.sessions
    │       │                         -> core.loop (the next account)
    │       └── LoginThrottled        the login itself was throttled: wait `.retry_after`, do not fail over
    │                                 -> core.loop makes it Outcome.throttled
    ├── OutboundRefused               a URL an app or customer chose cannot be called, or leads only to
    │                                 refused addresses; nothing was sent       upstreams.outbound
    │                                 -> delivery.callbacks (fails for good), reporting.poster (backlog waits)
    ├── StoreError                    the store could not do what was asked: down, busy, closed, refused
    │   │                             store.sqlite, store.postgres -> edge routes answer 503 or a fault in
    │   │                             their shape; cli prints it (exit 1); workers retry next round
    │   ├── ItemNotFound              no outbox item has that id (dropped, purged, never enqueued)
    │   │                             -> core.outbox (nothing left to finish)
    │   ├── LeaseLost                 the caller's lease expired and another worker holds the item
    │   │                             -> core.outbox (the other worker finishes it)
    │   └── StoreUnavailable          a call's key could not be claimed or its send queued: nothing was
    │                                 accepted     core.sends -> edge.rest (503), edge.soap (server fault)
    └── RequestError                  the app's request is refused, answered in its surface's own shape
        │                             (REST JSON error, SOAP client fault, mtMessageResponse, portal page),
        │                             never a 500; nothing was sent upstream for it
        ├── BodyRefused               the body was not read whole, on purpose; `.status` 400
        │   │                         edge.bodies.read_body -> edge.app's handler (edge.refusals.refusal)
        │   ├── BodyTooLarge          over the route's limit; 413
        │   └── BodyTooSlow           not all there in time; 408
        ├── UnsafeTarget (ValueError) the raw request target could leave the API it names
        │                             edge.targets -> edge.refusals.TargetGuard, edge.rest, edge.soap (400)
        ├── BadInput (ValueError)     a value the gateway will not use: JSON, number, header, key, filter
        │                             edge.inputs, edge.correlation, core.idempotency.key_of
        │                             -> edge.rest, edge.soap, edge.admin (400), edge.portal (as BadFilter)
        ├── KeyReused                 an Idempotency-Key reused for a different request
        │                             core.idempotency, through core.sends -> REST 422, SOAP client fault
        ├── KeyInFlight               the same Idempotency-Key is still being sent (here or on a replica);
        │                             `.retry_after`  core.sends -> REST 429 API_LIMIT_EXCEEDED, SOAP fault
        ├── CertificateRefused        an app's certificate login refused; `.code` is the vendor's
        │                             edge.app_certificates -> edge.rest (400/401), edge.soap (a fault)
        ├── TooManyFailedLogins       too many failed logins from one source; `.retry_after`
        │                             edge.clients -> edge.rest, soap, sms_api, portal: 429 or the vendor's
        │                             API_LIMIT_EXCEEDED, with Retry-After
        ├── XmlRefused (ValueError)   bytes the one XML parser refuses: not well-formed, unknown charset, a
        │                             DOCTYPE (lxml's errors are translated there) protocols.xml.parse_untrusted
        │                             -> the adapters reread it as BadEnvelope / BadMessage
        ├── BadEnvelope (ValueError)  XML that is not a SOAP envelope the gateway reads
        │                             protocols.responsys_soap -> edge.soap (400 client fault); an
        │                             upstream's unreadable answer is classified by its adapter instead
        ├── BadMessage (ValueError)   not a readable mtMessage or receipt (app), or answer (aggregator)
        │                             protocols.sms -> edge.sms_api (400); core.dialects.sms (no message id)
        ├── InvalidMessage (ValueError) an mtMessage that breaks one of this gateway's rules
        │                             delivery.service.submit -> edge.sms_api (400)
        └── ReceiptRefused            a receipt URL the gateway never handed out
                                      delivery.service.take_receipt -> edge.sms_api (404)

Foreign exceptions are translated once, where the library is called, most chained to the original
(`raise ... from exc`; never where the original may quote a secret, as a store URL's password):

    aiohttp, asyncio, ssl, socket    upstreams.transport._translated (the default inner transport)
    httpx, httpcore                  upstreams.httpx_transport (the optional inner transport); httpx's
                                     Response decoding an answer: upstreams.upstream (UpstreamAmbiguous)
    httpx.InvalidURL                 upstreams.outbound, for URLs someone else chose -> OutboundRefused
    dnspython                        upstreams.resolver -> DNSFailure
    sqlite3 (through aiosqlite), OS  store.sqlite: _translated, _driver_errors at open -> StoreError
    asyncpg, OS, TimeoutError        store.postgres: _translated, and at open (messages scrubbed of the
                                     URL's password) -> StoreError
    lxml                             protocols.responsys_soap.parse_xml -> BadEnvelope
    cryptography                     protocols.rsa_challenge -> PemError
    policies.callbacks's CallbackRefused (policies import nothing of the gateway)
                                     delivery.service.submit -> InvalidMessage

Callers branch on these classes and on `.failure` (data), never on a library's exception types. The
classes live here, not beside their raisers, so core and protocols raise BadInput or BadEnvelope without
importing the edge, and so a test can hold this drawing to the code (tests/unit/test_errors.py).
"""

from __future__ import annotations

from policies.outcome import Failure


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is invalid; `problems` lists every `key: why`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class PemError(GatewayError, ValueError):
    """A PEM that is not an RSA private key or an RSA certificate; the message says which."""


# --- upstream calls ------------------------------------------------------------------------------------


class UpstreamError(GatewayError):
    """A call to an upstream got no HTTP answer; `failure` says what that means for failover.

    `sent_nothing`: no byte of the request was written (the connection failed to open, or no pooled
    connection came free), so the same request may go to another address of the same name.
    """

    failure: Failure = Failure.CONNECT

    def __init__(self, message: str, *, failure: Failure | None = None, address: str | None = None,
                 sent_nothing: bool = False) -> None:
        super().__init__(message)
        if failure is not None:
            self.failure = failure
        self.address = address
        self.sent_nothing = sent_nothing


class UpstreamUnreachable(UpstreamError):
    failure = Failure.CONNECT


class DNSFailure(UpstreamUnreachable):
    failure = Failure.DNS


class TLSRefused(UpstreamUnreachable):
    failure = Failure.TLS


class UpstreamAmbiguous(UpstreamError):
    failure = Failure.READ_TIMEOUT


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


def upstream_name(host: str, address: str | None) -> str:
    """How messages name an upstream: its host, and the address tried when that is not the host itself."""
    return host if address in (None, host) else f"{host} ({address})"


class OutboundRefused(GatewayError):
    """A URL an app or customer chose is unusable, or every address it has is one `policies.callbacks`
    refuses; nothing was sent."""


# --- the store -----------------------------------------------------------------------------------------


class StoreError(GatewayError):
    """The store refused or could not do what was asked."""


class StoreUnavailable(StoreError):
    """The store could not claim the key or queue the send: nothing was accepted, the app may retry."""

    def __init__(self) -> None:
        super().__init__("the gateway's store is unavailable")


class ItemNotFound(StoreError):
    """No outbox item has this id."""


class LeaseLost(StoreError):
    """The caller's lease on the item expired and another worker holds it (or it is finished)."""


# --- refused app requests ------------------------------------------------------------------------------


class RequestError(GatewayError):
    """The app's request is refused; the surface answers in its vendor's shape, never with a 500."""


class BodyRefused(RequestError):
    """The body was not read to the end on purpose; `status` and `detail` are the app's answer."""

    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BodyTooLarge(BodyRefused):
    status = 413


class BodyTooSlow(BodyRefused):
    status = 408


class UnsafeTarget(RequestError, ValueError):
    """The app's request target could leave the API it names; the message says why (no secrets in it)."""


class BadInput(RequestError, ValueError):
    """The app sent a value the gateway will not use; the message is a sentence for the app."""


class KeyReused(RequestError):
    """The app reused an Idempotency-Key for a different request; nothing was sent for this one."""

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used for a different request; "
                         "use a new key for a new send, or repeat the first request unchanged")



class KeyInFlight(RequestError):
    """A request with the same Idempotency-Key is still being sent; its answer is not known yet."""

    retry_after = 1.0

    def __init__(self) -> None:
        super().__init__("a request with this Idempotency-Key is still in flight; retry shortly")

class CertificateRefused(RequestError):
    """The login is refused; `code` is the vendor's (INVALID_PARAMETER or AUTHENTICATION_FAILED)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TooManyFailedLogins(RequestError):
    """Too many failed logins from this source for this name (or too many logins waiting): retry later."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"login throttled; retry after {retry_after:.0f}s")
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        return str(max(1, round(self.retry_after)))


class XmlRefused(RequestError, ValueError):
    """Bytes `protocols.xml.parse_untrusted` refuses; the message says why, fit for the sender."""


class BadEnvelope(RequestError, ValueError):
    """The app sent something that is not a SOAP 1.1 envelope the gateway can read."""


class BadMessage(RequestError, ValueError):
    """The app (or an upstream) sent something that is not a readable mtMessage / mtMessageResponse."""


class InvalidMessage(RequestError, ValueError):
    """The app's message breaks a rule; the text says which, for the app's error answer."""


class ReceiptRefused(RequestError):
    """The receipt URL is not one the gateway handed out (unknown message or wrong token)."""
