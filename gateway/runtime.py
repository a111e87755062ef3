"""The running gateway: what the lifespan opens, what the routes share, what the workers do.

`Runtime` owns the store, the upstream seam, the sessions, the policies and the background workers
(outbox resubmission, active health probes). Routes reach it through `request.app.state.runtime`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import secrets
import time
from collections.abc import Coroutine
from typing import Any

import httpx
from starlette.requests import Request

from gateway.config import Account, Config
from gateway.core import idempotency
from gateway.core.dialects import rest as rest_dialect
from gateway.core.dialects import sms as sms_dialect
from gateway.core.dialects.rest import RestDialect, send_summary, size_rate_limit
from gateway.core.dialects.sms import SmsSender, sms_loop
from gateway.core.dialects.soap import SoapDialect, SoapDocuments
from gateway.core.loop import Call, Dialect, Proxy, Result
from gateway.core.outbox import (
    Delivered,
    DeliveryResult,
    FailedPermanently,
    OutboxWorker,
    Retry,
    RetryAfter,
    default_owner,
)
from gateway.delivery.service import SmsService
from gateway.edge.app_certificates import AppCertificates
from gateway.edge.bodies import read_body
from gateway.edge.clients import Credentials
from gateway.protocols import responsys_rest as rest
from gateway.protocols import targets
from gateway.reporting.codes import FailureKind
from gateway.reporting.poster import FailurePoster
from gateway.reporting.recorder import FailureReporter
from gateway.store import IdempotencyRecord, OutboxItem, PurgeCount, Store, StoreError, open_store, scoped_key
from gateway.tasks import cancel_and_wait
from gateway.telemetry.otel import Telemetry
from gateway.upstreams.cluster import Cluster
from gateway.upstreams.documents import DocumentCache
from gateway.upstreams.outbound import OutboundPoster
from gateway.upstreams.resolver import DNSResolver
from gateway.upstreams.sessions import RestSessions, SoapSessions
from gateway.upstreams.upstream import Upstream
from policies.backoff import RetryPolicy, backoff_delay, parse_retry_after
from policies.callbacks import CallbackPolicy
from policies.failover import (
    FailoverSettings,
)
from policies.outcome import Failure, Kind, Outcome
from policies.reauth import ReauthPolicy
from policies.tls import client_context

log = logging.getLogger("aftm.runtime")

IN_PROGRESS = 0  # status_code of an idempotency record that is a claim, not an answer yet
CLAIM_MARGIN = 5.0  # seconds a claim outlives its request's deadline
CLAIM_POLL = 0.05  # seconds between looks at a claim held by another request
SHARED_FAILOVER_KEY = "failover"
SHARED_SMS_FAILOVER_KEY = "sms-failover"
KEY_IN_FLIGHT = Outcome.throttled(1.0, detail="the same Idempotency-Key is in flight")
STORE_UNAVAILABLE = Outcome.account_failure(Failure.UNAVAILABLE, detail="the gateway's store is unavailable")


class Runtime:
    """Everything one gateway process runs; built from the config, started and closed by the lifespan."""

    def __init__(self, config: Config) -> None:
        self.config = config
        secret = config.session_secret.reveal().encode() if config.session_secret else None
        self.credentials = Credentials(config=config, secret=secret, store=self._store)
        self.app_certificates = AppCertificates(config=config, credentials=self.credentials)
        self.accounts = list(config.accounts)
        self._by_name = {a.name: a for a in self.accounts}
        self.replica = default_owner()
        self._background: set[asyncio.Task[None]] = set()
        self.resolver = DNSResolver(nameservers=config.dns.nameservers or None, port=config.dns.port,
                                    timeout=config.dns.timeout)
        self.telemetry = Telemetry.from_environ()
        self.upstream = Upstream(
            telemetry=self.telemetry, resolver=self.resolver,
            ssl_context=client_context(ca_bundle=config.tls.ca_bundle, client_cert=config.tls.client_cert,
                                       client_key=config.tls.client_key),
            connect_timeout=config.upstream.connect_timeout, read_timeout=config.upstream.read_timeout,
            max_connections_per_host=config.upstream.max_connections_per_host,
        )
        self.cluster = Cluster(
            members=self.accounts, settings=_failover_settings(config), upstream=self.upstream,
            probe_url=rest_dialect.probe_url, store=self._store,
            replica=self.replica, shared_key=SHARED_FAILOVER_KEY,
            on_switch=lambda event: self.telemetry.metrics.switches.labels(event.reason.value, event.to).inc())
        self.failover = self.cluster.failover
        self.sms_cluster = Cluster(
            members=config.sms.upstreams, settings=_failover_settings(config), upstream=self.upstream,
            probe_url=sms_dialect.probe_url, store=self._store, replica=self.replica,
            shared_key=SHARED_SMS_FAILOVER_KEY, traffic="SMS traffic", member_word="SMS upstream",
        ) if config.sms.upstreams else None
        self.rest_sessions = RestSessions(upstream=self.upstream)
        self.soap_sessions = SoapSessions(accounts=self.accounts, upstream=self.upstream)
        soap_documents = SoapDocuments(public_url=config.public_url, accounts=self.cluster, upstream=self.upstream)
        self.documents = DocumentCache(paths=soap_documents.roots, fetch=soap_documents.fetch,
                                       refresh_interval=config.upstream.wsdl_refresh,
                                       references=soap_documents.references)
        self.rest_dialect: Dialect[Account] = RestDialect(self.rest_sessions)
        self.soap_dialect: Dialect[Account] = SoapDialect(self.soap_sessions)
        self.proxy = Proxy(
            cluster=self.cluster, upstream=self.upstream,
            retry=RetryPolicy(attempts=config.retry.attempts, wait_initial=config.retry.wait_initial,
                              wait_max=config.retry.wait_max, retry_after_max=config.retry.retry_after_max),
            reauth=ReauthPolicy(max_relogins=config.retry.max_relogins),
            retry_after=lambda r: parse_retry_after(r.headers.get("retry-after"), time.time()),
        )
        self.store: Store | None = None
        self.sms: SmsService | None = None
        self.outbox: OutboxWorker | None = None
        self.reporting = FailureReporter(store=self._store)
        self.poster: FailurePoster | None = None
        # Queued sends wait longer between tries than a live request: the account is down or throttling.
        self._outbox_retry = RetryPolicy(wait_initial=1.0, wait_max=60.0)
        self._rng = random.Random()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.store = await open_store(self.config.store)
        self.outbox = OutboxWorker(
            store=self.store, deliver=self._deliver, lease_seconds=self.config.outbox.lease_seconds,
            batch=self.config.outbox.batch,
            next_delay=lambda attempts: backoff_delay(self._outbox_retry, attempts, self._rng),
            on_dead=self._on_dead, lanes={"callback": self.config.outbox.callback_concurrency},
        )
        if self.sms_cluster is not None:
            self.sms = SmsService(config=self.config, store=self.store, upstream=self.upstream,
                                  resolver=self.resolver,
                                  sender=SmsSender(loop=sms_loop(self.sms_cluster, self.upstream)),
                                  kick=self.outbox.kick, reporter=self.reporting)
            await self.sms_cluster.start()
        await self.outbox.start()
        outbound = OutboundPoster(policy=CallbackPolicy.from_config(self.config.callbacks.allow_networks),
                                  resolver=self.resolver, upstream=self.upstream)
        self.poster = FailurePoster(
            store=self.store, clients=self.config.clients, outbound=outbound, owner=self.replica,
            interval=self.config.reporting.post_interval, batch=self.config.reporting.batch,
            timeout=self.config.reporting.post_timeout,
            on_result=lambda result: self.telemetry.metrics.fdxml_posts.labels(result).inc())
        self.poster.start()
        self.documents.start()
        await self.cluster.start()
        self._tasks.append(asyncio.create_task(self._purge_loop(), name="retention"))
        for account in self.accounts:
            if account.rate_limit.from_vendor:
                self._tasks.append(asyncio.create_task(
                    size_rate_limit(self.cluster, self.rest_sessions, self.upstream, account), name="rate-limit"))

    async def close(self) -> None:
        await cancel_and_wait(*self._tasks)
        if self.poster is not None:
            await self.poster.stop()
        await self.documents.stop()
        for task in list(self._background):  # failure records still being written
            with contextlib.suppress(Exception):
                await task
        await self.cluster.close()
        if self.sms_cluster is not None:
            await self.sms_cluster.close()
        if self.outbox is not None:
            await self.outbox.stop()
        await self.upstream.aclose()
        self.credentials.close()
        await self.resolver.close()
        if self.store is not None:
            await self.store.close()
            self.store = None
        self.telemetry.shutdown()

    def candidate_accounts(self) -> list[Account]:
        return self.cluster.candidates()

    async def read_body(self, request: Request, *, limit: int | None = None) -> bytes:
        """The request body through the one bounded reader (gateway.edge.bodies): `limit` bytes, default
        `requests.max_body_bytes`, within `requests.body_timeout`; raises BodyRefused otherwise."""
        return await read_body(request, limit=self.config.requests.max_body_bytes if limit is None else limit,
                               within=self.config.requests.body_timeout)

    async def handle(self, call: Call, dialect: Dialect[Account]) -> Result:
        """Forward an app call with idempotency and the outbox as the last resort for sends.

        A repeated Idempotency-Key gets the first answer again, or `queued` while the first is still
        in the outbox, and nothing is sent again. While the first is still in flight (on any replica), a
        repeat waits for its answer; past the deadline it is told to retry shortly (429). A key reused
        for a different request raises idempotency.KeyReused (recorded as a malformed send): nothing is sent.
        """
        deadline = time.monotonic() + self.config.requests.deadline
        try:
            if call.idempotency_key is None:
                result = await self.proxy.forward(call, dialect, deadline=deadline, enqueue=self._enqueue)
            else:
                result = await self._handle_keyed(call, call.idempotency_key, dialect, deadline)
        except idempotency.KeyReused as exc:
            if call.is_send:
                self.report(FailureKind.MALFORMED_REQUEST, client=call.client, error=f"Not Sent: {exc}",
                            send_id=call.request_id, correlation_id=call.correlation_id, path=call.path,
                            body=call.body, protocol=call.protocol)
            raise
        except StoreError as exc:
            # Nothing was accepted: the send could not be queued or its key claimed. The app retries.
            log.warning("store unavailable; request not accepted: %s", exc,
                        extra={"request_id": call.request_id})
            result = Result("failed", request_id=call.request_id, outcome=STORE_UNAVAILABLE)
        self.telemetry.metrics.requests.labels(call.protocol, result.account or "", result.status).inc()
        if call.is_send and result.outcome not in (STORE_UNAVAILABLE, KEY_IN_FLIGHT):
            self._report_send(call, result)
        return result

    def _report_rejected_recipients(self, call: Call, result: Result) -> None:
        """A REST send answered 200 may still reject some recipients (`"success": false` per recipient)."""
        assert result.response is not None
        keyword, _ = _summary(call.protocol, call.path, b"")
        for recipient, error in rest.rejected_recipients(result.response.content):
            self._in_background(self.reporting.record(
                FailureKind.UPSTREAM_REJECTED_RECIPIENT, client=call.client, error=f"Not Sent: {error}",
                account=result.account, keyword=keyword, numbers=recipient, send_id=call.request_id,
                correlation_id=call.correlation_id),
                name="record-failure")

    def _report_send(self, call: Call, result: Result) -> None:
        """Record a send that failed for the app to see (in the background: the app's answer goes now)."""
        outcome = result.outcome
        if result.status == "failed":
            kind, error = FailureKind.RETRIES_EXHAUSTED, (
                f"Not Sent: {outcome.detail if outcome is not None and outcome.detail else 'no account took it'}")
        elif outcome is not None and outcome.kind is Kind.CLIENT_ERROR and result.response is not None:
            kind, error = FailureKind.UPSTREAM_REJECTED, f"Not Sent: {rest.error_text(result.response.content)}"
        elif (call.protocol == "rest" and result.response is not None
              and rest.may_reject_recipients(result.response.content)):
            self._report_rejected_recipients(call, result)
            return
        else:
            return
        self.report(kind, client=call.client, error=error, account=result.account, send_id=call.request_id,
                    correlation_id=call.correlation_id, path=call.path, body=call.body, protocol=call.protocol)

    def report(self, kind: FailureKind, *, client: str, error: str, send_id: str, path: str = "",
               body: bytes = b"", protocol: str = "rest", account: str | None = None,
               correlation_id: str = "") -> None:
        """Record a failure of an app call in the background (a REST send's campaign and recipients too).

        `send_id` is the gateway's request id; `correlation_id` the app's X-Request-Id, a label only.
        """
        keyword, numbers = _summary(protocol, path, body)
        self._in_background(self.reporting.record(kind, client=client, error=error, account=account,
                                                  keyword=keyword, numbers=numbers, send_id=send_id,
                                                  correlation_id=correlation_id),
                            name="record-failure")

    def _in_background(self, work: Coroutine[Any, Any, None], *, name: str) -> None:
        """Run `work` without making the caller wait; close() waits for what is still running."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _handle_keyed(self, call: Call, key: str, dialect: Dialect[Account], deadline: float) -> Result:
        """A keyed request: the first answer replayed, the queued send named, or this one sent once.

        Raises KeyReused when the key was used for a different request (gateway.core.idempotency).
        """
        store = self._store()
        scoped, claim = scoped_key(call.client, key), secrets.token_hex(16).encode()
        request = idempotency.fingerprint(call.protocol, call.method, call.path, call.body)
        while True:
            if (replay := await self._replay(call.client, key, call.request_id, request)) is not None:
                return replay
            if (queued := await self._queued(call.client, key, request)) is not None:
                return queued
            # A claim is a record "in progress" (status 0) that expires soon after this request's deadline,
            # so a replica that dies holding one does not block the key for long.
            record = await store.idempotency_put(scoped, IN_PROGRESS, (), claim,
                                                 time.time() + self.config.requests.deadline + CLAIM_MARGIN,
                                                 fingerprint=request)
            if not idempotency.same_request(record.fingerprint, request):
                raise idempotency.KeyReused()
            if record.status_code != IN_PROGRESS:
                return _replayed(record, call.request_id)
            if record.body == claim:
                # The request that held the key before this claim may have queued the send and then let
                # go of its claim after our look at the outbox: look again, now that no one else can.
                if (queued := await self._queued(call.client, key, request)) is not None:
                    await store.idempotency_settle(scoped, claim, status_code=None)
                    return queued
                break
            if time.monotonic() > deadline:
                return Result("failed", request_id=call.request_id, outcome=KEY_IN_FLIGHT)
            await asyncio.sleep(CLAIM_POLL)
        settled = False
        try:
            result = await self.proxy.forward(call, dialect, deadline=deadline, enqueue=self._enqueue)
            if result.status == "answered" and result.response is not None:
                try:
                    settled = await store.idempotency_settle(
                        scoped, claim, status_code=result.response.status_code,
                        headers=_content_type(result.response), body=result.response.content,
                        expires_at=time.time() + self.config.requests.idempotency_window)
                except StoreError as exc:  # the account answered: the app gets that answer regardless
                    log.warning("could not record the answer to an Idempotency-Key: %s", exc,
                                extra={"request_id": call.request_id})
            return result
        finally:
            if not settled:  # queued, failed or cancelled: free the key (the outbox item holds it if queued)
                with contextlib.suppress(Exception):
                    await store.idempotency_settle(scoped, claim, status_code=None)

    async def _replay(self, client: str, key: str, request_id: str, request: str | None = None) -> Result | None:
        """The recorded answer to a client's key; KeyReused if it answered another request than `request`."""
        record = await self._store().idempotency_get(scoped_key(client, key))
        if record is None or record.status_code == IN_PROGRESS:
            return None
        if request is not None and not idempotency.same_request(record.fingerprint, request):
            raise idempotency.KeyReused()
        return _replayed(record, request_id)

    async def _queued(self, client: str, key: str, request: str) -> Result | None:
        """The queued (or delivered) send holding a client's key; KeyReused if it is another request."""
        item = await self._store().find_by_key(client, key)
        if item is None:
            return None
        if not idempotency.same_request(item.fingerprint, request):
            raise idempotency.KeyReused()
        return Result("queued", request_id=item.id)

    async def _remember(self, item: OutboxItem, response: httpx.Response) -> None:
        assert item.idempotency_key is not None
        await self._store().idempotency_put(
            scoped_key(item.client, item.idempotency_key), response.status_code, _content_type(response),
            response.content, time.time() + self.config.requests.idempotency_window,
            fingerprint=item.fingerprint)

    async def _enqueue(self, call: Call) -> str:
        """Commit a send to the outbox; returns only once it is durable (the app then gets 202)."""
        trace_context: dict[str, str] = {}
        self.telemetry.inject(trace_context)  # the delivery's span links back to this request's
        item = OutboxItem.new(
            protocol=call.protocol, method=call.method, path=call.path,
            headers=call.headers + tuple(trace_context.items()), body=call.body,
            client=call.client, now=time.time(), max_age=self.config.outbox.max_age,
            idempotency_key=call.idempotency_key, request_id=call.request_id, correlation_id=call.correlation_id,
            fingerprint=None if call.idempotency_key is None else idempotency.fingerprint(
                call.protocol, call.method, call.path, call.body))
        item_id = await self._store().enqueue(item)
        if self.outbox is not None:
            self.outbox.kick()
        return item_id

    async def _deliver(self, item: OutboxItem) -> DeliveryResult:
        """One resubmission of a queued send through the same forward loop (never re-queued)."""
        with self.telemetry.outbox_delivery(item_id=item.id, attempts=item.attempts, headers=dict(item.headers)):
            result = await self._deliver_once(item)
        outcome = type(result).__name__.lower()
        self.telemetry.metrics.outbox_deliveries.labels(outcome).inc()
        if item.protocol == "callback":
            self.telemetry.metrics.callback_posts.labels(outcome).inc()
        return result

    async def _deliver_once(self, item: OutboxItem) -> DeliveryResult:
        protocol = item.protocol
        if protocol == "sms" or protocol == "callback":  # SMS sends and app callbacks: the SMS service's
            if self.sms is None:
                return FailedPermanently("SMS is no longer configured (sms.upstreams is empty)")
            return await self.sms.deliver(item)
        if item.idempotency_key is not None:
            replay = await self._replay(item.client, item.idempotency_key, item.id)
            if replay is not None and replay.response is not None:
                return Delivered(status_code=replay.response.status_code)
        path = item.path
        if protocol == "rest":
            try:  # never send a queued target unchecked (an older gateway queued decoded paths)
                path = targets.queued_target(item.path)
            except targets.UnsafeTarget as exc:
                return FailedPermanently(f"the queued path was refused: {exc}")
        call = Call(protocol=protocol, method=item.method, path=path, headers=item.headers,
                    body=item.body, request_id=item.id, client=item.client, is_send=True,
                    idempotency_key=item.idempotency_key, correlation_id=item.correlation_id or item.id)
        dialect = self.rest_dialect if item.protocol == "rest" else self.soap_dialect
        deadline = time.monotonic() + self.config.requests.deadline
        result = await self.proxy.forward(call, dialect, deadline=deadline)
        outcome = result.outcome
        if result.status == "answered" and result.response is not None:
            if item.idempotency_key is not None:
                await self._remember(item, result.response)
            if outcome is not None and outcome.kind is Kind.CLIENT_ERROR:
                return FailedPermanently(f"the account rejected the send: {outcome.detail}")
            return Delivered(status_code=result.response.status_code, body=result.response.content[:2048],
                             account=result.account)
        if outcome is not None and outcome.kind is Kind.THROTTLED and outcome.retry_after is not None:
            return RetryAfter(outcome.retry_after)
        # An ambiguous failure of a queued send is retried: the app was told "accepted", and losing
        # the send is worse than a possible duplicate of an unkeyed one.
        return Retry(outcome.detail if outcome is not None else "no account could take the send")

    async def _on_dead(self, item: OutboxItem, reason: str) -> None:
        """An outbox item was given up on: an SMS send or callback is the SMS service's to record."""
        if item.protocol in ("sms", "callback") and self.sms is not None:
            await self.sms.on_dead(item, reason)
        elif item.protocol in ("rest", "soap"):
            keyword, numbers = _summary(item.protocol, item.path, item.body)
            await self.reporting.record(FailureKind.OUTBOX_DEAD, client=item.client, error=f"Not Sent: {reason}",
                                        keyword=keyword, numbers=numbers, send_id=item.id,
                                        correlation_id=item.correlation_id or "")

    def require_store(self) -> Store:
        """The open store (routes run only between start and close)."""
        return self._store()

    def _store(self) -> Store:
        if self.store is None:
            raise RuntimeError("the runtime is not started")
        return self.store

    async def store_reachable(self) -> bool:
        try:
            await self._store().ping()
        except Exception:  # any failure to reach the store means "not ready"
            return False
        return True

    async def status(self) -> dict[str, Any]:
        store = self._store()
        return {
            "active": self.failover.active,
            "switches": dict(self.cluster.switches),
            "failover": self.failover.status(),
            "outbox": {"depth": await store.depth(), "oldest_pending_age": await store.oldest_pending_age(time.time())},
            "rate_limits_per_minute": {n: round(b.rate_per_second * 60, 3) for n, b in self.cluster.buckets.items()},
            "upstream_logins": {"rest": dict(self.rest_sessions.logins), "soap": dict(self.soap_sessions.logins)},
            **({"sms_upstreams": self.sms_cluster.status()} if self.sms_cluster is not None else {}),
        }

    async def purge_once(self) -> PurgeCount:
        """Drop expired idempotency records and revocations, and finished outbox items older than the retention."""
        now = time.time()
        keep = max(self.config.outbox.retention_days * 86_400.0, self.config.requests.idempotency_window)
        purged = await self._store().purge_expired(now, finished_before=now - keep)
        failures = await self._store().purge_failures(now - self.config.reporting.retention_days * 86_400.0)
        return dataclasses.replace(purged, failures=failures)

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.outbox.purge_interval)
            try:
                purged = await self.purge_once()
            except Exception as exc:  # the store is down (readyz says so): this loop must live on and retry
                log.warning("retention purge failed", extra={"reason": str(exc)})
            else:
                if any(dataclasses.astuple(purged)):
                    log.info("retention purge", extra=dataclasses.asdict(purged))

def _failover_settings(config: Config) -> FailoverSettings:
    return FailoverSettings(failure_threshold=config.failover.failure_threshold, window=config.failover.window,
                            hold_time=config.failover.hold_time, probe_interval=config.failover.probe_interval)


def _replayed(record: IdempotencyRecord, request_id: str) -> Result:
    response = httpx.Response(record.status_code, headers=list(record.headers), content=record.body)
    return Result("answered", response=response, request_id=request_id)


def _content_type(response: httpx.Response) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in response.headers.items() if k.lower() == "content-type")


def _summary(protocol: str, path: str, body: bytes) -> tuple[str, str]:
    """A failure entry's keyword (the REST campaign or event) and numbers (its recipients, comma-joined)."""
    return send_summary(path, body) if protocol == "rest" else ("", "")
