"""The WSDL is served from a cache: a flood of GETs is no flood to the vendor, and an outage serves the last copy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from gateway_tools.simulator.soap import load_wsdl_template
from tests.integration.gateway.conftest import Deployment
from tests.support.servers import wait_until

WSDL = "/webservices/wsdl/ResponsysWS_Level1.wsdl"
SERVICE_WSDL = "/webservices/services/ResponsysWSService?wsdl"


def fetches(deployment: Deployment) -> int:
    return int(deployment.primary.stats()["wsdl_fetches"]) + int(deployment.failover.stats()["wsdl_fetches"])


def get_wsdl(deployment: Deployment, path: str = WSDL) -> httpx.Response:
    with deployment.http() as client:
        return client.get(path)


async def _get_many(url: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, trust_env=False, limits=limits) as client:
        return await asyncio.gather(*(client.get(WSDL if n % 2 else SERVICE_WSDL) for n in range(count)))


def test_200_concurrent_wsdl_gets_cause_at_most_one_upstream_fetch(
        make_deployment: Callable[..., Deployment]) -> None:
    deployment = make_deployment(start=False, upstream={"read_timeout": 10.0})
    deployment.primary.latency(1500)  # the first fetch is still in flight while the GETs arrive
    deployment.start_gateway()
    responses = asyncio.run(_get_many(deployment.url, 200))
    assert [r.status_code for r in responses] == [200] * 200
    assert all(f"{deployment.url}/webservices/services/ResponsysWSService".encode() in r.content
               for r in responses)
    assert fetches(deployment) == 1


def test_a_changed_upstream_wsdl_is_served_after_a_refresh(make_deployment: Callable[..., Deployment]) -> None:
    deployment = make_deployment(upstream={"wsdl_refresh": 0.5})
    assert b"Revised WSDL" not in get_wsdl(deployment).content
    revision = load_wsdl_template().replace(b"</definitions>",
                                            b"<documentation>Revised WSDL</documentation></definitions>")
    assert revision != load_wsdl_template()
    deployment.primary.set_wsdl(revision)
    deployment.failover.set_wsdl(revision)
    started, gets = time.monotonic(), 0

    def revised() -> bool:
        nonlocal gets
        gets += 1
        return b"Revised WSDL" in get_wsdl(deployment).content

    wait_until(revised, timeout=10, message="the revised WSDL served")
    refreshes = (time.monotonic() - started) / 0.5
    assert fetches(deployment) <= refreshes + 2 < gets  # refreshes fetch, GETs do not


def test_an_upstream_outage_keeps_serving_the_last_good_wsdl(make_deployment: Callable[..., Deployment]) -> None:
    deployment = make_deployment(upstream={"wsdl_refresh": 0.2})
    good = get_wsdl(deployment)
    assert good.status_code == 200
    deployment.primary.set_mode("refuse")
    deployment.failover.set_mode("refuse")
    failed_before = deployment.runtime.documents.failures
    wait_until(lambda: deployment.runtime.documents.failures >= failed_before + 2, timeout=10,
               message="two refreshes failing during the outage")
    during = get_wsdl(deployment)
    assert during.status_code == 200 and during.content == good.content
