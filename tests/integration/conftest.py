from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme

from gateway.upstreams.resolver import DNSResolver
from gateway.upstreams.upstream import Upstream
from gateway_tools.loopback_dns import LoopbackDNS
from policies.tls import client_context
from tests.support.otlp import Receiver
from tests.support.responsys_clients import plain_session
from tests.support.servers import serve
from tests.support.tls import ca_bundle_file


@pytest.fixture
def dns_server() -> Iterator[LoopbackDNS]:
    """A real DNS server on 127.0.0.1 (UDP+TCP, ephemeral port) whose answers the test sets."""
    with LoopbackDNS() as server:
        yield server


@pytest.fixture
def http_session() -> Iterator[requests.Session]:
    """A requests session for SOAP clients (zeep), blind to proxy and CA variables."""
    with plain_session() as session:
        yield session


@pytest.fixture(scope="session")
def test_ca() -> trustme.CA:
    """The CA behind every test certificate; trusted by `make_upstream` unless told otherwise."""
    return trustme.CA()


@pytest.fixture
def ca_file(test_ca: trustme.CA, tmp_path: Path) -> str:
    """`test_ca`'s certificate as a PEM file: the `tls.ca_bundle` of a gateway under test."""
    path = tmp_path / "ca.pem"
    test_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
async def make_upstream(dns_server: LoopbackDNS,
                        test_ca: trustme.CA) -> AsyncIterator[Callable[..., Upstream]]:
    """Build `Upstream`s that resolve through `dns_server` and trust `test_ca`; all closed after the test.

    Keyword arguments go to `Upstream`; `ca` swaps the trusted CA, `dns_timeout` the lookup budget,
    `client_cert`/`client_key` present a client certificate.
    """
    built: list[tuple[Upstream, DNSResolver]] = []
    with ca_bundle_file(test_ca) as default_bundle:

        def build(*, ca: trustme.CA | None = None, dns_timeout: float = 2.0,
                  client_cert: str | None = None, client_key: str | None = None,
                  nameserver_port: int | None = None, **kwargs: Any) -> Upstream:
            resolver = DNSResolver(nameservers=[dns_server.nameserver], timeout=dns_timeout,
                                   port=dns_server.port if nameserver_port is None else nameserver_port)
            if ca is None:
                context = client_context(ca_bundle=default_bundle, client_cert=client_cert,
                                         client_key=client_key)
            else:
                with ca_bundle_file(ca) as bundle:
                    context = client_context(ca_bundle=bundle)
            upstream = Upstream(resolver=resolver, ssl_context=context, **kwargs)
            built.append((upstream, resolver))
            return upstream

        yield build
    for upstream, resolver in built:
        await upstream.aclose()
        await resolver.close()


@pytest.fixture
def otlp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A real OTLP/HTTP receiver; the standard OTEL_* variables point gateways started later at it."""
    receiver = Receiver()
    with serve(receiver.app) as server:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", server.url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "aftm-gateway-test")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # milliseconds between batch exports
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
        yield receiver
