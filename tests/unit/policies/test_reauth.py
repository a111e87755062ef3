from __future__ import annotations

import pytest

from policies.reauth import ReauthDecision, ReauthPolicy, should_login


def test_relogin_is_bounded_per_request() -> None:
    budget = ReauthPolicy(max_relogins=2).budget()
    decisions = [budget.on_session_invalid() for _ in range(3)]
    assert decisions == [ReauthDecision.RELOGIN_AND_REPLAY, ReauthDecision.RELOGIN_AND_REPLAY,
                         ReauthDecision.GIVE_UP]
    assert budget.left == 0


def test_each_request_gets_its_own_budget() -> None:
    policy = ReauthPolicy(max_relogins=1)
    first = policy.budget()
    assert first.on_session_invalid() is ReauthDecision.RELOGIN_AND_REPLAY
    assert policy.budget().on_session_invalid() is ReauthDecision.RELOGIN_AND_REPLAY


def test_zero_relogins_gives_up_at_once() -> None:
    assert ReauthPolicy(max_relogins=0).budget().on_session_invalid() is ReauthDecision.GIVE_UP


def test_negative_relogins_rejected() -> None:
    with pytest.raises(ValueError, match="max_relogins"):
        ReauthPolicy(max_relogins=-1)


def test_fresh_token_is_reused() -> None:
    # Another request logged in at t=10.5, after this call started at t=10: reuse that token.
    assert should_login(token_issued_at=10.5, call_started_at=10.0) is False


def test_stale_token_needs_login() -> None:
    assert should_login(token_issued_at=9.0, call_started_at=10.0) is True


def test_token_issued_as_call_started_counts_as_stale() -> None:
    # The failing call may have used exactly this token.
    assert should_login(token_issued_at=10.0, call_started_at=10.0) is True


def test_no_cached_token_needs_login() -> None:
    assert should_login(token_issued_at=None, call_started_at=10.0) is True


def test_invalidated_burst_causes_one_login() -> None:
    """100 calls started at t=0 all fail; the first logs in at t=1, the other 99 reuse its token."""
    issued_at: float | None = -5.0  # the token all 100 calls used
    logins = 0
    for _ in range(100):
        if should_login(issued_at, call_started_at=0.0):
            logins += 1
            issued_at = 1.0
    assert logins == 1
