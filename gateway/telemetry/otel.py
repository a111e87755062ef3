"""Traces and metrics of one gateway runtime: OpenTelemetry spans to a collector, Prometheus counters.

Nothing here is process-global: each `Runtime` owns a `Telemetry` (its own TracerProvider and
metrics registry), so several gateways in one process (tests, the drill) do not share state.

Tracing is on when an OTLP endpoint is configured the standard way (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and `OTEL_SDK_DISABLED` is not true; the SDK itself reads the
other `OTEL_*` variables (service name and resource attributes, sampler and its argument, exporter
headers and timeouts, batch sizes). Otherwise spans are no-ops and cost next to nothing.

Span tree of one app request:

    POST rest                      server span; W3C traceparent continued from the app
    ├── upstream attempt           one per try: account, attempt number, outcome, failover reason,
    │   ├── dns resolve            resolved address, TLS version, whether it follows a re-login
    │   └── upstream login         a re-login that this attempt waited for
    └── upstream attempt ...
    outbox delivery                a queued send's later delivery, linked to the request that queued it

Attributes carry names, addresses, codes and counts, never tokens, passwords or session ids.
"""

from __future__ import annotations

import contextlib
import os
import time
import weakref
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, NoOpTracer, Span, SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from policies.outcome import Kind, Outcome

TRACER_NAME = "aftm-gateway"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DNS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def tracing_configured(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


class Metrics:
    """The gateway's Prometheus metrics in a registry of its own; `render()` is the exposition text."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("aftm_requests", "App requests by route, account and outcome",
                                ["route", "account", "outcome"], registry=registry)
        self.request_seconds = Histogram("aftm_request_duration_seconds", "App request latency by route",
                                         ["route", "status_class"], buckets=LATENCY_BUCKETS, registry=registry)
        self.attempts = Counter("aftm_upstream_attempts", "Upstream attempts by account and outcome",
                                ["account", "outcome"], registry=registry)
        self.attempt_seconds = Histogram("aftm_upstream_attempt_duration_seconds", "Upstream attempt latency",
                                         ["account"], buckets=LATENCY_BUCKETS, registry=registry)
        self.switches = Counter("aftm_failover_switches", "Changes of the active account by kind",
                                ["kind", "to_account"], registry=registry)
        self.active = Gauge("aftm_active_account", "1 for the account traffic goes to, 0 for the others",
                            ["account"], registry=registry)
        self.logins = Counter("aftm_upstream_logins", "Upstream logins by account and protocol",
                              ["account", "protocol"], registry=registry)
        self.throttled = Counter("aftm_upstream_throttled", "Upstream answers that throttled the gateway",
                                 ["account"], registry=registry)
        self.outbox_depth = Gauge("aftm_outbox_depth", "Sends waiting in the outbox", registry=registry)
        self.outbox_oldest = Gauge("aftm_outbox_oldest_age_seconds", "Age of the oldest waiting send",
                                   registry=registry)
        self.outbox_deliveries = Counter("aftm_outbox_deliveries", "Outbox delivery tries by result",
                                         ["result"], registry=registry)
        self.dns_seconds = Histogram("aftm_dns_resolution_duration_seconds", "Upstream name resolution time",
                                     ["result"], buckets=DNS_BUCKETS, registry=registry)
        self.tls_handshakes = Counter("aftm_tls_handshakes", "New upstream TLS connections by protocol version",
                                      ["version"], registry=registry)
        self.callback_posts = Counter("aftm_callback_posts", "App callback POSTs by result", ["result"],
                                      registry=registry)
        self.fdxml_posts = Counter("aftm_fdxml_posts", "Failure-data POSTs to customers by result", ["result"],
                                   registry=registry)
        self.credential_failures = Counter("aftm_credential_failures",
                                           "App logins refused (not attributable to a client)", ["protocol"],
                                           registry=registry)
        self.unattributed_failures = Counter(
            "aftm_unattributed_request_failures",
            "Malformed or oversized app requests whose caller is unknown (no failure entry possible)",
            ["protocol"], registry=registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Telemetry:
    """Spans and metrics for one runtime. `Telemetry.disabled()` traces nothing and still counts."""

    def __init__(self, *, tracer: trace.Tracer, provider: TracerProvider | None = None) -> None:
        self.tracer = tracer
        self.provider = provider
        self.tracing = provider is not None  # False: spans are no-ops, so callers may skip building them
        self.metrics = Metrics()
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()  # TLS objects already counted

    @classmethod
    def disabled(cls) -> Telemetry:
        return cls(tracer=NoOpTracer())

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Telemetry:
        """Tracing per the standard OTEL_* variables (see the module docstring); metrics always."""
        if not tracing_configured(os.environ if environ is None else environ):
            return cls.disabled()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "aftm-gateway"}))
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(tracer=provider.get_tracer(TRACER_NAME), provider=provider)

    def shutdown(self) -> None:
        """Export what is buffered and stop; spans started later are dropped."""
        if self.provider is not None:
            self.provider.shutdown()

    # --- spans --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def server(self, name: str, headers: Mapping[str, str]) -> Iterator[Span]:
        """The span of one app request, continuing the app's W3C trace context if it sent one."""
        parent = propagate.extract(headers)
        with self.tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER) as span:
            yield span

    @contextlib.contextmanager
    def attempt(self, *, account: str, number: int, request_id: str, after_relogin: bool) -> Iterator[Span]:
        started = time.perf_counter()
        if not self.tracing:  # the hot path without a collector: no span, no context switch
            yield trace.INVALID_SPAN
        else:
            attributes: dict[str, str | int | bool] = {"aftm.account": account, "aftm.attempt": number,
                                                       "aftm.after_relogin": after_relogin}
            if request_id:
                attributes["aftm.request_id"] = request_id
            with self.tracer.start_as_current_span("upstream attempt", kind=SpanKind.CLIENT,
                                                   attributes=attributes) as span:
                yield span
        self.metrics.attempt_seconds.labels(account).observe(time.perf_counter() - started)

    def attempt_result(self, span: Span, account: str, outcome: Outcome, extensions: Mapping[str, Any] | None,
                       *, failover_reason: str | None) -> None:
        """Record how an attempt ended on its span and in the counters."""
        self.metrics.attempts.labels(account, outcome.kind.value).inc()
        if outcome.kind is Kind.THROTTLED:
            self.metrics.throttled.labels(account).inc()
        if not span.is_recording():
            return
        span.set_attribute("aftm.outcome", outcome.kind.value)
        if outcome.failure is not None:
            span.set_attribute("aftm.failure", outcome.failure.value)
        if outcome.detail:
            span.set_attribute("aftm.detail", outcome.detail[:200])
        if failover_reason is not None:
            span.set_attribute("aftm.failover_reason", failover_reason)
        if extensions is not None:
            if (address := extensions.get("peer_address")) is not None:
                span.set_attribute("network.peer.address", str(address))
            if (version := extensions.get("tls_version")) is not None:
                span.set_attribute("tls.protocol.version", str(version))
        if outcome.kind in (Kind.ACCOUNT_FAILURE, Kind.SESSION_INVALID, Kind.THROTTLED):
            span.set_status(Status(StatusCode.ERROR, outcome.kind.value))

    @contextlib.contextmanager
    def dns(self, host: str) -> Iterator[Span]:
        started, result = time.perf_counter(), "error"
        try:
            if not self.tracing:
                yield trace.INVALID_SPAN
            else:
                with self.tracer.start_as_current_span("dns resolve", kind=SpanKind.CLIENT,
                                                       attributes={"dns.question.name": host}) as span:
                    yield span
            result = "ok"
        finally:
            self.metrics.dns_seconds.labels(result).observe(time.perf_counter() - started)

    @contextlib.contextmanager
    def login(self, *, account: str, protocol: str) -> Iterator[Span]:
        self.metrics.logins.labels(account, protocol).inc()
        with self.tracer.start_as_current_span("upstream login", kind=SpanKind.CLIENT, attributes={
                "aftm.account": account, "aftm.protocol": protocol}) as span:
            yield span

    @contextlib.contextmanager
    def outbox_delivery(self, *, item_id: str, attempts: int, headers: Mapping[str, str]) -> Iterator[Span]:
        """A queued send's delivery: a new trace, linked to the request that queued it."""
        queued_by = trace.get_current_span(propagate.extract(headers)).get_span_context()
        links = [Link(queued_by)] if queued_by.is_valid else []
        with self.tracer.start_as_current_span("outbox delivery", context=Context(), links=links, attributes={
                "aftm.request_id": item_id, "aftm.outbox.attempts": attempts}) as span:
            yield span

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Put the current trace context (traceparent, tracestate) into outgoing headers."""
        if self.tracing:
            propagate.inject(headers)

    def saw_connection(self, ssl_object: Any, version: str | None) -> None:
        """Count a TLS handshake the first time a connection's TLS object is seen."""
        if ssl_object is None or ssl_object in self._connections:
            return
        self._connections.add(ssl_object)
        self.metrics.tls_handshakes.labels(version or "unknown").inc()
