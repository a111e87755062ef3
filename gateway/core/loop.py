"""The forward loop: ask the dialect, consult the policies, move bytes through the upstream seam.

One loop serves every upstream cluster (the Responsys accounts for REST and SOAP, the SMS aggregators);
what differs between them is the dialect (`gateway.core.dialects`) and the loop's inputs (the retry
policy, the relogin budget, the longest wait for a rate limit). One app request becomes one or more
upstream attempts:
- an account failure that the upstream cannot have processed (refused, TLS, DNS, 502/503/504, login
  refused) moves to the next candidate account at once, within the same app request;
- an ambiguous failure (timeout after the request went out, other 5xx) moves on only when the app
  sent an Idempotency-Key; otherwise the app gets the failure, and the decision is logged;
- an invalid session logs in again (once for all concurrent callers) and replays the call;
- throttling waits per Retry-After or backoff with full jitter, within the request's deadline;
- a send that still cannot go out before the deadline is committed to the durable outbox (202).

A retry policy of one attempt makes the loop one pass over the candidates that never waits: what the
SMS sends use, since the outbox is their retry schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

import httpx

from gateway.errors import LoginThrottled, UpstreamError
from gateway.upstreams.cluster import Cluster, Member
from gateway.upstreams.upstream import Upstream
from policies.backoff import RetryPolicy, Schedule
from policies.failover import may_retry_elsewhere
from policies.outcome import Failure, Kind, Outcome
from policies.reauth import ReauthDecision, ReauthPolicy

log = logging.getLogger("aftm.proxy")

MIN_ATTEMPT = 0.25  # seconds: with less left before the deadline, queue (or fail) instead of trying


@dataclass(frozen=True, slots=True)
class Call:
    """One app request to forward, stripped of the app's own credentials."""

    protocol: Literal["rest", "soap", "sms"]
    method: str
    path: str  # app-facing path with query string
    headers: tuple[tuple[str, str], ...]
    body: bytes
    request_id: str  # the gateway's own: the identity of the send (gateway.edge.correlation)
    client: str
    is_send: bool
    idempotency_key: str | None = None
    correlation_id: str = ""  # the app's X-Request-Id (or request_id): a label for logs, never a key


class Lease(Protocol):
    """An upstream session held for one attempt."""

    def invalidate(self) -> None: ...


M = TypeVar("M", bound=Member)
M_contra = TypeVar("M_contra", bound=Member, contravariant=True)


class Dialect(Protocol[M_contra]):
    """What the loop needs from a protocol: a session, the upstream request, the verdict."""

    def serves(self, account: M_contra) -> bool:
        """Whether the account can take this protocol at all (a REST-only account has no SOAP endpoint):
        the loop passes over one that cannot, without counting it as failing."""
        ...

    def session(self, account: M_contra, *, within: float) -> contextlib.AbstractAsyncContextManager[Lease]:
        """Hold an upstream session for one attempt; waiting longer than `within` seconds raises UpstreamError."""
        ...

    def upstream_request(self, account: M_contra, call: Call, lease: Lease) -> httpx.Request: ...

    def classify(self, response: httpx.Response, retry_after: float | None) -> Outcome: ...

    def answer(self, account: M_contra, call: Call, response: httpx.Response) -> httpx.Response:
        """The account's response as the app should see it."""
        ...


@dataclass(frozen=True, slots=True)
class Result:
    """How an app request ended: answered by an account, queued, or failed with an outcome."""

    status: Literal["answered", "queued", "failed"]
    response: httpx.Response | None = None
    account: str | None = None  # who answered (or failed ambiguously, which ends the request)
    outcome: Outcome | None = None
    request_id: str = ""
    last_account: str | None = None  # the account of the last attempt, however the request ended
    rate_limited: str | None = None  # the account whose rate limit ended the request (no token in time)


Enqueue = Callable[[Call], Awaitable[str]]


@dataclass
class Proxy(Generic[M]):
    """The forward loop over one cluster: REST and SOAP share the accounts' loop, SMS has its own."""

    cluster: Cluster[M]
    upstream: Upstream
    retry: RetryPolicy
    reauth: ReauthPolicy
    retry_after: Callable[[httpx.Response], float | None]
    rate_wait_max: float = math.inf  # seconds an attempt may wait for its account's rate limit
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def forward(self, call: Call, dialect: Dialect[M], *, deadline: float,
                      enqueue: Enqueue | None = None) -> Result:
        """Forward `call` until answered, queued (if `enqueue` and it is a send) or out of time."""
        excluded = {member.name for member in self.cluster.members if not dialect.serves(member)}
        if len(excluded) == len(self.cluster.members):  # no account speaks it: no attempt, nothing to queue
            return Result("failed", request_id=call.request_id, outcome=Outcome.account_failure(
                Failure.UNAVAILABLE, detail="no account is configured for this protocol"))
        unserved = frozenset(excluded)
        schedule = Schedule(self.retry, deadline=deadline, clock=self.clock)
        relogins = self.reauth.budget()
        last: Outcome | None = None
        last_response: httpx.Response | None = None
        last_account: str | None = None
        attempts = 0
        while True:
            if deadline - self.clock() < MIN_ATTEMPT:
                break  # an attempt this short would time out after the upstream may have acted on it
            account = self._next_account(excluded)
            if account is None:
                delay = schedule.next_delay(last) if last is not None else None
                if delay is None:
                    break
                await self.sleep(delay)
                excluded = set(unserved)
                continue
            if not await self._wait_for_rate(account, deadline):
                return await self._out_of_time(call, last, last_response, enqueue, last_account,
                                               rate_limited=account.name)
            attempts += 1
            after_relogin = last is not None and last.kind is Kind.SESSION_INVALID
            outcome, response = await self._attempt(account, call, dialect, deadline, attempts, after_relogin)
            self._record(account, outcome, call)
            last, last_response, last_account = outcome, response, account.name
            if outcome.kind in (Kind.OK, Kind.CLIENT_ERROR) and response is not None:
                return Result("answered", response=dialect.answer(account, call, response), account=account.name,
                              outcome=outcome, request_id=call.request_id, last_account=account.name)
            if outcome.kind is Kind.SESSION_INVALID:
                if relogins.on_session_invalid() is ReauthDecision.RELOGIN_AND_REPLAY:
                    continue
                # The account keeps refusing fresh sessions: treat it as failing, nothing was processed.
                excluded.add(account.name)
                continue
            if outcome.kind is Kind.THROTTLED:
                delay = schedule.next_delay(outcome)
                if delay is None:
                    break
                await self.sleep(delay)
                continue
            if not may_retry_elsewhere(outcome, idempotency_key=call.idempotency_key is not None):
                log.warning("not retrying an ambiguous failure without an Idempotency-Key",
                            extra={"request_id": call.request_id, "correlation_id": call.correlation_id,
                                   "account": account.name,
                                   "reason": outcome.detail or str(outcome.failure)})
                return Result("failed", response=response, account=account.name, outcome=outcome,
                              request_id=call.request_id, last_account=account.name)
            excluded.add(account.name)
        return await self._out_of_time(call, last, last_response, enqueue, last_account)

    async def _out_of_time(self, call: Call, last: Outcome | None, response: httpx.Response | None,
                           enqueue: Enqueue | None, last_account: str | None, *,
                           rate_limited: str | None = None) -> Result:
        ambiguous_unkeyed = last is not None and last.ambiguous and call.idempotency_key is None
        if enqueue is not None and call.is_send and not ambiguous_unkeyed:
            request_id = await enqueue(call)
            log.info("send queued in the outbox", extra={"request_id": request_id,
                                                          "correlation_id": call.correlation_id})
            return Result("queued", outcome=last, request_id=request_id, last_account=last_account,
                          rate_limited=rate_limited)
        return Result("failed", response=response, outcome=last, request_id=call.request_id,
                      last_account=last_account, rate_limited=rate_limited)

    def _next_account(self, excluded: set[str]) -> M | None:
        for name in self.cluster.failover.candidates():
            if name not in excluded:
                return self.cluster.member(name)
        return None

    async def _wait_for_rate(self, account: M, deadline: float) -> bool:
        bucket = self.cluster.bucket(account.name)
        if bucket is None:
            return True
        # try_reserve takes no token when the wait would pass the deadline (or the longest allowed wait)
        wait = bucket.try_reserve(min(self.rate_wait_max, deadline - self.clock()))
        if wait is None:
            return False
        if wait > 0:
            await self.sleep(wait)
        return True

    async def _attempt(self, account: M, call: Call, dialect: Dialect[M], deadline: float, number: int,
                       after_relogin: bool) -> tuple[Outcome, httpx.Response | None]:
        telemetry = self.upstream.telemetry
        with telemetry.attempt(account=account.name, number=number, request_id=call.request_id,
                               after_relogin=after_relogin) as span:
            outcome, response = await self._try(account, call, dialect, deadline)
            telemetry.attempt_result(span, account.name, outcome, response.extensions if response else None,
                                     failover_reason=_failover_reason(outcome, call))
            return outcome, response

    async def _try(self, account: M, call: Call, dialect: Dialect[M],
                   deadline: float) -> tuple[Outcome, httpx.Response | None]:
        remaining = max(MIN_ATTEMPT, deadline - self.clock())
        try:
            async with dialect.session(account, within=remaining) as lease:
                request = dialect.upstream_request(account, call, lease)
                self.upstream.telemetry.inject(request.headers)
                response = await self.upstream.send(request, read_timeout=min(self.upstream.read_timeout, remaining))
                outcome = dialect.classify(response, self.retry_after(response))
                if outcome.kind is Kind.SESSION_INVALID:
                    lease.invalidate()
                return outcome, response
        except LoginThrottled as exc:
            return Outcome.throttled(exc.retry_after, detail=str(exc)), None
        except UpstreamError as exc:
            return Outcome.account_failure(exc.failure, detail=str(exc)), None

    def _record(self, account: M, outcome: Outcome, call: Call) -> None:
        self.cluster.record(account.name, outcome)
        if outcome.kind is not Kind.OK:
            log.info("upstream attempt", extra={"request_id": call.request_id, "correlation_id": call.correlation_id,
                                                "account": account.name,
                                                "outcome": outcome.kind.value, "reason": outcome.detail})


def _failover_reason(outcome: Outcome, call: Call) -> str | None:
    """Why the next attempt goes to another account, when this outcome sends it there."""
    if outcome.kind is Kind.ACCOUNT_FAILURE and outcome.failure is not None:
        if may_retry_elsewhere(outcome, idempotency_key=call.idempotency_key is not None):
            return outcome.failure.value
    return None
