from __future__ import annotations

import time

import pytest
from starlette.requests import HTTPConnection

from gateway.config import parse_config
from gateway.edge.clients import (
    CHALLENGE_LIFETIME,
    REST_TOKEN_LIFETIME,
    SOURCE_MAX_FAILURES,
    Credentials,
    source_of,
)
from gateway.errors import TooManyFailedLogins
from tests.support.clock import FakeClock

CONFIG = parse_config(
    {"accounts": [{"name": "p", "login_url": "https://l.example", "user_name": "u", "password": "p"}],
     "clients": [{"user_name": "app", "password": "pw"}, {"user_name": "other", "password": "pw2"}]},
    environ={},
)


async def test_login_checks_configured_clients() -> None:
    credentials = Credentials(config=CONFIG, secret=b"k")
    try:
        assert await credentials.login("app", "pw")
        assert not await credentials.login("app", "pw2")
        assert not await credentials.login("nobody", "pw")
    finally:
        credentials.close()


async def test_tokens_verify_by_kind_and_expire() -> None:
    clock = FakeClock(1_000_000.0)
    credentials = Credentials(config=CONFIG, secret=b"k", clock=clock)
    token = credentials.issue("app", "rest")
    identity = await credentials.verify(token, "rest")
    assert identity is not None and identity.client == "app"
    assert await credentials.verify(token, "soap") is None
    clock.now += REST_TOKEN_LIFETIME + 1
    assert await credentials.verify(token, "rest") is None


async def test_forged_and_foreign_tokens_are_refused() -> None:
    mine = Credentials(config=CONFIG, secret=b"k")
    theirs = Credentials(config=CONFIG, secret=b"other-key")
    token = theirs.issue("app", "rest")
    assert await mine.verify(token, "rest") is None
    body, signature = mine.issue("app", "rest").split(".")
    assert await mine.verify(body[:-2] + "xx." + signature, "rest") is None
    assert await mine.verify("garbage", "rest") is None and await mine.verify(None, "rest") is None


async def test_a_shared_secret_lets_another_replica_accept_the_token() -> None:
    token = Credentials(config=CONFIG, secret=b"shared").issue("app", "soap")
    assert await Credentials(config=CONFIG, secret=b"shared").verify(token, "soap") is not None


async def test_revoked_session_is_refused() -> None:
    credentials = Credentials(config=CONFIG, secret=b"k")
    session = credentials.issue("app", "soap")
    await credentials.revoke(session)
    assert await credentials.verify(session, "soap") is None


async def test_a_remembered_credential_still_expires_and_can_be_revoked() -> None:
    clock = FakeClock(1_000_000.0)
    credentials = Credentials(config=CONFIG, secret=b"k", clock=clock)
    session = credentials.issue("app", "soap")
    token = credentials.issue("app", "rest")
    assert await credentials.verify(session, "soap") is not None and await credentials.verify(token, "rest") is not None
    await credentials.revoke(session)
    assert await credentials.verify(session, "soap") is None
    assert await credentials.verify(token, "soap") is None  # remembered as a REST token, still of the wrong kind
    clock.now += REST_TOKEN_LIFETIME + 1
    assert await credentials.verify(token, "rest") is None


async def test_a_charged_login_step_counts_as_a_failure_until_the_login_completes() -> None:
    """A certificate login's step 1 costs a failure up front; its step 2's success takes it back."""
    credentials = Credentials(config=CONFIG, secret=b"k")
    try:
        for _ in range(SOURCE_MAX_FAILURES):
            assert await credentials.run_login_work(lambda: 1, source="10.0.0.9", charge=True) == 1
        with pytest.raises(TooManyFailedLogins):
            await credentials.run_login_work(lambda: 1, source="10.0.0.9", charge=True)
        assert await credentials.run_login_work(lambda: 1, source="10.0.0.8", charge=True) == 1  # another source
        credentials.login_completed("10.0.0.9", charged_at=time.time())  # its step 1 was charged just now
        assert await credentials.run_login_work(lambda: 1, source="10.0.0.9") == 1  # one taken back: below the limit
        for _ in range(SOURCE_MAX_FAILURES):  # uncharged work (step 2) costs nothing by itself
            assert await credentials.run_login_work(lambda: 2, source="10.0.0.7") == 2
        assert await credentials.login("app", "pw", source="10.0.0.7")
    finally:
        credentials.close()


def _connection_from(host: str) -> HTTPConnection:
    return HTTPConnection({"type": "http", "client": (host, 50_000), "headers": []})


@pytest.mark.parametrize(("first", "second"), [
    ("2001:db8:1:2::1", "2001:db8:1:2:a9f3:77c1:5e0b:1"),  # privacy addresses of one host rotate in its /64
    ("2001:db8:1:2::1", "2001:0db8:0001:0002:ffff:ffff:ffff:ffff"),
    ("::ffff:192.0.2.7", "192.0.2.7"),  # a dual-stack listener names an IPv4 peer either way
])
def test_one_host_is_one_source_however_its_address_is_spelt(first: str, second: str) -> None:
    """Failed logins count per source: an IPv6 host given a /64 could use a fresh address for every
    attempt (2^64 of them), so each got a fresh allowance of SOURCE_MAX_FAILURES and a first check past
    the queue. A /64 is what a host or a LAN is given; IPv4 behind one NAT address is the same case."""
    assert source_of(_connection_from(first)) == source_of(_connection_from(second))


@pytest.mark.parametrize(("first", "second"), [
    ("2001:db8:1:2::1", "2001:db8:1:3::1"),
    ("192.0.2.7", "192.0.2.8"),
    ("::ffff:192.0.2.7", "::ffff:192.0.2.8"),
])
def test_other_hosts_are_other_sources(first: str, second: str) -> None:
    assert source_of(_connection_from(first)) != source_of(_connection_from(second))


def test_a_peer_that_is_no_address_is_its_own_source() -> None:
    assert source_of(_connection_from("testclient")) == "testclient"
    assert source_of(HTTPConnection({"type": "http", "client": None, "headers": []})) is None


@pytest.mark.parametrize("behind", [0.002, 0.5, 5.0])
async def test_a_temporary_token_from_a_replica_whose_clock_runs_ahead_is_accepted(behind: float) -> None:
    """Step 2 may land on another replica (`session_secret` shared), typically milliseconds after step 1:
    a handle "issued in the future" by a replica whose clock runs ahead of this one's by any amount was
    refused, so the app's certificate login failed whenever step 2 met a replica a little behind."""
    issuer = Credentials(config=CONFIG, secret=b"k", clock=FakeClock(1_000_000.0))
    other = Credentials(config=CONFIG, secret=b"k", clock=FakeClock(1_000_000.0 - behind))
    handle = issuer.issue_challenge("app", b"c" * 32)
    spent = await other.spend_challenge(handle)
    assert spent is not None and spent.client == "app"


async def test_a_temporary_token_serves_until_its_lifetime_and_never_after() -> None:
    clock = FakeClock(1_000_000.0)
    credentials = Credentials(config=CONFIG, secret=b"k", clock=clock)
    fresh, stale = credentials.issue_challenge("app", b"c" * 32), credentials.issue_challenge("app", b"d" * 32)
    clock.advance(CHALLENGE_LIFETIME)
    assert await credentials.spend_challenge(fresh) is not None
    clock.advance(0.001)
    assert await credentials.spend_challenge(stale) is None


async def test_only_the_step_one_charged_here_to_this_source_is_taken_back() -> None:
    """Step 2 takes back its step 1's charge, and only on the replica that charged it, for the source
    charged: elsewhere the failure taken back would be some other one (a wrong password from there)."""
    clock = FakeClock(1_000_000.0)
    credentials = Credentials(config=CONFIG, secret=b"k", clock=clock)
    other_replica = Credentials(config=CONFIG, secret=b"k", clock=clock)
    try:
        handle = credentials.issue_challenge("app", b"c" * 32, source="10.0.0.9")
        spent = await credentials.spend_challenge(handle, source="10.0.0.9")
        assert spent is not None and spent.client == "app" and spent.charged_at == 1_000_000.0
        for challenge, source, replica in ((b"d", "10.0.0.8", credentials), (b"e", "10.0.0.9", other_replica)):
            handle = credentials.issue_challenge("app", challenge * 32, source="10.0.0.9")
            spent = await replica.spend_challenge(handle, source=source)
            assert spent is not None and spent.charged_at is None
    finally:
        credentials.close()
        other_replica.close()
