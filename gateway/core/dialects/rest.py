"""Responsys REST as a dialect of the forward loop: token sessions, the app's raw target on the account.

Each account is called with its own token (`gateway.upstreams.sessions.RestSessions`: cached below its
lifetime, single-flight login) at the `endPoint` its login named. The app's request target goes out
exactly as the edge checked it (`gateway.protocols.targets`), under the account's API prefix.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import httpx

from gateway.config import Account
from gateway.core.loop import Call, Lease
from gateway.errors import UpstreamError
from gateway.protocols import responsys_rest as rest
from gateway.protocols import targets
from gateway.upstreams.cluster import Cluster
from gateway.upstreams.sessions import RestSession, RestSessions
from gateway.upstreams.upstream import Upstream
from policies.outcome import Outcome
from policies.ratelimit import per_minute

log = logging.getLogger("aftm.runtime")


class _TokenLease:
    def __init__(self, sessions: RestSessions, account: Account, session: RestSession) -> None:
        self._sessions = sessions
        self.account = account
        self.session = session

    def invalidate(self) -> None:
        self._sessions.invalidate(self.account, self.session)


class RestDialect:
    """REST's answers to the forward loop: token sessions, upstream URL, verdicts."""

    def __init__(self, sessions: RestSessions) -> None:
        self._sessions = sessions

    def serves(self, account: Account) -> bool:
        return True

    @contextlib.asynccontextmanager
    async def session(self, account: Account, *, within: float) -> AsyncIterator[Lease]:
        yield _TokenLease(self._sessions, account, await self._sessions.session_for(account))

    def upstream_request(self, account: Account, call: Call, lease: Lease) -> httpx.Request:
        assert isinstance(lease, _TokenLease)
        # Built from the raw target the edge checked, and verified to be sent unchanged (gateway.protocols.targets).
        target = rest.upstream_path(call.method, call.path, account.api_prefix)
        url = targets.upstream_url(lease.session.end_point, target)
        headers = [*call.headers, ("Authorization", lease.session.token)]
        return httpx.Request(call.method, url, headers=headers, content=call.body)

    def classify(self, response: httpx.Response, retry_after: float | None) -> Outcome:
        return rest.classify(response.status_code, response.headers, response.content, retry_after=retry_after)

    def answer(self, account: Account, call: Call, response: httpx.Response) -> httpx.Response:
        return response


def probe_url(account: Account) -> str:
    """Where a health check GETs: the account's login URL (any answer below 500 means it is up)."""
    return account.login_url.rstrip("/") + rest.LOGIN_PATH


def send_summary(path: str, body: bytes) -> tuple[str, str]:
    """A failure entry's keyword (the campaign or event) and numbers (its recipients, comma-joined)."""
    keyword, recipients = rest.send_summary(path, body)
    return keyword, ",".join(recipients)


async def size_rate_limit(cluster: Cluster[Account], sessions: RestSessions, upstream: Upstream,
                          account: Account) -> None:
    """Size the account's bucket from the vendor's own limits; keep the configured one on failure."""
    try:
        session = await sessions.session_for(account)
        response = await upstream.send(httpx.Request(
            "GET", session.end_point + rest.RATE_LIMIT_PATH, headers={"Authorization": session.token}))
    except UpstreamError as exc:
        log.warning("could not read the vendor's rate limits", extra={"account": account.name, "reason": str(exc)})
        return
    limit = rest.tightest_send_limit(response.content) if response.status_code == 200 else None
    if limit is None:
        log.warning("no usable rate limits from the vendor", extra={"account": account.name})
        return
    rate = per_minute(limit, account.rate_limit.headroom)
    cluster.set_rate(account.name, rate_per_second=rate, burst=account.rate_limit.burst)
    log.info("rate limit sized from the vendor", extra={"account": account.name, "per_minute": limit})
