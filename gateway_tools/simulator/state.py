"""What one simulated Responsys account remembers: credentials, tokens, sessions, faults, deliveries.

Every method is thread-safe: the listeners run on the simulator's event loop while tests drive the
fault controls from their own thread. Time comes from an injectable clock.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from gateway_tools.simulator.certificates import CertificateLogin

Protocol = Literal["rest", "soap"]


class Mode(enum.Enum):
    OK = "ok"
    REFUSE = "refuse"    # the listener is closed: connections are refused
    HTTP503 = "http503"  # every call answers 503
    HANG = "hang"        # requests are read and never answered while the mode lasts
    RESET = "reset"      # the connection is closed after the request is read, with no answer


@dataclass(frozen=True, slots=True)
class Delivery:
    """One accepted send, as a test counts it. `recipient` is stable across retries of one send."""

    account: str
    protocol: Protocol
    operation: str
    path: str
    recipient: str
    idempotency_key: str | None
    request_id: str | None
    at: float  # wall-clock seconds
    traceparent: str | None = None  # the W3C trace context the send came with

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class InjectedFault:
    kind: Literal["throttle", "unrecoverable"]
    status: int
    retry_after: str | None = None


@dataclass(slots=True)
class _Session:
    last_used: float
    in_flight: int = 0


@dataclass(slots=True)
class _Faults:
    mode: Mode = Mode.OK
    throttle_left: int = 0
    throttle_status: int = 429
    throttle_retry_after: str | None = None
    unrecoverable_left: int = 0
    latency_ms: int = 0
    held: int = 0  # requests currently held by mode `hang`


@dataclass(slots=True)
class _Stats:
    rest_logins: int = 0
    soap_logins: int = 0
    wsdl_fetches: int = 0
    schema_fetches: int = 0
    calls_by_status: Counter[int] = field(default_factory=Counter)


class AccountState:
    """The account's memory. Keyword-only; defaults mirror the vendor's documented limits."""

    def __init__(self, *, name: str, user_name: str, password: str | None, secondary: bool = False,
                 token_lifetime: float = 7200.0, session_idle_timeout: float = 7200.0,
                 max_sessions: int = 100, strict_sessions: bool = True,
                 client_certificate: str | None = None, server_key: str | None = None,
                 server_certificate: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.user_name = user_name
        self._password = password  # None: a certificate-only API user (password login refused)
        # Certificate login: the API user's uploaded certificate, and the account's own server key pair
        # (made here when not given; `server_certificate` is what the user downloads to check us).
        self.certificates = CertificateLogin(client_certificate=client_certificate, server_key=server_key,
                                             server_certificate=server_certificate, clock=clock,
                                             server_name=f"{name}.simulated-responsys.test")
        self.secondary = secondary
        self.token_lifetime = token_lifetime
        self.session_idle_timeout = session_idle_timeout
        self.max_sessions = max_sessions
        self.strict_sessions = strict_sessions
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        self._sessions: dict[str, _Session] = {}
        self._faults = _Faults()
        self._stats = _Stats()
        self._deliveries: list[Delivery] = []
        # Every API request's method and raw request target, as it arrived on the request line.
        self._received: deque[tuple[str, bytes]] = deque(maxlen=10_000)
        self._members: dict[int, dict[str, str]] = {}
        self._wsdl: bytes | None = None  # a test's replacement for the packaged WSDL
        self._schemas: dict[str, bytes | None] = {}  # a test's schemas by file name (None: not served)

    # --- credentials and REST tokens ------------------------------------------------------------

    def credentials_match(self, user_name: str, password: str) -> bool:
        if self._password is None:
            return False
        return secrets.compare_digest(user_name.encode(), self.user_name.encode()) and \
            secrets.compare_digest(password.encode(), self._password.encode())

    def issue_token(self) -> tuple[str, int]:
        """A new REST token and its issuedAt (epoch ms); counts a REST login."""
        token = secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[token] = self._clock()
            self._stats.rest_logins += 1
        return token, int(self._wall_clock() * 1000)

    def refresh_token(self, token: str) -> tuple[str, int] | None:
        """`auth_type=token`: a fresh token for a live one (the old one stays valid until it expires)."""
        if not self.token_valid(token):
            return None
        new = secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[new] = self._clock()
        return new, int(self._wall_clock() * 1000)

    def token_valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            issued = self._tokens.get(token)
            if issued is None:
                return False
            if self._clock() - issued >= self.token_lifetime:
                del self._tokens[token]
                return False
            return True

    # --- SOAP sessions ---------------------------------------------------------------------------

    def open_session(self) -> str | None:
        """A new SOAP session id, or None when the account already holds `max_sessions` live ones."""
        with self._lock:
            self._expire_sessions()
            if len(self._sessions) >= self.max_sessions:
                return None
            session_id = secrets.token_hex(24)
            self._sessions[session_id] = _Session(last_used=self._clock())
            self._stats.soap_logins += 1
            return session_id

    def begin_session_call(self, session_id: str | None) -> bool:
        """Mark a call on the session; False means INVALID_SESSION_ID.

        Strict mode mirrors the vendor: a session is single-threaded, and a second call arriving
        while one is in flight kills the session for that call and every later one.
        """
        if not session_id:
            return False
        with self._lock:
            self._expire_sessions()
            session = self._sessions.get(session_id)
            if session is None:
                return False
            if session.in_flight and self.strict_sessions:
                del self._sessions[session_id]
                return False
            session.in_flight += 1
            session.last_used = self._clock()
            return True

    def end_session_call(self, session_id: str) -> None:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None:
                session.in_flight = max(0, session.in_flight - 1)
                session.last_used = self._clock()

    def close_session(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def calls_in_flight(self) -> int:
        """SOAP calls currently inside a session (what strict mode watches)."""
        with self._lock:
            return sum(s.in_flight for s in self._sessions.values())

    def live_sessions(self) -> int:
        with self._lock:
            self._expire_sessions()
            return len(self._sessions)

    def _expire_sessions(self) -> None:
        now = self._clock()
        idle = [sid for sid, s in self._sessions.items()
                if not s.in_flight and now - s.last_used >= self.session_idle_timeout]
        for sid in idle:
            del self._sessions[sid]

    # --- fault control ---------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        with self._lock:
            return self._faults.mode

    def set_mode(self, mode: Mode) -> None:
        with self._lock:
            self._faults.mode = mode

    def invalidate(self) -> None:
        """Every REST token and SOAP session stops working at once, as at a vendor failover."""
        with self._lock:
            self._tokens.clear()
            self._sessions.clear()

    def throttle(self, count: int, *, status: int = 429, retry_after: str | None = None) -> None:
        with self._lock:
            self._faults.throttle_left = count
            self._faults.throttle_status = status
            self._faults.throttle_retry_after = retry_after

    def fail_unrecoverably(self, count: int) -> None:
        with self._lock:
            self._faults.unrecoverable_left = count

    def set_latency(self, milliseconds: int) -> None:
        with self._lock:
            self._faults.latency_ms = max(0, milliseconds)

    @property
    def latency_ms(self) -> int:
        with self._lock:
            return self._faults.latency_ms

    def hold(self, delta: int) -> None:
        with self._lock:
            self._faults.held += delta

    def take_fault(self) -> InjectedFault | None:
        """The injected answer for the next API call, if any (consumes one from its count)."""
        with self._lock:
            faults = self._faults
            if faults.throttle_left > 0:
                faults.throttle_left -= 1
                return InjectedFault("throttle", faults.throttle_status, faults.throttle_retry_after)
            if faults.unrecoverable_left > 0:
                faults.unrecoverable_left -= 1
                return InjectedFault("unrecoverable", 500)
            return None

    def reset(self) -> None:
        """Everything back to default: mode ok, no faults, no tokens, sessions, deliveries or stats."""
        with self._lock:
            self._faults = _Faults(held=self._faults.held)
            self._stats = _Stats()
            self._tokens.clear()
            self._sessions.clear()
            self._deliveries.clear()
            self._received.clear()
            self._members.clear()

    # --- recording -------------------------------------------------------------------------------

    def record(self, *, protocol: Protocol, operation: str, path: str, recipient: str,
               idempotency_key: str | None, request_id: str | None, traceparent: str | None = None) -> None:
        delivery = Delivery(account=self.name, protocol=protocol, operation=operation, path=path,
                            recipient=recipient, idempotency_key=idempotency_key, request_id=request_id,
                            at=self._wall_clock(), traceparent=traceparent)
        with self._lock:
            self._deliveries.append(delivery)

    def note_received(self, method: str, target: bytes) -> None:
        with self._lock:
            self._received.append((method, target))

    def received(self) -> list[tuple[str, bytes]]:
        """(method, raw target) of every API request so far, oldest first (the last 10,000)."""
        with self._lock:
            return list(self._received)

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def clear_deliveries(self) -> None:
        with self._lock:
            self._deliveries.clear()

    def fetch_wsdl(self, packaged: bytes) -> bytes:
        """Count a WSDL fetch; the WSDL template to serve (a test's replacement, else `packaged`)."""
        with self._lock:
            self._stats.wsdl_fetches += 1
            return self._wsdl if self._wsdl is not None else packaged

    def set_wsdl(self, template: bytes | None) -> None:
        """Serve `template` as the WSDL from now on (None: the packaged one again)."""
        with self._lock:
            self._wsdl = template

    def fetch_schema(self, name: str, packaged: bytes | None) -> bytes | None:
        """Count a schema fetch; the schema file `name` to serve (a test's, else `packaged`), None if none."""
        with self._lock:
            self._stats.schema_fetches += 1
            return self._schemas[name] if name in self._schemas else packaged

    def set_schema(self, name: str, document: bytes | None) -> None:
        """Serve `document` as the schema file `name` from now on (None: answer 404 for it)."""
        with self._lock:
            self._schemas[name] = document

    def count_status(self, status: int) -> None:
        with self._lock:
            self._stats.calls_by_status[status] += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "account": self.name,
                "mode": self._faults.mode.value,
                "rest_logins": self._stats.rest_logins,
                "soap_logins": self._stats.soap_logins,
                "wsdl_fetches": self._stats.wsdl_fetches,
                "schema_fetches": self._stats.schema_fetches,
                "calls_by_status": {str(k): v for k, v in sorted(self._stats.calls_by_status.items())},
                "live_tokens": len(self._tokens),
                "live_sessions": len(self._sessions),
                "held_requests": self._faults.held,
                "deliveries": len(self._deliveries),
            }

    # --- profile list members (for list-member lookup) ---------------------------------------------

    def remember_member(self, fields: dict[str, str]) -> int:
        """Store (or update) a profile-list member; returns its RIID."""
        given = next((v for k, v in fields.items() if k.upper() == "RIID_" and v and v.isdigit()), None)
        riid = int(given) if given is not None else riid_for(recipient_key(fields))
        with self._lock:
            merged = {**self._members.get(riid, {}), **{k.upper(): v for k, v in fields.items()}}
            merged["RIID_"] = str(riid)
            self._members[riid] = merged
        return riid

    def member(self, riid: int) -> dict[str, str] | None:
        with self._lock:
            found = self._members.get(riid)
            return dict(found) if found is not None else None

    def find_member(self, column: str, value: str) -> dict[str, str] | None:
        with self._lock:
            for member in self._members.values():
                if member.get(column, "").lower() == value.lower():
                    return dict(member)
        return None


# Preferred identifiers of a recipient, in the order the vendor's merge rules name them.
_KEY_COLUMNS = ("RIID_", "CUSTOMER_ID_", "EMAIL_ADDRESS_", "MOBILE_NUMBER_")


def recipient_key(fields: dict[str, str]) -> str:
    """A stable key for one recipient: the first identifying column present, e.g. `EMAIL_ADDRESS_:a@b`."""
    upper = {k.upper(): v for k, v in fields.items() if v}
    for column in _KEY_COLUMNS:
        if column in upper:
            return f"{column}:{upper[column].strip().lower()}"
    return "|".join(f"{k}:{v}" for k, v in sorted(upper.items()))


def riid_for(key: str) -> int:
    """A deterministic RIID for a recipient key, so retries and both accounts agree."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % 900_000_000 + 100_000
