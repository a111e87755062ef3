"""The composition root: everything one gateway process runs, built from the config in one place.

`Runtime(config)` builds the parts and wires them together; it does no work of its own. What happens
per app call lives in `gateway.core.sends` (Responsys) and `gateway.delivery.service` (SMS); the
background workers are parts with a `start()`/`close()` of their own (the outbox worker, the
retention purge, each cluster's health checks and shared state, the FDXML poster, the WSDL cache).
`gateway.edge.app.build_app` hands each route the parts it needs; no handler reaches back in here.

    accounts cluster ─┐                        ┌─ RestDialect ─┐
                      ├─ Proxy (forward loop) ─┤               ├─ Sends ─ REST and SOAP routes
    upstream seam ────┘                        └─ SoapDialect ─┘     └── outbox: "rest", "soap"
    SMS cluster ─────── Proxy (one pass) ─ SmsSender ─ SmsService ─ SMS routes, outbox: "sms", "callback"

`start()` opens the store and starts the workers; `close()` stops them in reverse and closes the store.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from gateway.config import Account, Config, SmsUpstream
from gateway.core.dialects import rest as rest_dialect
from gateway.core.dialects import sms as sms_dialect
from gateway.core.dialects.rest import RestDialect, size_rate_limit
from gateway.core.dialects.sms import SmsSender, sms_loop
from gateway.core.dialects.soap import SoapDialect, SoapDocuments
from gateway.core.loop import Proxy
from gateway.core.outbox import Handlers, OutboxWorker, Unhandled, default_owner
from gateway.core.reports import FailureReports
from gateway.core.retention import Retention
from gateway.core.sends import QueuedSends, Sends
from gateway.delivery.service import CallbackHandler, SendHandler, SmsService
from gateway.edge.app_certificates import AppCertificates
from gateway.edge.clients import Credentials
from gateway.protocols import targets
from gateway.reporting.poster import FailurePoster
from gateway.reporting.recorder import FailureReporter
from gateway.store import Store, open_store
from gateway.tasks import cancel_and_wait
from gateway.telemetry.otel import Telemetry
from gateway.upstreams.cluster import Cluster
from gateway.upstreams.documents import DocumentCache
from gateway.upstreams.outbound import OutboundPoster
from gateway.upstreams.resolver import DNSResolver
from gateway.upstreams.sessions import RestSessions, SoapSessions
from gateway.upstreams.upstream import Upstream
from policies.backoff import RetryPolicy, parse_retry_after
from policies.callbacks import CallbackPolicy
from policies.failover import FailoverSettings
from policies.reauth import ReauthPolicy
from policies.tls import client_context

log = logging.getLogger("aftm.runtime")

SHARED_FAILOVER_KEY = "failover"
SHARED_SMS_FAILOVER_KEY = "sms-failover"
# Queued sends wait longer between tries than a live request: the account is down or throttling.
OUTBOX_RETRY = RetryPolicy(wait_initial=1.0, wait_max=60.0)


class Runtime:
    """The gateway's parts, built from the config; started and closed by the app's lifespan."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.replica = default_owner()
        self.store: Store | None = None  # open between start() and close()
        self.telemetry = Telemetry.from_environ()
        self._build_edge_identity()
        self._build_upstreams()
        self._build_responsys()
        self._build_sms()
        self.outbox_handlers = self._outbox_handlers()
        self.outbox: OutboxWorker | None = None
        self.poster: FailurePoster | None = None
        self.retention = Retention(store=self.require_store, config=config)
        self._rng = random.Random()
        self._tasks: list[asyncio.Task[None]] = []

    # --- what is built ----------------------------------------------------------------------------

    def _build_edge_identity(self) -> None:
        config = self.config
        secret = config.session_secret.reveal().encode() if config.session_secret else None
        self.credentials = Credentials(config=config, secret=secret, store=self.require_store)
        self.app_certificates = AppCertificates(config=config, credentials=self.credentials)

    def _build_upstreams(self) -> None:
        config = self.config
        self.resolver = DNSResolver(nameservers=config.dns.nameservers or None, port=config.dns.port,
                                    timeout=config.dns.timeout)
        self.upstream = Upstream(
            telemetry=self.telemetry, resolver=self.resolver,
            ssl_context=client_context(ca_bundle=config.tls.ca_bundle, client_cert=config.tls.client_cert,
                                       client_key=config.tls.client_key),
            connect_timeout=config.upstream.connect_timeout, read_timeout=config.upstream.read_timeout,
            max_connections_per_host=config.upstream.max_connections_per_host,
        )
        self.cluster: Cluster[Account] = Cluster(
            members=config.accounts, settings=_failover_settings(config), upstream=self.upstream,
            probe_url=rest_dialect.probe_url, store=self.require_store, replica=self.replica,
            shared_key=SHARED_FAILOVER_KEY,
            on_switch=lambda event: self.telemetry.metrics.switches.labels(event.reason.value, event.to).inc())
        self.sms_cluster: Cluster[SmsUpstream] | None = Cluster(
            members=config.sms.upstreams, settings=_failover_settings(config), upstream=self.upstream,
            probe_url=sms_dialect.probe_url, store=self.require_store, replica=self.replica,
            shared_key=SHARED_SMS_FAILOVER_KEY, traffic="SMS traffic", member_word="SMS upstream",
        ) if config.sms.upstreams else None

    def _build_responsys(self) -> None:
        config = self.config
        self.rest_sessions = RestSessions(upstream=self.upstream)
        self.soap_sessions = SoapSessions(accounts=config.accounts, upstream=self.upstream)
        self.rest_dialect = RestDialect(self.rest_sessions)
        self.soap_dialect = SoapDialect(self.soap_sessions)
        soap_documents = SoapDocuments(public_url=config.public_url, accounts=self.cluster, upstream=self.upstream)
        self.documents = DocumentCache(paths=soap_documents.roots, fetch=soap_documents.fetch,
                                       refresh_interval=config.upstream.wsdl_refresh,
                                       references=soap_documents.references)
        self.proxy: Proxy[Account] = Proxy(
            cluster=self.cluster, upstream=self.upstream,
            retry=RetryPolicy(attempts=config.retry.attempts, wait_initial=config.retry.wait_initial,
                              wait_max=config.retry.wait_max, retry_after_max=config.retry.retry_after_max),
            reauth=ReauthPolicy(max_relogins=config.retry.max_relogins),
            retry_after=lambda r: parse_retry_after(r.headers.get("retry-after"), time.time()),
        )
        self.reporting = FailureReporter(store=self.require_store)
        self.reports = FailureReports(recorder=self.reporting)
        # Set by the outbox worker's wake-up: an enqueue delivers without waiting for its next poll.
        self._outbox_wake = asyncio.Event()
        self.sends = Sends(loop=self.proxy, store=self.require_store, reports=self.reports, telemetry=self.telemetry,
                           deadline=config.requests.deadline, idempotency_window=config.requests.idempotency_window,
                           outbox_max_age=config.outbox.max_age, kick=self._outbox_wake.set)

    def _build_sms(self) -> None:
        self.sms: SmsService | None = None
        if self.sms_cluster is not None:
            sender = SmsSender(loop=sms_loop(self.sms_cluster, self.upstream))
            self.sms = SmsService(config=self.config, store=self.require_store, upstream=self.upstream,
                                  resolver=self.resolver, sender=sender, kick=self._outbox_wake.set,
                                  reporter=self.reporting)

    def _outbox_handlers(self) -> Handlers:
        """Which part delivers each kind of outbox item (and hears of the dead ones)."""
        handlers = Handlers(telemetry=self.telemetry)
        deadline = self.config.requests.deadline
        handlers.register("rest", QueuedSends(sends=self.sends, dialect=self.rest_dialect, protocol="rest",
                                              reports=self.reports, deadline=deadline,
                                              check_path=targets.queued_target))
        handlers.register("soap", QueuedSends(sends=self.sends, dialect=self.soap_dialect, protocol="soap",
                                              reports=self.reports, deadline=deadline))
        if self.sms is not None:
            handlers.register("sms", SendHandler(self.sms))
            handlers.register("callback", CallbackHandler(self.sms))
        else:  # items an earlier configuration queued
            gone = Unhandled("SMS is no longer configured (sms.upstreams is empty)")
            handlers.register("sms", gone)
            handlers.register("callback", gone)
        return handlers

    # --- start and stop ---------------------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        self.store = store = await open_store(config.store)
        self.outbox = OutboxWorker(
            store=store, deliver=self.outbox_handlers.deliver, on_dead=self.outbox_handlers.on_dead,
            wake=self._outbox_wake, lease_seconds=config.outbox.lease_seconds, batch=config.outbox.batch,
            retry=OUTBOX_RETRY, rng=self._rng,
            lanes={"callback": config.outbox.callback_concurrency},
        )
        if self.sms_cluster is not None:
            await self.sms_cluster.start()
        await self.outbox.start()
        outbound = OutboundPoster(policy=CallbackPolicy.from_config(config.callbacks.allow_networks),
                                  resolver=self.resolver, upstream=self.upstream)
        self.poster = FailurePoster(
            store=store, clients=config.clients, outbound=outbound, owner=self.replica,
            interval=config.reporting.post_interval, batch=config.reporting.batch,
            timeout=config.reporting.post_timeout,
            on_result=lambda result: self.telemetry.metrics.fdxml_posts.labels(result).inc())
        self.poster.start()
        self.documents.start()
        await self.cluster.start()
        self.retention.start()
        for account in config.accounts:
            if account.rate_limit.from_vendor:
                self._tasks.append(asyncio.create_task(
                    size_rate_limit(self.cluster, self.rest_sessions, self.upstream, account), name="rate-limit"))

    async def close(self) -> None:
        """Stop the parts in reverse. One that cannot stop cleanly (the outbox releasing its leases while
        the store is down) is logged and the rest still stop: the upstream pools, the store's
        connections and the last spans are closed and flushed whatever failed before them."""
        sms_cluster, outbox, poster, tasks = self.sms_cluster, self.outbox, self.poster, list(self._tasks)
        self._tasks.clear()
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("background tasks", lambda: cancel_and_wait(*tasks)),
            ("retention purge", self.retention.close),
            *([("FDXML poster", poster.stop)] if poster is not None else []),
            ("WSDL cache", self.documents.stop),
            ("failure reports", self.reports.close),  # failure records still being written
            ("accounts cluster", self.cluster.close),
            *([("SMS cluster", sms_cluster.close)] if sms_cluster is not None else []),
            *([("outbox worker", outbox.stop)] if outbox is not None else []),
            ("upstream pools", self.upstream.aclose),
            ("login checks", _awaitable(self.credentials.close)),
            ("DNS resolver", self.resolver.close),
            ("store", self._close_store),  # open until here: deliveries finishing above still record
            ("telemetry", _awaitable(self.telemetry.shutdown)),
        ]
        for name, step in steps:
            try:
                await step()
            except Exception:
                log.exception("%s did not stop cleanly", name)

    async def _close_store(self) -> None:
        store, self.store = self.store, None
        if store is not None:
            await store.close()

    def require_store(self) -> Store:
        """The open store (the parts use it only between start and close)."""
        if self.store is None:
            raise RuntimeError("the runtime is not started")
        return self.store


def _awaitable(close: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        close()
    return run


def _failover_settings(config: Config) -> FailoverSettings:
    return FailoverSettings(failure_threshold=config.failover.failure_threshold, window=config.failover.window,
                            hold_time=config.failover.hold_time, probe_interval=config.failover.probe_interval)
