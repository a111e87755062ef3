"""Upstream sessions against a real simulated account: proactive refresh, single flight, SOAP pool."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.config import Account, parse_config
from gateway.upstreams.resolver import DNSResolver
from gateway.upstreams.sessions import REFRESH_FRACTION, RestSessions, SoapSessions
from gateway.upstreams.upstream import Upstream
from gateway_tools.simulator.server import SimulatedAccount
from tests.support.clock import FakeClock


@pytest.fixture
def account() -> Iterator[SimulatedAccount]:
    with SimulatedAccount(name="primary", user_name="api_primary", password="pw") as simulated:
        yield simulated


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    resolver = DNSResolver(nameservers=["127.0.0.1"], port=9)  # never asked: the account is an IP literal
    async with Upstream(resolver=resolver, ssl_context=ssl.create_default_context()) as seam:
        yield seam
    await resolver.close()


def config_account(simulated: SimulatedAccount, sessions: int = 2) -> Account:
    config = parse_config({"accounts": [{
        "name": "primary", "login_url": simulated.url, "user_name": "api_primary", "password": "pw",
        "soap_url": simulated.url + "/webservices/services/ResponsysWSService", "soap_sessions": sessions}]},
        environ={})
    return config.accounts[0]


async def test_token_is_replaced_before_it_expires(account: SimulatedAccount, upstream: Upstream) -> None:
    clock = FakeClock(1000.0)
    sessions = RestSessions(upstream=upstream, clock=clock)
    target = config_account(account)
    first = await sessions.session_for(target)
    assert await sessions.session_for(target) is first
    clock.now += 7200 * REFRESH_FRACTION + 1  # still valid upstream, but past the gateway's refresh point
    second = await sessions.session_for(target)
    assert second.token != first.token
    assert account.stats()["rest_logins"] == 2


async def test_concurrent_callers_share_one_login(account: SimulatedAccount, upstream: Upstream) -> None:
    sessions = RestSessions(upstream=upstream)
    target = config_account(account)
    results = await asyncio.gather(*(sessions.session_for(target) for _ in range(50)))
    assert len({r.token for r in results}) == 1
    sessions.invalidate(target, results[0])
    sessions.invalidate(target, results[0])  # a second caller with the same stale token changes nothing
    again = await asyncio.gather(*(sessions.session_for(target) for _ in range(50)))
    assert len({r.token for r in again}) == 1 and again[0].token != results[0].token
    assert account.stats()["rest_logins"] == 2


async def test_soap_pool_holds_one_call_per_session(account: SimulatedAccount, upstream: Upstream) -> None:
    sessions = SoapSessions(accounts=[config_account(account, sessions=2)], upstream=upstream)
    target = config_account(account, sessions=2)
    in_use: set[str] = set()
    overlaps = 0

    async def call() -> None:
        nonlocal overlaps
        async with sessions.lease(target, within=10) as slot:
            assert slot.session_id is not None
            overlaps += slot.session_id in in_use
            in_use.add(slot.session_id)
            await asyncio.sleep(0)  # let the others try to take the same session
            in_use.discard(slot.session_id)

    await asyncio.gather(*(call() for _ in range(20)))
    assert overlaps == 0
    assert account.stats()["soap_logins"] == 2  # one per pooled session, not one per call
