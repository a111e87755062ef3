"""Upstream sessions per account: the gateway logs in with each account's own API user.

REST: one token per account, used until well before the vendor's two hours are up, so tokens are
replaced before they lapse, not after a failure. Logins are single-flight: however many calls
find the token missing or invalid at once, one login runs and all of them wait for it.

SOAP: a small pool of sessions per account, one call at a time on each, because Responsys may
invalidate a session used from two places at once, and caps live sessions per account (100).

An account with a `private_key` logs in with the vendor's certificate flow instead of its password, for
REST and SOAP alike (two requests; the RSA steps run on a worker thread). Re-login after
INVALID_TOKEN / INVALID_SESSION_ID is the same call either way. Keys, challenges and the temporary
handle between the two steps are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.config import Account
from gateway.errors import LoginRefused, UpstreamUnreachable
from gateway.protocols import responsys_rest as rest
from gateway.protocols import responsys_soap as soap
from gateway.protocols import rsa_challenge
from gateway.upstreams.upstream import Upstream
from policies.backoff import parse_retry_after
from policies.outcome import Failure

REFRESH_FRACTION = 0.75  # use a token for 75% of its life, then log in afresh
SOAP_IDLE_LIMIT = 7200.0 * 0.9  # the vendor expires SOAP sessions after 2 h idle


@dataclass(frozen=True, slots=True)
class RestSession:
    token: str
    end_point: str


class RestSessions:
    """REST tokens per account, cached below their lifetime, with single-flight login."""

    def __init__(self, *, upstream: Upstream, clock: Callable[[], float] = time.monotonic,
                 lifetime: float = rest.TOKEN_LIFETIME) -> None:
        self._upstream = upstream
        self._clock = clock
        self._use_for = lifetime * REFRESH_FRACTION
        # account name -> (its token, used while clock() < this): a plain dict read on every call (a
        # cachetools TTLCache cost ~1 µs per read, expiring entries on each one); one entry per account.
        self._tokens: dict[str, tuple[RestSession, float]] = {}
        self._inflight: dict[str, asyncio.Task[RestSession]] = {}
        self.logins: dict[str, int] = {}

    async def session_for(self, account: Account) -> RestSession:
        """A valid token for the account; logs in (once for all waiting callers) when there is none."""
        cached = self._tokens.get(account.name)
        if cached is not None and self._clock() < cached[1]:
            return cached[0]
        task = self._inflight.get(account.name)
        if task is None:
            task = asyncio.create_task(self._login(account), name=f"rest-login-{account.name}")
            self._inflight[account.name] = task
            task.add_done_callback(lambda _: self._inflight.pop(account.name, None))
        # shield: one caller giving up (its deadline) must not cancel the login the others wait for
        return await asyncio.shield(task)

    def invalidate(self, account: Account, session: RestSession) -> None:
        """Forget `session` if it is still the cached one (a newer token is kept)."""
        cached = self._tokens.get(account.name)
        if cached is not None and cached[0] is session:
            del self._tokens[account.name]

    async def _login(self, account: Account) -> RestSession:
        url = account.login_url.rstrip("/") + rest.LOGIN_PATH
        with self._upstream.telemetry.login(account=account.name, protocol="rest"):
            if account.private_key is not None:
                response = await self._certificate_login(account, url)
            else:
                assert account.password is not None  # config: a password or a private key
                response = await self._upstream.send(httpx.Request(
                    "POST", url, data=rest.login_form(account.user_name, account.password.reveal())))
        self.logins[account.name] = self.logins.get(account.name, 0) + 1
        login = rest.parse_login(response.status_code, response.content, retry_after=_retry_after(response))
        session = RestSession(token=login.token, end_point=login.end_point)
        self._tokens[account.name] = (session, self._clock() + self._use_for)
        return session


    async def _certificate_login(self, account: Account, url: str) -> httpx.Response:
        """`auth_type=server`, check the server's proof, then `auth_type=client`; the final answer."""
        challenge = rsa_challenge.new_challenge()
        first = await self._upstream.send(httpx.Request(
            "POST", url, data=rest.server_auth_form(account.user_name, challenge)))
        server = rest.parse_server_auth(first.status_code, first.content, retry_after=_retry_after(first))
        answer = await asyncio.to_thread(answer_server_challenge, account, challenge, server)
        return await self._upstream.send(httpx.Request(
            "POST", url, data=rest.client_auth_form(account.user_name, answer),
            headers={"Authorization": server.handle}))


@dataclass(eq=False)
class SoapSlot:
    """One upstream SOAP session, used by one call at a time."""

    account: str
    session_id: str | None = None
    last_used: float = 0.0

    def invalidate(self) -> None:
        self.session_id = None


@dataclass
class _Pool:
    # LIFO: the most recently used session goes out first, so a quiet gateway keeps one warm session
    # per account and logs the others in only when concurrency needs them.
    idle: asyncio.LifoQueue[SoapSlot] = field(default_factory=asyncio.LifoQueue)


class SoapSessions:
    """A pool of upstream SOAP sessions per account; a call leases one slot for its duration."""

    def __init__(self, *, accounts: Sequence[Account], upstream: Upstream,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._upstream = upstream
        self._clock = clock
        self._pools: dict[str, _Pool] = {}
        for account in accounts:
            pool = _Pool()
            for _ in range(max(1, account.soap_sessions)):
                pool.idle.put_nowait(SoapSlot(account=account.name))
            self._pools[account.name] = pool
        self.logins: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def lease(self, account: Account, *, within: float) -> AsyncIterator[SoapSlot]:
        """A slot with a live session, held until the block ends; logs in when the slot has none.

        Waiting more than `within` seconds for a free slot raises UpstreamUnreachable (nothing was sent).
        """
        pool = self._pools[account.name]
        try:
            async with asyncio.timeout(within):
                slot = await pool.idle.get()
        except TimeoutError:
            raise UpstreamUnreachable(f"no free SOAP session on {account.name} in time",
                                      failure=Failure.CONNECT_TIMEOUT) from None
        try:
            if slot.session_id is None or self._clock() - slot.last_used > SOAP_IDLE_LIMIT:
                slot.session_id = await self._login(account)
            yield slot
            slot.last_used = self._clock()
        finally:
            pool.idle.put_nowait(slot)

    async def _login(self, account: Account) -> str:
        if account.soap_url is None:
            raise ValueError(f"account {account.name} has no soap_url")
        with self._upstream.telemetry.login(account=account.name, protocol="soap"):
            if account.private_key is not None:
                session_id = await self._certificate_login(account, account.soap_url)
            else:
                assert account.password is not None  # config: a password or a private key
                response = await self._upstream.send(_soap_request(
                    account.soap_url, "login", soap.login_request(account.user_name, account.password.reveal())))
                self.logins[account.name] = self.logins.get(account.name, 0) + 1
                session_id = soap.parse_login(response.status_code, response.content,
                                              retry_after=_retry_after(response))
        return session_id

    async def _certificate_login(self, account: Account, url: str) -> str:
        """`authenticateServer`, check the server's proof, then `loginWithCertificate`; the session id."""
        challenge = rsa_challenge.new_challenge()
        first = await self._upstream.send(_soap_request(
            url, "authenticateServer", soap.authenticate_server_request(account.user_name, challenge)))
        server = soap.parse_authenticate_server(first.status_code, first.content, retry_after=_retry_after(first))
        answer = await asyncio.to_thread(answer_server_challenge, account, challenge, server)
        response = await self._upstream.send(_soap_request(
            url, "loginWithCertificate", soap.login_with_certificate_request(server.handle, answer)))
        self.logins[account.name] = self.logins.get(account.name, 0) + 1
        return soap.parse_login_with_certificate(response.status_code, response.content,
                                                 retry_after=_retry_after(response))


def _soap_request(url: str, operation: str, envelope: bytes) -> httpx.Request:
    return httpx.Request("POST", url, content=envelope,
                         headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{operation}"'})


_HANDLE = re.compile(r"[\x21-\x7e]{1,4096}")


@functools.lru_cache(maxsize=64)
def _account_keys(private_key: str, server_certificate: str) -> tuple[rsa.RSAPrivateKey, rsa.RSAPublicKey]:
    return rsa_challenge.load_private_key(private_key), rsa_challenge.load_certificate_key(server_certificate)


def answer_server_challenge(account: Account, client_challenge: bytes, server: rsa_challenge.ServerAnswer) -> bytes:
    """Check the server's proof (our challenge, encrypted with its key), then encrypt its challenge with ours.

    CPU work (two RSA operations): callers run it on a worker thread. A server that cannot prove the
    key of `server_certificate` is not the account's: the login is refused before we answer it.
    """
    assert account.private_key is not None and account.server_certificate is not None  # config checks both
    key, server_key = _account_keys(account.private_key.reveal(), account.server_certificate)
    if not rsa_challenge.matches(server_key, server.encrypted_client_challenge, client_challenge):
        raise LoginRefused("certificate login refused: the server's answer does not match server_certificate")
    if not 0 < len(server.server_challenge) <= rsa_challenge.MAX_CHALLENGE_BYTES:
        # Not ours to sign: a block that large is no challenge (it could be a DigestInfo), and one that
        # does not fit the key raised ValueError, which the forward loop took for a bug (a 500).
        raise LoginRefused(f"certificate login refused: a {len(server.server_challenge)}-byte server challenge")
    if not _HANDLE.fullmatch(server.handle):  # it goes back in a header or a SOAP element
        raise LoginRefused("certificate login refused: the server's temporary token is not printable ASCII")
    return rsa_challenge.private_encrypt(key, server.server_challenge)


def _retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("retry-after"), time.time())
