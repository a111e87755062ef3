"""One MT send through the SMS upstreams, with the core's failover, DNS, TLS, rate and health rules.

The upstreams are a cluster of their own (their health says nothing of the Responsys accounts'), run
by the same `policies.failover.FailoverPolicy`, `policies.ratelimit.TokenBucket` and upstream seam
(`gateway.upstreams.upstream.Upstream`: fresh DNS per request, TLS 1.2 floor, typed errors). A send is one
pass over the candidates, as the proxy does within one app request:

- the upstream answered: accepted (200 with its messageId), or refused (4xx: by the carrier or not);
- a failure that sent nothing (connect, TLS, DNS, 502/503/504, credentials refused) moves on to the
  next upstream at once;
- an ambiguous failure (a timeout after the message went out, another 5xx) stops the pass: the
  outbox sends again later, with the same `submitterMessageId` (the gateway's messageId), which an
  aggregator that de-duplicates answers with the first messageId instead of a second SMS;
- throttling, or no upstream left: the outbox waits (Retry-After, or its backoff) and tries again.

SMS sends only ever leave from the outbox, so the outbox's schedule is the retry schedule.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from gateway.config import Config, SmsUpstream
from gateway.errors import UpstreamError
from gateway.protocols import sms
from gateway.tasks import cancel_and_wait
from gateway.upstreams.upstream import Upstream
from policies.backoff import parse_retry_after
from policies.failover import FailoverEvent, FailoverPolicy, FailoverSettings, may_retry_elsewhere
from policies.outcome import Kind, Outcome
from policies.ratelimit import TokenBucket

log = logging.getLogger("aftm.sms")

PROBE_TICK = 0.1  # seconds between checks of which upstream is due a probe
RATE_WAIT_MAX = 5.0  # seconds a send may wait for its upstream's rate limit before trying later


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


class SmsSender:
    """Sends `mtMessage` documents to the SMS upstreams; `start()`/`close()` run the health probes."""

    def __init__(self, *, config: Config, upstream: Upstream,
                 on_event: Callable[[FailoverEvent], None] | None = None) -> None:
        self.upstreams = list(config.sms.upstreams)
        self._by_name = {u.name: u for u in self.upstreams}
        self._transport = upstream
        self._on_event = on_event or (lambda event: None)
        self.failover = FailoverPolicy(
            accounts=[u.name for u in self.upstreams],
            settings=FailoverSettings(failure_threshold=config.failover.failure_threshold,
                                      window=config.failover.window, hold_time=config.failover.hold_time,
                                      probe_interval=config.failover.probe_interval),
            clock=time.time,
        )
        self.buckets = {u.name: TokenBucket(rate_per_second=u.rate_limit.per_minute / 60.0, burst=u.rate_limit.burst)
                        for u in self.upstreams if u.rate_limit.per_minute > 0}
        self._probes: asyncio.Task[None] | None = None

    async def send(self, document: bytes) -> SendResult:
        """One pass over the candidate upstreams (see the module docstring)."""
        last = "no SMS upstream is configured"
        for number, name in enumerate(self.failover.candidates(), start=1):
            upstream = self._by_name[name]
            bucket = self.buckets.get(name)
            if bucket is not None:
                wait = bucket.try_reserve(RATE_WAIT_MAX)
                if wait is None:
                    return NotSent(f"{name}: over its rate limit", retry_after=RATE_WAIT_MAX)
                await asyncio.sleep(wait)
            telemetry = self._transport.telemetry
            with telemetry.attempt(account=name, number=number, request_id="", after_relogin=False) as span:
                outcome, response = await self._attempt(upstream, document)
                reason = outcome.failure.value if outcome.failure is not None and may_retry_elsewhere(
                    outcome, idempotency_key=False) else None
                telemetry.attempt_result(span, name, outcome, response.extensions if response else None,
                                         failover_reason=reason)
            self._record(name, outcome)
            if outcome.kind is Kind.OK and response is not None:
                return Accepted(name, _message_id(response.content))
            if outcome.kind is Kind.CLIENT_ERROR and response is not None:
                return Refused(name, response.status_code, _answer(response.content))
            if outcome.kind is Kind.THROTTLED:
                return NotSent(f"{name}: throttled", retry_after=outcome.retry_after)
            last = f"{name}: {outcome.detail or outcome.kind.value}"
            if not may_retry_elsewhere(outcome, idempotency_key=False):
                return NotSent(f"{last} (ambiguous: the message may have gone out; sent again later)")
        return NotSent(last)

    async def _attempt(self, upstream: SmsUpstream, document: bytes) -> tuple[Outcome, httpx.Response | None]:
        request = httpx.Request("POST", upstream.url.rstrip("/") + sms.UPSTREAM_PATH, content=document, headers={
            "Authorization": _basic(upstream), "Content-Type": f"{sms.XML_TYPE}; charset=utf-8",
            "Accept": sms.XML_TYPE})
        self._transport.telemetry.inject(request.headers)
        try:
            response = await self._transport.send(request)
        except UpstreamError as exc:
            return Outcome.account_failure(exc.failure, detail=str(exc)), None
        retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
        return sms.classify(response.status_code, response.content, retry_after=retry_after), response

    def _record(self, name: str, outcome: Outcome) -> None:
        event = self.failover.record(name, outcome)
        if event is not None:
            self._on_event(event)
        if outcome.kind is not Kind.OK:
            log.info("SMS upstream attempt", extra={"upstream": name, "outcome": outcome.kind.value,
                                                   "reason": outcome.detail})

    # --- health probes ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._probes is None and self.upstreams:
            self._probes = asyncio.create_task(self._probe_loop(), name="sms-health-probes")

    async def close(self) -> None:
        await cancel_and_wait(self._probes)
        self._probes = None

    async def _probe_loop(self) -> None:
        probing: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                for upstream in self.upstreams:
                    running = probing.get(upstream.name)
                    if (running is None or running.done()) and self.failover.probe_due(upstream.name):
                        probing[upstream.name] = asyncio.create_task(self._probe(upstream))
                await asyncio.sleep(PROBE_TICK)
        finally:
            for task in probing.values():
                task.cancel()

    async def _probe(self, upstream: SmsUpstream) -> None:
        """An upstream that answers HTTP at all (< 500) on its MT URL is up (a GET there sends nothing)."""
        try:
            response = await self._transport.send(
                httpx.Request("GET", upstream.url.rstrip("/") + sms.UPSTREAM_PATH), read_timeout=2.0)
        except UpstreamError as exc:
            healthy, detail = False, str(exc)
        else:
            healthy, detail = response.status_code < 500, f"HTTP {response.status_code}"
        event = self.failover.record_probe(upstream.name, healthy, detail)
        if event is not None:
            self._on_event(event)


def _basic(upstream: SmsUpstream) -> str:
    pair = f"{upstream.user_name}:{upstream.password.reveal()}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _answer(body: bytes) -> sms.MtResponse | None:
    try:
        return sms.parse_response(body)
    except sms.BadMessage:
        return None


def _message_id(body: bytes) -> str | None:
    answer = _answer(body)
    return None if answer is None else answer.message_id
