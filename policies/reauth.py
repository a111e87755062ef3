"""When to log in again: a bounded relogin budget per app request, and the single-flight rule."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ReauthDecision(enum.Enum):
    RELOGIN_AND_REPLAY = "relogin_and_replay"
    GIVE_UP = "give_up"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReauthPolicy:
    """At most `max_relogins` logins-and-replays per app request.

    The bound matters because an account that rejects every fresh session would otherwise loop
    login, call, SESSION_INVALID forever.
    """

    max_relogins: int = 2

    def __post_init__(self) -> None:
        if self.max_relogins < 0:
            raise ValueError("max_relogins must not be negative (0 disables relogin)")

    def budget(self) -> ReauthBudget:
        """A fresh per-request counter."""
        return ReauthBudget(self.max_relogins)


class ReauthBudget:
    """One app request's relogins; ask `on_session_invalid()` for each SESSION_INVALID outcome."""

    __slots__ = ("_left",)

    def __init__(self, max_relogins: int) -> None:
        self._left = max_relogins

    @property
    def left(self) -> int:
        return self._left

    def on_session_invalid(self) -> ReauthDecision:
        """RELOGIN_AND_REPLAY (spending one relogin) while any are left, then GIVE_UP."""
        if self._left <= 0:
            return ReauthDecision.GIVE_UP
        self._left -= 1
        return ReauthDecision.RELOGIN_AND_REPLAY


def should_login(token_issued_at: float | None, call_started_at: float) -> bool:
    """False when the cached token was issued after the failing call started: reuse it.

    Such a token came from a login another request made after this call's token went stale, so
    another login would be wasted work against the vendor's login limit. This is what makes a
    burst of 100 calls that fail with SESSION_INVALID cause one login. Both times come from the
    same clock; None means no token is cached.
    """
    return token_issued_at is None or token_issued_at <= call_started_at
