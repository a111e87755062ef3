from __future__ import annotations

import pytest

from gateway.config import parse_config
from gateway.edge.clients import REST_TOKEN_LIFETIME, SOURCE_MAX_FAILURES, Credentials
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
        credentials.login_completed("10.0.0.9")
        assert await credentials.run_login_work(lambda: 1, source="10.0.0.9") == 1  # one taken back: below the limit
        for _ in range(SOURCE_MAX_FAILURES):  # uncharged work (step 2) costs nothing by itself
            assert await credentials.run_login_work(lambda: 2, source="10.0.0.7") == 2
        assert await credentials.login("app", "pw", source="10.0.0.7")
    finally:
        credentials.close()
