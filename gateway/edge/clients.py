"""App-facing identity: the gateway's own REST tokens, SOAP session ids and portal sessions.

Apps log in to the gateway, never to Responsys: their credentials are checked against `clients` in the
config, and what they get back is a gateway credential that says nothing about any upstream account.
Credentials are signed (HMAC-SHA256) rather than stored, so any replica sharing `session_secret`
accepts them and a restart does not log every app out.

Logout (a SOAP session id, a portal cookie) is recorded in the store every replica shares, as a
SHA-256 of the credential (never the credential) until the credential would have expired anyway,
before the logout is answered. Every verify of a SOAP session or portal cookie asks the store: a
revocation is seen by every replica at once, with no staleness window (REST tokens have no logout
in the vendor's API, so verifying them never touches the store). A revocation this replica knows
of is refused without asking. When the store cannot answer, `verify` and `revoke` raise StoreError:
the caller fails closed (refuses the call, with the vendor's "try again" answer rather than
"invalid session", which would send the app into a login loop).

Checking a password costs a PBKDF2 run (45-85 ms): `login` does it in a small thread pool of its own,
never on the event loop, spends the same run on an unknown user name (no enumeration by timing),
remembers successes briefly and refuses a source that keeps failing (`policies.login_throttle`).

That pool is the one thing an unauthenticated client can make the gateway spend CPU on, so no single
source may take it: identical checks in flight share one run, a source has at most SOURCE_CHECKS
checks waiting or running, and its failures count per source whatever user names it tries (rotating
names was free: one address with 40 connections kept the queue full and the real app's every login
was refused 429). Past VERIFY_QUEUE a source still gets its first check in (up to MAX_WAITING), and
checks run fewest-recent-failures first (`gateway.edge.password_checks`): a storm from many addresses
neither refuses nor delays much the login of an app that has not been failing. A source that logged
in recently may queue past VERIFY_QUEUE too.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from cachetools import TTLCache
from starlette.requests import HTTPConnection

from gateway.config import Client, Config, verify_password_hash
from gateway.edge.password_checks import CheckQueue
from gateway.errors import TooManyFailedLogins
from gateway.store import Store
from policies.login_throttle import LoginThrottle, ThrottleSettings

T = TypeVar("T")
Kind = Literal["rest", "soap", "portal"]
REVOCABLE: frozenset[Kind] = frozenset({"soap", "portal"})  # the kinds with a logout

ADMIN_PRINCIPAL = "@admin"  # the portal identity of the operator who logged in with admin.token

REST_TOKEN_LIFETIME = 7200.0  # as Responsys: about two hours, then the app refreshes or logs in again
SOAP_SESSION_IDLE = 7200.0  # signed sessions carry their issue time; idle tracking is per replica
VERIFIED_TTL = 60.0  # seconds a checked credential is trusted without re-checking its signature
LOGIN_TTL = 300.0  # seconds a verified user name and password are trusted without another PBKDF2 run
LOGIN_CACHE_SIZE = 1000
# PBKDF2 releases the GIL, so two threads use both cores of a small pod; at most this many logins wait
# for one: past it a login is refused as throttled at once, so a storm cannot queue unbounded work.
VERIFY_THREADS = 2
VERIFY_QUEUE = 32
DEFAULT_ITERATIONS = 200_000  # of the dummy hash when no client has one (config.hash_password's default)
BUSY_RETRY_AFTER = 1.0
SOURCE_CHECKS = 4  # distinct password checks one source address may have waiting or running at once
# Wrong passwords one source may have within the throttle's window whatever the user names: each costs
# a PBKDF2 run, and per (name, source) alone a fresh name was a fresh allowance.
SOURCE_MAX_FAILURES = 20
TRUSTED_SOURCE_TTL = 86_400.0  # a source that logged in within this long may queue past VERIFY_QUEUE
# Checks waiting or running in all: never more, bar certificate step 2s (one per step 1 admitted, `paid`).
MAX_WAITING = VERIFY_THREADS + 4 * VERIFY_QUEUE
CHALLENGE_KIND = "certificate-challenge"  # never a REST, SOAP or portal kind: a handle logs nothing in
CHALLENGE_LIFETIME = 120.0  # seconds between a certificate login's two steps
# Seconds replicas' clocks may disagree: step 2 lands on any replica, often milliseconds after step 1, so a
# handle another replica issued may be dated a little ahead of this one's clock (its time is kept to 1 ms).
CLOCK_SKEW = 30.0


@dataclass(frozen=True, slots=True)
class SpentChallenge:
    """A certificate login's temporary token, spent: whose it was, the SHA-256 of its server challenge, and
    when its step 1 was charged, if it was charged here (this process, the source now finishing it)."""

    client: str
    challenge_digest: bytes
    charged_at: float | None


@dataclass(frozen=True, slots=True)
class Identity:
    client: str
    kind: Kind
    issued_at: float


class Credentials:
    """Issues and checks gateway tokens (REST) and session ids (SOAP)."""

    def __init__(self, *, config: Config, secret: bytes | None = None, store: Callable[[], Store] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """`store` shares revocations with every replica; without one (tools, unit tests) they stay in-process."""
        self._config = config
        self._secret = secret or secrets.token_bytes(32)
        self._store = store
        self._clock = clock
        # Revocations this replica has seen (by hash): a hit refuses at once, a miss asks the store, so
        # what this cache forgets (it holds the newest 100,000) is only a store lookup, never a revived session.
        self._revoked: TTLCache[str, bool] = TTLCache(maxsize=100_000, ttl=SOAP_SESSION_IDLE, timer=clock)
        # Every app request presents its credential: remember good ones briefly instead of re-checking
        # the HMAC and decoding each time. Expiry and revocation are still checked on every hit.
        self._verified: TTLCache[str, Identity] = TTLCache(maxsize=10_000, ttl=VERIFIED_TTL, timer=clock)
        # Successes only, keyed by a keyed hash of name and password (never the password); per process
        # and per config, so a changed config (a restart) starts empty.
        self._logins: TTLCache[bytes, bool] = TTLCache(maxsize=LOGIN_CACHE_SIZE, ttl=LOGIN_TTL, timer=clock)
        self._login_key = secrets.token_bytes(32)
        self._charge_key = secrets.token_bytes(32)  # which step 1s this process charged, and to which source
        self._throttle = LoginThrottle()
        self._source_throttle = LoginThrottle(ThrottleSettings(max_failures=SOURCE_MAX_FAILURES))
        self._checks = CheckQueue(threads=VERIFY_THREADS, thread_name_prefix="aftm-login")
        self._checking: dict[bytes, asyncio.Future[bool]] = {}  # by `remembered` digest: one run each
        self._per_source: dict[str | None, int] = {}
        # Sources with a recent success; an attacker cannot join without a right password.
        self._trusted: TTLCache[str | None, bool] = TTLCache(maxsize=10_000, ttl=TRUSTED_SOURCE_TTL, timer=clock)
        self._dummy_hash = _dummy_hash(config)

    async def login(self, user_name: str, password: str, *, source: str | None = None) -> bool:
        """Whether `password` is the client's; raises TooManyFailedLogins when the source must wait.

        `source` is the caller's address: failures count per (name, source), so guesses from one
        address never lock out the app logging in from another; a source's failures also count across
        the names it tries (SOURCE_MAX_FAILURES). A success cached from earlier is accepted even while
        its key is throttled (only the right password can hit the cache), and the same name and password
        already being checked share that run: an app's burst at start costs one.
        """
        remembered = hmac.new(self._login_key, f"{user_name}\0{password}".encode("utf-8", "surrogatepass"),
                              hashlib.sha256).digest()
        if remembered in self._logins:
            return True
        running = self._checking.get(remembered)
        if running is None:
            running = self._start_check(remembered, user_name, password, source)
        return await asyncio.shield(running)  # a caller that gives up does not cancel the others' run

    def _start_check(self, remembered: bytes, user_name: str, password: str,
                     source: str | None) -> asyncio.Future[bool]:
        """Admit one PBKDF2 run to the pool, or raise TooManyFailedLogins; the run's outcome is booked when done."""
        key = (user_name, source)
        waits = [w for w in (self._throttle.retry_after(key), self._source_throttle.retry_after(source)) if w]
        if waits:
            raise TooManyFailedLogins(max(waits))
        # Past the queue, a source is still admitted for its first check (fair share: many sources storming
        # cannot refuse a newcomer, the real app, outright), as is one that logged in recently; MAX_WAITING
        # bounds them all.
        in_flight, waiting = self._per_source.get(source, 0), self._checks.waiting
        room = waiting < VERIFY_THREADS + VERIFY_QUEUE or (
            (in_flight == 0 or source in self._trusted) and waiting < MAX_WAITING)
        if in_flight >= SOURCE_CHECKS or not room:
            raise TooManyFailedLogins(BUSY_RETRY_AFTER)
        # A source that keeps failing, or already has checks waiting, waits behind every source that does
        # not (the real app): a storm's first wave, one check per address, is all that goes before it.
        running = self._checks.submit(self._source_throttle.failures(source) + in_flight, functools.partial(
            _check, self._config.client(user_name), password, self._dummy_hash))
        self._checking[remembered] = running
        self._per_source[source] = self._per_source.get(source, 0) + 1

        def booked(done: asyncio.Future[bool]) -> None:  # runs before any awaiting caller resumes
            del self._checking[remembered]
            if (left := self._per_source.pop(source) - 1) > 0:
                self._per_source[source] = left
            if done.cancelled() or done.exception() is not None:
                return
            if done.result():
                self._throttle.succeeded(key)
                self._logins[remembered] = True
                self._trusted[source] = True
            else:
                self._throttle.failed(key)
                self._source_throttle.failed(source)

        running.add_done_callback(booked)
        return running

    def close(self) -> None:
        self._checks.close()

    # --- certificate logins (gateway.edge.app_certificates) ---------------------------------------------

    async def run_login_work(self, work: Callable[[], T], *, source: str | None, charge: bool = False,
                             paid: bool = False) -> T:
        """CPU-bound login work (the RSA steps) on the password-check threads, ranked and bounded as they are.

        Raises TooManyFailedLogins when the source keeps failing or the threads are taken. With `charge`,
        the source is charged one failure as soon as the work is admitted (a certificate login's step 1,
        which anyone may ask for: see `login_completed`). With `paid`, the work was paid for by such a
        charge (step 2 with a genuine, unspent temporary token: at most one per step 1 admitted) and
        neither the source's wait nor a full queue refuses it: the charges of an app's burst of step 1s
        must not refuse the step 2s that take them back.
        """
        in_flight, waiting = self._per_source.get(source, 0), self._checks.waiting
        if not paid:
            wait = self._source_throttle.retry_after(source)
            if wait:
                raise TooManyFailedLogins(wait)
            room = waiting < VERIFY_THREADS + VERIFY_QUEUE or (
                (in_flight == 0 or source in self._trusted) and waiting < MAX_WAITING)
            if in_flight >= SOURCE_CHECKS or not room:
                raise TooManyFailedLogins(BUSY_RETRY_AFTER)
        self._per_source[source] = in_flight + 1
        running = self._checks.submit(self._source_throttle.failures(source) + in_flight, work)
        if charge:  # after ranking this one, before any await: a caller that hangs up has paid all the same
            self._source_throttle.failed(source)
        try:
            return await running
        finally:
            if (left := self._per_source.pop(source) - 1) > 0:
                self._per_source[source] = left

    def login_failed(self, source: str | None) -> None:
        """A certificate login failed: counted against the source like a wrong password."""
        self._source_throttle.failed(source)

    def login_completed(self, source: str | None, *, charged_at: float | None) -> None:
        """A certificate login's step 2 succeeded: the failure its step 1 was charged (`run_login_work`'s
        `charge`) is taken back, and the source may queue past VERIFY_QUEUE like one that gave a right password.

        Step 1 costs the gateway a private-key operation and asks nothing secret of the caller: charged
        as a failure until step 2 proves the key, a source that keeps asking for challenges is throttled
        (SOURCE_MAX_FAILURES) while an app that completes its logins is never. Only that charge is taken
        back (`charged_at`, from `spend_challenge`): none when step 2 comes from another source or lands on
        another replica (the charging one keeps it for its window, 60 s), nor once its window has passed;
        another failure (a wrong password behind the same address) is never the login's to take back.
        """
        if charged_at is not None:
            self._source_throttle.refund(source, age=self._clock() - charged_at)
        self._trusted[source] = True

    def issue_challenge(self, client: str, server_challenge: bytes, *, source: str | None = None) -> str:
        """The temporary token between the two steps of a certificate login: signed, expiring, stateless.

        It carries a SHA-256 of the server challenge (not the challenge), so any replica sharing
        `session_secret` can check step 2's answer, and a keyed hash of the source its step 1 was charged
        to, which only this process can match (`spend_challenge`). It is not a credential for anything else.
        """
        digest = _unpadded(hashlib.sha256(server_challenge).digest())
        payload = f"{CHALLENGE_KIND}|{client}|{self._clock():.3f}|{digest}|{self._charge_tag(source)}"
        encoded = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
        return f"{encoded}.{self._sign(encoded)}"

    async def spend_challenge(self, handle: str | None, *, source: str | None = None) -> SpentChallenge | None:
        """The genuine, unexpired, unspent handle, now spent; None otherwise. `source` is step 2's.

        One attempt per handle on every replica (recorded in the store like a logout); raises StoreError
        when the store cannot record it.
        """
        opened = self._open_challenge(handle)
        if opened is None or handle is None:
            return None
        client, challenge_digest, issued_at, charge_tag = opened
        digest = _digest(handle)
        if digest in self._revoked:
            return None
        # Marked before the first await, then spent atomically in the store: concurrent uses of one
        # handle, on this replica or another, leave exactly one through.
        self._revoked[digest] = True
        # Spent on every replica for as long as any, its clock up to CLOCK_SKEW behind, still takes the handle.
        expires_at = issued_at + CHALLENGE_LIFETIME + CLOCK_SKEW
        if self._store is not None and not await self._store().spend(digest, expires_at):
            return None
        charged_here = hmac.compare_digest(charge_tag.encode("ascii"), self._charge_tag(source).encode("ascii"))
        return SpentChallenge(client, challenge_digest, issued_at if charged_here else None)

    def _charge_tag(self, source: str | None) -> str:
        return _unpadded(hmac.new(self._charge_key, str(source).encode("utf-8", "surrogatepass"),
                                  hashlib.sha256).digest()[:12])

    def _open_challenge(self, handle: str | None) -> tuple[str, bytes, float, str] | None:
        if not handle or handle.count(".") != 1 or not handle.isascii():
            return None
        encoded, signature = handle.split(".")
        if not hmac.compare_digest(signature.encode("ascii"), self._sign(encoded).encode("ascii")):
            return None
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            # A handle from a gateway before the charge tag has none: its charge is nobody's to take back.
            kind, client, issued, digest, *tag = payload.split("|")
            issued_at = float(issued)
            challenge_digest = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4))
        except (ValueError, UnicodeDecodeError):
            return None
        if kind != CHALLENGE_KIND or len(tag) > 1 or not -CLOCK_SKEW <= self._clock() - issued_at <= CHALLENGE_LIFETIME:
            return None
        return client, challenge_digest, issued_at, "".join(tag)

    def admin_login(self, user_name: str, password: str, *, source: str | None = None) -> bool:
        """The operator: user `admin` with the admin token as password (never when admin.token is unset).

        Throttled like `login` (raises TooManyFailedLogins), per source address.
        """
        token = self._config.admin.token
        if user_name != "admin" or token is None:
            return False
        key = (ADMIN_PRINCIPAL, source)
        wait = self._throttle.retry_after(key)
        if wait is not None:
            raise TooManyFailedLogins(wait)
        ok = hmac.compare_digest(token.reveal().encode(), password.encode("utf-8", "surrogatepass"))
        if ok:
            self._throttle.succeeded(key)
        else:
            self._throttle.failed(key)
        return ok

    def issue(self, client: str, kind: Kind) -> str:
        issued = f"{self._clock():.3f}"
        payload = f"{kind}|{client}|{issued}|{secrets.token_hex(8)}"
        encoded = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
        return f"{encoded}.{self._sign(encoded)}"

    async def verify(self, credential: str | None, kind: Kind) -> Identity | None:
        """The identity behind a credential, or None if it is forged, expired, revoked or of another kind.

        Raises StoreError when a SOAP session or portal cookie cannot be checked for revocation.
        """
        identity = self._signed(credential, kind)
        if identity is None or credential is None or kind not in REVOCABLE:
            return identity
        digest = _digest(credential)
        if digest in self._revoked:
            return None
        if self._store is not None and await self._store().is_revoked(digest):
            self._revoked[digest] = True
            return None
        return identity

    async def revoke(self, credential: str) -> None:
        """Log a SOAP session or portal cookie out on every replica; returns once the store has it.

        Raises StoreError when the store cannot record it: the logout has then not happened.
        """
        identity = self._signed(credential, "soap") or self._signed(credential, "portal")
        if identity is None:
            return  # forged or expired: nothing to revoke
        digest = _digest(credential)
        if self._store is not None:
            await self._store().revoke(digest, identity.issued_at + _lifetime(identity.kind) + 1.0)
        self._revoked[digest] = True
        self._verified.pop(credential, None)

    def _signed(self, credential: str | None, kind: Kind) -> Identity | None:
        """The identity if the credential is genuine, of `kind` and unexpired (revocation not checked)."""
        if not credential:
            return None
        known = self._verified.get(credential)
        if known is not None:
            return known if self._still_valid(known, kind) else None
        identity = self._decode(credential, kind)
        if identity is not None:
            self._verified[credential] = identity
        return identity

    def _still_valid(self, identity: Identity, kind: Kind) -> bool:
        return identity.kind == kind and self._clock() - identity.issued_at <= _lifetime(kind)

    def _decode(self, credential: str, kind: Kind) -> Identity | None:
        # Only printable ASCII can be a credential this gateway issued (base64url and a dot); anything
        # else (a header's latin-1 byte, a SOAP sessionId's unicode) is refused here, never compared:
        # hmac.compare_digest raises TypeError on non-ASCII text, which answered the app a 500.
        if credential.count(".") != 1 or not credential.isascii():
            return None
        encoded, signature = credential.split(".")
        if not hmac.compare_digest(signature.encode("ascii"), self._sign(encoded).encode("ascii")):
            return None
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            token_kind, client, issued, _ = payload.split("|")
            issued_at = float(issued)
        except (ValueError, UnicodeDecodeError):
            return None
        identity = Identity(client=client, kind=kind, issued_at=issued_at)
        known = self._config.client(client) is not None or (kind == "portal" and client == ADMIN_PRINCIPAL)
        if token_kind != kind or not self._still_valid(identity, kind) or not known:
            return None
        return identity

    def _sign(self, encoded: str) -> str:
        digest = hmac.new(self._secret, encoded.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _unpadded(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _lifetime(kind: Kind) -> float:
    return REST_TOKEN_LIFETIME if kind == "rest" else SOAP_SESSION_IDLE


def _digest(credential: str) -> str:
    """What the store keeps of a revoked credential: its SHA-256, useless to anyone who reads the store."""
    return hashlib.sha256(credential.encode("utf-8", "surrogatepass")).hexdigest()


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """User name and password from an `Authorization: Basic ...` value, or None when it is not one.

    Every surface that takes HTTP Basic (SMS API, portal, `/api/failures`) parses it here: a value
    with non-ASCII characters, bad base64 or non-UTF-8 text is "no credentials" (a 401 in the
    surface's shape), never an exception (`b64decode` of non-ASCII text raises a plain ValueError).
    """
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except ValueError:  # binascii.Error, UnicodeDecodeError and non-ASCII input alike
        return None
    return user, password


def source_of(connection: HTTPConnection) -> str | None:
    """The address failed logins are counted against: the TCP peer (the listener trusts no proxy header).

    An IPv6 peer counts by its /64, what one host or one LAN is given: its privacy addresses rotate within
    it, and any host may use all 2^64, so per address each attempt could come from a fresh source with a
    fresh allowance (the LAN behind it shares one, as hosts behind one IPv4 NAT address do). An IPv4 peer
    a dual-stack listener names `::ffff:a.b.c.d` is `a.b.c.d`.
    """
    if connection.client is None:
        return None
    host = connection.client.host
    try:
        address = ipaddress.ip_address(host.partition("%")[0])  # a scope (`fe80::1%eth0`) is no part of it
    except ValueError:
        return host  # not an address (a test client's name): itself
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _check(client: Client | None, password: str, dummy_hash: str) -> bool:
    """One PBKDF2 run whatever the outcome: an unknown name or a plain-text password costs as much as a hash."""
    if client is not None and client.password_hash is not None:
        return verify_password_hash(client.password_hash, password)
    verify_password_hash(dummy_hash, password)
    return client is not None and client.check_password(password)


def _dummy_hash(config: Config) -> str:
    """A hash no password matches, as costly as the dearest configured one."""
    iterations = max((int(c.password_hash.split("$")[1]) for c in config.clients
                      if c is not None and c.password_hash is not None), default=DEFAULT_ITERATIONS)
    return f"pbkdf2_sha256${iterations}${secrets.token_hex(16)}${'0' * 64}"
