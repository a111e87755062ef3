"""The SMS aggregators as a dialect of the forward loop: one MT send, one pass, the outbox retries.

The upstreams are a cluster of their own (`gateway.upstreams.cluster`), run by the same forward loop
as the Responsys accounts (`gateway.core.loop`). What makes an SMS send different is only the loop's
inputs (`sms_loop`): one attempt's worth of retry policy and no relogins, so a send is one pass over the
candidates that never waits in the loop, and a bounded wait for a rate limit. The outbox's schedule is
the retry schedule (SMS sends only ever leave from the outbox). Within the pass:

- the upstream answered: accepted (200 with its messageId), or refused (4xx: by the carrier or not);
- a failure that sent nothing (connect, TLS, DNS, 502/503/504, credentials refused) moves on to the
  next upstream at once;
- an ambiguous failure (a timeout after the message went out, another 5xx) stops the pass: the
  outbox sends again later, with the same `submitterMessageId` (the gateway's messageId), which an
  aggregator that de-duplicates answers with the first messageId instead of a second SMS;
- throttling, a rate limit with no token within `RATE_WAIT_MAX`, or no upstream left: the outbox
  waits (Retry-After, or its backoff) and tries again.
"""

from __future__ import annotations

import base64
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from gateway.config import SmsUpstream
from gateway.core.loop import Call, Lease, Proxy, Result
from gateway.errors import BadMessage
from gateway.protocols import sms
from gateway.upstreams.cluster import Cluster
from gateway.upstreams.upstream import Upstream
from policies.backoff import RetryPolicy, parse_retry_after
from policies.outcome import Kind, Outcome
from policies.reauth import ReauthPolicy

RATE_WAIT_MAX = 5.0  # seconds a send may wait for its upstream's rate limit before trying later
ONE_PASS = RetryPolicy(attempts=1)  # no wait and no second round within a try: the outbox retries


@dataclass(frozen=True, slots=True)
class Accepted:
    upstream: str
    upstream_message_id: str | None


@dataclass(frozen=True, slots=True)
class Refused:
    """The upstream answered 4xx about the message itself: a carrier refusal or a rejection."""

    upstream: str
    status_code: int
    answer: sms.MtResponse | None  # None when the body was unreadable

    @property
    def by_carrier(self) -> bool:
        return self.answer is not None and self.answer.carrier_failure


@dataclass(frozen=True, slots=True)
class NotSent:
    """No upstream took it this time; `retry_after` when one asked for a pause."""

    reason: str
    retry_after: float | None = None


SendResult = Accepted | Refused | NotSent


class _NoSession:
    """The MT API has no session: each request carries HTTP Basic."""

    def invalidate(self) -> None:
        pass


_NO_SESSION = _NoSession()


class SmsDialect:
    """The MT API's answers to the forward loop: the request for an upstream, its verdict."""

    def serves(self, account: SmsUpstream) -> bool:
        return True

    @contextlib.asynccontextmanager
    async def session(self, account: SmsUpstream, *, within: float) -> AsyncIterator[Lease]:
        yield _NO_SESSION

    def upstream_request(self, account: SmsUpstream, call: Call, lease: Lease) -> httpx.Request:
        return httpx.Request("POST", account.url.rstrip("/") + sms.UPSTREAM_PATH, content=call.body, headers={
            "Authorization": _basic(account), "Content-Type": f"{sms.XML_TYPE}; charset=utf-8",
            "Accept": sms.XML_TYPE})

    def classify(self, response: httpx.Response, retry_after: float | None) -> Outcome:
        return sms.classify(response.status_code, response.content, retry_after=retry_after)

    def answer(self, account: SmsUpstream, call: Call, response: httpx.Response) -> httpx.Response:
        return response


def probe_url(upstream: SmsUpstream) -> str:
    """Where a health check GETs: the MT URL itself (a GET there sends nothing)."""
    return upstream.url.rstrip("/") + sms.UPSTREAM_PATH


def sms_loop(cluster: Cluster[SmsUpstream], upstream: Upstream) -> Proxy[SmsUpstream]:
    """The forward loop with the SMS sends' inputs: one pass, no relogin, a bounded rate-limit wait."""
    return Proxy(cluster=cluster, upstream=upstream, retry=ONE_PASS, reauth=ReauthPolicy(max_relogins=0),
                 retry_after=lambda r: parse_retry_after(r.headers.get("retry-after"), time.time()),
                 rate_wait_max=RATE_WAIT_MAX)


class SmsSender:
    """Sends `mtMessage` documents to the SMS upstreams through the forward loop (see the module docstring)."""

    def __init__(self, *, loop: Proxy[SmsUpstream], dialect: SmsDialect | None = None) -> None:
        self.loop = loop
        self._dialect = dialect or SmsDialect()

    @property
    def cluster(self) -> Cluster[SmsUpstream]:
        return self.loop.cluster

    async def send(self, document: bytes, *, request_id: str = "", client: str = "") -> SendResult:
        """One pass over the candidate upstreams."""
        call = Call(protocol="sms", method="POST", path=sms.UPSTREAM_PATH, headers=(), body=document,
                    request_id=request_id, client=client, is_send=True, correlation_id=request_id)
        # No deadline of its own: each attempt keeps the upstream's read timeout, and the outbox's
        # delivery timeout bounds the whole try.
        return send_result(await self.loop.forward(call, self._dialect, deadline=math.inf))


def send_result(result: Result) -> SendResult:
    """What one pass of the forward loop means for the message (see the module docstring)."""
    if result.status == "answered" and result.response is not None and result.account is not None:
        response = result.response
        if result.outcome is not None and result.outcome.kind is Kind.OK:
            return Accepted(result.account, _message_id(response.content))
        return Refused(result.account, response.status_code, _answer(response.content))
    if result.rate_limited is not None:
        return NotSent(f"{result.rate_limited}: over its rate limit", retry_after=RATE_WAIT_MAX)
    outcome, name = result.outcome, result.last_account
    if outcome is None or name is None:
        return NotSent("no SMS upstream is configured")
    if outcome.kind is Kind.THROTTLED:
        return NotSent(f"{name}: throttled", retry_after=outcome.retry_after)
    last = f"{name}: {outcome.detail or outcome.kind.value}"
    if outcome.ambiguous:
        return NotSent(f"{last} (ambiguous: the message may have gone out; sent again later)")
    return NotSent(last)


def _basic(upstream: SmsUpstream) -> str:
    pair = f"{upstream.user_name}:{upstream.password.reveal()}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _answer(body: bytes) -> sms.MtResponse | None:
    try:
        return sms.parse_response(body)
    except BadMessage:
        return None


def _message_id(body: bytes) -> str | None:
    answer = _answer(body)
    return None if answer is None else answer.message_id
